"""One SQLite ledger file shared by the worker processes of ``switchboard serve --workers N``
(README.md "Deployment"): what PostgreSQL gives a fleet (actors/store/postgres.py, actors/store/pg_fleet.py),
on one machine.

- The parent (``prepare_shared_ledger``) takes the ledger's exclusive lock for the whole
  run (another gateway on the same file is still refused), migrates it, creates the fleet's
  tables (``FLEET_SCHEMA``) and releases every reservation left by a gateway that stopped:
  no worker runs yet, so none is live.
- Each worker opens the file without the lock (``SharedLedgerStore``): WAL (readers never
  wait for the writer), ``busy_timeout`` for the one write lock, write transactions of one
  batch. It is a ``SharedStore`` (actors/cost_ledger.py, "Several instances"): after each
  commit the totals of the sessions a batch touched are re-read from the file, so a resume,
  a ``get_cost`` or a ``done`` frame gives the same answer whichever worker serves it.
  Durations are added (each worker writes what it added since it last read the row), never
  overwritten by one worker's older view.
- Each worker registers itself in ``fleet_instances`` (its instance id, pid) and its
  budgets' heartbeat refreshes ``last_seen_at`` (``SharedSqliteTokenStore``); a live worker
  releases the reservations of one silent for ``actors.store.tokens.SILENT_AFTER`` (a worker
  killed with queries in flight), as on PostgreSQL; sooner when the parent saw it die
  (``mark_dead``: at the next heartbeat).

The fleet tables are coordination, not ledger data: created if missing, outside the ledger's
schema version (``switchboard cost`` and ``ledger migrate`` never read them).
"""

from __future__ import annotations

import builtins
import datetime
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Any, Final

from actors.config.instance import new_instance_id
from actors.store.rows import LoadedSession, RecordWrite, SessionRow
from actors.store.sqlite import (
    BUSY_TIMEOUT_MS,
    MEMORY,
    LedgerStore,
    _ints,
    _session_values,
    _totals,
)
from actors.store.sqlite_schema import _ESTIMATED
from actors.store.sqlite_tokens import SqliteTokenStore
from actors.store.tokens import SILENT_AFTER, _Cursor
from protocol.errors import ConfigError
from protocol.ledger import SessionTotals

