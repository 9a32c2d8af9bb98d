"""The overload gate's turn for clients that retry on their own (``SharedRetryState.client_turn``):
they wait only for a probe in flight, share its failure, and go once it succeeds."""

from __future__ import annotations

import trio
import trio.testing

from actors.messages.relay import AttemptOutcome
from actors.supervisor.shared import Refused, SharedRetryState
from protocol.retry import Failure, GiveUp

MODEL = "claude-opus-4-6"


def overloaded(retry_after: str | None = None) -> AttemptOutcome:
    failure = Failure(kind="status", error_type="overloaded_error", message="Overloaded", status=529, retry_after=retry_after)
    return AttemptOutcome(model=MODEL, failure=failure)


def give_up(outcome: AttemptOutcome) -> GiveUp:
    assert outcome.failure is not None
    return GiveUp(error=outcome.failure.info())


async def test_a_client_turn_is_the_next_probe_without_waiting_for_the_gates_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedRetryState()
    assert await shared.client_turn(MODEL, 60.0) is False  # closed: it goes
    shared.report(MODEL, probe=False, outcome=overloaded(), decision=give_up(overloaded()))
    assert shared.gate(MODEL).open and shared.gate(MODEL).next_probe_at > trio.current_time()
    # Before the gate's own next probe: a client that retries on its own goes all the same.
    assert await shared.client_turn(MODEL, 60.0) is True
    assert trio.current_time() == 0.0


async def test_clients_share_a_probes_failure_and_go_on_its_200(autojump_clock: trio.testing.MockClock) -> None:
    shared = SharedRetryState()
    shared.report(MODEL, probe=False, outcome=overloaded(), decision=give_up(overloaded()))
    assert await shared.client_turn(MODEL, 60.0) is True
    turns: list[bool | Refused] = []

    async def waiter() -> None:
        turns.append(await shared.client_turn(MODEL, 60.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(1.0)
        assert turns == []  # it waits for the probe's verdict
        shared.report(MODEL, probe=True, outcome=overloaded(), decision=give_up(overloaded()))
    # The probe failed: the waiter gets that answer (its own backoff applies), no attempt.
    assert turns == [Refused(retry_after=None)]
    assert await shared.client_turn(MODEL, 60.0) is True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(1.0)
        shared.accepted(MODEL)  # the probe's 200, long before its stream ends
    assert turns[-1] is False and not shared.gate(MODEL).open


async def test_the_upstreams_retry_after_holds_clients_back_and_a_slow_probe_is_waited_for_a_while(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedRetryState()
    shared.report(MODEL, probe=False, outcome=overloaded("5"), decision=give_up(overloaded("5")))
    turn = await shared.client_turn(MODEL, 60.0)
    assert turn == Refused(retry_after=5.0)
    await trio.sleep(5.0)
    assert await shared.client_turn(MODEL, 60.0) is True
    # A probe that takes long: the next client waits up to its limit, then is answered.
    started = trio.current_time()
    assert await shared.client_turn(MODEL, 3.0) == Refused(retry_after=0.0)
    assert trio.current_time() - started == 3.0
