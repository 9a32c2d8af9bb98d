"""install_direct_writes: hypercorn's socket writes without its scheduler rounds
(actors/doors/hypercorn_send.py), on a real ``TCPServer`` over a loopback TCP connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.events import Event, RawData
from hypercorn.trio.tcp_server import TCPServer

from actors.doors.hypercorn_send import install_direct_writes


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[TCPServer, trio.SocketStream]]:
    """A hypercorn TCPServer (never run) on one end of a loopback connection; the other end."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    accepted = await listeners[0].accept()
    await listeners[0].aclose()
    nothing: Any = None
    server = TCPServer(nothing, Config(), nothing, nothing, accepted)  # type: ignore[arg-type]
    async with client, accepted:
        yield server, client


async def read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive_some(size - len(data))
    return data


class Steps(trio.abc.Instrument):
    """Counts the steps (runs between two yields) of the task named ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.name:
            self.count += 1


async def steps_of_one_send(
    send_one: Callable[[TCPServer, Event], Awaitable[None]], server: TCPServer, nursery: trio.Nursery
) -> int:
    steps = Steps("one-send")
    done = trio.Event()

    async def send() -> None:
        await send_one(server, RawData(data=b"event: a\ndata: {}\n\n"))
        done.set()

    trio.lowlevel.add_instrument(steps)
    try:
        nursery.start_soon(send, name="one-send")
        await done.wait()
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.count


async def test_a_write_the_socket_takes_at_once_costs_one_scheduler_round_not_three(nursery: trio.Nursery) -> None:
    install_direct_writes()
    install_direct_writes()  # a second call changes nothing
    async with connected() as (server, client):
        # Hypercorn's own path: the lock's checkpoint, then send_all's.
        original = TCPServer.protocol_send.__wrapped__  # type: ignore[attr-defined]
        assert await steps_of_one_send(original, server, nursery) == 3
        assert await steps_of_one_send(TCPServer.protocol_send, server, nursery) == 2
        assert await read_exactly(client, 38) == b"event: a\ndata: {}\n\n" * 2


async def test_while_a_send_holds_the_lock_a_write_waits_its_turn(nursery: trio.Nursery) -> None:
    install_direct_writes()
    async with connected() as (server, client):
        await server.send_lock.acquire()
        sent = trio.Event()

        async def send() -> None:
            await server.protocol_send(RawData(data=b"second"))
            sent.set()

        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        await server.stream.send_all(b"first ")
        server.send_lock.release()
        await sent.wait()
        assert await read_exactly(client, 12) == b"first second"


async def test_what_the_socket_does_not_take_at_once_follows_in_order(nursery: trio.Nursery) -> None:
    install_direct_writes()
    async with connected() as (server, client):
        # Far more than loopback socket buffers hold: the direct write is partial.
        payload = bytes(range(256)) * 40_000
        sent = trio.Event()

        async def send() -> None:
            await server.protocol_send(RawData(data=payload))
            await server.protocol_send(RawData(data=b"end"))
            sent.set()

        nursery.start_soon(send)
        assert await read_exactly(client, len(payload) + 3) == payload + b"end"
        await sent.wait()

