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

A query's error response carries ``x-should-retry: false``: the gateway has retried as far
as its rules allow, so an SDK must not multiply that with its own retries. But for
``shutting_down`` (a graceful shutdown cut the query off before its stream began): that 503
is worth a retry on another instance, so it carries ``connection: close`` instead.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from actors.asgi import Exchange
from actors.drain import SHUTTING_DOWN
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
NO_RETRY: Final = (b"x-should-retry", b"false")
# A response after which the client must not reuse the connection (the gateway is stopping).
CONNECTION_CLOSE: Final = (b"connection", b"close")
# A query that ends without a terminal frame (never, by PROTOCOL.md) or is aborted under the
# door (the gateway shutting down) is still answered, never left as a silent 200.
_ABORTED: Final = ("api_error", "the query was aborted by the gateway")
_VOIDED: Final = ("api_error", "the upstream attempt failed after output had begun")
# The supervisor sends the frame that says why an attempt was voided right after the
# tombstone; if it ever did not, the client's stream must still end promptly.
VOID_REASON_TIMEOUT: Final = 1.0


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
    ``retry`` False adds ``x-should-retry: false``. After the status line it can only end the
    body with the API's ``error`` event."""
    if exchange.started:
        await exchange.end(sse_error_event(error_type, message))
        return
    exchange.base_headers[:] = [(n, v) for n, v in exchange.base_headers if n != b"request-id"]
    exchange.base_headers.append((b"request-id", request_id.encode()))
    headers = [NO_RETRY] if retry is False else []
    await exchange.respond(
        status, error_body(error_type, message, request_id), JSON_CONTENT_TYPE, headers
    )


async def _query_error(exchange: Exchange, info: ErrorInfo, request_id: str) -> None:
    status, error_type = http_error(info)
    retry: bool | None = False
    if info.type == SHUTTING_DOWN:
        exchange.base_headers.append(CONNECTION_CLOSE)
        retry = None
    await send_error(
        exchange, status, error_type, info.message, info.request_id or request_id, retry=retry
    )


def _cost_headers(done: Done) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-switchboard-cost-usd", format_usd(done.cost_usd).encode()),
        (b"x-switchboard-session-cost-usd", format_usd(done.session_cost_usd).encode()),
        (b"x-switchboard-cost-recorded", b"true" if done.cost_recorded else b"false"),
    ]


async def answer_json(
    frames: trio.MemoryReceiveChannel[GatewayFrame], exchange: Exchange, request_id: str
) -> None:
    """Answer with the assembled message, or the query's error. Returns after the terminal frame."""
    async for frame in frames:
        match frame:
            case Done():
                await exchange.respond(
                    200, JSON.encode(frame.message), JSON_CONTENT_TYPE, _cost_headers(frame)
                )
                return
            case ErrorFrame():
                await _query_error(exchange, frame.error, request_id)
                return
            case Aborted():
                await send_error(exchange, 500, *_ABORTED, request_id, retry=False)
                return
            case _:
                continue
    await send_error(exchange, 500, *_ABORTED, request_id, retry=False)


async def answer_stream(
    frames: trio.MemoryReceiveChannel[GatewayFrame], exchange: Exchange, request_id: str
) -> None:
    """Answer with the SSE stream (see the module docstring). Returns after the terminal frame,
    or after ending the stream with an ``error`` event: the caller then leaves the query.

    Events already queued are written together: one send for a burst, not one per event."""
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
                comment = sse_comment(
                    f"switchboard cost_usd={format_usd(frame.cost_usd)} "
                    f"session_cost_usd={format_usd(frame.session_cost_usd)}"
                    + ("" if frame.cost_recorded else " cost_recorded=false")
                )
                if not exchange.started:
                    # The answer came without events (a non-streaming upstream request).
                    await exchange.start(200, SSE_HEADERS)
                    out.append(message_as_sse(frame.message))
                await exchange.end(b"".join(out) + comment)
                return
            case ErrorFrame():
                if not exchange.started:
                    await _query_error(exchange, frame.error, request_id)
                else:
                    error = sse_error_event(http_error(frame.error)[1], frame.error.message)
                    await exchange.end(b"".join(out) + error)
                return
            case Aborted():
                break
            case _:
                continue
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
