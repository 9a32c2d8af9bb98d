"""The token store of an SQLite ledger (``SqliteTokenStore``; the ``TokenStore`` it builds on,
actors/store/tokens.py, says what a token store does), on a connection of its own to the file.
"""

from __future__ import annotations

import builtins
import datetime
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, cast

from actors.store.sqlite import BUSY_TIMEOUT_MS, MEMORY, LedgerStore
from actors.store.sqlite_tx import immediate
from actors.store.tables import LIMITS_TABLE, RESERVATIONS_TABLE
from actors.store.tokens import TokenStore, _Cursor
from protocol.errors import ConfigError

_LIMITS_SCHEMA: Final = (
    LIMITS_TABLE.format(table="limits") + ";" + RESERVATIONS_TABLE.format(table="reservations") + ";"
    # The usage records' columns a released reservation reads (an in-memory store has no ledger).
    + "CREATE TABLE IF NOT EXISTS usage (session_id TEXT, query_id TEXT, cost_pico INTEGER);"
)


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
        with immediate(self._db) as db:
            yield cast(_Cursor, db)

    def close(self) -> None:
        if self._reader is not self._db:
            self._reader.close()
        self._db.close()

