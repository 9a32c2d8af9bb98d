"""The PostgreSQL cost ledger's schema, as numbered migrations, and how they are applied.

``MIGRATIONS`` is append-only: a released migration is never edited, a change is a new
entry with the next number. ``migrate`` applies those a database lacks, at start, in ONE
transaction that first takes a transaction-scoped advisory lock (``MIGRATION_LOCK``), so two
gateways starting at once on an empty database do not both create the tables: the second
waits, then finds every migration applied. The version table
``switchboard.schema_migrations`` says which are. A database whose schema is newer than
this program knows is refused (``ConfigError``): an older gateway must not write a schema it
does not understand.

Everything lives in the schema ``switchboard``, so the ledger can share a database with
other applications. Design for several processes (README.md, "Deployment"):

- ``usage``: one row per usage record part, keyed ``(session_id, record_id, part)``; the
  record id names the query, its attempt and the upstream message
  (``{query_id}:{attempt}:{uuid}``, ``actors.upstream.relay_attempt``), so a retried write finds its
  own row and never adds a second one. ``instance_id`` says which process wrote it.
  Totals are DERIVED from these rows (``SUM``), never kept as a running figure: two
  processes recording to one session each add their own rows, and the sums are right
  whatever the interleaving; a provisional row moves to final by ``ON CONFLICT DO UPDATE
  ... WHERE NOT final``, so a final row is never overwritten.
  ``estimated`` (migration 2): the part's ``output_tokens`` is the gateway's estimate (a
  stream cut short, protocol/estimate.py); a session's estimated figures are the sums over
  those rows (``actors.store.postgres``), as in the SQLite store.
- ``session_durations``: each process's own share of a session's API durations, one row
  per (session, instance), written as an absolute value (a retry is harmless); a session's
  durations are the sum over its rows.
- ``sessions``: the owner (a digest of the access token) and ``owner_instance``, the process
  that last wrote the session (the one serving it; not yet enforced: the scale-out work
  coordinates it).
- ``instances``: each process that opened the ledger (hostname, pid, start, last commit).
- ``session_claims`` (a sequence): the epoch of each WebSocket connection's claim of its
  session, ordering takeovers across instances (``actors.store.pg_fleet``).
- ``gates``: each model's overload gate as the instances share it (``actors.store.pg_fleet``): open,
  its failures, which instance holds the probe since when, when the next probe is due. Rows
  change only by single conditional statements (atomic, no lock held across a round trip).
- ``limits`` (migration 4): access tokens and their budgets, as in SQLite
  (``actors.store.tables.LIMITS_TABLE``, ``actors.store.tokens``). Unlike usage totals, a
  budget's ``spent_pico`` and ``reserved_pico`` ARE running figures: the reservation must
  be decided on one locked row (``SELECT ... FOR UPDATE``), which a sum cannot be.
- ``reservations`` (migration 5): each running query's reservation, by instance
  (``actors.store.tables.RESERVATIONS_TABLE``); the limits row's ``reserved_pico`` and
  ``in_flight`` are kept equal to their sums. The rows of an instance whose ``last_seen_at``
  is older than ``actors.store.tokens.SILENT_AFTER`` are released by a live one.
- ``sessions.user_name`` (migration 6): the signed-in user the session's token was issued
  to (README.md "Claude Code for a whole organisation"), as in SQLite.
- ``users`` and ``oauth_tokens`` (migration 7): the signed-in users and the tokens issued
  to them, as in SQLite (``actors.store.tables.USERS_TABLE``, ``OAUTH_TOKENS_TABLE``;
  ``actors.access.identities``), shared by every instance.
- ``instances.last_seen_at``: refreshed at each commit of usage and every
  ``actors.access.budgets.INSTANCE_HEARTBEAT`` seconds by the budgets' heartbeat.
"""

from __future__ import annotations

from typing import Final

import psycopg
from psycopg.rows import TupleRow

from actors.store.tables import LIMITS_TABLE, OAUTH_TOKENS_TABLE, RESERVATIONS_TABLE, USERS_TABLE
from protocol.errors import ConfigError

# pg_advisory_xact_lock's key: "SWLEDGER" in ASCII, so it is recognisable in pg_locks.
MIGRATION_LOCK: Final = 0x5357_4C45_4447_4552

_COUNT_COLUMNS: Final = """
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_creation_input_tokens BIGINT NOT NULL,
    cache_creation_1h_input_tokens BIGINT NOT NULL,
    cache_read_input_tokens BIGINT NOT NULL,
    web_search_requests BIGINT NOT NULL,
    web_fetch_requests BIGINT NOT NULL,
    cost_pico BIGINT NOT NULL,"""

