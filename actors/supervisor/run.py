"""One query's run for the RetrySupervisor: performs what the query machine decides.

The supervisor makes one ``QueryRun`` per ``RunQuery`` and runs it in a task of its nursery;
its module docstring gives the contract (the frames, the abort, the timers). Every decision
of the run (gate turns, fast-mode notices, retries, model switches, recovery, tombstones,
which frame to send) is the pure machine's (protocol/query_machine.py): the run feeds it
what happened (an event, with the clocks and a random source) and performs the actions it
returns, in order, until a terminal one. What stays here is only doing: building and running
attempts, waiting at gates and between attempts, asking the pool and the budget, sending
frames, logging and counting.

A run owns its query: the ``RunQuery`` (it closes the query's outbound clone) and the
``QueryTotals``. The rest (``QueryContext``) it shares with the supervisor's other tasks,
with no lock since every change happens between checkpoints: the ``SharedRetryState``, the
``SessionStates``, the ``ProviderBuilds``, the metrics, and the addresses of the
StreamRelay, the ClientPool and the CostLedger (the supervisor closes them).

A run is the query's supervision boundary (docs/supervision.md): an unexpected exception in
it, or an attempt the StreamRelay reports as ``internal_error``, ends the query with an
``error`` frame of that type (after a ``tombstone`` when the attempt had relayed events),
logged once with the query id and counted in ``switchboard_internal_errors_total``.
"""

from __future__ import annotations

import functools
import logging
from typing import Final, assert_never, final

import trio

from actors._util import CLEANUP_TIMEOUT, ask, internal_error_info, report_internal
from actors.messages.ledger import RecordDuration
from actors.messages.pool import Refresh, RefreshResult, ReportBroken
from actors.messages.relay import AttemptOutcome
from actors.messages.supervisor import RunQuery
from actors.supervisor.admission import wait_for_slot
from actors.supervisor.attempt_build import AttemptRequest, attempt_request, run_attempt
from actors.supervisor.channel import (
    HEARTBEAT_INTERVAL,
    QueryTotals,
    deliver,
    heartbeat,
    send,
    wait_with_heartbeats,
)
from actors.supervisor.context import QueryContext
from actors.supervisor.drain import QUEUED_SHUTTING_DOWN_ERROR, SHUTTING_DOWN, SHUTTING_DOWN_ERROR
from actors.supervisor.session_state import SessionRequestState
from actors.supervisor.setup import query_setup
from actors.supervisor.shared import Refused
from protocol.assembly import usage_json
from protocol.caching import CacheBreak, tracking_key
from protocol.errors import INTERNAL_ERROR, ClientGone, InternalError
from protocol.frames import Aborted, Done, ErrorFrame, ErrorInfo
from protocol.pricing import usd
from protocol.providers import metrics_label
from protocol.query_events import (
    TERMINALS,
    AskTurn,
    AttemptEnded,
    CoolFastMode,
    CountFallback,
    CountRetry,
    CredentialRefreshed,
    DisableFastMode,
    Effect,
    Env,
    Event,
    Fail,
    GateRefused,
    InternalFailure,
    Note,
    RefreshCredential,
    ReportGate,
    ReportStale,
    Send,
    StartAttempt,
    Stop,
    Succeed,
    Terminal,
    TopUp,
    TopUpAnswered,
    TurnGranted,
    TurnRefused,
    TurnTimedOut,
    Wait,
    WaitElapsed,
)
from protocol.query_machine import start, step

# The supervisor's logger: the runs are its work.
log = logging.getLogger("switchboard.supervisor")
_LEVELS: Final = {"info": logging.INFO, "warning": logging.WARNING}


