"""The CostLedger's PostgreSQL store (``--ledger postgresql://...``): the ``Store`` protocol of
``actors.store.rows`` on psycopg 3 with a psycopg_pool connection pool.

Synchronous on purpose, as the SQLite store: psycopg's async API runs only on asyncio, and
the gateway runs on trio, so the CostLedger calls this store from a worker thread
(``trio.to_thread.run_sync``), one call at a time; the event loop never waits on the
network. The pool holds two connections (the ledger's serial calls, and the dashboard's reads), checks it before each use (one
empty round trip: a connection broken by a server restart is replaced, not failed on) and
reconnects in the background after the server comes back.

Opening (``PgStore.open``, at the gateway's start) connects (``CONNECT_TIMEOUT``), applies
the schema's migrations (``actors.store.pg_migrations``: one transaction, an advisory lock, a
version table), registers this process in ``instances`` and opens the pool; any failure
is a ``ConfigError`` that says why (the URL's password is never in it). Later, every
failure is a ``StoreError`` (the server unreachable, a lost connection, a statement timed
out: ``STATEMENT_TIMEOUT``): the CostLedger degrades, reports ``cost_recorded: false``,
retries with backoff and recovers without a restart (docs/protocol.md, "Cost ledger
faults"). Only a commit PostgreSQL acknowledged is reported recorded, so a server restart
loses nothing reported (with ``synchronous_commit`` not ``off``; a warning at start says so
otherwise).

Several processes may write one PostgreSQL ledger: each is an instance
(``instance_id``: hostname, pid and a random part, new at each open), every usage row and
duration share carries it, and totals are derived from the rows (``actors.store.pg_migrations``
says why this keeps them right). Writes are idempotent: a usage part is keyed by session,
record id (query, attempt, message) and part, and an existing row is changed only to move
a provisional version forward, never once final. A session's API durations are kept per
instance: this store writes its own share, the CostLedger's total for the session less
what the other instances had when the session was loaded (``_others``, remembered for
``MAX_REMEMBERED_SESSIONS``; a session forgotten meanwhile takes the other instances' share
at the write instead).

Connecting: actors/store/pg_connect.py; the totals read back, and ``read_pg_sessions`` for
``switchboard cost``: actors/store/pg_totals.py.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from typing import Final, final

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from actors.config.instance import new_instance_id
from actors.config.settings import redact_url
from actors.store import pg_dashboard
from actors.store.pg_connect import CONNECT_TIMEOUT, _configure, conninfo, message
from actors.store.pg_migrations import migrate
from actors.store.pg_totals import ESTIMATED, _int, _totals
from actors.store.rows import COUNTS, LoadedSession, RecordWrite, SessionRow, StoreError
from protocol.dashboard import Bucket, OwnerSpend, Scope, SessionSpend, SpendRow
from protocol.errors import ConfigError
from protocol.ledger import RecordPart, SessionTotals

log = logging.getLogger("switchboard.ledger")

# How long a store call waits for the pool's connection (a reconnection under way). Every
# call holds the ledger's worker meanwhile, so short: a failed commit is retried with the
# ledger's own backoff (0.5 s to 15 s) anyway.
GETCONN_TIMEOUT: Final = 3.0
# How long the pool keeps reconnecting in the background before it gives up until the next
# call asks (which starts a new attempt at once): bounds the delay between the server's
# return and the ledger's recovery to the ledger's own backoff.
RECONNECT_TIMEOUT: Final = 10.0
# Sessions whose other instances' duration share is remembered (a few dozen bytes each):
# well above the CostLedger's MAX_HOT_SESSIONS (actors.store.ledger_sessions), whose
# sessions are the ones written.
MAX_REMEMBERED_SESSIONS: Final = 65_536
_COLUMNS: Final = (
    "session_id, record_id, part, instance_id, query_id, attempt, final, model, canonical, "
    + ", ".join(COUNTS)
    + ", unknown_model, speed, service_tier, long_context, priced_on, recorded_at, estimated"
)
_TYPES: Final = (
    ("text", "text", "int", "text", "text", "int", "bool", "text", "text")
    + ("bigint",) * len(COUNTS)
    + ("bool", "text", "text", "bool", "date", "timestamptz", "bool")
)
UPSERT_USAGE: Final = (
    f"INSERT INTO switchboard.usage ({_COLUMNS}) SELECT * FROM unnest("
    + ", ".join(f"%s::{kind}[]" for kind in _TYPES)
    + ") ON CONFLICT (session_id, record_id, part) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in _COLUMNS.split(", ")[3:])
    # A final row is never replaced: a repeat, or a late older version, changes nothing.
    + " WHERE NOT usage.final"
)
DROP_STALE_PARTS: Final = (
    "DELETE FROM switchboard.usage u USING unnest(%s::text[], %s::text[], %s::int[]) "
    "AS d(session_id, record_id, parts) WHERE u.session_id = d.session_id "
    "AND u.record_id = d.record_id AND u.part >= d.parts AND NOT u.final"
)
_UPSERT_SESSIONS: Final = (
    "INSERT INTO switchboard.sessions (session_id, owner, owner_instance, created_at, updated_at, user_name) "
    "SELECT s, o, %s, c, u, n FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], "
    "%s::text[]) AS t(s, o, c, u, n) ON CONFLICT (session_id) DO UPDATE SET "
    "owner_instance = excluded.owner_instance, "
    "user_name = COALESCE(sessions.user_name, excluded.user_name), "
    "updated_at = GREATEST(sessions.updated_at, excluded.updated_at)"
)
_UPSERT_DURATIONS: Final = (
    "INSERT INTO switchboard.session_durations (session_id, instance_id, api_duration_ms, "
    "api_duration_without_retries_ms) SELECT s, %s, d, w FROM unnest(%s::text[], %s::bigint[], "
    "%s::bigint[]) AS t(s, d, w) ON CONFLICT (session_id, instance_id) DO UPDATE SET "
    "api_duration_ms = excluded.api_duration_ms, "
    "api_duration_without_retries_ms = excluded.api_duration_without_retries_ms"
)
_DURATIONS: Final = (
    "SELECT session_id, SUM(api_duration_ms), SUM(api_duration_without_retries_ms), "
    "SUM(api_duration_ms) FILTER (WHERE instance_id = %s), "
    "SUM(api_duration_without_retries_ms) FILTER (WHERE instance_id = %s) "
    "FROM switchboard.session_durations WHERE session_id = ANY(%s) GROUP BY session_id"
)


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime.datetime | datetime.date) else str(value)


@final
class PgStore:
    """The CostLedger's store in PostgreSQL, used by one thread at a time (its worker)."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[TupleRow]], instance_id: str) -> None:
        self._pool = pool
        self.instance_id = instance_id
        # Per session: the other instances' share of its durations when it was loaded.
        self._others: OrderedDict[str, tuple[int, int]] = OrderedDict()

    @classmethod
    def open(cls, url: str, *, instance_id: str | None = None) -> PgStore:
        """Connect, migrate the schema, register the instance, open the pool.

        Raises:
            ConfigError: the URL is invalid, the server cannot be reached or refuses, the
                schema is newer than this program's.
        """
        where = redact_url(url)
        info = conninfo(url)
        instance = instance_id or new_instance_id()
        try:
            with psycopg.connect(info, autocommit=True) as conn:
                _configure(conn)
                migrate(conn, where)
                now = datetime.datetime.now(datetime.UTC)
                conn.execute(
                    "INSERT INTO switchboard.instances (instance_id, hostname, pid, started_at, last_seen_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (instance_id) DO UPDATE SET last_seen_at = %s",
                    (instance, socket.gethostname(), os.getpid(), now, now, now),
                )
                row = conn.execute("SHOW synchronous_commit").fetchone()
                if row is not None and row[0] == "off":
                    log.warning(
                        "the cost ledger %s runs with synchronous_commit=off: a server crash can "
                        "lose commits the ledger reported as recorded", where,
                    )
        except psycopg.Error as exc:
            raise ConfigError(f"cannot use the cost ledger {where}: {message(exc)}") from exc
        pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            info,
            kwargs={"autocommit": True},
            min_size=1,
            # The ledger's worker writes on one; the dashboard's reads (another thread) on the
            # other, so that a read never waits for a commit nor a commit for a read.
            max_size=2,
            open=False,
            configure=_configure,
            check=ConnectionPool.check_connection,
            timeout=GETCONN_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name="switchboard-ledger",
        )
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            pool.close()
            raise ConfigError(f"cannot use the cost ledger {where}: {message(exc)}") from exc
        log.info("cost ledger in PostgreSQL at %s, instance %s", where, instance)
        return cls(pool, instance)

    def close(self) -> None:
        self._pool.close()

    def spend(self, since: str, bucket: Bucket, scope: Scope) -> list[SpendRow]:
        with self._pool.connection() as conn:
            return pg_dashboard.spend(conn, since, bucket, scope)

    def top_sessions(self, since: str, scope: Scope, limit: int) -> list[SessionSpend]:
        with self._pool.connection() as conn:
            return pg_dashboard.top_sessions(conn, since, scope, limit)

    def top_owners(self, since: str, scope: Scope, limit: int) -> list[OwnerSpend]:
        with self._pool.connection() as conn:
            return pg_dashboard.top_owners(conn, since, scope, limit)

    def load(self, session_ids: Collection[str]) -> dict[str, LoadedSession]:
        """The stored sessions among ``session_ids``, read in one snapshot.

        Raises StoreError.
        """
        ids = list(session_ids)
        for session_id in ids:
            # Absent now: whatever other instances add later is theirs, not in our figures.
            self._remember(session_id, (0, 0))
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                rows = conn.execute(
                    "SELECT session_id, owner, created_at, user_name FROM switchboard.sessions "
                    "WHERE session_id = ANY(%s)",
                    (ids,),
                ).fetchall()
                if not rows:
                    return {}
                ids = [row[0] for row in rows]
                durations = {
                    row[0]: row[1:] for row in conn.execute(_DURATIONS, (self.instance_id, self.instance_id, ids))
                }
                totals = _totals(conn, "WHERE session_id = ANY(%s)", (ids,), estimated=ESTIMATED)
                provisional = self._provisional(conn, ids)
        except psycopg.Error as exc:
            raise StoreError(message(exc)) from exc
        found: dict[str, LoadedSession] = {}
        for session_id, owner, created_at, user_name in rows:
            total, total_without, own, own_without = (_int(v or 0) for v in durations.get(session_id, (0,) * 4))
            session_totals = totals.get(session_id, SessionTotals())
            session_totals.api_duration_ms, session_totals.api_duration_without_retries_ms = total, total_without
            self._remember(session_id, (total - own, total_without - own_without))
            found[session_id] = LoadedSession(
                owner=owner,
                created_at=_iso(created_at),
                totals=session_totals,
                provisional=provisional.get(session_id, {}),
                user_name=user_name,
            )
        return found

    def totals(self, session_ids: Collection[str]) -> dict[str, SessionTotals]:
        """The stored totals of the sessions among ``session_ids`` (every instance's usage and
        durations), read in one snapshot: what the CostLedger reports for a session it
        shares with other instances (``actors.cost_ledger``, "Several instances"). Updates
        the other instances' remembered duration share to this snapshot's.

        Raises StoreError.
        """
        ids = list(session_ids)
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                durations = {
                    row[0]: row[1:] for row in conn.execute(_DURATIONS, (self.instance_id, self.instance_id, ids))
                }
                totals = _totals(conn, "WHERE session_id = ANY(%s)", (ids,), estimated=ESTIMATED)
        except psycopg.Error as exc:
            raise StoreError(message(exc)) from exc
        for session_id, row in durations.items():
            total, total_without, own, own_without = (_int(v or 0) for v in row)
            session_totals = totals.setdefault(session_id, SessionTotals())
            session_totals.api_duration_ms, session_totals.api_duration_without_retries_ms = total, total_without
            self._remember(session_id, (total - own, total_without - own_without))
        return totals

    def _remember(self, session_id: str, others: tuple[int, int]) -> None:
        self._others[session_id] = others
        self._others.move_to_end(session_id)
        while len(self._others) > MAX_REMEMBERED_SESSIONS:
            self._others.popitem(last=False)

    def _provisional(
        self, conn: psycopg.Connection[TupleRow], ids: list[str]
    ) -> dict[str, dict[str, tuple[RecordPart, ...]]]:
        parts: dict[str, dict[str, list[RecordPart]]] = {}
        for row in conn.execute(
            "SELECT session_id, record_id, model, canonical, " + ", ".join(COUNTS) + ", unknown_model, "
            f"{ESTIMATED} FROM switchboard.usage WHERE session_id = ANY(%s) AND NOT final ORDER BY session_id, record_id, part",
            (ids,),
        ):
            counts = dict(zip(COUNTS, (_int(v) for v in row[4:12]), strict=True))
            part = RecordPart(
                model=row[2], canonical=row[3], unknown_model=bool(row[12]), estimated=bool(row[13]), **counts
            )
            parts.setdefault(row[0], {}).setdefault(row[1], []).append(part)
        return {sid: {rid: tuple(p) for rid, p in records.items()} for sid, records in parts.items()}

    def write(self, sessions: Sequence[SessionRow], records: Sequence[RecordWrite]) -> None:
        """Write one batch in one transaction (all or nothing); idempotent (``Store``).

        Raises StoreError after rolling back.
        """
        latest, stale = _coalesce(records)
        try:
            with self._pool.connection() as conn, conn.transaction():
                if sessions:
                    self._write_sessions(conn, sessions)
                if stale:
                    conn.execute(
                        DROP_STALE_PARTS,
                        ([r.session_id for r in stale], [r.record_id for r in stale], [len(r.parts) for r in stale]),
                    )
                if latest:
                    conn.execute(UPSERT_USAGE, usage_columns(latest, self.instance_id))
                conn.execute(
                    "UPDATE switchboard.instances SET last_seen_at = now() WHERE instance_id = %s",
                    (self.instance_id,),
                )
        except psycopg.Error as exc:
            raise StoreError(message(exc)) from exc

    def _write_sessions(self, conn: psycopg.Connection[TupleRow], sessions: Sequence[SessionRow]) -> None:
        conn.execute(
            _UPSERT_SESSIONS,
            (
                self.instance_id,
                [s.session_id for s in sessions],
                [s.owner for s in sessions],
                [s.created_at for s in sessions],
                [s.updated_at for s in sessions],
                [s.user_name for s in sessions],
            ),
        )
        timed = [s for s in sessions if s.api_duration_ms or s.api_duration_without_retries_ms]
        if not timed:
            return
        forgotten = [s.session_id for s in timed if s.session_id not in self._others]
        if forgotten:
            rows = conn.execute(
                "SELECT session_id, SUM(api_duration_ms), SUM(api_duration_without_retries_ms) "
                "FROM switchboard.session_durations WHERE session_id = ANY(%s) AND instance_id <> %s "
                "GROUP BY session_id",
                (forgotten, self.instance_id),
            )
            for sid, others, others_without in rows:
                self._remember(sid, (_int(others), _int(others_without)))
        shares = []
        for s in timed:
            others, others_without = self._others.get(s.session_id, (0, 0))
            shares.append((s.session_id, s.api_duration_ms - others, s.api_duration_without_retries_ms - others_without))
        conn.execute(
            _UPSERT_DURATIONS,
            (self.instance_id, [s[0] for s in shares], [s[1] for s in shares], [s[2] for s in shares]),
        )


