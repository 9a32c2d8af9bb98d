"""CostLedger: prices every upstream message, keeps each session's totals, durably.

Role:
    The one owner of sessions' cost state: total cost, API durations, per-model usage (keyed
    by the model id as sent upstream, as the reference client does), the unknown-model flag,
    and which access token owns the session (a digest). Every change is written to its
    store (SQLite, ``actors.store.sqlite``, or PostgreSQL, ``actors.store.postgres``) before it is
    acknowledged, so a ``done`` frame never reports a cost a crash could lose, and any
    session resumes after a restart.
Inbox (``CostLedgerMsg``):
    ``OpenSession`` (FrontDoor, Gateway): create or resume a session, check its owner.
    ``RecordUsage`` (StreamRelay, per upstream message): price and count one version of a
    usage record. A record is counted once: a newer version with the same ``record_id``
    (provisional at ``message_start``, final at the end) replaces the older one, and a
    provisional version nobody replaced (the process was killed mid-stream) stays counted.
    A record whose ``usage.estimated`` (a stream cut short, protocol/estimate.py) is counted
    like any other and kept marked (the store's ``estimated`` column; the summaries'
    ``estimated_cost_usd``, ``estimated_output_tokens``).
    ``RecordDuration`` (RetrySupervisor, once per query).
    ``GetCost`` (FrontDoor, Gateway): the session's cost summary.
    ``ReadSpend``, ``ReadTop`` (the dashboard, actors/doors/dashboard.py): read-only aggregations
    of the store (``Store.spend``, ``top_sessions``, ``top_owners``), started after the
    batch's commit, so they see every usage committed before they were asked; usage pending
    while the ledger is degraded is not in them. On a file they run in a task of their own,
    so a long read never holds the inbox or a commit; in memory they run in turn in the
    batch (``actors.store.ledger_reads``: how many may wait, what a failed read does).
    ``SessionOwners`` (the dashboard): the owners of the sessions in memory among those asked.
Outputs:
    None; it only answers, each request after its batch is committed. It publishes its
    health (``health``: an immutable ``LedgerHealth`` replaced at every change, its
    ``refusal`` included), which the Gateway (new queries) and the HTTP door (``/healthz``)
    read; the metrics get its state (``switchboard_ledger_*``).
Group commit:
    Having taken one message, the ledger also takes every message already waiting
    (``receive_nowait``, up to ``MAX_BATCH``), applies them in order in memory, writes them in
    one transaction on its worker thread, then replies to each. Senders that arrive during
    a commit wait in the inbox and form the next batch, so N concurrent sessions cost about
    one commit per commit-time, not one per message.
Memory:
    Sessions are loaded lazily from the store and kept in an LRU of ``MAX_HOT_SESSIONS``
    (``actors.store.ledger_sessions``: the sessions, their pricing, what the next commit writes).
Several instances (a ``SharedStore``: PostgreSQL, or the SQLite file of ``serve --workers N``,
actors/store/sqlite_shared.py; README.md "Deployment"):
    Other gateway processes may charge the same sessions, so what memory holds can lag
    behind the store. After each batch's successful commit, the totals of every session the
    batch touched are re-read from the store (one ``SharedStore.totals`` query per batch,
    summing the usage rows) and replace those in memory before the replies go out: the
    ready frame, ``get_cost``, each ``UsageRecorded.session_cost_pico`` (``done``, the HTTP
    cost headers) report the store's totals, every instance's usage included. When the
    commit fails (degraded) or the re-read fails, the replies carry the totals in memory.
Lifecycle:
    ``run`` opens the store, then calls ``task_status.started(address)``; returns when every
    address clone is closed. Cancellation alone does not stop it: usage may still be on its
    way from attempts being aborted, so it drains until its senders are gone, bounded by its
    ``drain_grace`` (counted from the cancellation; the composition root gives one). Closes
    the store last.
Failure policy:
    Pricing never fails: an unknown model is priced at the documented default and flagged.
    A store that cannot be opened (another gateway holds it, unwritable, corrupt) is fatal
    at start (``ConfigError``). Nothing is ever reported as recorded that is not committed:
    ``UsageRecorded.recorded`` is True only when a commit that held the record succeeded.
    A failed commit (full disk, I/O error, corrupt page) degrades the ledger: what it held
    stays pending in memory, replies still go out (the totals in memory are right) saying
    ``recorded=False``, batches stop trying to commit, and one task retries the commit with
    backoff until it succeeds, which commits everything pending and makes the ledger healthy
    again. Meanwhile the published ``health.refusal`` tells the Gateway to refuse new queries
    (``ledger_unavailable``), unless ``fail_open`` (then only past ``MAX_PENDING_RECORDS``).
    The health state itself is ``actors.store.health.LedgerCondition``.
    A failed read of a session (a corrupt page) fails that session's requests only (its
    ``OpenSession``/``GetCost`` replies are dropped: the asker sees ``ActorUnavailable``; its
    usage is answered ``recorded=False``) and degrades health until a read of it succeeds.
    A process that stops while records are pending logs how many were lost.
    A message whose handling fails unexpectedly is answered with ``fail`` (the asker gets
    ``ActorFailed``), a batch that fails otherwise is refused (its askers see
    ``ActorUnavailable``); either is logged and counted (``actor:CostLedger``,
    docs/supervision.md), and the ledger serves its next message.
Timers:
    The commit retry's backoff (``actors.store.health.backoff``: 0.5 s doubling to
    15 s, on trio's clock); ``CLEANUP_TIMEOUT`` bounds the last commit and
    closing the store at shutdown.
"""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import Final, Protocol, TypeVar, final, runtime_checkable

