"""The token store of a PostgreSQL ledger (``PgTokenStore``; the ``TokenStore`` it builds on,
actors/store/tokens.py, says what a token store does), on one connection, reopened after a
failure. psycopg is imported only when it is opened (the optional ``postgres`` extra).
"""

from __future__ import annotations

import builtins
import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from actors.store.rows import StoreError
from actors.store.tokens import SILENT_AFTER, TokenStore, _Cursor
from protocol.errors import ConfigError


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
        from actors.store.pg_connect import conninfo, message
        from actors.store.pg_migrations import migrate

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

        from actors.store.pg_connect import conninfo

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(conninfo(self._url), autocommit=True)
            self._conn.execute("SET statement_timeout = '10s'")
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        import psycopg

        from actors.store.pg_connect import message

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

