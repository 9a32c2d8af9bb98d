"""The httpx boundary: the one place that maps transport errors and error responses.

``failure_from_exception`` turns an httpx (or trio) exception into a ``Failure``;
``failure_from_response`` turns a non-2xx response and its body into one. Nothing else in
the gateway inspects httpx exception types.
"""

from __future__ import annotations

import httpx

from protocol.retry import Failure
from protocol.wire import ERROR_TYPE_OF_STATUS, parse_error_body


def failure_from_exception(exc: BaseException, *, mid_stream: bool = False) -> Failure | None:
    """The Failure for a transport error, or None when ``exc`` is not one (re-raise it).

    ``mid_stream``: it happened while reading a 200's body. A read/write error or a peer that
    closed mid-response marks the connection ``stale`` (reset or broken, reference 1.3).
    """
    if isinstance(exc, httpx.TimeoutException):
        return Failure(
            kind="timeout",
            error_type="timeout_error",
            message=f"upstream timed out ({type(exc).__name__})",
            mid_stream=mid_stream,
        )
    if isinstance(exc, httpx.TransportError):
        return Failure(
            kind="connection",
            error_type="connection_error",
            message=f"upstream connection failed ({type(exc).__name__}: {exc})",
            mid_stream=mid_stream,
            stale=isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError),
        )
    return None


def failure_from_response(response: httpx.Response, body: bytes) -> Failure:
    """The Failure for a non-2xx response (its body already read)."""
    status = response.status_code
    headers = response.headers
    error = parse_error_body(body)
    if error is not None:
        error_type, message = error.type, error.message
    else:
        # No API envelope (a proxy, a load balancer): the type the status stands for.
        error_type = ERROR_TYPE_OF_STATUS.get(status, "api_error")
        message = body[:500].decode("utf-8", "replace") or f"upstream answered {status}"
    return Failure(
        kind="status",
        error_type=error_type,
        message=message,
        status=status,
        request_id=headers.get("request-id"),
        retry_after=headers.get("retry-after"),
        retry_after_ms=headers.get("retry-after-ms"),
        should_retry=headers.get("x-should-retry"),
        ratelimit_reset=headers.get("anthropic-ratelimit-unified-reset"),
        overage_disabled_reason=headers.get("anthropic-ratelimit-unified-overage-disabled-reason"),
    )
