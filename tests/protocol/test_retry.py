"""Retry rules: classification table and delay formula (reference-client.md 1.2, 1.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.retry import (
    Failure,
    GiveUp,
    Retry,
    RetryPolicy,
    RetryState,
    decide,
    retry_after_seconds,
    retry_delay,
    should_retry,
)


def status(code: int, **kw: str) -> Failure:
    return Failure(kind="status", error_type="x", message="m", status=code, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(code: int) -> None:
    assert should_retry(status(code))


@pytest.mark.parametrize("code", [400, 401, 403, 404, 413, 422])
def test_non_retryable_statuses(code: int) -> None:
    assert not should_retry(status(code))


def test_x_should_retry_overrides_the_status_both_ways() -> None:
    assert should_retry(status(400, should_retry="true"))
    assert not should_retry(status(503, should_retry="false"))


def test_overloaded_is_retried_even_against_x_should_retry_false() -> None:
    overloaded = Failure(kind="stream", error_type="overloaded_error", message="Overloaded", should_retry="false")
    assert should_retry(overloaded)


def test_connection_and_timeout_failures_are_retried() -> None:
    assert should_retry(Failure(kind="connection", error_type="connection_error", message="reset"))
    assert should_retry(Failure(kind="timeout", error_type="timeout_error", message="slow"))


def test_reference_delay_table() -> None:
    assert [retry_delay(n, None, 0.0) for n in range(1, 11)] == [0.5, 1, 2, 4, 8, 16, 32, 32, 32, 32]
    assert retry_delay(1, None, 0.999) == pytest.approx(0.5 * 1.24975)


def test_integer_retry_after_is_honoured_uncapped_and_parsed_like_parseint() -> None:
    assert retry_delay(1, "120", 0.9) == 120
    assert retry_after_seconds("3.5") == 3
    assert retry_after_seconds(" 7abc") == 7
    assert retry_after_seconds("-4") == 0
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert retry_delay(2, "Wed, 21 Oct 2026 07:28:00 GMT", 0.0) == 1.0


@given(attempt=st.integers(1, 50), rand=st.floats(0, 1, exclude_max=True))
def test_delay_within_base_and_one_and_a_quarter_base(attempt: int, rand: float) -> None:
    base = min(0.5 * 2 ** (attempt - 1), 32.0)
    assert base <= retry_delay(attempt, None, rand) <= base * 1.25


@given(rand=st.floats(0, 1, exclude_max=True))
def test_delays_non_decreasing_at_equal_jitter(rand: float) -> None:
    delays = [retry_delay(n, None, rand) for n in range(1, 20)]
    assert delays == sorted(delays)


def test_decide_retries_until_max_then_gives_up() -> None:
    policy = RetryPolicy(max_retries=2)
    failure = status(529)
    assert isinstance(decide(policy, RetryState(attempt=1), failure, 0.0), Retry)
    assert isinstance(decide(policy, RetryState(attempt=2), failure, 0.0), Retry)
    give_up = decide(policy, RetryState(attempt=3), failure, 0.0)
    assert isinstance(give_up, GiveUp) and give_up.error.status == 529


def test_decide_gives_up_at_once_on_a_non_retryable_error() -> None:
    result = decide(RetryPolicy(), RetryState(attempt=1), status(400, request_id="req_1"), 0.5)
    assert isinstance(result, GiveUp) and result.error.request_id == "req_1"
