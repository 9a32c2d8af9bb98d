"""The users and sign-in tokens of a PostgreSQL ledger (``PgIdentityStore``; the
``IdentityStore`` it builds on, actors/access/identities.py, says what it does), on one
connection, reopened after a failure. Every gateway on the ledger shares them: a token one
issued resolves at any other, a refresh token rotates once whichever is presented it (its
row locked ``FOR UPDATE``), and a disabled user is refused by all at their next request.
psycopg is imported only when it is opened (the optional ``postgres`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from actors.access.identities import IdentityStore, _Cursor
from actors.store.rows import StoreError
from protocol.errors import ConfigError


class PgIdentityStore(IdentityStore):
    """The ``switchboard.users`` and ``switchboard.oauth_tokens`` tables, on one connection."""

    _users = "switchboard.users"
    _tokens = "switchboard.oauth_tokens"
    _lock_row = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: Any = None
        # ``resolve``'s reads (one at every bearer request) on a connection of their own, so
        # that none waits behind a sign-in's transaction.
        self._reader: Any = None

    def _sql(self, sql: str) -> str:
        return super()._sql(sql).replace("?", "%s")

    @classmethod
    def open(cls, url: str) -> PgIdentityStore:
        """Connect, applying the ledger's migrations the database lacks.

        Raises ConfigError when the server cannot be used."""
        import psycopg

        from actors.config.settings import redact_url
        from actors.store.pg_connect import conninfo, message
        from actors.store.pg_migrations import migrate

        store = cls(url)
        try:
            with psycopg.connect(conninfo(url), autocommit=True) as conn:
                migrate(conn, redact_url(url))
            store._conn = store._connect(None)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot open the users of the ledger {redact_url(url)}: {message(exc)}") from exc
        return store

    def _connect(self, conn: Any) -> Any:
        """``conn``, or a new connection when it is None or closed."""
        import psycopg

        from actors.store.pg_connect import conninfo

        if conn is None or conn.closed:
            conn = psycopg.connect(conninfo(self._url), autocommit=True)
            conn.execute("SET statement_timeout = '10s'")
        return conn

    @contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        import psycopg

        from actors.store.pg_connect import message

        try:
            self._conn = self._connect(self._conn)
            with self._conn.transaction():
                yield cast(_Cursor, self._conn)
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.broken:
                self._conn = None
            raise StoreError(message(exc)) from exc

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        import psycopg

        from actors.store.pg_connect import message

        try:
            self._reader = self._connect(self._reader)
            return [tuple(row) for row in self._reader.execute(self._sql(sql), params).fetchall()]
        except psycopg.Error as exc:
            if self._reader is not None and self._reader.broken:
                self._reader = None
            raise StoreError(message(exc)) from exc

    def close(self) -> None:
        for conn in (self._conn, self._reader):
            if conn is not None:
                conn.close()
