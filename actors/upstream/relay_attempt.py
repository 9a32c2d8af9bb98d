"""The upstream half of a StreamRelay attempt: the request, the decoding, the relaying.

``AttemptStreamer.stream`` leases a client from the ClientPool, POSTs the request (shaped by
the lease's endpoint for a cloud provider), decodes SSE (or, from Bedrock, AWS event-stream)
incrementally, relays every event's bytes to the query's outbound channel as an ``event``
frame and feeds it to the attempt's ``MessageAssembler``. The non-streaming fallback
(reference 2.3) relays its one answer as the events a stream of it would have carried.
Right after ``message_start`` the usage so far is recorded provisionally with the CostLedger
(``AttemptStreamer.record``).

Everything an attempt got done is kept in its ``Progress``, which outlives the attempt's
cancel scope: the StreamRelay owns that scope, the shielded final record and the
``AttemptOutcome`` (actors.stream_relay). An upstream failure is returned as a ``Failure``,
never raised; a client that went away raises ``ClientGone``; cancellation propagates.

This is the hot path: every upstream event passes through ``_relay_event``, once, with one
channel hop to the client writer and its payload kept as bytes (``msgspec.Raw``).
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Final, Protocol, final

import httpx
import msgspec
import trio

from actors._util import ask
from actors.messages.ledger import CostLedgerAddress, RecordUsage, UsageRecorded
from actors.messages.pool import Acquire, ClientPoolAddress, Lease
from actors.messages.relay import RunAttempt
from actors.observe.metrics import Metrics
from actors.upstream.client import body_chunks, failure_from_exception, failure_from_response
from actors.upstream.endpoints import Prepared
from protocol.assembly import MessageAssembler
from protocol.betas import CONTEXT_1M
from protocol.client_request import merge_headers
from protocol.errors import ClientGone, RemoteProtocolError
from protocol.eventstream import BedrockStreamDecoder, BedrockStreamException
from protocol.frames import EventFrame
from protocol.http_api import client_headers
from protocol.nonstreaming import events_from_message, nonstreaming_body
from protocol.recovery import OUTPUT_LIMIT_STOPS
from protocol.retry import Failure
from protocol.sse import SSEDecoder
from protocol.usage import Usage
from protocol.wire import JSON, JSON_OBJECT, JsonObject

log = logging.getLogger("switchboard.relay")
# One DEBUG line per upstream attempt (``--debug``; README "Configuration").
upstream_log = logging.getLogger("switchboard.upstream")

# The provider label of the first party's metrics (a cloud lease's endpoint has its own).
PROVIDER: Final = "anthropic"
_BLOCK_EVENTS: Final = frozenset({"content_block_start", "content_block_delta", "content_block_stop"})


def _renumber(data: bytes, offset: int) -> bytes:
    """A block event with its ``index`` moved up by ``offset`` (continuations only)."""
    event = JSON_OBJECT.decode(data)
    index = event.get("index")
    if isinstance(index, int):
        event["index"] = index + offset
    return JSON.encode(event)


class _Decoder(Protocol):
    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]: ...

    def close(self) -> None: ...


class _SSEEvents:
    """The SSE decoder with the event-stream decoder's face: (name, data) pairs."""

    __slots__ = ("_sse",)

    def __init__(self) -> None:
        self._sse = SSEDecoder()

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        return [(event.event, event.data) for event in self._sse.feed(chunk)]

    def close(self) -> None:
        self._sse.close()


def _prepare(
    lease: Lease,
    body: JsonObject,
    headers: dict[str, str],
    *,
    streaming: bool,
    raw: bytes | None = None,
    beta_query: bool = False,
) -> Prepared:
    """issue 6: the request for the lease's provider (the first party: ``/v1/messages``,
    with the client's own bytes ``raw`` when given, and ``?beta=true`` when the client posted
    so)."""
    if lease.endpoint is None:
        content = raw if raw is not None else JSON.encode(body)
        path = "/v1/messages?beta=true" if beta_query else "/v1/messages"
        return Prepared(url=lease.base_url + path, headers=headers, content=content)
    return lease.endpoint.messages(body, headers, streaming=streaming)


