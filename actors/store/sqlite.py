"""The CostLedger's SQLite store: schema, batched writes, lazy session loads, the report reader;
and the ``Store`` protocol every store follows (``open_store`` picks SQLite or PostgreSQL,
``actors.store.postgres``, by the ledger's location).

Synchronous on purpose: the CostLedger owns one ``LedgerStore`` and calls it from a worker
thread (``trio.to_thread.run_sync``), one call at a time, so the event loop never waits on
the disk. ``read_sessions`` opens a file read-only for ``switchboard cost``, also while a
gateway is writing it.

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

Schema (version 5, ``PRAGMA user_version``)::

    sessions(session_id PK, owner, created_at, updated_at,
             api_duration_ms, api_duration_without_retries_ms, user_name)
    usage(session_id, record_id, part, query_id, attempt, final, model, canonical,
          input_tokens, output_tokens, cache_creation_input_tokens,
          cache_creation_1h_input_tokens, cache_read_input_tokens, web_search_requests,
          web_fetch_requests, cost_pico, unknown_model, speed, service_tier, long_context,
          priced_on, recorded_at, estimated;  PK (session_id, record_id, part))

``owner`` is a digest of the access token, never the token; ``user_name`` the signed-in user
that token was issued to (the Claude Code gateway protocol, README.md "Claude Code for a whole
organisation"; NULL for an access or ledger token), so every usage record names its user
through its session. One usage row per record part
(part 0: the message, 1..: its advisor sub-messages); ``final`` 0 marks a provisional record,
replaced as a whole (all its parts) by its next version. ``usage_recorded_at`` indexes the
dashboard's time-window reads (``spend``, ``top_sessions``, ``top_owners``); being an index,
it is created on any file when opened, with no schema version of its own. ``estimated`` 1: the part's
``output_tokens`` is the gateway's estimate (a stream cut short, protocol/estimate.py).

Schema 3 adds ``limits`` (``LIMITS_TABLE``): access tokens (a SHA-256 of the token, never the
token) with their budgets and counters (actors/store/tokens.py). Schema 4 adds
``reservations`` (``RESERVATIONS_TABLE``): each running query's reservation. Schema 5 adds
the signed-in users (``USERS_TABLE``) and the tokens issued to them (``OAUTH_TOKENS_TABLE``;
actors/access/identities.py).

Migrations (``_MIGRATIONS``, run by ``LedgerStore.open`` in one transaction on a file of
an older version): 1 -> 2 adds ``usage.estimated`` (default 0: every older record holds
the upstream's own counts); 2 -> 3 adds the ``limits`` table; 3 -> 4 the ``reservations`` table; 4 -> 5 ``users`` and ``oauth_tokens``; 5 -> 6 adds ``sessions.user_name``. ``read_sessions`` reads an older file as it is (read-only):
without the column, nothing is estimated.
"""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import logging
import os
import pathlib
import sqlite3
import time
from collections.abc import Collection, Sequence
from typing import Final, Protocol, Self

import msgspec

from actors.config.settings import is_postgres_url
from protocol.dashboard import Bucket, OwnerSpend, Scope, SessionSpend, SpendRow
from protocol.errors import ConfigError, SwitchboardError
from protocol.ledger import ModelTotals, RecordPart, SessionTotals

MEMORY: Final = ":memory:"
SCHEMA_VERSION: Final = 6
# Schema 6's column: the signed-in user a session belongs to (protocol/identity.py).
USER_COLUMN: Final = "user_name"
# WAL + NORMAL survives any crash of the process; FULL would add an fsync to every commit
# (6.4 ms on the development machine against 0.01 ms), paid by every query's done frame and,
# with the provisional record, by its first events.
SYNCHRONOUS: Final = "NORMAL"
# A second process holding the write lock (a `switchboard cost` read never does) is waited
# for this long before a write fails and is retried with the next batch.
BUSY_TIMEOUT_MS: Final = 5000
# The integrity check at start reads every page: well under a second for a ledger of a
# year's sessions, while a huge one must not hold the gateway's start for minutes. Past the
# budget the check is abandoned (logged); corruption met later still fails only what it touches.
INTEGRITY_CHECK_BUDGET: Final = 2.0
# SQLite virtual-machine steps between two looks at the integrity check's clock.
INTEGRITY_CHECK_STEPS: Final = 10_000
# Problems quoted from the check's report: the first says what is wrong.
INTEGRITY_PROBLEMS_SHOWN: Final = 3
LOCK_SUFFIX: Final = ".lock"

log = logging.getLogger("switchboard.ledger")

