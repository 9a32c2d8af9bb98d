"""RetrySupervisor: runs each query's attempts and decides, by the reference rules, what next.

Role:
    For each ``RunQuery``: run attempt after attempt through the StreamRelay; after a failed
    one, ask ``protocol.retry.decide`` (pure) whether to retry and how long to wait; announce
    every retry (``retry`` frame, from the first one), void a partial attempt (``tombstone``),
    and end the query with exactly one terminal frame: ``done``, ``error`` or ``aborted``.
Inbox (``RetrySupervisorMsg``):
    ``RunQuery`` (FrontDoor, Gateway): start a query; it runs in its own task.
    ``RunCountTokens`` (FrontDoor, Gateway): one count_tokens request.
Outputs:
    StreamRelay (``RunAttempt``, ``RunCount``), CostLedger (``RecordDuration``), each query's
    outbound channel (the query owns its clone and closes it when it ends).
Lifecycle:
    ``run`` opens its nursery and inbox, then ``task_status.started(address)``; when the inbox
    ends it lets the queries in flight finish, then returns.
Failure policy:
    The query's ``scope`` is its abort signal (abort, disconnect, takeover, shutdown): on
    cancel, the attempt in flight is cancelled, its usage collected (shielded, with a
    deadline) and an ``aborted`` frame sent with the usage and cost so far. A client that
    went away only means frames go nowhere; usage is still recorded.
Timers:
    Backoff sleeps on trio's clock (so a MockClock drives them); a ``heartbeat`` frame at
    least every ``HEARTBEAT_INTERVAL`` of a long wait.
"""

from __future__ import annotations

import logging
import random
from typing import Final, TypeAlias, assert_never, final

import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, answer
from actors.cost_ledger import CostLedgerAddress, RecordDuration
from actors.stream_relay import (
    AttemptOutcome,
    CountResult,
    RunAttempt,
    RunCount,
    StreamRelayAddress,
)
from protocol.assembly import usage_json
from protocol.frames import (
    Aborted,
    Done,
    ErrorFrame,
    GatewayFrame,
    Heartbeat,
    Query,
    RetryFrame,
    Tombstone,
)
from protocol.pricing import usd
from protocol.request import count_tokens_body, streaming_body
from protocol.retry import GiveUp, RetryPolicy, RetryState, decide
from protocol.usage import EMPTY_USAGE, Usage, add_usage
from protocol.wire import JsonObject

log = logging.getLogger("switchboard.supervisor")

# reference-client.md 1.1 HEARTBEAT_INTERVAL_MS; PROTOCOL.md: a heartbeat at least every 30 s
# of a wait, so a client never mistakes a long backoff for a hang.
HEARTBEAT_INTERVAL: Final = 30.0


class RunQuery(msgspec.Struct, frozen=True, kw_only=True):
    """``headers``: extra upstream headers of this query (the HTTP door forwards the client's
    ``anthropic-version`` and ``anthropic-beta``); they override the pool's defaults."""

    session_id: str
    query: Query
    scope: trio.CancelScope
    outbound: trio.MemorySendChannel[GatewayFrame]
    headers: tuple[tuple[str, str], ...] = ()


class RunCountTokens(msgspec.Struct, frozen=True, kw_only=True):
    query_id: str
    request: JsonObject
    reply: trio.MemorySendChannel[CountResult]
    headers: tuple[tuple[str, str], ...] = ()


RetrySupervisorMsg: TypeAlias = RunQuery | RunCountTokens
RetrySupervisorAddress: TypeAlias = trio.MemorySendChannel[RetrySupervisorMsg]


class _Totals:
    """A query's running usage and cost, across attempts (aborted ones included)."""

    __slots__ = ("cost_pico", "session_cost_pico", "usage")

    def __init__(self) -> None:
        self.usage: Usage = EMPTY_USAGE
        self.cost_pico = 0
        self.session_cost_pico: int | None = None

    def add(self, outcome: AttemptOutcome) -> None:
        self.usage = add_usage(self.usage, outcome.usage)
        self.cost_pico += outcome.cost_pico
        if outcome.session_cost_pico is not None:
            self.session_cost_pico = outcome.session_cost_pico


