"""Output-token-limit recovery: escalate once, then up to three continuations."""

from __future__ import annotations

from typing import Any

from protocol.recovery import (
    ESCALATED_MAX_TOKENS,
    RESUME_PROMPT,
    Recovery,
    can_recover,
    combined,
    hit_output_limit,
    next_step,
)


def answer(text: str, stop: str = "max_tokens") -> dict[str, Any]:
    return {"id": "m", "content": [{"type": "text", "text": text}], "stop_reason": stop}


REQUEST = {"model": "m", "max_tokens": 8000, "messages": [{"role": "user", "content": "write a lot"}]}


def test_escalates_once_then_continues_three_times() -> None:
    recovery = Recovery()
    request: dict[str, Any] = dict(REQUEST)
    steps = []
    for n in range(5):
        if not can_recover(recovery, request):
            break
        step, recovery, request = next_step(recovery, request, answer(f"part{n}"))
        steps.append(step)
    assert steps == ["escalate", "continue", "continue", "continue"]
    assert request["max_tokens"] == ESCALATED_MAX_TOKENS
    assert request["messages"][-1] == {"role": "user", "content": [{"type": "text", "text": RESUME_PROMPT}]}
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    # The escalated attempt's output was voided; the three cut-off parts are kept.
    assert [b["text"] for b in recovery.content] == ["part1", "part2", "part3"]
    assert combined(recovery, answer("end", "end_turn"))["content"][-1] == {"type": "text", "text": "end"}
    assert recovery.index_offset == 3


def test_no_escalation_when_the_request_already_asks_for_64k() -> None:
    step, _, _ = next_step(Recovery(), {**REQUEST, "max_tokens": 64_000}, answer("x"))
    assert step == "continue"


def test_hit_output_limit() -> None:
    assert hit_output_limit(answer("x", "max_tokens"))
    assert hit_output_limit(answer("x", "model_context_window_exceeded"))
    assert not hit_output_limit(answer("x", "end_turn"))
    assert combined(Recovery(), answer("only")) == answer("only")


def test_the_combined_message_has_every_kept_part_then_the_last() -> None:
    recovery = Recovery(escalated=True, continuations=2, content=({"type": "text", "text": "a"}, {"type": "text", "text": "b"}))
    whole = combined(recovery, answer("end", "end_turn"))
    assert [b["text"] for b in whole["content"]] == ["a", "b", "end"] and whole["stop_reason"] == "end_turn"
    assert combined(Recovery(), answer("only", "end_turn")) == answer("only", "end_turn")
