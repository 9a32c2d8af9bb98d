"""Access tokens with a name and limits, kept in the cost ledger's store (the ``limits`` table:
``actors.store.sqlite.LIMITS_TABLE`` in SQLite, migration 4 of ``actors.store.pg_migrations`` in
PostgreSQL), and the atomic reserve/settle of their budgets (protocol/budget.py).

Synchronous on purpose, as the ledger's stores: the gateway calls a ``TokenStore`` from a
worker thread (``actors.access.budgets``), one call at a time; ``switchboard tokens`` calls it
directly. It has its own connection to the ledger (SQLite: a second connection to the
file, without the ledger's process lock, so ``switchboard tokens`` also works beside a
running gateway; PostgreSQL: one connection, reopened after a failure).

A token is stored only as its SHA-256 (``token_hash``). A slow password hash (bcrypt,
argon2) protects LOW-entropy secrets against guessing; a token here is 256 random bits
(``new_token``), so no guess can hit its hash, and a fast hash lets every request be
checked with one indexed lookup.

Atomicity: ``reserve`` and ``settle`` read the subject's row, decide with the pure
``protocol.budget``, and write it back, in ONE transaction that holds the row: SQLite's
``BEGIN IMMEDIATE`` (the database's write lock, taken before the read), PostgreSQL's
``SELECT ... FOR UPDATE`` (the row's lock, held to the commit). So any number of gateway
processes on one store never reserve past a budget together.

Reservations (``reservations``: ``actors.store.sqlite.RESERVATIONS_TABLE``): each query's
reservation is a row of the instance holding it, written, grown (``top_up``) and deleted
(``settle``) in the same transaction as the token's counters, so ``reserved_pico`` and
``in_flight`` stay the sums of the rows. ``release_dead`` releases the rows of dead
instances (SQLite: every row, at a gateway's start; PostgreSQL: instances silent for
``SILENT_AFTER``), each settled to the cost of its query's usage records.

Subjects: every row has a ``subject_kind``: ``token``, or ``user`` and ``group`` (the
organisation policy's limits, README.md "Claude Code for a whole organisation": rows without
a token hash, kept in step with the policy by ``sync_subjects``). The reservation calls take
a subject key (``subject_key``: a token's name, ``user:NAME``, ``group:NAME``); the
reservation code does not depend on the kind. A query of a signed-in user reserves against
the token (if a ledger token), the user and each of their groups that has limits.
"""

from __future__ import annotations

import builtins
import datetime
import hashlib
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, Protocol, TypeVar, cast

import msgspec

from actors.config.settings import is_postgres_url
from actors.store.sqlite import (
    BUSY_TIMEOUT_MS,
    LIMITS_TABLE,
    MEMORY,
    RESERVATIONS_TABLE,
    LedgerStore,
    StoreError,
)
from protocol.budget import Account, Limits, Period, Refusal, reserve, settle, top_up
from protocol.errors import ConfigError

_LIMITS_SCHEMA: Final = (
    LIMITS_TABLE.format(table="limits") + ";" + RESERVATIONS_TABLE.format(table="reservations") + ";"
    # The usage records' columns a released reservation reads (an in-memory store has no ledger).
    + "CREATE TABLE IF NOT EXISTS usage (session_id TEXT, query_id TEXT, cost_pico INTEGER);"
)
# An instance on a PostgreSQL ledger whose ``instances.last_seen_at`` is older than this is
# taken for dead and its reservations released: six heartbeats
# (``actors.access.budgets.INSTANCE_HEARTBEAT``) missed (docs/protocol.md "Access tokens and budgets").
SILENT_AFTER: Final = datetime.timedelta(seconds=60)
TOKEN_PREFIX: Final = "sb-"
# 32 random bytes: 256 bits, as the budgets issue asks.
TOKEN_BYTES: Final = 32
SUBJECT_TOKEN: Final = "token"
# A signed-in user's and a group's limits (the organisation policy, actors/access/policy.py): rows
# without a token hash, named in the reservation calls by a subject key ``user:NAME`` or
# ``group:NAME`` (``subject_key``); a token's key is its name.
SUBJECT_USER: Final = "user"
SUBJECT_GROUP: Final = "group"
_SUBJECT_KINDS: Final = (SUBJECT_USER, SUBJECT_GROUP)
# How the subject keys of users and groups begin.
SUBJECT_PREFIXES: Final = tuple(f"{kind}:" for kind in _SUBJECT_KINDS)


