"""Retry rules: classification (1.4), delays (1.2, 1.8), and every branch of decide (1.3)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.retry import (
    MAX_NON_STREAMING_TOKENS,
    Context,
    Failure,
    GiveUp,
    Retry,
    RetryPolicy,
    RetryState,
    SwitchModel,
    backoff,
    decide,
    retry_after_seconds,
    retry_delay,
    should_retry,
    terminal_error,
)

NOW = 1_790_000_000.0
CTX = Context(now=NOW, rand=0.0)
OPUS = "claude-opus-4-6"
SONNET = "claude-sonnet-4-6"


def status(code: int, error_type: str = "x", message: str = "m", **kw: Any) -> Failure:
    return Failure(kind="status", error_type=error_type, message=message, status=code, **kw)


OVERLOADED = status(529, "overloaded_error", "Overloaded")


def state(**kw: Any) -> RetryState:
    defaults: dict[str, Any] = {"attempt": 1, "loop_attempt": 1, "model": SONNET}
    defaults.update(kw)
    return RetryState(**defaults)


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(code: int) -> None:
    assert should_retry(status(code))


@pytest.mark.parametrize("code", [400, 403, 404, 413, 422])
def test_non_retryable_statuses(code: int) -> None:
    assert not should_retry(status(code))


def test_x_should_retry_overrides_the_status_both_ways() -> None:
    assert should_retry(status(400, should_retry="true"))
    assert not should_retry(status(503, should_retry="false"))


def test_overloaded_is_retried_even_against_x_should_retry_false() -> None:
    assert should_retry(Failure(kind="stream", error_type="overloaded_error", message="Overloaded", should_retry="false"))
    assert should_retry(status(200, message='{"type":"overloaded_error"}', error_type="overloaded_error"))


def test_connection_and_timeout_failures_are_retried() -> None:
    assert should_retry(Failure(kind="connection", error_type="connection_error", message="reset"))
    assert should_retry(Failure(kind="timeout", error_type="timeout_error", message="slow"))


def test_reference_delay_table() -> None:
    assert [backoff(n, 0.0) for n in range(1, 11)] == [0.5, 1, 2, 4, 8, 16, 32, 32, 32, 32]
    assert backoff(1, 0.999) == pytest.approx(0.5 * 1.24975)


def test_retry_after_forms() -> None:
    def after(**kw: str) -> float | None:
        return retry_after_seconds(status(429, **kw), NOW)

    assert after(retry_after="120") == 120
    assert after(retry_after="3.5") == 3
    assert after(retry_after=" 7abc") == 7
    assert after(retry_after="-4") == 0
    assert after(retry_after_ms="1500", retry_after="9") == 1.5
    assert after(retry_after="Thu, 01 Jan 2026 00:00:30 GMT") == 0.0  # in the past
    assert after(retry_after="Mon, 21 Sep 2026 14:14:50 GMT") == 90.0  # NOW + 90 s
    assert after(retry_after="soon") is None
    assert after() is None


@given(attempt=st.integers(1, 50), rand=st.floats(0, 1, exclude_max=True))
def test_delay_within_base_and_one_and_a_quarter_base(attempt: int, rand: float) -> None:
    base = min(0.5 * 2 ** (attempt - 1), 32.0)
    assert base <= retry_delay(attempt, None, rand) <= base * 1.25


@given(rand=st.floats(0, 1, exclude_max=True))
def test_delays_non_decreasing_at_equal_jitter(rand: float) -> None:
    delays = [backoff(n, rand) for n in range(1, 20)]
    assert delays == sorted(delays)


@given(
    failures=st.lists(st.sampled_from([529, 429, 500, 503]), min_size=1, max_size=30),
    rand=st.floats(0, 1, exclude_max=True),
    max_retries=st.integers(0, 12),
)
def test_gives_up_after_max_retries_and_delays_stay_capped(failures: list[int], rand: float, max_retries: int) -> None:
    policy = RetryPolicy(max_retries=max_retries)
    current = RetryState(model=SONNET)
    for n, code in enumerate(failures, start=1):
        current = current.next_attempt()
        decision = decide(policy, current, status(code), Context(now=NOW, rand=rand))
        if n > max_retries:
            assert isinstance(decision, GiveUp)
            return
        assert isinstance(decision, Retry)
        assert 0.5 <= decision.delay <= 40.0
        current = decision.state


def test_decide_gives_up_at_once_on_a_non_retryable_error() -> None:
    result = decide(RetryPolicy(), state(), status(400, request_id="req_1"), CTX)
    assert isinstance(result, GiveUp) and result.error.request_id == "req_1"


def test_background_sources_fail_on_the_first_529() -> None:
    result = decide(RetryPolicy(source="title_generation"), state(), OVERLOADED, CTX)
    assert isinstance(result, GiveUp) and result.error.type == "overloaded_error"
    assert "title_generation" in result.error.message
    assert isinstance(decide(RetryPolicy(source="title_generation"), state(), status(500), CTX), Retry)
    assert isinstance(decide(RetryPolicy(source=None), state(), OVERLOADED, CTX), Retry)


def test_three_consecutive_529s_on_opus_switch_to_the_fallback_model() -> None:
    policy = RetryPolicy(fallback_model=SONNET)
    current = state(model=OPUS)
    for n in (1, 2):
        decision = decide(policy, current, OVERLOADED, CTX)
        assert isinstance(decision, Retry) and decision.state.consecutive_529 == n
        current = decision.state.next_attempt()
    switch = decide(policy, current, OVERLOADED, CTX)
    assert isinstance(switch, SwitchModel) and switch.to_model == SONNET
    assert switch.state.model == SONNET and switch.state.attempt == 3 and switch.state.loop_attempt == 0
    assert switch.state.consecutive_529 == 0


def test_three_consecutive_529s_without_fallback_end_with_repeated_overload() -> None:
    current = state(model=OPUS, consecutive_529=2, attempt=3, loop_attempt=3)
    result = decide(RetryPolicy(), current, OVERLOADED, CTX)
    assert isinstance(result, GiveUp) and result.error.type == "repeated_overload"
    assert result.error.message == "Repeated 529 Overloaded errors"


def test_529s_on_other_models_are_ordinary_5xx_unless_fallback_for_all() -> None:
    current = state(model=SONNET, consecutive_529=5)
    assert isinstance(decide(RetryPolicy(fallback_model="x"), current, OVERLOADED, CTX), Retry)
    widened = RetryPolicy(fallback_model="claude-haiku-4-5", fallback_for_all_models=True)
    assert isinstance(decide(widened, state(model=SONNET, consecutive_529=2), OVERLOADED, CTX), SwitchModel)


def test_consecutive_529s_are_not_reset_by_other_errors() -> None:
    current = state(model=OPUS, consecutive_529=1)
    after_500 = decide(RetryPolicy(), current, status(500), CTX)
    assert isinstance(after_500, Retry) and after_500.state.consecutive_529 == 1


def test_context_overflow_cuts_max_tokens_and_retries_at_once() -> None:
    message = "input length and `max_tokens` exceed context limit: 188059 + 20000 > 200000, decrease input length or `max_tokens` and try again"
    result = decide(RetryPolicy(), state(), status(400, "invalid_request_error", message), CTX)
    assert isinstance(result, Retry) and result.delay == 0
    assert result.state.max_tokens_override == 200000 - 188059 - 1000
    thinking = decide(RetryPolicy(), state(), status(400, "invalid_request_error", message), Context(now=NOW, rand=0, thinking_budget=16000))
    assert isinstance(thinking, Retry) and thinking.state.max_tokens_override == 16001


def test_context_overflow_below_the_floor_gives_up_with_the_upstream_error() -> None:
    message = "input length and `max_tokens` exceed context limit: 197000 + 20000 > 200000, decrease input length or `max_tokens` and try again"
    result = decide(RetryPolicy(), state(), status(400, "invalid_request_error", message), CTX)
    assert isinstance(result, GiveUp) and result.error.type == "invalid_request_error"


def test_prompt_too_long_and_media_errors_get_their_own_types() -> None:
    ptl = terminal_error(status(400, "invalid_request_error", "prompt is too long: 213021 tokens > 200000 maximum"))
    assert (ptl.type, ptl.prompt_tokens, ptl.max_prompt_tokens, ptl.status) == ("prompt_too_long", 213021, 200000, 400)
    media = terminal_error(status(400, "invalid_request_error", "messages.0.content.1.image.source.base64: image exceeds 5 MB maximum"))
    assert media.type == "media_too_large"


def test_auth_failures_retry_only_with_a_fresh_credential() -> None:
    unauthorized = status(401, "authentication_error", "invalid x-api-key")
    assert isinstance(decide(RetryPolicy(), state(), unauthorized, Context(now=NOW, rand=0, credential_refreshed=True)), Retry)
    assert isinstance(decide(RetryPolicy(), state(), unauthorized, Context(now=NOW, rand=0, credential_refreshed=False)), GiveUp)
    revoked = status(403, "permission_error", "OAuth token has been revoked")
    assert isinstance(decide(RetryPolicy(), state(), revoked, Context(now=NOW, rand=0, credential_refreshed=True)), Retry)
    assert isinstance(decide(RetryPolicy(), state(), status(403, "permission_error", "nope"), CTX), GiveUp)


def test_fast_mode_short_retry_after_waits_and_keeps_fast_mode() -> None:
    ctx = Context(now=NOW, rand=0, fast_mode_active=True)
    result = decide(RetryPolicy(), state(fast_mode=True), status(429, retry_after="5"), ctx)
    assert isinstance(result, Retry) and result.delay == 5 and result.state.fast_mode and result.fast_mode_off is None


def test_fast_mode_long_or_missing_retry_after_starts_a_cooldown() -> None:
    ctx = Context(now=NOW, rand=0, fast_mode_active=True)
    missing = decide(RetryPolicy(), state(fast_mode=True), OVERLOADED, ctx)
    assert isinstance(missing, Retry) and missing.delay == 0 and not missing.state.fast_mode
    assert missing.fast_mode_off == "overloaded" and missing.cooldown_until == NOW + 30 * 60
    long = decide(RetryPolicy(), state(fast_mode=True), status(429, retry_after="60"), ctx)
    assert isinstance(long, Retry) and long.fast_mode_off == "rate_limit" and long.cooldown_until == NOW + 10 * 60
    longer = decide(RetryPolicy(), state(fast_mode=True), status(429, retry_after="3600"), ctx)
    assert isinstance(longer, Retry) and longer.cooldown_until == NOW + 3600


def test_fast_mode_overage_disabled_reason_turns_it_off() -> None:
    ctx = Context(now=NOW, rand=0, fast_mode_active=True)
    gone = decide(RetryPolicy(), state(fast_mode=True), status(429, overage_disabled_reason="org_level_disabled"), ctx)
    assert isinstance(gone, Retry) and gone.fast_mode_permanent and not gone.state.fast_mode and gone.delay == 0
    credits = decide(RetryPolicy(), state(fast_mode=True), status(429, overage_disabled_reason="out_of_credits"), ctx)
    assert isinstance(credits, Retry) and not credits.fast_mode_permanent and not credits.state.fast_mode


def test_fast_mode_not_enabled_400_turns_it_off_for_good() -> None:
    result = decide(RetryPolicy(), state(fast_mode=True), status(400, message="Fast mode is not enabled for this organization"), CTX)
    assert isinstance(result, Retry) and result.fast_mode_permanent and result.delay == 0


def test_persistent_mode_retries_capacity_errors_without_limit() -> None:
    policy = RetryPolicy(max_retries=2, persistent=True)
    current = state(loop_attempt=50, attempt=50, persistent_attempt=30)
    result = decide(policy, current, OVERLOADED, CTX)
    assert isinstance(result, Retry) and result.delay == pytest.approx(300.0)
    assert result.state.persistent_attempt == 31
    assert isinstance(decide(policy, current, status(500), CTX), GiveUp)


def test_persistent_429_waits_until_the_unified_reset_capped_at_six_hours() -> None:
    policy = RetryPolicy(persistent=True)
    soon = decide(policy, state(), status(429, ratelimit_reset=str(int(NOW + 1234))), CTX)
    assert isinstance(soon, Retry) and soon.delay == 1234
    far = decide(policy, state(), status(429, ratelimit_reset=str(int(NOW + 10 * 3600))), CTX)
    assert isinstance(far, Retry) and far.delay == 6 * 3600
    huge = decide(policy, state(), status(529, retry_after="999999"), CTX)
    assert isinstance(huge, Retry) and huge.delay == 6 * 3600


def test_persistent_mode_skips_the_repeated_529_stop() -> None:
    result = decide(RetryPolicy(persistent=True), state(model=OPUS, consecutive_529=2), OVERLOADED, CTX)
    assert isinstance(result, Retry)


def test_a_mid_stream_failure_continues_without_streaming_at_once() -> None:
    broken = Failure(kind="stream", error_type="overloaded_error", message="Overloaded", mid_stream=True)
    result = decide(RetryPolicy(), state(loop_attempt=4, attempt=4), broken, CTX)
    assert isinstance(result, Retry) and result.delay == 0
    assert not result.state.streaming and result.state.loop_attempt == 0 and result.state.consecutive_529 == 1
    off = decide(RetryPolicy(nonstreaming_fallback=False), state(), broken, CTX)
    assert isinstance(off, Retry) and off.state.streaming and off.delay == 0.5
    assert MAX_NON_STREAMING_TOKENS == 64_000
