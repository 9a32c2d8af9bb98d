"""The CostLedger's sessions in memory: each session's owner, totals and provisional records,
pricing usage records into them, and what is pending for the store (the session rows and
usage records the next commit writes, actors/cost_ledger.py "Group commit").

Only the CostLedger's tasks use it, between checkpoints (no lock). Sessions are kept in an
LRU of ``MAX_HOT_SESSIONS``; the ledger evicts (``evict``) only with nothing pending, so a
session reloaded from the store is whole.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, assert_never, final

import msgspec

from actors._util import answer
from actors.messages.ledger import (
    GetCost,
    OpenSession,
    RecordDuration,
    RecordUsage,
    SessionMsg,
    SessionOpened,
    UsageRecorded,
)
from actors.observe.metrics import Metrics
from actors.store.rows import RecordWrite, SessionRow
from protocol.ledger import RecordPart, SessionTotals, record_parts
from protocol.pricing import usd
from protocol.usage import MAX_TOKEN_COUNT, Usage

log = logging.getLogger("switchboard.ledger")

# Sessions kept in memory; older ones are reloaded from the store when used again.
MAX_HOT_SESSIONS: Final = 4096


def owner_digest(token: str | None) -> str | None:
    """What the ledger keeps of an access token: a digest, never the token itself."""
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


class Session:
    __slots__ = ("created_at", "finals", "owner", "provisional", "totals", "user")

    def __init__(
        self, owner: str | None, created_at: str, totals: SessionTotals | None = None, user: str | None = None
    ) -> None:
        self.owner = owner
        self.user = user
        self.created_at = created_at
        self.totals = totals if totals is not None else SessionTotals()
        self.provisional: dict[str, tuple[RecordPart, ...]] = {}
        # Final record ids seen in this process: a repeated final version is not counted twice.
        self.finals: set[str] = set()


@final
class LedgerSessions:
    """The sessions in memory (an LRU, ``hot``) and what the next commit writes: the sessions
    changed (``dirty``) and the usage records (``records``). ``now``: the wall clock, for
    price dates and timestamps."""

    def __init__(self, now: Callable[[], datetime.datetime], metrics: Metrics | None) -> None:
        self._now = now
        self._metrics = metrics
        self.hot: OrderedDict[str, Session] = OrderedDict()
        self.dirty: set[str] = set()
        self.records: list[RecordWrite] = []

    def apply(self, msg: SessionMsg, *, shared: bool) -> Callable[[bool], None] | None:
        """Change the state for one message; return its reply, to send after the commit with
        whether the commit succeeded. ``shared``: the store is a ``SharedStore``, whose totals
        the ledger re-reads before replying (actors/cost_ledger.py, "Several instances")."""
        match msg:
            case OpenSession():
                found = self.hot.get(msg.session_id)
                resumed = found is not None
                session = found if found is not None else self.create(msg.session_id, msg.owner, msg.user)
                # A session created without a token (none were configured) belongs to
                # nobody once tokens are: no token may take it (docs/protocol.md 1).
                owner_ok = not resumed or session.owner == msg.owner
                # The summary is taken at reply time: a shared store's totals are re-read
                # after the commit (actors/cost_ledger.py, "Several instances").
                return lambda _committed: answer(
                    msg.reply,
                    SessionOpened(resumed=resumed, owner_ok=owner_ok, cost=session.totals.summary(msg.session_id)),
                )
            case RecordUsage():
                recorded = self.record(msg)
                if not shared:
                    return lambda committed: answer(msg.reply, msgspec.structs.replace(recorded, recorded=committed))
                shared_session = self.session(msg.session_id)
                return lambda committed: answer(
                    msg.reply,
                    msgspec.structs.replace(
                        recorded, recorded=committed, session_cost_pico=shared_session.totals.total_pico
                    ),
                )
            case RecordDuration():
                session = self.session(msg.session_id)
                session.totals.add_duration(msg.duration_ms, msg.duration_without_retries_ms)
                self.dirty.add(msg.session_id)
                return None
            case GetCost():
                known = self.hot.get(msg.session_id)
                return lambda _committed: answer(
                    msg.reply, (known.totals if known is not None else SessionTotals()).summary(msg.session_id)
                )
            case _:
                assert_never(msg)

    def create(self, session_id: str, owner: str | None, user: str | None = None) -> Session:
        session = self.hot[session_id] = Session(owner, self._now().isoformat(), user=user)
        self.dirty.add(session_id)
        return session

    def session(self, session_id: str) -> Session:
        session = self.hot.get(session_id)
        return session if session is not None else self.create(session_id, None)

    def record(self, msg: RecordUsage) -> UsageRecorded:
        session = self.session(msg.session_id)
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
            return UsageRecorded(
                cost_pico=cost, session_cost_pico=session.totals.total_pico, unknown_model=unknown, recorded=True
            )
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
        self.records.append(
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
        # Its ``recorded`` is the commit's outcome, set by the reply (``apply``).
        return UsageRecorded(
            cost_pico=cost, session_cost_pico=session.totals.total_pico, unknown_model=unknown, recorded=False
        )

    def unrecorded(self, msg: RecordUsage) -> UsageRecorded:
        """The answer to a usage record of a session that cannot be read: priced, said to be
        unrecorded, and logged so that a person can reconcile it."""
        parts = record_parts(msg.usage, msg.model, on=self._now().date().isoformat(), long_context=msg.long_context)
        cost = sum(part.cost_pico for part in parts)
        log.error(
            "session %s: usage of query %s attempt %s not recorded (the session cannot be read "
            "from the ledger): %s, $%.6f", msg.session_id, msg.query_id, msg.attempt, msg.usage, usd(cost),
        )
        return UsageRecorded(
            cost_pico=cost, session_cost_pico=cost, unknown_model=any(p.unknown_model for p in parts), recorded=False
        )

    def row(self, session_id: str, now: str) -> SessionRow:
        session = self.hot[session_id]
        return SessionRow(
            session_id=session_id,
            owner=session.owner,
            created_at=session.created_at,
            updated_at=now,
            api_duration_ms=session.totals.api_duration_ms,
            api_duration_without_retries_ms=session.totals.api_duration_without_retries_ms,
            user_name=session.user,
        )

    def evict(self) -> None:
        """Drop the least recently used sessions past ``MAX_HOT_SESSIONS`` (the ledger calls it
        only with nothing pending: a session reloaded from the store must be whole)."""
        while len(self.hot) > MAX_HOT_SESSIONS:
            self.hot.popitem(last=False)


def _part_usage(part: RecordPart) -> Usage:
    return Usage(
        input_tokens=part.input_tokens,
        output_tokens=part.output_tokens,
        cache_creation_input_tokens=part.cache_creation_input_tokens,
        cache_creation_1h_input_tokens=part.cache_creation_1h_input_tokens,
        cache_read_input_tokens=part.cache_read_input_tokens,
    )
