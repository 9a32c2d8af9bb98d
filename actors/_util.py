"""Small shared helpers of the trio shell: request/reply over channels, an actor's inbox loop,
cleanup deadlines, and the supervision boundaries' reporting (docs/supervision.md).

A request's handler that fails answers with ``fail`` instead of ``answer``: the asker's
``ask`` (or ``receive_reply``) then raises ``ActorFailed``, and the actor serves its next
message. ``contained`` runs a task of an actor as a boundary: an ``Exception`` escaping it
is reported (``report_internal``) instead of ending the actor's nursery, and with it the
process. ``BaseException`` (``trio.Cancelled``) always propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar

import trio

from actors.observe.metrics import Metrics, Where
from protocol.errors import INTERNAL_ERROR, ActorFailed, ActorUnavailable, InternalError
from protocol.frames import ErrorInfo

# Every await in cleanup runs under this deadline, shielded (docs/architecture.md principle 4): long enough
# for a ledger write or a last frame, short enough that shutdown never hangs on a dead peer.
CLEANUP_TIMEOUT: Final = 5.0

Msg = TypeVar("Msg")
Result = TypeVar("Result")


async def ask(
    address: trio.MemorySendChannel[Msg],
    make: Callable[[trio.MemorySendChannel[Result]], Msg],
) -> Result:
    """Send ``make(reply)`` to an actor and wait for its one reply. A checkpoint.

    Raises:
        ActorUnavailable: the actor's inbox is closed, or it dropped the reply channel.
        ActorFailed: the actor's handler failed on this request (it logged and counted it).
    """
    reply_send, reply_receive = trio.open_memory_channel[Result](1)
    with reply_receive:
        try:
            await address.send(make(reply_send))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reply_send.close()
            raise ActorUnavailable("actor inbox is closed") from exc
        try:
            return await receive_reply(reply_receive)
        except trio.EndOfChannel as exc:
            raise ActorUnavailable("actor dropped the reply") from exc


async def receive_reply(reply: trio.MemoryReceiveChannel[Result]) -> Result:
    """The one reply on ``reply`` (for a requester that made the channel itself). A checkpoint.

    Raises:
        trio.EndOfChannel: the actor closed the reply channel without answering.
        ActorFailed: the actor's handler failed on this request.
    """
    result = await reply.receive()
    if isinstance(result, _Failed):
        raise ActorFailed(f"the {result.actor} failed on this request")
    return result


class _Failed:
    """What ``fail`` sends in place of a reply (never seen outside this module)."""

    __slots__ = ("actor",)

    def __init__(self, actor: str) -> None:
        self.actor = actor


def answer(reply: trio.MemorySendChannel[Result], result: Result) -> None:
    """Send the one reply of a request and close the channel. Not a checkpoint.

    A requester that gave up (closed its end) is not an error: it no longer wants the answer.
    """
    with reply:
        try:
            reply.send_nowait(result)
        except trio.BrokenResourceError:
            pass


def fail(reply: trio.MemorySendChannel[Any], actor: str) -> None:
    """Answer a request whose handler failed, and close the channel: the asker's ``ask``
    raises ``ActorFailed``. Not a checkpoint. A request already answered keeps its answer."""
    with reply:
        try:
            reply.send_nowait(_Failed(actor))
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
            pass


def report_internal(
    log: logging.Logger, metrics: Metrics | None, where: Where, what: str, exc: BaseException
) -> None:
    """Report an unexpected exception a boundary contained: its traceback in the log, once,
    and ``switchboard_internal_errors_total{where}``. An ``InternalError`` was reported
    where it happened: only a line says what it ended here. ``what`` names the query,
    request or message (its id), never its content."""
    if _reported(exc):
        log.error("%s ended: %s", what, exc)
        return
    log.error("internal error in %s", what, exc_info=exc)
    if metrics is not None:
        metrics.internal_error(where)


def _reported(exc: BaseException) -> bool:
    """An ``InternalError``, or a group of nothing else (a nursery wraps what it carries)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(InternalError)[1] is None
    return isinstance(exc, InternalError)


def internal_error_info(exc: BaseException) -> ErrorInfo:
    """The error object a client gets for a contained failure: its kind, not its message
    (which may quote data; an ``InternalError``'s own message is written to be shown)."""
    kind = str(exc) if isinstance(exc, InternalError) else type(exc).__name__
    return ErrorInfo(
        type=INTERNAL_ERROR,
        message=f"internal error in the gateway ({kind}); it is logged",
        status=None,
        request_id=None,
    )


async def contained(
    task: Callable[[], Awaitable[object]],
    *,
    log: logging.Logger,
    metrics: Metrics | None,
    where: Where,
    what: str,
    on_failure: Callable[[], None] | None = None,
) -> None:
    """Run ``task`` as a supervision boundary: an ``Exception`` it raises is reported
    (``report_internal``), then ``on_failure()`` answers whoever waits on it (it must not
    raise); ``BaseException`` propagates. Pass it to ``start_soon`` with
    ``functools.partial``."""
    try:
        await task()
    except Exception as exc:
        report_internal(log, metrics, where, what, exc)
        if on_failure is not None:
            on_failure()


# Messages an actor takes from its inbox in one scheduler round before it lets others run.
INBOX_BURST: Final = 64


def inbox_messages(inbox: trio.MemoryReceiveChannel[Msg]) -> _InboxMessages[Msg]:
    """``async for msg in inbox_messages(inbox)``: every message until the inbox is closed and
    empty, taking those already waiting without a scheduler round each.

    ``async for msg in inbox`` costs one scheduler round per message (trio's ``receive``
    always yields), so an actor that answers at once still drains a burst one round at a time:
    128 queries arriving within 15 ms waited up to 140 ms for the RetrySupervisor's loop at 128
    paced streams, each round ~1 ms under that load (``scripts/bench.py``, trio run-queue
    latency). Here a round serves every waiting message, up to ``INBOX_BURST``, then yields
    once so that a flood cannot starve other tasks. Waiting for an empty inbox is a checkpoint.
    """
    return _InboxMessages(inbox)


class _InboxMessages(Generic[Msg]):
    """The iterator of ``inbox_messages`` (a class, not an async generator: nothing to
    finalize when an actor is cancelled mid-loop)."""

    __slots__ = ("_burst", "_inbox")

    def __init__(self, inbox: trio.MemoryReceiveChannel[Msg]) -> None:
        self._inbox = inbox
        self._burst = 0

    def __aiter__(self) -> _InboxMessages[Msg]:
        return self

    async def __anext__(self) -> Msg:
        if self._burst < INBOX_BURST:
            try:
                message = self._inbox.receive_nowait()
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
            else:
                self._burst += 1
                return message
        self._burst = 0
        try:
            return await self._inbox.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