# Access tokens and their limits (actors/store/tokens.py; protocol/budget.py). ``subject_kind``
# is ``token`` today; users and groups are meant to hold the same limits in the same table
# later (a row without ``token_hash``). Shared by the PostgreSQL schema (its migration 4).
LIMITS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS {table} (
    subject_kind TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash TEXT UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    budget_pico BIGINT,
    period TEXT NOT NULL DEFAULT 'total',
    max_concurrent INTEGER,
    rpm INTEGER,
    models TEXT,
    period_key TEXT NOT NULL DEFAULT '',
    spent_pico BIGINT NOT NULL DEFAULT 0,
    reserved_pico BIGINT NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    rpm_key TEXT NOT NULL DEFAULT '',
    rpm_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject_kind, name)
)"""

# Each running query's reservation against a token's budget (actors/store/tokens.py): the
# limits row's ``reserved_pico`` and ``in_flight`` are the sums of these rows, kept in the
# same transactions, so a process that dies with queries in flight leaves rows that the next
# start (SQLite) or a live instance (PostgreSQL: its ``instance_id`` silent too long)
# releases. ``session_id`` and ``query_id`` find the query's usage records, its spend. Shared
# by the PostgreSQL schema (its migration 5).
RESERVATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS {table} (
    reservation_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    session_id TEXT NOT NULL,
    query_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    amount_pico BIGINT NOT NULL,
    created_at TEXT NOT NULL
)"""

# The users the gateway signs in (actors/access/identities.py; ``switchboard users``): an argon2id
# hash of the password, never the password; ``groups`` comma-joined, in order.
USERS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS {table} (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    groups TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    disabled_at TEXT
)"""

# The tokens a sign-in issued (actors/access/identities.py), each only as its SHA-256: ``kind``
# ``access`` or ``refresh``; ``family`` names one sign-in (a refresh token used twice revokes
# all of it); ``expires_at`` in Unix seconds; a rotated refresh token has ``used_at``.
OAUTH_TOKENS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS {table} (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    user_name TEXT NOT NULL,
    family TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    used_at TEXT,
    revoked_at TEXT
)"""
IDENTITY_SCHEMA: Final = (
    USERS_TABLE.format(table="users") + ";" + OAUTH_TOKENS_TABLE.format(table="oauth_tokens") + ";"
    "CREATE INDEX IF NOT EXISTS oauth_tokens_user ON oauth_tokens (user_name);"
    "CREATE INDEX IF NOT EXISTS oauth_tokens_family ON oauth_tokens (family);"
)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    owner TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    api_duration_ms INTEGER NOT NULL DEFAULT 0,
    api_duration_without_retries_ms INTEGER NOT NULL DEFAULT 0,
    user_name TEXT
);
CREATE TABLE IF NOT EXISTS usage (
    session_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    part INTEGER NOT NULL,
    query_id TEXT,
    attempt INTEGER,
    final INTEGER NOT NULL,
    model TEXT NOT NULL,
    canonical TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_creation_input_tokens INTEGER NOT NULL,
    cache_creation_1h_input_tokens INTEGER NOT NULL,
    cache_read_input_tokens INTEGER NOT NULL,
    web_search_requests INTEGER NOT NULL,
    web_fetch_requests INTEGER NOT NULL,
    cost_pico INTEGER NOT NULL,
    unknown_model INTEGER NOT NULL,
    speed TEXT,
    service_tier TEXT,
    long_context INTEGER NOT NULL,
    priced_on TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    estimated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, record_id, part)
);
CREATE INDEX IF NOT EXISTS usage_provisional ON usage (session_id) WHERE final = 0;
CREATE INDEX IF NOT EXISTS usage_recorded_at ON usage (recorded_at);
""" + LIMITS_TABLE.format(table="limits") + ";" + RESERVATIONS_TABLE.format(table="reservations") + ";" + IDENTITY_SCHEMA

# A usage part's counts, in the column order both stores use (actors/store/postgres.py too).
COUNTS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_creation_1h_input_tokens",
    "cache_read_input_tokens",
    "web_search_requests",
    "web_fetch_requests",
    "cost_pico",
)
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
# Schema 2's column (see the module docstring, "Migrations").
_ESTIMATED: Final = "estimated"
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
# Schema migrations: the statements that take a file from version ``n - 1`` to ``n``.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    2: (f"ALTER TABLE usage ADD COLUMN {_ESTIMATED} INTEGER NOT NULL DEFAULT 0",),
    3: (LIMITS_TABLE.format(table="limits"),),
    4: (RESERVATIONS_TABLE.format(table="reservations"),),
    5: tuple(statement for statement in IDENTITY_SCHEMA.split(";") if statement.strip()),
    6: (f"ALTER TABLE sessions ADD COLUMN {USER_COLUMN} TEXT",),
}
_UPSERT_SESSION: Final = (
    "INSERT INTO sessions (session_id, owner, created_at, updated_at, api_duration_ms, "
    f"api_duration_without_retries_ms, {USER_COLUMN}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO "
    "UPDATE SET owner = excluded.owner, "
    f"{USER_COLUMN} = COALESCE(sessions.{USER_COLUMN}, excluded.{USER_COLUMN}), updated_at = excluded.updated_at, "
    "api_duration_ms = excluded.api_duration_ms, "
    "api_duration_without_retries_ms = excluded.api_duration_without_retries_ms"
)


class SessionRow(msgspec.Struct, frozen=True, kw_only=True):
    """A session's row, written whole (absolute values, so a retried write is harmless)."""

    session_id: str
    owner: str | None
    created_at: str
    updated_at: str
    api_duration_ms: int
    api_duration_without_retries_ms: int
    # The signed-in user the session's token was issued to (issue 19), else None.
    user_name: str | None = None


