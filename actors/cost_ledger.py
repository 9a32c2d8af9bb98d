"""CostLedger: prices every upstream message, keeps each session's totals, durably.

Role:
    The one owner of sessions' cost state: total cost, API durations, per-model usage (keyed
    by the model id as sent upstream, as the reference client does), the unknown-model flag,
    and which access token owns the session (a digest). Every change is written to an
    SQLite store (``actors.cost_store``) before it is acknowledged, so a ``done`` frame
    never reports a cost a crash could lose, and any session resumes after a restart.
Inbox (``CostLedgerMsg``):
    ``OpenSession`` (FrontDoor, Gateway): create or resume a session, check its owner.
    ``RecordUsage`` (StreamRelay, per upstream message): price and count one version of a
    usage record. A record is counted once: a newer version with the same ``record_id``
    (provisional at ``message_start``, final at the end) replaces the older one, and a
    provisional version nobody replaced (the process was killed mid-stream) stays counted.
    ``RecordDuration`` (RetrySupervisor, once per query).
    ``GetCost`` (FrontDoor, Gateway): the session's cost summary.
Outputs:
    None; it only answers, each request after its batch is committed.
Group commit:
    Having taken one message, the ledger also takes every message already waiting
    (``receive_nowait``, up to ``MAX_BATCH``), applies them in order in memory, writes them in
    one transaction on its worker thread, then replies to each. Senders that arrive during
    a commit wait in the inbox and form the next batch, so N concurrent sessions cost about
    one commit per commit-time, not one per message.
Memory:
    Sessions are loaded lazily from the store and kept in an LRU of ``MAX_HOT_SESSIONS``.
Lifecycle:
    ``run`` opens the store, then calls ``task_status.started(address)``; returns when every
    address clone is closed. Cancellation alone does not stop it: usage may still be on its
    way from attempts being aborted, so it drains until its senders are gone, bounded by the
    grace deadline the composition root sets with ``drain_within``. Closes the store last.
Failure policy:
    Pricing never fails: an unknown model is priced at the documented default and flagged.
    A store that cannot be opened is fatal at start (``ConfigError``). A failed write is
    logged as an error, kept and retried with the next batch; replies still go out (the
    totals in memory are right), so a sick disk degrades durability, never the service.
    A message whose handling fails unexpectedly is answered with ``fail`` (the asker gets
    ``ActorFailed``), a batch that fails otherwise is refused (its askers see
    ``ActorUnavailable``); either is logged and counted (``actor:CostLedger``,
    docs/supervision.md), and the ledger serves its next message.
Timers:
    None of its own; ``CLEANUP_TIMEOUT`` bounds closing the store at shutdown.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import logging
import sqlite3
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, TypeAlias, TypeVar, assert_never, final

import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, answer, fail, report_internal
from actors.cost_store import MEMORY, LedgerStore, RecordWrite, SessionRow
from actors.metrics import Metrics
from protocol.frames import CostSummary
from protocol.ledger import RecordPart, SessionTotals, record_parts
from protocol.pricing import usd
from protocol.usage import MAX_TOKEN_COUNT, Usage

log = logging.getLogger("switchboard.ledger")

# Messages written in one transaction at most: bounds a commit's size and so the wait of
# the first message of a burst for its reply.
MAX_BATCH: Final = 512
# Sessions kept in memory; older ones are reloaded from the store when used again.
MAX_HOT_SESSIONS: Final = 4096

T = TypeVar("T")


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
    """``cost_pico``: this version of the record (the whole message so far), not a delta."""

    cost_pico: int
    session_cost_pico: int
    unknown_model: bool


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


CostLedgerMsg: TypeAlias = OpenSession | RecordUsage | RecordDuration | GetCost
CostLedgerAddress: TypeAlias = trio.MemorySendChannel[CostLedgerMsg]


class LedgerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters since start: batches served, messages in them, commits, failed commits."""

    batches: int
    messages: int
    commits: int
    failed_commits: int
    hot_sessions: int


def owner_digest(token: str | None) -> str | None:
    """What the ledger keeps of an access token: a digest, never the token itself."""
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class _Session:
    __slots__ = ("created_at", "finals", "owner", "provisional", "totals")

    def __init__(self, owner: str | None, created_at: str, totals: SessionTotals | None = None) -> None:
        self.owner = owner
        self.created_at = created_at
        self.totals = totals if totals is not None else SessionTotals()
        self.provisional: dict[str, tuple[RecordPart, ...]] = {}
        # Final record ids seen in this process: a repeated final version is not counted twice.
        self.finals: set[str] = set()


