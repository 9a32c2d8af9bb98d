"""Handing a started query over to the RetrySupervisor (the Gateway's ``start_query``): it
is counted in by the drain first (so a shutdown that begins meanwhile waits for it), waits
for its admission slot here when the caller gave a patience (actors/supervisor/admission.py),
then goes to the supervisor's inbox; a query that cannot be handed over is counted out,
its outbound closed and its budget settled to 0.
"""

from __future__ import annotations

import trio

from actors.messages.supervisor import RetrySupervisorAddress, RunQuery
from actors.observe.metrics import Metrics
from actors.supervisor.admission import Ticket
from actors.supervisor.drain import Drain
from protocol.errors import ActorUnavailable, Overloaded, ShuttingDown


async def hand_over(
    drain: Drain,
    to_supervisor: RetrySupervisorAddress,
    metrics: Metrics,
    run: RunQuery,
    admission_timeout: float | None,
) -> None:
    """Hand ``run`` to the supervisor (module docstring). A checkpoint.

    Raises:
        ShuttingDown: a graceful shutdown has begun, also while it waited.
        Overloaded: no slot freed within ``admission_timeout``.
        ActorUnavailable: the gateway is stopping.
    """
    scope, outbound, on_end = run.scope, run.outbound, run.on_end
    try:
        # Counted before it is handed over, so a shutdown that begins meanwhile waits for it.
        ticket = drain.query_started(scope)
    except ShuttingDown:
        outbound.close()
        if on_end is not None:
            on_end(0)
        raise
    try:
        if admission_timeout is not None and not ticket.admitted:
            await admit_within(drain, metrics, ticket, admission_timeout)
        await to_supervisor.send(run)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        drain.query_ended(scope)
        outbound.close()
        if on_end is not None:
            on_end(0)
        raise ActorUnavailable("the gateway is shutting down") from exc
    except BaseException:
        drain.query_ended(scope)
        outbound.close()
        if on_end is not None:
            on_end(0)
        raise


async def admit_within(drain: Drain, metrics: Metrics, ticket: Ticket, patience: float) -> None:
    """Wait up to ``patience`` seconds for the ticket's slot (the caller gives the ticket back when
    this raises). A checkpoint.

    Raises:
        Overloaded: the wait ran out; ``retry_after`` estimates when a slot would free.
        ShuttingDown: a shutdown refused the waiting ticket.
    """
    admission = drain.admission
    with trio.move_on_after(patience):
        if not await ticket.wait():
            raise ShuttingDown("the gateway is shutting down")
        return
    metrics.admission_rejected()
    raise Overloaded(
        f"the gateway is running its maximum of {admission.limit} queries; none ended within {patience:g} s",
        retry_after=admission.retry_after(min(ticket.position, admission.queued)),
    )
