"""A WebSocket client that stops reading is cut off, and its query is aborted and charged.

The cut-off does not cancel the write in flight: a client that resumes reading within the
grace (``CLEANUP_TIMEOUT``) gets every frame written, then close code 4408; one that does
not is dropped without a close frame.
"""

from __future__ import annotations

import functools
import socket

import msgspec
import pytest
import trio
from harness import Client, chat, connect
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, wrap_client_stream

from actors._util import CLEANUP_TIMEOUT
from actors.config.settings import Config
from actors.doors.ws_connection import SLOW_READER
from actors.server import Server, run_server
from emulator import Emulator
from protocol.frames import Done, EventFrame, GatewayFrame

SLOW_READER_TIMEOUT = 60.0


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


async def start_server(nursery: trio.Nursery, config: Config) -> Server:
    slow_config = msgspec.structs.replace(config, slow_reader_timeout=SLOW_READER_TIMEOUT)
    server: Server = await nursery.start(functools.partial(run_server, slow_config))
    return server


async def test_a_stalled_reader_is_disconnected_and_its_query_charged(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(nursery, config)
    client, stream = await stalled_client(server, nursery)
    async with stream:
        await stall_until_cut_off(emulator, client)
        await trio.testing.wait_all_tasks_blocked()
        summary = await server.gateway.cost("slow")
        assert summary.total_cost_usd > 0 and summary.model_usage["claude-sonnet-4-6"].input_tokens > 0
        with pytest.raises(ConnectionClosed):
            await drain(client)


async def test_a_reader_that_resumes_within_the_grace_gets_every_written_frame_then_4408(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(nursery, config)
    client, stream = await stalled_client(server, nursery)
    async with stream:
        cut_off = await stall_until_cut_off(emulator, client)
        frames: list[GatewayFrame] = []
        with pytest.raises(ConnectionClosed) as closed:
            await drain(client, frames)
        assert trio.current_time() - cut_off < CLEANUP_TIMEOUT  # closed, not dropped at the grace
    assert closed.value.reason is not None
    assert closed.value.reason.code == SLOW_READER == 4408
    assert closed.value.reason.reason == "slow reader: read nothing for 60 s"
    # Whole frames only, in order, and none after the cut-off (no ``aborted``): the deltas
    # received are the answer's first words, without a gap.
    assert all(isinstance(frame, EventFrame) and frame.id == "q" for frame in frames)
    words = text_deltas(frames)
    assert words and words == [f"word{i} " for i in range(len(words))]
    summary = await server.gateway.cost("slow")
    assert summary.total_cost_usd > 0


async def test_a_reader_that_never_resumes_is_dropped_after_the_grace_and_others_carry_on(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(nursery, config)
    client, stream = await stalled_client(server, nursery)
    async with stream, connect(server, "other") as other:
        await other.receive()  # ready
        answers: list[list[GatewayFrame]] = []
        answered = trio.Event()

        async def other_query() -> None:
            answers.append(await other.until_terminal("o"))
            answered.set()

        # Paced over 80 s: it streams before, during and after the cut-off and the drop.
        await other.send(type="query", id="o", request=chat("<<emulator:ok:deltas=80,pace_ms=1000>>"))
        await emulator.wait_for_request(0)
        nursery.start_soon(other_query)
        cut_off = await stall_until_cut_off(emulator, client, index=1)
        assert active_sessions(server) == 2
        await trio.sleep_until(cut_off + CLEANUP_TIMEOUT - 0.1)
        assert active_sessions(server) == 2  # still waiting for the write in flight
        await trio.sleep_until(cut_off + CLEANUP_TIMEOUT + 0.1)
        assert active_sessions(server) == 1  # dropped
        assert not answered.is_set()
        with pytest.raises(ConnectionClosed) as closed:
            await drain(client)
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1006  # no close frame after a cut write
        await answered.wait()
        (frames,) = answers
        assert isinstance(frames[-1], Done)
        assert "".join(text_deltas(frames)) == " ".join(f"word{i}" for i in range(80))
    summary = await server.gateway.cost("slow")
    assert summary.total_cost_usd > 0


async def stall_until_cut_off(emulator: Emulator, client: Client, index: int = 0) -> float:
    """Start a long answer, read nothing, and return the trio time the gateway gave up on
    the client (it closed the upstream request)."""
    await client.receive()  # ready
    await client.send(type="query", id="q", request=chat("<<emulator:ok:deltas=5000>>", max_tokens=10_000))
    record = await emulator.wait_for_request(index)
    t0 = trio.current_time()
    await record.finished.wait()
    # Cut off by the 60 s slow-reader limit, long before the upstream idle watchdog (300 s).
    assert SLOW_READER_TIMEOUT <= trio.current_time() - t0 < SLOW_READER_TIMEOUT + 1.0
    assert record.disconnected
    return trio.current_time()


def text_deltas(frames: list[GatewayFrame]) -> list[str]:
    words = []
    for frame in frames:
        if isinstance(frame, EventFrame):
            event = msgspec.json.decode(frame.event)
            if event["type"] == "content_block_delta":
                words.append(event["delta"]["text"])
    return words


def active_sessions(server: Server) -> float:
    exposition = server.gateway.metrics.render().decode()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "switchboard_active_sessions":
                return sample.value
    raise AssertionError("no switchboard_active_sessions gauge")


async def drain(client: Client, frames: list[GatewayFrame] | None = None) -> None:
    """Receive until the connection ends (raises ConnectionClosed), keeping the frames."""
    while True:
        frame = await client.receive()
        if frames is not None:
            frames.append(frame)