@final
class CostLedger:
    """Prices, totals and the durable store per session (see the module docstring).

    ``path``: the SQLite file, or ``":memory:"`` for none. ``offload``: run store calls on a
    worker thread (default: for a file; an in-memory store never waits on a disk, and
    staying on the event loop keeps it deterministic under a test's virtual clock).
    ``now``: the wall clock, for price dates and timestamps.
    """

    def __init__(
        self,
        path: str = MEMORY,
        *,
        offload: bool | None = None,
        now: Callable[[], datetime.datetime] = _utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        self._path = path
        self._metrics = metrics
        self._offload = path != MEMORY if offload is None else offload
        self._now = now
        self._limiter = trio.CapacityLimiter(1)
        self._store: LedgerStore | None = None
        self._hot: OrderedDict[str, _Session] = OrderedDict()
        self._dirty: set[str] = set()
        self._records: list[RecordWrite] = []
        self._drain_scope = trio.CancelScope(shield=True)
        self._batches = self._messages = self._commits = self._failed = 0

    async def run(
        self, *, task_status: trio.TaskStatus[CostLedgerAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the store, then serve the inbox until every address clone is closed.

        Startable. Raises ``ConfigError`` (before ``started``) when the store cannot be opened.
        """
        store = self._store = await self._call(functools.partial(LedgerStore.open, self._path))
        try:
            address, inbox = trio.open_memory_channel[CostLedgerMsg](0)
            with inbox:
                task_status.started(address)
                with self._drain_scope:
                    async for msg in inbox:
                        batch = [msg]
                        while len(batch) < MAX_BATCH:
                            try:
                                batch.append(inbox.receive_nowait())
                            except (trio.WouldBlock, trio.EndOfChannel):
                                break
                        try:
                            await self._serve_batch(batch)
                        except Exception as exc:
                            # _serve_batch closed every reply: the askers are not left waiting.
                            report_internal(log, self._metrics, "actor:CostLedger", f"a batch of {len(batch)}", exc)
        finally:
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                await self._call(store.close)

    def drain_within(self, grace: float) -> None:
        """Shutdown backstop: stop serving ``grace`` seconds from now even if senders remain."""
        self._drain_scope.deadline = min(self._drain_scope.deadline, trio.current_time() + grace)

    def statistics(self) -> LedgerStatistics:
        return LedgerStatistics(
            batches=self._batches,
            messages=self._messages,
            commits=self._commits,
            failed_commits=self._failed,
            hot_sessions=len(self._hot),
        )

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._offload:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter)
        return fn()

    async def _serve_batch(self, batch: list[CostLedgerMsg]) -> None:
        """Apply a batch in memory, commit it, then reply to each request in it."""
        self._batches += 1
        self._messages += len(batch)
        replies: list[Callable[[], None]] = []
        served = batch
        try:
            try:
                await self._load({msg.session_id for msg in batch})
            except sqlite3.Error:
                # Unknown whether those sessions exist: refuse their requests (the askers
                # see ActorUnavailable) rather than start them afresh over stored totals.
                log.exception("cost ledger read failed; requests of sessions not in memory refused")
                served = [msg for msg in batch if msg.session_id in self._hot]
            for msg in served:
                reply = self._apply_contained(msg)
                if reply is not None:
                    replies.append(reply)
            await self._commit()
            for reply in replies:
                reply()
        finally:
            # A request not answered (cancelled mid-batch) must not leave its asker waiting.
            for msg in batch:
                if not isinstance(msg, RecordDuration):
                    msg.reply.close()

    async def _load(self, session_ids: set[str]) -> None:
        for session_id in session_ids & self._hot.keys():
            self._hot.move_to_end(session_id)
        cold = session_ids - self._hot.keys()
        if not cold:
            return
        assert self._store is not None
        loaded = await self._call(functools.partial(self._store.load, cold))
        for session_id, stored in loaded.items():
            session = self._hot[session_id] = _Session(stored.owner, stored.created_at, stored.totals)
            session.provisional = stored.provisional

    def _apply_contained(self, msg: CostLedgerMsg) -> Callable[[], None] | None:
        """``_apply``, a boundary per message: a failure is reported and answered ``fail``."""
        try:
            return self._apply(msg)
        except Exception as exc:
            report_internal(log, self._metrics, "actor:CostLedger", f"message {type(msg).__name__}", exc)
            return None if isinstance(msg, RecordDuration) else functools.partial(fail, msg.reply, "CostLedger")

    def _apply(self, msg: CostLedgerMsg) -> Callable[[], None] | None:
        """Change the state for one message; return its reply, to send after the commit."""
        match msg:
            case OpenSession():
                session = self._hot.get(msg.session_id)
                if session is None:
                    session = self._create(msg.session_id, msg.owner)
                    opened = SessionOpened(resumed=False, owner_ok=True, cost=session.totals.summary(msg.session_id))
                else:
                    # A session created without a token (none were configured) belongs to
                    # nobody once tokens are: no token may take it (docs/protocol.md 1).
                    owner_ok = session.owner == msg.owner
                    opened = SessionOpened(resumed=True, owner_ok=owner_ok, cost=session.totals.summary(msg.session_id))
                return functools.partial(answer, msg.reply, opened)
            case RecordUsage():
                return functools.partial(answer, msg.reply, self._record(msg))
            case RecordDuration():
                session = self._session(msg.session_id)
                session.totals.add_duration(msg.duration_ms, msg.duration_without_retries_ms)
                self._dirty.add(msg.session_id)
                return None
            case GetCost():
                found = self._hot.get(msg.session_id)
                totals = found.totals if found is not None else SessionTotals()
                return functools.partial(answer, msg.reply, totals.summary(msg.session_id))
            case _:
                assert_never(msg)

    def _create(self, session_id: str, owner: str | None) -> _Session:
        session = self._hot[session_id] = _Session(owner, self._now().isoformat())
        self._dirty.add(session_id)
        return session

    def _session(self, session_id: str) -> _Session:
        session = self._hot.get(session_id)
        return session if session is not None else self._create(session_id, None)

    def _record(self, msg: RecordUsage) -> UsageRecorded:
        session = self._session(msg.session_id)
        now = self._now()
        day = now.date().isoformat()
        parts = record_parts(msg.usage, msg.model, on=day, long_context=msg.long_context)
        cost = sum(part.cost_pico for part in parts)
        unknown = any(part.unknown_model for part in parts)
        if msg.usage.malformed and msg.final:
            log.warning(
                "session %s query %s attempt %s: the upstream reported usage counts that are not "
                "integers in [0, %d]; priced as repaired, cost marked unknown",
                msg.session_id, msg.query_id, msg.attempt, MAX_TOKEN_COUNT,
            )
        record_id = msg.record_id or uuid.uuid4().hex
        if record_id in session.finals:
            log.warning("session %s: usage record %s is final already; repeat ignored", msg.session_id, record_id)
            return UsageRecorded(cost_pico=cost, session_cost_pico=session.totals.total_pico, unknown_model=unknown)
        older = session.provisional.pop(record_id, None)
        if older is not None:
            session.totals.remove(older)
        session.totals.add(parts)
        if msg.final:
            session.finals.add(record_id)
            if self._metrics is not None:
                for part in parts:
                    self._metrics.usage(part.model, _part_usage(part), usd(part.cost_pico))
        else:
            session.provisional[record_id] = parts
        self._records.append(
            RecordWrite(
                session_id=msg.session_id,
                record_id=record_id,
                query_id=msg.query_id,
                attempt=msg.attempt,
                final=msg.final,
                parts=parts,
                speed=msg.usage.speed,
                service_tier=msg.usage.service_tier,
                long_context=msg.long_context,
                priced_on=day,
                recorded_at=now.isoformat(),
                replaces=older is not None,
            )
        )
        return UsageRecorded(cost_pico=cost, session_cost_pico=session.totals.total_pico, unknown_model=unknown)

    async def _commit(self) -> None:
        """Write what changed since the last good commit, in one transaction."""
        if not self._dirty and not self._records:
            return
        assert self._store is not None
        now = self._now().isoformat()
        sessions = [self._row(session_id, now) for session_id in self._dirty]
        records = self._records
        try:
            await self._call(functools.partial(self._store.write, sessions, records))
        except sqlite3.Error:
            self._failed += 1
            log.exception(
                "cost ledger write failed; %d session(s) and %d usage record(s) kept in memory, "
                "retried with the next batch", len(sessions), len(records),
            )
            return
        self._commits += 1
        self._dirty.clear()
        self._records = []
        while len(self._hot) > MAX_HOT_SESSIONS:
            self._hot.popitem(last=False)

    def _row(self, session_id: str, now: str) -> SessionRow:
        session = self._hot[session_id]
        return SessionRow(
            session_id=session_id,
            owner=session.owner,
            created_at=session.created_at,
            updated_at=now,
            api_duration_ms=session.totals.api_duration_ms,
            api_duration_without_retries_ms=session.totals.api_duration_without_retries_ms,
        )


def _part_usage(part: RecordPart) -> Usage:
    return Usage(
        input_tokens=part.input_tokens,
        output_tokens=part.output_tokens,
        cache_creation_input_tokens=part.cache_creation_input_tokens,
        cache_creation_1h_input_tokens=part.cache_creation_1h_input_tokens,
        cache_read_input_tokens=part.cache_read_input_tokens,
    )
