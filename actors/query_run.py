"""One query's run for the RetrySupervisor: attempts through the StreamRelay, one terminal frame.

The supervisor makes one ``QueryRun`` per ``RunQuery`` and runs it in a task of its nursery;
its module docstring gives the contract (the frames, the abort, the timers). A run owns its
query: the ``RunQuery`` (it closes the query's outbound clone) and the ``QueryTotals``. The
rest it shares with the supervisor's other tasks, with no lock since every change happens
between checkpoints: the ``SharedRetryState``, the ``SessionStates``, the ``ProviderBuilds``,
the metrics, and the addresses of the StreamRelay, the ClientPool and the CostLedger (the
supervisor closes them).

A run is the query's supervision boundary (docs/supervision.md): an unexpected exception in
it, or an attempt the StreamRelay reports as ``internal_error``, ends the query with an
``error`` frame of that type (after a ``tombstone`` when the attempt had relayed events),
logged once with the query id and counted in ``switchboard_internal_errors_total``.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from typing import assert_never, final

import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, ask, internal_error_info, report_internal
from actors.admission import wait_for_slot
from actors.attempt_build import attempt_request, run_attempt, upstream_model
from actors.config import Config
from actors.drain import QUEUED_SHUTTING_DOWN_ERROR, SHUTTING_DOWN, SHUTTING_DOWN_ERROR, Drain
from actors.messages.ledger import CostLedgerAddress, RecordDuration
from actors.messages.pool import ClientPoolAddress, Refresh, RefreshResult, ReportBroken
from actors.messages.relay import AttemptOutcome, StreamRelayAddress
from actors.messages.supervisor import RunQuery
from actors.metrics import Metrics
from actors.provider_builds import ProviderBuilds
from actors.query_channel import (
    HEARTBEAT_INTERVAL,
    QueryTotals,
    deliver,
    epoch_ms,
    heartbeat,
    send,
    wait_with_heartbeats,
)
from actors.retry_shared import Refused, SharedRetryState
from actors.session_state import SessionRequestState, SessionStates
from protocol.assembly import usage_json
from protocol.caching import CacheBreak, PromptSnapshot, tracking_key
from protocol.errors import INTERNAL_ERROR, ClientGone, InternalError
from protocol.frames import (
    Aborted,
    Done,
    ErrorFrame,
    ErrorInfo,
    Fallback,
    FastMode,
    RetryFrame,
    Tombstone,
)
from protocol.passthrough import gate_refusal, out_of_time
from protocol.pricing import usd
from protocol.providers import metrics_label
from protocol.recovery import Recovery, can_recover, combined, hit_output_limit, next_step
from protocol.request import strip_thinking, thinking_budget
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
    terminal_error,
)
from protocol.wire import JsonObject

# The supervisor's logger: the runs are its work.
log = logging.getLogger("switchboard.supervisor")


@final
class QueryRun:
    """One query's attempt loop with the reference client's retry rules (see the module
    docstring). Use once: ``run``."""

    __slots__ = (
        "_builds", "_config", "_drain", "_metrics", "_msg", "_rng", "_sessions", "_shared",
        "_to_ledger", "_to_pool", "_to_relay", "_totals",
    )

    def __init__(
        self,
        msg: RunQuery,
        *,
        config: Config,
        shared: SharedRetryState,
        sessions: SessionStates,
        builds: ProviderBuilds,
        metrics: Metrics,
        rng: random.Random,
        to_relay: StreamRelayAddress,
        to_ledger: CostLedgerAddress,
        to_pool: ClientPoolAddress,
        drain: Drain | None = None,
    ) -> None:
        self._msg = msg
        self._drain = drain
        self._totals = QueryTotals()
        self._config = config
        self._shared = shared
        self._sessions = sessions
        self._builds = builds
        self._metrics = metrics
        self._rng = rng
        self._to_relay = to_relay
        self._to_ledger = to_ledger
        self._to_pool = to_pool

    async def run(self) -> None:
        """Run the query to its end, then close its outbound clone. Sends exactly one
        terminal frame unless the client went away; counts the query in the metrics and in
        its session's activity."""
        msg = self._msg
        totals = self._totals
        started = trio.current_time()
        self._metrics.query_started()
        self._sessions.started(msg.session_id)
        try:
            with msg.outbound:
                terminal_sent = False
                with msg.scope:
                    try:
                        terminal_sent = await self._admitted_run()
                    except ClientGone:
                        pass
                    except Exception as exc:
                        terminal_sent = await self._internal_error(exc)
                if not terminal_sent and msg.scope.cancelled_caught:
                    with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                        await deliver(msg.outbound, self._cancelled_frame())
        finally:
            if msg.on_end is not None:
                msg.on_end(totals.cost_pico)
            if self._drain is not None:
                self._drain.query_ended(msg.scope)
            self._sessions.finished(msg.session_id, trio.current_time())
            requested_model = str(msg.query.request.get("model"))
            self._metrics.query_finished(
                self._builds.api_model(requested_model),
                metrics_label(self._builds.settings(requested_model).provider),
                totals.outcome,
                trio.current_time() - started,
                error_type=totals.error_type,
            )

    async def _admitted_run(self) -> bool:
        """``_run`` once the query holds a slot (actors/admission.py: it may wait in line
        first); a query whose place in line a shutdown refused ends with ``error``
        ``shutting_down`` instead. Returns True once the terminal frame is delivered."""
        msg = self._msg
        drain = self._drain
        ticket = drain.ticket(msg.scope) if drain is not None else None
        if drain is not None and ticket is not None:
            if not await wait_for_slot(drain.admission, ticket, msg.outbound, msg.query.id):
                self._totals.outcome, self._totals.error_type = "error", SHUTTING_DOWN
                return await deliver(msg.outbound, ErrorFrame(id=msg.query.id, error=QUEUED_SHUTTING_DOWN_ERROR))
        return await self._run()

    def _cancelled_frame(self) -> Aborted | ErrorFrame:
        """The terminal frame of a query whose scope was cancelled: ``aborted`` with its
        usage so far, or ``error`` ``shutting_down`` when the shutdown's cut-off ended it."""
        msg = self._msg
        totals = self._totals
        if self._drain is not None and self._drain.ended_by_shutdown(msg.scope):
            totals.outcome, totals.error_type = "error", SHUTTING_DOWN
            return ErrorFrame(id=msg.query.id, error=SHUTTING_DOWN_ERROR)
        return Aborted(
            id=msg.query.id,
            usage=usage_json(totals.usage),
            cost_usd=usd(totals.cost_pico),
            cost_recorded=totals.cost_recorded,
        )

    async def _internal_error(self, exc: Exception) -> bool:
        """End the query with ``internal_error``: the boundary of docs/supervision.md."""
        msg = self._msg
        report_internal(log, self._metrics, "query", f"query {msg.query.id}", exc)
        self._totals.outcome, self._totals.error_type = "error", INTERNAL_ERROR
        return await deliver(msg.outbound, ErrorFrame(id=msg.query.id, error=internal_error_info(exc)))

    def _policy(self) -> RetryPolicy:
        config = self._config
        query = self._msg.query
        persistent = config.unattended_retry or (bool(query.persistent) and config.allow_persistent_queries)
        return RetryPolicy(
            max_retries=query.max_retries if query.max_retries is not None else config.max_retries,
            source=query.source,
            fallback_model=self._builds.api_model(query.fallback_model) if query.fallback_model else None,
            persistent=persistent,
            fallback_for_all_models=config.fallback_for_all_models,
            nonstreaming_fallback=config.nonstreaming_fallback,
            catalog=self._builds.catalog,
            client_retries=self._msg.options.client_retries,
        )

    async def _run(self) -> bool:
        """The attempt loop. Returns True once the terminal frame is delivered.

        Raises:
            ClientGone: the client went away; the query just stops.
        """
        msg = self._msg
        shared = self._shared
        query = msg.query
        options = msg.options
        policy = self._policy()
        request = query.request
        fast_requested = bool(query.fast_mode) and not shared.fast_mode_disabled
        session = self._sessions.get(msg.session_id)
        # The model as sent upstream (aliases and [1m] resolved): gates, prices and the
        # frames all name it.
        state = RetryState(model=upstream_model(self._builds, str(request["model"]), options), fast_mode=fast_requested)
        # What the client named each model as: the builder needs the [1m] marker back.
        requested = {state.model: str(request["model"])}
        if query.fallback_model and policy.fallback_model:
            requested.setdefault(policy.fallback_model, query.fallback_model)
        started = trio.current_time()
        deadline = math.inf if options.deadline is None else options.deadline
        last: Failure | None = None
        cooldown_announced = False
        recovery = Recovery()
        first = True
        while True:
            state = state.next_attempt()
            if not first and msg.top_up is not None:
                # Every attempt is billed: the budget covers this one before it runs.
                refused = await msg.top_up({**request, "model": requested.get(state.model, state.model)})
                if refused is not None:
                    return await self._fail(refused)
            first = False
            if options.client_retries:
                wait_until = min(deadline, started + self._config.api_timeout)
                turn = await shared.client_turn(state.model, wait_until - trio.current_time())
                if isinstance(turn, Refused):
                    return await self._turned_away(state, turn.retry_after)
                probe: bool | None = turn
            else:
                probe = await shared.wait_turn(
                    state.model,
                    functools.partial(heartbeat, msg.outbound, query.id, state.attempt),
                    HEARTBEAT_INTERVAL,
                    deadline,
                )
            if probe is None:
                return await self._out_of_time(state, last)
            cooldown = shared.fast_cooldown_until(state.model) if state.fast_mode else None
            fast_active = state.fast_mode and cooldown is None and not shared.fast_mode_disabled
            if state.fast_mode and not fast_active and not cooldown_announced:
                cooldown_announced = True
                await send(msg.outbound, FastMode(id=query.id, active=False, reason="cooldown", until_ms=epoch_ms(cooldown)))
            # The fast-mode beta is latched for the session once asked for (reference 7.4:
            # toggling it would break the prompt cache); only the body's speed field follows
            # cooldowns.
            built = attempt_request(
                request,
                original=query.request,
                options=options,
                headers=msg.headers,
                state=state,
                client_model=requested.get(state.model, state.model),
                source=query.source,
                session=session,
                builds=self._builds,
                fast_active=fast_active,
                fast_requested=fast_requested,
            )
            for note in built.notes if state.attempt == 1 else ():
                log.info("query %s: %s", query.id, note)
            outcome: AttemptOutcome | None = None
            decision: Retry | SwitchModel | GiveUp | None = None
            withhold = bool(query.recover) and can_recover(recovery, request)
            try:
                outcome = await run_attempt(
                    self._to_relay, msg, self._totals, state, built, withhold=withhold, recovery=recovery, started=started,
                    on_accepted=functools.partial(shared.accepted, state.model) if probe else None,
                )
                if outcome.failure is not None:
                    decision = await self._decide(policy, state, outcome.failure, fast_active, request, outcome)
            finally:
                # Whatever happened (an abort included), the model's gate learns of it.
                shared.report(state.model, probe=probe, outcome=outcome, decision=decision)
            if outcome.internal_error is not None:
                # The relay logged and counted it; the query ends with it.
                if outcome.relayed:
                    await send(msg.outbound, Tombstone(id=query.id, attempt=state.attempt))
                raise InternalError(outcome.internal_error)
            failure = outcome.failure
            last = failure or last
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
                cache_break = self._check_cache(session, query.source, built.snapshot, outcome) if built.snapshot else None
                return await self._done(state, msgspec.structs.replace(outcome, message=message), started, cache_break)
            assert decision is not None
            if outcome.relayed:
                await send(msg.outbound, Tombstone(id=query.id, attempt=state.attempt))
            match decision:
                case GiveUp():
                    log.info("query %s gives up after attempt %d: %s", query.id, state.attempt, decision.error.type)
                    return await self._fail(decision.error)
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
                    if trio.current_time() + decision.delay >= deadline:
                        return await self._out_of_time(state, failure)
                    if decision.fast_mode_off is not None:
                        await self._fast_mode_off(state.model, decision)
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

    async def _turned_away(self, state: RetryState, wait: float | None) -> bool:
        """A client that retries on its own, at an overload gate it may not pass yet: a 529
        at once, with when the gate's next probe is due (docs/protocol.md 2, "Retries")."""
        error, headers = gate_refusal(state.model, wait)
        self._metrics.gate_answered(state.model)
        if self._msg.options.heads is not None:
            self._msg.options.heads.record(state.attempt, headers)
        log.info("query %s answered by the overload gate of %s (wait %s)", self._msg.query.id, state.model, wait)
        return await self._fail(error)

    async def _out_of_time(self, state: RetryState, last: Failure | None) -> bool:
        """The client's own timeout is near (``QueryOptions.deadline``): end with the last
        error rather than hold the client past it; before any attempt, with an overload."""
        log.info("query %s gives up before its client's timeout (attempt %d)", self._msg.query.id, state.attempt)
        return await self._fail(terminal_error(last) if last is not None else out_of_time(state.model))

    async def _fail(self, error: ErrorInfo) -> bool:
        self._totals.outcome, self._totals.error_type = "error", error.type
        return await deliver(self._msg.outbound, ErrorFrame(id=self._msg.query.id, error=error))

    async def _decide(
        self, policy: RetryPolicy, state: RetryState, failure: Failure, fast_active: bool,
        request: JsonObject, outcome: AttemptOutcome,
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
        ctx = Context(
            now=self._shared.wall_now(),
            rand=self._rng.random(),
            fast_mode_active=fast_active,
            credential_refreshed=refreshed,
            thinking_budget=thinking_budget(request),
        )
        return decide(policy, state, failure, ctx)

    async def _fast_mode_off(self, model: str, decision: Retry) -> None:
        if decision.cooldown_until is not None:
            self._shared.start_fast_cooldown(model, decision.cooldown_until)
        if decision.fast_mode_permanent:
            log.warning("fast mode switched off for good: %s", decision.fast_mode_off)
            self._shared.fast_mode_disabled = True
        msg = self._msg
        frame = FastMode(
            id=msg.query.id, active=False, reason=decision.fast_mode_off or "", until_ms=epoch_ms(decision.cooldown_until)
        )
        await send(msg.outbound, frame)

    def _check_cache(
        self, session: SessionRequestState, source: str, snapshot: PromptSnapshot, outcome: AttemptOutcome
    ) -> CacheBreak | None:
        """reference 7.5 phase 2 on the answer's cache reads; a break is logged. Diagnostics only."""
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
        self, state: RetryState, outcome: AttemptOutcome, started: float, cache_break: CacheBreak | None = None
    ) -> bool:
        assert outcome.message is not None
        msg = self._msg
        totals = self._totals
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
            cost_recorded=totals.cost_recorded,
        )
        totals.outcome = "done"
        return await deliver(msg.outbound, done)
