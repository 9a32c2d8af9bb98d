"""The HTTP door's answer to ``POST /v1/messages``, written from a query's frames.

``answer_stream``: the API's SSE stream. Each ``event`` frame becomes one SSE event with the
upstream's bytes. Events without content (``protocol.http_api.PRELUDE_EVENTS``) are held
until the first event with content, and the status line with them, so an attempt voided
before any content (``tombstone``) is dropped unseen and its retry is invisible; so is a
failure for good before any content, which becomes an HTTP error with the right status.
After content, a voided attempt ends the stream with the API's ``error`` event (the error of
the ``retry`` or ``error`` frame that follows the tombstone) and the caller leaves the query,
which aborts it. ``retry``, ``heartbeat``, ``fallback`` and ``fast_mode`` frames are not
written: nothing in the API's stream could carry them. After ``message_stop``, an SSE comment
carries the query's cost (``: switchboard cost_usd=... session_cost_usd=...``).

``answer_json``: the ``done`` frame's assembled message as the API's JSON body, with the
cost in ``x-switchboard-cost-usd`` and ``x-switchboard-session-cost-usd``, and whether the
ledger committed it in ``x-switchboard-cost-recorded`` (``true``/``false``); a stream's
cost comment ends with ``cost_recorded=false`` when it did not.

Upstream headers (``Reply.heads``, docs/protocol.md 2): a success carries the response
headers of the attempt whose events it writes, an error those of the query's last attempt
(``request-id``, ``retry-after``, every ``anthropic-ratelimit-*``, ...; the gateway's own id
stays in ``x-switchboard-request-id``).

``x-should-retry``: when the gateway retried (``Reply.client_retries`` False), a query's error
response carries ``false``: it has retried as far as its rules allow, so an SDK must not
multiply that with its own retries. When the client retries on its own, the upstream's value
goes as the upstream sent it. But for ``shutting_down`` (a graceful shutdown cut the query
off before its stream began): that 503 is worth a retry on another instance, so it carries
``connection: close`` instead. The gateway's own 400, 401, 403, 404, 405 and 413 always
carry ``false``: sending them again cannot help.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import msgspec
import trio

from actors.doors.asgi import Exchange
from actors.supervisor.drain import SHUTTING_DOWN
from actors.supervisor.options import UpstreamHeads
from protocol.frames import (
    Aborted,
    Done,
    ErrorFrame,
    ErrorInfo,
    EventFrame,
    Fallback,
    GatewayFrame,
    RetryFrame,
    Tombstone,
)
from protocol.http_api import (
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    error_body,
    event_name,
    format_usd,
    http_error,
    is_prelude,
    message_as_sse,
    sse_comment,
    sse_error_event,
    sse_event,
)
from protocol.wire import JSON

log = logging.getLogger("switchboard.httpdoor")

# Past this many held events the response starts anyway: a prelude that long is a run of
# whole server-tool result blocks, content in all but name.
MAX_HELD: Final = 16
SSE_HEADERS: Final = ((b"content-type", SSE_CONTENT_TYPE), (b"cache-control", b"no-cache"))
# A response after which the client must not reuse the connection (the gateway is stopping).
CONNECTION_CLOSE: Final = (b"connection", b"close")
# A query that ends without a terminal frame (never, by docs/protocol.md) or is aborted under the
# door (the gateway shutting down) is still answered, never left as a silent 200.
_ABORTED: Final = ("api_error", "the query was aborted by the gateway")
_VOIDED: Final = ("api_error", "the upstream attempt failed after output had begun")
# Statuses the gateway answers on its own for which a retry cannot help (docs/reference/wire.md 3.2: the
# SDKs do not retry them either; the header says so to any client).
FINAL_STATUSES: Final = frozenset({400, 401, 403, 404, 405, 413})
# Errors the gateway ends a query with that no retry mends, also when the client retries.
_FINAL_TYPES: Final = frozenset(
    {"internal_error", "bad_frame", "prompt_too_long", "media_too_large", "ledger_unavailable", "billing_error"}
)
# The supervisor sends the frame that says why an attempt was voided right after the
# tombstone; if it ever did not, the client's stream must still end promptly.
VOID_REASON_TIMEOUT: Final = 1.0


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """How to answer one query: its gateway request id, where its attempts' upstream headers
    are, and whether its client retries on its own."""

    request_id: str
    heads: UpstreamHeads
    client_retries: bool = False


def adopt(exchange: Exchange, headers: Sequence[tuple[str, str]]) -> None:
    """Put upstream headers on the exchange's answer, each replacing the door's own header of
    that name (``request-id``)."""
    if not headers:
        return
    names = {name.encode() for name, _ in headers}
    exchange.base_headers[:] = [(n, v) for n, v in exchange.base_headers if n not in names]
    exchange.base_headers.extend(
        (name.encode(), value.encode("latin-1", "replace")) for name, value in headers
    )


async def send_error(
    exchange: Exchange,
    status: int,
    error_type: str,
    message: str,
    request_id: str,
    *,
    retry: bool | None = None,
) -> None:
    """An error response in the API's envelope; its ``request-id`` header names the same id.
    ``retry`` False adds ``x-should-retry: false`` (and replaces any other), as does None for
    a status in ``FINAL_STATUSES``. After the status line it can only end the body with the
    API's ``error`` event."""
    if exchange.started:
        await exchange.end(sse_error_event(error_type, message))
        return
    if retry is None and status in FINAL_STATUSES:
        retry = False
    if retry is False:
        adopt(exchange, [("x-should-retry", "false")])
    adopt(exchange, [("request-id", request_id)])
    await exchange.respond(status, error_body(error_type, message, request_id), JSON_CONTENT_TYPE)


