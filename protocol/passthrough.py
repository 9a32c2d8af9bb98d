"""The HTTP door's transparent requests and its retry contract, as pure rules (docs/protocol.md 2).

Transparent (the HTTP door's default): what a client built goes upstream as it built it.
``passthrough_model`` is the one change to the body, and only where a provider needs it: a
first-party model id becomes that provider's id (``claude-sonnet-4-6`` on Bedrock is
``us.anthropic.claude-sonnet-4-6``); any other id, an alias included, goes as sent.
``passthrough_body`` returns the client's own bytes when nothing changes, so the upstream
receives them byte for byte; otherwise the body re-encoded with those changes only.

Client retries: ``client_retries`` says whether a request comes from a client that retries on
its own (the Stainless SDKs and Claude Code send ``x-stainless-retry-count``), so the gateway
gives it one upstream attempt and the upstream's answer (docs/protocol.md 2, "Retries").
``client_timeout`` reads the client's own timeout (``x-stainless-timeout``, seconds).
``gate_refusal`` is the answer to such a request that the overload gate turns away;
``out_of_time`` the error of a gateway-retry query that ran out of its client's time
before any attempt could go.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final, Literal

from protocol.frames import ErrorInfo
from protocol.models.aliases import ModelSettings, provider_model_id
from protocol.wire import JSON, JsonObject

RetryMode = Literal["auto", "gateway", "client"]
RETRY_MODES: Final[tuple[RetryMode, ...]] = ("auto", "gateway", "client")
# The header that forces a mode for one request, and the one that marks a retrying client.
RETRIES_HEADER: Final = "x-switchboard-retries"
STAINLESS_RETRY_COUNT: Final = "x-stainless-retry-count"
STAINLESS_TIMEOUT: Final = "x-stainless-timeout"
# A client's timeout is believed up to a day: a larger or malformed value is ignored.
MAX_CLIENT_TIMEOUT: Final = 86_400.0


def passthrough_model(requested: str, models: ModelSettings, provider: str) -> str:
    """The model id sent upstream for ``requested``: a first-party id in the provider's form,
    anything else unchanged."""
    return provider_model_id(requested, models, provider)


def passthrough_body(
    request: JsonObject, raw: bytes | None, *, model: str, max_tokens: int | None = None
) -> tuple[JsonObject, bytes | None]:
    """The upstream body of a transparent attempt, and its bytes when they are the client's.

    The gateway always streams upstream (to relay, retry and count usage), so a request
    without ``"stream": true`` gets it; ``model`` replaces the client's when it differs;
    ``max_tokens`` is a context-overflow retry's (gateway retries only). The bytes are
    returned only when none of this changed anything, else None (encode the body).
    """
    changes: JsonObject = {}
    if request.get("model") != model:
        changes["model"] = model
    if request.get("stream") is not True:
        changes["stream"] = True
    if max_tokens is not None and request.get("max_tokens") != max_tokens:
        changes["max_tokens"] = max_tokens
    if not changes:
        return request, raw
    return {**request, **changes}, None


def encoded(body: JsonObject, raw: bytes | None) -> bytes:
    """The bytes of a body: the client's own when kept, else the body encoded."""
    return raw if raw is not None else JSON.encode(body)


def client_retries(headers: Mapping[str, str], default: RetryMode) -> bool:
    """Whether the gateway leaves retries to this client: ``x-switchboard-retries`` when it
    says ``gateway`` or ``client``, else the default mode, where ``auto`` means "the request
    carries ``x-stainless-retry-count``"."""
    forced = headers.get(RETRIES_HEADER, "").strip().lower()
    mode = forced if forced in ("gateway", "client") else default
    if mode == "auto":
        return STAINLESS_RETRY_COUNT in headers
    return mode == "client"


def client_timeout(headers: Mapping[str, str]) -> float | None:
    """The client's own timeout in seconds (``x-stainless-timeout``), or None when absent or
    not a positive number of at most a day."""
    raw = headers.get(STAINLESS_TIMEOUT, "").strip()
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 < value <= MAX_CLIENT_TIMEOUT else None


def gate_retry_after(seconds: float) -> tuple[str, str]:
    """``(retry-after, retry-after-ms)`` for a wait of ``seconds``: whole seconds rounded up,
    at least 1 (``retry-after`` is an integer, and a client honouring it must not come back
    before the gate's next probe), and the exact milliseconds for clients that read them."""
    wait = max(seconds, 0.0)
    return str(max(1, math.ceil(wait))), str(max(1, math.ceil(wait * 1000)))


def gate_refusal(model: str, wait: float | None) -> tuple[ErrorInfo, tuple[tuple[str, str], ...]]:
    """The 529 ``overloaded_error`` for a request the overload gate of ``model`` answers for
    the upstream, and its headers: ``x-should-retry: true`` (it is worth a retry) and, when
    ``wait`` is known, when to come back (``gate_retry_after``)."""
    if wait is None:
        message = f"Overloaded: {model} is overloaded (the gateway's probe of it just failed)"
        headers: tuple[tuple[str, str], ...] = (("x-should-retry", "true"),)
    else:
        retry_after, retry_after_ms = gate_retry_after(wait)
        message = f"Overloaded: the gateway holds {model} back for {retry_after} s, as the upstream asked"
        headers = (("retry-after", retry_after), ("retry-after-ms", retry_after_ms), ("x-should-retry", "true"))
    return ErrorInfo(type="overloaded_error", message=message, status=529, request_id=None), headers


def out_of_time(model: str) -> ErrorInfo:
    """The 529 of a query whose client's timeout came before its model's gate let it go."""
    message = f"Overloaded: no attempt on {model} could go before the client's timeout"
    return ErrorInfo(type="overloaded_error", message=message, status=529, request_id=None)
