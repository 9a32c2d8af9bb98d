"""The query machine (protocol/query_machine.py): each lettered step by example, then its
invariants on generated runs (hypothesis draws each next event among those the phase
accepts)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.frames import ErrorInfo, Fallback, FastMode, RetryFrame, Tombstone
from protocol.query_events import (
    TERMINALS,
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
from protocol.query_machine import TRANSITIONS, MachineError, QueryMachine, start, step
from protocol.recovery import ESCALATED_MAX_TOKENS, RESUME_PROMPT
from protocol.retry import Failure, GiveUp, Retry, RetryPolicy, SwitchModel

SONNET = "claude-sonnet-4-6"
OPUS = "claude-opus-4-6"
EPOCH = 1_790_000_000.0
REQUEST: dict[str, Any] = {
    "model": "sonnet[1m]",
    "max_tokens": 1000,
    "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "a"}]},
        {"role": "user", "content": "go on"},
    ],
}


def env(now: float = 0.0, rand: float = 0.0) -> Env:
    return Env(now=now, wall=EPOCH + now, rand=lambda: rand)


def setup(**kw: Any) -> QuerySetup:
    policy = kw.pop("policy", RetryPolicy())
    values: dict[str, Any] = {"query_id": "q", "request": REQUEST, "model": SONNET, "client_model": "sonnet[1m]"}
    values.update(kw)
    return QuerySetup(policy=policy, **values)


def status(code: int, error_type: str = "api_error", message: str = "m", **kw: Any) -> Failure:
    return Failure(kind="status", error_type=error_type, message=message, status=code, **kw)


OVERLOADED = status(529, "overloaded_error", "Overloaded")
ANSWER: dict[str, Any] = {"role": "assistant", "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn"}
CUT: dict[str, Any] = {"role": "assistant", "content": [{"type": "text", "text": "part"}], "stop_reason": "max_tokens"}


def feed(machine: QueryMachine, *events: Event, at: Env | None = None) -> tuple[QueryMachine, list[Action]]:
    """Feed events in order; every action they led to."""
    actions: list[Action] = []
    for event in events:
        machine, more = step(machine, event, at or env())
        actions.extend(more)
    return machine, actions


def first_attempt(the_setup: QuerySetup, probe: bool = False) -> tuple[QueryMachine, list[Action]]:
    machine, actions = start(the_setup)
    machine, more = step(machine, TurnGranted(probe=probe), env())
    return machine, [*actions, *more]


def of(kind: type[Any], actions: list[Action]) -> list[Any]:
    return [action for action in actions if isinstance(action, kind)]


def frames(actions: list[Action]) -> list[Any]:
    return [action.frame for action in actions if isinstance(action, Send)]


# --- N and T ---------------------------------------------------------------------------


def test_the_first_attempt_asks_its_turn_without_a_top_up() -> None:
    machine, actions = start(setup(top_up=True, deadline=50.0))
    assert actions == [AskTurn(model=SONNET, attempt=1, client_turn=False, until=50.0)]
    assert machine.phase == "turn"


def test_a_later_attempt_asks_the_budget_with_the_model_the_client_named() -> None:
    machine, _ = first_attempt(setup(top_up=True))
    machine, actions = feed(machine, AttemptEnded(failure=status(500)), WaitElapsed())
    assert actions[-1] == TopUp(request={**REQUEST, "model": "sonnet[1m]"})
    machine, actions = step(machine, TopUpAnswered(), env())
    assert actions == [AskTurn(model=SONNET, attempt=2, client_turn=False, until=math.inf)]


def test_a_refused_top_up_ends_the_query_with_its_error() -> None:
    refused = ErrorInfo(type="budget_exceeded", message="no", status=None, request_id=None)
    machine, _ = first_attempt(setup(top_up=True))
    machine, actions = feed(machine, AttemptEnded(failure=status(500)), WaitElapsed(), TopUpAnswered(refused=refused))
    assert actions[-1] == Fail(error=refused)
    assert machine.phase == "ended"


def test_a_client_that_retries_waits_at_most_its_api_timeout() -> None:
    _, actions = start(setup(policy=RetryPolicy(client_retries=True), started=10.0, api_timeout=60.0, deadline=200.0))
    assert actions == [AskTurn(model=SONNET, attempt=1, client_turn=True, until=70.0)]


def test_a_gate_refusal_is_the_gates_529_with_its_headers() -> None:
    machine, _ = start(setup(policy=RetryPolicy(client_retries=True)))
    machine, actions = step(machine, TurnRefused(retry_after=3.0), env())
    [refused] = of(GateRefused, actions)
    assert ("retry-after", "3") in refused.headers
    assert isinstance(actions[-1], Fail) and actions[-1].error.status == 529
    assert machine.phase == "ended"


def test_out_of_time_before_any_failure_is_an_overload() -> None:
    machine, _ = start(setup(deadline=5.0))
    _, actions = step(machine, TurnTimedOut(), env())
    assert isinstance(actions[-1], Fail) and actions[-1].error.type == "overloaded_error"


def test_out_of_time_after_a_failure_ends_with_that_failure() -> None:
    machine, _ = first_attempt(setup(deadline=500.0))
    _, actions = feed(machine, AttemptEnded(failure=status(500, message="boom")), WaitElapsed(), TurnTimedOut())
    assert isinstance(actions[-1], Fail) and actions[-1].error.message == "boom"


# --- F ---------------------------------------------------------------------------------


def test_a_cooldown_is_announced_once_and_the_attempt_goes_without_fast_mode() -> None:
    machine, _ = start(setup(fast_requested=True))
    machine, actions = step(machine, TurnGranted(probe=False, fast_cooldown_until=EPOCH + 60), env())
    assert frames(actions) == [FastMode(id="q", active=False, reason="cooldown", until_ms=round((EPOCH + 60) * 1000))]
    [attempt] = of(StartAttempt, actions)
    assert (attempt.fast_active, attempt.fast_requested) == (False, True)
    machine, actions = feed(machine, AttemptEnded(failure=status(500)), WaitElapsed(), TurnGranted(probe=False, fast_disabled=True))
    assert not [frame for frame in frames(actions) if isinstance(frame, FastMode)]


def test_fast_mode_is_active_when_asked_for_and_not_held_back() -> None:
    _, actions = first_attempt(setup(fast_requested=True))
    [attempt] = of(StartAttempt, actions)
    assert attempt.fast_active and attempt.state.fast_mode


# --- I and S ---------------------------------------------------------------------------


def test_an_internal_failure_voids_what_was_relayed_then_ends() -> None:
    machine, _ = first_attempt(setup(), probe=True)
    machine, actions = step(machine, AttemptEnded(relayed=True, internal_error="boom in the relay"), env())
    assert actions == [
        ReportGate(model=SONNET, probe=True, decision=None),
        Send(frame=Tombstone(id="q", attempt=1)),
        InternalFailure(detail="boom in the relay"),
    ]


def test_an_answer_succeeds_with_its_attempt_count() -> None:
    machine, _ = first_attempt(setup())
    machine, actions = step(machine, AttemptEnded(message=ANSWER), env())
    assert actions[-1] == Succeed(model=SONNET, attempts=1, message=ANSWER)
    assert of(ReportGate, actions) == [ReportGate(model=SONNET, probe=False, decision=None)]


def test_no_answer_and_no_failure_means_the_client_went_away() -> None:
    machine, _ = first_attempt(setup())
    _, actions = step(machine, AttemptEnded(), env())
    assert actions[-1] == Stop()


def test_recovery_escalates_then_continues_then_combines_the_parts() -> None:
    machine, actions = first_attempt(setup(recover=True))
    assert of(StartAttempt, actions)[0].withhold
    machine, actions = feed(machine, AttemptEnded(message=CUT, relayed=True), TurnGranted(probe=False))
    assert Send(frame=Tombstone(id="q", attempt=1)) in actions
    [escalated] = of(StartAttempt, actions)
    assert escalated.request["max_tokens"] == ESCALATED_MAX_TOKENS and escalated.state.loop_attempt == 1
    machine, actions = feed(machine, AttemptEnded(message=CUT, relayed=True), TurnGranted(probe=False))
    assert not frames(actions)  # a continuation keeps what the client saw
    [continued] = of(StartAttempt, actions)
    assert continued.request["messages"][-1]["content"][0]["text"] == RESUME_PROMPT
    _, actions = step(machine, AttemptEnded(message=ANSWER), env())
    assert isinstance(actions[-1], Succeed)
    assert actions[-1].message["content"] == [{"type": "text", "text": "part"}, {"type": "text", "text": "ok"}]


def test_without_recovery_a_cut_answer_is_the_answer() -> None:
    machine, _ = first_attempt(setup())
    _, actions = step(machine, AttemptEnded(message=CUT), env())
    assert actions[-1] == Succeed(model=SONNET, attempts=1, message=CUT)


# --- R and D ---------------------------------------------------------------------------


def test_an_auth_failure_asks_for_a_new_credential_before_deciding() -> None:
    machine, _ = first_attempt(setup())
    machine, actions = step(machine, AttemptEnded(failure=status(401, "authentication_error"), generation=4), env())
    assert actions == [RefreshCredential(generation=4)]
    assert machine.phase == "refresh"
    machine, actions = step(machine, CredentialRefreshed(changed=True), env())
    assert isinstance(actions[-1], Wait) and machine.phase == "backoff"
    machine, _ = first_attempt(setup())
    machine, _ = step(machine, AttemptEnded(failure=status(401, "authentication_error")), env())
    _, actions = step(machine, CredentialRefreshed(changed=False), env())
    assert isinstance(actions[-1], Fail) and actions[-1].error.status == 401


def test_a_broken_connection_is_reported_to_the_pool() -> None:
    machine, _ = first_attempt(setup())
    broken = Failure(kind="connection", error_type="connection_error", message="reset", stale=True)
    _, actions = step(machine, AttemptEnded(failure=broken), env())
    assert actions[0] == ReportStale()


def test_a_retry_is_announced_counted_and_waited() -> None:
    machine, _ = first_attempt(setup(), probe=True)
    machine, actions = step(machine, AttemptEnded(failure=status(500), relayed=True), env(rand=0.0))
    [report] = of(ReportGate, actions)
    assert report.probe and isinstance(report.decision, Retry)
    assert frames(actions) == [
        Tombstone(id="q", attempt=1),
        RetryFrame(id="q", attempt=1, max_retries=10, delay_ms=500, error=status(500).info()),
    ]
    assert of(CountRetry, actions) == [CountRetry(error_type="api_error")]
    assert actions[-1] == Wait(delay=0.5, attempt=1)
    assert machine.state.attempt == 1 and machine.phase == "backoff"


def test_a_retry_that_would_pass_the_deadline_ends_the_query_now() -> None:
    machine, _ = first_attempt(setup(deadline=10.3))
    _, actions = step(machine, AttemptEnded(failure=status(500, message="late")), env(now=10.0))
    assert not of(Wait, actions)
    assert isinstance(actions[-1], Fail) and actions[-1].error.message == "late"


def test_giving_up_ends_with_the_rules_error() -> None:
    machine, _ = first_attempt(setup())
    _, actions = step(machine, AttemptEnded(failure=status(400, "invalid_request_error", "bad")), env())
    [report] = of(ReportGate, actions)
    assert isinstance(report.decision, GiveUp)
    assert isinstance(actions[-1], Fail) and actions[-1].error.message == "bad"


def test_repeated_overload_switches_to_the_fallback_without_thinking() -> None:
    policy = RetryPolicy(fallback_model=OPUS, fallback_for_all_models=True)
    machine, _ = first_attempt(setup(policy=policy, fallback_client_model="opus"))
    machine, _ = feed(machine, AttemptEnded(failure=OVERLOADED), WaitElapsed(), TurnGranted(probe=False))
    machine, _ = feed(machine, AttemptEnded(failure=OVERLOADED), WaitElapsed(), TurnGranted(probe=False))
    machine, actions = feed(machine, AttemptEnded(failure=OVERLOADED), TurnGranted(probe=False))
    assert isinstance(of(ReportGate, actions)[0].decision, SwitchModel)
    assert Fallback(id="q", from_model=SONNET, to_model=OPUS, reason="overloaded") in frames(actions)
    assert of(CountFallback, actions) == [CountFallback(from_model=SONNET, to_model=OPUS)]
    [attempt] = of(StartAttempt, actions)
    assert (attempt.state.model, attempt.state.attempt, attempt.client_model) == (OPUS, 4, "opus")
    assistant = attempt.request["messages"][1]["content"]
    assert assistant == [{"type": "text", "text": "a"}]


def test_fast_mode_off_for_a_capacity_error_shares_a_cooldown() -> None:
    machine, _ = first_attempt(setup(fast_requested=True))
    _, actions = step(machine, AttemptEnded(failure=status(429, "rate_limit_error")), env())
    [cool] = of(CoolFastMode, actions)
    assert cool.model == SONNET and cool.until > EPOCH
    assert FastMode(id="q", active=False, reason="rate_limit", until_ms=round(cool.until * 1000)) in frames(actions)
    assert actions[-1] == Wait(delay=0.0, attempt=1)


def test_fast_mode_refused_by_the_api_is_off_for_good() -> None:
    machine, _ = first_attempt(setup(fast_requested=True))
    refused = status(400, "invalid_request_error", "Fast mode is not enabled for this org")
    machine, actions = step(machine, AttemptEnded(failure=refused), env())
    assert DisableFastMode() in actions
    assert FastMode(id="q", active=False, reason="not_enabled") in frames(actions)
    assert not machine.state.fast_mode


# --- the table -------------------------------------------------------------------------

ALL_EVENTS: list[Event] = [
    TopUpAnswered(), TurnGranted(probe=False), TurnRefused(), TurnTimedOut(), AttemptEnded(message=ANSWER),
    CredentialRefreshed(changed=True), WaitElapsed(),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda event: type(event).__name__)
def test_an_event_the_phase_does_not_accept_is_refused(event: Event) -> None:
    machine, _ = start(setup())
    for phase, accepted in TRANSITIONS.items():
        if type(event) not in accepted:
            with pytest.raises(MachineError):
                step(msgspec.structs.replace(machine, phase=phase), event, env())


# --- generated runs --------------------------------------------------------------------

_failures = st.sampled_from(
    [
        OVERLOADED,
        status(529, "overloaded_error", "Overloaded", overage_disabled_reason="out_of_credits"),
        status(429, "rate_limit_error", retry_after="3"),
        status(429, "rate_limit_error", retry_after="120", ratelimit_reset=str(EPOCH + 900)),
        status(500),
        status(401, "authentication_error"),
        status(403, "permission_error", "OAuth token has been revoked"),
        status(400, "invalid_request_error", "Fast mode is not enabled"),
        status(400, "invalid_request_error", "input length and `max_tokens` exceed context limit: 190000 + 20000 > 200000"),
        status(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000"),
        Failure(kind="connection", error_type="connection_error", message="reset", stale=True),
        Failure(kind="stream", error_type="overloaded_error", message="Overloaded", mid_stream=True),
        Failure(kind="timeout", error_type="timeout_error", message="idle"),
    ]
)
_answered = st.builds(AttemptEnded, message=st.sampled_from([ANSWER, CUT, CUT]), relayed=st.booleans())
# Overloads half the time: enough in a row to switch model.
_failed = st.builds(
    AttemptEnded, failure=st.one_of(st.just(OVERLOADED), _failures), relayed=st.booleans(), generation=st.integers(0, 5)
)
_broken = st.one_of(st.builds(AttemptEnded, relayed=st.booleans(), internal_error=st.just("boom")), st.just(AttemptEnded()))
_refusal = ErrorInfo(type="budget_exceeded", message="no", status=None, request_id=None)
_granted = st.builds(
    TurnGranted,
    probe=st.booleans(),
    fast_cooldown_until=st.sampled_from([None, None, EPOCH + 600]),
    fast_disabled=st.sampled_from([False, False, True]),
)
_not_granted = st.one_of(st.builds(TurnRefused, retry_after=st.sampled_from([None, 0.0, 2.5])), st.just(TurnTimedOut()))


def _weighted(data: st.DataObject, *choices: tuple[int, st.SearchStrategy[Any]]) -> Any:
    """One of the strategies, drawn with the given weights (a run should get far)."""
    index = data.draw(st.sampled_from([i for i, (weight, _) in enumerate(choices) for _ in range(weight)]))
    return data.draw(choices[index][1])


def _event(data: st.DataObject, machine: QueryMachine) -> Event:
    """An event the machine's phase accepts, as the shell could report it."""
    match machine.phase:
        case "top_up":
            return TopUpAnswered(refused=data.draw(st.sampled_from([None] * 9 + [_refusal])))
        case "turn":
            return _weighted(data, (12, _granted), (1, _not_granted))  # type: ignore[no-any-return]
        case "attempt":
            return _weighted(data, (2, _answered), (8, _failed), (1, _broken))  # type: ignore[no-any-return]
        case "refresh":
            return CredentialRefreshed(changed=data.draw(st.booleans()))
        case "backoff":
            return WaitElapsed()
    raise AssertionError(machine.phase)


