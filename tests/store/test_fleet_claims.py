"""``actors.store.pg_fleet``: session claims and overload gates across instances through PostgreSQL
(LISTEN/NOTIFY, the ``gates`` table), two Fleets in one process on one fresh database (each
with its own connections, as two processes would have)."""

from __future__ import annotations

import psycopg
import trio

from actors.messages.relay import AttemptOutcome
from actors.store.fleet_link import GateNews
from actors.store.pg_fleet import REMOTE_RECHECK, SESSIONS_CHANNEL, Fleet
from actors.store.postgres import PgStore
from actors.supervisor.shared import SharedRetryState
from protocol.retry import Failure, GiveUp

WAIT = 10  # seconds: a bound for a notification's round trip through the server
MODEL = "claude-opus-4-6"


def overloaded() -> AttemptOutcome:
    failure = Failure(kind="status", error_type="overloaded_error", message="Overloaded", status=529)
    return AttemptOutcome(model=MODEL, failure=failure)


def give_up(outcome: AttemptOutcome) -> GiveUp:
    assert outcome.failure is not None
    return GiveUp(error=outcome.failure.info())


async def no_beat(_remaining: float) -> None:
    """No heartbeat to send in these tests."""


async def test_a_newer_claim_on_another_instance_takes_the_session_and_nothing_else(pg_url: str) -> None:
    PgStore.open(pg_url).close()  # the schema, as the gateway's ledger creates it at start
    a, b = Fleet(pg_url, "A"), Fleet(pg_url, "B")
    taken: list[str] = []
    superseded = trio.Event()

    def on_taken(name: str) -> None:
        taken.append(name)
        if name == "a:s":
            superseded.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        with trio.fail_after(WAIT):
            first = await a.claim("s", lambda: on_taken("a:s"))
            other = await a.claim("t", lambda: on_taken("a:t"))
            # Someone else on the channel: a payload that does not decode is ignored.
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("SELECT pg_notify(%s, 'not json')", (SESSIONS_CHANNEL,))
            second = await b.claim("s", lambda: on_taken("b:s"))
            await superseded.wait()
            assert second.epoch is not None and first.epoch is not None and second.epoch > first.epoch
            assert a.notifications == 1  # B's claim; the malformed payload and A's own are not counted
        a.release(first)
        a.release(other)
        b.release(second)
        nursery.cancel_scope.cancel()
    assert taken == ["a:s"]


async def test_one_probe_for_the_fleet_and_its_answer_releases_the_other_instance_at_once(pg_url: str) -> None:
    PgStore.open(pg_url).close()
    fleets = Fleet(pg_url, "A"), Fleet(pg_url, "B")
    async with trio.open_nursery() as nursery:
        for fleet in fleets:
            await nursery.start(fleet.run)
        a, b = (SharedRetryState(fleet=fleet) for fleet in fleets)
        for shared in (a, b):  # each instance saw the model overloaded (its own first 529)
            shared.report(MODEL, probe=False, outcome=overloaded(), decision=give_up(overloaded()))
        with trio.fail_after(WAIT):
            assert await a.wait_turn(MODEL, no_beat, 30.0) is True  # A probes, for the fleet
            with psycopg.connect(pg_url, autocommit=True) as conn:
                row = conn.execute("SELECT open, probe_instance FROM switchboard.gates WHERE model = %s", (MODEL,)).fetchone()
            assert row == (True, "A")
            turns: list[bool | None] = []
            released = trio.Event()

            async def b_waits() -> None:
                turns.append(await b.wait_turn(MODEL, no_beat, 30.0))
                released.set()

            asked = trio.Event()
            take_probe = fleets[1].take_probe
            answers: list[float | None] = []

            async def take_probe_seen(model: str) -> float | None:
                answers.append(await take_probe(model))
                asked.set()
                return answers[-1]

            fleets[1].take_probe = take_probe_seen  # type: ignore[method-assign]
            nursery.start_soon(b_waits)
            await asked.wait()
            # The fleet's gate holds B back while A's probe is in flight.
            assert answers[0] is not None and answers[0] >= REMOTE_RECHECK and not turns
            a.accepted(MODEL)  # A's probe got its 200
            await released.wait()
        # Released by A's notification, not by asking again (which would have made B the
        # probe of a gate the database says closed): B goes as an ordinary attempt.
        assert turns == [False] and not b.gate(MODEL).open
        nursery.cancel_scope.cancel()


async def test_a_fast_mode_cooldown_reaches_the_other_instance(pg_url: str) -> None:
    PgStore.open(pg_url).close()
    fleets = Fleet(pg_url, "A"), Fleet(pg_url, "B")
    async with trio.open_nursery() as nursery:
        for fleet in fleets:
            await nursery.start(fleet.run)
        a, b = (SharedRetryState(fleet=fleet) for fleet in fleets)
        told = trio.Event()
        on_gate = fleets[1].on_gate
        assert on_gate is not None

        def seen(news: GateNews) -> None:
            on_gate(news)
            told.set()

        fleets[1].on_gate = seen
        until = a.wall_now() + 30.0
        a.start_fast_cooldown(MODEL, until)
        with trio.fail_after(WAIT):
            await told.wait()
        cooling = b.fast_cooldown_until(MODEL)
        assert cooling is not None and abs(cooling - until) < 1.0  # the two instances' clocks
        assert b.fast_cooldown_until("claude-sonnet-4-6") is None
        nursery.cancel_scope.cancel()
