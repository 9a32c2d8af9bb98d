"""Drain: one gateway's graceful shutdown, as events and cancel scopes (docs/protocol.md 3).

Role:
    ``run_gateway`` makes one; the ``Gateway`` handle (``Gateway.shutdown``, and every query
    it starts), the RetrySupervisor's query runs and the doors share it. It knows the
    queries in flight (by their abort scopes), each with its ``Ticket`` of the gateway's
    ``Admission`` (actors/supervisor/admission.py: at most ``Config.max_queries`` run at once, the
    others wait in line), and the doors still serving (``hold``).
Phases of ``shutdown(grace)``:
    1. ``begun`` is set. ``query_started`` raises ``ShuttingDown`` from then on; the doors
       refuse new work and close idle WebSocket connections with 1001. The queries waiting
       for a slot are refused at once: each ends with ``error`` ``shutting_down``
       (``QUEUED_SHUTTING_DOWN_ERROR``; it never started).
    2. The grace: the queries in flight run on until none is left or the grace's deadline
       passes. The grace is a ``CancelScope``: a second ``shutdown`` call with a shorter
       grace (a second SIGTERM) moves its deadline forward.
    3. The cut-off: each query still running has its scope cancelled; it ends with an
       ``error`` frame of type ``shutting_down`` (``ended_by_shutdown``), its usage recorded
       as on any abort. ``queries_ended`` is set once every query has ended.
    4. The doors, which ``hold`` the drain while they serve, write what is left, close
       their connections and release it; ``shutdown`` then returns. The actors (the ledger
       last) keep running until the gateway's nursery is cancelled.
Timers:
    ``CUT_OFF_TIMEOUT`` bounds phase 3 and ``DOORS_TIMEOUT`` phase 4, so a shutdown ends
    within the grace plus their sum whatever a query or a client does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, final

import trio

from actors._util import CLEANUP_TIMEOUT
from actors.supervisor.admission import Admission, Ticket
from protocol.errors import ShuttingDown
from protocol.frames import ErrorInfo

# A cut query's run collects its attempt's usage and then delivers its error frame, each
# under its own CLEANUP_TIMEOUT (actors/supervisor/run.py): both fit.
CUT_OFF_TIMEOUT: Final = 2 * CLEANUP_TIMEOUT
# A door gives its connections CLEANUP_TIMEOUT to write their last frames, then each closes
# under its own CLEANUP_TIMEOUT (actors/doors/websocket.py): both fit.
DOORS_TIMEOUT: Final = 2 * CLEANUP_TIMEOUT
SHUTTING_DOWN: Final = "shutting_down"


# The error of a query the cut-off ended.
SHUTTING_DOWN_ERROR: Final = ErrorInfo(
    type=SHUTTING_DOWN,
    message="the gateway is shutting down and the query did not finish within the shutdown grace",
    status=None,
    request_id=None,
)


# The error of a query that was still waiting for a slot when the shutdown began.
QUEUED_SHUTTING_DOWN_ERROR: Final = ErrorInfo(
    type=SHUTTING_DOWN,
    message="the gateway is shutting down; the query was waiting for a slot and never started",
    status=None,
    request_id=None,
)


@final
class Drain:
    """The shutdown's state and signals (see the module docstring). Not thread-safe: one
    trio run."""

    def __init__(self, admission: Admission | None = None) -> None:
        # The query slots; by default no bound.
        self.admission = admission if admission is not None else Admission()
        # Set when the shutdown begins: the doors stop taking new work.
        self.begun = trio.Event()
        # Set once every query in flight at the start has ended (finished, or cut off).
        self.queries_ended = trio.Event()
        self._done = trio.Event()
        self._grace = trio.CancelScope()
        self._queries: dict[trio.CancelScope, Ticket] = {}
        self._no_queries = trio.Event()
        self._no_queries.set()
        self._cut: set[trio.CancelScope] = set()
        self._holders = 0
        self._no_holders = trio.Event()
        self._no_holders.set()

    @property
    def in_flight(self) -> int:
        """Queries started and not ended yet."""
        return len(self._queries)

    def query_started(self, scope: trio.CancelScope) -> Ticket:
        """Count a query in flight, known by its abort scope, and return its ticket for a
        slot (admitted, or waiting in line). Not a checkpoint.

        Raises:
            ShuttingDown: the shutdown has begun.
        """
        if self.begun.is_set():
            raise ShuttingDown("the gateway is shutting down")
        if not self._queries:
            self._no_queries = trio.Event()
        ticket = self._queries[scope] = self.admission.enter()
        return ticket

    def ticket(self, scope: trio.CancelScope) -> Ticket | None:
        """The slot ticket of the query of ``scope`` (None: not counted here)."""
        return self._queries.get(scope)

    def query_ended(self, scope: trio.CancelScope) -> None:
        """The query of ``scope`` has sent its last frame (no-op for an unknown scope): its
        slot passes to the next query in line, or its place in line is given up."""
        ticket = self._queries.pop(scope, None)
        if ticket is not None:
            self.admission.leave(ticket)
        if not self._queries:
            self._no_queries.set()

    def ended_by_shutdown(self, scope: trio.CancelScope) -> bool:
        """Whether the cut-off cancelled this query's scope (then it ends with ``error``
        ``shutting_down``, not ``aborted``)."""
        return scope in self._cut

    @contextmanager
    def hold(self) -> Iterator[None]:
        """A door serving: ``shutdown`` returns only after it released the drain (or after
        ``DOORS_TIMEOUT`` once the queries ended)."""
        if self._holders == 0:
            self._no_holders = trio.Event()
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            if self._holders == 0:
                self._no_holders.set()

    async def shutdown(self, grace: float) -> None:
        """Run the shutdown (see the module docstring); returns once the doors are done.

        A second call while one runs moves the grace's deadline to at most ``grace`` from
        now (0: cut off at once) and returns when the first does. A checkpoint.
        """
        self._grace.deadline = min(self._grace.deadline, trio.current_time() + grace)
        if self.begun.is_set():
            await self._done.wait()
            return
        self.begun.set()
        self.admission.refuse_waiting()
        with self._grace:
            await self._no_queries.wait()
        self._cut_off()
        with trio.move_on_after(CUT_OFF_TIMEOUT):
            await self._no_queries.wait()
        self.queries_ended.set()
        with trio.move_on_after(DOORS_TIMEOUT):
            await self._no_holders.wait()
        self._done.set()

    def _cut_off(self) -> None:
        """End every query still in flight; one that is being aborted already stays aborted."""
        for scope in self._queries:
            if not scope.cancel_called:
                self._cut.add(scope)
                scope.cancel(reason="the gateway is shutting down")
