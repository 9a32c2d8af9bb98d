"""Which store a ledger location names: ``open_store`` opens the PostgreSQL store for a
PostgreSQL URL (``actors.store.postgres``, imported only then: psycopg is the optional
``postgres`` extra) and the SQLite ``LedgerStore`` otherwise; ``read_sessions`` reads either for
``switchboard cost``, a SQLite file read-only, also while a gateway is writing it;
``open_token_store`` opens the ledger's token store (actors/store/tokens.py) the same way.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sqlite3

from actors.config.settings import is_postgres_url
from actors.store.pg_tokens import PgTokenStore
from actors.store.rows import Store
from actors.store.sqlite import BUSY_TIMEOUT_MS, MEMORY, LedgerStore, _totals
from actors.store.sqlite_schema import _ESTIMATED, has_column
from actors.store.sqlite_tokens import SqliteTokenStore
from actors.store.tokens import TokenStore
from protocol.errors import ConfigError
from protocol.ledger import SessionTotals


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



def read_sessions(path: str, session_id: str | None = None) -> list[tuple[str, SessionTotals]]:
    """Every session's totals (or only ``session_id``'s), oldest first, from a ledger file
    opened read-only (or a PostgreSQL ledger, read in one read-only snapshot). An unknown
    ``session_id`` gives an empty list.

    Raises:
        ConfigError: no ledger at ``path``, or it cannot be read.
    """
    if is_postgres_url(path):
        require_psycopg()
        from actors.store.pg_totals import read_pg_sessions

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


def open_token_store(location: str) -> TokenStore:
    """The token store of the ledger at ``location`` (an SQLite path or a PostgreSQL URL).
    An SQLite file shared by the workers of ``serve --workers N`` has its own
    (``actors.store.sqlite_shared.SharedSqliteTokenStore``)."""
    if is_postgres_url(location):
        require_psycopg()
        return PgTokenStore.open(location)
    return SqliteTokenStore.open(location)
