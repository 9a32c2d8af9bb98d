"""The CostLedger's contract (actors/cost_ledger.py).

Per session: ``OpenSession`` -> ``SessionOpened``, ``RecordUsage`` -> ``UsageRecorded``,
``RecordDuration`` (no reply), ``GetCost`` -> ``CostSummary``. The dashboard's reads:
``ReadSpend``, ``ReadTop``, ``SessionOwners``.
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec
import trio

from protocol.dashboard import Bucket, OwnerSpend, Scope, SessionSpend, SpendRow
from protocol.frames import CostSummary
from protocol.usage import Usage


class SessionOpened(msgspec.Struct, frozen=True, kw_only=True):
    """``resumed``: the session existed before; ``owner_ok``: the caller may use it."""

    resumed: bool
    owner_ok: bool
    cost: CostSummary


class OpenSession(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    owner: str | None
    # The signed-in user a new session is kept under (``sessions.user_name``), else None.
    user: str | None = None
    reply: trio.MemorySendChannel[SessionOpened]


class UsageRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """``cost_pico``: this version of the record (the whole message so far), not a delta.
    ``recorded``: committed to the store (False: counted in memory only, or not at all for
    a session the store cannot read; a crash before the ledger recovers loses it)."""

    cost_pico: int
    session_cost_pico: int
    unknown_model: bool
    recorded: bool


class RecordUsage(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a usage record: ``usage`` is the message's merged cumulative usage.

    ``record_id`` names the upstream message (unique in the session, e.g.
    ``f"{query_id}:{attempt}:{uuid}"``); an empty one gets a fresh id, so it can never be
    replaced (only for a ``final`` record). ``final`` False: provisional, to be replaced by
    the next version with the same id; a final version is never replaced (a repeat is
    ignored). ``model`` is the id as sent upstream.
    """

    session_id: str
    model: str
    usage: Usage
    long_context: bool = False
    reply: trio.MemorySendChannel[UsageRecorded]
    record_id: str = ""
    final: bool = True
    query_id: str | None = None
    attempt: int | None = None


class RecordDuration(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    duration_ms: int
    duration_without_retries_ms: int


class GetCost(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    reply: trio.MemorySendChannel[CostSummary]


class ReadSpend(msgspec.Struct, frozen=True, kw_only=True):
    since: str
    bucket: Bucket
    scope: Scope
    reply: trio.MemorySendChannel[list[SpendRow]]


class ReadTop(msgspec.Struct, frozen=True, kw_only=True):
    """The top ``limit`` sessions and the top ``limit`` owners by cost since ``since``."""

    since: str
    scope: Scope
    limit: int
    reply: trio.MemorySendChannel[tuple[list[SessionSpend], list[OwnerSpend]]]


class SessionOwners(msgspec.Struct, frozen=True, kw_only=True):
    """The owner digest of each of ``session_ids`` held in memory (others are left out)."""

    session_ids: tuple[str, ...]
    reply: trio.MemorySendChannel[dict[str, str | None]]


SessionMsg: TypeAlias = OpenSession | RecordUsage | RecordDuration | GetCost


DashboardRead: TypeAlias = ReadSpend | ReadTop | SessionOwners


CostLedgerMsg: TypeAlias = SessionMsg | DashboardRead


CostLedgerAddress: TypeAlias = trio.MemorySendChannel[CostLedgerMsg]
