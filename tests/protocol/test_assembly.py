"""MessageAssembler: the final message and the usage of one stream."""

from __future__ import annotations

import msgspec
import pytest

from protocol.assembly import MessageAssembler
from protocol.errors import RemoteProtocolError

START = b'{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":377,"cache_creation_input_tokens":1200,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":1200,"ephemeral_1h_input_tokens":0},"output_tokens":1}}}'


def ev(**data: object) -> bytes:
    return msgspec.json.encode(data)


def feed_all(events: list[tuple[str, bytes]]) -> MessageAssembler:
    assembler = MessageAssembler()
    for name, data in events:
        assembler.feed(name, data)
    return assembler


WIRE_EXAMPLE = [
    ("message_start", START),
    ("content_block_start", ev(type="content_block_start", index=0, content_block={"type": "thinking", "thinking": "", "signature": ""})),
    ("ping", b'{"type": "ping"}'),
    ("content_block_delta", ev(type="content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "The user wants "})),
    ("content_block_delta", ev(type="content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "weather."})),
    ("content_block_delta", ev(type="content_block_delta", index=0, delta={"type": "signature_delta", "signature": "EqQB"})),
    ("content_block_stop", ev(type="content_block_stop", index=0)),
    ("content_block_start", ev(type="content_block_start", index=1, content_block={"type": "text", "text": ""})),
    ("content_block_delta", ev(type="content_block_delta", index=1, delta={"type": "text_delta", "text": "I'll check."})),
    ("content_block_stop", b'{"type":"content_block_stop","index":1  }'),
    ("content_block_start", ev(type="content_block_start", index=2, content_block={"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}})),
    ("content_block_delta", ev(type="content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": ""})),
    ("content_block_delta", ev(type="content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": '{"locati'})),
    ("content_block_delta", ev(type="content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": 'on": "Paris"}'})),
    ("content_block_stop", ev(type="content_block_stop", index=2)),
    ("message_delta", ev(type="message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"input_tokens": 377, "cache_creation_input_tokens": 1200, "cache_read_input_tokens": 0, "output_tokens": 89})),
    ("message_stop", b'{"type":"message_stop"}'),
]


def test_wire_example_assembles_to_the_non_streaming_shape() -> None:
    assembler = feed_all(WIRE_EXAMPLE)
    message = assembler.message()
    assert message["content"] == [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQB"},
        {"type": "text", "text": "I'll check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
    ]
    assert message["stop_reason"] == "tool_use" and message["id"] == "msg_1"
    assert assembler.stopped and assembler.model == "claude-sonnet-4-5"
    assert assembler.usage.input_tokens == 377 and assembler.usage.output_tokens == 89
    assert assembler.usage.cache_creation_input_tokens == 1200
    assert message["usage"]["cache_creation"] == {"ephemeral_5m_input_tokens": 1200, "ephemeral_1h_input_tokens": 0}


def test_several_message_deltas_keep_the_last_cumulative_usage() -> None:
    events = [*WIRE_EXAMPLE[:-2]]
    events.append(("message_delta", ev(type="message_delta", delta={}, usage={"output_tokens": 10})))
    events.append(("message_delta", ev(type="message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 30, "input_tokens": 0})))
    assembler = feed_all(events)
    assert assembler.usage.output_tokens == 30 and assembler.usage.input_tokens == 377


def test_error_event_is_returned_not_raised() -> None:
    assembler = MessageAssembler()
    error = assembler.feed("error", b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}')
    assert error is not None and error.type == "overloaded_error"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("content_block_delta", ev(type="content_block_delta", index=5, delta={"type": "text_delta", "text": "x"})),
        ("message_start", b"{not json"),
        ("message_delta", ev(type="message_delta", delta={}, usage={})),
    ],
)
def test_inconsistent_streams_raise_remote_protocol_error(name: str, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        MessageAssembler().feed(name, data)


@pytest.mark.parametrize("name", ["message", "ping", "message_stop", "brand_new_event"])
@pytest.mark.parametrize("data", [b"x\nx", b"{not json", b"[1]", b'"text"', b"[" * 200 + b"]" * 200])
def test_events_read_no_further_must_still_be_one_json_object(name: str, data: bytes) -> None:
    # Each is relayed to the client as it came: one that is not a JSON object (or nests past
    # protocol.bounded_json's limit) is a malformed stream, never relayed raw.
    assembler = feed_all(WIRE_EXAMPLE[:8])
    with pytest.raises(RemoteProtocolError, match=f"malformed {name} event"):
        assembler.feed(name, data)
    assert not assembler.stopped


def test_delta_of_the_wrong_type_for_its_block_is_refused() -> None:
    assembler = feed_all(WIRE_EXAMPLE[:8])
    with pytest.raises(RemoteProtocolError):
        assembler.feed("content_block_delta", ev(type="content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": "{"}))


def test_unknown_events_and_delta_types_are_ignored() -> None:
    assembler = feed_all(WIRE_EXAMPLE[:8])
    assert assembler.feed("brand_new_event", b'{"type":"brand_new_event"}') is None
    assembler.feed("content_block_delta", ev(type="content_block_delta", index=1, delta={"type": "future_delta", "x": 1}))
    assert assembler.message()["content"][1] == {"type": "text", "text": ""}
