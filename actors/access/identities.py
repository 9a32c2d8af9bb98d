"""The users the gateway signs in, and the tokens it issued them (README.md "Claude Code for
a whole organisation"; docs/protocol.md "Sign-in"), kept in the cost ledger (``users`` and
``oauth_tokens``: ``actors.store.tables.USERS_TABLE``, ``OAUTH_TOKENS_TABLE``; in PostgreSQL
migration 7 of ``actors.store.pg_migrations``, so every gateway on one PostgreSQL ledger shares
the users and accepts the tokens any of them issued). This module holds what both stores share
(``IdentityStore``) and the SQLite one; the PostgreSQL one: actors/access/pg_identities.py;
``open_identity_store`` picks one by the ledger's location (actors/access/identity_stores.py).

Synchronous, as the ledger's stores: the gateway calls the writes from a worker thread, one
at a time (``actors.doors.oauth``), and ``resolve`` in place (one indexed read on a read-only
connection of its own: in WAL mode a reader never waits for the writer); ``switchboard
users`` calls it directly, also beside a running gateway, which sees a change at the next
request (PostgreSQL: one connection, reopened after a failure).

Passwords are kept only as argon2id hashes (argon2-cffi's defaults: ``hash_password``).
Tokens are kept only as their SHA-256: each holds 256 random bits, so no guess can hit its
hash, and a fast hash lets every request be checked with one lookup (as
``actors.store.tokens``'s).

Tokens (one sign-in is a ``family``): the device grant issues an access token and a refresh
token. A refresh rotates: the refresh token presented is marked used and a new pair of the
same family is issued, in one transaction. A refresh token presented a second time is taken
for stolen (RFC 9700 4.14.2): the whole family is revoked. Disabling a user revokes every
token they hold, and a disabled user's tokens never resolve (each lookup joins the user).
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, Protocol, cast

import argon2
import msgspec

from actors.store.sqlite import BUSY_TIMEOUT_MS, MEMORY, LedgerStore
from actors.store.sqlite_tx import immediate
from actors.store.tables import IDENTITY_SCHEMA
from protocol.errors import ConfigError
from protocol.identity import Principal
from protocol.oauth import ACCESS_TOKEN_TTL, REFRESH_TOKEN_TTL, access_token_text

REFRESH_PREFIX: Final = "sbr-"
# 32 random bytes: 256 bits, for every token and device code.
TOKEN_BYTES: Final = 32
ACCESS: Final = "access"
REFRESH: Final = "refresh"
# A user's and a group's name: printable, no commas (groups are kept comma-joined).
MAX_NAME_CHARS: Final = 64

_REVOKE_FAMILY: Final = "UPDATE {tokens} SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL"

_HASHER: Final = argon2.PasswordHasher()
# Verified when the user does not exist, so that a wrong name costs what a wrong password does.
_DUMMY_HASH: Final = _HASHER.hash(secrets.token_urlsafe(16))


class UserInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A user as ``switchboard users list`` shows them (never the password's hash)."""

    name: str
    groups: tuple[str, ...]
    created_at: str
    disabled_at: str | None = None


class Issued(msgspec.Struct, frozen=True, kw_only=True):
    """What a sign-in or a refresh hands the client."""

    access_token: str
    refresh_token: str
    expires_in: int


def hash_password(password: str) -> str:
    """The argon2id hash kept for ``password``."""
    return _HASHER.hash(password)


def check_name(name: str, what: str = "user") -> str:
    """``name`` when it can name a user or group. Raises ConfigError."""
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable() or "," in name or name != name.strip():
        raise ConfigError(f"a {what} name is 1 to {MAX_NAME_CHARS} printable characters without commas: {name!r}")
    return name


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _groups(text: str) -> tuple[str, ...]:
    return tuple(g for g in text.split(",") if g)


class _Cursor(Protocol):
    def execute(self, sql: str, params: tuple[object, ...] = ...) -> Any: ...