def subject_key(kind: str, name: str) -> str:
    """The key ``reserve``, ``top_up`` and ``settle`` take for a subject."""
    return name if kind == SUBJECT_TOKEN else f"{kind}:{name}"


def _subject(key: str) -> tuple[str, str]:
    """``(subject_kind, name)`` of a subject key."""
    kind, colon, name = key.partition(":")
    return (kind, name) if colon and kind in _SUBJECT_KINDS else (SUBJECT_TOKEN, key)

T = TypeVar("T")

_FIELDS: Final = (
    "name, budget_pico, period, max_concurrent, rpm, models, period_key, spent_pico, "
    "reserved_pico, in_flight, rpm_key, rpm_count, created_at, token_hash"
)


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A token's name, limits and counters (never the token)."""

    name: str
    limits: Limits
    account: Account
    created_at: str
    # The token's SHA-256: also the owner digest of its sessions (actors.store.ledger_sessions.owner_digest).
    token_hash: str | None = None


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A query's row in ``reservations``: its own id, the query (its session and query id
    find its usage records) and the instance running it."""

    reservation_id: str
    session_id: str
    query_id: str
    instance_id: str


def new_token() -> str:
    """A fresh access token: ``sb-`` and 256 random bits (URL-safe base64)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the store keeps of a token (the module docstring says why SHA-256 suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: tuple[Any, ...]) -> TokenInfo:
    (name, budget, period, concurrent, rpm, models, key, spent, reserved, in_flight, rpm_key, rpm_count, created, digest) = row
    return TokenInfo(
        name=str(name),
        limits=Limits(
            budget_pico=None if budget is None else int(budget),
            period=cast(Period, str(period)),
            max_concurrent=None if concurrent is None else int(concurrent),
            rpm=None if rpm is None else int(rpm),
            models=None if models is None else tuple(m for m in str(models).split(",") if m),
        ),
        account=Account(
            period_key=str(key),
            spent_pico=int(spent),
            reserved_pico=int(reserved),
            in_flight=int(in_flight),
            rpm_key=str(rpm_key),
            rpm_count=int(rpm_count),
        ),
        created_at=str(created),
        token_hash=None if digest is None else str(digest),
    )


def _models(models: tuple[str, ...] | None) -> str | None:
    return None if models is None else ",".join(models)


class _Cursor(Protocol):
    def execute(self, sql: str, params: tuple[object, ...] = ...) -> Any: ...


