"""Admission under saturation: the pure rules (docs/protocol.md "Admission").

A gateway process runs at most ``limit`` queries at once (``Config.max_queries``; 0: no
bound). A query that arrives while every slot is taken waits in first-come, first-served
order; a slot that frees passes straight to the longest waiter, so a newcomer never overtakes
anyone who waits (no barging).

``SlotQueue`` is that bookkeeping as a deterministic state machine over opaque keys, with no
clock and no I/O: the shell (``actors/supervisor/admission.py``) keeps one, wakes the waiter a slot went
to, and sends the frames. ``retry_after`` and ``mean_hold`` are the arithmetic of the
``retry-after`` estimate a waiter refused after its bound is given.

Invariants (tests/protocol/test_admission_rules.py checks them over any sequence of arrivals,
finishes and departures): slots in use never exceed the limit; a slot is never held by
nobody while someone waits; waiters are admitted in arrival order; once every query has
finished or left, no slot is in use and nobody waits.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# What ``retry_after`` assumes a query holds its slot for before any has finished: a typical
# streamed answer (a few hundred tokens at the API's tens of tokens per second) takes seconds.
DEFAULT_HOLD: Final = 10.0
# The weight of the newest sample in ``mean_hold``: about the last 20 queries count, so the
# estimate follows a change of load within seconds at saturation, yet one odd query moves it little.
HOLD_WEIGHT: Final = 0.05
# ``retry-after`` stays within [1, 60] s: 0 would invite an instant retry into the same queue,
# and beyond a minute the estimate says less than "try elsewhere".
MIN_RETRY_AFTER: Final = 1
MAX_RETRY_AFTER: Final = 60


class SlotQueue(Generic[K]):
    """Slots in use and the FIFO of waiters (see the module docstring). ``limit`` 0: no bound."""

    __slots__ = ("_in_use", "_waiting", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.limit = limit
        self._in_use = 0
        # Insertion-ordered: the first key is the longest waiter; removal by key is O(1).
        self._waiting: dict[K, None] = {}

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def is_waiting(self, key: K) -> bool:
        return key in self._waiting

    def arrive(self, key: K) -> int:
        """A query asks for a slot: 0 when it has one now, else its 1-based position in the
        queue (it waits; ``finish`` says when a slot passes to it)."""
        if key in self._waiting:
            raise ValueError("that key waits already")
        if not self._waiting and (self.limit == 0 or self._in_use < self.limit):
            self._in_use += 1
            return 0
        self._waiting[key] = None
        return len(self._waiting)

    def finish(self) -> K | None:
        """A query that held a slot ended: the slot passes to the longest waiter, returned
        (it now holds it), or is freed (None)."""
        if self._in_use <= 0:
            raise ValueError("no slot is in use")
        if self._waiting:
            key = next(iter(self._waiting))
            del self._waiting[key]
            return key
        self._in_use -= 1
        return None

    def leave(self, key: K) -> bool:
        """A waiter gives up (an abort, a timeout): False when it was not waiting."""
        if key not in self._waiting:
            return False
        del self._waiting[key]
        return True

    def drop_waiting(self) -> list[K]:
        """Every waiter leaves at once (a shutdown), in arrival order."""
        keys = list(self._waiting)
        self._waiting.clear()
        return keys


def mean_hold(mean: float | None, sample: float) -> float:
    """The running mean of how long a query holds its slot, after one more ``sample``
    (seconds; ``mean`` None: the first)."""
    sample = max(sample, 0.0)
    return sample if mean is None else mean + HOLD_WEIGHT * (sample - mean)


def retry_after(position: int, limit: int, hold: float | None) -> int:
    """Whole seconds until a query at ``position`` in the queue would likely get a slot:
    ``limit`` slots free about one every ``hold / limit`` seconds. Within
    [``MIN_RETRY_AFTER``, ``MAX_RETRY_AFTER``]; ``hold`` None: ``DEFAULT_HOLD``."""
    per_slot = (DEFAULT_HOLD if hold is None else hold) / max(limit, 1)
    estimate = math.ceil(max(position, 1) * per_slot)
    return min(max(estimate, MIN_RETRY_AFTER), MAX_RETRY_AFTER)
