"""RetrySupervisor: runs each query's attempts and decides, by the reference rules, what next.

Role:
    For each ``RunQuery``: run attempt after attempt through the StreamRelay; after a failed
    one, ask ``protocol.retry.decide`` (pure) what to do. Announce every retry (``retry``
    frame, from the first one), void a partial attempt (``tombstone``), switch model after
    repeated overload (``fallback``), switch fast mode off (``fast_mode``), and end the query
    with exactly one terminal frame: ``done``, ``error`` or ``aborted``.
Inbox (``RetrySupervisorMsg``):
    ``RunQuery`` (FrontDoor, Gateway): start a query; it runs in its own task.
    ``RunCountTokens`` (FrontDoor, Gateway): one count_tokens request.
Outputs:
    StreamRelay (``RunAttempt``, ``RunCount``), ClientPool (``Refresh`` after a 401 or a
    revoked token, ``ReportBroken`` after a reset connection), CostLedger
    (``RecordDuration``), each query's outbound channel (the query owns its clone).
Shared state:
    ``SharedRetryState``: a per-model overload gate (no retry storms: while a model is
    overloaded, one probe at a time goes upstream and the other queries wait without
    spending attempts; see protocol/overload.py) and per-model fast-mode cooldowns.
Lifecycle:
    ``run`` opens its nursery and inbox, then ``task_status.started(address)``; when the inbox
    ends it lets the queries in flight finish, then returns.
Failure policy:
    The query's ``scope`` is its abort signal (abort, disconnect, takeover, shutdown): the
    attempt in flight is cancelled, its usage collected (shielded, with a deadline) and an
    ``aborted`` frame sent with the usage and cost so far. A client that went away only
    means frames go nowhere; usage is still recorded.
Timers:
    Backoff sleeps and gate waits on trio's clock (a MockClock drives them), with a
    ``heartbeat`` frame at least every ``HEARTBEAT_INTERVAL`` of any wait.
"""

from __future__ import annotations

import functools
import logging
import random
from typing import TypeAlias, assert_never, final

import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, answer, ask, inbox_messages
from actors.client_pool import ClientPoolAddress, Refresh, RefreshResult, ReportBroken
from actors.config import Config
from actors.cost_ledger import CostLedgerAddress, RecordDuration
from actors.metrics import Metrics
from actors.query_channel import (
    HEARTBEAT_INTERVAL,
    ClientGone,
    QueryTotals,
    deliver,
    epoch_ms,
    heartbeat,
    send,
    wait_with_heartbeats,
)
from actors.retry_shared import SharedRetryState
from actors.session_state import SessionRequestState, SessionStates
from actors.stream_relay import (
    AttemptOutcome,
    CountResult,
    RunAttempt,
    RunCount,
    StreamRelayAddress,
)
from protocol.assembly import usage_json
from protocol.betas import split_beta_header, with_beta_header
from protocol.caching import CacheBreak, PromptSnapshot, tracking_key
from protocol.frames import (
    Aborted,
    Done,
    ErrorFrame,
    Fallback,
    FastMode,
    GatewayFrame,
    Query,
    RetryFrame,
    Tombstone,
)
from protocol.models_catalog import resolve_model
from protocol.pricing import usd
from protocol.providers import metrics_label, route_provider
from protocol.recovery import Recovery, can_recover, combined, hit_output_limit, next_step
from protocol.request import strip_thinking, thinking_budget
from protocol.request_builder import (
    BuildSettings,
    build_request,
    count_tokens_request,
)
from protocol.retry import (
    Context,
    Failure,
    GiveUp,
    Retry,
    RetryPolicy,
    RetryState,
    SwitchModel,
    decide,
    is_auth_failure,
)
from protocol.wire import JsonObject

log = logging.getLogger("switchboard.supervisor")



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


