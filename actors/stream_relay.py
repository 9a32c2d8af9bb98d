"""StreamRelay: runs one upstream attempt and relays its events as they arrive.

Role:
    For each ``RunAttempt``: lease a client from the ClientPool (for the model's provider),
    POST the streaming request (shaped by the lease's endpoint for a cloud provider), decode
    SSE (or, from Bedrock, AWS event-stream) incrementally, relay every event's bytes to the
    query's outbound channel as an ``event`` frame (one channel hop from upstream socket to
    client writer), assemble the
    final message, and record the message's usage with the CostLedger exactly once. Also
    answers ``RunCount`` (``count_tokens``).
Inbox (``StreamRelayMsg``):
    ``RunAttempt`` and ``RunCount`` from the RetrySupervisor; each runs in its own task.
Outputs:
    ClientPool (``Acquire``), CostLedger (``RecordUsage``), each query's outbound channel,
    and the ``AttemptOutcome`` reply.
Lifecycle:
    ``run`` opens its task nursery and inbox, then ``task_status.started(address)``; when the
    inbox ends it waits for the attempts in flight, then returns.
Failure policy:
    An upstream failure is never raised: it becomes ``AttemptOutcome.failure`` for the
    supervisor to judge. Cancellation (abort, disconnect, shutdown) arrives through the
    attempt's ``scope``; the upstream response is closed at once, and the usage seen so far
    is still recorded, in a shielded cleanup with a deadline. A client that went away (its
    outbound channel is broken) cancels the attempt the same way.
Timers:
    The HTTP client's timeouts (ClientPool); the cleanup deadline ``CLEANUP_TIMEOUT``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Final, Protocol, TypeAlias, assert_never, final

import httpx
import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, answer, ask, inbox_messages
from actors.client_pool import Acquire, ClientPoolAddress, Lease
from actors.cost_ledger import CostLedgerAddress, RecordUsage, UsageRecorded
from actors.metrics import Metrics
from actors.providers import Prepared
from actors.upstream import failure_from_exception, failure_from_response
from protocol.assembly import MessageAssembler
from protocol.errors import ActorUnavailable, RemoteProtocolError
from protocol.eventstream import BedrockStreamDecoder, BedrockStreamException
from protocol.frames import EventFrame, GatewayFrame
from protocol.nonstreaming import events_from_message, nonstreaming_body
from protocol.recovery import OUTPUT_LIMIT_STOPS
from protocol.request import merge_headers
from protocol.retry import Failure
from protocol.sse import SSEDecoder
from protocol.usage import EMPTY_USAGE, Usage
from protocol.wire import COUNT_TOKENS_RESULT, JSON, JSON_OBJECT, JsonObject

log = logging.getLogger("switchboard.relay")

# The provider label of the first party's metrics (a cloud lease's endpoint has its own).
PROVIDER: Final = "anthropic"
_BLOCK_EVENTS: Final = frozenset({"content_block_start", "content_block_delta", "content_block_stop"})

# wire.md 10.3: with this beta, a request over 200k input tokens is billed at long-context
# rates (where the model has them).
LONG_CONTEXT_BETA: Final = "context-1m-2025-08-07"


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How one attempt ended. ``failure`` None: ``message`` is the complete answer.

    ``usage``/``cost_pico`` are what this attempt's upstream message used (recorded already);
    ``relayed`` counts the event frames the client received; ``aborted`` means the attempt
    was cancelled.
    """

    model: str
    message: JsonObject | None = None
    failure: Failure | None = None
    usage: Usage = EMPTY_USAGE
    cost_pico: int = 0
    session_cost_pico: int | None = None
    relayed: int = 0
    duration: float = 0.0
    aborted: bool = False
    generation: int = 0


class RunAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt. ``streaming`` False: the non-streaming fallback (reference 2.3), whose
    answer is relayed as the events a stream of it would have carried.

    Output-limit recovery (protocol/recovery.py): ``withhold_output_limit`` keeps a
    ``max_tokens`` stop (its ``message_delta`` and ``message_stop``) from the client, since
    the answer may yet go on; ``continuation`` drops the ``message_start`` of an answer
    that continues an earlier one, and ``index_offset`` renumbers its blocks after the
    earlier ones, so the client sees one message."""

    session_id: str
    query_id: str
    attempt: int
    model: str
    body: JsonObject
    headers: tuple[tuple[str, str], ...] = ()
    streaming: bool = True
    withhold_output_limit: bool = False
    index_offset: int = 0
    continuation: bool = False
    query_started: float = 0.0
    measure_first_token: bool = False
    outbound: trio.MemorySendChannel[GatewayFrame]
    scope: trio.CancelScope
    reply: trio.MemorySendChannel[AttemptOutcome]


class CountResult(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int | None = None
    failure: Failure | None = None


class RunCount(msgspec.Struct, frozen=True, kw_only=True):
    body: JsonObject
    headers: tuple[tuple[str, str], ...] = ()
    reply: trio.MemorySendChannel[CountResult]


StreamRelayMsg: TypeAlias = RunAttempt | RunCount
StreamRelayAddress: TypeAlias = trio.MemorySendChannel[StreamRelayMsg]


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


def _prepare(lease: Lease, body: JsonObject, headers: dict[str, str], *, streaming: bool) -> Prepared:
    """issue 6: the request for the lease's provider (the first party: ``/v1/messages``)."""
    if lease.endpoint is None:
        return Prepared(url=lease.base_url + "/v1/messages", headers=headers, content=JSON.encode(body))
    return lease.endpoint.messages(body, headers, streaming=streaming)


