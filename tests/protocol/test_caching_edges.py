"""Prompt-cache breakpoints at their edges: each test pins a rule a mutant of
protocol/caching.py changed without any test failing (docs/testing.md "Mutation testing")."""

from __future__ import annotations

from protocol.caching import count_breakpoints

MARK = {"cache_control": {"type": "ephemeral"}}


def test_marked_blocks_are_counted_in_the_system_prompt_the_tools_and_the_messages() -> None:
    body: dict[str, object] = {
        "system": [{"type": "text", "text": "s", **MARK}, {"type": "text", "text": "t"}],
        "tools": [{"name": "x", "input_schema": {}, **MARK}, {"name": "y", "input_schema": {}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a", **MARK}, {"type": "text", "text": "b", **MARK}]},
            {"role": "assistant", "content": "a plain string has no blocks"},
            {"role": "user", "content": [{"type": "text", "text": "c"}]},
        ],
    }
    assert count_breakpoints(body) == 4
    assert count_breakpoints({"system": "a string", "messages": []}) == 0
