"""Admission: at most ``Config.max_queries`` queries run at once in a gateway process.

Role:
    The shell around ``protocol.admission.SlotQueue`` (the FIFO rules). The ``Drain``
    (actors/supervisor/drain.py) owns one and gives every query it counts in flight a ``Ticket`` from
    it, in ``Gateway.start_query``, the one path of both doors and of embedding; the
    ticket is given back when the query has sent its last frame (``Drain.query_ended``),
    which passes the slot to the longest waiter. Over the bound a query waits, in arrival
    order, for a slot; nothing polls: each waiter sleeps on its own ``trio.Event``, which
    ``leave`` sets when the slot passes to it.
Where a query waits (docs/protocol.md "Admission"):
    A WebSocket (or embedding) query waits in its run, in the RetrySupervisor
    (``wait_for_slot``): at once a ``queued`` frame, then a ``heartbeat`` at least every
    ``HEARTBEAT_INTERVAL``; its abort scope ends the wait (``aborted``, zero usage). An HTTP
    request (or an embedding caller that gives ``admission_timeout``) waits in
    ``Gateway.start_query`` under a deadline (a cancel scope): past it, ``Overloaded`` with
    a ``retry-after`` estimate.
Shutdown:
    ``refuse_waiting`` (the Drain calls it as the shutdown begins) wakes every waiter
    refused at once: it ends with ``shutting_down`` (it never started), while the queries
    that hold slots run on through the grace.
Metrics:
    ``switchboard_queued_queries`` follows the queue's length; the Gateway counts
    ``switchboard_admission_rejections_total`` when a wait runs out.
"""

from __future__ import annotations

from typing import Final, Literal, final

import trio

from actors.observe.metrics import Metrics
from actors.supervisor.channel import HEARTBEAT_INTERVAL, heartbeat, send
from protocol.admission import SlotQueue, mean_hold, retry_after
from protocol.frames import GatewayFrame, Queued

TicketState = Literal["waiting", "admitted", "refused", "left"]
# A query waiting for a slot has made no attempt yet: its heartbeats say attempt 0.
NO_ATTEMPT: Final = 0


@final
class Ticket:
    """One query's claim on a slot: ``waiting``, then ``admitted`` (it holds a slot) or
    ``refused`` (a shutdown), and ``left`` once given back. ``position``: its place in the
    queue when it arrived (0: admitted at once)."""

    __slots__ = ("_granted", "admitted_at", "position", "state")

    def __init__(self) -> None:
        self.position = 0
        self.state: TicketState = "waiting"
        self.admitted_at = 0.0
        self._granted = trio.Event()

    @property
    def admitted(self) -> bool:
        return self.state == "admitted"

    async def wait(self) -> bool:
        """Wait for the slot: True once admitted, False when refused (a shutdown). A
        checkpoint; cancelling it leaves the ticket as it is (give it back with ``leave``)."""
        await self._granted.wait()
        return self.state == "admitted"

    def _wake(self, state: TicketState) -> None:
        self.state = state
        if state == "admitted":
            self.admitted_at = trio.current_time()
        self._granted.set()


@final
class Admission:
    """The gateway's query slots (see the module docstring). ``limit`` 0: no bound."""

    def __init__(self, limit: int = 0, metrics: Metrics | None = None) -> None:
        self._queue: SlotQueue[Ticket] = SlotQueue(limit)
        self._metrics = metrics
        # Seconds a query holds its slot, on average (None until one has finished).
        self._hold: float | None = None

    @property
    def limit(self) -> int:
        return self._queue.limit

    @property
    def in_use(self) -> int:
        return self._queue.in_use

    @property
    def queued(self) -> int:
        return self._queue.waiting

    def enter(self) -> Ticket:
        """A new query's ticket: admitted at once when a slot is free and nobody waits, else
        waiting at the end of the queue. Not a checkpoint."""
        ticket = Ticket()
        position = self._queue.arrive(ticket)
        if position:
            ticket.position = position
            self._gauge()
        else:
            ticket._wake("admitted")
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """Give a ticket back (idempotent): a waiter leaves the queue; an admitted query's
        slot passes to the longest waiter, or is freed. Not a checkpoint."""
        match ticket.state:
            case "waiting":
                self._queue.leave(ticket)
                ticket.state = "left"
                self._gauge()
            case "admitted":
                ticket.state = "left"
                self._hold = mean_hold(self._hold, trio.current_time() - ticket.admitted_at)
                successor = self._queue.finish()
                if successor is not None:
                    successor._wake("admitted")
                    self._gauge()
            case "refused" | "left":
                pass

    def refuse_waiting(self) -> None:
        """Wake every waiter refused (the shutdown has begun). Not a checkpoint."""
        for ticket in self._queue.drop_waiting():
            ticket._wake("refused")
        self._gauge()

    def retry_after(self, position: int | None = None) -> int:
        """Whole seconds until a query at ``position`` (default: the end of the queue) would
        likely get a slot (``protocol.admission.retry_after``)."""
        where = self.queued + 1 if position is None else position
        return retry_after(where, self.limit, self._hold)

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.queued_queries(self.queued)


async def wait_for_slot(
    admission: Admission, ticket: Ticket, outbound: trio.MemorySendChannel[GatewayFrame], query_id: str
) -> bool:
    """Wait, in a query's run, for its ticket's slot: True once admitted (at once, with no
    frame, when it already is), False when a shutdown refused it. While it waits the client
    gets a ``queued`` frame at once, then a ``heartbeat`` (attempt 0, ``remaining_ms`` an
    estimate) every ``HEARTBEAT_INTERVAL``. A checkpoint when it waits; cancel the query's
    scope to stop waiting (the caller gives the ticket back).

    Raises:
        ClientGone: nobody listens any more.
    """
    if ticket.state != "waiting":
        return ticket.admitted
    await send(outbound, Queued(id=query_id, position=ticket.position, limit=admission.limit))
    while True:
        with trio.move_on_after(HEARTBEAT_INTERVAL):
            return await ticket.wait()
        # Positions only fall: the queue's length now bounds this waiter's place from above.
        ahead = min(ticket.position, admission.queued)
        await heartbeat(outbound, query_id, NO_ATTEMPT, admission.retry_after(ahead))