_policies = st.builds(
    RetryPolicy,
    max_retries=st.integers(0, 4),
    source=st.sampled_from(["sdk", "repl_main_thread", "summary", None]),
    fallback_model=st.sampled_from([None, OPUS, OPUS, SONNET]),
    persistent=st.booleans(),
    fallback_for_all_models=st.sampled_from([True, True, False]),
    nonstreaming_fallback=st.booleans(),
    client_retries=st.sampled_from([False, False, False, True]),
)
_setups = st.builds(
    setup,
    policy=_policies,
    fast_requested=st.booleans(),
    recover=st.booleans(),
    top_up=st.booleans(),
    deadline=st.sampled_from([math.inf, 30.0, 400.0]),
    request=st.sampled_from([REQUEST, {**REQUEST, "max_tokens": 64_000, "thinking": {"type": "enabled", "budget_tokens": 5000}}]),
)
_WAITING: dict[type[Any], str] = {TopUp: "top_up", AskTurn: "turn", StartAttempt: "attempt", RefreshCredential: "refresh", Wait: "backoff"}


class Run:
    """A generated run, its steps' actions and the events that led to them."""

    def __init__(self, the_setup: QuerySetup) -> None:
        self.setup = the_setup
        self.now = 0.0
        self.machine, actions = start(the_setup)
        self.steps: list[tuple[Event | None, list[Action]]] = [(None, actions)]

    def feed(self, event: Event, rand: float) -> None:
        self.machine, actions = step(self.machine, event, env(self.now, rand))
        self.steps.append((event, actions))
        for action in actions:
            if isinstance(action, Wait):
                self.now += action.delay

    @property
    def actions(self) -> list[Action]:
        return [action for _, actions in self.steps for action in actions]


