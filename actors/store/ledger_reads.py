"""The CostLedger's answers to the dashboard's reads (``ReadSpend``, ``ReadTop``,
``SessionOwners``; actors/cost_ledger.py, Inbox): read-only aggregations of its store and
the owners of the sessions in memory.

On a file each read runs in a task of its own (on its own worker thread, one at a time, at
most ``MAX_PENDING_READS`` waiting: more are refused), so a long read never holds the
ledger's inbox or a commit; in memory they run in turn in the ledger's batch. A read that
fails (``sqlite3.Error``) or is refused is logged and its reply dropped (the asker sees
``ActorUnavailable``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Final, Protocol, TypeVar, assert_never, final

import trio

from actors._util import answer, report_internal
from actors.messages.ledger import DashboardRead, ReadSpend, ReadTop, SessionOwners
from actors.observe.metrics import Metrics
from actors.store.ledger_sessions import LedgerSessions
from actors.store.rows import STORE_ERRORS, Store

log = logging.getLogger("switchboard.ledger")

# Dashboard reads waiting for the reading thread at most: a page polls every 5 s with 3
# reads, so this is a few pages at once; past it a read is refused (a 503 for that call)
# rather than queueing without bound behind a slow store.
MAX_PENDING_READS: Final = 16

T = TypeVar("T")


class StoreCall(Protocol):
    """How the ledger calls its store (on its worker thread, or in place)."""

    async def __call__(self, fn: Callable[[], T], /) -> T: ...


@final
class LedgerReads:
    """Answers the dashboard's reads of ``store`` (module docstring). ``readers``: the nursery
    the reads run apart in (a file), None: in turn, through ``call`` (in memory)."""

    def __init__(
        self,
        store: Store,
        sessions: LedgerSessions,
        *,
        call: StoreCall,
        readers: trio.Nursery | None,
        metrics: Metrics | None,
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._call = call
        self._readers = readers
        self._metrics = metrics
        self._read_limiter = trio.CapacityLimiter(1)
        self._pending_reads = 0

    async def serve(self, read: DashboardRead) -> bool:
        """Answer ``read`` now, or hand it to a task of its own (then True: its reply is that
        task's to close), or refuse it (too many wait already)."""
        if self._readers is None:
            await self._read(read)
        elif self._pending_reads < MAX_PENDING_READS:
            self._pending_reads += 1
            self._readers.start_soon(self._read_apart, read)
            return True
        else:
            log.warning("a dashboard read refused: %d reads wait already", self._pending_reads)
        return False

    async def _call_read(self, fn: Callable[[], T]) -> T:
        if self._readers is not None:
            return await trio.to_thread.run_sync(fn, limiter=self._read_limiter)
        return await self._call(fn)

    async def _read_apart(self, msg: DashboardRead) -> None:
        """``_read`` in a task of its own: a boundary (a failure is logged and counted, the
        asker sees ``ActorUnavailable``), and the reply is closed whatever happens."""
        try:
            await self._read(msg)
        except Exception as exc:
            report_internal(log, self._metrics, "actor:CostLedger", f"read {type(msg).__name__}", exc)
        finally:
            self._pending_reads -= 1
            msg.reply.close()

    async def _read(self, msg: DashboardRead) -> None:
        """Answer one dashboard read (actors/cost_ledger.py, Inbox)."""
        store = self._store
        hot = self._sessions.hot
        try:
            match msg:
                case ReadSpend():
                    rows = await self._call_read(functools.partial(store.spend, msg.since, msg.bucket, msg.scope))
                    answer(msg.reply, rows)
                case ReadTop():
                    top = await self._call_read(
                        functools.partial(store.top_sessions, msg.since, msg.scope, msg.limit)
                    )
                    owners = await self._call_read(
                        functools.partial(store.top_owners, msg.since, msg.scope, msg.limit)
                    )
                    answer(msg.reply, (top, owners))
                case SessionOwners():
                    found = {sid: hot[sid].owner for sid in msg.session_ids if sid in hot}
                    answer(msg.reply, found)
                case _:
                    assert_never(msg)
        except STORE_ERRORS as exc:
            log.warning("a dashboard read of the cost ledger failed: %s", exc)
