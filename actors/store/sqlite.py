"""The CostLedger's SQLite store, ``LedgerStore``: batched writes, lazy session loads, the
dashboard's reads, and the per-session totals ``read_sessions`` (actors/store/stores.py) also reads.

Synchronous on purpose: the CostLedger owns one ``LedgerStore`` and calls it from a worker
thread (``trio.to_thread.run_sync``), one call at a time, so the event loop never waits on
the disk. ``read_sessions`` (actors/store/stores.py) opens a file read-only for ``switchboard
cost``, also while a gateway is writing it.

Opening a file (``LedgerStore.open``) refuses, with a ``ConfigError`` that says why, a
ledger that another gateway process is using (an exclusive ``flock`` on ``<ledger>.lock``
beside it, held until ``close``; the workers of ``serve --workers N`` share a file under
their parent's lock instead: actors/store/sqlite_shared.py), a file or directory it cannot write, and a
corrupt file (``PRAGMA quick_check``, bounded by ``INTEGRITY_CHECK_BUDGET``; a check that
runs out of time is logged and skipped, never fatal). ``switchboard cost`` takes no lock.

Durability: WAL journal with ``synchronous=NORMAL`` (``SYNCHRONOUS``): a committed batch is
in the WAL file before the commit returns, so it survives a process kill (``kill -9``); only
a power cut or an OS crash can lose the last commits before a checkpoint. The ledger replies
only after the commit.

The schema and its migrations: actors/store/sqlite_schema.py; the checks on opening a file:
actors/store/sqlite_checks.py; the ``Store`` protocol and its rows: actors/store/rows.py;
choosing a store by location and reading one for ``switchboard cost``: actors/store/stores.py.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
from collections.abc import Collection, Sequence
from typing import Final, Self

from actors.store.rows import COUNTS, DASHBOARD_COUNTS, LoadedSession, RecordWrite, SessionRow
from actors.store.sqlite_checks import INTEGRITY_CHECK_BUDGET, _check_integrity, _lock, _reason
from actors.store.sqlite_schema import _ESTIMATED, _SCHEMA, SCHEMA_VERSION, USER_COLUMN, _migrate
from protocol.dashboard import Bucket, OwnerSpend, Scope, SessionSpend, SpendRow
from protocol.errors import ConfigError
from protocol.ledger import ModelTotals, RecordPart, SessionTotals

MEMORY: Final = ":memory:"
# WAL + NORMAL survives any crash of the process; FULL would add an fsync to every commit
# (6.4 ms on the development machine against 0.01 ms), paid by every query's done frame and,
# with the provisional record, by its first events.
SYNCHRONOUS: Final = "NORMAL"
# A second process holding the write lock (a `switchboard cost` read never does) is waited
# for this long before a write fails and is retried with the next batch.
BUSY_TIMEOUT_MS: Final = 5000

# Costs are summed in two halves (``cost_pico / 10**9`` and ``% 10**9``), put together in
# Python: SQLite's SUM fails with "integer overflow" past 2**63 - 1, which the cost sums of a
# session with many parts priced at ``protocol.ledger.MAX_PART_COST_PICO`` (10**17: a hostile
# upstream's usage) reach within a hundred rows. Each half is at most 10**9 per row, as each
# token count is (``protocol.usage.MAX_TOKEN_COUNT``): no sum overflows below 9 * 10**9 rows,
# terabytes of ledger. (PostgreSQL sums BIGINT as NUMERIC: no overflow there.)
_PICO_SPLIT: Final = 10**9
_SUMS: Final = ", ".join(
    f"SUM({column})" if column != "cost_pico" else f"SUM(cost_pico / {_PICO_SPLIT}), SUM(cost_pico % {_PICO_SPLIT})"
    for column in COUNTS
)
# What a session's estimated figures sum (protocol.ledger.ModelTotals), given the
# expression that reads the flag: the column, or 0 on a file from before it.
_ESTIMATED_SUMS: Final = (
    "SUM(output_tokens * {flag}), "
    f"SUM(cost_pico * {{flag}} / {_PICO_SPLIT}), SUM(cost_pico * {{flag}} % {_PICO_SPLIT})"
)
_INSERT_PART: Final = (
    "INSERT OR REPLACE INTO usage (session_id, record_id, part, query_id, attempt, final, "
    "model, canonical, " + ", ".join(COUNTS) + ", unknown_model, speed, service_tier, "
    "long_context, priced_on, recorded_at, estimated) VALUES (" + ", ".join("?" * 23) + ")"
)
_UPSERT_SESSION: Final = (
    "INSERT INTO sessions (session_id, owner, created_at, updated_at, api_duration_ms, "
    f"api_duration_without_retries_ms, {USER_COLUMN}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO "
    "UPDATE SET owner = excluded.owner, "
    f"{USER_COLUMN} = COALESCE(sessions.{USER_COLUMN}, excluded.{USER_COLUMN}), updated_at = excluded.updated_at, "
    "api_duration_ms = excluded.api_duration_ms, "
    "api_duration_without_retries_ms = excluded.api_duration_without_retries_ms"
)


class LedgerStore:
    """One SQLite connection, used by one thread at a time (the CostLedger's worker)."""

    def __init__(self, connection: sqlite3.Connection, lock: int | None = None, path: str = MEMORY) -> None:
        self._db = connection
        self._lock = lock
        self._path = path
        # The dashboard's reads on a file: a read-only connection of their own, opened at the
        # first read, so that they never share the writer's connection (another thread).
        self._reader: sqlite3.Connection | None = None

    @classmethod
    def open(cls, path: str, *, integrity_budget: float = INTEGRITY_CHECK_BUDGET, lock: bool = True) -> Self:
        """Open (creating if needed) the ledger at ``path``; ``":memory:"`` keeps no file.

        A new file and its directory are private to the user (0600, 0700). A file is locked
        for this process until ``close`` and checked for corruption first (within
        ``integrity_budget`` seconds). ``lock`` False: the caller holds the lock (the parent of
        ``serve --workers N`` does for its workers, ``actors.store.sqlite_shared``).
        Raises:
            ConfigError: another process uses the ledger; the file or its directory cannot be
                created or written; the file is corrupt or has a newer schema.
        """
        held = None if path == MEMORY or not lock else _lock(path)
        try:
            try:
                if path != MEMORY:
                    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
                db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            except (OSError, sqlite3.Error) as exc:
                raise ConfigError(f"cannot open the cost ledger {path!r} for writing: {_reason(exc)}") from exc
            try:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if path != MEMORY:
                    _check_integrity(db, path, integrity_budget)
                    db.execute("PRAGMA journal_mode = WAL")
                    db.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ConfigError(
                        f"the cost ledger {path!r} has schema {version}; this switchboard knows "
                        f"{SCHEMA_VERSION} (upgrade switchboard)"
                    )
                _migrate(db, version)
                db.executescript(_SCHEMA)
                # Also the write probe: a read-only file or directory fails here, at start.
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except sqlite3.Error as exc:
                db.close()
                raise ConfigError(f"cannot use the cost ledger {path!r}: {_reason(exc)}") from exc
            except ConfigError:
                db.close()
                raise
        except ConfigError:
            if held is not None:
                os.close(held)
            raise
        return cls(db, held, path)

    def _reading(self) -> sqlite3.Connection:
        """The connection of the dashboard's reads: the file's read-only one, or, in memory,
        the one connection (the CostLedger then never reads beside a write)."""
        if self._path == MEMORY:
            return self._db
        if self._reader is None:
            uri = pathlib.Path(self._path).resolve().as_uri() + "?mode=ro"
            reader = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._reader = reader
        return self._reader

    def close(self) -> None:
        """Close the connections (the writer's last: it checkpoints the WAL), then release
        the lock."""
        try:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._db.close()
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    def load(self, session_ids: Collection[str]) -> dict[str, LoadedSession]:
        """The stored sessions among ``session_ids`` (absent ones are left out)."""
        found: dict[str, LoadedSession] = {}
        for session_id in session_ids:
            row = self._db.execute(
                f"SELECT owner, created_at, api_duration_ms, api_duration_without_retries_ms, {USER_COLUMN} "
                "FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            if row is None:
                continue
            totals = _totals(self._db, "WHERE session_id = ?", (session_id,), estimated=_ESTIMATED).get(
                session_id, SessionTotals()
            )
            totals.api_duration_ms, totals.api_duration_without_retries_ms = _ints(row[2:4])
            found[session_id] = LoadedSession(
                owner=row[0], created_at=row[1], totals=totals, provisional=self._provisional(session_id),
                user_name=row[4],
            )
        return found

    def _provisional(self, session_id: str) -> dict[str, tuple[RecordPart, ...]]:
        parts: dict[str, list[RecordPart]] = {}
        for row in self._db.execute(
            "SELECT record_id, model, canonical, " + ", ".join(COUNTS) + ", unknown_model, "
            f"{_ESTIMATED} FROM usage WHERE session_id = ? AND final = 0 ORDER BY record_id, part",
            (session_id,),
        ):
            counts = dict(zip(COUNTS, _ints(row[3:11]), strict=True))
            part = RecordPart(
                model=row[1], canonical=row[2], unknown_model=bool(row[11]), estimated=bool(row[12]), **counts
            )
            parts.setdefault(row[0], []).append(part)
        return {record_id: tuple(p) for record_id, p in parts.items()}

    def spend(self, since: str, bucket: Bucket, scope: Scope) -> list[SpendRow]:
        chars = 10 if bucket == "day" else 13
        where, params = _scoped(since, scope)
        rows = self._reading().execute(
            f"SELECT substr(u.recorded_at, 1, {chars}) AS b, u.canonical, s.owner, "
            f"{_DASHBOARD_SUMS} FROM usage u JOIN sessions s USING (session_id) {where} "
            "GROUP BY b, u.canonical, s.owner ORDER BY b, u.canonical",
            params,
        ).fetchall()
        return [
            SpendRow(bucket=r[0], canonical=r[1], owner=r[2], **_dashboard_counts(r[3:9]))
            for r in rows
        ]

    def top_sessions(self, since: str, scope: Scope, limit: int) -> list[SessionSpend]:
        where, params = _scoped(since, scope)
        rows = self._reading().execute(
            "SELECT u.session_id, s.owner, MIN(u.recorded_at), MAX(u.recorded_at), "
            f"{_DASHBOARD_SUMS} FROM usage u JOIN sessions s USING (session_id) {where} "
            "GROUP BY u.session_id ORDER BY SUM(u.cost_pico) DESC, u.session_id LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [
            SessionSpend(
                session_id=r[0], owner=r[1], first_at=r[2], last_at=r[3], **_dashboard_counts(r[4:10])
            )
            for r in rows
        ]

    def top_owners(self, since: str, scope: Scope, limit: int) -> list[OwnerSpend]:
        where, params = _scoped(since, scope)
        rows = self._reading().execute(
            "SELECT s.owner, COUNT(DISTINCT u.session_id), SUM(u.cost_pico), SUM(u.part = 0) "
            f"FROM usage u JOIN sessions s USING (session_id) {where} "
            "GROUP BY s.owner ORDER BY SUM(u.cost_pico) DESC, s.owner LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [
            OwnerSpend(owner=r[0], **dict(zip(("sessions", "cost_pico", "messages"), _ints(r[1:4]), strict=True)))
            for r in rows
        ]

    # How a session row is written (``actors.store.sqlite_shared`` adds durations instead).
    _upsert_session: str = _UPSERT_SESSION

    def _session_params(self, sessions: Sequence[SessionRow]) -> list[tuple[object, ...]]:
        return [_session_values(s) for s in sessions]

    def write(self, sessions: Sequence[SessionRow], records: Sequence[RecordWrite]) -> None:
        """Write one batch in one transaction (all or nothing), sessions first.

        Raises sqlite3.Error after rolling back.
        """
        db = self._db
        if db.in_transaction:
            # A rollback that failed with the disk left the last transaction open; without
            # this every later commit would fail, the disk recovered or not.
            db.execute("ROLLBACK")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(self._upsert_session, self._session_params(sessions))
            for record in records:
                if record.replaces:
                    db.execute(
                        "DELETE FROM usage WHERE session_id = ? AND record_id = ?",
                        (record.session_id, record.record_id),
                    )
                db.executemany(_INSERT_PART, _part_values(record))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


# The dashboard's sums (``actors.store.rows.DASHBOARD_COUNTS`` names them, in this order).
_DASHBOARD_SUMS: Final = (
    "SUM(u.input_tokens), SUM(u.output_tokens), SUM(u.cache_creation_input_tokens), "
    "SUM(u.cache_read_input_tokens), SUM(u.cost_pico), SUM(u.part = 0)"
)

def _dashboard_counts(values: Sequence[object]) -> dict[str, int]:
    return dict(zip(DASHBOARD_COUNTS, _ints(values), strict=True))


def _scoped(since: str, scope: Scope) -> tuple[str, tuple[object, ...]]:
    """The WHERE clause of a dashboard query: the window, and the owner unless everyone."""
    if scope.everyone:
        return "WHERE u.recorded_at >= ?", (since,)
    if scope.owner is None:
        return "WHERE u.recorded_at >= ? AND s.owner IS NULL", (since,)
    return "WHERE u.recorded_at >= ? AND s.owner = ?", (since, scope.owner)


def _session_values(row: SessionRow) -> tuple[object, ...]:
    return (
        row.session_id,
        row.owner,
        row.created_at,
        row.updated_at,
        row.api_duration_ms,
        row.api_duration_without_retries_ms,
        row.user_name,
    )


def _part_values(record: RecordWrite) -> list[tuple[object, ...]]:
    return [
        (
            record.session_id,
            record.record_id,
            index,
            record.query_id,
            record.attempt,
            int(record.final),
            part.model,
            part.canonical,
            *(getattr(part, column) for column in COUNTS),
            int(part.unknown_model),
            record.speed,
            record.service_tier,
            int(record.long_context),
            record.priced_on,
            record.recorded_at,
            int(part.estimated),
        )
        for index, part in enumerate(record.parts)
    ]


def _ints(values: Sequence[object]) -> list[int]:
    """Counts read back from the file, checked: a value that is not an integer (a file edited
    or damaged by hand) is a read failure, ``sqlite3.DataError``, never a crash later."""
    ints = [value for value in values if type(value) is int]
    if len(ints) != len(values):
        raise sqlite3.DataError("ledger row holds a count that is not an integer")
    return ints


def _totals(
    db: sqlite3.Connection, where: str, params: tuple[object, ...], *, estimated: str
) -> dict[str, SessionTotals]:
    """Per-session totals of the usage rows matching ``where`` (durations not included).
    ``estimated``: the SQL expression of a row's estimated flag (``_ESTIMATED``, or ``0``)."""
    sessions: dict[str, SessionTotals] = {}
    query = (
        f"SELECT session_id, model, {_SUMS}, MAX(unknown_model), "
        f"{_ESTIMATED_SUMS.format(flag=estimated)} FROM usage {where} "
        "GROUP BY session_id, model ORDER BY session_id, MIN(rowid)"
    )
    for row in db.execute(query, params):
        totals = sessions.setdefault(row[0], SessionTotals())
        *counts, high, low = _ints(row[2:11])
        model = ModelTotals(**dict(zip(COUNTS, (*counts, high * _PICO_SPLIT + low), strict=True)))
        estimated_output, estimated_high, estimated_low = _ints(row[12:15])
        model.estimated_output_tokens = estimated_output
        model.estimated_cost_pico = estimated_high * _PICO_SPLIT + estimated_low
        totals.models[row[1]] = model
        totals.total_pico += model.cost_pico
        totals.unknown_model_cost = totals.unknown_model_cost or bool(row[11])
    return sessions


