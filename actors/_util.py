"""Small shared helpers of the trio shell: request/reply over channels, cleanup deadlines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

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