async def shutting_down(exchange: Exchange, request_id: str) -> None:
    """503 ``api_error``: the gateway takes no new work. Worth a retry, on a new connection:
    on another instance behind a load balancer."""
    exchange.base_headers.append(CONNECTION_CLOSE)
    await send_error(exchange, 503, "api_error", "the gateway is shutting down", request_id)


async def _query_error(exchange: Exchange, info: ErrorInfo, reply: Reply) -> None:
    """A query's error, with the upstream headers of its last attempt (see the module docstring)."""
    status, error_type = http_error(info)
    adopt(exchange, reply.heads.last())
    retry: bool | None = None
    if info.retry_after_s is not None:
        # A token's limit (docs/protocol.md "Access tokens and budgets"): when to try again.
        adopt(exchange, [("retry-after", str(info.retry_after_s))])
    if info.type == SHUTTING_DOWN:
        exchange.base_headers.append(CONNECTION_CLOSE)
    elif not reply.client_retries or info.type in _FINAL_TYPES:
        retry = False
    await send_error(
        exchange, status, error_type, info.message, info.request_id or reply.request_id, retry=retry
    )


def _cost_headers(done: Done) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-switchboard-cost-usd", format_usd(done.cost_usd).encode()),
        (b"x-switchboard-session-cost-usd", format_usd(done.session_cost_usd).encode()),
        (b"x-switchboard-cost-recorded", b"true" if done.cost_recorded else b"false"),
    ]


async def answer_json(
    frames: trio.MemoryReceiveChannel[GatewayFrame], exchange: Exchange, reply: Reply
) -> None:
    """Answer with the assembled message, or the query's error. Returns after the terminal frame."""
    request_id = reply.request_id
    async for frame in frames:
        match frame:
            case Done():
                adopt(exchange, reply.heads.of(frame.attempts))
                await exchange.respond(
                    200, JSON.encode(frame.message), JSON_CONTENT_TYPE, _cost_headers(frame)
                )
                return
            case ErrorFrame():
                await _query_error(exchange, frame.error, reply)
                return
            case Aborted():
                await send_error(exchange, 500, *_ABORTED, request_id, retry=False)
                return
            case _:
                continue
    await send_error(exchange, 500, *_ABORTED, request_id, retry=False)


