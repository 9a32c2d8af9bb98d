"""Small shared helpers of the trio shell: request/reply over channels, an actor's inbox loop,
cleanup deadlines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

import trio

from protocol.errors import ActorUnavailable

# Every await in cleanup runs under this deadline, shielded (DESIGN principle 4): long enough
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
    """
    reply_send, reply_receive = trio.open_memory_channel[Result](1)
    with reply_receive:
        try:
            await address.send(make(reply_send))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reply_send.close()
            raise ActorUnavailable("actor inbox is closed") from exc
        try:
            return await reply_receive.receive()
        except trio.EndOfChannel as exc:
            raise ActorUnavailable("actor dropped the reply") from exc


def answer(reply: trio.MemorySendChannel[Result], result: Result) -> None:
    """Send the one reply of a request and close the channel. Not a checkpoint.

    A requester that gave up (closed its end) is not an error: it no longer wants the answer.
    """
    with reply:
        try:
            reply.send_nowait(result)
        except trio.BrokenResourceError:
            pass


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
