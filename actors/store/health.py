"""The CostLedger's health: whether it commits and reads, why not, and what that means for
new queries (docs/protocol.md, "Cost ledger faults").

``LedgerCondition`` is part of the CostLedger's state: only the ledger's tasks change it
(between checkpoints, so no lock). What others read is the snapshot it publishes,
``published``: an immutable ``LedgerHealth`` replaced as a whole at every change
(``report``); the Gateway reads its ``refusal`` for each new query and the HTTP door the rest
for ``/healthz``, neither a checkpoint. Every change is reported to the metrics
(``switchboard_ledger_*``) and each transition is logged once (a failure repeated by the
retry is logged at debug level).

Degraded means: a commit failed (``write_error``: the usage it held waits in memory; new
queries are refused unless failing open, and then too past ``MAX_PENDING_RECORDS``), or a
session's stored state could not be read (``read_error``: that session's requests fail,
others are served). ``degraded`` is set at the first of either; the ledger's retry task
waits on it, then retries with ``backoff`` until both clear.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Final, final

import msgspec
import trio

from actors.observe.metrics import Metrics

log = logging.getLogger("switchboard.ledger")

# A failed commit is retried after 0.5 s, then twice as long each time up to 15 s: a disk
# freed by hand is noticed within 15 s, and a dead disk costs one failing write per 15 s.
RETRY_INITIAL_INTERVAL: Final = 0.5
RETRY_MAX_INTERVAL: Final = 15.0
# Usage record versions kept in memory while the ledger cannot commit (two per upstream
# message, ~1 KiB each): failing open, past this many new queries are refused all the same,
# so a ledger down for days cannot take the process's memory with it.
MAX_PENDING_RECORDS: Final = 100_000


class LedgerHealth(msgspec.Struct, frozen=True, kw_only=True):
    """The ledger's health, for ``/healthz`` and the Gateway. ``committing`` False: commits
    fail (new queries are refused unless failing open); ``reason`` says what is wrong (no
    file path: ``/healthz`` needs no token); ``pending_records``: usage record versions
    waiting for a commit; ``refusal``: why a new query must be refused now (commits fail and
    the ledger does not fail open, or holds ``MAX_PENDING_RECORDS`` already), else None."""

    healthy: bool
    committing: bool
    reason: str | None = None
    pending_records: int = 0
    refusal: str | None = None


def backoff() -> Iterator[float]:
    """The retry task's waits: ``RETRY_INITIAL_INTERVAL`` doubling to ``RETRY_MAX_INTERVAL``."""
    interval = RETRY_INITIAL_INTERVAL
    while True:
        yield interval
        interval = min(2 * interval, RETRY_MAX_INTERVAL)


@final
class LedgerCondition:
    """Why the ledger cannot commit or read, if it cannot (see the module docstring).

    ``pending``: how many usage record versions wait for a commit now (the ledger's count).
    """

    def __init__(self, *, pending: Callable[[], int], metrics: Metrics | None, fail_open: bool) -> None:
        self._pending = pending
        self._metrics = metrics
        self._fail_open = fail_open
        self.write_error: str | None = None
        self.read_error: str | None = None
        # Sessions whose stored state could not be read.
        self.unreadable: set[str] = set()
        self.degraded = trio.Event()
        # The snapshot others read (module docstring); replaced by ``report``.
        self.published = LedgerHealth(healthy=True, committing=True)

    @property
    def healthy(self) -> bool:
        return self.write_error is None and self.read_error is None

    def _health(self) -> LedgerHealth:
        reasons = []
        if self.write_error is not None:
            reasons.append(f"cost ledger cannot commit: {self.write_error}")
        if self.read_error is not None:
            reasons.append(f"cost ledger cannot read {len(self.unreadable)} session(s): {self.read_error}")
        return LedgerHealth(
            healthy=not reasons,
            committing=self.write_error is None,
            reason="; ".join(reasons) or None,
            pending_records=self._pending(),
            refusal=self._refusal(),
        )

    def _refusal(self) -> str | None:
        if self.write_error is None:
            return None
        if self._fail_open and self._pending() < MAX_PENDING_RECORDS:
            return None
        return (
            f"the cost ledger cannot record usage ({self.write_error}); new queries are refused "
            "until it recovers (SWITCHBOARD_LEDGER_FAIL_OPEN=1 serves them unrecorded)"
        )

    def commit_failed(self, exc: Exception, *, sessions: int) -> None:
        if self._metrics is not None:
            self._metrics.ledger_commit_failed()
        if self.write_error is None:
            log.error(
                "cost ledger commit failed (%s); %d session(s) and %d usage record(s) kept in "
                "memory, the commit retried with backoff%s", exc, sessions, self._pending(),
                "" if self._fail_open else "; new queries are refused meanwhile",
            )
        else:
            log.debug("cost ledger commit failed again: %s", exc)
        self.write_error = str(exc)
        self.degraded.set()
        self.report()

    def committed(self, records: int) -> None:
        if self.write_error is not None:
            log.warning("cost ledger commits again: %d usage record(s) kept in memory are committed", records)
            self.write_error = None
        self.report()

    def read_failed(self, session_id: str, exc: Exception) -> None:
        log.error("cost ledger cannot read session %s (%s); its requests are refused", session_id, exc)
        if self._metrics is not None:
            self._metrics.ledger_read_failed()
        self.unreadable.add(session_id)
        self.read_error = str(exc)
        self.degraded.set()
        self.report()

    def read_ok(self, session_ids: set[str]) -> None:
        if not self.unreadable & session_ids:
            return
        self.unreadable -= session_ids
        if not self.unreadable:
            log.warning("cost ledger reads again")
            self.read_error = None
        self.report()

    def recovered(self) -> None:
        """The retry task saw both errors clear: the next degradation wakes it again."""
        self.degraded = trio.Event()

    def report(self) -> None:
        """Publish the health and what is pending now, and tell the metrics."""
        self.published = self._health()
        if self._metrics is not None:
            self._metrics.ledger_health(healthy=self.healthy, pending_records=self._pending())
