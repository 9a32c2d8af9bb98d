"""The PostgreSQL store itself: migrations, idempotent writes, several processes on one
ledger, configuration. (The CostLedger's store-level tests run on both stores:
tests/actors/test_cost_ledger*.py with ``ledger_location``.)"""

from __future__ import annotations

import concurrent.futures
import datetime

import psycopg
import pytest

import actors.config.settings
import actors.store.pg_connect
from actors.config.from_env import config_from_env
from actors.config.settings import Config, bootstrap_cache_file, is_postgres_url, redact_url
from actors.store.pg_migrations import SCHEMA_VERSION
from actors.store.postgres import PgStore
from actors.store.rows import RecordWrite, SessionRow, StoreError
from actors.store.stores import open_store, read_sessions
from protocol.errors import ConfigError
from protocol.ledger import RecordPart

NOW = "2026-11-26T12:00:00+00:00"


def part(output_tokens: int, model: str = "claude-sonnet-4-6") -> RecordPart:
    return RecordPart(model=model, canonical=model, output_tokens=output_tokens, cost_pico=output_tokens * 15_000_000)


def version(record_id: str, *parts: RecordPart, final: bool = True, replaces: bool = False, session: str = "s") -> RecordWrite:
    return RecordWrite(
        session_id=session,
        record_id=record_id,
        query_id="q",
        attempt=1,
        final=final,
        parts=parts,
        speed=None,
        service_tier=None,
        long_context=False,
        priced_on="2026-11-26",
        recorded_at=NOW,
        replaces=replaces,
    )


def session(duration_ms: int = 0, name: str = "s") -> SessionRow:
    return SessionRow(
        session_id=name,
        owner=None,
        created_at=NOW,
        updated_at=NOW,
        api_duration_ms=duration_ms,
        api_duration_without_retries_ms=duration_ms // 2,
    )


def total(url: str, name: str = "s") -> int:
    return dict(read_sessions(url))[name].total_pico


