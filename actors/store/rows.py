"""The stores' shared contract: the ``Store`` protocol every CostLedger store follows (the SQLite
``actors.store.sqlite.LedgerStore``, the PostgreSQL ``actors.store.postgres.PgStore``), the rows
it reads and writes, its errors, and the usage columns both stores name in the same order.

A leaf: it imports no store, so each store (and ``actors.store.stores``, which picks one) builds
on it without an import cycle.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Final, Protocol

import msgspec

from protocol.dashboard import Bucket, OwnerSpend, Scope, SessionSpend, SpendRow
from protocol.errors import SwitchboardError
from protocol.ledger import RecordPart, SessionTotals

# A usage part's counts, in the column order both stores use (actors/store/postgres.py too).
COUNTS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_creation_1h_input_tokens",
    "cache_read_input_tokens",
    "web_search_requests",
    "web_fetch_requests",
    "cost_pico",
)
# The dashboard's sums by name, in their order (the SQLite store's ``_DASHBOARD_SUMS``; the
# PostgreSQL store's reads, actors/store/pg_dashboard.py, use the same names).
DASHBOARD_COUNTS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cost_pico",
    "messages",
)



class SessionRow(msgspec.Struct, frozen=True, kw_only=True):
    """A session's row, written whole (absolute values, so a retried write is harmless)."""

    session_id: str
    owner: str | None
    created_at: str
    updated_at: str
    api_duration_ms: int
    api_duration_without_retries_ms: int
    # The signed-in user the session's token was issued to (issue 19), else None.
    user_name: str | None = None


class RecordWrite(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a usage record. ``replaces``: an earlier version's rows go first."""

    session_id: str
    record_id: str
    query_id: str | None
    attempt: int | None
    final: bool
    parts: tuple[RecordPart, ...]
    speed: str | None
    service_tier: str | None
    long_context: bool
    priced_on: str
    recorded_at: str
    replaces: bool


class LoadedSession(msgspec.Struct, kw_only=True):
    """A session as stored: owner, totals, and its provisional records' parts by record id."""

    owner: str | None
    created_at: str
    totals: SessionTotals
    provisional: dict[str, tuple[RecordPart, ...]]
    user_name: str | None = None


class StoreError(SwitchboardError):
    """A store other than SQLite could not do what was asked (``actors.store.postgres``: the server
    unreachable, a lost connection, a statement that failed). The message says why, with no
    password in it."""


# What a store call may raise when the store, not the program, is at fault: the CostLedger
# degrades on these (docs/protocol.md, "Cost ledger faults") and lets anything else through.
STORE_ERRORS: Final = (sqlite3.Error, StoreError)


class Store(Protocol):
    """What the CostLedger needs of a store (``LedgerStore``, ``actors.store.postgres.PgStore``;
    tests wrap them to inject faults). Called from one thread at a time.

    Every method may raise one of ``STORE_ERRORS``: SQLite's ``OperationalError`` for a full
    disk or an I/O error, ``DatabaseError`` for a corrupt page; ``StoreError`` for the rest.
    ``write`` is idempotent: writing a batch again (a retry after a failure, even one whose
    commit did happen) counts nothing twice, and a final record version is never replaced.
    """

    def load(self, session_ids: Collection[str]) -> dict[str, LoadedSession]: ...

    def write(self, sessions: Sequence[SessionRow], records: Sequence[RecordWrite]) -> None: ...

    def close(self) -> None: ...

    # The dashboard's read-only aggregations (protocol/dashboard.py; docs/protocol.md,
    # "Dashboard"). ``since`` is a bucket key: a record counts when its ``recorded_at`` is not
    # before it as a string (ISO 8601 UTC, ``+00:00``, so string order is time order). Every
    # usage row counts, provisional ones too, as in a session's totals. Each answer is
    # bounded by the caller: buckets x models x owners, or ``limit`` rows. A store on a file
    # must let them run on another thread while ``load`` or ``write`` runs (the SQLite store
    # reads through its own read-only connection): the CostLedger runs them beside its inbox.

    def spend(self, since: str, bucket: Bucket, scope: Scope) -> list[SpendRow]:
        """Usage summed per (bucket: ``recorded_at``'s first 10 or 13 characters, canonical
        model, session owner); ``messages`` counts part 0 of each record version."""
        ...

    def top_sessions(self, since: str, scope: Scope, limit: int) -> list[SessionSpend]:
        """The ``limit`` sessions with the highest cost since ``since`` (ties: session id)."""
        ...

    def top_owners(self, since: str, scope: Scope, limit: int) -> list[OwnerSpend]:
        """The ``limit`` owners (tokens) with the highest cost since ``since``."""
        ...

