"""The reference client's retry rules, as pure functions (docs/reference/reference-client.md sections 1, 2.3).

An attempt that fails is described by a ``Failure`` (built by the actors from an HTTP status
and its headers, an in-stream ``error`` event, a broken connection, a timeout or the idle
watchdog). ``decide`` takes the query's ``RetryPolicy``, its ``RetryState``, the failure and a
``Context`` (wall-clock time, a random number, what the actors learnt: was fast mode active,
did a credential refresh produce a new credential) and returns one ``Decision``:

- ``Retry``: wait ``delay`` seconds, then attempt again with ``state`` (which may have
  switched to non-streaming, cut ``max_tokens``, or turned fast mode off: ``fast_mode_off``
  says why, and ``cooldown_until`` asks the actors to share a fast-mode cooldown);
- ``SwitchModel``: after repeated overload, continue on the fallback model at once;
- ``GiveUp``: end the query with this error.

The order of the checks is the reference's (docs/reference/reference-client.md 1.3, step 4 a-h); the
classification table is 1.4; the delay formula 1.2 and, in persistent mode, 1.8. Where the
reference is worse for a gateway's users, the rule is changed and says so:

- ``retry-after-ms`` and an HTTP-date ``retry-after`` are understood (the reference parses
  integer seconds only, so a date falls back to the backoff);
- a 401/403 is retried only when the credential refresh produced a new credential, so a
  dead key fails at once and clearly instead of burning ten retries.

Time and randomness are parameters: this module reads no clock and no random source.
"""

from __future__ import annotations

import email.utils
import re
from typing import Final, Literal, TypeAlias

import msgspec

from protocol.frames import ErrorInfo
from protocol.models.catalog import BUILTIN, Catalog

# docs/reference/reference-client.md 1.1.
DEFAULT_MAX_RETRIES: Final = 10
BASE_DELAY: Final = 0.5
MAX_DELAY: Final = 32.0
JITTER: Final = 0.25
MAX_529_RETRIES: Final = 3
FLOOR_OUTPUT_TOKENS: Final = 3000
CONTEXT_SAFETY_BUFFER: Final = 1000
PERSISTENT_MAX_BACKOFF: Final = 5 * 60.0
PERSISTENT_RESET_CAP: Final = 6 * 60 * 60.0
DEFAULT_FAST_MODE_HOLD: Final = 30 * 60.0
SHORT_RETRY_THRESHOLD: Final = 20.0
MIN_FAST_COOLDOWN: Final = 10 * 60.0
# docs/reference/reference-client.md 2.3: MAX_NON_STREAMING_TOKENS.
MAX_NON_STREAMING_TOKENS: Final = 64_000

# docs/reference/reference-client.md 1.5: the query sources that retry a 529; every other source fails on
# the first one ("each retry is 3-10x gateway amplification" during a capacity cascade).
FOREGROUND_529_SOURCES: Final = frozenset(
    {
        "repl_main_thread",
        "repl_main_thread:outputStyle:custom",
        "repl_main_thread:outputStyle:Explanatory",
        "repl_main_thread:outputStyle:Learning",
        "sdk",
        "agent:custom",
        "agent:default",
        "agent:builtin",
        "compact",
        "hook_agent",
        "hook_prompt",
        "verification_agent",
        "side_question",
        "auto_mode",
    }
)

# docs/reference/reference-client.md 1.6: overage reasons that switch fast mode off for this query only.
TRANSIENT_OVERAGE_REASONS: Final = frozenset({"out_of_credits", "org_level_disabled_until"})

_PARSE_INT: Final = re.compile(r"\s*([+-]?\d+)")
_CONTEXT_OVERFLOW: Final = re.compile(
    r"input length and `max_tokens` exceed context limit: (\d+) \+ (\d+) > (\d+)"
)
_PROMPT_TOO_LONG: Final = re.compile(r"prompt is too long(?:: (\d+) tokens > (\d+))?", re.IGNORECASE)
_MEDIA_TOO_LARGE: Final = re.compile(
    r"image exceeds .* maximum|image dimensions exceed .*many-image|maximum of \d+ PDF pages",
    re.IGNORECASE,
)

