"""The AWS event-stream decoder (docs/reference/wire.md 7.6): the byte-exact vectors, any chunking, CRCs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import RemoteProtocolError
from protocol.eventstream import (
    BedrockStreamDecoder,
    BedrockStreamException,
    EventStreamDecoder,
    encode_chunk,
    encode_exception,
)

CHUNK_VECTOR = bytes.fromhex(
    "000000960000004bda6a95c10b3a6576656e742d747970650700056368756e6b0d3a636f6e74656e742d74797065"
    "0700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970650700056576656e747b22627974"
    "6573223a2265794a306558426c496a6f696257567a6332466e5a56397a64473977496e303d222c2270223a226162"
    "636465666768227df1c95632"
)
EXCEPTION_VECTOR = bytes.fromhex(
    "000000b2000000613590d5d30f3a657863657074696f6e2d747970650700137468726f74746c696e674578636570"
    "74696f6e0d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d657373616765"
    "2d74797065070009657863657074696f6e7b226d657373616765223a22546f6f206d616e79207265717565737473"
    "2c20706c656173652077616974206265666f726520747279696e6720616761696e2e227de8ffb26a"
)
THROTTLED = "Too many requests, please wait before trying again."

EVENTS = [
    ("message_start", b'{"type":"message_start","message":{"id":"msg_bdrk_1","usage":{"input_tokens":3}}}'),
    ("content_block_start", b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'),
    ("content_block_delta", b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}'),
    ("content_block_stop", b'{"type":"content_block_stop","index":0}'),
    ("message_stop", b'{"type":"message_stop"}'),
]
STREAM = b"".join(encode_chunk(data) for _, data in EVENTS)


def test_the_wire_vectors_encode_and_decode_byte_exact() -> None:
    assert encode_chunk(b'{"type":"message_stop"}') == CHUNK_VECTOR
    assert encode_exception("throttlingException", THROTTLED) == EXCEPTION_VECTOR
    (message,) = EventStreamDecoder().feed(CHUNK_VECTOR)
    assert message.headers == {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    assert BedrockStreamDecoder().feed(CHUNK_VECTOR) == [("message_stop", b'{"type":"message_stop"}')]


def test_an_exception_frame_is_the_status_the_retry_rules_expect() -> None:
    with pytest.raises(BedrockStreamException) as caught:
        BedrockStreamDecoder().feed(EXCEPTION_VECTOR)
    assert (caught.value.status, caught.value.error_type) == (429, "rate_limit_error")
    assert str(caught.value) == f"throttlingException: {THROTTLED}"


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("serviceUnavailableException", 503),
        ("modelStreamErrorException", 424),
        ("validationException", 400),
        ("internalServerException", 500),
        ("modelTimeoutException", 408),
    ],
)
def test_exception_statuses(name: str, status: int) -> None:
    with pytest.raises(BedrockStreamException) as caught:
        BedrockStreamDecoder().feed(encode_exception(name, "x"))
    assert caught.value.status == status


def test_invocation_metrics_are_stripped_from_message_stop() -> None:
    data = b'{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3}}'
    assert BedrockStreamDecoder().feed(encode_chunk(data)) == [("message_stop", b'{"type":"message_stop"}')]


def test_a_truncated_stream_is_an_error_at_close() -> None:
    decoder = BedrockStreamDecoder()
    assert decoder.feed(STREAM[:-3]) == EVENTS[:-1]
    with pytest.raises(RemoteProtocolError):
        decoder.close()


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_chunking_yields_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    decoder = BedrockStreamDecoder()
    events: list[tuple[str, bytes]] = []
    for start, end in itertools.pairwise(bounds):
        events += decoder.feed(STREAM[start:end])
    decoder.close()
    assert events == EVENTS


@given(st.integers(min_value=0, max_value=len(STREAM) - 1), st.integers(min_value=1, max_value=255))
def test_a_flipped_byte_is_rejected(position: int, flip: int) -> None:
    damaged = bytearray(STREAM)
    damaged[position] ^= flip
    def decode() -> None:
        decoder = BedrockStreamDecoder()
        decoder.feed(bytes(damaged))
        decoder.close()

    with pytest.raises(RemoteProtocolError):
        decode()
