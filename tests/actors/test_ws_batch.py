"""send_text_batch over a real trio-websocket pair: order, and the private attributes it needs."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, wrap_client_stream, wrap_server_stream

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