# (version, description, SQL). Append only.
MIGRATIONS: Final[tuple[tuple[int, str, str], ...]] = (
    (
        1,
        "sessions, usage records, per-instance durations, instances",
        f"""
CREATE TABLE switchboard.instances (
    instance_id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE switchboard.sessions (
    id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    session_id TEXT PRIMARY KEY,
    owner TEXT,
    owner_instance TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE switchboard.session_durations (
    session_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    api_duration_ms BIGINT NOT NULL,
    api_duration_without_retries_ms BIGINT NOT NULL,
    PRIMARY KEY (session_id, instance_id)
);
CREATE TABLE switchboard.usage (
    id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    session_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    part INTEGER NOT NULL,
    instance_id TEXT NOT NULL,
    query_id TEXT,
    attempt INTEGER,
    final BOOLEAN NOT NULL,
    model TEXT NOT NULL,
    canonical TEXT NOT NULL,{_COUNT_COLUMNS}
    unknown_model BOOLEAN NOT NULL,
    speed TEXT,
    service_tier TEXT,
    long_context BOOLEAN NOT NULL,
    priced_on DATE NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, record_id, part)
);
CREATE INDEX usage_provisional ON switchboard.usage (session_id) WHERE NOT final;
""",
    ),
    (
        2,
        "usage.estimated: the part's output count is the gateway's estimate",
        # Every row before it holds the upstream's own counts. A constant default: PostgreSQL
        # adds the column without rewriting the table.
        "ALTER TABLE switchboard.usage ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT false",
    ),
    (
        3,
        "session claims across instances, overload gates shared by the instances",
        """
CREATE SEQUENCE switchboard.session_claims;
CREATE TABLE switchboard.gates (
    model TEXT PRIMARY KEY,
    open BOOLEAN NOT NULL,
    failures INTEGER NOT NULL,
    probe_instance TEXT,
    probe_started_at TIMESTAMPTZ,
    next_probe_at TIMESTAMPTZ NOT NULL
);
""",
    ),
    (
        4,
        "access tokens with their limits and budget counters",
        LIMITS_TABLE.format(table="switchboard.limits"),
    ),
    (
        5,
        "each running query's budget reservation, released when its instance falls silent",
        RESERVATIONS_TABLE.format(table="switchboard.reservations"),
    ),
    (
        6,
        "the signed-in user each session belongs to",
        "ALTER TABLE switchboard.sessions ADD COLUMN user_name TEXT",
    ),
    (
        7,
        "the users who sign in and the tokens issued to them",
        USERS_TABLE.format(table="switchboard.users")
        + ";"
        + OAUTH_TOKENS_TABLE.format(table="switchboard.oauth_tokens")
        + ";CREATE INDEX oauth_tokens_user ON switchboard.oauth_tokens (user_name);"
        + "CREATE INDEX oauth_tokens_family ON switchboard.oauth_tokens (family);",
    ),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]

_BOOTSTRAP: Final = """
CREATE SCHEMA IF NOT EXISTS switchboard;
CREATE TABLE IF NOT EXISTS switchboard.schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


def current_version(conn: psycopg.Connection[TupleRow]) -> int | None:
    """The schema version the database holds; None when it holds no ledger at all."""
    found = conn.execute("SELECT to_regclass('switchboard.schema_migrations')").fetchone()
    if found is None or found[0] is None:
        return None
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM switchboard.schema_migrations").fetchone()
    return int(str(row[0])) if row is not None else 0


def migrate(conn: psycopg.Connection[TupleRow], where: str) -> list[int]:
    """Apply the migrations the database lacks, in one transaction under ``MIGRATION_LOCK``;
    returns the versions applied. ``where``: the ledger's URL without its password, for
    messages. ``conn`` must be in autocommit mode (the transaction is this function's).

    Raises:
        ConfigError: the database's schema is newer than ``SCHEMA_VERSION``.
        psycopg.Error: the database refused (the caller says so).
    """
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        version = current_version(conn)
        if version is None:
            conn.execute(_BOOTSTRAP)
            version = 0
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"the cost ledger {where} has schema {version}; this switchboard knows "
                f"{SCHEMA_VERSION} (upgrade switchboard)"
            )
        for number, description, statements in MIGRATIONS:
            if number <= version:
                continue
            conn.execute(statements.encode())
            conn.execute(
                "INSERT INTO switchboard.schema_migrations (version, description) VALUES (%s, %s)",
                (number, description),
            )
            applied.append(number)
    return applied
