"""StreamRelay: runs one upstream attempt and relays its events as they arrive.

Role:
    For each ``RunAttempt``: lease a client from the ClientPool (for the model's provider),
    POST the streaming request (shaped by the lease's endpoint for a cloud provider), decode
    SSE (or, from Bedrock, AWS event-stream) incrementally, relay every event's bytes to the
    query's outbound channel as an ``event`` frame (one channel hop from upstream socket to
    client writer), assemble the final message, and record the message's usage with the
    CostLedger exactly once. Also answers ``RunCount`` (``count_tokens``).

    The upstream exchange of an attempt (request, decoding, relaying, the provisional usage
    record) is ``actors.upstream.relay_attempt.AttemptStreamer``; this module keeps the inbox, each
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
    supervisor to judge. Each attempt is a supervision boundary (docs/supervision.md): an
    unexpected exception is logged with the query id and counted (``where="relay"``), the
    usage seen so far is still recorded, and the reply says ``internal_error`` (the
    supervisor ends the query with it). A ``RunCount`` whose handling fails is answered
    with ``fail`` (the asker gets ``ActorFailed``); the relay serves its next message.
    Cancellation (abort, disconnect, shutdown) arrives through the
    attempt's ``scope``; the upstream response is closed at once, and the usage seen so far
    is still recorded, in a shielded cleanup with a deadline, its output tokens estimated
    from the content relayed (the upstream's final count never came; protocol/estimate.py).
    A client that went away (its outbound channel is broken) cancels the attempt the same
    way, and so does one that took
    nothing for ``slow_reader_timeout`` while the channel was full (through either door;
    never retried, since the upstream was not silent: the relay stopped reading it).
    A failure's message (upstream text, which a client will see) has been through
    ``redact`` (the log redactor, ``actors.observe.log.Redactor``): an upstream that echoes the
    gateway's key or a proxy password does not hand it to clients.
Timers:
    The HTTP client's timeouts (ClientPool); the stream idle watchdog (``idle_timeout``),
    which waits while the relay waits on the client, the slow-reader limit
    (``slow_reader_timeout``) and the non-streaming fallback's ``nonstreaming_timeout`` (all
    in actors.upstream.relay_attempt); the cleanup deadline ``CLEANUP_TIMEOUT``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import assert_never, final

import httpx
import msgspec
import trio

from actors._util import (
    CLEANUP_TIMEOUT,
    answer,
    ask,
    contained,
    fail,
    inbox_messages,
    report_internal,
)
from actors.config.settings import DEFAULT_SLOW_READER_TIMEOUT
from actors.messages.ledger import CostLedgerAddress, UsageRecorded
from actors.messages.pool import Acquire, ClientPoolAddress, Lease
from actors.messages.relay import (
    AttemptOutcome,
    CountResult,
    RunAttempt,
    RunCount,
    StreamRelayAddress,
    StreamRelayMsg,
)
from actors.observe.log import Redactor
from actors.observe.metrics import Metrics
from actors.upstream.attempt_http import upstream_failure
from actors.upstream.client import failure_from_exception
from actors.upstream.endpoints import Prepared
from actors.upstream.relay_attempt import AttemptStreamer, Progress
from protocol.client_request import merge_headers
from protocol.errors import ActorUnavailable, ClientGone, InternalError
from protocol.http_api import client_headers
from protocol.retry import Failure
from protocol.wire import COUNT_TOKENS_RESULT, JSON

log = logging.getLogger("switchboard.relay")


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
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self._to_pool = to_pool
        # Without registered secrets, the known shapes of credentials are still redacted.
        self._redact = redact if redact is not None else Redactor().redact
        self._to_ledger = to_ledger
        self._metrics = metrics if metrics is not None else Metrics()
        self._streamer = AttemptStreamer(
            to_pool=to_pool,
            to_ledger=to_ledger,
            idle_timeout=idle_timeout,
            nonstreaming_timeout=nonstreaming_timeout,
            slow_reader_timeout=slow_reader_timeout,
            metrics=self._metrics,
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
                        try:
                            self._handle(msg, nursery)
                        except Exception as exc:
                            what = f"message {type(msg).__name__}"
                            report_internal(log, self._metrics, "actor:StreamRelay", what, exc)
                            fail(msg.reply, "StreamRelay")

    def _handle(self, msg: StreamRelayMsg, nursery: trio.Nursery) -> None:
        match msg:
            case RunAttempt():
                # The attempt is its own boundary; this backstop answers if even it fails.
                task = functools.partial(self._attempt_task, msg)
                what = f"query {msg.query_id} attempt {msg.attempt}"
            case RunCount():
                task = functools.partial(self._count_task, msg)
                what = "a count_tokens request"
            case _:
                assert_never(msg)
        nursery.start_soon(
            functools.partial(
                contained,
                task,
                log=log,
                metrics=self._metrics,
                where="actor:StreamRelay",
                what=what,
                on_failure=functools.partial(fail, msg.reply, "StreamRelay"),
            )
        )

    async def _attempt_task(self, msg: RunAttempt) -> None:
        """One attempt, a supervision boundary: whatever happens, one reply with the usage."""
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
            except Exception as exc:
                self._internal(msg, progress, exc)
            finally:
                # Shielded: an aborted attempt still records what the upstream billed.
                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    answer(msg.reply, await self._finish(msg, progress, started))

    def _internal(self, msg: RunAttempt, progress: Progress, exc: Exception) -> None:
        what = f"query {msg.query_id} attempt {msg.attempt}"
        report_internal(log, self._metrics, "relay", what, exc)
        if progress.internal_error is None:
            internal = isinstance(exc, InternalError)
            progress.internal_error = str(exc) if internal else f"{type(exc).__name__} in the relay"

    async def _finish(self, msg: RunAttempt, progress: Progress, started: float) -> AttemptOutcome:
        try:
            return await self._outcome(msg, progress, started)
        except Exception as exc:
            self._internal(msg, progress, exc)
            return AttemptOutcome(
                model=msg.model,
                relayed=progress.relayed,
                duration=trio.current_time() - started,
                aborted=True,
                internal_error=progress.internal_error,
            )

    async def _outcome(self, msg: RunAttempt, progress: Progress, started: float) -> AttemptOutcome:
        """Record the attempt's final usage; its ``AttemptOutcome``."""
        assembler = progress.assembler
        # A stream cut short before its final output count is billed an estimate
        # (protocol/estimate.py); a complete one, the upstream's own count.
        usage = assembler.settled_usage()
        recorded: UsageRecorded | None = None
        if assembler.started:
            try:
                recorded = await self._streamer.record(msg, progress, final=True, usage=usage)
            except ActorUnavailable:
                # Only past the shutdown grace deadline: say loudly what could not be kept.
                log.error(
                    "usage of query %s attempt %d not recorded (ledger gone): %s",
                    msg.query_id, msg.attempt, usage,
                )
        succeeded = progress.completed and progress.failure is None and progress.internal_error is None
        return AttemptOutcome(
            model=msg.model,
            message=assembler.message() if succeeded else None,
            failure=self._redacted(progress.failure),
            usage=usage,
            cost_pico=recorded.cost_pico if recorded else 0,
            session_cost_pico=recorded.session_cost_pico if recorded else None,
            cost_recorded=recorded.recorded if recorded else not assembler.started,
            relayed=progress.relayed,
            duration=trio.current_time() - started,
            aborted=not progress.completed,
            generation=progress.generation,
            internal_error=progress.internal_error,
        )

    async def _count_task(self, msg: RunCount) -> None:
        with msg.reply:
            try:
                result = await self._count(msg)
            except (httpx.HTTPError, trio.BrokenResourceError) as exc:
                failure = failure_from_exception(exc)
                if failure is None:
                    fail(msg.reply, "StreamRelay")
                    raise
                result = CountResult(failure=failure)
            except Exception:
                # Answered before the channel closes; ``contained`` reports it.
                fail(msg.reply, "StreamRelay")
                raise
            answer(msg.reply, msgspec.structs.replace(result, failure=self._redacted(result.failure)))

    def _redacted(self, failure: Failure | None) -> Failure | None:
        if failure is None:
            return None
        return msgspec.structs.replace(failure, message=self._redact(failure.message))

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
        forwarded = client_headers(response.headers.multi_items())
        if response.status_code != 200:
            return CountResult(failure=upstream_failure(lease, response, response.content), headers=forwarded)
        try:
            if endpoint is not None:
                return CountResult(input_tokens=endpoint.count_result(response.content), headers=forwarded)
            tokens = COUNT_TOKENS_RESULT.decode(response.content).input_tokens
            return CountResult(input_tokens=tokens, headers=forwarded)
        except msgspec.DecodeError:
            return CountResult(
                failure=Failure(kind="protocol", error_type="api_error", message="malformed count_tokens answer")
            )