@final
class RetrySupervisor:
    """Runs queries with the reference client's retry rules (see the module docstring)."""

    def __init__(
        self,
        *,
        config: Config,
        to_relay: StreamRelayAddress,
        to_ledger: CostLedgerAddress,
        to_pool: ClientPoolAddress,
        rng: random.Random,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics if metrics is not None else Metrics()
        self._to_relay = to_relay
        self._to_ledger = to_ledger
        self._to_pool = to_pool
        self._rng = rng
        self._shared: SharedRetryState | None = None
        # issue 5: request-construction latches, cache-break baselines and activity per session.
        self.sessions = SessionStates()
        # The builder shapes model ids and betas per provider: the default one, or the one
        # SWITCHBOARD_PROVIDER_ROUTES gives a model (one BuildSettings per provider).
        self._build = msgspec.structs.replace(config.build, provider=config.provider)
        self._build_for: dict[str, BuildSettings] = {config.provider: self._build}

    async def run(
        self, *, task_status: trio.TaskStatus[RetrySupervisorAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve queries until every address clone is closed. Startable."""
        self._shared = SharedRetryState(fast_mode_disabled=self._config.disable_fast_mode, metrics=self._metrics)
        address, inbox = trio.open_memory_channel[RetrySupervisorMsg](0)
        with self._to_relay, self._to_ledger, self._to_pool:
            async with trio.open_nursery() as nursery:
                with inbox:
                    task_status.started(address)
                    async for msg in inbox_messages(inbox):
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
            headers, client_betas = split_beta_header(msg.headers)
            settings = self._settings(str(msg.request.get("model")))
            built = count_tokens_request(msg.request, settings=settings, client_betas=client_betas)
            with receive:
                await self._to_relay.send(
                    RunCount(body=built.body, headers=with_beta_header(headers, built.betas), reply=send)
                )
                try:
                    result = await receive.receive()
                except trio.EndOfChannel:
                    return
            answer(msg.reply, result)

    async def _query_task(self, msg: RunQuery) -> None:
        totals = QueryTotals()
        started = trio.current_time()
        self._metrics.query_started()
        self.sessions.started(msg.session_id)
        try:
            with msg.outbound:
                terminal_sent = False
                with msg.scope:
                    try:
                        terminal_sent = await self._run(msg, totals)
                    except ClientGone:
                        pass
                if not terminal_sent and msg.scope.cancelled_caught:
                    frame = Aborted(id=msg.query.id, usage=usage_json(totals.usage), cost_usd=usd(totals.cost_pico))
                    with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                        await deliver(msg.outbound, frame)
        finally:
            self.sessions.finished(msg.session_id, trio.current_time())
            requested_model = str(msg.query.request.get("model"))
            self._metrics.query_finished(
                self._api_model(requested_model),
                metrics_label(self._settings(requested_model).provider),
                totals.outcome,
                trio.current_time() - started,
                error_type=totals.error_type,
            )

    def _settings(self, requested: str) -> BuildSettings:
        """The build settings for the provider that serves the model ``requested``."""
        provider = route_provider(requested, self._config.provider_routes) or self._config.provider
        settings = self._build_for.get(provider)
        if settings is None:
            settings = self._build_for[provider] = msgspec.structs.replace(self._build, provider=provider)
        return settings

    def _api_model(self, requested: str) -> str:
        """The id ``requested`` is sent upstream as (aliases and ``[1m]`` resolved)."""
        build = self._settings(requested)
        return resolve_model(requested, build.models, build.provider).api_id

    def _policy(self, query: Query) -> RetryPolicy:
        config = self._config
        persistent = config.unattended_retry or (bool(query.persistent) and config.allow_persistent_queries)
        return RetryPolicy(
            max_retries=query.max_retries if query.max_retries is not None else config.max_retries,
            source=query.source,
            fallback_model=self._api_model(query.fallback_model) if query.fallback_model else None,
            persistent=persistent,
            fallback_for_all_models=config.fallback_for_all_models,
            nonstreaming_fallback=config.nonstreaming_fallback,
        )

    async def _run(self, msg: RunQuery, totals: QueryTotals) -> bool:
        """The attempt loop. Returns True once the terminal frame is delivered.

        Raises:
            ClientGone: the client went away; the query just stops.
        """
        assert self._shared is not None
        shared = self._shared
        query = msg.query
        policy = self._policy(query)
        request = query.request
        fast_requested = bool(query.fast_mode) and not shared.fast_mode_disabled
        session = self.sessions.get(msg.session_id)
        base_headers, client_betas = split_beta_header(msg.headers)
        # The model as sent upstream (aliases and [1m] resolved): gates, prices and the
        # frames all name it.
        state = RetryState(model=self._api_model(str(request["model"])), fast_mode=fast_requested)
        # What the client named each model as: the builder needs the [1m] marker back.
        requested = {state.model: str(request["model"])}
        if query.fallback_model and policy.fallback_model:
            requested.setdefault(policy.fallback_model, query.fallback_model)
        started = trio.current_time()
        cooldown_announced = False
        recovery = Recovery()
        while True:
            state = state.next_attempt()
            probe = await shared.wait_turn(
                state.model, functools.partial(heartbeat, msg.outbound, query.id, state.attempt), HEARTBEAT_INTERVAL
            )
            cooldown = shared.fast_cooldown_until(state.model) if state.fast_mode else None
            fast_active = state.fast_mode and cooldown is None and not shared.fast_mode_disabled
            if state.fast_mode and not fast_active and not cooldown_announced:
                cooldown_announced = True
                await send(msg.outbound, FastMode(id=query.id, active=False, reason="cooldown", until_ms=epoch_ms(cooldown)))
            # The fast-mode beta is latched for the session once asked for (reference 7.4:
            # toggling it would break the prompt cache); only the body's speed field follows
            # cooldowns.
            client_model = requested.get(state.model, state.model)
            built, session.latch = build_request(
                request,
                settings=self._settings(client_model),
                latch=session.latch,
                source=query.source,
                model=client_model,
                max_tokens=state.max_tokens_override,
                fast=fast_active,
                fast_requested=fast_requested,
                client_betas=client_betas,
            )
            for note in built.notes if state.attempt == 1 else ():
                log.info("query %s: %s", query.id, note)
            body = built.body
            headers = with_beta_header(base_headers, built.betas)
            outcome: AttemptOutcome | None = None
            decision: Retry | SwitchModel | GiveUp | None = None
            withhold = bool(query.recover) and can_recover(recovery, request)
            try:
                outcome = await self._attempt(msg, state, body, headers, totals, withhold, recovery, started)
                if outcome.failure is not None:
                    decision = await self._decide(policy, state, outcome.failure, fast_active, request, outcome)
            finally:
                # Whatever happened (an abort included), the model's gate learns of it.
                shared.report(state.model, probe=probe, outcome=outcome, decision=decision)
            failure = outcome.failure
            if failure is None:
                if outcome.message is None:
                    # Cancelled without our scope being cancelled: the client went away.
                    raise ClientGone
                if withhold and hit_output_limit(outcome.message):
                    step, recovery, request = next_step(recovery, request, outcome.message)
                    log.info("query %s hit the output limit; recovering (%s)", query.id, step)
                    if step == "escalate" and outcome.relayed:
                        await send(msg.outbound, Tombstone(id=query.id, attempt=state.attempt))
                    state = msgspec.structs.replace(state, loop_attempt=0)
                    continue
                message = combined(recovery, outcome.message)
                cache_break = self._check_cache(session, query.source, built.snapshot, outcome)
                return await self._done(
                    msg, state, msgspec.structs.replace(outcome, message=message), totals, started, cache_break
                )
            assert decision is not None
            if outcome.relayed:
                await send(msg.outbound, Tombstone(id=query.id, attempt=state.attempt))
            match decision:
                case GiveUp():
                    log.info("query %s gives up after attempt %d: %s", query.id, state.attempt, decision.error.type)
                    totals.outcome, totals.error_type = "error", decision.error.type
                    return await deliver(msg.outbound, ErrorFrame(id=query.id, error=decision.error))
                case SwitchModel():
                    log.warning("query %s: %s overloaded, falling back to %s", query.id, state.model, decision.to_model)
                    self._metrics.fallback(state.model, decision.to_model)
                    await send(
                        msg.outbound,
                        Fallback(id=query.id, from_model=state.model, to_model=decision.to_model, reason=decision.reason),
                    )
                    request = strip_thinking(request)
                    state = decision.state
                case Retry():
                    if decision.fast_mode_off is not None:
                        await self._fast_mode_off(msg, state.model, decision)
                    log.info(
                        "query %s attempt %d failed (%s %s); retrying in %.3fs",
                        query.id, state.attempt, failure.status, failure.error_type, decision.delay,
                    )
                    retry = RetryFrame(
                        id=query.id,
                        attempt=state.attempt,
                        max_retries=policy.max_retries,
                        delay_ms=round(decision.delay * 1000),
                        error=failure.info(),
                    )
                    self._metrics.retried(failure.error_type)
                    await send(msg.outbound, retry)
                    await wait_with_heartbeats(msg.outbound, query.id, state.attempt, decision.delay)
                    state = decision.state
                case _:
                    assert_never(decision)

    async def _decide(
        self,
        policy: RetryPolicy,
        state: RetryState,
        failure: Failure,
        fast_active: bool,
        request: JsonObject,
        outcome: AttemptOutcome,
    ) -> Retry | SwitchModel | GiveUp:
        """Tell the pool what it must know, then ask the pure rules."""
        refreshed: bool | None = None
        if is_auth_failure(failure):
            result: RefreshResult = await ask(
                self._to_pool, lambda reply: Refresh(generation=outcome.generation, reply=reply)
            )
            refreshed = result.changed
        if failure.stale:
            await self._to_pool.send(ReportBroken())
        assert self._shared is not None
        ctx = Context(
            now=self._shared.wall_now(),
            rand=self._rng.random(),
            fast_mode_active=fast_active,
            credential_refreshed=refreshed,
            thinking_budget=thinking_budget(request),
        )
        return decide(policy, state, failure, ctx)

    async def _fast_mode_off(self, msg: RunQuery, model: str, decision: Retry) -> None:
        assert self._shared is not None
        if decision.cooldown_until is not None:
            self._shared.start_fast_cooldown(model, decision.cooldown_until)
        if decision.fast_mode_permanent:
            log.warning("fast mode switched off for good: %s", decision.fast_mode_off)
            self._shared.fast_mode_disabled = True
        frame = FastMode(
            id=msg.query.id, active=False, reason=decision.fast_mode_off or "", until_ms=epoch_ms(decision.cooldown_until)
        )
        await send(msg.outbound, frame)

    def _check_cache(
        self, session: SessionRequestState, source: str, snapshot: PromptSnapshot, outcome: AttemptOutcome
    ) -> CacheBreak | None:
        """reference 7.5 phase 2 on the answer's cache reads; a break is logged. Diagnostics only."""
        assert self._shared is not None
        found = session.check_response(
            tracking_key(source), snapshot, cache_read=outcome.usage.cache_read_input_tokens, now=self._shared.wall_now()
        )
        if found is not None:
            log.info(
                "[PROMPT CACHE BREAK] %s [source=%s, cache read: %d → %d]",
                found.reason, source, found.cache_read_before, found.cache_read_after,
            )
        return found

    async def _done(
        self,
        msg: RunQuery,
        state: RetryState,
        outcome: AttemptOutcome,
        totals: QueryTotals,
        started: float,
        cache_break: CacheBreak | None = None,
    ) -> bool:
        assert outcome.message is not None
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
            id=msg.query.id,
            model=state.model,
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            message=outcome.message,
            usage=usage_json(totals.usage),
            cost_usd=usd(totals.cost_pico),
            session_cost_usd=usd(totals.session_cost_pico or 0),
            attempts=state.attempt,
            duration_ms=round(duration * 1000),
            duration_without_retries_ms=round(outcome.duration * 1000),
            cache_break=cache_break,
        )
        totals.outcome = "done"
        return await deliver(msg.outbound, done)

    async def _attempt(
        self,
        msg: RunQuery,
        state: RetryState,
        body: JsonObject,
        headers: tuple[tuple[str, str], ...],
        totals: QueryTotals,
        withhold: bool,
        recovery: Recovery,
        started: float,
    ) -> AttemptOutcome:
        """Run one attempt in the relay; on cancel, cancel it and still collect its usage."""
        scope = trio.CancelScope()
        send, receive = trio.open_memory_channel[AttemptOutcome](1)
        with receive:
            await self._to_relay.send(
                RunAttempt(
                    session_id=msg.session_id,
                    query_id=msg.query.id,
                    attempt=state.attempt,
                    model=state.model,
                    body=body,
                    headers=headers,
                    streaming=state.streaming,
                    withhold_output_limit=withhold,
                    index_offset=recovery.index_offset,
                    continuation=bool(recovery.content),
                    query_started=started,
                    measure_first_token=not totals.content_seen,
                    outbound=msg.outbound,
                    scope=scope,
                    reply=send,
                )
            )
            try:
                outcome = await receive.receive()
            except trio.EndOfChannel:
                return AttemptOutcome(model=state.model, aborted=True)
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
