"""The tables both stores create alike (the SQLite schema, actors/store/sqlite_schema.py, and
the PostgreSQL migrations, actors/store/pg_migrations.py): access tokens and their limits,
reservations, signed-in users and the tokens issued to them. ``{table}`` is the table's name.
"""

from __future__ import annotations

from typing import Final

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
