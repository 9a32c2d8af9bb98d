"""CostLedger: prices every upstream message and keeps each session's totals.

Role:
    The one owner of sessions' cost state: total cost, API durations, per-model usage (keyed
    by the model id as sent upstream, as the reference client does), the unknown-model flag,
    and which access token owns the session.
Inbox (``CostLedgerMsg``):
    ``OpenSession`` (FrontDoor, Gateway): create or resume a session, check its owner.
    ``RecordUsage`` (StreamRelay, once per upstream message): price and add it; the reply
    comes after the totals are updated, so a ``done`` frame never reports unrecorded cost.
    ``RecordDuration`` (RetrySupervisor, once per query).
    ``GetCost`` (FrontDoor, Gateway): the session's cost summary.
Outputs:
    None; it only answers.
Lifecycle:
    ``run`` calls ``task_status.started(address)`` once the inbox is open; returns when every
    address clone is closed. Cancellation alone does not stop it: usage may still be on its
    way from attempts being aborted, so it drains until its senders are gone, bounded by
    the grace deadline the composition root sets with ``drain_within``.
Failure policy:
    Pricing never fails: an unknown model is priced at the documented default and flagged.
Timers:
    None.

Durability (an SQLite store, resume after restart) is issue #4; until then totals live in
memory for the life of the process.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import TypeAlias, assert_never, final

import msgspec
import trio

from actors._util import answer
from protocol.frames import CostSummary, ModelUsageSummary
from protocol.pricing import cost_of, usd
from protocol.usage import Usage


class SessionOpened(msgspec.Struct, frozen=True, kw_only=True):
    """``resumed``: the session existed before; ``owner_ok``: the caller may use it."""

    resumed: bool
    owner_ok: bool
    cost: CostSummary


class OpenSession(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    owner: str | None
    reply: trio.MemorySendChannel[SessionOpened]


class UsageRecorded(msgspec.Struct, frozen=True, kw_only=True):
    cost_pico: int
    session_cost_pico: int
    unknown_model: bool


class RecordUsage(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    model: str
    usage: Usage
    long_context: bool = False
    reply: trio.MemorySendChannel[UsageRecorded]


class RecordDuration(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    duration_ms: int
    duration_without_retries_ms: int


class GetCost(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    reply: trio.MemorySendChannel[CostSummary]


CostLedgerMsg: TypeAlias = OpenSession | RecordUsage | RecordDuration | GetCost
CostLedgerAddress: TypeAlias = trio.MemorySendChannel[CostLedgerMsg]


def owner_digest(token: str | None) -> str | None:
    """What the ledger keeps of an access token: a digest, never the token itself."""
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


class _ModelTotals:
    __slots__ = ("cache_creation", "cache_read", "cost_pico", "input", "output", "web_search")

    def __init__(self) -> None:
        self.input = self.output = self.cache_read = self.cache_creation = 0
        self.web_search = self.cost_pico = 0


class _Session:
    __slots__ = ("api_ms", "api_without_retries_ms", "models", "owner", "total_pico", "unknown")

    def __init__(self, owner: str | None) -> None:
        self.owner = owner
        self.total_pico = 0
        self.api_ms = 0
        self.api_without_retries_ms = 0
        self.models: dict[str, _ModelTotals] = {}
        self.unknown = False


@final
class CostLedger:
    """Prices and totals per session (see the module docstring)."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._drain_scope = trio.CancelScope(shield=True)

    async def run(
        self, *, task_status: trio.TaskStatus[CostLedgerAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the inbox until every address clone is closed. Startable."""
        address, inbox = trio.open_memory_channel[CostLedgerMsg](0)
        with inbox:
            task_status.started(address)
            with self._drain_scope:
                async for msg in inbox:
                    self._handle(msg)

    def drain_within(self, grace: float) -> None:
        """Shutdown backstop: stop serving ``grace`` seconds from now even if senders remain."""
        self._drain_scope.deadline = min(self._drain_scope.deadline, trio.current_time() + grace)

    def _handle(self, msg: CostLedgerMsg) -> None:
        match msg:
            case OpenSession():
                existing = self._sessions.get(msg.session_id)
                if existing is None:
                    self._sessions[msg.session_id] = _Session(msg.owner)
                    answer(msg.reply, SessionOpened(resumed=False, owner_ok=True, cost=self._summary(msg.session_id)))
                else:
                    owner_ok = existing.owner is None or existing.owner == msg.owner
                    answer(msg.reply, SessionOpened(resumed=True, owner_ok=owner_ok, cost=self._summary(msg.session_id)))
            case RecordUsage():
                answer(msg.reply, self._record(msg))
            case RecordDuration():
                session = self._session(msg.session_id)
                session.api_ms += msg.duration_ms
                session.api_without_retries_ms += msg.duration_without_retries_ms
            case GetCost():
                answer(msg.reply, self._summary(msg.session_id))
            case _:
                assert_never(msg)

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session(None)
        return session

    def _record(self, msg: RecordUsage) -> UsageRecorded:
        session = self._session(msg.session_id)
        cost = cost_of(msg.usage, msg.model, on=datetime.date.today().isoformat(), long_context=msg.long_context)
        totals = session.models.get(msg.model)
        if totals is None:
            totals = session.models[msg.model] = _ModelTotals()
        usage = msg.usage
        totals.input += usage.input_tokens
        totals.output += usage.output_tokens
        totals.cache_read += usage.cache_read_input_tokens
        totals.cache_creation += usage.cache_creation_input_tokens
        totals.web_search += usage.web_search_requests
        totals.cost_pico += cost.total_pico
        session.total_pico += cost.total_pico
        session.unknown = session.unknown or cost.unknown_model
        return UsageRecorded(
            cost_pico=cost.total_pico, session_cost_pico=session.total_pico, unknown_model=cost.unknown_model
        )

    def _summary(self, session_id: str) -> CostSummary:
        session = self._sessions.get(session_id)
        if session is None:
            return CostSummary(session_id=session_id)
        return CostSummary(
            session_id=session_id,
            total_cost_usd=usd(session.total_pico),
            api_duration_ms=session.api_ms,
            api_duration_without_retries_ms=session.api_without_retries_ms,
            model_usage={
                model: ModelUsageSummary(
                    input_tokens=t.input,
                    output_tokens=t.output,
                    cache_read_input_tokens=t.cache_read,
                    cache_creation_input_tokens=t.cache_creation,
                    web_search_requests=t.web_search,
                    cost_usd=usd(t.cost_pico),
                )
                for model, t in session.models.items()
            },
            unknown_model_cost=session.unknown,
        )