class RecordWrite(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a usage record. ``replaces``: an earlier version's rows go first."""

    session_id: str
    record_id: str
    query_id: str | None
    attempt: int | None
    final: bool
    parts: tuple[RecordPart, ...]
    speed: str | None
    service_tier: str | None
    long_context: bool
    priced_on: str
    recorded_at: str
    replaces: bool


class LoadedSession(msgspec.Struct, kw_only=True):
    """A session as stored: owner, totals, and its provisional records' parts by record id."""

    owner: str | None
    created_at: str
    totals: SessionTotals
    provisional: dict[str, tuple[RecordPart, ...]]
    user_name: str | None = None


class StoreError(SwitchboardError):
    """A store other than SQLite could not do what was asked (``actors.store.postgres``: the server
    unreachable, a lost connection, a statement that failed). The message says why, with no
    password in it."""


# What a store call may raise when the store, not the program, is at fault: the CostLedger
# degrades on these (docs/protocol.md, "Cost ledger faults") and lets anything else through.
STORE_ERRORS: Final = (sqlite3.Error, StoreError)


class Store(Protocol):
    """What the CostLedger needs of a store (``LedgerStore``, ``actors.store.postgres.PgStore``;
    tests wrap them to inject faults). Called from one thread at a time.

    Every method may raise one of ``STORE_ERRORS``: SQLite's ``OperationalError`` for a full
    disk or an I/O error, ``DatabaseError`` for a corrupt page; ``StoreError`` for the rest.
    ``write`` is idempotent: writing a batch again (a retry after a failure, even one whose
    commit did happen) counts nothing twice, and a final record version is never replaced.
    """

    def load(self, session_ids: Collection[str]) -> dict[str, LoadedSession]: ...

    def write(self, sessions: Sequence[SessionRow], records: Sequence[RecordWrite]) -> None: ...

    def close(self) -> None: ...

    # The dashboard's read-only aggregations (protocol/dashboard.py; docs/protocol.md,
    # "Dashboard"). ``since`` is a bucket key: a record counts when its ``recorded_at`` is not
    # before it as a string (ISO 8601 UTC, ``+00:00``, so string order is time order). Every
    # usage row counts, provisional ones too, as in a session's totals. Each answer is
    # bounded by the caller: buckets x models x owners, or ``limit`` rows. A store on a file
    # must let them run on another thread while ``load`` or ``write`` runs (the SQLite store
    # reads through its own read-only connection): the CostLedger runs them beside its inbox.

    def spend(self, since: str, bucket: Bucket, scope: Scope) -> list[SpendRow]:
        """Usage summed per (bucket: ``recorded_at``'s first 10 or 13 characters, canonical
        model, session owner); ``messages`` counts part 0 of each record version."""
        ...

    def top_sessions(self, since: str, scope: Scope, limit: int) -> list[SessionSpend]:
        """The ``limit`` sessions with the highest cost since ``since`` (ties: session id)."""
        ...

    def top_owners(self, since: str, scope: Scope, limit: int) -> list[OwnerSpend]:
        """The ``limit`` owners (tokens) with the highest cost since ``since``."""
        ...


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


def open_store(location: str) -> Store:
    """The store at ``location``: a PostgreSQL URL (``postgresql://``, ``postgres://``) opens
    ``actors.store.postgres.PgStore`` (imported only then: the optional ``postgres`` extra), anything
    else the SQLite ``LedgerStore``.

    Raises:
        ConfigError: the store cannot be opened (see each store's ``open``), or psycopg is
            not installed for a PostgreSQL URL.
    """
    if is_postgres_url(location):
        require_psycopg()
        from actors.store.postgres import PgStore

        return PgStore.open(location)
    return LedgerStore.open(location)


def require_psycopg() -> None:
    """Raises ConfigError when the ``postgres`` extra is not installed."""
    missing = [name for name in ("psycopg", "psycopg_pool") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"a PostgreSQL cost ledger needs {' and '.join(missing)}: pip install 'switchboard[postgres]'"
        )


# The dashboard's sums (``DASHBOARD_COUNTS`` names them, in this order; the PostgreSQL store's
# reads, actors/store/pg_dashboard.py, use the same names).
_DASHBOARD_SUMS: Final = (
    "SUM(u.input_tokens), SUM(u.output_tokens), SUM(u.cache_creation_input_tokens), "
    "SUM(u.cache_read_input_tokens), SUM(u.cost_pico), SUM(u.part = 0)"
)
DASHBOARD_COUNTS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cost_pico",
    "messages",
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


def _reason(exc: BaseException) -> str:
    """An OS or SQLite error in words, with a hint where the cause is usual."""
    if isinstance(exc, OSError):
        text = f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{text}: the ledger's directory and file must be writable"
        return text
    text = str(exc)
    if "readonly" in text or "unable to open" in text:
        return f"{text}: the ledger's directory and file must be writable"
    return text


def _lock(path: str) -> int:
    """Create the ledger's directory if needed and take the exclusive lock beside the file.

    Raises:
        ConfigError: the directory or lock file cannot be created, or another process
            holds the lock.
    """
    lock_path = path + LOCK_SUFFIX
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open the cost ledger {path!r} for writing: {_reason(exc)}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"the cost ledger {path!r} is in use by another switchboard process (it holds "
            f"{lock_path!r}); a SQLite ledger serves one gateway: give this one its own --ledger"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"cannot lock the cost ledger {path!r}: {_reason(exc)}") from exc
    return fd


