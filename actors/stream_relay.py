"""StreamRelay: runs one upstream attempt and relays its events as they arrive.

Role:
    For each ``RunAttempt``: lease a client from the ClientPool (for the model's provider),
    POST the streaming request (shaped by the lease's endpoint for a cloud provider), decode
    SSE (or, from Bedrock, AWS event-stream) incrementally, relay every event's bytes to the
    query's outbound channel as an ``event`` frame (one channel hop from upstream socket to
    client writer), assemble the final message, and record the message's usage with the
    CostLedger exactly once. Also answers ``RunCount`` (``count_tokens``).

    The upstream exchange of an attempt (request, decoding, relaying, the provisional usage
    record) is ``actors.relay_attempt.AttemptStreamer``; this module keeps the inbox, each
    attempt's lifecycle (its scope, the shielded final record, the ``AttemptOutcome``) and
    ``count_tokens``.
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
    outbound channel is broken) cancels the attempt the same way, and so does one that took
    nothing for ``slow_reader_timeout`` while the channel was full (through either door;
    never retried, since the upstream was not silent: the relay stopped reading it).
Timers:
    The HTTP client's timeouts (ClientPool); the stream idle watchdog (``idle_timeout``),
    which waits while the relay waits on the client, the slow-reader limit
    (``slow_reader_timeout``) and the non-streaming fallback's ``nonstreaming_timeout`` (all
    in actors.relay_attempt); the cleanup deadline ``CLEANUP_TIMEOUT``.
"""

from __future__ import annotations

import logging
from typing import TypeAlias, assert_never, final

import httpx
import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, answer, ask, inbox_messages
from actors.client_pool import Acquire, ClientPoolAddress, Lease
from actors.config import DEFAULT_SLOW_READER_TIMEOUT
from actors.cost_ledger import CostLedgerAddress, UsageRecorded
from actors.metrics import Metrics
from actors.providers import Prepared
from actors.relay_attempt import LONG_CONTEXT_BETA as LONG_CONTEXT_BETA
from actors.relay_attempt import PROVIDER as PROVIDER
from actors.relay_attempt import AttemptStreamer, ClientGone, Progress, upstream_failure
from actors.upstream import failure_from_exception
from protocol.errors import ActorUnavailable
from protocol.frames import GatewayFrame
from protocol.request import merge_headers
from protocol.retry import Failure
from protocol.usage import EMPTY_USAGE, Usage
from protocol.wire import COUNT_TOKENS_RESULT, JSON, JsonObject

log = logging.getLogger("switchboard.relay")


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How one attempt ended. ``failure`` None: ``message`` is the complete answer.

    ``usage``/``cost_pico`` are what this attempt's upstream message used (recorded already);
    ``cost_recorded`` False: the ledger did not commit it (``UsageRecorded.recorded``);
    ``relayed`` counts the event frames the client received; ``aborted`` means the attempt
    was cancelled.
    """

    model: str
    message: JsonObject | None = None
    failure: Failure | None = None
    usage: Usage = EMPTY_USAGE
    cost_pico: int = 0
    session_cost_pico: int | None = None
    cost_recorded: bool = True
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
        slow_reader_timeout: float = DEFAULT_SLOW_READER_TIMEOUT,
        metrics: Metrics | None = None,
    ) -> None:
        self._to_pool = to_pool
        self._to_ledger = to_ledger
        self._streamer = AttemptStreamer(
            to_pool=to_pool,
            to_ledger=to_ledger,
            idle_timeout=idle_timeout,
            nonstreaming_timeout=nonstreaming_timeout,
            slow_reader_timeout=slow_reader_timeout,
            metrics=metrics if metrics is not None else Metrics(),
        )

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
        progress = Progress(msg)
        started = trio.current_time()
        with msg.reply:
            try:
                with msg.scope:
                    try:
                        progress.failure = await self._streamer.stream(msg, progress)
                        progress.completed = True
                    except ClientGone:
                        msg.scope.cancel(reason="client went away")
                        await trio.lowlevel.checkpoint()
            finally:
                # Shielded: an aborted attempt still records what the upstream billed.
                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    answer(msg.reply, await self._finish(msg, progress, started))

    async def _finish(self, msg: RunAttempt, progress: Progress, started: float) -> AttemptOutcome:
        assembler = progress.assembler
        recorded: UsageRecorded | None = None
        if assembler.started:
            try:
                recorded = await self._streamer.record(msg, progress, final=True)
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
            cost_recorded=recorded.recorded if recorded else not assembler.started,
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
            return CountResult(failure=upstream_failure(lease, response, response.content))
        try:
            if endpoint is not None:
                return CountResult(input_tokens=endpoint.count_result(response.content))
            return CountResult(input_tokens=COUNT_TOKENS_RESULT.decode(response.content).input_tokens)
        except msgspec.DecodeError:
            return CountResult(
                failure=Failure(kind="protocol", error_type="api_error", message="malformed count_tokens answer")
            )