FLEET_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS fleet_instances (
    instance_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_gates (
    model TEXT PRIMARY KEY,
    open INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    probe_instance TEXT,
    probe_started_at REAL,
    next_probe_at REAL NOT NULL
);
"""
# Sessions whose last-read durations a worker remembers (the rest are read again).
MAX_REMEMBERED_SESSIONS: Final = 100_000
# Durations added, not set: every worker's share of a session's API time counts.
_ADD_SESSION: Final = (
    "INSERT INTO sessions (session_id, owner, created_at, updated_at, api_duration_ms, "
    "api_duration_without_retries_ms) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO "
    "UPDATE SET owner = excluded.owner, updated_at = MAX(updated_at, excluded.updated_at), "
    "api_duration_ms = api_duration_ms + excluded.api_duration_ms, "
    "api_duration_without_retries_ms = api_duration_without_retries_ms + excluded.api_duration_without_retries_ms"
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def prepare_shared_ledger(path: str) -> LedgerStore:
    """The parent's part (module docstring): lock, migrate, create the fleet's tables,
    release every reservation left. Keep the result open (it holds the lock) until the
    workers are gone, then close it.

    Raises:
        ConfigError: as ``LedgerStore.open`` (another gateway holds the file, ...).
    """
    store = LedgerStore.open(path)
    try:
        store._db.executescript(FLEET_SCHEMA)
        tokens = SqliteTokenStore.open(path)
        try:
            tokens.release_dead("", _now())
        finally:
            tokens.close()
    except sqlite3.Error as exc:
        store.close()
        raise ConfigError(f"cannot use the cost ledger {path!r}: {exc}") from exc
    except BaseException:
        store.close()
        raise
    return store


def mark_dead(path: str, pid: int) -> None:
    """The parent saw worker ``pid`` die: make its instance silent at once, so that a live
    worker's next heartbeat (``actors.access.budgets``) releases its reservations, instead of
    after ``SILENT_AFTER``.

    Raises sqlite3.Error."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("UPDATE fleet_instances SET last_seen_at = '' WHERE pid = ?", (pid,))
    finally:
        db.close()


class SharedLedgerStore(LedgerStore):
    """A worker's store on the shared file (module docstring); a ``SharedStore``."""

    _upsert_session = _ADD_SESSION

    def __init__(self, connection: sqlite3.Connection, lock: int | None = None, path: str = MEMORY) -> None:
        super().__init__(connection, lock, path)
        self.instance_id = new_instance_id()
        # Per session: the durations this worker last read or wrote (what the file holds
        # of them as far as it knows); a write adds the difference.
        self._known: OrderedDict[str, tuple[int, int]] = OrderedDict()

    @classmethod
    def open_shared(cls, path: str) -> SharedLedgerStore:
        """Open the file the parent prepared, without its lock; register this instance.

        Raises ConfigError as ``LedgerStore.open``."""
        store = cls.open(path, lock=False)
        now = _now().isoformat()
        try:
            store._db.executescript(FLEET_SCHEMA)
            store._db.execute(
                "INSERT OR REPLACE INTO fleet_instances (instance_id, pid, started_at, last_seen_at) VALUES (?, ?, ?, ?)",
                (store.instance_id, os.getpid(), now, now),
            )
        except sqlite3.Error as exc:
            store.close()
            raise ConfigError(f"cannot use the cost ledger {path!r}: {exc}") from exc
        return store

    def _remember(self, session_id: str, durations: tuple[int, int]) -> None:
        self._known[session_id] = durations
        self._known.move_to_end(session_id)
        while len(self._known) > MAX_REMEMBERED_SESSIONS:
            self._known.popitem(last=False)

    def load(self, session_ids: Collection[str]) -> dict[str, LoadedSession]:
        found = super().load(session_ids)
        for session_id in session_ids:
            loaded = found.get(session_id)
            totals = loaded.totals if loaded is not None else SessionTotals()
            self._remember(session_id, (totals.api_duration_ms, totals.api_duration_without_retries_ms))
        return found

    def _session_params(self, sessions: Sequence[SessionRow]) -> list[tuple[object, ...]]:
        params: list[tuple[object, ...]] = []
        for row in sessions:
            known = self._known.get(row.session_id, (0, 0))
            added = (row.api_duration_ms - known[0], row.api_duration_without_retries_ms - known[1])
            params.append((*_session_values(row)[:4], *added))
        return params

    def write(self, sessions: Sequence[SessionRow], records: Sequence[RecordWrite]) -> None:
        super().write(sessions, records)
        for row in sessions:
            self._remember(row.session_id, (row.api_duration_ms, row.api_duration_without_retries_ms))

    def totals(self, session_ids: Collection[str]) -> dict[str, SessionTotals]:
        """The file's totals of the sessions among ``session_ids`` (every worker's usage and
        durations), read in one transaction.

        Raises sqlite3.Error."""
        ids = list(session_ids)
        marks = ",".join("?" * len(ids))
        db = self._db
        db.execute("BEGIN")
        try:
            rows = db.execute(
                "SELECT session_id, api_duration_ms, api_duration_without_retries_ms FROM sessions "
                f"WHERE session_id IN ({marks})",
                ids,
            ).fetchall()
            totals = _totals(db, f"WHERE session_id IN ({marks})", tuple(ids), estimated=_ESTIMATED)
        finally:
            db.execute("COMMIT")
        for session_id, *durations in rows:
            ms, without = _ints(durations)
            session_totals = totals.setdefault(session_id, SessionTotals())
            session_totals.api_duration_ms, session_totals.api_duration_without_retries_ms = ms, without
            self._remember(session_id, (ms, without))
        return totals


def open_shared_store(path: str) -> SharedLedgerStore:
    """A worker's store (``CostLedger``'s ``open_store``)."""
    return SharedLedgerStore.open_shared(path)


class SharedSqliteTokenStore(SqliteTokenStore):
    """The tokens of the shared file: each worker says it is alive, dead ones are found by
    their silence (module docstring)."""

    shared = True

    def heartbeat(self, instance_id: str, now: datetime.datetime) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO fleet_instances (instance_id, pid, started_at, last_seen_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (instance_id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
                (instance_id, os.getpid(), now.isoformat(), now.isoformat()),
            )

    def _dead_rows(self, db: _Cursor, instance_id: str, now: datetime.datetime) -> builtins.list[tuple[Any, ...]]:
        # As on PostgreSQL: this instance's own earlier rows (none), those of an instance
        # silent for SILENT_AFTER, and those older than it of an instance the file does not know.
        cutoff = (now - SILENT_AFTER).isoformat()
        rows = db.execute(
            self._r(
                "SELECT reservation_id, name, session_id, query_id, amount_pico FROM {r} AS r "
                "WHERE r.instance_id = ? OR r.instance_id IN ("
                "SELECT instance_id FROM fleet_instances WHERE last_seen_at < ?) "
                "OR (r.created_at < ? AND NOT EXISTS ("
                "SELECT 1 FROM fleet_instances AS i WHERE i.instance_id = r.instance_id))"
            ),
            (instance_id, cutoff, cutoff),
        ).fetchall()
        return [tuple(row) for row in rows]