def _check_integrity(db: sqlite3.Connection, path: str, budget: float) -> None:
    """``PRAGMA quick_check`` within ``budget`` seconds (skipped, with a warning, past it).

    Raises:
        ConfigError: the file is corrupt (or not a database at all).
    """
    deadline = time.monotonic() + budget
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), INTEGRITY_CHECK_STEPS)
    try:
        rows = db.execute(f"PRAGMA quick_check({INTEGRITY_PROBLEMS_SHOWN})").fetchall()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT:
            log.warning(
                "the cost ledger's integrity check did not finish within %g s; starting "
                "without it (corruption met later fails only the requests it touches)", budget,
            )
            return
        rows = [(str(exc),)]
    finally:
        db.set_progress_handler(None, 0)
    # quick_check reports "ok", or lines of problems under a "*** in database main ***" heading.
    problems = [
        line for row in rows if row[0] != "ok" for line in str(row[0]).splitlines() if not line.startswith("***")
    ]
    if problems:
        raise ConfigError(
            f"the cost ledger {path!r} is corrupt ({'; '.join(problems)}); move it aside "
            "(sqlite3's .recover may save its data) and start on a new file"
        )


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


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Take a ledger of schema ``version`` (0: a new file) to ``SCHEMA_VERSION``, in one
    transaction. A new file gets the whole schema from ``_SCHEMA`` instead.

    Raises sqlite3.Error after rolling back.
    """
    if version == 0 or version >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step]:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    log.info("cost ledger schema migrated from version %d to %d", version, SCHEMA_VERSION)


def has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether the ledger file's ``table`` has ``column`` (a file of an older schema may not)."""
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


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


def read_sessions(path: str, session_id: str | None = None) -> list[tuple[str, SessionTotals]]:
    """Every session's totals (or only ``session_id``'s), oldest first, from a ledger file
    opened read-only (or a PostgreSQL ledger, read in one read-only snapshot). An unknown
    ``session_id`` gives an empty list.

    Raises:
        ConfigError: no ledger at ``path``, or it cannot be read.
    """
    if is_postgres_url(path):
        require_psycopg()
        from actors.store.postgres import read_pg_sessions

        return read_pg_sessions(path, session_id)
    if path == MEMORY or not os.path.isfile(path):
        raise ConfigError(f"no cost ledger at {path!r}")
    uri = pathlib.Path(path).resolve().as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the cost ledger {path!r}: {exc}") from exc
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        where, params = ("WHERE session_id = ?", (session_id,)) if session_id else ("", ())
        db.execute("BEGIN")  # one snapshot for both queries
        # A file from before schema 2 is read as it is: nothing in it was estimated.
        flag = _ESTIMATED if has_column(db, "usage", _ESTIMATED) else "0"
        usage = _totals(db, where, params, estimated=flag)
        rows = db.execute(
            "SELECT session_id, api_duration_ms, api_duration_without_retries_ms "
            f"FROM sessions {where} ORDER BY rowid",
            params,
        ).fetchall()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the cost ledger {path!r}: {exc}") from exc
    finally:
        db.close()
    result: list[tuple[str, SessionTotals]] = []
    for sid, duration_ms, without_retries_ms in rows:
        totals = usage.get(sid, SessionTotals())
        totals.api_duration_ms, totals.api_duration_without_retries_ms = duration_ms, without_retries_ms
        result.append((sid, totals))
    return result