import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, answer, fail, report_internal
from actors.config.instance import new_instance_id
from actors.messages.ledger import (
    CostLedgerAddress,
    CostLedgerMsg,
    DashboardRead,
    ReadSpend,
    ReadTop,
    RecordDuration,
    RecordUsage,
    SessionMsg,
    SessionOwners,
)
from actors.observe.metrics import Metrics
from actors.store.health import LedgerCondition, LedgerHealth, backoff
from actors.store.ledger_reads import LedgerReads
from actors.store.ledger_sessions import LedgerSessions, Session
from actors.store.rows import STORE_ERRORS, Store
from actors.store.sqlite import MEMORY
from actors.store.stores import open_store
from protocol.ledger import SessionTotals

log = logging.getLogger("switchboard.ledger")

# Messages written in one transaction at most: bounds a commit's size and so the wait of
# the first message of a burst for its reply.
MAX_BATCH: Final = 512

T = TypeVar("T")


@runtime_checkable
class SharedStore(Protocol):
    """A store other instances write too (``actors.store.postgres.PgStore``): the ledger reports
    the stored totals of the sessions it serves, re-read after each commit (module
    docstring, "Several instances")."""

    instance_id: str

    def totals(self, session_ids: Collection[str]) -> dict[str, SessionTotals]: ...


class LedgerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters since start: batches served, messages in them, commits, failed commits."""

    batches: int
    messages: int
    commits: int
    failed_commits: int
    hot_sessions: int


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@final
class CostLedger:
    """Prices, totals and the durable store per session (see the module docstring).

    ``path``: the SQLite file, ``":memory:"`` for none, or a PostgreSQL URL. ``offload``: run store calls on a
    worker thread (default: for a file; an in-memory store never waits on a disk, and
    staying on the event loop keeps it deterministic under a test's virtual clock).
    ``now``: the wall clock, for price dates and timestamps. ``fail_open``: keep serving new
    queries while commits fail (``Config.ledger_fail_open``). ``open_store``: how the store
    is opened (``actors.store.stores.open_store``; tests wrap it to inject faults).
    ``drain_grace``: once ``run`` is cancelled, how long it still takes usage from senders
    that linger (the shutdown backstop); None: until they are gone.
    """

    def __init__(
        self,
        path: str = MEMORY,
        *,
        offload: bool | None = None,
        now: Callable[[], datetime.datetime] = _utc_now,
        metrics: Metrics | None = None,
        fail_open: bool = False,
        open_store: Callable[[str], Store] = open_store,
        drain_grace: float | None = None,
    ) -> None:
        self._drain_grace = drain_grace
        self._path = path
        self._metrics = metrics
        self._open_store = open_store
        self._offload = path != MEMORY if offload is None else offload
        self._now = now
        self._limiter = trio.CapacityLimiter(1)
        # The dashboard's reads: beside the inbox on a file, in turn in memory (module docstring).
        self._reads_apart = self._offload and path != MEMORY
        self._reads: LedgerReads | None = None
        self._store: Store | None = None
        self._shared: SharedStore | None = None
        # This process's id in a shared ledger (README.md "Deployment"): the store's, once
        # open; otherwise one of its own, for ``/healthz`` and the startup log.
        self.instance_id = new_instance_id()
        # One commit at a time: the inbox's and the retry task's.
        self._commit_lock = trio.Lock()
        self._sessions = LedgerSessions(now, metrics)
        self._condition = LedgerCondition(pending=lambda: len(self._sessions.records), metrics=metrics, fail_open=fail_open)
        self._drain_scope = trio.CancelScope(shield=True)
        self._batches = self._messages = self._commits = self._failed = 0

    async def run(
        self, *, task_status: trio.TaskStatus[CostLedgerAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the store, then serve the inbox until every address clone is closed.

        Startable. Raises ``ConfigError`` (before ``started``) when the store cannot be opened.
        """
        store = self._store = await self._call(functools.partial(self._open_store, self._path))
        self._shared = store if isinstance(store, SharedStore) else None
        if self._shared is not None:
            self.instance_id = self._shared.instance_id
        self._condition.report()
        try:
            address, inbox = trio.open_memory_channel[CostLedgerMsg](0)
            async with self._recovering(inbox, store):
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
                await self._last_commit()
                await self._call(store.close)

    @asynccontextmanager
    async def _recovering(self, inbox: trio.MemoryReceiveChannel[CostLedgerMsg], store: Store) -> AsyncIterator[None]:
        """Own ``inbox`` and run the retry task (``_recover``) and the dashboard's reads
        (``LedgerReads``) for the block."""
        with inbox:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._recover)
                nursery.start_soon(self._backstop)
                readers = nursery if self._reads_apart else None
                self._reads = LedgerReads(store, self._sessions, call=self._call, readers=readers, metrics=self._metrics)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()

    async def _backstop(self) -> None:
        """Outside the inbox's shield: once ``run`` is cancelled (the gateway is stopping),
        stop serving ``drain_grace`` seconds from then even if senders remain."""
        try:
            await trio.sleep_forever()
        finally:
            if self._drain_grace is not None:
                deadline = trio.current_time() + self._drain_grace
                self._drain_scope.deadline = min(self._drain_scope.deadline, deadline)

    @property
    def health(self) -> LedgerHealth:
        """The health snapshot the ledger publishes (``LedgerCondition.published``: immutable,
        replaced at every change), ``refusal`` included. Not a checkpoint."""
        return self._condition.published

    def statistics(self) -> LedgerStatistics:
        return LedgerStatistics(
            batches=self._batches,
            messages=self._messages,
            commits=self._commits,
            failed_commits=self._failed,
            hot_sessions=len(self._sessions.hot),
        )

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._offload:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter)
        return fn()

    async def _serve_batch(self, batch: list[CostLedgerMsg]) -> None:
        """Apply a batch in memory, commit it (unless commits fail: the retry task owns them
        then), then reply to each request in it, saying whether its usage is committed."""
        self._batches += 1
        self._messages += len(batch)
        replies: list[Callable[[bool], None]] = []
        sessions: list[SessionMsg] = []
        reads: list[DashboardRead] = []
        handed: set[int] = set()
        for msg in batch:
            if isinstance(msg, ReadSpend | ReadTop | SessionOwners):
                reads.append(msg)
            else:
                sessions.append(msg)
        try:
            unreadable = await self._load({msg.session_id for msg in sessions})
            for msg in sessions:
                if msg.session_id in unreadable:
                    # Unknown whether the session exists: never start it afresh over stored
                    # totals. Its other requests are refused (their replies dropped).
                    if isinstance(msg, RecordUsage):
                        answer(msg.reply, self._sessions.unrecorded(msg))
                    continue
                reply = self._apply_contained(msg)
                if reply is not None:
                    replies.append(reply)
            committed = self._condition.write_error is None and await self._commit()
            if committed and self._shared is not None:
                await self._refresh({msg.session_id for msg in sessions} - unreadable)
            for reply in replies:
                reply(committed)
            if self._condition.write_error is not None:
                self._condition.report()  # what is pending grew
            for read in reads:
                assert self._reads is not None
                if await self._reads.serve(read):
                    handed.add(id(read))
        finally:
            # A request not answered (cancelled mid-batch) must not leave its asker waiting.
            # A read handed to its task is that task's to answer.
            for msg in batch:
                if not isinstance(msg, RecordDuration) and id(msg) not in handed:
                    msg.reply.close()

    async def _refresh(self, session_ids: set[str]) -> None:
        """Replace the totals in memory of ``session_ids`` with the shared store's (module
        docstring, "Several instances"); a failed read keeps those in memory (logged)."""
        shared = self._shared
        assert shared is not None
        hot = [sid for sid in session_ids if sid in self._sessions.hot]
        if not hot:
            return
        try:
            stored = await self._call(functools.partial(shared.totals, hot))
        except STORE_ERRORS as exc:
            log.warning("re-reading %d session(s)' totals from the shared ledger failed: %s", len(hot), exc)
            return
        for session_id, totals in stored.items():
            session = self._sessions.hot.get(session_id)
            if session is not None:
                session.totals = totals

    async def _load(self, session_ids: set[str]) -> set[str]:
        """Bring the stored sessions among ``session_ids`` into memory; returns those whose
        stored state could not be read (the read error degrades health)."""
        for session_id in session_ids & self._sessions.hot.keys():
            self._sessions.hot.move_to_end(session_id)
        cold = session_ids - self._sessions.hot.keys()
        if not cold:
            return set()
        assert self._store is not None
        store = self._store
        unreadable: set[str] = set()
        try:
            loaded = await self._call(functools.partial(store.load, cold))
        except STORE_ERRORS:
            # One session at a time, to fail only those on a bad page.
            loaded = {}
            for session_id in cold:
                try:
                    loaded.update(await self._call(functools.partial(store.load, (session_id,))))
                except STORE_ERRORS as exc:
                    unreadable.add(session_id)
                    self._condition.read_failed(session_id, exc)
        for session_id, stored in loaded.items():
            if session_id in self._sessions.hot:
                continue  # loaded meanwhile by the other task (inbox, retry), maybe changed since
            session = self._sessions.hot[session_id] = Session(stored.owner, stored.created_at, stored.totals, stored.user_name)
            session.provisional = stored.provisional
        self._condition.read_ok(cold - unreadable)
        return unreadable

    def _apply_contained(self, msg: SessionMsg) -> Callable[[bool], None] | None:
        """``LedgerSessions.apply``, a boundary per message: a failure is reported and answered ``fail``."""
        try:
            return self._sessions.apply(msg, shared=self._shared is not None)
        except Exception as exc:
            report_internal(log, self._metrics, "actor:CostLedger", f"message {type(msg).__name__}", exc)
            if isinstance(msg, RecordDuration):
                return None
            reply = msg.reply
            return lambda _committed: fail(reply, "CostLedger")

    async def _commit(self) -> bool:
        """Write everything pending in one transaction; True when it is all committed. A
        failure keeps it pending, ahead of what arrives meanwhile, and degrades the ledger."""
        async with self._commit_lock:
            if not self._sessions.dirty and not self._sessions.records and self._condition.write_error is None:
                return True
            assert self._store is not None
            now = self._now().isoformat()
            dirty, records = self._sessions.dirty, self._sessions.records
            # Taken out, so that what is applied during the write joins the next commit.
            self._sessions.dirty, self._sessions.records = set(), []
            sessions = [self._sessions.row(session_id, now) for session_id in dirty]
            try:
                await self._call(functools.partial(self._store.write, sessions, records))
            except STORE_ERRORS as exc:
                self._failed += 1
                self._sessions.dirty |= dirty
                self._sessions.records = records + self._sessions.records
                self._condition.commit_failed(exc, sessions=len(sessions))
                return False
            self._commits += 1
            # Only with nothing pending: a session reloaded from the store must be whole.
            if not self._sessions.dirty and not self._sessions.records:
                self._sessions.evict()
            self._condition.committed(len(records))
            return not self._sessions.dirty and not self._sessions.records

    async def _recover(self) -> None:
        """While the ledger is degraded, retry its commit and its failed reads with backoff
        on trio's clock. Runs until cancelled."""
        condition = self._condition
        while True:
            await condition.degraded.wait()
            waits = backoff()
            while not condition.healthy:
                await trio.sleep(next(waits))
                if condition.write_error is not None:
                    await self._commit()
                if condition.read_error is not None:
                    await self._load(set(condition.unreadable))
            condition.recovered()

    async def _last_commit(self) -> None:
        """At shutdown: one more try for what is pending; says loudly what is lost."""
        if not self._sessions.dirty and not self._sessions.records:
            return
        if await self._commit():
            return
        log.error(
            "cost ledger stopped with %d usage record(s) not committed (%s); they were reported "
            "as not recorded and are lost", len(self._sessions.records), self._condition.write_error,
        )
