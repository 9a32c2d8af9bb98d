"""Retry rules of the reference client, as pure functions (reference-client.md section 1).

An attempt that fails is described by a ``Failure`` (built by the actors from an HTTP status
and headers, an in-stream ``error`` event, a broken connection or a timeout). ``decide``
takes the policy, the query's ``RetryState``, the failure and a random number in [0, 1) and
returns ``Retry`` (sleep this long, then try again) or ``GiveUp`` (end the query with this
error). Time and randomness are parameters: this module reads no clock and no random source.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

from protocol.frames import ErrorInfo

# reference-client.md 1.1: DEFAULT_MAX_RETRIES = 10 (so up to 11 attempts).
DEFAULT_MAX_RETRIES: Final = 10
# reference-client.md 1.1/1.2: BASE_DELAY_MS = 500, exponential cap 32 s, jitter up to 25%.
BASE_DELAY: Final = 0.5
MAX_DELAY: Final = 32.0
JITTER: Final = 0.25

# ``parseInt(value, 10)`` semantics: leading whitespace, optional sign, digits; the rest is
# ignored ("3.5" is 3). An HTTP-date gives NaN in the reference, so the backoff applies.
_PARSE_INT: Final = re.compile(r"\s*([+-]?\d+)")

FailureKind = Literal["status", "stream", "connection", "timeout", "protocol"]


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """Why one attempt failed, with the response headers the retry rules read.

    ``kind``: ``status`` (a non-2xx answer), ``stream`` (an ``error`` event inside a 200
    stream), ``connection`` (could not connect, or the connection broke), ``timeout``
    (a timeout or the idle watchdog), ``protocol`` (a malformed response).
    """

    kind: FailureKind
    error_type: str
    message: str
    status: int | None = None
    request_id: str | None = None
    retry_after: str | None = None
    should_retry: str | None = None

    def info(self) -> ErrorInfo:
        """The error object a client sees for this failure."""
        return ErrorInfo(
            type=self.error_type, message=self.message, status=self.status, request_id=self.request_id
        )


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_retries: int = DEFAULT_MAX_RETRIES
    max_delay: float = MAX_DELAY


class RetryState(msgspec.Struct, frozen=True, kw_only=True):
    """``attempt``: the 1-based number of the attempt that just ran."""

    attempt: int = 0


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    delay: float
    state: RetryState


class GiveUp(msgspec.Struct, frozen=True, kw_only=True):
    error: ErrorInfo


def is_overloaded(failure: Failure) -> bool:
    """A 529, or an ``overloaded_error`` anywhere (in-stream errors come with no status)."""
    return failure.status == 529 or failure.error_type == "overloaded_error"


def should_retry(failure: Failure) -> bool:
    """Whether a failure is retryable at all (reference-client.md 1.4, in its order).

    Rows that depend on state the foundation does not keep yet (persistent mode, claude.ai
    subscriptions, credential refresh) are the RetrySupervisor issue's (#3).
    """
    if is_overloaded(failure):
        return True
    if failure.should_retry == "true":
        return True
    if failure.should_retry == "false":
        return False
    if failure.kind in ("connection", "timeout", "protocol"):
        return True
    status = failure.status
    if status is None:
        # An in-stream error event that is not an overload, e.g. api_error: the stream died
        # server-side; retrying it is what a client expects of a gateway.
        return failure.kind == "stream"
    return status in (408, 409, 429) or status >= 500


def retry_after_seconds(value: str | None) -> float | None:
    """An integer ``retry-after`` in seconds, as the reference parses it; None otherwise."""
    if value is None:
        return None
    match = _PARSE_INT.match(value)
    if match is None:
        return None
    return float(max(int(match.group(1)), 0))


def retry_delay(attempt: int, retry_after: str | None, rand: float, max_delay: float = MAX_DELAY) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (reference-client.md 1.2).

    An integer ``retry-after`` is honoured exactly and uncapped; otherwise
    ``min(0.5 * 2**(attempt-1), max_delay)`` plus up to 25% of it as jitter (``rand`` in [0, 1)).
    """
    header = retry_after_seconds(retry_after)
    if header is not None:
        return header
    base = min(BASE_DELAY * 2.0 ** max(attempt - 1, 0), max_delay)
    return base + rand * JITTER * base


def decide(policy: RetryPolicy, state: RetryState, failure: Failure, rand: float) -> Retry | GiveUp:
    """Retry or give up after ``failure`` ended attempt ``state.attempt``."""
    if state.attempt > policy.max_retries or not should_retry(failure):
        return GiveUp(error=failure.info())
    delay = retry_delay(state.attempt, failure.retry_after, rand, policy.max_delay)
    return Retry(delay=delay, state=state)