@final
class QueryRun:
    """One query's run (see the module docstring). Use once: ``run``."""

    __slots__ = ("_built", "_ctx", "_msg", "_outcome", "_session", "_started", "_totals", "_unreported")
    _session: SessionRequestState  # set as the run begins

    def __init__(self, msg: RunQuery, ctx: QueryContext) -> None:
        self._msg = msg
        self._ctx = ctx
        self._totals = QueryTotals()
        self._started = 0.0
        # The current attempt's request, its outcome, and its gate (model, probe) until told.
        self._built: AttemptRequest | None = None
        self._outcome: AttemptOutcome | None = None
        self._unreported: tuple[str, bool] | None = None

    async def run(self) -> None:
        """Run the query to its end, then close its outbound clone. Sends exactly one
        terminal frame unless the client went away; counts the query in the metrics and in
        its session's activity."""
        msg, ctx = self._msg, self._ctx
        totals = self._totals
        started = trio.current_time()
        ctx.metrics.query_started()
        ctx.sessions.started(msg.session_id)
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
            if ctx.drain is not None:
                ctx.drain.query_ended(msg.scope)
            ctx.sessions.finished(msg.session_id, trio.current_time())
            requested_model = str(msg.query.request.get("model"))
            ctx.metrics.query_finished(
                ctx.builds.api_model(requested_model),
                metrics_label(ctx.builds.settings(requested_model).provider),
                totals.outcome,
                trio.current_time() - started,
                error_type=totals.error_type,
            )

    async def _admitted_run(self) -> bool:
        """``_run`` once the query holds a slot (actors/supervisor/admission.py: it may wait in line
        first); a query whose place in line a shutdown refused ends with ``error``
        ``shutting_down`` instead. Returns True once the terminal frame is delivered."""
        msg = self._msg
        drain = self._ctx.drain
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
        drain = self._ctx.drain
        if drain is not None and drain.ended_by_shutdown(msg.scope):
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
        report_internal(log, self._ctx.metrics, "query", f"query {msg.query.id}", exc)
        self._totals.outcome, self._totals.error_type = "error", INTERNAL_ERROR
        return await deliver(msg.outbound, ErrorFrame(id=msg.query.id, error=internal_error_info(exc)))

    # --- the machine's loop -------------------------------------------------------------

    def _env(self) -> Env:
        return Env(now=trio.current_time(), wall=self._ctx.shared.wall_now(), rand=self._ctx.rng.random)

    async def _run(self) -> bool:
        """Feed the machine until it ends the query. Returns True once the terminal frame
        is delivered.

        Raises:
            ClientGone: the client went away; the query just stops.
        """
        self._started = trio.current_time()
        self._session = self._ctx.sessions.get(self._msg.session_id)
        machine, actions = start(query_setup(self._msg, self._ctx, self._started))
        try:
            while True:
                event: Event | None = None
                for action in actions:
                    if isinstance(action, TERMINALS):
                        return await self._end(action)
                    event = await self._perform(action) or event
                assert event is not None, actions
                machine, actions = step(machine, event, self._env())
        finally:
            if self._unreported is not None:
                # Cancelled (or failed) before the machine decided: the gate still learns of it.
                model, probe = self._unreported
                self._ctx.shared.report(model, probe=probe, outcome=self._outcome, decision=None)

    async def _perform(self, action: Effect) -> Event | None:
        """Do one non-terminal action; the event it ends in, if it waits for one."""
        ctx, msg = self._ctx, self._msg
        match action:
            case Send():
                await send(msg.outbound, action.frame)
            case Note():
                log.log(_LEVELS[action.level], "%s", action.text)
            case TopUp():
                assert msg.top_up is not None
                return TopUpAnswered(refused=await msg.top_up(action.request))
            case AskTurn():
                return await self._turn(action)
            case GateRefused():
                ctx.metrics.gate_answered(action.model)
                if msg.options.heads is not None:
                    msg.options.heads.record(action.attempt, action.headers)
            case StartAttempt():
                return await self._attempt(action)
            case RefreshCredential():
                generation = action.generation
                result: RefreshResult = await ask(ctx.to_pool, lambda reply: Refresh(generation=generation, reply=reply))
                return CredentialRefreshed(changed=result.changed)
            case ReportStale():
                await ctx.to_pool.send(ReportBroken())
            case ReportGate():
                self._unreported = None
                ctx.shared.report(action.model, probe=action.probe, outcome=self._outcome, decision=action.decision)
            case CountRetry():
                ctx.metrics.retried(action.error_type)
            case CountFallback():
                ctx.metrics.fallback(action.from_model, action.to_model)
            case CoolFastMode():
                ctx.shared.start_fast_cooldown(action.model, action.until)
            case DisableFastMode():
                ctx.shared.fast_mode_disabled = True
            case Wait():
                await wait_with_heartbeats(msg.outbound, msg.query.id, action.attempt, action.delay)
                return WaitElapsed()
            case _:
                assert_never(action)
        return None

    async def _turn(self, action: AskTurn) -> Event:
        """A turn at the model's overload gate (actors/supervisor/shared.py), with the fast-mode
        facts the machine needs once it has one."""
        msg, shared = self._msg, self._ctx.shared
        if action.client_turn:
            turn = await shared.client_turn(action.model, action.until - trio.current_time())
            if isinstance(turn, Refused):
                return TurnRefused(retry_after=turn.retry_after)
            probe: bool | None = turn
        else:
            beat = functools.partial(heartbeat, msg.outbound, msg.query.id, action.attempt)
            probe = await shared.wait_turn(action.model, beat, HEARTBEAT_INTERVAL, action.until)
        if probe is None:
            return TurnTimedOut()
        return TurnGranted(
            probe=probe,
            fast_cooldown_until=shared.fast_cooldown_until(action.model),
            fast_disabled=shared.fast_mode_disabled,
        )

    async def _attempt(self, action: StartAttempt) -> AttemptEnded:
        """Build the attempt's request (reference 7.4: the fast-mode beta stays latched for
        the session once asked for; only the body's speed field follows cooldowns), run it
        in the StreamRelay, and say how it ended."""
        msg, ctx, state = self._msg, self._ctx, action.state
        self._outcome = None
        self._unreported = (state.model, action.probe)
        built = attempt_request(
            action.request,
            original=msg.query.request,
            options=msg.options,
            headers=msg.headers,
            state=state,
            client_model=action.client_model,
            source=msg.query.source,
            session=self._session,
            builds=ctx.builds,
            fast_active=action.fast_active,
            fast_requested=action.fast_requested,
        )
        self._built = built
        for note in built.notes if state.attempt == 1 else ():
            log.info("query %s: %s", msg.query.id, note)
        on_accepted = functools.partial(ctx.shared.accepted, state.model) if action.probe else None
        outcome = await run_attempt(
            ctx.to_relay, msg, self._totals, state, built,
            withhold=action.withhold, recovery=action.recovery, started=self._started, on_accepted=on_accepted,
        )
        self._outcome = outcome
        return AttemptEnded(
            message=outcome.message,
            failure=outcome.failure,
            relayed=outcome.relayed > 0,
            generation=outcome.generation,
            internal_error=outcome.internal_error,
        )

    # --- the ends -----------------------------------------------------------------------

    async def _end(self, action: Terminal) -> bool:
        match action:
            case Succeed():
                return await self._done(action)
            case Fail():
                return await self._fail(action.error)
            case InternalFailure():
                # The relay logged and counted it; the query ends with it.
                raise InternalError(action.detail)
            case Stop():
                # Cancelled without our scope being cancelled: the client went away.
                raise ClientGone
            case _:
                assert_never(action)

    async def _fail(self, error: ErrorInfo) -> bool:
        self._totals.outcome, self._totals.error_type = "error", error.type
        return await deliver(self._msg.outbound, ErrorFrame(id=self._msg.query.id, error=error))

    def _check_cache(self) -> CacheBreak | None:
        """reference 7.5 phase 2 on the answer's cache reads; a break is logged. Diagnostics only."""
        built, outcome, msg = self._built, self._outcome, self._msg
        if built is None or built.snapshot is None or outcome is None:
            return None
        source = msg.query.source
        found = self._session.check_response(
            tracking_key(source), built.snapshot,
            cache_read=outcome.usage.cache_read_input_tokens, now=self._ctx.shared.wall_now(),
        )
        if found is not None:
            log.info(
                "[PROMPT CACHE BREAK] %s [source=%s, cache read: %d → %d]",
                found.reason, source, found.cache_read_before, found.cache_read_after,
            )
        return found

    async def _done(self, action: Succeed) -> bool:
        msg, totals, outcome = self._msg, self._totals, self._outcome
        assert outcome is not None
        cache_break = self._check_cache()
        duration = trio.current_time() - self._started
        await self._ctx.to_ledger.send(
            RecordDuration(
                session_id=msg.session_id,
                duration_ms=round(duration * 1000),
                duration_without_retries_ms=round(outcome.duration * 1000),
            )
        )
        stop_reason = action.message.get("stop_reason")
        done = Done(
            id=msg.query.id,
            model=action.model,
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            message=action.message,
            usage=usage_json(totals.usage),
            cost_usd=usd(totals.cost_pico),
            session_cost_usd=usd(totals.session_cost_pico or 0),
            attempts=action.attempts,
            duration_ms=round(duration * 1000),
            duration_without_retries_ms=round(outcome.duration * 1000),
            cache_break=cache_break,
            cost_recorded=totals.cost_recorded,
        )
        totals.outcome = "done"
        return await deliver(msg.outbound, done)
