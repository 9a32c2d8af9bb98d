"""One query's run as a pure state machine: the decisions of the RetrySupervisor's query loop.

Everything that decides what a query's run does next lives here; the shell
(actors/supervisor/run.py) only performs what the machine asks and reports what happened. The
machine is a frozen ``QueryMachine``; ``start`` makes one with its first actions, and
``step(machine, event, env)`` returns the next machine and the actions to perform, in
order. Time and randomness come in ``Env`` (protocol/query_events.py, which also defines
every event and action). An event the current phase does not accept raises
``MachineError``: it is a bug in the shell.

The retry rules themselves are ``protocol.retry.decide`` (its lettered rules a-h); output
limit recovery is protocol/recovery.py. The machine adds what happens around them:

| phase    | event                | next phase and actions                                         |
|----------|----------------------|----------------------------------------------------------------|
| (start)  |                      | T: ``turn``, ``AskTurn`` (the first attempt has no top-up)      |
| top_up   | TopUpAnswered        | refused: ``ended``, ``Fail``; else T                           |
| turn     | TurnGranted          | ``attempt``: F, then ``StartAttempt``                          |
| turn     | TurnRefused          | ``ended``: ``GateRefused``, ``Fail`` (the gate's 529)          |
| turn     | TurnTimedOut         | ``ended``: ``Fail`` (the last failure, else an overload)       |
| attempt  | AttemptEnded         | I, S, R, or (auth failure) ``refresh``: ``RefreshCredential``  |
| refresh  | CredentialRefreshed  | D                                                              |
| backoff  | WaitElapsed          | N                                                              |
| ended    | (any)                | ``MachineError``                                               |

The lettered steps:

- N. Next attempt: the attempt counter moves on; an attempt after the first asks the
  budget first (``top_up``: ``TopUp`` with the request as that attempt sends it), else T.
- T. Turn: ``AskTurn`` at the attempt's model's gate, until the client's deadline (for a
  client that retries on its own, at most ``api_timeout`` after the query started).
- F. Fast mode: active when asked for, not cooling down and not off gateway-wide; the first
  time a cooldown or the off switch holds it back, one ``fast_mode`` frame says so.
- I. Internal failure: ``ReportGate``, a ``tombstone`` when events were relayed, then
  ``InternalFailure``.
- S. Success (no failure): ``ReportGate``. No message: the client went away (``Stop``). A
  cut-off answer recovery may still save: the next part (a ``tombstone`` when escalating
  voids relayed events), a new retry loop, N. Else ``Succeed`` with the parts combined.
- R. Failure: ``ReportStale`` after a broken connection, then D.
- D. Decide (``protocol.retry.decide``): ``ReportGate`` with the decision, a ``tombstone``
  when events were relayed, then: ``GiveUp``: ``Fail``. ``SwitchModel``: ``CountFallback``,
  the ``fallback`` frame, thinking stripped from the request, N. ``Retry``: when its delay
  reaches the client's deadline, ``Fail`` with the failure; else the fast-mode switch-off
  (``CoolFastMode``, ``DisableFastMode``, the ``fast_mode`` frame), ``CountRetry``, the
  ``retry`` frame, ``Wait`` (``backoff``).

Invariants (tests/protocol/test_query_machine.py checks them on generated runs): exactly
one terminal action, the last; no attempt after it; waits never negative; attempts counted
one by one; the model changes only by a ``SwitchModel`` to the policy's fallback, announced
by a ``fallback`` frame; one ``ReportGate`` per attempt ended.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, assert_never

import msgspec

from protocol.client_request import strip_thinking, thinking_budget
from protocol.errors import SwitchboardError
from protocol.frames import Fallback, FastMode, RetryFrame, Tombstone
from protocol.passthrough import gate_refusal, out_of_time
from protocol.query_events import (
    Action,
    AskTurn,
    AttemptEnded,
    CoolFastMode,
    CountFallback,
    CountRetry,
    CredentialRefreshed,
    DisableFastMode,
    Env,
    Event,
    Fail,
    GateRefused,
    InternalFailure,
    Note,
    QuerySetup,
    RefreshCredential,
    ReportGate,
    ReportStale,
    Send,
    StartAttempt,
    Stop,
    Succeed,
    TopUp,
    TopUpAnswered,
    TurnGranted,
    TurnRefused,
    TurnTimedOut,
    Wait,
    WaitElapsed,
)
from protocol.recovery import Recovery, can_recover, combined, hit_output_limit, next_step
from protocol.retry import (
    Context,
    Decision,
    Failure,
    GiveUp,
    Retry,
    RetryState,
    SwitchModel,
    decide,
    is_auth_failure,
    terminal_error,
)
from protocol.wire import JsonObject

Phase: TypeAlias = Literal["top_up", "turn", "attempt", "refresh", "backoff", "ended"]

# The table (rules as data): the events each phase accepts (anything else is a
# MachineError) and the phases each may lead to; ``step`` keeps to it.
TRANSITIONS: Final[dict[Phase, dict[type[Event], frozenset[Phase]]]] = {
    "top_up": {TopUpAnswered: frozenset({"turn", "ended"})},
    "turn": {
        TurnGranted: frozenset({"attempt"}),
        TurnRefused: frozenset({"ended"}),
        TurnTimedOut: frozenset({"ended"}),
    },
    "attempt": {AttemptEnded: frozenset({"refresh", "backoff", "top_up", "turn", "ended"})},
    "refresh": {CredentialRefreshed: frozenset({"backoff", "top_up", "turn", "ended"})},
    "backoff": {WaitElapsed: frozenset({"top_up", "turn"})},
    "ended": {},
}


class MachineError(SwitchboardError):
    """An event the machine's phase does not accept: a bug in whoever fed it."""


