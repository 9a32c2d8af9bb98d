"""The HTTP door's wire (docs/protocol.md 2): what an Anthropic API client gets back, built purely.

- ``sse_event``: one relayed upstream event as an SSE event named by its ``type`` (docs/reference/wire.md
  2.1); only that one field is decoded, the data bytes go out as they came in.
- ``sse_error_event`` / ``error_body``: the mid-stream ``error`` event and the error envelope
  ``{"type": "error", "error": {"type", "message"}, "request_id"}`` (docs/reference/wire.md 3.1).
- ``http_error``: the HTTP status and API error type for a query's error object: the
  upstream's own where there was one, else the gateway's types mapped onto the API's.
- ``is_prelude``: the events the door may hold back until output really begins, so a retry
  before the first content is invisible (see ``actors.doors.http``).
- ``parse_body``, ``default_session``, ``format_usd``: request body, session and header helpers.
- ``client_headers``: which upstream response headers a client gets (docs/protocol.md 2);
  ``version_error``: the API's 400 for a missing or unsupported ``anthropic-version``;
  ``beta_error``: the 400 for an ``anthropic-beta`` that is not ASCII text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import msgspec

from protocol.bounded_json import BoundedDecoder
from protocol.errors import RemoteProtocolError
from protocol.frames import ErrorInfo
from protocol.wire import JSON, JSON_OBJECT, STATUS_OF_ERROR_TYPE, JsonObject

SSE_CONTENT_TYPE: Final = b"text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE: Final = b"application/json"

# Events with no content of their own: holding them back until the first delta costs the
# client nothing it could show, and lets a retry after them stay invisible.
PRELUDE_EVENTS: Final = frozenset({"message_start", "content_block_start", "ping"})

# An SSE event name must be one line; the API's are identifiers like ``content_block_delta``.
_EVENT_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

# The gateway's own error types (docs/protocol.md 1), as the API would word them: the status an
# SDK maps to the right exception class, and an ``error.type`` from the API's enum.
_GATEWAY_ERRORS: Final[dict[str, tuple[int, str]]] = {
    "connection_error": (502, "api_error"),
    "timeout_error": (504, "timeout_error"),
    "repeated_overload": (529, "overloaded_error"),
    "prompt_too_long": (400, "invalid_request_error"),
    "media_too_large": (400, "invalid_request_error"),
    "bad_frame": (400, "invalid_request_error"),
    "too_many_queries": (429, "rate_limit_error"),
    "aborted_by_takeover": (409, "api_error"),
    "shutting_down": (503, "api_error"),
    "internal_error": (500, "api_error"),
    "ledger_unavailable": (503, "api_error"),
}


# Upstream response headers a client never gets from the gateway: hop-by-hop ones (RFC 9110
# 7.6.1), those describing the body's framing or encoding (the door frames and types its own
# answer), cookies (the gateway keeps none), those that would bind the gateway's origin
# (alt-svc, HSTS), and those that would send the client elsewhere (location, refresh: the
# upstream's redirect is the gateway's 502, ``http_error``). Everything else (request-id, retry-after, x-should-retry, every
# anthropic-ratelimit-*) passes.
_NOT_FORWARDED: Final = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "content-type",
        "content-encoding", "cache-control", "date", "server", "set-cookie", "alt-svc",
        "strict-transport-security", "location", "content-location", "refresh",
    }
)  # fmt: skip
# The gateway's own headers: an upstream cannot speak for it.
_OWN_PREFIX: Final = "x-switchboard-"
# The status for an upstream answer the API would never give (docs/protocol.md 2).
BAD_GATEWAY: Final = 502
# The anthropic-version values the API accepts (docs/reference/wire.md 1.1, 1.3).
API_VERSIONS: Final = frozenset({"2023-06-01", "2026-10-21"})
# What an anthropic-beta value may hold: beta names are ASCII (docs/reference/wire.md 11), and the header
# goes upstream as sent, where a byte past ASCII cannot be written (and the API takes none).
_BETA_TEXT: Final = re.compile(r"[\t\x20-\x7e]*")



class _EventType(msgspec.Struct):
    type: str


_EVENT_TYPE: Final = BoundedDecoder(_EventType)


def event_name(data: bytes | memoryview) -> str | None:
    """The ``type`` of an upstream event's JSON, or None when it has no usable one."""
    try:
        name = _EVENT_TYPE.decode(data).type
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return name if _EVENT_NAME.fullmatch(name) else None


def sse_event(name: str, data: bytes | memoryview) -> bytes:
    """One SSE event: ``event: NAME``, the data bytes unchanged, a blank line (docs/reference/wire.md 2.1)."""
    raw = bytes(data)
    if b"\n" in raw or b"\r" in raw:
        # A multi-line payload (pretty-printed upstream JSON) needs one ``data:`` per line.
        lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return (
            b"event: "
            + name.encode()
            + b"\n"
            + b"".join(b"data: " + ln + b"\n" for ln in lines)
            + b"\n"
        )
    return b"event: " + name.encode() + b"\ndata: " + raw + b"\n\n"


def sse_error_event(error_type: str, message: str) -> bytes:
    """The API's mid-stream ``error`` event (docs/reference/wire.md 2.4): ends a stream that already began."""
    data = JSON.encode({"type": "error", "error": {"type": error_type, "message": message}})
    return b"event: error\ndata: " + data + b"\n\n"