def _note_heads(msg: RunAttempt, response: httpx.Response) -> None:
    """Leave the response's headers, as a client may get them, for the HTTP door; tell the
    overload gate of a 200."""
    if msg.heads is not None:
        msg.heads.record(msg.attempt, client_headers(response.headers.multi_items()))
    if response.status_code == 200 and msg.on_accepted is not None:
        msg.on_accepted()


def upstream_failure(lease: Lease, response: httpx.Response, body: bytes) -> Failure:
    """The ``Failure`` of an error response, as the lease's provider means it."""
    failure = failure_from_response(response, body)
    return failure if lease.endpoint is None else lease.endpoint.adjust(failure, body)


def _label(lease: Lease) -> str:
    return PROVIDER if lease.endpoint is None else lease.endpoint.label


def log_attempt(
    msg: RunAttempt, prepared: Prepared, outcome: object, headers: httpx.Headers | None, sent_at: float
) -> None:
    """The attempt's DEBUG line on ``switchboard.upstream``: the URL without credentials or
    query, the betas sent, the status (or the exception), the request-id (Bedrock's and
    Vertex's own header for theirs) and the time to the response headers."""
    if not upstream_log.isEnabledFor(logging.DEBUG):
        return
    url = httpx.URL(prepared.url)
    request_id = None
    if headers is not None:
        request_id = headers.get("request-id") or headers.get("x-amzn-requestid") or headers.get("x-request-id")
    upstream_log.debug(
        "upstream attempt=%d POST %s model=%s betas=%s status=%s request_id=%s duration_ms=%.1f",
        msg.attempt, url.copy_with(username=None, password=None, query=None), msg.model,
        prepared.headers.get("anthropic-beta") or "-", outcome, request_id or "-",
        (trio.current_time() - sent_at) * 1000,
    )


class Progress:
    """What an attempt got done, kept outside the attempt's scope for its cleanup."""

    __slots__ = (
        "assembler", "completed", "failure", "first_token_seen", "generation", "internal_error",
        "long_context", "record_id", "relayed", "watchdog", "withheld",
    )

    def __init__(self, msg: RunAttempt) -> None:
        self.assembler = MessageAssembler()
        self.relayed = 0
        self.withheld = False
        self.first_token_seen = False
        self.generation = 0
        # One upstream message, one ledger record (its provisional and final versions).
        self.record_id = f"{msg.query_id}:{msg.attempt}:{uuid.uuid4().hex}"
        self.long_context = any(
            name.lower() == "anthropic-beta" and CONTEXT_1M in value for name, value in msg.headers
        )
        self.failure: Failure | None = None
        self.completed = False
        # What failed unexpectedly, for the client (docs/supervision.md); None: nothing did.
        self.internal_error: str | None = None
        # The stream's idle watchdog, while one runs (``AttemptStreamer.stream``).
        self.watchdog: trio.CancelScope | None = None


