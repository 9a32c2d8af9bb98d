"""An HTTP door client that stops reading: its query is aborted and charged at the slow-reader
limit, and never retried (the upstream was not silent: the gateway stopped reading it)."""

from __future__ import annotations

import functools
import socket

import msgspec
import trio
from harness import chat

from actors.config.settings import Config
from actors.server import Server, run_server
from emulator import Emulator


async def stalled_post(server: Server, body: bytes) -> trio.SocketStream:
    """POST ``body`` on a socket that takes in almost nothing unless the test reads."""
    assert server.http_url is not None
    host, _, port = server.http_url.removeprefix("http://").rpartition(":")
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    head = (
        f"POST /v1/messages HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"x-api-key: client-key\r\nanthropic-version: 2023-06-01\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    await stream.send_all(head.encode() + body)
    return stream


async def test_a_stalled_http_reader_is_aborted_and_charged_not_retried(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    config = msgspec.structs.replace(config, http_port=0, slow_reader_timeout=60.0, stream_idle_timeout=90.0)
    server: Server = await nursery.start(functools.partial(run_server, config))
    body = msgspec.json.encode({**chat("<<emulator:ok:deltas=5000>>", max_tokens=10_000), "stream": True})
    async with await stalled_post(server, body) as stream:
        record = await emulator.wait_for_request(0)
        t0 = trio.current_time()
        await record.finished.wait()
        # Cut off at the slow-reader limit; before, the idle watchdog (90 s here) fired while
        # the relay waited on the client, and the query was retried upstream.
        assert 60.0 <= trio.current_time() - t0 < 61.0
        assert record.disconnected
        await trio.testing.wait_all_tasks_blocked()
        assert [r.path for r in emulator.requests] == ["/v1/messages"]
        summary = await server.gateway.cost("http-default")
        assert summary.total_cost_usd > 0 and summary.model_usage["claude-sonnet-4-6"].input_tokens > 0
        # Once the client reads again, what was written comes, then the end of the stream:
        # the API's error event (the query was aborted), never a silently truncated 200.
        received = b""
        while not received.endswith(b"0\r\n\r\n"):
            data = await stream.receive_some(65536)
            assert data, "connection closed before the stream ended"
            received += data
        assert received.startswith(b"HTTP/1.1 200")
        last_event = received.rsplit(b"event: ", 1)[1]
        assert last_event.startswith(b"error") and b"the query was aborted by the gateway" in last_event
