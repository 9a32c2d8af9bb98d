"""Graceful shutdown (docs/protocol.md 3), in-process on the autojump clock: the gateway and
both doors in the test's trio run, the shutdown begun with ``Gateway.shutdown``, the function
``switchboard serve``'s signal handler calls (tests/integration/test_shutdown_cli.py sends
the real SIGTERM).

A query that finishes within the grace ends with ``done``; one that does not ends with
``error`` ``shutting_down`` when the grace ends, its usage charged; a WebSocket connection
closes with 1001 as soon as it has no query in flight; new work is refused (503); a second
signal ends the grace at once.
"""

from __future__ import annotations

import functools
import signal

import httpx
import msgspec
import pytest
import trio
from harness import Client, chat, connect
from trio_websocket import CloseReason, ConnectionClosed

from actors.cli.commands import shut_down_on_signals
from actors.config.settings import Config
from actors.doors.ws_connection import GOING_AWAY
from actors.server import Server, open_gateway, run_server
from actors.supervisor.drain import CUT_OFF_TIMEOUT
from protocol.errors import ShuttingDown
from protocol.frames import Done, ErrorFrame, EventFrame, GatewayFrame, Ready, Rejected

GRACE = 30.0
MODEL = "claude-sonnet-4-6"
# Answers that take 5 s (ten events 0.5 s apart: done well within the grace) and that never
# end (cut off by it).
FINISHES = "finishes <<emulator:ok:deltas=5,pace_ms=500>>"
STALLS = "stalls <<emulator:stall:after=5>>"
HANDSHAKE = {
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
}


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config) -> Server:
    config = msgspec.structs.replace(config, http_port=0, shutdown_grace=GRACE)
    server: Server = await nursery.start(functools.partial(run_server, config))
    return server


async def begin_shutdown(nursery: trio.Nursery, server: Server) -> trio.Event:
    """Begin the shutdown in the background; the event is set when ``shutdown`` returns."""
    returned = trio.Event()

    async def shut_down() -> None:
        await server.gateway.shutdown()
        returned.set()

    nursery.start_soon(shut_down)
    await server.gateway.drain.begun.wait()
    return returned


async def until_closed(client: Client) -> tuple[list[GatewayFrame], CloseReason]:
    """Every frame until the connection closes, and how it closed."""
    frames: list[GatewayFrame] = []
    while True:
        try:
            frames.append(await client.receive())
        except ConnectionClosed as closed:
            reason = closed.reason
            break
    assert reason is not None
    return frames, reason


async def first_event(client: Client, query_id: str) -> None:
    while not (isinstance(frame := await client.receive(), EventFrame) and frame.id == query_id):
        pass


