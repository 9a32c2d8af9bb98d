"""Estimated usage records (streams cut short, protocol/estimate.py) in the CostLedger, both its
stores (``ledger_location``: SQLite and PostgreSQL) and ``switchboard cost``; a ledger from
before the ``estimated`` column (an SQLite file of schema 1, a PostgreSQL database at
migration 1), which is read, then migrated and works; and ``switchboard ledger migrate``,
which copies the flag."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import psycopg
import pytest
from test_cost_ledger import FINAL, FINAL_PICO, SONNET, START, START_PICO, cost, record, running

import actors.store.pg_migrations
from actors.cli.commands import main
from actors.store.sqlite_schema import SCHEMA_VERSION
from actors.store.stores import read_sessions
from protocol.pricing import usd
from protocol.usage import Usage

ESTIMATED = msgspec.structs.replace(FINAL, estimated=True)
HAIKU = "claude-haiku-4-5"


async def test_an_estimated_record_is_counted_and_marked_live_after_a_restart_and_in_the_cli(
    ledger_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ledger_location
    async with running(path) as (_, ledger):
        # A stream cut short: its provisional record, then its final, estimated, version.
        await record(ledger, START, record_id="q:1:a", final=False)
        recorded = await record(ledger, ESTIMATED, record_id="q:1:a")
        # A complete one: the upstream's own counts.
        await record(ledger, Usage(input_tokens=10, output_tokens=5), model=HAIKU)
        live = await cost(ledger)
    # Counted like any cost, and said to be an estimate.
    assert recorded.cost_pico == FINAL_PICO and recorded.recorded
    assert live.estimated_cost_usd == usd(FINAL_PICO)
    assert live.total_cost_usd > live.estimated_cost_usd
    assert live.model_usage[SONNET].output_tokens == 800
    assert live.model_usage[SONNET].estimated_output_tokens == 800
    assert live.model_usage[HAIKU].estimated_output_tokens == 0
    async with running(path) as (_, ledger):
        assert await cost(ledger) == live
    assert dict(read_sessions(path))["s"].summary("s") == live

    main(["cost", "--ledger", path])
    assert capsys.readouterr().out == (
        "Total cost:            $0.0267 (of which $0.0266 estimated)\n"
        "Total duration (API):  0s\n"
        "Usage by model:\n"
        "   claude-sonnet-4-6:  1.0k input, 800 output (~800 estimated), 10.0k cache read, 2.0k cache write ($0.0266)\n"
        "    claude-haiku-4-5:  10 input, 5 output, 0 cache read, 0 cache write ($0.0000)\n"
    )
    main(["cost", "s", "--json", "--ledger", path])
    printed = msgspec.json.decode(capsys.readouterr().out)
    assert printed["estimated_cost_usd"] == usd(FINAL_PICO)
    assert printed["model_usage"][SONNET]["estimated_output_tokens"] == 800
    assert printed == msgspec.to_builtins(live)


async def test_replacing_an_estimated_version_takes_its_estimate_away(ledger_location: str) -> None:
    async with running(ledger_location) as (_, ledger):
        await record(ledger, START, record_id="r", final=False)
        await record(ledger, msgspec.structs.replace(START, estimated=True), record_id="r", final=False)
        assert (await cost(ledger)).estimated_cost_usd == usd(START_PICO)
    # The provisional, estimated, version a stopped gateway left is loaded with its flag: its
    # final version takes away exactly what it added, the estimate included.
    async with running(ledger_location) as (_, ledger):
        resumed = await cost(ledger)
        assert resumed.estimated_cost_usd == usd(START_PICO)
        assert resumed.model_usage[SONNET].estimated_output_tokens == START.output_tokens
        await record(ledger, FINAL, record_id="r")
        summary = await cost(ledger)
    assert summary.estimated_cost_usd == 0 and summary.model_usage[SONNET].estimated_output_tokens == 0
    assert summary.total_cost_usd == usd(FINAL_PICO)
    assert dict(read_sessions(ledger_location))["s"].summary("s") == summary


# The schema of version 1, as a gateway before the ``estimated`` column created it.
SCHEMA_1 = """
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY, owner TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    api_duration_ms INTEGER NOT NULL DEFAULT 0, api_duration_without_retries_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE usage (
    session_id TEXT NOT NULL, record_id TEXT NOT NULL, part INTEGER NOT NULL, query_id TEXT,
    attempt INTEGER, final INTEGER NOT NULL, model TEXT NOT NULL, canonical TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    cache_creation_input_tokens INTEGER NOT NULL, cache_creation_1h_input_tokens INTEGER NOT NULL,
    cache_read_input_tokens INTEGER NOT NULL, web_search_requests INTEGER NOT NULL,
    web_fetch_requests INTEGER NOT NULL, cost_pico INTEGER NOT NULL, unknown_model INTEGER NOT NULL,
    speed TEXT, service_tier TEXT, long_context INTEGER NOT NULL, priced_on TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (session_id, record_id, part)
);
CREATE INDEX usage_provisional ON usage (session_id) WHERE final = 0;
PRAGMA user_version = 1;
"""
_ROW = "INSERT INTO usage VALUES (?, ?, 0, 'q', 1, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, 0, NULL, NULL, 0, '2026-11-26', '2026-11-26T12:00:00')"


def _old_ledger(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO sessions VALUES ('old', NULL, '2026-11-25', '2026-11-25', 4000, 1500)")
    final = (FINAL.input_tokens, 800, 2000, 500, 10_000, FINAL_PICO)
    db.execute(_ROW, ("old", "q:1:done", 1, SONNET, SONNET, *final))
    # A provisional record a killed gateway left behind.
    start = (START.input_tokens, 1, 2000, 500, 10_000, START_PICO)
    db.execute(_ROW, ("old", "q:2:cut", 0, SONNET, SONNET, *start))
    db.commit()
    db.close()


def _columns(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[1] for row in db.execute("PRAGMA table_info(usage)")]
    finally:
        db.close()


async def test_an_old_ledger_without_the_column_is_read_then_migrated_and_works(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    _old_ledger(path)
    # `switchboard cost` reads it as it is (read-only: no migration): nothing estimated.
    old = dict(read_sessions(str(path)))["old"]
    assert old.total_pico == FINAL_PICO + START_PICO and old.estimated_pico == 0
    assert "estimated" not in _columns(path)

    async with running(str(path)) as (_, ledger):
        resumed = await cost(ledger, "old")
        assert resumed.total_cost_usd == usd(FINAL_PICO + START_PICO)
        assert resumed.api_duration_ms == 4000 and resumed.estimated_cost_usd == 0
        # The provisional record it left replaced by an estimated final version.
        await record(ledger, ESTIMATED, session="old", record_id="q:2:cut")
        migrated = await cost(ledger, "old")
    assert migrated.total_cost_usd == usd(2 * FINAL_PICO)
    assert migrated.estimated_cost_usd == usd(FINAL_PICO)
    assert migrated.model_usage[SONNET].estimated_output_tokens == 800
    assert "estimated" in _columns(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    db.close()
    assert dict(read_sessions(str(path)))["old"].summary("old") == migrated
    async with running(str(path)) as (_, ledger):
        assert await cost(ledger, "old") == migrated


def _pg_columns(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'switchboard' AND table_name = 'usage'"
        ).fetchall()
    return [row[0] for row in rows]


def _old_pg_ledger(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database a gateway before the ``estimated`` column left (migration 1 only), holding
    what ``_old_ledger`` holds."""
    with monkeypatch.context() as patched:
        patched.setattr(actors.store.pg_migrations, "MIGRATIONS", actors.store.pg_migrations.MIGRATIONS[:1])
        patched.setattr(actors.store.pg_migrations, "SCHEMA_VERSION", 1)
        with psycopg.connect(url, autocommit=True) as conn:
            assert actors.store.pg_migrations.migrate(conn, "test") == [1]
    row = (
        "INSERT INTO switchboard.usage (session_id, record_id, part, instance_id, query_id, attempt, final, "
        "model, canonical, input_tokens, output_tokens, cache_creation_input_tokens, "
        "cache_creation_1h_input_tokens, cache_read_input_tokens, web_search_requests, web_fetch_requests, "
        "cost_pico, unknown_model, long_context, priced_on, recorded_at) VALUES "
        "('old', %s, 0, 'old-gateway', 'q', 1, %s, %s, %s, %s, %s, %s, %s, %s, 0, 0, %s, false, false, "
        "'2026-11-26', '2026-11-26T12:00:00+00')"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO switchboard.sessions (session_id, owner_instance, created_at, updated_at) "
            "VALUES ('old', 'old-gateway', '2026-11-25', '2026-11-25')"
        )
        conn.execute(
            "INSERT INTO switchboard.session_durations VALUES ('old', 'old-gateway', 4000, 1500)"
        )
        conn.execute(row, ("q:1:done", True, SONNET, SONNET, FINAL.input_tokens, 800, 2000, 500, 10_000, FINAL_PICO))
        conn.execute(row, ("q:2:cut", False, SONNET, SONNET, START.input_tokens, 1, 2000, 500, 10_000, START_PICO))


