"""The emulated model's replies (pure): content, usage, stop reasons, stream vs message."""

from __future__ import annotations

from typing import Any

import msgspec
from emulator_testkit import WEATHER_TOOL, assemble, body, parse_sse
from hypothesis import given
from hypothesis import strategies as st

from emulator.responses import (
    DEFAULT_TEXT,
    SIGNATURE,
    Reply,
    example_input,
    message_body,
    plan_reply,
    split_words,
    stream_events,
)
from emulator.tokens import InputUsage

USAGE = InputUsage(input_tokens=7, cache_creation_input_tokens=5, ephemeral_5m_input_tokens=5)


def _plan(request: dict[str, Any], deltas: int | None = None) -> Reply:
    return plan_reply(request, sequence=9, input_usage=USAGE, deltas=deltas)


def _events(reply: Reply) -> list[tuple[str, Any]]:
    return parse_sse(b"".join(stream_events(reply)).decode())


def _deltas(reply: Reply, kind: str) -> list[Any]:
    return [d for block in reply.blocks for d in block.deltas if d["type"] == kind]


@given(st.text(max_size=200))
def test_words_join_back(text: str) -> None:
    assert "".join(split_words(text)) == text


def test_echo_text_one_delta_per_word() -> None:
    reply = _plan(body("hello there   world"))
    assert [d["text"] for d in _deltas(reply, "text_delta")] == [
        "Echo: ",
        "hello ",
        "there   ",
        "world",
    ]
    assert reply.blocks[0].final == {"type": "text", "text": "Echo: hello there   world"}
    assert reply.output_tokens == 4 + 1
    assert reply.stop_reason == "end_turn"
    assert reply.message_id == "msg_emu_9"


def test_last_user_text_from_blocks_and_directives_removed() -> None:
    request = body("x")
    request["messages"] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a <<emulator:ok>>"},
                {"type": "text", "text": "b"},
            ],
        },
    ]
    assert _plan(request).blocks[0].final["text"] == "Echo: a \nb"


def test_no_user_text_gives_the_fixed_sentence() -> None:
    request = body("x")
    request["messages"][0]["content"] = [
        {"type": "tool_result", "tool_use_id": "t", "content": "42"}
    ]
    assert _plan(request).blocks[0].final["text"] == DEFAULT_TEXT


@given(st.integers(0, 300))
def test_deltas_n_gives_n_text_deltas(count: int) -> None:
    reply = _plan(body(max_tokens=10_000), deltas=count)
    texts = [d["text"] for d in _deltas(reply, "text_delta")]
    assert len(texts) == count
    assert "".join(texts) == " ".join(f"word{i}" for i in range(count))
    assert reply.output_tokens == count + 1


def test_max_tokens_truncates() -> None:
    reply = _plan(body(max_tokens=4), deltas=10)
    assert len(_deltas(reply, "text_delta")) == 3
    assert reply.output_tokens == 4
    assert reply.stop_reason == "max_tokens"
    assert reply.blocks[0].final["text"] == "word0 word1 word2 "


def test_thinking_block_comes_first() -> None:
    reply = _plan(body(thinking={"type": "adaptive"}))
    thinking = reply.blocks[0]
    assert thinking.start == {"type": "thinking", "thinking": "", "signature": ""}
    assert [d["type"] for d in thinking.deltas][-1] == "signature_delta"
    assert thinking.final["signature"] == SIGNATURE
    assert thinking.final["thinking"] == "Let me think about this request step by step."
    assert reply.blocks[1].start["type"] == "text"
    assert reply.output_tokens == (1 + 4) + (1 + 4)


def test_tool_named_in_text_is_called_after_the_text() -> None:
    reply = _plan(body("what does get_weather say?", tools=[WEATHER_TOOL]))
    assert [block.start["type"] for block in reply.blocks] == ["text", "tool_use"]
    tool = reply.blocks[1]
    assert tool.start == {
        "type": "tool_use",
        "id": "toolu_emu_9",
        "name": "get_weather",
        "input": {},
    }
    assert tool.deltas[0] == {"type": "input_json_delta", "partial_json": ""}
    assert tool.final["input"] == {"location": "Paris", "days": 1}
    assert reply.stop_reason == "tool_use"


def test_forced_tool_choice_skips_the_text() -> None:
    for choice in ({"type": "any"}, {"type": "tool", "name": "get_weather"}):
        reply = _plan(body("hi", tools=[WEATHER_TOOL], tool_choice=choice))
        assert [block.start["type"] for block in reply.blocks] == ["tool_use"]
    assert (
        len(_plan(body("get_weather", tools=[WEATHER_TOOL], tool_choice={"type": "none"})).blocks)
        == 1
    )
    assert len(_plan(body("hi", tools=[WEATHER_TOOL])).blocks) == 1


def test_a_tool_block_that_does_not_fit_is_left_out() -> None:
    reply = _plan(body("get_weather", tools=[WEATHER_TOOL], max_tokens=7))
    assert [block.start["type"] for block in reply.blocks] == ["text"]
    assert reply.stop_reason == "max_tokens"
    assert reply.output_tokens == 3


def test_example_input_from_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "o": {"type": "object"},
            "e": {"enum": ["c", "f"]},
            "u": {"type": ["null", "integer"]},
            "optional": {"type": "string"},
        },
        "required": ["s", "n", "b", "o", "e", "u", "missing"],
    }
    assert example_input(schema) == {
        "s": "Paris",
        "n": 1,
        "b": True,
        "o": None,
        "e": "c",
        "u": 1,
        "missing": None,
    }


def test_stream_event_order() -> None:
    names = [
        name
        for name, _ in _events(
            _plan(body("a b", thinking={"type": "enabled", "budget_tokens": 1024}))
        )
    ]
    assert names == [
        "message_start",
        "content_block_start", "ping", *["content_block_delta"] * 4, "content_block_stop",
        "content_block_start", *["content_block_delta"] * 3, "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # fmt: skip


def test_message_start_and_delta_usage() -> None:
    events = dict(_events(_plan(body())))
    start_usage = events["message_start"]["message"]["usage"]
    assert start_usage == {
        "input_tokens": 7,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 1,
        "service_tier": "standard",
    }
    assert events["message_delta"]["usage"] == {
        "input_tokens": 7,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 0,
        "output_tokens": 5,
    }
    assert events["ping"] == {"type": "ping"}


@given(
    text=st.text(max_size=60),
    thinking=st.booleans(),
    tool=st.sampled_from([None, "auto", "any"]),
    max_tokens=st.integers(1, 40),
    deltas=st.one_of(st.none(), st.integers(0, 30)),
)
def test_stream_assembles_to_the_message(
    text: str, thinking: bool, tool: str | None, max_tokens: int, deltas: int | None
) -> None:
    extra: dict[str, Any] = {"max_tokens": max_tokens}
    if thinking:
        extra["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    if tool:
        extra["tools"] = [WEATHER_TOOL]
        extra["tool_choice"] = {"type": tool}
    reply = _plan(body(text + " get_weather", **extra), deltas=deltas)
    assert assemble(_events(reply)) == msgspec.json.decode(message_body(reply))
    assert reply.output_tokens <= max_tokens
