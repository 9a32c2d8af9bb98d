"""The upstream half of a StreamRelay attempt: the request, the decoding, the relaying.

``AttemptStreamer.stream`` leases a client from the ClientPool, POSTs the request (shaped by
the lease's endpoint for a cloud provider), decodes SSE (or, from Bedrock, AWS event-stream)
incrementally, relays every event's bytes to the query's outbound channel as an ``event``
frame and feeds it to the attempt's ``MessageAssembler``. The non-streaming fallback
(reference 2.3) relays its one answer as the events a stream of it would have carried.
Right after ``message_start`` the usage so far is recorded provisionally with the CostLedger
(``AttemptStreamer.record``). The exchange's helpers around the relaying (the request shaped
for the provider, the event decoder, the DEBUG line) are ``actors/upstream/attempt_http.py``.

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
from typing import Final, final

import httpx
import msgspec
import trio

from actors._util import ask
from actors.messages.ledger import CostLedgerAddress, RecordUsage, UsageRecorded
from actors.messages.pool import Acquire, ClientPoolAddress, Lease
from actors.messages.relay import RunAttempt
from actors.observe.metrics import Metrics
from actors.upstream.attempt_http import (
    Decoder,
    SSEEvents,
    log_attempt,
    note_heads,
    prepare,
    provider_label,
    upstream_failure,
)
from actors.upstream.client import body_chunks, failure_from_exception
from protocol.assembly import MessageAssembler
from protocol.betas import CONTEXT_1M
from protocol.client_request import merge_headers
from protocol.errors import ClientGone, RemoteProtocolError
from protocol.eventstream import BedrockStreamDecoder, BedrockStreamException
from protocol.frames import EventFrame
from protocol.nonstreaming import events_from_message, nonstreaming_body
from protocol.recovery import OUTPUT_LIMIT_STOPS
from protocol.retry import Failure
from protocol.usage import Usage
from protocol.wire import JSON, JSON_OBJECT

log = logging.getLogger("switchboard.relay")

_BLOCK_EVENTS: Final = frozenset({"content_block_start", "content_block_delta", "content_block_stop"})


def _renumber(data: bytes, offset: int) -> bytes:
    """A block event with its ``index`` moved up by ``offset`` (continuations only)."""
    event = JSON_OBJECT.decode(data)
    index = event.get("index")
    if isinstance(index, int):
        event["index"] = index + offset
    return JSON.encode(event)


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
        in_body = False
        prepared = prepare(
            lease, msg.body, headers, streaming=True, raw=msg.raw_body, beta_query=msg.beta_query
        )
        sent_at = trio.current_time()
        try:
            async with lease.client.stream(
                "POST", prepared.url, content=prepared.content, headers=prepared.headers
            ) as response:
                self._metrics.upstream_latency(provider_label(lease), trio.current_time() - sent_at)
                log_attempt(msg, prepared, response.status_code, response.headers, sent_at)
                note_heads(msg, response)
                if response.status_code != 200:
                    return upstream_failure(lease, response, await response.aread())
                in_body = True
                request_id = response.headers.get("request-id")
                decoder: Decoder = BedrockStreamDecoder() if prepared.decoder == "eventstream" else SSEEvents()
                return await self._read_body(msg, progress, response, decoder, request_id)
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

    async def _read_body(
        self, msg: RunAttempt, progress: Progress, response: httpx.Response, decoder: Decoder, request_id: str | None
    ) -> Failure | None:
        """Relay a 200's body event by event under the idle watchdog; return the stream's
        failure (a timeout, an ``error`` event, a stream that ended early), or None when the
        message completed. Decoding and transport errors propagate to ``stream``."""
        assembler = progress.assembler
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
        prepared = prepare(
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
        self._metrics.upstream_latency(provider_label(lease), trio.current_time() - sent_at)
        note_heads(msg, response)
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
