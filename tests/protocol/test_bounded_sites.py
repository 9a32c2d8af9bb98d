"""Every decode of outside JSON in ``protocol/`` refuses deep nesting through its own error
path: client frames and bodies, every stream event kind, tool input assembled from
``input_json_delta`` pieces, error bodies, Bedrock and Vertex shapes, bootstrap answers,
count_tokens results. Never a RecursionError, never another exception."""

from __future__ import annotations

import base64
import itertools

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import bounded_json
from protocol.assembly import MessageAssembler
from protocol.bootstrap import decode_bootstrap
from protocol.bounded_json import MAX_DEPTH
from protocol.errors import RemoteProtocolError
from protocol.eventstream import (
    BedrockStreamDecoder,
    BedrockStreamException,
    encode_chunk,
    encode_message,
)
from protocol.frames import decode_command
from protocol.http_api import event_name, parse_body
from protocol.providers import bedrock, vertex
from protocol.wire import COUNT_TOKENS_RESULT, JSON_OBJECT, parse_error_body

# Past the gateway's limit, and past msgspec's own recursion limit (about 1000).
DEPTHS = st.sampled_from([MAX_DEPTH + 1, 3 * MAX_DEPTH, 1200, 20_000])


def deep(depth: int, *, kind: str = "list") -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


START = b'{"type":"message_start","message":{"id":"m","model":"claude-sonnet-4-6","usage":{"input_tokens":5}}}'
TOOL_START = b'{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"n","input":{}}}'

# One event of each kind the assembler decodes, with a slot for a deep value in a field the
# gateway reads and in one it does not.
EVENT_TEMPLATES: dict[str, list[bytes]] = {
    "message_start": [
        b'{"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":5},"extra":@}}',
        b'{"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":5,"junk":@}}}',
    ],
    "content_block_start": [
        b'{"type":"content_block_start","index":1,"content_block":{"type":"text","text":"","citations":@}}',
        b'{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""},"x":@}',
    ],
    "content_block_delta": [
        b'{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":@}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"","x":@}}',
    ],
    "content_block_stop": [b'{"type":"content_block_stop","index":0,"x":@}'],
    "message_delta": [
        b'{"type":"message_delta","delta":{"stop_reason":"end_turn","container":@},"usage":{"output_tokens":3}}',
        b'{"type":"message_delta","delta":{},"usage":{"output_tokens":3,"junk":@}}',
    ],
    "error": [b'{"type":"error","error":{"type":"overloaded_error","message":"x","details":@}}'],
}


@given(
    st.sampled_from(sorted(EVENT_TEMPLATES)), st.data(), DEPTHS, st.sampled_from(["list", "object"])
)
def test_deep_nesting_in_any_stream_event_fails_the_attempt_cleanly(
    name: str, data: st.DataObject, depth: int, kind: str
) -> None:
    template = data.draw(st.sampled_from(EVENT_TEMPLATES[name]))
    assembler = MessageAssembler()
    if name != "message_start":
        assembler.feed("message_start", START)
        assembler.feed("content_block_start", TOOL_START)
    with pytest.raises(RemoteProtocolError) as caught:
        assembler.feed(name, template.replace(b"@", deep(depth, kind=kind)))
    assert caught.value.error_type == "api_error"
    assert f"deeper than {MAX_DEPTH}" in str(caught.value)
    # The event's type is not read either (the HTTP door names events by it).
    assert event_name(template.replace(b"@", deep(depth, kind=kind))) is None


@given(DEPTHS, st.lists(st.integers(min_value=0, max_value=50_000), max_size=6))
def test_a_deep_tool_input_from_input_json_delta_pieces_fails_the_attempt(
    depth: int, cuts: list[int]
) -> None:
    text = '{"command": ' + deep(depth).decode() + "}"
    bounds = sorted({min(cut, len(text)) for cut in cuts} | {0, len(text)})
    assembler = MessageAssembler()
    assembler.feed("message_start", START)
    assembler.feed("content_block_start", TOOL_START)
    for start, end in itertools.pairwise(bounds):
        piece = {"type": "input_json_delta", "partial_json": text[start:end]}
        assembler.feed(
            "content_block_delta",
            msgspec.json.encode({"type": "content_block_delta", "index": 0, "delta": piece}),
        )
    with pytest.raises(
        RemoteProtocolError, match="tool input is not a JSON object: JSON nested deeper"
    ) as caught:
        assembler.feed("content_block_stop", b'{"type":"content_block_stop","index":0}')
    assert caught.value.error_type == "api_error"
    # A message taken as it stands (an aborted or failed attempt) gets an empty input.
    assert assembler.message()["content"][0]["input"] == {}


