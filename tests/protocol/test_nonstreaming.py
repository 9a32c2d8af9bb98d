"""Non-streaming fallback: capped body, and a message replayed as the stream it would be."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from protocol.assembly import MessageAssembler
from protocol.client_request import attempt_body, strip_thinking, thinking_budget
from protocol.nonstreaming import events_from_message, nonstreaming_body

_text = st.text(max_size=30)
_block = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, _text),
    st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, _text, _text),
    st.builds(
        lambda i, v: {"type": "tool_use", "id": f"toolu_{i}", "name": "f", "input": {"x": v}},
        st.integers(0, 9),
        st.one_of(st.integers(), _text, st.booleans()),
    ),
    st.just({"type": "redacted_thinking", "data": "opaque"}),
)


def message(content: list[Any], stop: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 4,
            "cache_read_input_tokens": 2,
            "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 1},
            "output_tokens": 7,
        },
    }


@given(content=st.lists(_block, max_size=6), stop=st.sampled_from(["end_turn", "tool_use", "max_tokens"]))
def test_replayed_events_assemble_to_the_same_message(content: list[Any], stop: str) -> None:
    original = message(content, stop)
    assembler = MessageAssembler()
    for name, data in events_from_message(original):
        assert assembler.feed(name, data) is None
    assembled = assembler.message()
    assert assembled["content"] == original["content"]
    assert assembled["stop_reason"] == stop and assembler.stopped
    assert assembled["usage"] == original["usage"]


def test_nonstreaming_body_caps_max_tokens_and_thinking_budget() -> None:
    body = nonstreaming_body({"model": "m", "stream": True, "max_tokens": 128_000, "thinking": {"type": "enabled", "budget_tokens": 100_000}})
    assert body == {"model": "m", "max_tokens": 64_000, "thinking": {"type": "enabled", "budget_tokens": 63_999}}
    small = nonstreaming_body({"model": "m", "max_tokens": 1000})
    assert small["max_tokens"] == 1000


def test_attempt_body_is_a_fresh_copy_with_overrides() -> None:
    request = {"model": "a", "max_tokens": 100, "speed": "fast", "messages": []}
    body = attempt_body(request, model="b", max_tokens=50)
    assert body == {"model": "b", "max_tokens": 50, "messages": [], "stream": True}
    assert request == {"model": "a", "max_tokens": 100, "speed": "fast", "messages": []}
    assert attempt_body(request, model="b", fast=True)["speed"] == "fast"


def test_strip_thinking_removes_model_bound_blocks_from_assistant_turns_only() -> None:
    request: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "a"}]},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
        ]
    }
    stripped = strip_thinking(request)
    assert stripped["messages"][1]["content"] == [{"type": "text", "text": "a"}]
    assert stripped["messages"][2]["content"] == [{"type": "text", "text": ""}]
    assert request["messages"][1]["content"][0]["type"] == "thinking"


def test_thinking_budget() -> None:
    assert thinking_budget({"thinking": {"type": "enabled", "budget_tokens": 2048}}) == 2048
    assert thinking_budget({"thinking": {"type": "adaptive"}}) == 0
    assert thinking_budget({}) == 0
