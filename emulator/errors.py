"""API error envelopes and the error responses of the status faults (pure apart from a clock).

Every error body is exactly ``{"type":"error","error":{"type":T,"message":M},"request_id":R}``
(docs/reference/wire.md 3.1) and every response carries a ``request-id`` header (docs/reference/wire.md 4). The status ->
``error.type`` table follows docs/reference/wire.md 3.2.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec

from .faults import Fault

Headers = list[tuple[bytes, bytes]]

# Default (error.type, message) per status; texts are the API's where docs/reference/wire.md 3.2 has them.
_STATUS_ERRORS: Final[Mapping[int, tuple[str, str]]] = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "The requested resource could not be found."),
    405: ("invalid_request_error", "Method not allowed"),
    408: ("timeout_error", "Request timed out"),
    409: ("conflict_error", "Conflict: the request could not be completed, please retry"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed your account's rate limit. Please try again later.",
    ),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "The request timed out while processing"),
    529: ("overloaded_error", "Overloaded"),
}

# error.type -> status, for a mid-stream error fault that hits a non-streaming request.
_TYPE_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# The API's default context window (docs/reference/reference-client.md 1.7 example).
DEFAULT_CONTEXT_LIMIT: Final = 200_000


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """A complete error reply: status, extra headers (besides request-id) and body."""

    status: int
    error_type: str
    message: str
    headers: Headers = field(default_factory=list)

    def body(self, request_id: str) -> bytes:
        """The exact API error envelope for ``request_id``."""
        return error_body(self.error_type, self.message, request_id)


def error_body(error_type: str, message: str, request_id: str) -> bytes:
    """``{"type":"error","error":{...},"request_id":...}`` as JSON bytes."""
    return msgspec.json.encode(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }
    )


def api_error(
    status: int, message: str | None = None, error_type: str | None = None
) -> ErrorResponse:
    """An ErrorResponse for ``status`` with the table's type and message as defaults."""
    default_type, default_message = _STATUS_ERRORS.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}")
    )
    return ErrorResponse(
        status, error_type or default_type, default_message if message is None else message
    )


def status_for_type(error_type: str) -> int:
    """The HTTP status an ``error.type`` travels with (500 for unknown types)."""
    return _TYPE_STATUS.get(error_type, 500)


def fault_error(fault: Fault, *, input_tokens: int, max_tokens: int) -> ErrorResponse:
    """The error reply of a status fault (``fault.is_status`` must be true).

    ``input_tokens`` / ``max_tokens`` are the request's, the defaults of context_overflow
    and prompt_too_long.
    """
    message = fault.str_option("message", None)
    limit = fault.int_option("limit", DEFAULT_CONTEXT_LIMIT)
    if fault.kind == "context_overflow":
        used = fault.int_option("input", input_tokens)
        wanted = fault.int_option("max_tokens", max_tokens)
        message = (
            f"input length and `max_tokens` exceed context limit: {used} + {wanted} > {limit},"
            " decrease input length or `max_tokens` and try again"
        )
        response = api_error(400, message)
    elif fault.kind == "prompt_too_long":
        count = fault.int_option("tokens", max(input_tokens, limit + 1))
        response = api_error(400, f"prompt is too long: {count} tokens > {limit} maximum")
    elif fault.kind == "status":
        response = api_error(
            fault.int_option("status", 500), message, fault.str_option("type", None)
        )
    else:
        response = api_error(int(fault.kind), message)
    response.headers.extend(_fault_headers(fault))
    return response


def header_value(text: str) -> bytes:
    """``text`` made safe for an HTTP header value: printable ASCII only."""
    return "".join(c if " " <= c <= "~" else "?" for c in text).strip().encode("ascii")


def _fault_headers(fault: Fault) -> Headers:
    """The retry / rate-limit headers a status fault's options ask for (docs/reference/wire.md 4, 4.1)."""
    headers: Headers = []
    if "retry_after" in fault.options:
        headers.append((b"retry-after", b"%d" % fault.int_option("retry_after", 0)))
    if "retry_after_ms" in fault.options:
        headers.append((b"retry-after-ms", b"%d" % fault.int_option("retry_after_ms", 0)))
    if "retry_after_date" in fault.options:
        # An HTTP-date is wall-clock time by definition; the trio clock cannot stand in.
        when = time.time() + fault.int_option("retry_after_date", 0)
        headers.append((b"retry-after", email.utils.formatdate(when, usegmt=True).encode()))
    should_retry = fault.bool_option("should_retry")
    if should_retry is not None:
        headers.append((b"x-should-retry", b"true" if should_retry else b"false"))
    if "reset" in fault.options:
        headers.append((b"anthropic-ratelimit-unified-reset", b"%d" % fault.int_option("reset", 0)))
    reason = fault.str_option("overage_disabled_reason", None)
    if reason is not None:
        headers.append(
            (b"anthropic-ratelimit-unified-overage-disabled-reason", header_value(reason))
        )
    return headers
