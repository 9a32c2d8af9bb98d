"""Per-session request-construction state, kept by the RetrySupervisor (issue 5).

Owned by the RetrySupervisor's task tree alone (its query tasks run in its nursery), so no
lock is needed: every read-modify-write happens between checkpoints.

- ``SessionRequestState``: the session's latches (betas once sent, the 1-hour TTL decision;
  docs/reference/reference-client.md 7.3, 7.4), its cache-break baselines per tracking key (7.5, at most
  ``MAX_TRACKED_SOURCES``), its count of cache breaks, and how many of its requests are in
  flight (reference 8, session activity).
- ``SessionStates``: those states by session id, bounded: past ``max_sessions`` the least
  recently used idle session is forgotten (its latches start afresh if it comes back, which
  costs at most one cache write).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from protocol.caching import (
    MAX_TRACKED_SOURCES,
    CacheBaseline,
    CacheBreak,
    PromptSnapshot,
    check_break,
)
from protocol.request_builder import SessionLatch

# Sessions remembered at once; each costs a few hundred bytes plus its snapshots.
DEFAULT_MAX_SESSIONS: Final = 10_000


class SessionRequestState:
    """One session's latches, cache-break baselines and activity."""

    __slots__ = ("baselines", "cache_breaks", "in_flight", "last_finished", "latch")

    def __init__(self) -> None:
        self.latch = SessionLatch()
        self.baselines: OrderedDict[str, CacheBaseline] = OrderedDict()
        self.cache_breaks = 0
        self.in_flight = 0
        self.last_finished: float | None = None

    def check_response(
        self, key: str | None, snapshot: PromptSnapshot | None, *, cache_read: int, now: float
    ) -> CacheBreak | None:
        """Phase 2 (after the answer): compare with the key's baseline, then make this
        request the baseline. Counts a break. Diagnostics only."""
        if key is None or snapshot is None:
            return None
        previous = self.baselines.pop(key, None)
        found = check_break(previous, snapshot, cache_read=cache_read, now=now)
        self.baselines[key] = CacheBaseline(snapshot=snapshot, cache_read=cache_read, finished_at=now)
        while len(self.baselines) > MAX_TRACKED_SOURCES:
            self.baselines.popitem(last=False)
        if found is not None:
            self.cache_breaks += 1
        return found


class SessionStates:
    """``SessionRequestState`` by session id, least recently used first."""

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self._max = max_sessions
        self._states: OrderedDict[str, SessionRequestState] = OrderedDict()

    def get(self, session_id: str) -> SessionRequestState:
        """The session's state (created on first use), marked as just used."""
        state = self._states.get(session_id)
        if state is None:
            state = self._states[session_id] = SessionRequestState()
            self._evict()
        else:
            self._states.move_to_end(session_id)
        return state

    def peek(self, session_id: str) -> SessionRequestState | None:
        return self._states.get(session_id)

    def _evict(self) -> None:
        excess = len(self._states) - self._max
        if excess <= 0:
            return
        for session_id in [s for s, st in self._states.items() if st.in_flight == 0][:excess]:
            del self._states[session_id]

    def started(self, session_id: str) -> None:
        self.get(session_id).in_flight += 1

    def finished(self, session_id: str, now: float) -> None:
        state = self.get(session_id)
        state.in_flight = max(state.in_flight - 1, 0)
        state.last_finished = now

    def active(self) -> list[str]:
        """Sessions with a request in flight."""
        return [s for s, st in self._states.items() if st.in_flight > 0]

    def idle(self) -> list[tuple[str, float | None]]:
        """Known sessions with nothing in flight, with the time their last request ended."""
        return [(s, st.last_finished) for s, st in self._states.items() if st.in_flight == 0]

    def __len__(self) -> int:
        return len(self._states)