class QueryMachine(msgspec.Struct, frozen=True, kw_only=True):
    """A query's run between two events. ``state``: the retry state of the attempt that
    runs or ran last; ``request``: the request as it now stands (recovery and a model
    switch change it); ``last``: the last failure; ``pending``: the attempt that waits
    for a credential refresh; ``probe``/``fast_active``: of the current attempt."""

    setup: QuerySetup
    phase: Phase
    state: RetryState
    request: JsonObject
    recovery: Recovery = Recovery()
    last: Failure | None = None
    cooldown_announced: bool = False
    probe: bool = False
    fast_active: bool = False
    pending: AttemptEnded | None = None


Step: TypeAlias = tuple[QueryMachine, list[Action]]


def start(setup: QuerySetup) -> Step:
    """The machine of a new query, and its first actions (N)."""
    state = RetryState(model=setup.model, fast_mode=setup.fast_requested)
    return _next_attempt(QueryMachine(setup=setup, phase="turn", state=state, request=setup.request), [])


def step(machine: QueryMachine, event: Event, env: Env) -> Step:
    """What ``event`` leads to: the next machine and the actions to perform, in order.

    Raises:
        MachineError: the machine's phase does not accept ``event``.
    """
    leads_to = TRANSITIONS[machine.phase].get(type(event))
    if leads_to is None:
        raise MachineError(f"{type(event).__name__} in phase {machine.phase}")
    after, actions = _transition(machine, event, env)
    assert after.phase in leads_to, (machine.phase, event, after.phase)
    return after, actions


def _transition(machine: QueryMachine, event: Event, env: Env) -> Step:
    match event:
        case TopUpAnswered():
            if event.refused is not None:
                return _end(machine, [Fail(error=event.refused)])
            return _ask_turn(machine, [])
        case TurnGranted():
            return _granted(machine, event)
        case TurnRefused():
            return _refused(machine, event)
        case TurnTimedOut():
            return _out_of_time(machine, machine.last, [])
        case AttemptEnded():
            return _attempt_ended(machine, event, env)
        case CredentialRefreshed():
            assert machine.pending is not None and machine.pending.failure is not None
            return _decide(machine, machine.pending, machine.pending.failure, event.changed, env, [])
        case WaitElapsed():
            return _next_attempt(machine, [])
        case _:
            assert_never(event)


def _client_model(machine: QueryMachine, model: str) -> str:
    setup = machine.setup
    if model == setup.model:
        return setup.client_model
    if model == setup.policy.fallback_model and setup.fallback_client_model:
        return setup.fallback_client_model
    return model


def _end(machine: QueryMachine, actions: list[Action]) -> Step:
    return msgspec.structs.replace(machine, phase="ended", pending=None), actions


