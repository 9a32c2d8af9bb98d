"""The SQLite ledger's schema: its tables, version and migrations (``LedgerStore.open``,
actors/store/sqlite.py, runs them).

Schema (version 6, ``SCHEMA_VERSION``, kept in ``PRAGMA user_version``)::

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

Schema 3 adds ``limits`` (``LIMITS_TABLE``; the tables shared with PostgreSQL are in
actors/store/tables.py): access tokens (a SHA-256 of the token, never the
token) with their budgets and counters (actors/store/tokens.py). Schema 4 adds
``reservations`` (``RESERVATIONS_TABLE``): each running query's reservation. Schema 5 adds
the signed-in users (``USERS_TABLE``) and the tokens issued to them (``OAUTH_TOKENS_TABLE``;
actors/access/identities.py).

Migrations (``_MIGRATIONS``, run by ``LedgerStore.open`` in one transaction on a file of
an older version): 1 -> 2 adds ``usage.estimated`` (default 0: every older record holds
the upstream's own counts); 2 -> 3 adds the ``limits`` table; 3 -> 4 the ``reservations`` table; 4 -> 5 ``users`` and ``oauth_tokens``; 5 -> 6 adds ``sessions.user_name``. ``read_sessions``
(actors/store/stores.py) reads an older file as it is (read-only): without the column, nothing is estimated.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Final

from actors.store.tables import IDENTITY_SCHEMA, LIMITS_TABLE, RESERVATIONS_TABLE

SCHEMA_VERSION: Final = 6
# Schema 6's column: the signed-in user a session belongs to (protocol/identity.py).
USER_COLUMN: Final = "user_name"

log = logging.getLogger("switchboard.ledger")

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
# Schema 2's column (see the module docstring, "Migrations").
_ESTIMATED: Final = "estimated"
# Schema migrations: the statements that take a file from version ``n - 1`` to ``n``.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    2: (f"ALTER TABLE usage ADD COLUMN {_ESTIMATED} INTEGER NOT NULL DEFAULT 0",),
    3: (LIMITS_TABLE.format(table="limits"),),
    4: (RESERVATIONS_TABLE.format(table="reservations"),),
    5: tuple(statement for statement in IDENTITY_SCHEMA.split(";") if statement.strip()),
    6: (f"ALTER TABLE sessions ADD COLUMN {USER_COLUMN} TEXT",),
}


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