def _coalesce(records: Sequence[RecordWrite]) -> tuple[list[RecordWrite], list[RecordWrite]]:
    """The version of each record a batch leaves (its first final one, else its last one),
    and those of them that may leave stale provisional parts behind (a replacement, or
    several versions in the batch): one statement may not change a row twice."""
    latest: dict[tuple[str, str], RecordWrite] = {}
    replacing: set[tuple[str, str]] = set()
    for record in records:
        key = (record.session_id, record.record_id)
        older = latest.get(key)
        if older is not None and older.final:
            continue
        if older is not None or record.replaces:
            replacing.add(key)
        latest[key] = record
    return list(latest.values()), [latest[key] for key in replacing]


def usage_columns(records: Iterable[RecordWrite], instance_id: str) -> list[list[object]]:
    """The usage upsert's parameters: one array per column, one element per record part."""
    columns: list[list[object]] = [[] for _ in _TYPES]
    for record in records:
        for index, part in enumerate(record.parts):
            values = (
                record.session_id,
                record.record_id,
                index,
                instance_id,
                record.query_id,
                record.attempt,
                record.final,
                part.model,
                part.canonical,
                *(getattr(part, column) for column in COUNTS),
                part.unknown_model,
                record.speed,
                record.service_tier,
                record.long_context,
                record.priced_on,
                record.recorded_at,
                part.estimated,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
    return columns