async def test_a_query_that_finishes_within_the_grace_ends_with_done_then_1001(
    nursery: trio.Nursery, server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(server, "busy") as busy, connect(server, "idle") as idle:
        assert isinstance(await idle.receive(), Ready)
        assert isinstance(await busy.receive(), Ready)
        await busy.send(type="query", id="q", request=chat(FINISHES))
        await first_event(busy, "q")
        began = trio.current_time()
        returned = await begin_shutdown(nursery, server)
        # The idle connection is closed at once; the busy one may not start another query.
        frames, closed = await until_closed(idle)
        assert frames == [] and closed.code == GOING_AWAY == 1001
        assert closed.reason == "the gateway is shutting down"
        assert trio.current_time() == began
        await busy.send(type="query", id="late", request=chat())
        frames, closed = await until_closed(busy)
    rejected = [frame for frame in frames if isinstance(frame, Rejected)]
    assert [(frame.id, frame.error.type) for frame in rejected] == [("late", "shutting_down")]
    assert isinstance(frames[-1], Done) and frames[-1].id == "q"
    assert closed.code == 1001
    await returned.wait()
    assert trio.current_time() - began <= 5  # the answer's 5 s, not the 30 s grace


async def test_a_query_still_running_at_the_end_of_the_grace_ends_with_shutting_down(
    nursery: trio.Nursery, server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(server, "cut") as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat(STALLS))
        await first_event(client, "q")
        began = trio.current_time()
        returned = await begin_shutdown(nursery, server)
        frames, closed = await until_closed(client)
    assert trio.current_time() - began == pytest.approx(GRACE)
    terminal = frames[-1]
    assert isinstance(terminal, ErrorFrame) and terminal.id == "q"
    assert terminal.error.type == "shutting_down" and "shutdown grace" in terminal.error.message
    assert closed.code == 1001
    await returned.wait()
    assert trio.current_time() - began < GRACE + CUT_OFF_TIMEOUT
    # The ledger still runs after ``shutdown`` returned: what the query used is in it.
    summary = await server.gateway.cost("cut")
    assert summary.total_cost_usd > 0 and summary.model_usage[MODEL].input_tokens > 0
    assert "shutting_down" in server.gateway.metrics.render().decode()


async def test_a_second_signal_ends_the_grace_at_once(
    nursery: trio.Nursery, server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    # The CLI's handler, fed from a channel instead of trio.open_signal_receiver.
    signals, receiver = trio.open_memory_channel[int](2)
    returned = trio.Event()

    async def handle_signals() -> None:
        await shut_down_on_signals(receiver, server.gateway)
        returned.set()

    async with connect(server, "cut") as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat(STALLS))
        await first_event(client, "q")
        nursery.start_soon(handle_signals)
        await signals.send(signal.SIGTERM)
        await server.gateway.drain.begun.wait()
        autojump_clock.jump(5)
        second = trio.current_time()
        await signals.send(signal.SIGINT)
        await returned.wait()
        assert trio.current_time() - second < CUT_OFF_TIMEOUT
        frames, closed = await until_closed(client)
    assert isinstance(frames[-1], ErrorFrame) and frames[-1].error.type == "shutting_down"
    assert closed.code == 1001
    assert (await server.gateway.cost("cut")).model_usage[MODEL].input_tokens > 0


async def test_new_work_is_refused_while_the_http_door_drains(
    nursery: trio.Nursery, server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    assert server.http_url is not None
    headers = {"anthropic-version": "2023-06-01"}
    results: dict[str, httpx.Response | bytes] = {}

    async def post(name: str, text: str, *, stream: bool, started: trio.Event | None = None) -> None:
        request = {**chat(text), "stream": stream}
        session = {**headers, "x-switchboard-session": name}
        async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
            if not stream:
                results[name] = await http.post("/v1/messages", json=request, headers=session)
                return
            async with http.stream("POST", "/v1/messages", json=request, headers=session) as answer:
                assert answer.status_code == 200
                body = b""
                async for chunk in answer.aiter_bytes():
                    body += chunk
                    if started is not None and b"content_block_delta" in body:
                        started.set()
                results[name] = body

    streaming = trio.Event()
    nursery.start_soon(functools.partial(post, "cut-stream", STALLS, stream=True, started=streaming))
    nursery.start_soon(functools.partial(post, "finishes", FINISHES, stream=False))
    # No status line yet when the grace ends: a 503 the SDKs retry, on another connection.
    nursery.start_soon(functools.partial(post, "cut-early", "<<emulator:slow_first_byte:seconds=600>>", stream=False))
    await streaming.wait()
    began = trio.current_time()
    returned = await begin_shutdown(nursery, server)
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
        health = await http.get("/healthz")
        refused = await http.post("/v1/messages", json=chat(), headers=headers)
        metrics = await http.get("/metrics")
    assert (health.status_code, health.json()) == (503, {"status": "shutting_down"})
    assert refused.status_code == 503 and refused.headers["connection"] == "close"
    assert refused.json()["error"] == {"type": "api_error", "message": "the gateway is shutting down"}
    assert metrics.status_code == 200
    await returned.wait()
    assert trio.current_time() - began == pytest.approx(GRACE, abs=CUT_OFF_TIMEOUT)
    finished = results["finishes"]
    assert isinstance(finished, httpx.Response) and finished.status_code == 200
    early = results["cut-early"]
    assert isinstance(early, httpx.Response) and early.status_code == 503
    assert early.json()["error"]["type"] == "api_error" and "shutdown grace" in early.json()["error"]["message"]
    assert "x-should-retry" not in early.headers and early.headers["connection"] == "close"
    cut = results["cut-stream"]
    assert isinstance(cut, bytes)
    last_event = cut.rsplit(b"event: ", 1)[1]
    assert last_event.startswith(b"error\n") and b"shutdown grace" in last_event
    # (the early one had no usage yet: its upstream answer had not begun)
    for session in ("cut-stream", "finishes"):
        assert (await server.gateway.cost(session)).model_usage[MODEL].input_tokens > 0, session


async def test_a_handshake_during_the_grace_is_rejected_with_503(
    nursery: trio.Nursery, server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(server, "busy") as busy:
        await busy.receive()
        await busy.send(type="query", id="q", request=chat(STALLS))
        await first_event(busy, "q")
        await begin_shutdown(nursery, server)
        # A handshake spoken by httpx (trio-websocket's client leaks its socket on a rejection).
        async with httpx.AsyncClient(base_url=server.ws_url.replace("ws://", "http://")) as http:
            rejected = await http.get("/v1/sessions/late", headers=HANDSHAKE)
    assert (rejected.status_code, rejected.text) == (503, "the gateway is shutting down")


async def test_an_embedded_gateway_drains_with_the_same_call(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_gateway(config) as gateway, trio.open_nursery() as nursery:
        frames: list[GatewayFrame] = []

        async def run_query(text: str, started: trio.Event) -> None:
            async with gateway.query(chat(text), session_id="embedded") as channel:
                async for frame in channel:
                    frames.append(frame)
                    started.set()

        started = trio.Event()
        nursery.start_soon(run_query, STALLS, started)
        await started.wait()
        began = trio.current_time()
        await gateway.shutdown(10.0)
        assert trio.current_time() - began == pytest.approx(10.0, abs=CUT_OFF_TIMEOUT)
        with pytest.raises(ShuttingDown):
            async with gateway.query(chat(), session_id="embedded"):
                pass
        assert isinstance(frames[-1], ErrorFrame) and frames[-1].error.type == "shutting_down"
        assert (await gateway.cost("embedded")).model_usage[MODEL].input_tokens > 0