async def test_an_old_postgresql_ledger_without_the_column_is_read_then_migrated_and_works(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _old_pg_ledger(pg_url, monkeypatch)
    # `switchboard cost` reads it as it is (no migration): nothing estimated.
    old = dict(read_sessions(pg_url))["old"]
    assert old.total_pico == FINAL_PICO + START_PICO and old.estimated_pico == 0
    assert "estimated" not in _pg_columns(pg_url)

    async with running(pg_url) as (_, ledger):
        resumed = await cost(ledger, "old")
        assert resumed.total_cost_usd == usd(FINAL_PICO + START_PICO)
        assert resumed.api_duration_ms == 4000 and resumed.estimated_cost_usd == 0
        await record(ledger, ESTIMATED, session="old", record_id="q:2:cut")
        migrated = await cost(ledger, "old")
    assert migrated.total_cost_usd == usd(2 * FINAL_PICO)
    assert migrated.estimated_cost_usd == usd(FINAL_PICO)
    assert migrated.model_usage[SONNET].estimated_output_tokens == 800
    assert "estimated" in _pg_columns(pg_url)
    with psycopg.connect(pg_url) as conn:
        versions = conn.execute("SELECT version FROM switchboard.schema_migrations ORDER BY version").fetchall()
    assert versions == [(v,) for v in range(1, actors.store.pg_migrations.SCHEMA_VERSION + 1)]
    assert dict(read_sessions(pg_url))["old"].summary("old") == migrated
    async with running(pg_url) as (_, ledger):
        assert await cost(ledger, "old") == migrated


async def test_ledger_migrate_copies_the_estimated_flag(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(tmp_path / "ledger.sqlite3")
    async with running(source) as (_, ledger):
        await record(ledger, START, record_id="q:1:a", final=False)
        await record(ledger, ESTIMATED, record_id="q:1:a")
        await record(ledger, Usage(input_tokens=10, output_tokens=5), model=HAIKU)
        # A provisional, estimated, version the copy must carry as such.
        await record(ledger, msgspec.structs.replace(START, estimated=True), record_id="q:2:b", final=False)
        before = await cost(ledger)
    assert before.estimated_cost_usd == usd(FINAL_PICO + START_PICO)
    main(["ledger", "migrate", "--from", source, "--to", pg_url])
    capsys.readouterr()
    assert read_sessions(pg_url) == read_sessions(source)
    assert dict(read_sessions(pg_url))["s"].summary("s") == before
    # `switchboard cost` marks the estimate the same on both stores, as text and as JSON.
    main(["cost", "--ledger", source])
    on_sqlite = capsys.readouterr().out
    main(["cost", "--ledger", pg_url])
    assert capsys.readouterr().out == on_sqlite and "estimated)" in on_sqlite
    main(["cost", "s", "--json", "--ledger", pg_url])
    assert msgspec.json.decode(capsys.readouterr().out) == msgspec.to_builtins(before)
    # A gateway on PostgreSQL resumes the copied provisional record with its flag.
    async with running(pg_url) as (_, ledger):
        assert await cost(ledger) == before
        await record(ledger, FINAL, record_id="q:2:b")
        after = await cost(ledger)
    assert after.estimated_cost_usd == usd(FINAL_PICO)
    assert after.model_usage[SONNET].estimated_output_tokens == 800


def test_ledger_migrate_copies_an_sqlite_file_of_schema_1_with_nothing_estimated(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.sqlite3"
    _old_ledger(path)
    main(["ledger", "migrate", "--from", str(path), "--to", pg_url])
    assert capsys.readouterr().out.startswith("copied 1 session(s) and 2 usage record(s)")
    copied = dict(read_sessions(pg_url))["old"]
    assert copied == dict(read_sessions(str(path)))["old"]
    assert copied.total_pico == FINAL_PICO + START_PICO and copied.estimated_pico == 0
    assert "estimated" not in _columns(path)  # the source was only read