def _next_attempt(machine: QueryMachine, actions: list[Action]) -> Step:
    """N: the next attempt, after the budget's top-up when not the first."""
    state = machine.state.next_attempt()
    machine = msgspec.structs.replace(machine, state=state)
    if state.attempt > 1 and machine.setup.top_up:
        request = {**machine.request, "model": _client_model(machine, state.model)}
        return msgspec.structs.replace(machine, phase="top_up"), [*actions, TopUp(request=request)]
    return _ask_turn(machine, actions)


def _ask_turn(machine: QueryMachine, actions: list[Action]) -> Step:
    """T: the attempt's turn at its model's gate."""
    setup, state = machine.setup, machine.state
    client_turn = setup.policy.client_retries
    until = min(setup.deadline, setup.started + setup.api_timeout) if client_turn else setup.deadline
    ask = AskTurn(model=state.model, attempt=state.attempt, client_turn=client_turn, until=until)
    return msgspec.structs.replace(machine, phase="turn"), [*actions, ask]


def _granted(machine: QueryMachine, event: TurnGranted) -> Step:
    """F, then the attempt."""
    state, setup = machine.state, machine.setup
    cooldown = event.fast_cooldown_until if state.fast_mode else None
    fast_active = state.fast_mode and cooldown is None and not event.fast_disabled
    actions: list[Action] = []
    announced = machine.cooldown_announced
    if state.fast_mode and not fast_active and not announced:
        announced = True
        until_ms = None if cooldown is None else round(cooldown * 1000)
        actions.append(Send(frame=FastMode(id=setup.query_id, active=False, reason="cooldown", until_ms=until_ms)))
    withhold = setup.recover and can_recover(machine.recovery, machine.request)
    actions.append(
        StartAttempt(
            state=state,
            request=machine.request,
            client_model=_client_model(machine, state.model),
            fast_active=fast_active,
            fast_requested=setup.fast_requested,
            withhold=withhold,
            recovery=machine.recovery,
            probe=event.probe,
        )
    )
    machine = msgspec.structs.replace(
        machine, phase="attempt", probe=event.probe, fast_active=fast_active, cooldown_announced=announced
    )
    return machine, actions


def _refused(machine: QueryMachine, event: TurnRefused) -> Step:
    """A client that retries on its own, at a gate it may not pass yet: the gate's 529 at
    once, with when its next probe is due (docs/protocol.md 2, "Retries")."""
    state = machine.state
    error, headers = gate_refusal(state.model, event.retry_after)
    text = f"query {machine.setup.query_id} answered by the overload gate of {state.model} (wait {event.retry_after})"
    return _end(
        machine,
        [GateRefused(model=state.model, attempt=state.attempt, headers=headers), Note(level="info", text=text), Fail(error=error)],
    )


def _out_of_time(machine: QueryMachine, last: Failure | None, actions: list[Action]) -> Step:
    """The client's own timeout is near: end with the last error rather than hold the
    client past it; before any failure, with an overload."""
    text = f"query {machine.setup.query_id} gives up before its client's timeout (attempt {machine.state.attempt})"
    error = terminal_error(last) if last is not None else out_of_time(machine.state.model)
    return _end(machine, [*actions, Note(level="info", text=text), Fail(error=error)])


def _tombstone(machine: QueryMachine, relayed: bool) -> list[Action]:
    if not relayed:
        return []
    return [Send(frame=Tombstone(id=machine.setup.query_id, attempt=machine.state.attempt))]


def _report(machine: QueryMachine, decision: Decision | None) -> ReportGate:
    return ReportGate(model=machine.state.model, probe=machine.probe, decision=decision)


def _attempt_ended(machine: QueryMachine, event: AttemptEnded, env: Env) -> Step:
    """I, S or R."""
    if event.internal_error is not None:
        actions: list[Action] = [_report(machine, None), *_tombstone(machine, event.relayed)]
        return _end(machine, [*actions, InternalFailure(detail=event.internal_error)])
    failure = event.failure
    if failure is None:
        return _succeeded(machine, event)
    if is_auth_failure(failure):
        refresh = RefreshCredential(generation=event.generation)
        return msgspec.structs.replace(machine, phase="refresh", pending=event), [refresh]
    return _decide(machine, event, failure, None, env, [])


