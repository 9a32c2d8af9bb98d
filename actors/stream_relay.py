"""StreamRelay: runs one upstream attempt and relays its events as they arrive.

Role:
    For each ``RunAttempt``: lease a client from the ClientPool, POST the streaming request,
    decode SSE incrementally, relay every event's bytes to the query's outbound channel as an
    ``event`` frame (one channel hop from upstream socket to client writer), assemble the
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
from typing import TypeAlias, assert_never, final

import httpx
import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, answer, ask
from actors.client_pool import Acquire, ClientPoolAddress, Lease
from actors.cost_ledger import CostLedgerAddress, RecordUsage, UsageRecorded
from actors.upstream import failure_from_exception, failure_from_response
from protocol.assembly import MessageAssembler
from protocol.errors import ActorUnavailable, RemoteProtocolError
from protocol.frames import EventFrame, GatewayFrame
from protocol.retry import Failure
from protocol.sse import SSEDecoder
from protocol.usage import EMPTY_USAGE, Usage
from protocol.wire import COUNT_TOKENS_RESULT, JSON, JsonObject

log = logging.getLogger("switchboard.relay")


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


class RunAttempt(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    query_id: str
    attempt: int
    model: str
    body: JsonObject
    headers: tuple[tuple[str, str], ...] = ()
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


class _ClientGone(Exception):
    """The query's outbound channel is closed: nobody is listening any more."""


class _Progress:
    """What an attempt got done, kept outside the attempt's scope for its cleanup."""

    __slots__ = ("assembler", "completed", "failure", "relayed")

    def __init__(self) -> None:
        self.assembler = MessageAssembler()
        self.relayed = 0
        self.failure: Failure | None = None
        self.completed = False


@final
class StreamRelay:
    """Streams attempts upstream and relays their events (see the module docstring)."""

    def __init__(self, *, to_pool: ClientPoolAddress, to_ledger: CostLedgerAddress) -> None:
        self._to_pool = to_pool
        self._to_ledger = to_ledger

    async def run(
        self, *, task_status: trio.TaskStatus[StreamRelayAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve attempts until every address clone is closed. Startable."""
        address, inbox = trio.open_memory_channel[StreamRelayMsg](0)
        with self._to_pool, self._to_ledger:
            async with trio.open_nursery() as nursery:
                with inbox:
                    task_status.started(address)
                    async for msg in inbox:
                        match msg:
                            case RunAttempt():
                                nursery.start_soon(self._attempt_task, msg)
                            case RunCount():
                                nursery.start_soon(self._count_task, msg)
                            case _:
                                assert_never(msg)

    async def _attempt_task(self, msg: RunAttempt) -> None:
        progress = _Progress()
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
        assembler = progress.assembler
        lease: Lease = await ask(self._to_pool, lambda reply: Acquire(reply=reply))
        headers = dict(lease.headers)
        headers.update(msg.headers)
        send = msg.outbound.send
        try:
            async with lease.client.stream(
                "POST", lease.base_url + "/v1/messages", content=JSON.encode(msg.body), headers=headers
            ) as response:
                if response.status_code != 200:
                    return failure_from_response(response, await response.aread())
                request_id = response.headers.get("request-id")
                decoder = SSEDecoder()
                async for chunk in response.aiter_bytes():
                    for event in decoder.feed(chunk):
                        error = assembler.feed(event.event, event.data)
                        if error is not None:
                            return Failure(
                                kind="stream",
                                error_type=error.type,
                                message=error.message,
                                request_id=request_id,
                            )
                        try:
                            await send(
                                EventFrame(
                                    id=msg.query_id,
                                    attempt=msg.attempt,
                                    model=msg.model,
                                    event=msgspec.Raw(event.data),
                                )
                            )
                        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                            raise _ClientGone from exc
                        progress.relayed += 1
                decoder.close()
                if not assembler.started or not (assembler.stopped or assembler.stop_reason):
                    return Failure(
                        kind="protocol",
                        error_type="api_error",
                        message="upstream stream ended before the message was complete",
                        request_id=request_id,
                    )
                return None
        except RemoteProtocolError as exc:
            return Failure(kind="protocol", error_type=exc.error_type, message=str(exc))
        except (httpx.HTTPError, trio.BrokenResourceError) as exc:
            failure = failure_from_exception(exc)
            if failure is None:
                raise
            return failure

    async def _finish(self, msg: RunAttempt, progress: _Progress, started: float) -> AttemptOutcome:
        assembler = progress.assembler
        recorded: UsageRecorded | None = None
        if assembler.started:
            try:
                recorded = await ask(
                    self._to_ledger,
                    lambda reply: RecordUsage(
                        session_id=msg.session_id, model=msg.model, usage=assembler.usage, reply=reply
                    ),
                )
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
        lease: Lease = await ask(self._to_pool, lambda reply: Acquire(reply=reply))
        headers = dict(lease.headers)
        headers.update(msg.headers)
        response = await lease.client.post(
            lease.base_url + "/v1/messages/count_tokens", content=JSON.encode(msg.body), headers=headers
        )
        if response.status_code != 200:
            return CountResult(failure=failure_from_response(response, response.content))
        try:
            return CountResult(input_tokens=COUNT_TOKENS_RESULT.decode(response.content).input_tokens)
        except msgspec.DecodeError:
            return CountResult(
                failure=Failure(kind="protocol", error_type="api_error", message="malformed count_tokens answer")
            )