def test_migrations_are_versioned_and_two_processes_starting_at_once_apply_them_once(pg_url: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: PgStore.open(pg_url), range(4)))
    for store in stores:
        store.close()
    with psycopg.connect(pg_url) as conn:
        versions = conn.execute("SELECT version FROM switchboard.schema_migrations ORDER BY version").fetchall()
        instances = conn.execute("SELECT instance_id FROM switchboard.instances").fetchall()
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]
    assert len({row[0] for row in instances}) == 4  # hostname:pid:random, one per store


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    PgStore.open(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO switchboard.schema_migrations (version, description) VALUES (99, 'future')")
    with pytest.raises(ConfigError, match=f"has schema 99; this switchboard knows {SCHEMA_VERSION}"):
        PgStore.open(pg_url)


def test_an_unreachable_server_is_refused_at_start_without_the_password() -> None:
    url = "postgresql://someone:hunter2secret@127.0.0.1:1/ledger"
    with pytest.raises(ConfigError) as refused:
        open_store(url)
    text = str(refused.value)
    assert text.startswith("cannot use the cost ledger postgresql://someone:***@127.0.0.1:1/ledger: ")
    assert "hunter2secret" not in text
    with pytest.raises(ConfigError, match="cannot read the cost ledger"):
        read_sessions(url)


def test_a_database_without_a_ledger_is_reported_by_the_reader(pg_url: str) -> None:
    with pytest.raises(ConfigError, match="no cost ledger at"):
        read_sessions(pg_url)


def test_a_retried_batch_counts_nothing_twice_and_a_final_record_is_never_replaced(pg_url: str) -> None:
    store = PgStore.open(pg_url)
    try:
        provisional = version("r1", part(10), part(5, "claude-haiku-4-5"), final=False)
        batch = ([session()], [provisional])
        store.write(*batch)
        store.write(*batch)  # a retry after a commit whose answer was lost
        assert total(pg_url) == 15 * 15_000_000
        # Provisional -> final, with one part fewer: the stale part goes.
        final = version("r1", part(100), replaces=True)
        store.write([], [final])
        store.write([], [final])
        assert total(pg_url) == 100 * 15_000_000
        # A late older version and a different "final" change nothing.
        store.write([], [provisional, version("r1", part(7))])
        assert total(pg_url) == 100 * 15_000_000
        # Several versions of one record in one batch: the first final wins.
        store.write([], [version("r2", part(1), final=False), version("r2", part(2), replaces=True), version("r2", part(3))])
        assert total(pg_url) == 102 * 15_000_000
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT record_id, part, final, output_tokens FROM switchboard.usage ORDER BY 1, 2").fetchall()
    assert rows == [("r1", 0, True, 100), ("r2", 0, True, 2)]


def test_several_processes_writing_one_session_keep_exact_totals(pg_url: str) -> None:
    first, second = PgStore.open(pg_url), PgStore.open(pg_url)
    try:
        for store in (first, second):
            assert store.load(["s"]) == {}
        first.write([session(1000)], [version("a", part(10))])
        second.write([session(300)], [version("b", part(20))])
        # Each instance writes its own share again, as its durations grow.
        first.write([session(1500)], [version("c", part(1))])
        second.write([session(300)], [])
        resumed = PgStore.open(pg_url)
        loaded = resumed.load(["s"])["s"]
        resumed.write([session(loaded.totals.api_duration_ms + 200)], [])
        resumed.close()
    finally:
        first.close()
        second.close()
    [(name, totals)] = read_sessions(pg_url)
    assert name == "s" and totals.total_pico == 31 * 15_000_000
    assert (totals.api_duration_ms, totals.api_duration_without_retries_ms) == (2000, 1000)
    with psycopg.connect(pg_url) as conn:
        writers = conn.execute("SELECT DISTINCT instance_id FROM switchboard.usage").fetchall()
        owner = conn.execute("SELECT owner_instance FROM switchboard.sessions").fetchone()
    assert {row[0] for row in writers} == {first.instance_id, second.instance_id}
    assert owner is not None and owner[0] == resumed.instance_id  # the last to write it


def test_a_failed_statement_is_a_store_error_and_rolls_the_batch_back(pg_url: str) -> None:
    store = PgStore.open(pg_url)
    try:
        store.write([session()], [version("ok", part(1))])
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE switchboard.usage RENAME TO elsewhere")
            with pytest.raises(StoreError, match=r'relation "switchboard\.usage" does not exist'):
                store.write([session(5)], [version("lost", part(2))])
            with pytest.raises(StoreError):
                store.load(["s"])
            conn.execute("ALTER TABLE switchboard.elsewhere RENAME TO usage")
        store.write([session(5)], [version("lost", part(2))])  # the same connection goes on
        assert store.load(["s"])["s"].totals.total_pico == 3 * 15_000_000
    finally:
        store.close()


def test_dates_and_timestamps_come_back_as_iso_text(pg_url: str) -> None:
    store = PgStore.open(pg_url)
    try:
        store.write([session()], [])
        created = store.load(["s"])["s"].created_at
    finally:
        store.close()
    assert datetime.datetime.fromisoformat(created) == datetime.datetime.fromisoformat(NOW)


def test_the_ledger_url_comes_from_the_flag_or_the_environment_and_its_password_is_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgres://gw:s3cret-pw@db.internal:5432/ledger?sslmode=require"
    config = config_from_env({"SWITCHBOARD_LEDGER": url})
    assert config.ledger_path == url and is_postgres_url(url) and is_postgres_url("POSTGRESQL://x/y")
    assert config_from_env({"SWITCHBOARD_LEDGER": url}, ledger_path="/tmp/l.sqlite3").ledger_path == "/tmp/l.sqlite3"
    assert "s3cret-pw" in config.secrets()
    assert redact_url(url) == "postgres://gw:***@db.internal:5432/ledger?sslmode=require"
    assert not is_postgres_url("/var/lib/postgresql.sqlite3")
    # The bootstrap cache cannot live "next to" a URL: it goes to the state directory.
    monkeypatch.setattr(actors.config.settings, "default_ledger_path", lambda env: "/state/switchboard/ledger.sqlite3")
    assert bootstrap_cache_file(Config(ledger_path=url)) == "/state/switchboard/bootstrap.json"


def test_libpq_settings_in_the_url_win_over_the_defaults() -> None:
    info = actors.store.pg_connect.conninfo("postgresql://u@h/d?connect_timeout=30&application_name=mine")
    assert "connect_timeout=30" in info and "application_name=mine" in info and "tcp_user_timeout=20000" in info
    with pytest.raises(ConfigError, match="not a valid PostgreSQL URL"):
        actors.store.pg_connect.conninfo("postgresql://u@h/d?nonsense_option=1")

