"""Per-session request state (actors/supervisor/session_state.py): cache-break counts, bounds, activity."""

from __future__ import annotations

from typing import Any

from actors.supervisor.session_state import SessionRequestState, SessionStates
from protocol.caching import PromptSnapshot, snapshot


def snap(system: str = "sys") -> PromptSnapshot:
    body: dict[str, Any] = {"model": "claude-sonnet-4-6", "system": [{"type": "text", "text": system}], "messages": []}
    return snapshot(body, ["a"], fast_mode=False, extra_body={})


def test_session_state_counts_breaks_and_keeps_baselines_per_key() -> None:
    state = SessionRequestState()
    assert state.check_response("sdk", snap(), cache_read=10_000, now=0.0) is None
    assert state.check_response("agent-1", snap(), cache_read=0, now=0.0) is None
    found = state.check_response("sdk", snap(system="changed"), cache_read=0, now=1.0)
    assert found is not None and found.reason.startswith("system prompt changed")
    assert state.cache_breaks == 1
    assert state.check_response(None, snap(), cache_read=0, now=2.0) is None
    for i in range(20):
        state.check_response(f"k{i}", snap(), cache_read=0, now=3.0)
    assert len(state.baselines) == 10


def test_session_states_are_bounded_and_track_activity() -> None:
    states = SessionStates(max_sessions=2)
    states.started("a")
    states.get("b")
    states.get("c")  # b is idle and the least recently used: forgotten; a is in flight
    assert states.peek("b") is None and states.peek("a") is not None
    assert states.active() == ["a"]
    states.finished("a", 5.0)
    assert states.active() == [] and ("a", 5.0) in states.idle()