def _failure(lease: Lease, response: httpx.Response, body: bytes) -> Failure:
    failure = failure_from_response(response, body)
    return failure if lease.endpoint is None else lease.endpoint.adjust(failure, body)


def _label(lease: Lease) -> str:
    return PROVIDER if lease.endpoint is None else lease.endpoint.label


class _ClientGone(Exception):
    """The query's outbound channel is closed: nobody is listening any more."""


class _Progress:
    """What an attempt got done, kept outside the attempt's scope for its cleanup."""

    __slots__ = (
        "assembler", "completed", "failure", "first_token_seen", "generation", "long_context",
        "record_id", "relayed", "withheld",
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
            name.lower() == "anthropic-beta" and LONG_CONTEXT_BETA in value for name, value in msg.headers
        )
        self.failure: Failure | None = None
        self.completed = False


@final
class StreamRelay:
    """Streams attempts upstream and relays their events (see the module docstring)."""

    def __init__(
        self,
        *,
        to_pool: ClientPoolAddress,
        to_ledger: CostLedgerAddress,
        idle_timeout: float | None = None,
        nonstreaming_timeout: float = 300.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics if metrics is not None else Metrics()
        self._to_pool = to_pool
        self._to_ledger = to_ledger
        self._idle_timeout = idle_timeout
        self._nonstreaming_timeout = nonstreaming_timeout

    async def run(
        self, *, task_status: trio.TaskStatus[StreamRelayAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve attempts until every address clone is closed. Startable."""
        address, inbox = trio.open_memory_channel[StreamRelayMsg](0)
        with self._to_pool, self._to_ledger:
            async with trio.open_nursery() as nursery:
                with inbox:
                    task_status.started(address)
                    async for msg in inbox_messages(inbox):
                        match msg:
                            case RunAttempt():
                                nursery.start_soon(self._attempt_task, msg)
                            case RunCount():
                                nursery.start_soon(self._count_task, msg)
                            case _:
                                assert_never(msg)

    async def _attempt_task(self, msg: RunAttempt) -> None:
        progress = _Progress(msg)
        started = trio.current_time()
        with msg.reply:
            try:
                with msg.scope:
                    try:
                        progress.failure = await self._stream(msg, progress)
                        progress.completed = True
                    except _ClientGone:
                        msg.scope.cancel(reason="client went away")
                        await trio.lowlevel.checkpoint()
            finally:
                # Shielded: an aborted attempt still records what the upstream billed.
                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    answer(msg.reply, await self._finish(msg, progress, started))

    async def _stream(self, msg: RunAttempt, progress: _Progress) -> Failure | None:
        """Run the attempt; return its failure, or None when the message completed."""
        lease: Lease = await ask(self._to_pool, lambda reply: Acquire(reply=reply, model=msg.model))
        progress.generation = lease.generation
        headers = merge_headers(lease.headers, msg.headers)
        if not msg.streaming:
            return await self._nonstreaming(msg, progress, lease, headers)
        assembler = progress.assembler
        in_body = False
        prepared = _prepare(lease, msg.body, headers, streaming=True)
        sent_at = trio.current_time()
        try:
            async with lease.client.stream(
                "POST", prepared.url, content=prepared.content, headers=prepared.headers
            ) as response:
                self._metrics.upstream_latency(_label(lease), trio.current_time() - sent_at)
                if response.status_code != 200:
                    return _failure(lease, response, await response.aread())
                in_body = True
                request_id = response.headers.get("request-id")
                decoder: _Decoder = BedrockStreamDecoder() if prepared.decoder == "eventstream" else _SSEEvents()
                idle = self._idle_timeout
                # The idle watchdog: a deadline pushed forward by every chunk (reference 2.2).
                with trio.CancelScope() as watchdog:
                    if idle is not None:
                        watchdog.deadline = trio.current_time() + idle
                    async for chunk in response.aiter_bytes():
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
                if not assembler.started or not (assembler.stopped or assembler.stop_reason):
                    return Failure(
                        kind="protocol",
                        error_type="api_error",
                        message="upstream stream ended before the message was complete",
                        request_id=request_id,
                        mid_stream=True,
                    )
                return None
        except BedrockStreamException as exc:
            # issue 6: an exception frame is the status it stands for (wire.md 12 item 4).
            return Failure(
                kind="stream", error_type=exc.error_type, message=str(exc), status=exc.status,
                mid_stream=progress.relayed > 0,
            )
        except RemoteProtocolError as exc:
            return Failure(kind="protocol", error_type=exc.error_type, message=str(exc), mid_stream=True)
        except (httpx.HTTPError, trio.BrokenResourceError) as exc:
            failure = failure_from_exception(exc, mid_stream=in_body)
            if failure is None:
                raise
            return failure

    async def _relay_event(self, msg: RunAttempt, progress: _Progress, name: str, data: bytes) -> Failure | None:
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
                try:
                    await msg.outbound.send(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise _ClientGone from exc
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _ClientGone from exc
            progress.relayed += 1
            if name == "content_block_delta" and msg.measure_first_token and not progress.first_token_seen:
                progress.first_token_seen = True
                self._metrics.first_token(msg.model, trio.current_time() - msg.query_started)
        if name == "message_start":
            await self._record(msg, progress, final=False)
        return None

    async def _record(self, msg: RunAttempt, progress: _Progress, *, final: bool) -> UsageRecorded:
        """Record the message's usage so far under its record id. A checkpoint.

        Raises:
            ActorUnavailable: the ledger is gone.
        """
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
        self, msg: RunAttempt, progress: _Progress, lease: Lease, headers: dict[str, str]
    ) -> Failure | None:
        """The non-streaming fallback: one POST with its own timeout, then the answer relayed
        as the event sequence of a stream."""
        timeout = httpx.Timeout(self._nonstreaming_timeout, connect=min(5.0, self._nonstreaming_timeout))
        prepared = _prepare(lease, nonstreaming_body(msg.body), headers, streaming=False)
        sent_at = trio.current_time()
        try:
            response = await lease.client.request(
                "POST", prepared.url, content=prepared.content, headers=prepared.headers, request_timeout=timeout
            )
        except httpx.HTTPError as exc:
            failure = failure_from_exception(exc)
            if failure is None:
                raise
            return failure
        self._metrics.upstream_latency(_label(lease), trio.current_time() - sent_at)
        if response.status_code != 200:
            return _failure(lease, response, response.content)
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

    async def _finish(self, msg: RunAttempt, progress: _Progress, started: float) -> AttemptOutcome:
        assembler = progress.assembler
        recorded: UsageRecorded | None = None
        if assembler.started:
            try:
                recorded = await self._record(msg, progress, final=True)
            except ActorUnavailable:
                # Only past the shutdown grace deadline: say loudly what could not be kept.
                log.error(
                    "usage of query %s attempt %d not recorded (ledger gone): %s",
                    msg.query_id, msg.attempt, assembler.usage,
                )
        succeeded = progress.completed and progress.failure is None
        return AttemptOutcome(
            model=msg.model,
            message=assembler.message() if succeeded else None,
            failure=progress.failure,
            usage=assembler.usage,
            cost_pico=recorded.cost_pico if recorded else 0,
            session_cost_pico=recorded.session_cost_pico if recorded else None,
            relayed=progress.relayed,
            duration=trio.current_time() - started,
            aborted=not progress.completed,
            generation=progress.generation,
        )

    async def _count_task(self, msg: RunCount) -> None:
        with msg.reply:
            try:
                result = await self._count(msg)
            except (httpx.HTTPError, trio.BrokenResourceError) as exc:
                failure = failure_from_exception(exc)
                if failure is None:
                    raise
                result = CountResult(failure=failure)
            answer(msg.reply, result)

    async def _count(self, msg: RunCount) -> CountResult:
        model = msg.body.get("model")
        lease: Lease = await ask(
            self._to_pool, lambda reply: Acquire(reply=reply, model=model if isinstance(model, str) else None)
        )
        headers = merge_headers(lease.headers, msg.headers)
        endpoint = lease.endpoint
        if endpoint is None:
            prepared = Prepared(url=lease.base_url + "/v1/messages/count_tokens", headers=headers, content=JSON.encode(msg.body))
        else:
            prepared = endpoint.count(msg.body, headers)
        response = await lease.client.request(
            "POST", prepared.url, content=prepared.content, headers=prepared.headers
        )
        if response.status_code != 200:
            return CountResult(failure=_failure(lease, response, response.content))
        try:
            if endpoint is not None:
                return CountResult(input_tokens=endpoint.count_result(response.content))
            return CountResult(input_tokens=COUNT_TOKENS_RESULT.decode(response.content).input_tokens)
        except msgspec.DecodeError:
            return CountResult(
                failure=Failure(kind="protocol", error_type="api_error", message="malformed count_tokens answer")
            )
