"""A WebSocket client that stops reading is cut off, and its query is aborted and charged."""

from __future__ import annotations

import functools
import socket

import msgspec
import pytest
import trio
from harness import Client, chat
from trio_websocket import ConnectionClosed, wrap_client_stream

from actors.config import Config
from actors.server import Server, run_server
from emulator import Emulator


async def stalled_client(server: Server, nursery: trio.Nursery) -> tuple[Client, trio.SocketStream]:
    """A client whose socket takes in almost nothing unless the test reads (the test owns
    the stream and closes it)."""
    host, _, port = server.ws_url.removeprefix("ws://").rpartition(":")
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    ws = await wrap_client_stream(nursery, stream, host, "/v1/sessions/slow", message_queue_size=1)
    return Client(ws), stream


async def test_a_stalled_reader_is_disconnected_and_its_query_charged(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server: Server = await nursery.start(
        functools.partial(run_server, msgspec.structs.replace(config, slow_reader_timeout=60.0))
    )
    client, stream = await stalled_client(server, nursery)
    async with stream:
        await check_cut_off(server, emulator, client)


async def check_cut_off(server: Server, emulator: Emulator, client: Client) -> None:
    await client.receive()  # ready
    await client.send(type="query", id="q", request=chat("<<emulator:ok:deltas=5000>>", max_tokens=10_000))
    record = await emulator.wait_for_request(0)
    t0 = trio.current_time()
    await record.finished.wait()  # the gateway gave up on the client and closed the upstream
    # Cut off by the 60 s slow-reader limit, long before the upstream idle watchdog (300 s).
    assert 60.0 <= trio.current_time() - t0 < 61.0
    assert record.disconnected
    await trio.testing.wait_all_tasks_blocked()
    summary = await server.gateway.cost("slow")
    assert summary.total_cost_usd > 0 and summary.model_usage["claude-sonnet-4-6"].input_tokens > 0
    with pytest.raises(ConnectionClosed):
        await drain(client)


async def drain(client: Client) -> None:
    while True:
        await client.receive()
