"""send_text_batch over a real trio-websocket pair: order, and the private attributes it needs."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    wrap_client_stream,
    wrap_server_stream,
)

from actors.doors.ws_batch import send_text_batch


async def test_a_batch_arrives_as_separate_messages_in_order_then_closed_is_reported(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    accepted: list[object] = []

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_stream)
        accepted.append(await request.accept())

    nursery.start_soon(serve)
    # trio_websocket annotates the stream as a socket or TLS stream, yet only uses the Stream
    # interface: a memory stream works and keeps the test off the network.
    client = await wrap_client_stream(nursery, client_stream, "localhost", "/")  # type: ignore[arg-type]
    await trio.testing.wait_all_tasks_blocked()
    server = accepted[0]
    await send_text_batch(server, [b'{"n":1}', b'{"n":2}', b"x" * 70_000])  # type: ignore[arg-type]
    assert [await client.get_message() for _ in range(3)] == ['{"n":1}', '{"n":2}', "x" * 70_000]
    await client.aclose()
    await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(ConnectionClosed):
        await send_text_batch(server, [b"{}"])  # type: ignore[arg-type]


async def tcp_pair(nursery: trio.Nursery) -> tuple[WebSocketConnection, WebSocketConnection]:
    """A trio-websocket server and client over a loopback TCP connection."""
    accepted: list[WebSocketConnection] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve() -> None:
        stream = await listeners[0].accept()
        request = await wrap_server_stream(nursery, stream)
        accepted.append(await request.accept())
        await listeners[0].aclose()

    nursery.start_soon(serve)
    client = await wrap_client_stream(nursery, await trio.open_tcp_stream("127.0.0.1", port), "localhost", "/")
    while not accepted:
        await trio.testing.wait_all_tasks_blocked()
    return accepted[0], client


async def test_a_batch_the_socket_takes_at_once_costs_no_scheduler_round_and_no_wait(nursery: trio.Nursery) -> None:
    server, client = await tcp_pair(nursery)
    waits: list[None] = []
    with trio.testing.assert_no_checkpoints():
        await send_text_batch(server, [b'{"n":1}', b'{"n":2}'], on_wait=lambda: waits.append(None))
    assert waits == []
    assert [await client.get_message() for _ in range(2)] == ['{"n":1}', '{"n":2}']
    await client.aclose()


async def test_what_the_socket_does_not_take_at_once_follows_in_order_and_the_wait_is_told(nursery: trio.Nursery) -> None:
    server, client = await tcp_pair(nursery)
    # Far more than loopback socket buffers hold: the direct write is partial.
    payloads = [bytes([0x61 + n]) * (10 if n == 5 else 600_000) for n in range(16)]
    sending = trio.Event()

    waits: list[None] = []

    async def send() -> None:
        await send_text_batch(server, payloads, on_wait=lambda: waits.append(None))
        sending.set()

    nursery.start_soon(send)
    assert [await client.get_message() for _ in payloads] == [p.decode() for p in payloads]
    await sending.wait()
    # The write waited for the socket once: the caller was told, to time it.
    assert waits == [None]
    await client.aclose()