class TokenStore:
    """The ``limits`` table of one ledger. Subclasses give the connection and transactions."""

    _table: str = "limits"
    _reservations: str = "reservations"
    _usage: str = "usage"
    _lock_row: str = ""

    # Whether the reads (``list``, ``get``, ``lookup``, ``any_active``) may run on the event
    # loop's thread: they never wait (SQLite's WAL: a reader never waits for the writer).
    reads_in_place: bool = False
    # Whether several gateway processes share the store (PostgreSQL): then each says it is
    # alive (``heartbeat``) and dead ones are found by their silence.
    shared: bool = False

    def _tx(self) -> AbstractContextManager[_Cursor]:
        """One transaction; the subclass's."""
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[_Cursor]:
        """Where a read runs: a transaction unless the subclass has better."""
        return self._tx()

    def _sql(self, sql: str) -> str:
        return sql.replace("{t}", self._table)

    def close(self) -> None:
        raise NotImplementedError

    def add(self, name: str, token: str, limits: Limits, now: datetime.datetime) -> None:
        """Store a new token named ``name`` (a revoked one of that name is replaced).

        Raises ConfigError when an active token has that name, or the name is a user's or
        a group's subject key."""
        if _subject(name)[0] != SUBJECT_TOKEN:
            raise ConfigError(f"a token name may not begin with {name.partition(':')[0]}:")
        with self._tx() as db:
            row = db.execute(
                self._sql("SELECT revoked_at FROM {t} WHERE subject_kind = ? AND name = ?"), (SUBJECT_TOKEN, name)
            ).fetchone()
            if row is not None and row[0] is None:
                raise ConfigError(f"a token named {name!r} exists already (revoke it first)")
            if row is not None:
                # The revoked one keeps its hash under a name of its own (cost --by token).
                db.execute(
                    self._sql("UPDATE {t} SET name = ? WHERE subject_kind = ? AND name = ?"),
                    (f"{name} (revoked {row[0]})", SUBJECT_TOKEN, name),
                )
            db.execute(
                self._sql(
                    "INSERT INTO {t} (subject_kind, name, token_hash, created_at, budget_pico, period, "
                    "max_concurrent, rpm, models) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    SUBJECT_TOKEN, name, token_hash(token), now.isoformat(), limits.budget_pico, limits.period,
                    limits.max_concurrent, limits.rpm, _models(limits.models),
                ),
            )

    def set_limits(self, name: str, limits: Limits) -> bool:
        """Replace an active token's limits (its counters stay); False: no such token."""
        with self._tx() as db:
            cursor = db.execute(
                self._sql(
                    "UPDATE {t} SET budget_pico = ?, period = ?, max_concurrent = ?, rpm = ?, models = ? "
                    "WHERE subject_kind = ? AND name = ? AND revoked_at IS NULL"
                ),
                (limits.budget_pico, limits.period, limits.max_concurrent, limits.rpm, _models(limits.models), SUBJECT_TOKEN, name),
            )
            return bool(cursor.rowcount)

    def sync_subjects(self, subjects: dict[str, Limits], now: datetime.datetime) -> None:
        """Make the users' and groups' limits those of ``subjects`` (by subject key): new
        ones added, present ones given these limits (their counters stay), the others
        retired (``revoked_at``: never reserved against again; their queries still settle)."""
        with self._tx() as db:
            rows = db.execute(
                self._sql("SELECT subject_kind, name FROM {t} WHERE subject_kind IN (?, ?)"), _SUBJECT_KINDS
            ).fetchall()
            existing = {(str(kind), str(name)) for kind, name in rows}
            wanted = {_subject(key): limits for key, limits in subjects.items()}
            for (kind, name), limits in wanted.items():
                values = (limits.budget_pico, limits.period, limits.max_concurrent, limits.rpm, _models(limits.models))
                if (kind, name) in existing:
                    db.execute(
                        self._sql(
                            "UPDATE {t} SET budget_pico = ?, period = ?, max_concurrent = ?, rpm = ?, models = ?, "
                            "revoked_at = NULL WHERE subject_kind = ? AND name = ?"
                        ),
                        (*values, kind, name),
                    )
                else:
                    db.execute(
                        self._sql(
                            "INSERT INTO {t} (subject_kind, name, created_at, budget_pico, period, max_concurrent, "
                            "rpm, models) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                        ),
                        (kind, name, now.isoformat(), *values),
                    )
            for kind, name in existing - set(wanted):
                db.execute(
                    self._sql("UPDATE {t} SET revoked_at = ? WHERE subject_kind = ? AND name = ? AND revoked_at IS NULL"),
                    (now.isoformat(), kind, name),
                )

    def revoke(self, name: str, now: datetime.datetime) -> bool:
        """Revoke a token at once; False: no such active token. Its hash stays, unusable
        (every lookup skips revoked rows), so ``cost --by token`` still names its sessions."""
        with self._tx() as db:
            cursor = db.execute(
                self._sql(
                    "UPDATE {t} SET revoked_at = ? "
                    "WHERE subject_kind = ? AND name = ? AND revoked_at IS NULL"
                ),
                (now.isoformat(), SUBJECT_TOKEN, name),
            )
            return bool(cursor.rowcount)

    def list(self) -> list[TokenInfo]:
        """The active tokens, by name."""
        with self._read() as db:
            rows = db.execute(
                self._sql(f"SELECT {_FIELDS} FROM {{t}} WHERE subject_kind = ? AND revoked_at IS NULL ORDER BY name"),
                (SUBJECT_TOKEN,),
            ).fetchall()
        return [_info(tuple(row)) for row in rows]

    def get(self, name: str) -> TokenInfo | None:
        """The active token named ``name`` (or user or group, by subject key), if any."""
        with self._read() as db:
            row = db.execute(
                self._sql(f"SELECT {_FIELDS} FROM {{t}} WHERE subject_kind = ? AND name = ? AND revoked_at IS NULL"),
                _subject(name),
            ).fetchone()
        return None if row is None else _info(tuple(row))

    def lookup(self, token: str) -> TokenInfo | None:
        """The active token ``token`` is, if any."""
        with self._read() as db:
            row = db.execute(
                self._sql(f"SELECT {_FIELDS} FROM {{t}} WHERE token_hash = ? AND revoked_at IS NULL"),
                (token_hash(token),),
            ).fetchone()
        return None if row is None else _info(tuple(row))

    def any_active(self) -> bool:
        """Whether the store holds an active token (then the doors require one)."""
        with self._read() as db:
            row = db.execute(
                self._sql("SELECT 1 FROM {t} WHERE subject_kind = ? AND revoked_at IS NULL LIMIT 1"), (SUBJECT_TOKEN,)
            ).fetchone()
        return row is not None

    def _update(
        self, name: str, change: Callable[[TokenInfo, _Cursor], Account | T], *, active: bool
    ) -> Account | T | None:
        """Lock the token's row, apply ``change`` (which may also write the token's
        reservations through the cursor), write an ``Account`` back; in one transaction.
        ``active``: only an active token (a revoked one still settles)."""
        only = " AND revoked_at IS NULL" if active else ""
        kind, subject = _subject(name)
        with self._tx() as db:
            row = db.execute(
                self._sql(f"SELECT {_FIELDS} FROM {{t}} WHERE subject_kind = ? AND name = ?{only}{self._lock_row}"),
                (kind, subject),
            ).fetchone()
            if row is None:
                return None
            result = change(_info(tuple(row)), db)
            if isinstance(result, Account):
                db.execute(
                    self._sql(
                        "UPDATE {t} SET period_key = ?, spent_pico = ?, reserved_pico = ?, in_flight = ?, "
                        "rpm_key = ?, rpm_count = ? WHERE subject_kind = ? AND name = ?"
                    ),
                    (
                        result.period_key, result.spent_pico, result.reserved_pico, result.in_flight,
                        result.rpm_key, result.rpm_count, kind, subject,
                    ),
                )
            return result

    def _r(self, sql: str) -> str:
        return self._sql(sql.replace("{r}", self._reservations))

    def reserve(
        self, name: str, amount_pico: int, *, model: str, now: datetime.datetime, claim: Claim | None = None
    ) -> tuple[TokenInfo, Refusal | None] | None:
        """Reserve atomically; the token as it stands after, and the refusal if refused.
        None: the token no longer exists. ``claim``: the query's row in ``reservations``,
        written in the same transaction (None: no row; tests of the arithmetic)."""
        seen: list[TokenInfo] = []

        def change(info: TokenInfo, db: _Cursor) -> Account | Refusal:
            seen.append(info)
            result = reserve(info.account, info.limits, amount_pico, model=model, name=name, now=now)
            if isinstance(result, Account) and claim is not None:
                db.execute(
                    self._r(
                        "INSERT INTO {r} (reservation_id, name, session_id, query_id, instance_id, amount_pico, "
                        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    ),
                    (claim.reservation_id, name, claim.session_id, claim.query_id, claim.instance_id, amount_pico, now.isoformat()),
                )
            return result

        result = self._update(name, change, active=True)
        if result is None:
            return None
        info = seen[0]
        if isinstance(result, Refusal):
            return info, result
        return msgspec.structs.replace(info, account=result), None

    def top_up(self, name: str, amount_pico: int, now: datetime.datetime, claim: Claim | None = None) -> Refusal | None:
        """Grow a query's reservation by ``amount_pico`` atomically (protocol.budget.top_up);
        the refusal if it does not fit. A token gone meanwhile (revoked) refuses too, and so
        does a reservation already released (its instance was taken for dead)."""

        def change(info: TokenInfo, db: _Cursor) -> Account | Refusal:
            result = top_up(info.account, info.limits, amount_pico, name=name, now=now)
            if isinstance(result, Account) and claim is not None:
                cursor = db.execute(
                    self._r("UPDATE {r} SET amount_pico = amount_pico + ? WHERE reservation_id = ?"),
                    (amount_pico, claim.reservation_id),
                )
                if not cursor.rowcount:
                    return Refusal(kind="budget", message=f"token {name}: the query's reservation was released", retry_after_s=None)
            return result

        result = self._update(name, change, active=True)
        if result is None:
            return Refusal(kind="revoked", message=f"token {name} was revoked", retry_after_s=None)
        return result if isinstance(result, Refusal) else None

    def settle(
        self, name: str, reserved_pico: int, actual_pico: int, now: datetime.datetime, claim: Claim | None = None
    ) -> TokenInfo | None:
        """Settle one query's reservation to its real cost, atomically, deleting its row.
        A row already gone (its instance was taken for dead and its reservation released,
        ``release_dead``): nothing is released again, and ``actual_pico`` is still spent (a
        spend counted twice rather than not at all)."""
        seen: list[TokenInfo] = []

        def change(info: TokenInfo, db: _Cursor) -> Account:
            seen.append(info)
            held = True
            if claim is not None:
                held = bool(db.execute(self._r("DELETE FROM {r} WHERE reservation_id = ?"), (claim.reservation_id,)).rowcount)
            return settle(info.account, info.limits, reserved_pico if held else 0, actual_pico, now, ends_query=held)

        result = self._update(name, change, active=False)
        if result is None or not isinstance(result, Account):
            return None
        return msgspec.structs.replace(seen[0], account=result)

    def _dead_rows(self, db: _Cursor, instance_id: str, now: datetime.datetime) -> builtins.list[tuple[Any, ...]]:
        """The reservations of dead instances (the subclass says which are)."""
        raise NotImplementedError

    def _spent_by(self, db: _Cursor, session_id: str, query_id: str) -> int:
        """What the ledger's usage records of the query cost (provisional ones included)."""
        rows = db.execute(
            self._sql(f"SELECT cost_pico FROM {self._usage} WHERE session_id = ? AND query_id = ?"), (session_id, query_id)
        ).fetchall()
        return sum(int(row[0]) for row in rows)

    def release_dead(self, instance_id: str, now: datetime.datetime) -> int:
        """Release the reservations of dead instances (``_dead_rows``), each settled to what
        the ledger recorded for its query; how many. Each in a transaction of its own that
        locks the token's row first (as ``reserve`` and ``settle`` do) and deletes the
        reservation: one released by another instance meanwhile is skipped."""
        with self._tx() as db:
            rows = self._dead_rows(db, instance_id, now)
        released = 0
        for reservation_id, name, session_id, query_id, amount in rows:

            def change(info: TokenInfo, db: _Cursor, rid: object = reservation_id, sid: object = session_id,
                       qid: object = query_id, amount: object = amount) -> Account | None:
                if not db.execute(self._r("DELETE FROM {r} WHERE reservation_id = ?"), (rid,)).rowcount:
                    return None
                spent = self._spent_by(db, str(sid), str(qid))
                return settle(info.account, info.limits, int(str(amount)), spent, now)

            if isinstance(self._update(str(name), change, active=False), Account):
                released += 1
            else:
                with self._tx() as db:
                    # The token's row is gone: the reservation has nothing to release.
                    db.execute(self._r("DELETE FROM {r} WHERE reservation_id = ?"), (reservation_id,))
        return released

    def heartbeat(self, instance_id: str, now: datetime.datetime) -> None:
        """Say the instance is alive (PostgreSQL: ``instances.last_seen_at``); SQLite: nothing."""


class SqliteTokenStore(TokenStore):
    """The ``limits`` table of an SQLite ledger, on a connection of its own."""

    reads_in_place = True

    def __init__(self, db: sqlite3.Connection, reader: sqlite3.Connection | None = None) -> None:
        self._db = db
        # Reads go through a connection of their own, so that one never runs inside a
        # write transaction of another thread; each read is one statement (atomic).
        self._reader = reader if reader is not None else db

    @contextmanager
    def _read(self) -> Iterator[_Cursor]:
        yield cast(_Cursor, self._reader)

    @classmethod
    def open(cls, path: str) -> SqliteTokenStore:
        """Open the ledger at ``path`` for its tokens; a ledger without the table (new, or
        of an older schema) is first brought up to date by opening it as the ledger does
        (which fails while a gateway of an older version holds it).

        Raises ConfigError when the file cannot be opened or migrated."""
        if path == MEMORY:
            db = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
            db.executescript(_LIMITS_SCHEMA)
            return cls(db)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            present = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reservations'").fetchone()
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the cost ledger {path!r}: {exc}") from exc
        if present is None:
            db.close()
            LedgerStore.open(path).close()
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return cls(db, reader)

    def _dead_rows(self, db: _Cursor, instance_id: str, now: datetime.datetime) -> builtins.list[tuple[Any, ...]]:
        # One gateway process holds an SQLite ledger (its lock, actors/store/sqlite.py): at its
        # start, every reservation left is of a process that died. (The workers of ``serve
        # --workers N`` share one: actors/store/sqlite_shared.py, ``SharedSqliteTokenStore``.)
        rows = db.execute(self._r("SELECT reservation_id, name, session_id, query_id, amount_pico FROM {r}")).fetchall()
        return [tuple(row) for row in rows]

    @contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield cast(_Cursor, db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._reader is not self._db:
            self._reader.close()
        self._db.close()


class PgTokenStore(TokenStore):
    """The ``switchboard.limits`` table of a PostgreSQL ledger, on one connection."""

    _table = "switchboard.limits"
    _reservations = "switchboard.reservations"
    _usage = "switchboard.usage"
    _lock_row = " FOR UPDATE"
    shared = True

    def _dead_rows(self, db: _Cursor, instance_id: str, now: datetime.datetime) -> builtins.list[tuple[Any, ...]]:
        # Dead: this instance's own earlier rows (none: its id is new at each start), those of
        # an instance silent for SILENT_AFTER, and those older than it of an instance the
        # ledger does not know.
        cutoff = now - SILENT_AFTER
        rows = db.execute(
            self._r(
                "SELECT reservation_id, name, session_id, query_id, amount_pico FROM {r} AS r "
                "WHERE r.instance_id = ? OR r.instance_id IN ("
                "SELECT instance_id FROM switchboard.instances WHERE last_seen_at < ?) "
                "OR (r.created_at < ? AND NOT EXISTS ("
                "SELECT 1 FROM switchboard.instances AS i WHERE i.instance_id = r.instance_id))"
            ),
            (instance_id, cutoff, cutoff.isoformat()),
        ).fetchall()
        return [tuple(row) for row in rows]

    def heartbeat(self, instance_id: str, now: datetime.datetime) -> None:
        with self._tx() as db:
            db.execute(
                self._sql("UPDATE switchboard.instances SET last_seen_at = ? WHERE instance_id = ?"), (now, instance_id)
            )

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: Any = None

    def _sql(self, sql: str) -> str:
        return super()._sql(sql).replace("?", "%s")

    @classmethod
    def open(cls, url: str) -> PgTokenStore:
        """Connect, applying the ledger's migrations the database lacks.

        Raises ConfigError when the server cannot be used."""
        import psycopg

        from actors.config.settings import redact_url
        from actors.store.pg_migrations import migrate
        from actors.store.postgres import conninfo, message

        store = cls(url)
        try:
            with psycopg.connect(conninfo(url), autocommit=True) as conn:
                migrate(conn, redact_url(url))
            store._connect()
        except psycopg.Error as exc:
            raise ConfigError(f"cannot use the cost ledger {redact_url(url)}: {message(exc)}") from exc
        return store

    def _connect(self) -> Any:
        import psycopg

        from actors.store.postgres import conninfo

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(conninfo(self._url), autocommit=True)
            self._conn.execute("SET statement_timeout = '10s'")
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        import psycopg

        from actors.store.postgres import message

        try:
            conn = self._connect()
            with conn.transaction():
                yield cast(_Cursor, conn)
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.broken:
                self._conn = None
            raise StoreError(message(exc)) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()




def open_token_store(location: str) -> TokenStore:
    """The token store of the ledger at ``location`` (an SQLite path or a PostgreSQL URL).
    An SQLite file shared by the workers of ``serve --workers N`` has its own
    (``actors.store.sqlite_shared.SharedSqliteTokenStore``)."""
    if is_postgres_url(location):
        from actors.store.sqlite import require_psycopg

        require_psycopg()
        return PgTokenStore.open(location)
    return SqliteTokenStore.open(location)