def _succeeded(machine: QueryMachine, event: AttemptEnded) -> Step:
    """S."""
    actions: list[Action] = [_report(machine, None)]
    message = event.message
    if message is None:
        return _end(machine, [*actions, Stop()])
    state, query_id = machine.state, machine.setup.query_id
    withheld = machine.setup.recover and can_recover(machine.recovery, machine.request)
    if withheld and hit_output_limit(message):
        how, recovery, request = next_step(machine.recovery, machine.request, message)
        actions.append(Note(level="info", text=f"query {query_id} hit the output limit; recovering ({how})"))
        if how == "escalate":
            actions.extend(_tombstone(machine, event.relayed))
        state = msgspec.structs.replace(state, loop_attempt=0)
        machine = msgspec.structs.replace(machine, state=state, recovery=recovery, request=request)
        return _next_attempt(machine, actions)
    done = Succeed(model=state.model, attempts=state.attempt, message=combined(machine.recovery, message))
    return _end(machine, [*actions, done])


def _decide(
    machine: QueryMachine, event: AttemptEnded, failure: Failure, refreshed: bool | None, env: Env, actions: list[Action]
) -> Step:
    """R and D."""
    if failure.stale:
        actions = [*actions, ReportStale()]
    ctx = Context(
        now=env.wall,
        rand=env.rand(),
        fast_mode_active=machine.fast_active,
        credential_refreshed=refreshed,
        thinking_budget=thinking_budget(machine.request),
    )
    decision = decide(machine.setup.policy, machine.state, failure, ctx)
    actions = [*actions, _report(machine, decision), *_tombstone(machine, event.relayed)]
    machine = msgspec.structs.replace(machine, last=failure, pending=None)
    query_id, state = machine.setup.query_id, machine.state
    match decision:
        case GiveUp():
            text = f"query {query_id} gives up after attempt {state.attempt}: {decision.error.type}"
            return _end(machine, [*actions, Note(level="info", text=text), Fail(error=decision.error)])
        case SwitchModel():
            return _switch(machine, decision, actions)
        case Retry():
            if env.now + decision.delay >= machine.setup.deadline:
                return _out_of_time(machine, failure, actions)
            return _retry(machine, decision, failure, actions)
    assert_never(decision)


def _switch(machine: QueryMachine, decision: SwitchModel, actions: list[Action]) -> Step:
    """D, ``SwitchModel``: announced, thinking stripped, the next attempt at once."""
    query_id, model = machine.setup.query_id, machine.state.model
    text = f"query {query_id}: {model} overloaded, falling back to {decision.to_model}"
    frame = Fallback(id=query_id, from_model=model, to_model=decision.to_model, reason=decision.reason)
    actions = [
        *actions,
        Note(level="warning", text=text),
        CountFallback(from_model=model, to_model=decision.to_model),
        Send(frame=frame),
    ]
    machine = msgspec.structs.replace(machine, state=decision.state, request=strip_thinking(machine.request))
    return _next_attempt(machine, actions)


def _retry(machine: QueryMachine, decision: Retry, failure: Failure, actions: list[Action]) -> Step:
    """D, ``Retry``: fast mode off when it says so, the ``retry`` frame, then the wait."""
    query_id, state = machine.setup.query_id, machine.state
    if decision.fast_mode_off is not None:
        if decision.cooldown_until is not None:
            actions = [*actions, CoolFastMode(model=state.model, until=decision.cooldown_until)]
        if decision.fast_mode_permanent:
            text = f"fast mode switched off for good: {decision.fast_mode_off}"
            actions = [*actions, Note(level="warning", text=text), DisableFastMode()]
        until_ms = None if decision.cooldown_until is None else round(decision.cooldown_until * 1000)
        off = FastMode(id=query_id, active=False, reason=decision.fast_mode_off, until_ms=until_ms)
        actions = [*actions, Send(frame=off)]
    text = (
        f"query {query_id} attempt {state.attempt} failed ({failure.status} {failure.error_type}); "
        f"retrying in {decision.delay:.3f}s"
    )
    frame = RetryFrame(
        id=query_id,
        attempt=state.attempt,
        max_retries=machine.setup.policy.max_retries,
        delay_ms=round(decision.delay * 1000),
        error=failure.info(),
    )
    actions = [
        *actions,
        Note(level="info", text=text),
        CountRetry(error_type=failure.error_type),
        Send(frame=frame),
        Wait(delay=decision.delay, attempt=state.attempt),
    ]
    return msgspec.structs.replace(machine, phase="backoff", state=decision.state), actions