def test_a_tool_input_at_the_limit_is_kept() -> None:
    inner = MAX_DEPTH - 1  # the input object itself is one level
    text = '{"a": ' + deep(inner).decode() + "}"
    assembler = MessageAssembler()
    assembler.feed("message_start", START)
    assembler.feed("content_block_start", TOOL_START)
    piece = {"type": "input_json_delta", "partial_json": text}
    assembler.feed(
        "content_block_delta",
        msgspec.json.encode({"type": "content_block_delta", "index": 0, "delta": piece}),
    )
    assembler.feed("content_block_stop", b'{"type":"content_block_stop","index":0}')
    assert (
        bounded_json.json_depth(msgspec.json.encode(assembler.message()["content"][0]["input"]))
        == MAX_DEPTH
    )


@given(DEPTHS, st.sampled_from(["list", "object"]))
def test_deep_error_bodies_are_not_error_envelopes(depth: int, kind: str) -> None:
    nested = deep(depth, kind=kind)
    assert (
        parse_error_body(
            b'{"type":"error","error":{"type":"api_error","message":"x","d":' + nested + b"}}"
        )
        is None
    )
    assert parse_error_body(nested) is None
    assert (
        vertex.rpc_error(
            b'[{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":' + nested + b"}}]"
        )
        is None
    )
    assert bedrock.error_message(b'{"message":"x","d":' + nested + b"}") is None


@given(DEPTHS)
def test_deep_client_input_is_refused_as_bad_input(depth: int) -> None:
    frame = b'{"type":"query","id":"q7","request":{"model":"m","messages":' + deep(depth) + b"}}"
    with pytest.raises(RemoteProtocolError) as caught:
        decode_command(frame)
    assert caught.value.error_type == "bad_frame"
    # The refused frame's id is recovered whenever msgspec can skip the rest (below its own
    # recursion limit, which follows Python's).
    assert caught.value.frame_id == "q7" or (depth > 900 and caught.value.frame_id is None)
    with pytest.raises(RemoteProtocolError) as refused:
        parse_body(b'{"model":"m","tools":[{"input_schema":' + deep(depth, kind="object") + b"}]}")
    assert refused.value.error_type == "invalid_request_error"


@given(DEPTHS)
def test_deep_answers_of_every_other_kind(depth: int) -> None:
    nested = deep(depth)
    with pytest.raises(msgspec.DecodeError):
        JSON_OBJECT.decode(
            b'{"type":"message","content":' + nested + b"}"
        )  # a non-streaming answer
    with pytest.raises(msgspec.DecodeError):
        COUNT_TOKENS_RESULT.decode(b'{"input_tokens":3,"x":' + nested + b"}")
    with pytest.raises(msgspec.DecodeError):
        bedrock.count_tokens_result(b'{"inputTokens":3,"x":' + nested + b"}")
    with pytest.raises(RemoteProtocolError):
        decode_bootstrap(b'{"client_data":' + nested + b"}")


@given(DEPTHS)
def test_deep_bedrock_payloads(depth: int) -> None:
    nested = deep(depth)
    with pytest.raises(RemoteProtocolError, match="not base64 JSON"):
        BedrockStreamDecoder().feed(encode_chunk(b'{"type":"message_delta","x":' + nested + b"}"))
    # A chunk envelope that is itself deep.
    envelope = b'{"bytes":"' + base64.b64encode(b'{"type":"ping"}') + b'","p":' + nested + b"}"
    frame = encode_message([(":event-type", "chunk"), (":message-type", "event")], envelope)
    with pytest.raises(RemoteProtocolError):
        BedrockStreamDecoder().feed(frame)
    # An exception frame with a deep body still raises the exception it stands for.
    exception = encode_message(
        [(":exception-type", "throttlingException"), (":message-type", "exception")],
        b'{"message":' + nested + b"}",
    )
    with pytest.raises(BedrockStreamException) as caught:
        BedrockStreamDecoder().feed(exception)
    assert caught.value.status == 429


@pytest.mark.parametrize("value", [-1, 10**9 + 1, 2**63, 1.5])
def test_count_tokens_results_out_of_range_are_malformed(value: object) -> None:
    with pytest.raises(msgspec.ValidationError):
        COUNT_TOKENS_RESULT.decode(msgspec.json.encode({"input_tokens": value}))
    with pytest.raises(msgspec.ValidationError):
        bedrock.count_tokens_result(msgspec.json.encode({"inputTokens": value}))
    assert COUNT_TOKENS_RESULT.decode(b'{"input_tokens": 1000000000}').input_tokens == 10**9
