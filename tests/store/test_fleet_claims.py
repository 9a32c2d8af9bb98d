"""``actors.fleet``: session claims across instances through PostgreSQL LISTEN/NOTIFY, two
Fleets in one process on one fresh database (each with its own connections, as two
processes would have)."""

from __future__ import annotations

import psycopg
import trio

from actors.fleet import SESSIONS_CHANNEL, Fleet
from actors.pg_store import PgStore

WAIT = 10  # seconds: a bound for a notification's round trip through the server


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
