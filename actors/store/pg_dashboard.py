"""The dashboard's reads of a PostgreSQL cost ledger (``actors.store.postgres.PgStore``): the same
answers as the SQLite store's ``spend``, ``top_sessions`` and ``top_owners``
(``actors.store.rows.Store``), over ``usage.recorded_at`` as a ``timestamptz`` bucketed in UTC.

Each function runs one read-only statement on the connection it is given (the store's pool
lends it; its own thread, never the writer's connection at the same time).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Final

import psycopg
from psycopg.rows import TupleRow

from actors.store.rows import DASHBOARD_COUNTS
from protocol.dashboard import Bucket, OwnerSpend, Scope, SessionSpend, SpendRow

# A bucket key as the SQLite store cuts it from an ISO timestamp: its first 10 or 13 characters.
_BUCKET_FORMAT: Final = {"day": 'YYYY-MM-DD', "hour": 'YYYY-MM-DD"T"HH24'}
_SUMS: Final = (
    "SUM(u.input_tokens), SUM(u.output_tokens), SUM(u.cache_creation_input_tokens), "
    "SUM(u.cache_read_input_tokens), SUM(u.cost_pico), COUNT(*) FILTER (WHERE u.part = 0)"
)
_FROM: Final = "FROM switchboard.usage u JOIN switchboard.sessions s USING (session_id)"


def since_instant(since: str) -> datetime.datetime:
    """The UTC instant a bucket key (``YYYY-MM-DD`` or ``YYYY-MM-DDTHH``) starts at."""
    if len(since) == 13:
        return datetime.datetime.strptime(since, "%Y-%m-%dT%H").replace(tzinfo=datetime.UTC)
    return datetime.datetime.strptime(since[:10], "%Y-%m-%d").replace(tzinfo=datetime.UTC)


def _scoped(since: str, scope: Scope) -> tuple[str, tuple[object, ...]]:
    start = since_instant(since)
    if scope.everyone:
        return "WHERE u.recorded_at >= %s", (start,)
    if scope.owner is None:
        return "WHERE u.recorded_at >= %s AND s.owner IS NULL", (start,)
    return "WHERE u.recorded_at >= %s AND s.owner = %s", (start, scope.owner)


def _ints(values: Sequence[object]) -> list[int]:
    return [int(value) if value is not None else 0 for value in values]  # type: ignore[call-overload]


def _counts(values: Sequence[object]) -> dict[str, int]:
    return dict(zip(DASHBOARD_COUNTS, _ints(values), strict=True))


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime.datetime) else str(value)


def spend(conn: psycopg.Connection[TupleRow], since: str, bucket: Bucket, scope: Scope) -> list[SpendRow]:
    where, params = _scoped(since, scope)
    key = f"to_char(u.recorded_at AT TIME ZONE 'UTC', '{_BUCKET_FORMAT[bucket]}')"
    rows = conn.execute(
        f"SELECT {key} AS b, u.canonical, s.owner, {_SUMS} {_FROM} {where} "
        "GROUP BY b, u.canonical, s.owner ORDER BY b, u.canonical",
        params,
    ).fetchall()
    return [SpendRow(bucket=r[0], canonical=r[1], owner=r[2], **_counts(r[3:9])) for r in rows]


def top_sessions(conn: psycopg.Connection[TupleRow], since: str, scope: Scope, limit: int) -> list[SessionSpend]:
    where, params = _scoped(since, scope)
    rows = conn.execute(
        f"SELECT u.session_id, MIN(s.owner), MIN(u.recorded_at), MAX(u.recorded_at), {_SUMS} "
        f"{_FROM} {where} GROUP BY u.session_id ORDER BY SUM(u.cost_pico) DESC, u.session_id LIMIT %s",
        (*params, limit),
    ).fetchall()
    return [
        SessionSpend(session_id=r[0], owner=r[1], first_at=_iso(r[2]), last_at=_iso(r[3]), **_counts(r[4:10]))
        for r in rows
    ]


def top_owners(conn: psycopg.Connection[TupleRow], since: str, scope: Scope, limit: int) -> list[OwnerSpend]:
    where, params = _scoped(since, scope)
    rows = conn.execute(
        "SELECT s.owner, COUNT(DISTINCT u.session_id), SUM(u.cost_pico), COUNT(*) FILTER (WHERE u.part = 0) "
        f"{_FROM} {where} GROUP BY s.owner ORDER BY SUM(u.cost_pico) DESC, s.owner LIMIT %s",
        (*params, limit),
    ).fetchall()
    return [
        OwnerSpend(owner=r[0], **dict(zip(("sessions", "cost_pico", "messages"), _ints(r[1:4]), strict=True)))
        for r in rows
    ]