FailureKind: TypeAlias = Literal["status", "stream", "connection", "timeout", "protocol"]


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """Why one attempt failed, with the response headers the rules read.

    ``kind``: ``status`` (a non-2xx answer), ``stream`` (an ``error`` event inside a 200),
    ``connection`` (could not connect, or it broke), ``timeout`` (a timeout or the idle
    watchdog), ``protocol`` (a malformed response). ``mid_stream``: the failure came after
    the 200, while the body was being read (docs/reference/reference-client.md 2.3 falls back to a
    non-streaming request then). ``stale``: the connection was reset or broken, so the
    pool should stop reusing connections.
    """

    kind: FailureKind
    error_type: str
    message: str
    status: int | None = None
    request_id: str | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    should_retry: str | None = None
    ratelimit_reset: str | None = None
    overage_disabled_reason: str | None = None
    mid_stream: bool = False
    stale: bool = False
    # issue 6: the provider's own rule says the credential was refused (Bedrock: any 403 or
    # credential error; docs/reference/reference-client.md 1.9), so the pool refreshes it as after a 401.
    credential_rejected: bool = False

    def info(self) -> ErrorInfo:
        """The error object a client sees for this failure."""
        return ErrorInfo(
            type=self.error_type, message=self.message, status=self.status, request_id=self.request_id
        )


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What a query allows: set once per query from its frame and the gateway's Config."""

    max_retries: int = DEFAULT_MAX_RETRIES
    source: str | None = "sdk"
    fallback_model: str | None = None
    persistent: bool = False
    fallback_for_all_models: bool = False
    nonstreaming_fallback: bool = True
    # The catalog whose families decide which models count consecutive 529s
    # (docs/reference/reference-client-now.md 3): the built-in one, or it merged with the upstream's models.
    catalog: Catalog = BUILTIN
    # The client retries on its own (docs/protocol.md 2, "Retries"): one upstream attempt,
    # again only after a credential refresh, which the client cannot do.
    client_retries: bool = False