def _generated(data: st.DataObject, the_setup: QuerySetup, max_steps: int = 40) -> Run:
    run = Run(the_setup)
    while run.machine.phase != "ended" and len(run.steps) < max_steps:
        run.feed(_event(data, run.machine), data.draw(st.floats(0, 1, exclude_max=True)))
    return run


@settings(max_examples=200, deadline=None)
@given(st.data(), _setups)
def test_each_step_ends_in_one_wait_or_the_terminal_and_the_phase_follows(data: st.DataObject, the_setup: QuerySetup) -> None:
    run = _generated(data, the_setup)
    terminals = [action for action in run.actions if isinstance(action, TERMINALS)]
    assert len(terminals) <= 1
    for _, actions in run.steps:
        ends = [action for action in actions if isinstance(action, TERMINALS) or type(action) in _WAITING]
        assert ends == actions[-1:], actions
    if run.machine.phase == "ended":
        assert terminals == run.actions[-1:]
        for event in ALL_EVENTS:
            with pytest.raises(MachineError):
                step(run.machine, event, env())
    else:
        assert not terminals
        assert _WAITING[type(run.actions[-1])] == run.machine.phase


@settings(max_examples=200, deadline=None)
@given(st.data(), _setups)
def test_attempts_count_one_by_one_and_each_ended_one_reports_to_its_gate_once(
    data: st.DataObject, the_setup: QuerySetup
) -> None:
    run = _generated(data, the_setup)
    attempts = of(StartAttempt, run.actions)
    assert [a.state.attempt for a in attempts] == list(range(1, len(attempts) + 1))
    ended = [event for event, _ in run.steps if isinstance(event, AttemptEnded)]
    assert len(of(ReportGate, run.actions)) == len(ended)
    for attempt, report in zip(attempts, of(ReportGate, run.actions), strict=False):
        assert (report.model, report.probe) == (attempt.state.model, attempt.probe)