class IdentityStore:
    """The ``users`` and ``oauth_tokens`` tables of one ledger. Subclasses give the connection,
    transactions and table names: ``SqliteIdentityStore`` (below), ``PgIdentityStore``
    (actors/access/pg_identities.py); ``actors.access.identity_stores.open_identity_store``
    picks one by the location."""

    _users: str = "users"
    _tokens: str = "oauth_tokens"
    _lock_row: str = ""
    # Whether ``resolve`` may run in the caller's thread (its read never waits: SQLite's WAL);
    # else the gateway calls it from a worker thread too (``actors.doors.oauth``).
    reads_in_place: bool = False

    def _sql(self, sql: str) -> str:
        return sql.format(users=self._users, tokens=self._tokens)

    def _tx(self) -> AbstractContextManager[_Cursor]:
        raise NotImplementedError

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """The rows of one read statement (atomic on its own)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # Users (``switchboard users``).

    def add_user(self, name: str, password_hash: str, groups: tuple[str, ...], now: datetime.datetime) -> None:
        """Raises ConfigError when a user of that name exists (also a disabled one)."""
        check_name(name)
        for group in groups:
            check_name(group, "group")
        # ON CONFLICT: two adding one name at once (two ``switchboard users`` on one
        # PostgreSQL ledger) get one user and one clear error, never a failed statement.
        with self._tx() as db:
            added = db.execute(
                self._sql(
                    "INSERT INTO {users} (name, password_hash, groups, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                (name, password_hash, ",".join(groups), now.isoformat()),
            ).rowcount
        if not added:
            raise ConfigError(f"a user named {name!r} exists already")

    def users(self) -> list[UserInfo]:
        """Every user, by name (the disabled ones too)."""
        rows = self._read("SELECT name, groups, created_at, disabled_at FROM {users} ORDER BY name", ())
        return [UserInfo(name=n, groups=_groups(g), created_at=c, disabled_at=d) for n, g, c, d in rows]

    def set_groups(self, name: str, groups: tuple[str, ...]) -> bool:
        """Replace a user's groups (their tokens name the new ones at once); False: no such user."""
        for group in groups:
            check_name(group, "group")
        with self._tx() as db:
            return bool(db.execute(self._sql("UPDATE {users} SET groups = ? WHERE name = ?"), (",".join(groups), name)).rowcount)

    def disable(self, name: str, now: datetime.datetime) -> bool:
        """Disable a user and revoke every token they hold; False: no such enabled user."""
        stamp = now.isoformat()
        with self._tx() as db:
            changed = db.execute(
                self._sql("UPDATE {users} SET disabled_at = ? WHERE name = ? AND disabled_at IS NULL"), (stamp, name)
            ).rowcount
            db.execute(
                self._sql("UPDATE {tokens} SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL"), (stamp, name)
            )
        return bool(changed)

    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is the enabled user ``name``'s (slow on purpose: argon2id)."""
        rows = self._read("SELECT password_hash FROM {users} WHERE name = ? AND disabled_at IS NULL", (name,))
        try:
            return _HASHER.verify(rows[0][0] if rows else _DUMMY_HASH, password) and bool(rows)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False

    # Tokens (``actors.doors.oauth``; ``resolve`` at every bearer request).

    def issue(self, user: str, now: datetime.datetime, family: str | None = None) -> Issued | None:
        """A new access and refresh token for the enabled ``user``; None when they are not one."""
        with self._tx() as db:
            return self._issue(db, user, now, family or secrets.token_hex(16))

    def _issue(self, db: _Cursor, user: str, now: datetime.datetime, family: str) -> Issued | None:
        if db.execute(self._sql("SELECT 1 FROM {users} WHERE name = ? AND disabled_at IS NULL"), (user,)).fetchone() is None:
            return None
        at = int(now.timestamp())
        access = access_token_text(user=user, issued_at=at, expires_at=at + ACCESS_TOKEN_TTL, jti=secrets.token_bytes(TOKEN_BYTES))
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        insert = self._sql(
            "INSERT INTO {tokens} (token_hash, kind, user_name, family, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)"
        )
        db.execute(insert, (token_hash(access), ACCESS, user, family, at + ACCESS_TOKEN_TTL, now.isoformat()))
        db.execute(insert, (token_hash(refresh), REFRESH, user, family, at + REFRESH_TOKEN_TTL, now.isoformat()))
        return Issued(access_token=access, refresh_token=refresh, expires_in=ACCESS_TOKEN_TTL)

    def rotate(self, refresh_token: str, now: datetime.datetime) -> Issued | None:
        """A new pair for a valid refresh token, which is used up; None (``invalid_grant``)
        otherwise. One used before revokes its whole family (reuse detection). The token's
        row is locked to the commit (PostgreSQL: ``FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``),
        so two gateways presented the same refresh token at once rotate it only once."""
        stamp = now.isoformat()
        with self._tx() as db:
            row = db.execute(
                self._sql(
                    "SELECT user_name, family, expires_at, used_at, revoked_at FROM {tokens} "
                    "WHERE token_hash = ? AND kind = ?" + self._lock_row
                ),
                (token_hash(refresh_token), REFRESH),
            ).fetchone()
            if row is None:
                return None
            user, family, expires_at, used_at, revoked_at = row
            if used_at is not None:
                db.execute(self._sql(_REVOKE_FAMILY), (stamp, family))
                return None
            if revoked_at is not None or int(expires_at) <= now.timestamp():
                return None
            db.execute(self._sql("UPDATE {tokens} SET used_at = ? WHERE token_hash = ?"), (stamp, token_hash(refresh_token)))
            return self._issue(db, str(user), now, str(family))

    def revoke(self, token: str, now: datetime.datetime) -> None:
        """Revoke the sign-in ``token`` belongs to (RFC 7009: an unknown token is no error)."""
        with self._tx() as db:
            row = db.execute(self._sql("SELECT family FROM {tokens} WHERE token_hash = ?"), (token_hash(token),)).fetchone()
            if row is not None:
                db.execute(self._sql(_REVOKE_FAMILY), (now.isoformat(), row[0]))

    def resolve(self, access_token: str, now: datetime.datetime) -> Principal | None:
        """The enabled user a live access token was issued to, with their groups now."""
        rows = self._read(
            "SELECT u.name, u.groups FROM {tokens} AS t JOIN {users} AS u ON u.name = t.user_name "
            "WHERE t.token_hash = ? AND t.kind = ? AND t.revoked_at IS NULL AND t.expires_at > ? "
            "AND u.disabled_at IS NULL",
            (token_hash(access_token), ACCESS, int(now.timestamp())),
        )
        return Principal(user=str(rows[0][0]), groups=_groups(str(rows[0][1]))) if rows else None

class SqliteIdentityStore(IdentityStore):
    """The ``users`` and ``oauth_tokens`` tables of one SQLite ledger (or of memory)."""

    reads_in_place = True

    def __init__(self, db: sqlite3.Connection, reader: sqlite3.Connection | None = None) -> None:
        self._db = db
        self._reader = reader if reader is not None else db

    @classmethod
    def open(cls, path: str) -> SqliteIdentityStore:
        """Open the ledger at ``path`` (``:memory:``: a store of its own); a ledger of an
        older schema is first brought up to date as the ledger does. Raises ConfigError."""
        if path == MEMORY:
            db = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
            db.executescript(IDENTITY_SCHEMA)
            return cls(db)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            present = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'oauth_tokens'").fetchone()
            if present is None:
                db.close()
                LedgerStore.open(path).close()
                db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the users of the ledger {path!r}: {exc}") from exc
        return cls(db, reader)

    def close(self) -> None:
        if self._reader is not self._db:
            self._reader.close()
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        with immediate(self._db) as db:
            yield cast(_Cursor, db)

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._reader.execute(self._sql(sql), params).fetchall()]

