"""``switchboard ledger migrate --from PATH.sqlite3 --to postgresql://...``: copy an SQLite cost
ledger into a PostgreSQL one (README.md, "Deployment").

The SQLite file is opened read-only (a gateway may still be running on it); the PostgreSQL
schema is migrated first (``actors.store.pg_migrations``). Sessions are copied ``CHUNK`` at a
time, each chunk in one transaction, with the rules of the PostgreSQL store's own writes:
a usage part is keyed by session, record id and part, a row already final is never
changed, and a session's durations are the share of one instance, ``MIGRATED_INSTANCE``
(written as absolute values). So the copy is idempotent: running it again changes nothing,
and running it after the SQLite gateway recorded more copies only what is new (a
provisional record that became final is moved forward). A session that already exists in
PostgreSQL keeps its owner and creation time. Each usage part's ``estimated`` flag is copied;
a file of schema 1 (from before the flag: ``actors.store.sqlite_schema``) has nothing estimated.
"""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Iterator
from typing import Final

import msgspec
import psycopg
from psycopg.rows import TupleRow

from actors.config.settings import redact_url
from actors.store.pg_connect import conninfo, message
from actors.store.pg_migrations import migrate
from actors.store.pg_totals import ESTIMATED
from actors.store.postgres import DROP_STALE_PARTS, UPSERT_USAGE, usage_columns
from actors.store.rows import COUNTS, RecordWrite, SessionRow
from actors.store.sqlite_schema import USER_COLUMN, has_column
from protocol.errors import ConfigError
from protocol.ledger import RecordPart

# The instance id the copied rows carry: one for every copy, so a second run overwrites
# its own duration shares instead of adding new ones.
MIGRATED_INSTANCE: Final = "migrated-from-sqlite"
# Sessions per transaction: bounds the memory a huge ledger takes and the work a failure
# loses (the next run redoes it, harmlessly).
CHUNK: Final = 500


class MigrationReport(msgspec.Struct, frozen=True, kw_only=True):
    sessions: int
    records: int


def migrate_ledger(source: str, target: str) -> MigrationReport:
    """Copy the SQLite ledger at ``source`` into the PostgreSQL ledger at ``target``.

    Raises:
        ConfigError: no ledger at ``source``, it cannot be read, or ``target`` cannot be
            reached or written.
    """
    path = pathlib.Path(source)
    if not path.is_file():
        raise ConfigError(f"no cost ledger at {source!r}")
    where = redact_url(target)
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the cost ledger {source!r}: {exc}") from exc
    sessions = records = 0
    try:
        with psycopg.connect(conninfo(target), autocommit=True) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            migrate(conn, where)
            for rows, writes in _chunks(db):
                with conn.transaction():
                    _copy(conn, rows, writes)
                sessions += len(rows)
                records += len(writes)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the cost ledger {source!r}: {exc}") from exc
    except psycopg.Error as exc:
        raise ConfigError(f"cannot write the cost ledger {where}: {message(exc)}") from exc
    finally:
        db.close()
    return MigrationReport(sessions=sessions, records=records)