@settings(max_examples=200, deadline=None)
@given(st.data(), _setups)
def test_waits_are_never_negative_and_never_reach_the_deadline(data: st.DataObject, the_setup: QuerySetup) -> None:
    run = Run(the_setup)
    while run.machine.phase != "ended" and len(run.steps) < 40:
        before = run.now
        run.feed(_event(data, run.machine), data.draw(st.floats(0, 1, exclude_max=True)))
        _, actions = run.steps[-1]
        for wait in of(Wait, actions):
            assert 0 <= wait.delay and before + wait.delay < the_setup.deadline
            # Announced first: the retry frame names the attempt and the same delay.
            [retry] = [frame for frame in frames(actions) if isinstance(frame, RetryFrame)]
            assert (retry.attempt, retry.delay_ms) == (wait.attempt, round(wait.delay * 1000))


@settings(max_examples=200, deadline=None)
@given(st.data(), _setups)
def test_the_model_changes_only_to_the_fallback_and_only_announced(data: st.DataObject, the_setup: QuerySetup) -> None:
    run = _generated(data, the_setup)
    model = the_setup.model
    announced: list[Fallback] = []
    for action in run.actions:
        if isinstance(action, Send) and isinstance(action.frame, Fallback):
            announced.append(action.frame)
        if isinstance(action, StartAttempt):
            if action.state.model != model:
                assert action.state.model == the_setup.policy.fallback_model != model
                assert [(f.from_model, f.to_model) for f in announced] == [(model, action.state.model)]
                model, announced = action.state.model, []
            assert not announced


@settings(max_examples=200, deadline=None)
@given(st.data(), _setups)
def test_tombstones_void_only_relayed_attempts_and_no_attempt_follows_the_end(
    data: st.DataObject, the_setup: QuerySetup
) -> None:
    run = _generated(data, the_setup)
    last_relayed: tuple[int, bool] = (0, False)
    attempt = 0
    for event, actions in run.steps:
        if isinstance(event, AttemptEnded):
            last_relayed = (attempt, event.relayed)
        for action in actions:
            if isinstance(action, StartAttempt):
                attempt = action.state.attempt
            if isinstance(action, Send) and isinstance(action.frame, Tombstone):
                assert last_relayed == (action.frame.attempt, True)
    tail = run.actions[next((i for i, a in enumerate(run.actions) if isinstance(a, TERMINALS)), len(run.actions)):]
    assert not of(StartAttempt, tail)
