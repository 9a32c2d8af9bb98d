"""The HTTP door's wire: SSE framing, error mapping, the stream synthesized from a message."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.assembly import MessageAssembler, usage_json
from protocol.errors import RemoteProtocolError
from protocol.frames import ErrorInfo
from protocol.http_api import (
    default_session,
    error_body,
    event_name,
    format_usd,
    http_error,
    message_as_sse,
    parse_body,
    sse_comment,
    sse_error_event,
    sse_event,
)
from protocol.sse import SSEDecoder
from protocol.usage import Usage


def decode(data: bytes, cuts: list[int]) -> list[tuple[str, bytes]]:
    decoder = SSEDecoder()
    events = []
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        events += decoder.feed(data[start:cut])
        start = max(start, cut)
    events += decoder.feed(data[start:])
    events += decoder.close()
    return [(event.event, event.data) for event in events]


json_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r"), max_size=40
)


@given(
    data=st.lists(json_text, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 400), max_size=6)
)
def test_an_event_decodes_to_its_own_bytes_under_any_chunking(
    data: list[str], cuts: list[int]
) -> None:
    # Multi-line payloads (pretty-printed JSON) too: one ``data:`` line per line.
    payload = "\n".join(data).encode()
    framed = (
        sse_event("content_block_delta", payload)
        + sse_comment("keep-alive")
        + sse_error_event("api_error", "x")
    )
    assert decode(framed, cuts) == [
        ("content_block_delta", payload),
        ("error", b'{"type":"error","error":{"type":"api_error","message":"x"}}'),
    ]


def test_event_name_is_the_type_field_and_only_a_safe_one() -> None:
    assert (
        event_name(b'{"type":"content_block_delta","index":0,"delta":{}}') == "content_block_delta"
    )
    assert event_name(memoryview(b'{"index":1,"type":"ping"}')) == "ping"
    assert event_name(b'{"type":"bad\\nname"}') is None
    assert event_name(b'{"no":"type"}') is None
    assert event_name(b"not json") is None


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (
            ErrorInfo(type="overloaded_error", message="m", status=529, request_id="r"),
            (529, "overloaded_error"),
        ),
        (
            ErrorInfo(type="invalid_request_error", message="m", status=400, request_id=None),
            (400, "invalid_request_error"),
        ),
        (
            ErrorInfo(type="overloaded_error", message="m", status=None, request_id=None),
            (529, "overloaded_error"),
        ),
        (
            ErrorInfo(type="repeated_overload", message="m", status=None, request_id=None),
            (529, "overloaded_error"),
        ),
        (
            ErrorInfo(type="prompt_too_long", message="m", status=400, request_id=None),
            (400, "invalid_request_error"),
        ),
        (
            ErrorInfo(type="connection_error", message="m", status=None, request_id=None),
            (502, "api_error"),
        ),
        (
            ErrorInfo(type="timeout_error", message="m", status=None, request_id=None),
            (504, "timeout_error"),
        ),
        (
            ErrorInfo(type="shutting_down", message="m", status=None, request_id=None),
            (503, "api_error"),
        ),
        (
            ErrorInfo(type="something_new", message="m", status=None, request_id=None),
            (500, "something_new"),
        ),
        (
            ErrorInfo(type="something_new", message="m", status=418, request_id=None),
            (418, "something_new"),
        ),
        # No error status from the upstream (a redirect found by the fuzz suite, a made-up
        # code): a 502, never a status a client would act on.
        (ErrorInfo(type="api_error", message="m", status=308, request_id=None), (502, "api_error")),
        (ErrorInfo(type="api_error", message="m", status=201, request_id=None), (502, "api_error")),
        (ErrorInfo(type="api_error", message="m", status=999, request_id=None), (502, "api_error")),
        (ErrorInfo(type="connection_error", message="m", status=302, request_id=None), (502, "api_error")),
    ],
)
def test_http_error_keeps_upstream_errors_and_maps_the_gateways(
    info: ErrorInfo, expected: tuple[int, str]
) -> None:
    assert http_error(info) == expected


def test_error_body_is_the_api_envelope() -> None:
    assert msgspec.json.decode(error_body("not_found_error", "nope", "req_1")) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "nope"},
        "request_id": "req_1",
    }


def test_parse_body_refuses_what_is_not_a_json_object() -> None:
    assert parse_body(b'{"model": "m"}') == {"model": "m"}
    for bad in (b"", b"{", b"[1]", b'"text"'):
        with pytest.raises(RemoteProtocolError) as caught:
            parse_body(bad)
        assert caught.value.error_type == "invalid_request_error"


def test_default_session_and_usd_format() -> None:
    assert default_session(None) == "http-default"
    assert default_session("ab" * 32) == "http-" + "ab" * 12
    assert [format_usd(v) for v in (0.0, 1.5, 0.000012, 3e-12)] == [
        "0.0",
        "1.5",
        "0.000012",
        "0.000000000003",
    ]


blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, json_text),
    st.builds(
        lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, json_text, json_text
    ),
    st.builds(
        lambda n, x: {"type": "tool_use", "id": "toolu_1", "name": n, "input": {"x": x}},
        st.text("abcdef", min_size=1, max_size=8),
        st.integers(),
    ),
    st.builds(lambda d: {"type": "redacted_thinking", "data": d}, json_text),
)


@given(
    content=st.lists(blocks, max_size=4),
    stop=st.sampled_from(["end_turn", "tool_use", "max_tokens"]),
    tokens=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    cuts=st.lists(st.integers(0, 4000), max_size=5),
)
def test_a_message_streamed_back_assembles_to_itself(
    content: list[dict[str, Any]], stop: str, tokens: tuple[int, int], cuts: list[int]
) -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage_json(Usage(input_tokens=tokens[0], output_tokens=tokens[1])),
    }
    assembler = MessageAssembler()
    events = decode(message_as_sse(message), cuts)
    for name, data in events:
        assert assembler.feed(name, data) is None
    assert assembler.stopped and events[0][0] == "message_start" and events[-1][0] == "message_stop"
    assert assembler.message() == message
