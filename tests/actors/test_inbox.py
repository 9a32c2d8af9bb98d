"""inbox_messages: an actor serves the messages already waiting in one scheduler round."""

from __future__ import annotations

import trio

from actors._util import INBOX_BURST, inbox_messages


class Steps(trio.abc.Instrument):
    """Counts the scheduler rounds (task steps) of the tasks named ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.name):
            self.count += 1


async def serve(queued: int) -> tuple[list[int], int]:
    """Queue ``queued`` messages and close the inbox; return what a consumer served and in
    how many scheduler rounds."""
    send, receive = trio.open_memory_channel[int](queued)
    for n in range(queued):
        send.send_nowait(n)
    send.close()
    served: list[int] = []

    async def consume() -> None:
        async for message in inbox_messages(receive):
            served.append(message)

    steps = Steps("consume")
    trio.lowlevel.add_instrument(steps)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
    finally:
        trio.lowlevel.remove_instrument(steps)
    return served, steps.count


async def test_a_burst_is_served_in_one_round_in_order_and_the_loop_ends_when_closed() -> None:
    served, rounds = await serve(40)
    # The first step takes all 40; the next one finds the inbox closed. ``async for msg in
    # inbox`` would take a round per message.
    assert served == list(range(40)) and rounds <= 2


async def test_a_flood_yields_once_per_burst() -> None:
    served, rounds = await serve(3 * INBOX_BURST)
    assert served == list(range(3 * INBOX_BURST)) and 3 <= rounds <= 4


async def test_waiting_on_an_empty_inbox_is_a_checkpoint_and_senders_are_served() -> None:
    send, receive = trio.open_memory_channel[str](0)
    got: list[str] = []

    async def consume() -> None:
        async for message in inbox_messages(receive):
            got.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        async with send:
            for word in ("a", "b", "c"):
                await send.send(word)
    assert got == ["a", "b", "c"]