@final
class RetrySupervisor:
    """Runs queries with the reference client's retry rules (see the module docstring)."""

    def __init__(
        self,
        *,
        to_relay: StreamRelayAddress,
        to_ledger: CostLedgerAddress,
        max_retries: int,
        rng: random.Random,
    ) -> None:
        self._to_relay = to_relay
        self._to_ledger = to_ledger
        self._max_retries = max_retries
        self._rng = rng

    async def run(
        self, *, task_status: trio.TaskStatus[RetrySupervisorAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve queries until every address clone is closed. Startable."""
        address, inbox = trio.open_memory_channel[RetrySupervisorMsg](0)
        with self._to_relay, self._to_ledger:
            async with trio.open_nursery() as nursery:
                with inbox:
                    task_status.started(address)
                    async for msg in inbox:
                        match msg:
                            case RunQuery():
                                nursery.start_soon(self._query_task, msg)
                            case RunCountTokens():
                                nursery.start_soon(self._count_task, msg)
                            case _:
                                assert_never(msg)

    async def _count_task(self, msg: RunCountTokens) -> None:
        with msg.reply:
            send, receive = trio.open_memory_channel[CountResult](1)
            with receive:
                await self._to_relay.send(
                    RunCount(body=count_tokens_body(msg.request), headers=msg.headers, reply=send)
                )
                try:
                    result = await receive.receive()
                except trio.EndOfChannel:
                    return
            answer(msg.reply, result)

    async def _query_task(self, msg: RunQuery) -> None:
        totals = _Totals()
        with msg.outbound:
            terminal_sent = False
            with msg.scope:
                terminal_sent = await self._run(msg, totals)
            if not terminal_sent and msg.scope.cancelled_caught:
                frame = Aborted(id=msg.query.id, usage=usage_json(totals.usage), cost_usd=usd(totals.cost_pico))
                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    await _deliver(msg.outbound, frame)

    async def _run(self, msg: RunQuery, totals: _Totals) -> bool:
        """The attempt loop. Returns True once the terminal frame is delivered."""
        query = msg.query
        policy = RetryPolicy(
            max_retries=query.max_retries if query.max_retries is not None else self._max_retries
        )
        model = str(query.request["model"])
        started = trio.current_time()
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(msg, attempt, model, totals)
            failure = outcome.failure
            if failure is None and outcome.message is not None:
                duration = trio.current_time() - started
                await self._to_ledger.send(
                    RecordDuration(
                        session_id=msg.session_id,
                        duration_ms=round(duration * 1000),
                        duration_without_retries_ms=round(outcome.duration * 1000),
                    )
                )
                stop_reason = outcome.message.get("stop_reason")
                done = Done(
                    id=query.id,
                    model=model,
                    stop_reason=stop_reason if isinstance(stop_reason, str) else None,
                    message=outcome.message,
                    usage=usage_json(totals.usage),
                    cost_usd=usd(totals.cost_pico),
                    session_cost_usd=usd(totals.session_cost_pico or 0),
                    attempts=attempt,
                    duration_ms=round(duration * 1000),
                    duration_without_retries_ms=round(outcome.duration * 1000),
                )
                return await _deliver(msg.outbound, done)
            if failure is None:
                # Cancelled without our scope being cancelled: the client went away mid-stream.
                # Nobody is left to tell; the usage is recorded already.
                return False
            if outcome.relayed:
                if not await _deliver(msg.outbound, Tombstone(id=query.id, attempt=attempt)):
                    return False
            decision = decide(policy, RetryState(attempt=attempt), failure, self._rng.random())
            if isinstance(decision, GiveUp):
                log.info("query %s gives up after attempt %d: %s", query.id, attempt, failure.error_type)
                return await _deliver(msg.outbound, ErrorFrame(id=query.id, error=decision.error))
            log.info(
                "query %s attempt %d failed (%s %s); retrying in %.3fs",
                query.id, attempt, failure.status, failure.error_type, decision.delay,
            )
            retry = RetryFrame(
                id=query.id,
                attempt=attempt,
                max_retries=policy.max_retries,
                delay_ms=round(decision.delay * 1000),
                error=failure.info(),
            )
            if not await _deliver(msg.outbound, retry):
                return False
            await self._wait(msg, attempt, decision.delay)

    async def _attempt(self, msg: RunQuery, attempt: int, model: str, totals: _Totals) -> AttemptOutcome:
        """Run one attempt in the relay; on cancel, cancel it and still collect its usage."""
        scope = trio.CancelScope()
        send, receive = trio.open_memory_channel[AttemptOutcome](1)
        with receive:
            await self._to_relay.send(
                RunAttempt(
                    session_id=msg.session_id,
                    query_id=msg.query.id,
                    attempt=attempt,
                    model=model,
                    body=streaming_body(msg.query.request, model=model),
                    headers=msg.headers,
                    outbound=msg.outbound,
                    scope=scope,
                    reply=send,
                )
            )
            try:
                outcome = await receive.receive()
            except trio.EndOfChannel:
                return AttemptOutcome(model=model, aborted=True)
            except trio.Cancelled:
                scope.cancel(reason="query aborted")
                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    try:
                        totals.add(await receive.receive())
                    except trio.EndOfChannel:
                        pass
                raise
            totals.add(outcome)
            return outcome

    async def _wait(self, msg: RunQuery, attempt: int, delay: float) -> None:
        """Sleep ``delay`` on trio's clock, with a heartbeat frame every HEARTBEAT_INTERVAL."""
        deadline = trio.current_time() + delay
        while True:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                return
            if remaining > HEARTBEAT_INTERVAL:
                await trio.sleep(HEARTBEAT_INTERVAL)
                beat = Heartbeat(
                    id=msg.query.id,
                    attempt=attempt,
                    remaining_ms=max(round((deadline - trio.current_time()) * 1000), 0),
                )
                await _deliver(msg.outbound, beat)
            else:
                await trio.sleep_until(deadline)


async def _deliver(outbound: trio.MemorySendChannel[GatewayFrame], frame: GatewayFrame) -> bool:
    """Send a frame to the client; False when nobody listens any more. A checkpoint."""
    try:
        await outbound.send(frame)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True