class RetryState(msgspec.Struct, frozen=True, kw_only=True):
    """A query's retry state.

    ``attempt``: the 1-based number of the attempt that just ran; it keeps counting across a
    model switch (docs/protocol.md). ``loop_attempt``: the attempt within the current retry loop,
    which the budget counts; a model switch or the switch to non-streaming starts a new loop,
    as the reference's fresh ``withRetry`` does.
    """

    attempt: int = 0
    loop_attempt: int = 0
    consecutive_529: int = 0
    persistent_attempt: int = 0
    model: str = ""
    fast_mode: bool = False
    streaming: bool = True
    max_tokens_override: int | None = None

    def next_attempt(self) -> RetryState:
        """The state with which the next attempt runs."""
        return msgspec.structs.replace(self, attempt=self.attempt + 1, loop_attempt=self.loop_attempt + 1)


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What the actors know at decision time.

    ``now``: wall-clock epoch seconds (for HTTP dates and rate-limit resets); ``rand``: a
    number in [0, 1) for the jitter; ``fast_mode_active``: fast mode was on for the failed
    attempt (requested and not in a cooldown); ``credential_refreshed``: for an auth
    failure, whether the pool produced a new credential (None when not asked);
    ``thinking_budget``: the request's thinking budget when thinking is enabled.
    """

    now: float
    rand: float
    fast_mode_active: bool = False
    credential_refreshed: bool | None = None
    thinking_budget: int = 0


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    delay: float
    state: RetryState
    fast_mode_off: str | None = None
    fast_mode_permanent: bool = False
    cooldown_until: float | None = None


class SwitchModel(msgspec.Struct, frozen=True, kw_only=True):
    to_model: str
    state: RetryState
    reason: str = "overloaded"


class GiveUp(msgspec.Struct, frozen=True, kw_only=True):
    error: ErrorInfo


Decision: TypeAlias = Retry | SwitchModel | GiveUp


# --- classification ----------------------------------------------------------------------


def is_overloaded(failure: Failure) -> bool:
    """A 529, or ``overloaded_error`` anywhere (an in-stream error event has no status)."""
    return failure.status == 529 or failure.error_type == "overloaded_error"


def is_auth_failure(failure: Failure) -> bool:
    """A 401, or a 403 saying the OAuth token was revoked, or a failure the provider's rule
    marked ``credential_rejected`` (docs/reference/reference-client.md 1.9)."""
    return failure.status == 401 or failure.credential_rejected or (
        failure.status == 403 and "OAuth token has been revoked" in failure.message
    )


def is_fast_mode_rejected(failure: Failure) -> bool:
    return failure.status == 400 and "Fast mode is not enabled" in failure.message


def context_overflow(failure: Failure) -> tuple[int, int, int] | None:
    """``(input_tokens, max_tokens, context_limit)`` of a context-overflow 400 (1.7)."""
    if failure.status != 400:
        return None
    match = _CONTEXT_OVERFLOW.search(failure.message)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def should_retry(failure: Failure, *, persistent: bool = False) -> bool:
    """Whether a failure is retryable at all: docs/reference/reference-client.md 1.4, in its order."""
    overloaded = is_overloaded(failure)
    if persistent and (overloaded or failure.status == 429):
        return True
    if overloaded or context_overflow(failure) is not None:
        return True
    if failure.should_retry == "true":
        return True
    if failure.should_retry == "false":
        return False
    if failure.kind in ("connection", "timeout", "protocol"):
        return True
    status = failure.status
    if status is None:
        # An in-stream error that is not an overload (e.g. api_error): the stream died
        # server-side; a gateway retries that.
        return failure.kind == "stream"
    return status in (408, 409, 429, 401) or status >= 500 or is_auth_failure(failure)


def terminal_error(failure: Failure) -> ErrorInfo:
    """The error a client gets when the query ends on this failure: prompt-too-long and
    media-size errors carry their own types (docs/reference/reference-client.md 2.5) and the numbers."""
    info = failure.info()
    if failure.status in (400, 413):
        match = _PROMPT_TOO_LONG.search(failure.message)
        if match is not None:
            return msgspec.structs.replace(
                info,
                type="prompt_too_long",
                prompt_tokens=int(match.group(1)) if match.group(1) else None,
                max_prompt_tokens=int(match.group(2)) if match.group(2) else None,
            )
        if _MEDIA_TOO_LARGE.search(failure.message):
            return msgspec.structs.replace(info, type="media_too_large")
    return info


# --- delays ------------------------------------------------------------------------------


def retry_after_seconds(failure: Failure, now: float) -> float | None:
    """The server's requested wait: ``retry-after-ms``, else ``retry-after`` as integer
    seconds (parseInt semantics: "3.5" is 3), else as an HTTP date. None when absent."""
    if failure.retry_after_ms is not None:
        try:
            return max(float(failure.retry_after_ms) / 1000, 0.0)
        except ValueError:
            pass
    value = failure.retry_after
    if value is None:
        return None
    match = _PARSE_INT.match(value)
    if match is not None:
        return float(max(int(match.group(1)), 0))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now, 0.0)


def backoff(attempt: int, rand: float, max_delay: float = MAX_DELAY) -> float:
    """``min(0.5 * 2**(attempt-1), max_delay)`` plus up to 25% of it (1.2)."""
    base = min(BASE_DELAY * 2.0 ** max(attempt - 1, 0), max_delay)
    return base + rand * JITTER * base


def retry_delay(attempt: int, retry_after: float | None, rand: float, max_delay: float = MAX_DELAY) -> float:
    """The reference ``getRetryDelay``: a server-given wait is honoured exactly and uncapped;
    otherwise the exponential backoff."""
    return retry_after if retry_after is not None else backoff(attempt, rand, max_delay)


def _persistent_delay(state: RetryState, failure: Failure, ctx: Context) -> float:
    """docs/reference/reference-client.md 1.8: wait until the unified reset on a 429 when given, else the
    backoff capped at 5 min; never more than 6 h."""
    if failure.status == 429 and failure.ratelimit_reset is not None:
        try:
            reset = float(failure.ratelimit_reset)
        except ValueError:
            reset = 0.0
        if reset > ctx.now:
            return min(reset - ctx.now, PERSISTENT_RESET_CAP)
    delay = retry_delay(
        state.persistent_attempt, retry_after_seconds(failure, ctx.now), ctx.rand, PERSISTENT_MAX_BACKOFF
    )
    return min(delay, PERSISTENT_RESET_CAP)


# --- the decision ------------------------------------------------------------------------


def decide(policy: RetryPolicy, state: RetryState, failure: Failure, ctx: Context) -> Decision:
    """What to do after ``failure`` ended the attempt described by ``state``."""
    if policy.client_retries:
        if is_auth_failure(failure) and ctx.credential_refreshed and state.loop_attempt <= policy.max_retries:
            return Retry(delay=0.0, state=state)
        return GiveUp(error=terminal_error(failure))
    overloaded = is_overloaded(failure)
    capacity = overloaded or failure.status == 429
    persistent = policy.persistent and capacity

    # a. Fast mode and capacity errors (1.6): never sleeps, except a short retry-after.
    if ctx.fast_mode_active and not policy.persistent and capacity:
        reason = "overloaded" if overloaded else "rate_limit"
        if failure.overage_disabled_reason is not None:
            permanent = failure.overage_disabled_reason not in TRANSIENT_OVERAGE_REASONS
            off = msgspec.structs.replace(state, fast_mode=False)
            return Retry(delay=0.0, state=off, fast_mode_off=failure.overage_disabled_reason, fast_mode_permanent=permanent)
        wait = retry_after_seconds(failure, ctx.now)
        if wait is not None and wait < SHORT_RETRY_THRESHOLD:
            return Retry(delay=wait, state=state)
        cooldown = max(wait if wait is not None else DEFAULT_FAST_MODE_HOLD, MIN_FAST_COOLDOWN)
        off = msgspec.structs.replace(state, fast_mode=False)
        return Retry(delay=0.0, state=off, fast_mode_off=reason, cooldown_until=ctx.now + cooldown)

    # b. Fast mode refused by the API: off for good, continue at once.
    if is_fast_mode_rejected(failure) and state.fast_mode:
        off = msgspec.structs.replace(state, fast_mode=False)
        return Retry(delay=0.0, state=off, fast_mode_off="not_enabled", fast_mode_permanent=True)

    # c. Background sources drop a 529 at once.
    if overloaded and policy.source is not None and policy.source not in FOREGROUND_529_SOURCES:
        info = failure.info()
        return GiveUp(
            error=msgspec.structs.replace(
                info, message=f"{info.message} (query source {policy.source!r} does not retry overload)"
            )
        )

    # d. Consecutive overloads: fall back to another model, or stop (1.5). Never reset by
    # other errors in between, as in the reference.
    consecutive = state.consecutive_529
    if overloaded and (policy.fallback_for_all_models or policy.catalog.counts_repeated_overload(state.model)):
        consecutive += 1
        if consecutive >= MAX_529_RETRIES:
            if policy.fallback_model is not None and policy.fallback_model != state.model:
                switched = RetryState(
                    attempt=state.attempt,
                    model=policy.fallback_model,
                    fast_mode=state.fast_mode,
                    streaming=True,
                )
                return SwitchModel(to_model=policy.fallback_model, state=switched)
            if not policy.persistent:
                return GiveUp(
                    error=ErrorInfo(
                        type="repeated_overload",
                        message="Repeated 529 Overloaded errors",
                        status=failure.status,
                        request_id=failure.request_id,
                    )
                )
    state = msgspec.structs.replace(state, consecutive_529=consecutive)

    # e. The budget (persistent capacity errors have none).
    if state.loop_attempt > policy.max_retries and not persistent:
        return GiveUp(error=terminal_error(failure))

    # f. Not retryable at all; an auth failure only with a fresh credential.
    if not should_retry(failure, persistent=policy.persistent):
        return GiveUp(error=terminal_error(failure))
    if is_auth_failure(failure) and not ctx.credential_refreshed:
        return GiveUp(error=terminal_error(failure))

    # g. Context overflow: cut max_tokens and retry at once (1.7).
    overflow = context_overflow(failure)
    if overflow is not None:
        input_tokens, _, limit = overflow
        available = max(0, limit - input_tokens - CONTEXT_SAFETY_BUFFER)
        if available < FLOOR_OUTPUT_TOKENS:
            return GiveUp(error=terminal_error(failure))
        override = max(FLOOR_OUTPUT_TOKENS, available, ctx.thinking_budget + 1)
        return Retry(delay=0.0, state=msgspec.structs.replace(state, max_tokens_override=override))

    # A stream that broke after its 200 goes on without streaming (2.3), at once, in a new
    # loop seeded with the overload it saw.
    if failure.mid_stream and state.streaming and policy.nonstreaming_fallback:
        fallback = msgspec.structs.replace(
            state, streaming=False, loop_attempt=0, consecutive_529=1 if overloaded else 0
        )
        return Retry(delay=0.0, state=fallback)

    # h. Wait, then retry.
    if persistent:
        state = msgspec.structs.replace(state, persistent_attempt=state.persistent_attempt + 1)
        return Retry(delay=_persistent_delay(state, failure, ctx), state=state)
    delay = retry_delay(state.loop_attempt, retry_after_seconds(failure, ctx.now), ctx.rand)
    return Retry(delay=delay, state=state)
