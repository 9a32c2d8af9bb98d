"""Per-session totals read from a PostgreSQL ledger (``PgStore.load``, actors/store/postgres.py),
and ``read_pg_sessions``: every session's totals for ``switchboard cost`` in one read-only
snapshot.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import psycopg
from psycopg.rows import TupleRow

from actors.config.settings import redact_url
from actors.store.pg_connect import conninfo, message
from actors.store.rows import COUNTS, StoreError
from protocol.errors import ConfigError
from protocol.ledger import ModelTotals, SessionTotals

_SUMS: Final = ", ".join(f"SUM({column})" for column in COUNTS)
# Migration 2's column (actors.store.pg_migrations).
ESTIMATED: Final = "estimated"
# What a session's estimated figures sum (protocol.ledger.ModelTotals), as the SQLite store's
# ``SUM(output_tokens * estimated), SUM(cost_pico * estimated)``, given the SQL expression of
# a row's flag: the column, or ``false`` in a database from before it.
_ESTIMATED_SUMS: Final = (
    "COALESCE(SUM(output_tokens) FILTER (WHERE {flag}), 0), COALESCE(SUM(cost_pico) FILTER (WHERE {flag}), 0)"
)


def _int(value: object) -> int:
    """A count read back: an integer (``SUM`` of BIGINT is NUMERIC, read as Decimal), or a
    read failure."""
    if type(value) is int:
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise StoreError("ledger row holds a count that is not an integer")


def _totals(
    conn: psycopg.Connection[TupleRow], where: str, params: tuple[object, ...], *, estimated: str
) -> dict[str, SessionTotals]:
    """Per-session totals of the usage rows matching ``where`` (durations not included),
    models in the order they were first recorded. ``estimated``: the SQL expression of a
    row's estimated flag (``ESTIMATED``, or ``false``)."""
    sessions: dict[str, SessionTotals] = {}
    query = (
        f"SELECT session_id, model, {_SUMS}, bool_or(unknown_model), "
        f"{_ESTIMATED_SUMS.format(flag=estimated)} FROM switchboard.usage {where} "
        "GROUP BY session_id, model ORDER BY session_id, MIN(id)"
    )
    for row in conn.execute(query.encode(), params):
        totals = sessions.setdefault(row[0], SessionTotals())
        model = ModelTotals(**dict(zip(COUNTS, (_int(v) for v in row[2:10]), strict=True)))
        model.estimated_output_tokens, model.estimated_cost_pico = (_int(v) for v in row[11:13])
        totals.models[row[1]] = model
        totals.total_pico += model.cost_pico
        totals.unknown_model_cost = totals.unknown_model_cost or bool(row[10])
    return sessions


def _has_column(conn: psycopg.Connection[TupleRow], table: str, column: str) -> bool:
    """Whether ``switchboard.{table}`` has ``column`` (a schema migrated or not)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'switchboard' "
        "AND table_name = %s AND column_name = %s)",
        (table, column),
    ).fetchone()
    return row is not None and bool(row[0])


def read_pg_sessions(url: str, session_id: str | None = None) -> list[tuple[str, SessionTotals]]:
    """``actors.store.stores.read_sessions`` for a PostgreSQL ledger: every session's totals (or
    only ``session_id``'s), oldest first, in one read-only snapshot; migrates nothing (a
    database from before migration 2 reads as one where nothing was estimated).

    Raises:
        ConfigError: the server cannot be reached, or holds no ledger.
    """
    where_url = redact_url(url)
    try:
        with psycopg.connect(conninfo(url), autocommit=True) as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            found = conn.execute("SELECT to_regclass('switchboard.sessions')").fetchone()
            if found is None or found[0] is None:
                raise ConfigError(f"no cost ledger at {where_url}")
            where, params = ("WHERE session_id = %s", (session_id,)) if session_id else ("", ())
            # A database an older gateway left at migration 1 is read as it is (nothing is
            # migrated here): nothing in it was estimated.
            flag = ESTIMATED if _has_column(conn, "usage", ESTIMATED) else "false"
            usage = _totals(conn, where, params, estimated=flag)
            durations = {
                row[0]: (_int(row[1]), _int(row[2]))
                for row in conn.execute(
                    (
                        "SELECT session_id, SUM(api_duration_ms), SUM(api_duration_without_retries_ms) "
                        f"FROM switchboard.session_durations {where} GROUP BY session_id"
                    ).encode(),
                    params,
                )
            }
            ids = [row[0] for row in conn.execute(f"SELECT session_id FROM switchboard.sessions {where} ORDER BY id".encode(), params)]
    except psycopg.Error as exc:
        raise ConfigError(f"cannot read the cost ledger {where_url}: {message(exc)}") from exc
    result: list[tuple[str, SessionTotals]] = []
    for sid in ids:
        totals = usage.get(sid, SessionTotals())
        totals.api_duration_ms, totals.api_duration_without_retries_ms = durations.get(sid, (0, 0))
        result.append((sid, totals))
    return result
