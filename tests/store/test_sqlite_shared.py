"""One SQLite ledger file shared by the workers of ``serve --workers N``
(actors/store/sqlite_shared.py, actors/store/sqlite_fleet.py): durations added, not overwritten; a
silent worker's reservations released by a live one; session claims and overload gates
seen across two fleets on one file (each its own connection, as two processes have)."""

from __future__ import annotations

import datetime
import os
import sqlite3
from pathlib import Path

import trio

from actors.store.fleet_link import GateNews
from actors.store.rows import SessionRow
from actors.store.sqlite_fleet import SqliteFleet
from actors.store.sqlite_schema import SCHEMA_VERSION
from actors.store.sqlite_shared import (
    SharedLedgerStore,
    SharedSqliteTokenStore,
    mark_dead,
    prepare_shared_ledger,
)
from actors.store.token_rows import Claim, new_token
from actors.store.tokens import SILENT_AFTER
from protocol.budget import Limits

NOW = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=datetime.UTC)
WAIT = 30  # seconds: real threads and a real file on a loaded machine


def session(durations: int) -> SessionRow:
    return SessionRow(
        session_id="s", owner=None, created_at=NOW.isoformat(), updated_at=NOW.isoformat(),
        api_duration_ms=durations, api_duration_without_retries_ms=durations,
    )


def test_each_workers_durations_are_added_and_totals_read_the_whole_file(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    prepare_shared_ledger(path).close()
    a, b = SharedLedgerStore.open_shared(path), SharedLedgerStore.open_shared(path)
    try:
        assert a.instance_id != b.instance_id
        a.load(["s"])
        b.load(["s"])
        a.write([session(100)], [])
        b.write([session(30)], [])  # b's view: 30 of its own, it never saw a's 100
        assert a.totals(["s"])["s"].api_duration_ms == 130
        # a's view is now the file's (130): its next 10 ms are added, b's are not lost.
        a.write([session(140)], [])
        assert b.totals(["s"])["s"].api_duration_ms == 140
        assert b.totals(["s"])["s"].api_duration_without_retries_ms == 140
    finally:
        a.close()
        b.close()


def test_a_silent_workers_reservations_are_released_by_a_live_one_and_a_live_ones_kept(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    prepare_shared_ledger(path).close()
    store = SharedSqliteTokenStore.open(path)
    now = datetime.datetime.now(datetime.UTC)
    try:
        assert store.shared
        store.add("ci", new_token(), Limits(budget_pico=100_000, period="total"), NOW)
        store.heartbeat("dead", now - SILENT_AFTER - datetime.timedelta(seconds=1))
        store.heartbeat("live", now)
        for rid, instance in (("r1", "dead"), ("r2", "live")):
            claim = Claim(reservation_id=rid, session_id="s", query_id=f"q-{instance}", instance_id=instance)
            result = store.reserve("ci", 10_000, model="m", now=NOW, claim=claim)
            assert result is not None and result[1] is None
        assert store.release_dead("me", now) == 1
        account = store.list()[0].account
        assert (account.reserved_pico, account.in_flight) == (10_000, 1)
    finally:
        store.close()


def test_a_worker_the_parent_saw_die_is_released_at_the_next_heartbeat_not_after_silence(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    prepare_shared_ledger(path).close()
    worker = SharedLedgerStore.open_shared(path)  # registers itself, with this pid
    store = SharedSqliteTokenStore.open(path)
    now = datetime.datetime.now(datetime.UTC)
    try:
        store.add("ci", new_token(), Limits(budget_pico=100_000, period="total"), NOW)
        claim = Claim(reservation_id="r", session_id="s", query_id="q", instance_id=worker.instance_id)
        assert store.reserve("ci", 10_000, model="m", now=NOW, claim=claim) is not None
        assert store.release_dead("me", now) == 0  # heard from just now: alive
        mark_dead(path, os.getpid())
        assert store.release_dead("me", now) == 1
    finally:
        store.close()
        worker.close()


def test_the_parent_releases_every_reservation_left_before_the_workers_start(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    prepare_shared_ledger(path).close()
    store = SharedSqliteTokenStore.open(path)
    try:
        store.add("ci", new_token(), Limits(budget_pico=100_000, period="total"), NOW)
        store.heartbeat("was-live", datetime.datetime.now(datetime.UTC))
        claim = Claim(reservation_id="r", session_id="s", query_id="q", instance_id="was-live")
        assert store.reserve("ci", 10_000, model="m", now=NOW, claim=claim) is not None
    finally:
        store.close()
    prepare_shared_ledger(path).close()
    store = SharedSqliteTokenStore.open(path)
    try:
        assert store.list()[0].account.reserved_pico == 0
    finally:
        store.close()


async def test_a_claim_on_one_fleet_supersedes_the_older_holder_on_the_other(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    prepare_shared_ledger(path).close()
    taken = trio.Event()
    async with trio.open_nursery() as nursery:
        a: SqliteFleet = await nursery.start(SqliteFleet(path, "a").run)
        b: SqliteFleet = await nursery.start(SqliteFleet(path, "b").run)
        with trio.fail_after(WAIT):
            old = await a.claim("s", taken.set)
            new = await b.claim("s", lambda: None)
            assert old.epoch is not None and new.epoch is not None and new.epoch > old.epoch
            await taken.wait()
            assert old.taken and not new.taken
        nursery.cancel_scope.cancel()


async def test_one_probe_for_both_fleets_and_its_verdict_reaches_the_other(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    prepare_shared_ledger(path).close()
    news: list[GateNews] = []
    heard = trio.Event()

    def on_gate(item: GateNews) -> None:
        news.append(item)
        heard.set()

    async with trio.open_nursery() as nursery:
        a: SqliteFleet = await nursery.start(SqliteFleet(path, "a").run)
        b: SqliteFleet = await nursery.start(SqliteFleet(path, "b").run)
        b.on_gate = on_gate
        with trio.fail_after(WAIT):
            a.tell_overloaded("m", 0.0, probe=False)
            while (await a.take_probe("m")) is not None:  # a's write lands first
                pass
            wait = await b.take_probe("m")
            assert wait is not None and wait > 0  # a holds the fleet's probe
            a.tell_closed("m")
            await heard.wait()
        assert [(n.instance_id, n.state) for n in news] == [("a", "closed")]
        nursery.cancel_scope.cancel()


def test_the_fleet_tables_are_outside_the_ledgers_schema_version(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    prepare_shared_ledger(path).close()
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"fleet_instances", "fleet_events", "fleet_gates"} <= tables
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
