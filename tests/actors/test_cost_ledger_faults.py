"""The CostLedger on a sick disk: told honestly, refused or served as configured, recovered.

Faults are injected at the store (``FaultyStore`` wraps a real store, an SQLite file or a
PostgreSQL database: the store-generic tests run on both, ``ledger_location``, and raises
what the store raises on a full disk, an I/O error or a corrupt page), and once for real on
a tiny tmpfs filled to the last byte (the PostgreSQL server's own faults: tests/store). The store runs on the event loop (``offload=False``)
so the commit retry's backoff is asserted exactly on the autojump clock.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing
from harness import (
    DISK_FULL,
    IO_ERROR,
    MALFORMED,
    FaultyStore,
    corrupt_ledger,
    fill_disk,
    remount_read_only,
    tmpfs,
)
from prometheus_client.parser import text_string_to_metric_families
from test_cost_ledger import DAY, FINAL, FINAL_PICO, START, START_PICO, cost, open_session, record

import actors.store.health
import actors.store.ledger_reads
import actors.store.sqlite_checks
import actors.store.stores
from actors._util import ask
from actors.config.from_env import config_from_env
from actors.cost_ledger import CostLedger
from actors.messages.ledger import CostLedgerAddress, ReadSpend
from actors.observe.metrics import Metrics
from actors.store.health import RETRY_INITIAL_INTERVAL, RETRY_MAX_INTERVAL
from actors.store.sqlite import LedgerStore
from actors.store.stores import read_sessions
from protocol.dashboard import EVERYONE, Bucket, Scope, SpendRow
from protocol.errors import ActorUnavailable, ConfigError


@asynccontextmanager
async def faulty(
    path: Path | str, *, fail_open: bool = False, metrics: Metrics | None = None
) -> AsyncIterator[tuple[CostLedger, CostLedgerAddress, FaultyStore]]:
    """A ledger on the store at ``path`` (an SQLite file or a PostgreSQL URL), faults on demand."""
    stores: list[FaultyStore] = []

    def open_store(location: str) -> FaultyStore:
        stores.append(FaultyStore(actors.store.stores.open_store(location)))
        return stores[0]

    ledger = CostLedger(
        str(path), offload=False, now=lambda: DAY, metrics=metrics, fail_open=fail_open, open_store=open_store
    )
    async with trio.open_nursery() as nursery:
        address: CostLedgerAddress = await nursery.start(ledger.run)
        with address:
            yield ledger, address, stores[0]


def sample(metrics: Metrics, name: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for found in family.samples:
            if found.name == name:
                return float(found.value)
    raise AssertionError(f"no metric {name}")


@pytest.mark.parametrize("error", [DISK_FULL, IO_ERROR])
async def test_a_failing_commit_is_told_buffered_retried_with_backoff_and_committed_exactly_on_recovery(
    ledger_location: str, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, error: str
) -> None:
    path = ledger_location
    metrics = Metrics()
    async with faulty(path, metrics=metrics) as (ledger, address, store):
        assert (await record(address, FINAL, record_id="before")).recorded
        assert ledger.health.healthy and sample(metrics, "switchboard_ledger_healthy") == 1
        store.write_error = error
        failed_at = trio.current_time()
        with caplog.at_level(logging.ERROR, logger="switchboard.ledger"):
            provisional = await record(address, START, record_id="during", final=False)
        # Counted in memory (the totals are right), and said to be not recorded.
        assert not provisional.recorded and provisional.session_cost_pico == FINAL_PICO + START_PICO
        assert f"cost ledger commit failed ({error})" in caplog.text
        health = ledger.health
        assert (health.healthy, health.committing, health.pending_records) == (False, False, 1)
        assert health.reason == f"cost ledger cannot commit: {error}"
        refusal = ledger.health.refusal
        assert refusal is not None and error in refusal
        assert sample(metrics, "switchboard_ledger_healthy") == 0
        assert sample(metrics, "switchboard_ledger_commit_failures_total") == 1
        # Batches no longer try to commit; the retry task does, with backoff.
        final = await record(address, FINAL, record_id="during")
        assert not final.recorded and final.session_cost_pico == 2 * FINAL_PICO
        assert store.write_times[1:] == [failed_at]
        assert sample(metrics, "switchboard_ledger_pending_records") == 2
        await trio.sleep(RETRY_INITIAL_INTERVAL + 1 + 2 + 4 + 8 + 15 + 15 + 0.1)
        tries = store.write_times[1:]
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert gaps == [RETRY_INITIAL_INTERVAL, 1.0, 2.0, 4.0, 8.0, RETRY_MAX_INTERVAL, RETRY_MAX_INTERVAL]
        assert sample(metrics, "switchboard_ledger_commit_failures_total") == 8
        # The disk recovers: the next retry commits everything kept, no restart.
        store.write_error = None
        await trio.sleep(RETRY_MAX_INTERVAL)
        assert ledger.health.healthy and ledger.health.refusal is None and ledger.health.pending_records == 0
        assert sample(metrics, "switchboard_ledger_healthy") == 1
        assert sample(metrics, "switchboard_ledger_pending_records") == 0
        assert (await record(address, START, record_id="after")).recorded
    stored = dict(read_sessions(str(path)))
    assert stored["s"].total_pico == 2 * FINAL_PICO + START_PICO  # the provisional was replaced


async def test_failing_open_serves_until_too_much_is_pending(
    ledger_location: str, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors.store.health, "MAX_PENDING_RECORDS", 2)
    async with faulty(ledger_location, fail_open=True) as (ledger, address, store):
        store.write_error = DISK_FULL
        assert not (await record(address, FINAL, record_id="a")).recorded
        first = ledger.health
        assert not first.healthy and first.refusal is None
        assert not (await record(address, FINAL, record_id="b")).recorded
        refusal = ledger.health.refusal
        assert refusal is not None and DISK_FULL in refusal
        store.write_error = None


async def test_records_pending_at_shutdown_are_said_to_be_lost(
    ledger_location: str, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="switchboard.ledger"):
        async with faulty(ledger_location) as (_, address, store):
            store.write_error = DISK_FULL
            assert not (await record(address, FINAL)).recorded
    assert "cost ledger stopped with 1 usage record(s) not committed" in caplog.text


async def test_a_corrupt_session_fails_only_its_own_requests_and_degrades_health(
    ledger_location: str, autojump_clock: trio.testing.MockClock
) -> None:
    path = ledger_location
    async with faulty(path) as (_, address, _):
        await record(address, FINAL, session="bad")
        await record(address, FINAL, session="good")
    metrics = Metrics()
    async with faulty(path, metrics=metrics) as (ledger, address, store):
        store.bad_sessions = {"bad"}
        with pytest.raises(ActorUnavailable):
            await open_session(address, "bad")
        lost = await record(address, START, session="bad")
        assert not lost.recorded and lost.cost_pico == START_PICO
        assert (await cost(address, "good")).total_cost_usd == pytest.approx(FINAL_PICO / 1e12)
        assert (await record(address, START, session="good")).recorded
        health = ledger.health
        assert not health.healthy and health.committing and ledger.health.refusal is None
        assert health.reason == f"cost ledger cannot read 1 session(s): {MALFORMED}"
        assert sample(metrics, "switchboard_ledger_read_failures_total") == 2
        # The retry task reads it again with backoff; once it can, all is well.
        store.bad_sessions = set()
        await trio.sleep(RETRY_MAX_INTERVAL)
        assert ledger.health.healthy and sample(metrics, "switchboard_ledger_healthy") == 1
        assert (await open_session(address, "bad")).resumed


async def test_a_real_full_disk_then_freed(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    with tmpfs(tmp_path / "small", "256k") as disk:
        path = disk / "ledger.sqlite3"
        async with faulty(path) as (ledger, address, store):
            assert (await record(address, FINAL, record_id="before")).recorded
            filler = fill_disk(disk)
            during = [await record(address, START, record_id=f"r{n}", session=f"s{n}") for n in range(40)]
            assert not any(r.recorded for r in during)
            reason = ledger.health.reason
            assert reason is not None and reason.startswith("cost ledger cannot commit: ")
            assert ledger.health.refusal is not None
            filler.unlink()
            await trio.sleep(RETRY_INITIAL_INTERVAL)  # the first retry is due now
            await trio.testing.wait_all_tasks_blocked()
            assert ledger.health.healthy and ledger.health.pending_records == 0
            assert (await record(address, START, record_id="after")).recorded
            failed = len(store.write_times) - 3  # before, the retry that worked, after
        stored = dict(read_sessions(str(path)))
    assert failed >= 1
    assert stored["s"].total_pico == FINAL_PICO + START_PICO
    assert all(stored[f"s{n}"].total_pico == START_PICO for n in range(40))


def test_a_second_opener_of_a_ledger_is_refused_while_readers_still_read(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    first = LedgerStore.open(path)
    try:
        with pytest.raises(ConfigError, match="is in use by another switchboard process"):
            LedgerStore.open(path)
        assert read_sessions(path) == []  # `switchboard cost` takes no lock
    finally:
        first.close()
    LedgerStore.open(path).close()  # closing released it


def test_a_corrupt_ledger_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    corrupt_ledger(path)
    with pytest.raises(ConfigError, match=r"is corrupt \(.*\); move it aside"):
        LedgerStore.open(str(path))
    LedgerStore.open(str(tmp_path / "other.sqlite3")).close()  # the lock of the refused one is released
    with pytest.raises(ConfigError, match="is corrupt"):
        LedgerStore.open(str(path))


def test_an_integrity_check_out_of_time_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    LedgerStore.open(path).close()
    monkeypatch.setattr(actors.store.sqlite_checks, "INTEGRITY_CHECK_STEPS", 1)
    with caplog.at_level(logging.WARNING, logger="switchboard.ledger"):
        LedgerStore.open(path, integrity_budget=-1.0).close()
    assert "integrity check did not finish within -1 s" in caplog.text


def test_a_read_only_directory_or_file_is_refused_at_open(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as directory:
        with pytest.raises(ConfigError, match="must be writable"):
            LedgerStore.open(str(directory / "ledger.sqlite3"))
    with tmpfs(tmp_path / "was-rw", "256k") as directory:
        LedgerStore.open(str(directory / "ledger.sqlite3")).close()
        remount_read_only(directory)
        with pytest.raises(ConfigError, match="must be writable"):
            LedgerStore.open(str(directory / "ledger.sqlite3"))


def test_failing_open_is_set_by_the_environment_or_the_flag() -> None:
    assert not config_from_env({}).ledger_fail_open
    assert config_from_env({"SWITCHBOARD_LEDGER_FAIL_OPEN": "1"}).ledger_fail_open
    assert config_from_env({}, ledger_fail_open=True).ledger_fail_open


async def test_a_failing_dashboard_read_fails_that_read_only(tmp_path: Path) -> None:
    """docs/protocol.md "Dashboard": a read the store cannot answer is a 503 for that read;
    the ledger keeps recording, and the next read answers."""
    async with faulty(tmp_path / "ledger.sqlite3") as (ledger, address, store):
        assert (await record(address, FINAL, record_id="one")).recorded

        def spend(reply: trio.MemorySendChannel[list[SpendRow]]) -> ReadSpend:
            return ReadSpend(since=DAY.date().isoformat(), bucket="day", scope=EVERYONE, reply=reply)

        store.read_error = IO_ERROR
        with pytest.raises(ActorUnavailable):
            await ask(address, spend)
        assert ledger.health.healthy
        assert (await record(address, FINAL, record_id="two")).recorded
        store.read_error = None
        rows = await ask(address, spend)
        assert [(r.bucket, r.cost_pico, r.messages) for r in rows] == [
            (DAY.date().isoformat(), 2 * FINAL_PICO, 2)
        ]


async def test_a_slow_dashboard_read_holds_neither_the_inbox_nor_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a file, reads run beside the inbox on their own thread and connection; past
    MAX_PENDING_READS waiting, a read is refused (ActorUnavailable), not queued."""
    monkeypatch.setattr(actors.store.ledger_reads, "MAX_PENDING_READS", 1)
    release = threading.Event()
    path = tmp_path / "ledger.sqlite3"

    real_spend = LedgerStore.spend

    def slow_spend(store: LedgerStore, since: str, bucket: Bucket, scope: Scope) -> list[SpendRow]:
        release.wait()
        return real_spend(store, since, bucket, scope)

    # LedgerStore is final: its reads are slowed in place for this test only.
    monkeypatch.setattr(LedgerStore, "spend", slow_spend)
    ledger = CostLedger(str(path), offload=True, now=lambda: DAY, open_store=LedgerStore.open)

    def spend(reply: trio.MemorySendChannel[list[SpendRow]]) -> ReadSpend:
        return ReadSpend(since=DAY.date().isoformat(), bucket="day", scope=EVERYONE, reply=reply)

    answers: list[list[SpendRow]] = []
    answered = trio.Event()

    async def slow_read() -> None:
        answers.append(await ask(address, spend))
        answered.set()

    async with trio.open_nursery() as nursery:
        address: CostLedgerAddress = await nursery.start(ledger.run)
        with address:
            assert (await record(address, FINAL, record_id="one")).recorded
            nursery.start_soon(slow_read)
            await trio.testing.wait_all_tasks_blocked()
            # The read waits on its thread; usage is still recorded and committed meanwhile.
            assert (await record(address, FINAL, record_id="two")).recorded
            with pytest.raises(ActorUnavailable):
                await ask(address, spend)  # one read waits already: refused
            release.set()
            while not answers:
                await trio.lowlevel.checkpoint()
            # Its query ran once released: after the second commit, which it sees.
            assert [r.messages for r in answers[0]] == [2]
            assert [r.messages for r in await ask(address, spend)] == [2]
    assert sum(t.total_pico for _, t in read_sessions(str(path))) == 2 * FINAL_PICO
