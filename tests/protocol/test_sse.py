"""SSE decoder: examples per rule, and chunking/line-end invariance by hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import RemoteProtocolError
from protocol.sse import DEFAULT_MAX_EVENT_BYTES, ServerSentEvent, SSEDecoder, encode_event


def decode_all(data: bytes, cuts: list[int] | None = None) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    start = 0
    for cut in sorted(cuts or []):
        events += decoder.feed(data[start:cut])
        start = cut
    events += decoder.feed(data[start:])
    events += decoder.close()
    return events


def test_named_event_with_json_data() -> None:
    events = decode_all(b'event: message_start\ndata: {"type":"message_start"}\n\n')
    assert events == [ServerSentEvent(event="message_start", data=b'{"type":"message_start"}')]


def test_unnamed_event_is_message_and_multiline_data_joined() -> None:
    assert decode_all(b"data: a\ndata: b\n\n") == [ServerSentEvent(event="message", data=b"a\nb")]


def test_comment_lines_and_empty_events_are_ignored() -> None:
    assert decode_all(b": keep-alive\n\nevent: ping\n\ndata: x\n\n") == [
        ServerSentEvent(event="message", data=b"x")
    ]


def test_only_one_leading_space_is_stripped_and_no_colon_means_empty_value() -> None:
    assert decode_all(b"data:  two\ndata\n\n") == [ServerSentEvent(event="message", data=b" two\n")]


def test_id_and_retry_fields() -> None:
    events = decode_all(b"id: 7\nretry: 150\nretry: x\ndata: a\n\nid: a\0b\ndata: b\n\n")
    assert events == [
        ServerSentEvent(event="message", data=b"a", id="7", retry=150),
        ServerSentEvent(event="message", data=b"b", id="7", retry=150),
    ]


def test_unterminated_event_at_eof_is_discarded() -> None:
    assert decode_all(b"data: complete\n\ndata: partial\n") == [
        ServerSentEvent(event="message", data=b"complete")
    ]


def test_leading_bom_is_skipped_even_when_split() -> None:
    assert decode_all(b"\xef\xbb\xbfdata: x\n\n", cuts=[1, 2]) == [
        ServerSentEvent(event="message", data=b"x")
    ]


def test_trailing_whitespace_in_json_is_kept_verbatim() -> None:
    payload = b'{"type":"content_block_stop","index":0  }'
    assert decode_all(encode_event("content_block_stop", payload))[0].data == payload


def test_overlong_line_raises_remote_protocol_error() -> None:
    decoder = SSEDecoder(max_line_bytes=16)
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"data: " + b"x" * 32)


def test_an_event_over_its_bound_raises_whichever_way_it_grows() -> None:
    # Many data lines, each short.
    with pytest.raises(RemoteProtocolError, match="SSE event larger than 64 bytes"):
        SSEDecoder(max_event_bytes=64).feed(b"data: 0123456789\n" * 8)
    # One line fed in pieces without a line break: refused as soon as it is over, the rest
    # never buffered.
    decoder = SSEDecoder(max_event_bytes=64)
    decoder.feed(b"data: " + b"x" * 40)
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"x" * 40)
    # Data lines so far plus the line being read.
    decoder = SSEDecoder(max_event_bytes=64)
    decoder.feed(b"data: " + b"x" * 40 + b"\ndata: ")
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"y" * 30)
    # Within the bound, and a bound counted per event: fine.
    decoder = SSEDecoder(max_event_bytes=64)
    for _ in range(10):
        assert decoder.feed(b"data: " + b"x" * 50 + b"\n\n") == [ServerSentEvent(event="message", data=b"x" * 50)]


def test_a_huge_event_in_small_chunks_is_refused_in_linear_time() -> None:
    # 64 KiB chunks of one endless line: each piece is kept, never the whole line copied
    # again per chunk (that was quadratic: seconds of CPU for a 33 MiB event).
    decoder = SSEDecoder()
    decoder.feed(b"event: content_block_delta\ndata: ")
    chunk = b"w" * 65536
    for _ in range(DEFAULT_MAX_EVENT_BYTES // len(chunk) - 1):
        assert decoder.feed(chunk) == []
    with pytest.raises(RemoteProtocolError, match="SSE event larger than"):
        decoder.feed(chunk)


def test_a_held_cr_then_a_chunk_without_line_breaks_ends_its_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r\r") == []  # the second CR may be half of a CRLF
    assert decoder.feed(b"data") == [ServerSentEvent(event="message", data=b"x")]
    assert decoder.feed(b": y\r\r") == []
    assert decoder.close() == [ServerSentEvent(event="message", data=b"y")]


def test_non_utf8_event_name_raises_remote_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_all(b"event: \xff\ndata: x\n\n")


# --- properties -------------------------------------------------------------------------

_names = st.sampled_from(
    ["message_start", "content_block_delta", "message_delta", "message_stop", "ping", "error"]
)
_payload = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)
_events = st.lists(st.tuples(_names, _payload.filter(bool)), max_size=8)


def _stream(events: list[tuple[str, bytes]], newline: bytes) -> bytes:
    return b"".join(
        b"event: " + n.encode() + newline + b"data: " + d + newline + newline for n, d in events
    )


@given(events=_events, newline=st.sampled_from([b"\n", b"\r", b"\r\n"]), data=st.data())
def test_any_chunking_and_any_line_end_yield_the_same_events(
    events: list[tuple[str, bytes]], newline: bytes, data: st.DataObject
) -> None:
    stream = _stream(events, newline)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 1))
    expected = [ServerSentEvent(event=n, data=d) for n, d in events]
    assert decode_all(stream, cuts) == expected


@given(events=_events)
def test_byte_by_byte_equals_whole(events: list[tuple[str, bytes]]) -> None:
    stream = _stream(events, b"\r\n")
    assert decode_all(stream, list(range(len(stream)))) == decode_all(stream)


@given(garbage=st.binary(max_size=200), data=st.data())
def test_garbage_raises_only_remote_protocol_error(garbage: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(garbage)), max_size=10))
    try:
        decode_all(garbage, cuts)
    except RemoteProtocolError:
        pass