async def answer_stream(
    frames: trio.MemoryReceiveChannel[GatewayFrame], exchange: Exchange, reply: Reply
) -> None:
    """Answer with the SSE stream (see the module docstring). Returns after the terminal frame,
    or after ending the stream with an ``error`` event: the caller then leaves the query.

    Events already queued are written together: one send for a burst, not one per event."""
    request_id = reply.request_id
    held: list[bytes] = []  # content-free events not written yet
    out: list[bytes] = []  # SSE bytes to write once no frame is ready
    while True:
        try:
            frame = frames.receive_nowait()
        except trio.WouldBlock:
            if out:
                await exchange.write(b"".join(out))
                out.clear()
            try:
                frame = await frames.receive()
            except trio.EndOfChannel:
                break
        except trio.EndOfChannel:
            break
        match frame:
            case EventFrame():
                name = event_name(frame.event)
                if name is None:
                    log.warning(
                        "query %s: an upstream event without a type was not relayed", frame.id
                    )
                    continue
                chunk = sse_event(name, frame.event)
                if not exchange.started:
                    if is_prelude(name) and len(held) < MAX_HELD:
                        held.append(chunk)
                        continue
                    adopt(exchange, reply.heads.of(frame.attempt))
                    await exchange.start(200, SSE_HEADERS)
                    out.extend(held)
                    held.clear()
                out.append(chunk)
            case Tombstone():
                if not exchange.started:
                    held.clear()  # the attempt is void and nobody saw it: retry unseen
                    continue
                error_type, message = await _void_reason(frames)
                await exchange.end(b"".join(out) + sse_error_event(error_type, message))
                return
            case Done():
                await _stream_done(frame, exchange, out, reply)
                return
            case ErrorFrame():
                await _stream_error(frame, exchange, out, reply)
                return
            case Aborted():
                break
            case _:
                continue
    await _stream_aborted(exchange, out, request_id)


async def _stream_done(frame: Done, exchange: Exchange, out: list[bytes], reply: Reply) -> None:
    """End the SSE stream after ``out`` with the cost comment (``answer_stream``)."""
    comment = sse_comment(
        f"switchboard cost_usd={format_usd(frame.cost_usd)} "
        f"session_cost_usd={format_usd(frame.session_cost_usd)}"
        + ("" if frame.cost_recorded else " cost_recorded=false")
    )
    if not exchange.started:
        # The answer came without events (a non-streaming upstream request).
        adopt(exchange, reply.heads.of(frame.attempts))
        await exchange.start(200, SSE_HEADERS)
        out.append(message_as_sse(frame.message))
    await exchange.end(b"".join(out) + comment)


async def _stream_error(frame: ErrorFrame, exchange: Exchange, out: list[bytes], reply: Reply) -> None:
    """The query failed for good: an HTTP error before the stream began, else the stream
    ends after ``out`` with the API's ``error`` event (``answer_stream``)."""
    if not exchange.started:
        await _query_error(exchange, frame.error, reply)
    else:
        error = sse_error_event(http_error(frame.error)[1], frame.error.message)
        await exchange.end(b"".join(out) + error)


async def _stream_aborted(exchange: Exchange, out: list[bytes], request_id: str) -> None:
    """The query was aborted, or its frames ended without a terminal one (``answer_stream``)."""
    if exchange.started:
        await exchange.end(b"".join(out) + sse_error_event(*_ABORTED))
    else:
        await send_error(exchange, 500, *_ABORTED, request_id, retry=False)


async def _void_reason(frames: trio.MemoryReceiveChannel[GatewayFrame]) -> tuple[str, str]:
    """The API error type and message for a voided attempt, from the frame after the tombstone."""
    frame: GatewayFrame | None = None
    with trio.move_on_after(VOID_REASON_TIMEOUT):
        try:
            frame = await frames.receive()
        except trio.EndOfChannel:
            return _ABORTED
    match frame:
        case RetryFrame() | ErrorFrame():
            return http_error(frame.error)[1], frame.error.message
        case Fallback():
            return (
                "overloaded_error",
                f"{frame.from_model} is overloaded; the gateway switched to {frame.to_model}",
            )
        case _:  # another frame, or none in time
            return _VOIDED
