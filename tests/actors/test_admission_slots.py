"""Admission's shell (actors/supervisor/admission.py) through the Drain that owns it: slots in use never
exceed the bound and never leak, waiters wake in arrival order, after any sequence of
starts, finishes and aborts; a shutdown refuses every waiter at once."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.observe.metrics import Metrics
from actors.supervisor.admission import Admission, Ticket
from actors.supervisor.drain import Drain

_STEPS = st.lists(
    st.tuples(st.sampled_from(["start", "finish", "abort"]), st.integers(min_value=0, max_value=50)),
    max_size=60,
)


def queued_gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("switchboard_queued_queries")


@settings(max_examples=60, deadline=None)
@given(limit=st.integers(min_value=1, max_value=4), steps=_STEPS)
def test_slots_never_exceed_the_bound_never_leak_and_go_in_arrival_order(
    limit: int, steps: list[tuple[str, int]]
) -> None:
    async def scenario() -> None:
        metrics = Metrics()
        drain = Drain(Admission(limit, metrics))
        admission = drain.admission
        queries: list[tuple[trio.CancelScope, Ticket]] = []  # in arrival order
        woken: list[int] = []  # arrival indexes, in the order their wait ended admitted

        async def wait(index: int, scope: trio.CancelScope, ticket: Ticket) -> None:
            with scope:
                if await ticket.wait():
                    woken.append(index)

        async with trio.open_nursery() as nursery:
            for op, n in steps:
                live = [(s, t) for s, t in queries if t.state in ("waiting", "admitted")]
                if op == "start":
                    scope = trio.CancelScope()
                    ticket = drain.query_started(scope)
                    queries.append((scope, ticket))
                    if ticket.state == "waiting":
                        nursery.start_soon(wait, len(queries) - 1, scope, ticket)
                elif op == "finish" and (running := [q for q in live if q[1].admitted]):
                    waited = [i for i, (_, t) in enumerate(queries) if t.state == "waiting"]
                    drain.query_ended(running[n % len(running)][0])
                    # FIFO, no barging: the freed slot went to the longest waiter, if any.
                    now_admitted = [i for i in waited if queries[i][1].admitted]
                    assert now_admitted == waited[:1]
                elif op == "abort" and (waiting := [q for q in live if q[1].state == "waiting"]):
                    scope, ticket = waiting[n % len(waiting)]
                    scope.cancel()  # the run's scope: its wait ends, then it gives the ticket back
                    drain.query_ended(scope)
                await trio.testing.wait_all_tasks_blocked()
                admitted = sum(t.admitted for _, t in queries)
                waiting_now = sum(t.state == "waiting" for _, t in queries)
                assert admission.in_use == admitted <= limit
                assert admission.queued == waiting_now == queued_gauge(metrics)
                assert not waiting_now or admitted == limit
            # FIFO: those that waited were admitted in the order they arrived.
            assert woken == sorted(woken)
            for scope, _ in queries:
                scope.cancel()  # as a run's end: its wait is over when it gives its ticket back
                drain.query_ended(scope)
            await trio.testing.wait_all_tasks_blocked()
            assert (admission.in_use, admission.queued, drain.in_flight) == (0, 0, 0)
            assert queued_gauge(metrics) == 0

    trio.run(scenario)


async def test_a_shutdown_refuses_every_waiter_at_once_and_the_running_keep_their_slots() -> None:
    drain = Drain(Admission(1))
    running = trio.CancelScope()
    assert drain.query_started(running).admitted
    tickets = [drain.query_started(trio.CancelScope()) for _ in range(3)]
    assert [t.position for t in tickets] == [1, 2, 3]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain.shutdown, 60.0)
        await drain.begun.wait()
        assert [await t.wait() for t in tickets] == [False, False, False]
        assert (drain.admission.in_use, drain.admission.queued) == (1, 0)
        drain.query_ended(running)  # the slot is not handed to a refused waiter
        assert drain.admission.in_use == 0
        nursery.cancel_scope.cancel()


async def test_no_bound_admits_every_query_at_once() -> None:
    drain = Drain()
    tickets = [drain.query_started(trio.CancelScope()) for _ in range(1000)]
    assert all(t.admitted and t.position == 0 for t in tickets)