def sse_comment(text: str) -> bytes:
    """An SSE comment line: every SSE client, the SDKs included, ignores it (docs/reference/wire.md 2.1)."""
    return b": " + text.replace("\n", " ").replace("\r", " ").encode() + b"\n\n"


def error_body(error_type: str, message: str, request_id: str | None) -> bytes:
    """The API's error envelope (docs/reference/wire.md 3.1)."""
    return JSON.encode(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }
    )


def http_error(info: ErrorInfo) -> tuple[int, str]:
    """``(status, API error type)`` for a query's error object.

    An upstream error keeps its status and type; a gateway error type is mapped onto the
    API's (``repeated_overload`` is a 529 ``overloaded_error``, a broken upstream connection a
    502 ``api_error``, ...); anything else without a status is a 500. An upstream status that
    is no error status (a redirect, a 1xx, a 2xx other than 200, past 599) is a 502: the API
    sends none, and a client must not follow, say, a redirect the upstream chose.
    """
    mapped = _GATEWAY_ERRORS.get(info.type)
    if mapped is not None:
        status, error_type = mapped
        return _error_status(info.status) or status, error_type
    return _error_status(info.status) or STATUS_OF_ERROR_TYPE.get(info.type, 500), info.type


def _error_status(status: int | None) -> int | None:
    """An upstream's status as the door may answer it (see ``http_error``)."""
    if status is None or 400 <= status <= 599:
        return status
    return BAD_GATEWAY


def message_as_sse(message: JsonObject) -> bytes:
    """A whole assembled message as the stream the API would have sent for it (docs/reference/wire.md 2.2).

    For an answer that reached the gateway without events (a non-streaming upstream request):
    text, thinking and tool input arrive as one delta each, so streaming helpers (text
    streams, accumulators) see them; any other block comes whole in its start event.
    """
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    parts = [sse_event("message_start", JSON.encode({"type": "message_start", "message": start}))]
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type")
        deltas: list[JsonObject] = []
        if kind == "text":
            first: JsonObject = {**block, "text": ""}
            deltas.append({"type": "text_delta", "text": block.get("text", "")})
        elif kind == "thinking":
            first = {**block, "thinking": "", "signature": ""}
            deltas.append({"type": "thinking_delta", "thinking": block.get("thinking", "")})
            deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
        elif kind in ("tool_use", "server_tool_use"):
            first = {**block, "input": {}}
            deltas.append(
                {
                    "type": "input_json_delta",
                    "partial_json": JSON.encode(block.get("input", {})).decode(),
                }
            )
        else:
            first = block
        event = {"type": "content_block_start", "index": index, "content_block": first}
        parts.append(sse_event("content_block_start", JSON.encode(event)))
        for delta in deltas:
            event = {"type": "content_block_delta", "index": index, "delta": delta}
            parts.append(sse_event("content_block_delta", JSON.encode(event)))
        parts.append(
            sse_event(
                "content_block_stop", JSON.encode({"type": "content_block_stop", "index": index})
            )
        )
    delta = {
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
    }
    event = {"type": "message_delta", "delta": delta, "usage": message.get("usage", {})}
    parts.append(sse_event("message_delta", JSON.encode(event)))
    parts.append(sse_event("message_stop", b'{"type":"message_stop"}'))
    return b"".join(parts)


def is_prelude(name: str) -> bool:
    """True for events that carry no content (see ``PRELUDE_EVENTS``)."""
    return name in PRELUDE_EVENTS


def parse_body(body: bytes) -> JsonObject:
    """A request body as a JSON object.

    Raises:
        RemoteProtocolError: not JSON, or not an object (``invalid_request_error``).
    """
    try:
        return JSON_OBJECT.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(
            f"the request body is not a JSON object: {exc}", error_type="invalid_request_error"
        ) from exc


def default_session(owner: str | None) -> str:
    """The session a request without ``x-switchboard-session`` is charged to: one per access
    token (named by a prefix of the token's digest, never the token), or ``http-default``."""
    return "http-default" if owner is None else f"http-{owner[:24]}"


def format_usd(value: float) -> str:
    """A dollar amount for a header: fixed-point to the picodollar, trailing zeros cut."""
    text = f"{value:.12f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def client_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The upstream response headers a client of the door gets, names lower-cased, in order
    (see ``_NOT_FORWARDED``)."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        key = name.lower()
        if key not in _NOT_FORWARDED and not key.startswith(_OWN_PREFIX):
            out.append((key, value))
    return tuple(out)


def version_error(version: str | None) -> str | None:
    """The API's message for an ``anthropic-version`` it refuses (400
    ``invalid_request_error``), or None when the version is one it accepts."""
    if version is None or not version.strip():
        return "anthropic-version: header is required"
    if version.strip() not in API_VERSIONS:
        return f"anthropic-version: {JSON.encode(version.strip()).decode()} is not a valid version"
    return None


def beta_error(beta: str | None) -> str | None:
    """The 400 ``invalid_request_error`` message for an ``anthropic-beta`` that is not
    printable ASCII (the door decodes header bytes as Latin-1), or None when it may go
    upstream as sent."""
    if beta is None or _BETA_TEXT.fullmatch(beta):
        return None
    return "anthropic-beta: the header value must be ASCII text"
