"""Retry rules at their edges: each test pins a rule a mutant of protocol/retry.py changed
without any test failing (docs/testing.md "Mutation testing")."""

from __future__ import annotations

from typing import Any

from protocol.retry import (
    Context,
    Failure,
    GiveUp,
    Retry,
    RetryPolicy,
    RetryState,
    SwitchModel,
    context_overflow,
    decide,
    is_fast_mode_rejected,
    retry_after_seconds,
    should_retry,
    terminal_error,
)

NOW = 1_790_000_000.0
CTX = Context(now=NOW, rand=0.0)


def status(code: int, message: str = "m", **kw: Any) -> Failure:
    return Failure(kind="status", error_type="x", message=message, status=code, **kw)


def state(**kw: Any) -> RetryState:
    defaults: dict[str, Any] = {"attempt": 1, "loop_attempt": 1, "model": "claude-sonnet-4-6"}
    defaults.update(kw)
    return RetryState(**defaults)


def test_persistent_mode_retries_capacity_errors_even_when_told_not_to() -> None:
    told_not = {"should_retry": "false"}
    assert should_retry(status(429, **told_not), persistent=True)
    assert not should_retry(status(429, **told_not))  # not persistent: the header wins
    assert should_retry(status(529, "Overloaded", **told_not), persistent=True)
    assert not should_retry(status(500, **told_not), persistent=True)  # capacity errors only


def test_an_in_stream_error_is_retried_only_as_a_stream_failure() -> None:
    assert should_retry(Failure(kind="stream", error_type="api_error", message="boom"))
    assert not should_retry(Failure(kind="status", error_type="api_error", message="boom"))


def test_fast_mode_rejection_needs_both_the_400_and_its_message() -> None:
    assert is_fast_mode_rejected(status(400, "Fast mode is not enabled for this organization"))
    assert not is_fast_mode_rejected(status(400, "some other bad request"))
    assert not is_fast_mode_rejected(status(500, "Fast mode is not enabled for this organization"))


def test_a_413_prompt_too_long_carries_its_numbers() -> None:
    error = terminal_error(status(413, "prompt is too long: 250000 tokens > 200000 maximum"))
    assert error.type == "prompt_too_long"
    assert (error.prompt_tokens, error.max_prompt_tokens) == (250000, 200000)


def test_a_negative_retry_after_ms_is_no_wait() -> None:
    assert retry_after_seconds(status(429, retry_after_ms="-1500"), NOW) == 0.0
    assert retry_after_seconds(status(429, retry_after_ms="1500"), NOW) == 1.5


def test_persistent_429_whose_reset_has_come_falls_back_to_the_backoff() -> None:
    policy = RetryPolicy(persistent=True)
    for reset in (NOW, NOW - 60, "not-a-number"):
        result = decide(policy, state(), status(429, ratelimit_reset=str(reset)), CTX)
        assert isinstance(result, Retry) and result.delay == 0.5  # the first backoff
    # A reset header on a 529 is not a rate-limit reset: the backoff too.
    overloaded = status(529, "Overloaded", ratelimit_reset=str(NOW + 1234))
    result = decide(policy, state(), overloaded, CTX)
    assert isinstance(result, Retry) and result.delay == 0.5


def test_a_client_that_retries_gets_one_immediate_retry_after_a_credential_refresh() -> None:
    policy = RetryPolicy(client_retries=True, max_retries=2)
    refreshed = Context(now=NOW, rand=0.0, credential_refreshed=True)
    result = decide(policy, state(loop_attempt=2), status(401), refreshed)
    assert isinstance(result, Retry) and result.delay == 0.0
    assert isinstance(decide(policy, state(loop_attempt=3), status(401), refreshed), GiveUp)
    assert isinstance(decide(policy, state(), status(401), CTX), GiveUp)  # nothing refreshed
    assert isinstance(decide(policy, state(), status(500), refreshed), GiveUp)  # not an auth failure


def test_the_default_budget_is_ten_retries() -> None:
    """docs/reference/reference-client.md 1.1: 10 retries, so the 11th attempt's failure is the last."""
    policy = RetryPolicy()
    assert isinstance(decide(policy, state(attempt=10, loop_attempt=10), status(500), CTX), Retry)
    assert isinstance(decide(policy, state(attempt=11, loop_attempt=11), status(500), CTX), GiveUp)


def test_fast_mode_waits_out_a_retry_after_just_under_twenty_seconds_only() -> None:
    fast = Context(now=NOW, rand=0.0, fast_mode_active=True)
    short = decide(RetryPolicy(), state(fast_mode=True), status(429, retry_after="19"), fast)
    assert isinstance(short, Retry) and short.delay == 19.0 and short.state.fast_mode
    long = decide(RetryPolicy(), state(fast_mode=True), status(429, retry_after="20"), fast)
    assert isinstance(long, Retry) and long.delay == 0.0 and not long.state.fast_mode
    assert long.fast_mode_off == "rate_limit"


def test_the_fast_mode_400_turns_fast_mode_off_in_the_state_and_only_when_it_was_on() -> None:
    refused = status(400, "Fast mode is not enabled for this organization")
    on = decide(RetryPolicy(), state(fast_mode=True), refused, CTX)
    assert isinstance(on, Retry) and not on.state.fast_mode
    assert isinstance(decide(RetryPolicy(), state(fast_mode=False), refused, CTX), GiveUp)


def test_a_switch_to_the_fallback_model_streams_again() -> None:
    policy = RetryPolicy(fallback_model="claude-sonnet-4-6")
    tired = state(model="claude-opus-4-6", consecutive_529=2, streaming=False)
    result = decide(policy, tired, status(529, "Overloaded"), CTX)
    assert isinstance(result, SwitchModel) and result.state.streaming


def test_context_overflow_leaving_exactly_the_floor_retries_with_it() -> None:
    # 200000 - 196000 - 1000 (the safety buffer) = 3000 tokens: the floor, still enough.
    message = "input length and `max_tokens` exceed context limit: 196000 + 8000 > 200000"
    result = decide(RetryPolicy(), state(), status(400, message), CTX)
    assert isinstance(result, Retry) and result.state.max_tokens_override == 3000


def test_a_mid_stream_break_that_is_not_an_overload_starts_the_new_loop_at_zero_529s() -> None:
    broken = Failure(kind="stream", error_type="api_error", message="boom", mid_stream=True)
    result = decide(RetryPolicy(), state(loop_attempt=3, attempt=3), broken, CTX)
    assert isinstance(result, Retry) and not result.state.streaming
    assert result.state.consecutive_529 == 0


def test_context_overflow_reads_input_max_tokens_and_limit_in_order() -> None:
    message = "input length and `max_tokens` exceed context limit: 188059 + 20000 > 200000"
    assert context_overflow(status(400, message)) == (188059, 20000, 200000)
    assert context_overflow(status(413, message)) is None