def _chunks(db: sqlite3.Connection) -> Iterator[tuple[list[SessionRow], list[RecordWrite]]]:
    """The SQLite ledger's sessions, ``CHUNK`` at a time, with their usage records."""
    # A file before schema 5 has no user names: NULL for every session.
    user = USER_COLUMN if has_column(db, "sessions", USER_COLUMN) else "NULL"
    cursor = db.execute(
        "SELECT session_id, owner, created_at, updated_at, api_duration_ms, "
        f"api_duration_without_retries_ms, {user} FROM sessions ORDER BY rowid"
    )
    # A file of schema 1 is read as it is (read-only): nothing in it was estimated.
    flag = ESTIMATED if has_column(db, "usage", ESTIMATED) else "0"
    while batch := cursor.fetchmany(CHUNK):
        rows = [
            SessionRow(
                session_id=r[0],
                owner=r[1],
                created_at=r[2],
                updated_at=r[3],
                api_duration_ms=int(r[4]),
                api_duration_without_retries_ms=int(r[5]),
                user_name=r[6],
            )
            for r in batch
        ]
        ids = [row.session_id for row in rows]
        marks = ", ".join("?" * len(ids))
        parts: dict[tuple[str, str], list[tuple[object, ...]]] = {}
        for usage in db.execute(
            "SELECT session_id, record_id, query_id, attempt, final, model, canonical, "
            + ", ".join(COUNTS)
            + f", unknown_model, speed, service_tier, long_context, priced_on, recorded_at, {flag}, part "
            # In the order they were written: PostgreSQL numbers them in the same order, so
            # each session's models come out in the same order (first used, first listed).
            f"FROM usage WHERE session_id IN ({marks}) ORDER BY rowid",
            ids,
        ):
            parts.setdefault((usage[0], usage[1]), []).append(usage)
        yield rows, [_record(sorted(found, key=lambda row: int(str(row[-1])))) for found in parts.values()]


def _record(rows: list[tuple[object, ...]]) -> RecordWrite:
    """One usage record from its SQLite rows (one per part, in part order)."""
    first = rows[0]
    return RecordWrite(
        session_id=str(first[0]),
        record_id=str(first[1]),
        query_id=None if first[2] is None else str(first[2]),
        attempt=None if first[3] is None else int(str(first[3])),
        final=bool(first[4]),
        parts=tuple(
            RecordPart(
                model=str(row[5]),
                canonical=str(row[6]),
                unknown_model=bool(row[15]),
                estimated=bool(row[21]),
                **dict(zip(COUNTS, (int(str(v)) for v in row[7:15]), strict=True)),
            )
            for row in rows
        ),
        speed=None if first[16] is None else str(first[16]),
        service_tier=None if first[17] is None else str(first[17]),
        long_context=bool(first[18]),
        priced_on=str(first[19]),
        recorded_at=str(first[20]),
        replaces=True,
    )


def _copy(conn: psycopg.Connection[TupleRow], rows: list[SessionRow], writes: list[RecordWrite]) -> None:
    """One chunk, in the caller's transaction; changes nothing already copied."""
    conn.execute(
        "INSERT INTO switchboard.sessions (session_id, owner, owner_instance, created_at, updated_at) "
        "SELECT s, o, %s, c, u FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[]) "
        "AS t(s, o, c, u) ON CONFLICT (session_id) DO NOTHING",
        (
            MIGRATED_INSTANCE,
            [r.session_id for r in rows],
            [r.owner for r in rows],
            [r.created_at for r in rows],
            [r.updated_at for r in rows],
        ),
    )
    timed = [r for r in rows if r.api_duration_ms or r.api_duration_without_retries_ms]
    if timed:
        conn.execute(
            "INSERT INTO switchboard.session_durations AS d (session_id, instance_id, api_duration_ms, "
            "api_duration_without_retries_ms) SELECT s, %s, a, w FROM unnest(%s::text[], %s::bigint[], "
            "%s::bigint[]) AS t(s, a, w) ON CONFLICT (session_id, instance_id) DO UPDATE SET "
            "api_duration_ms = excluded.api_duration_ms, "
            "api_duration_without_retries_ms = excluded.api_duration_without_retries_ms "
            "WHERE (d.api_duration_ms, d.api_duration_without_retries_ms) IS DISTINCT FROM "
            "(excluded.api_duration_ms, excluded.api_duration_without_retries_ms)",
            (
                MIGRATED_INSTANCE,
                [r.session_id for r in timed],
                [r.api_duration_ms for r in timed],
                [r.api_duration_without_retries_ms for r in timed],
            ),
        )
    if writes:
        conn.execute(
            DROP_STALE_PARTS,
            ([w.session_id for w in writes], [w.record_id for w in writes], [len(w.parts) for w in writes]),
        )
        conn.execute(UPSERT_USAGE, usage_columns(writes, MIGRATED_INSTANCE))