@final
class AttemptStreamer:
    """Runs attempts' upstream exchanges for a StreamRelay (see the module docstring).

    Holds no per-attempt state (that is in each attempt's ``Progress``) and closes nothing:
    the StreamRelay owns the addresses it is given.
    """

    def __init__(
        self,
        *,
        to_pool: ClientPoolAddress,
        to_ledger: CostLedgerAddress,
        idle_timeout: float | None,
        nonstreaming_timeout: float,
        slow_reader_timeout: float,
        metrics: Metrics,
    ) -> None:
        self._metrics = metrics
        self._to_pool = to_pool
        self._to_ledger = to_ledger
        self._idle_timeout = idle_timeout
        self._nonstreaming_timeout = nonstreaming_timeout
        self._slow_reader_timeout = slow_reader_timeout

    async def stream(self, msg: RunAttempt, progress: Progress) -> Failure | None:
        """Run the attempt; return its failure, or None when the message completed.

        Raises:
            ClientGone: the query's outbound channel is closed.
            ActorUnavailable: the ClientPool or the CostLedger is gone.
        """
        lease: Lease = await ask(self._to_pool, lambda reply: Acquire(reply=reply, model=msg.model))
        progress.generation = lease.generation
        headers = merge_headers(lease.headers, msg.headers)
        if not msg.streaming:
            return await self._nonstreaming(msg, progress, lease, headers)
        assembler = progress.assembler
        in_body = False
        prepared = _prepare(
            lease, msg.body, headers, streaming=True, raw=msg.raw_body, beta_query=msg.beta_query
        )
        sent_at = trio.current_time()
        try:
            async with lease.client.stream(
                "POST", prepared.url, content=prepared.content, headers=prepared.headers
            ) as response:
                self._metrics.upstream_latency(_label(lease), trio.current_time() - sent_at)
                log_attempt(msg, prepared, response.status_code, response.headers, sent_at)
                _note_heads(msg, response)
                if response.status_code != 200:
                    return upstream_failure(lease, response, await response.aread())
                in_body = True
                request_id = response.headers.get("request-id")
                decoder: _Decoder = BedrockStreamDecoder() if prepared.decoder == "eventstream" else _SSEEvents()
                idle = self._idle_timeout
                # The idle watchdog: a deadline pushed forward by every chunk (reference 2.2).
                with trio.CancelScope() as watchdog:
                    progress.watchdog = watchdog
                    if idle is not None:
                        watchdog.deadline = trio.current_time() + idle
                    async for chunk in body_chunks(response):
                        if idle is not None:
                            watchdog.deadline = trio.current_time() + idle
                        for name, data in decoder.feed(chunk):
                            failure = await self._relay_event(msg, progress, name, data)
                            if failure is not None:
                                return msgspec.structs.replace(failure, request_id=request_id)
                if watchdog.cancelled_caught:
                    return Failure(
                        kind="timeout",
                        error_type="timeout_error",
                        message=f"no data from the upstream stream for {idle:g} s",
                        request_id=request_id,
                        mid_stream=True,
                    )
                decoder.close()
                if not (assembler.started and assembler.stopped):
                    # README "Retry behaviour": a stream without message_start or without
                    # message_stop broke after its 200, even when a message_delta said why
                    # it stopped (its end was lost: the API always ends with message_stop).
                    return Failure(
                        kind="protocol",
                        error_type="api_error",
                        message="upstream stream ended before "
                        + ("message_stop" if assembler.started else "message_start"),
                        request_id=request_id,
                        mid_stream=True,
                    )
                return None
        except BedrockStreamException as exc:
            # issue 6: an exception frame is the status it stands for (docs/reference/wire.md 12 item 4).
            return Failure(
                kind="stream", error_type=exc.error_type, message=str(exc), status=exc.status,
                mid_stream=progress.relayed > 0,
            )
        except RemoteProtocolError as exc:
            return Failure(kind="protocol", error_type=exc.error_type, message=str(exc), mid_stream=True)
        except (httpx.HTTPError, trio.BrokenResourceError) as exc:
            if not in_body:
                log_attempt(msg, prepared, type(exc).__name__, None, sent_at)
            failure = failure_from_exception(exc, mid_stream=in_body)
            if failure is None:
                raise
            return failure

    async def _relay_event(self, msg: RunAttempt, progress: Progress, name: str, data: bytes) -> Failure | None:
        """Apply one event to the message and send it to the client; an ``error`` event is
        returned as the attempt's failure instead. A checkpoint.

        Right after ``message_start`` is relayed, its usage (the input side, which the
        upstream bills from then on) is recorded provisionally, so that even a ``kill -9``
        mid-stream loses none of it; the final record replaces it at the end.
        """
        assembler = progress.assembler
        error = assembler.feed(name, data)
        if error is not None:
            return Failure(kind="stream", error_type=error.type, message=error.message, mid_stream=True)
        send = True
        if name == "message_start":
            send = not msg.continuation
        elif msg.index_offset and name in _BLOCK_EVENTS:
            data = _renumber(data, msg.index_offset)
        elif name == "message_delta" and msg.withhold_output_limit and assembler.stop_reason in OUTPUT_LIMIT_STOPS:
            progress.withheld = True
            send = False
        elif name == "message_stop":
            send = not progress.withheld
        if send:
            frame = EventFrame(id=msg.query_id, attempt=msg.attempt, model=msg.model, event=msgspec.Raw(data))
            try:
                # Without waiting while the channel has room: a chunk's events then go in
                # without a scheduler round each (reading the next chunk is the checkpoint),
                # and the writer finds them queued together.
                msg.outbound.send_nowait(frame)
            except trio.WouldBlock:
                await self._wait_for_client(msg, progress, frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ClientGone from exc
            progress.relayed += 1
            if name == "content_block_delta" and msg.measure_first_token and not progress.first_token_seen:
                progress.first_token_seen = True
                self._metrics.first_token(msg.model, trio.current_time() - msg.query_started)
        if name == "message_start":
            await self.record(msg, progress, final=False)
        return None

    async def _wait_for_client(self, msg: RunAttempt, progress: Progress, frame: EventFrame) -> None:
        """Send ``frame`` once the client has room for it (a checkpoint).

        Meanwhile the upstream is not read, so its silence is ours: the idle watchdog waits
        (its deadline starts afresh after), and the wait is bounded by the slow-reader limit
        instead. A client that takes none of the query's events for that long is treated as
        gone, whichever door it came through: the attempt is cancelled, its usage recorded,
        nothing retried. (Through the WebSocket door the connection's own slow-reader
        watchdog, which times single writes, normally acts first.)

        Raises:
            ClientGone: the client went away, or took nothing for ``slow_reader_timeout``.
        """
        watchdog = progress.watchdog
        if watchdog is not None:
            watchdog.deadline = math.inf
        with trio.move_on_after(self._slow_reader_timeout) as stalled:
            try:
                await msg.outbound.send(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ClientGone from exc
        if stalled.cancelled_caught:
            log.warning(
                "query %s: the client took none of its events for %g s; aborting it",
                msg.query_id, self._slow_reader_timeout,
            )
            raise ClientGone
        if watchdog is not None and self._idle_timeout is not None:
            watchdog.deadline = trio.current_time() + self._idle_timeout

    async def record(
        self, msg: RunAttempt, progress: Progress, *, final: bool, usage: Usage | None = None
    ) -> UsageRecorded:
        """Record the message's usage so far under its record id (``usage``: the final
        version's, settled by the caller; default the assembler's). A checkpoint.

        Raises:
            ActorUnavailable: the ledger is gone.
        """
        if usage is None:
            usage = progress.assembler.usage
        return await ask(
            self._to_ledger,
            lambda reply: RecordUsage(
                session_id=msg.session_id,
                model=msg.model,
                usage=usage,
                long_context=progress.long_context,
                record_id=progress.record_id,
                final=final,
                query_id=msg.query_id,
                attempt=msg.attempt,
                reply=reply,
            ),
        )

    async def _nonstreaming(
        self, msg: RunAttempt, progress: Progress, lease: Lease, headers: dict[str, str]
    ) -> Failure | None:
        """The non-streaming fallback: one POST with its own timeout, then the answer relayed
        as the event sequence of a stream."""
        timeout = httpx.Timeout(self._nonstreaming_timeout, connect=min(5.0, self._nonstreaming_timeout))
        prepared = _prepare(
            lease, nonstreaming_body(msg.body), headers, streaming=False, beta_query=msg.beta_query
        )
        sent_at = trio.current_time()
        try:
            response = await lease.client.request(
                "POST", prepared.url, content=prepared.content, headers=prepared.headers, request_timeout=timeout
            )
        except httpx.HTTPError as exc:
            log_attempt(msg, prepared, type(exc).__name__, None, sent_at)
            failure = failure_from_exception(exc)
            if failure is None:
                raise
            return failure
        log_attempt(msg, prepared, response.status_code, response.headers, sent_at)
        self._metrics.upstream_latency(_label(lease), trio.current_time() - sent_at)
        _note_heads(msg, response)
        if response.status_code != 200:
            return upstream_failure(lease, response, response.content)
        try:
            message = JSON_OBJECT.decode(response.content)
            for name, data in events_from_message(message):
                failure = await self._relay_event(msg, progress, name, data)
                if failure is not None:
                    return failure
        except (msgspec.DecodeError, RemoteProtocolError) as exc:
            return Failure(
                kind="protocol",
                error_type="api_error",
                message=f"malformed non-streaming answer: {exc}",
                request_id=response.headers.get("request-id"),
            )
        return None
