"""The WebSocket door: handshake rules, refused frames, limits, takeover."""

from __future__ import annotations

import functools

import msgspec
import pytest
import trio
from harness import Client, chat, connect
from trio_websocket import ConnectionClosed, open_websocket_url

from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from emulator import Emulator
from protocol.frames import Aborted, Done, ErrorFrame, EventFrame, Ready, Rejected


async def drain(client: Client) -> None:
    while True:
        await client.receive()


async def rejected_status(url: str, *, token: str | None = None) -> int:
    """The HTTP status of a WebSocket handshake, read off a raw loopback socket.

    (trio-websocket's client leaks its socket when a handshake is rejected, so the tests
    speak the handshake themselves.)
    """
    host_port, _, path = url.removeprefix("ws://").partition("/")
    host, _, port = host_port.rpartition(":")
    lines = [
        f"GET /{path} HTTP/1.1",
        f"Host: {host_port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n" not in head:
            chunk = await stream.receive_some()
            assert chunk, "connection closed before the status line"
            head += chunk
    return int(head.split(b" ", 2)[1])


async def test_unknown_path_is_404_and_bad_session_id_is_400(server: Server) -> None:
    assert await rejected_status(server.ws_url + "/v2/elsewhere") == 404
    assert await rejected_status(server.ws_url + "/v1/sessions/bad%20id") == 400
    assert await rejected_status(server.ws_url + "/v1/sessions/" + "x" * 129) == 400


async def test_new_session_gets_a_fresh_id(server: Server) -> None:
    async with open_websocket_url(server.ws_url + "/v1/sessions") as ws:
        ready = msgspec.json.decode(await ws.get_message())
    assert ready["type"] == "ready" and ready["resumed"] is False and len(ready["session_id"]) >= 16


async def test_tokens_are_checked_before_any_session_state(nursery: trio.Nursery, config: Config) -> None:
    config = msgspec.structs.replace(config, access_tokens=(Secret("tok-alice"), Secret("tok-bob")))
    server: Server = await nursery.start(functools.partial(run_server, config))
    url = server.ws_url + "/v1/sessions/owned"
    assert await rejected_status(url) == 401
    assert await rejected_status(url, token="nope") == 401
    async with open_websocket_url(url, extra_headers=[(b"authorization", b"Bearer tok-alice")]) as ws:
        assert msgspec.json.decode(await ws.get_message())["type"] == "ready"
    assert await rejected_status(url, token="tok-bob") == 403
    # The refused attempts created nothing: a session Bob names first is Bob's.
    async with open_websocket_url(
        server.ws_url + "/v1/sessions/bobs", extra_headers=[(b"authorization", b"Bearer tok-bob")]
    ) as ws:
        assert msgspec.json.decode(await ws.get_message())["resumed"] is False


async def test_reconnect_resumes_the_session(server: Server) -> None:
    async with connect(server) as client:
        assert (await client.receive()).resumed is False  # type: ignore[union-attr]
        await client.send(type="query", id="q", request=chat())
        done = (await client.until_terminal("q"))[-1]
    async with connect(server) as client:
        ready = await client.receive()
    assert isinstance(ready, Ready) and ready.resumed is True
    assert isinstance(done, Done) and ready.cost.total_cost_usd == pytest.approx(done.cost_usd)


async def test_refused_frames_never_disturb_a_query_in_flight(
    server: Server, emulator: Emulator, autojump_clock: object
) -> None:
    slow = chat("<<emulator:ok:deltas=30,pace_ms=100>>")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="live", request=slow)
        bad: list[tuple[str, str | None, str]] = []
        await client.ws.send_message("not json at all")
        bad.append(("bad_frame", None, "json"))
        await client.ws.send_message("[1, 2]")
        bad.append(("bad_frame", None, "array"))
        await client.send(type="launch", id="x1")
        bad.append(("bad_frame", "x1", "unknown type"))
        await client.send(type="query", id="x2")
        bad.append(("bad_frame", "x2", "missing request"))
        await client.send(type="query", id="x3", request=chat(), max_retries="ten")
        bad.append(("bad_frame", "x3", "mistyped field"))
        await client.send(type="query", id="x4", request=chat(), surprise=True)
        bad.append(("bad_frame", "x4", "unknown field"))
        await client.send(type="query", id="x5", request={"messages": []})
        bad.append(("bad_frame", "x5", "request without a model"))
        await client.send(type="query", id="live", request=chat())
        bad.append(("duplicate_query", "live", "duplicate id"))
        await client.send(type="abort", id="nobody")
        bad.append(("unknown_query", "nobody", "unknown id"))
        await client.send(type="count_tokens", id="x6", request={"model": "m"})
        bad.append(("bad_frame", "x6", "count without messages"))
        await client.ws.send_message(b'{"type":"get_cost"}')  # a binary frame is accepted too
        rejected: list[Rejected] = []
        events = 0
        while True:
            frame = await client.receive()
            if isinstance(frame, Rejected):
                rejected.append(frame)
            elif isinstance(frame, EventFrame):
                events += 1
            elif isinstance(frame, Done):
                break
    assert [(r.error.type, r.id) for r in rejected] == [(kind, fid) for kind, fid, _ in bad]
    assert all(r.error.message for r in rejected)
    assert frame.id == "live" and events >= 30  # the live query saw all of its events


async def test_too_many_queries_in_flight_is_rejected(server: Server, emulator: Emulator) -> None:
    async with connect(server) as client:
        await client.receive()
        for n in range(8):
            await client.send(type="query", id=f"q{n}", request=chat("<<emulator:stall:after=1,times=all>>"))
        await client.send(type="query", id="one-too-many", request=chat())
        while True:
            frame = await client.receive()
            if isinstance(frame, Rejected):
                break
        assert frame.id == "one-too-many" and frame.error.type == "too_many_queries"
        await client.send(type="abort", id="q0")
        while not isinstance(frame, Aborted):
            frame = await client.receive()
        assert frame.id == "q0"
        await client.send(type="query", id="now-fits", request=chat())
        assert isinstance((await client.until_terminal("now-fits"))[-1], Done)


async def test_frame_over_the_limit_closes_1009_and_charges_queries(
    nursery: trio.Nursery, config: Config, emulator: Emulator
) -> None:
    config = msgspec.structs.replace(config, max_frame_bytes=64 * 1024)
    server: Server = await nursery.start(functools.partial(run_server, config))
    emulator.script("stall:after=3")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat("charged anyway"))
        for _ in range(3):
            assert isinstance(await client.receive(), EventFrame)
        await client.ws.send_message("x" * (65 * 1024))
        with pytest.raises(ConnectionClosed) as info:
            await drain(client)
        assert info.value.reason is not None
        assert info.value.reason.code == 1009
    record = emulator.requests[0]
    await record.finished.wait()
    assert record.disconnected
    await trio.testing.wait_all_tasks_blocked()
    summary = await server.gateway.cost("s1")
    assert summary.total_cost_usd > 0
    assert summary.model_usage["claude-sonnet-4-6"].input_tokens > 0


async def test_takeover_closes_the_old_connection_4409_and_aborts_its_queries(
    server: Server, emulator: Emulator
) -> None:
    emulator.script("stall:after=2")
    async with connect(server) as old:
        await old.receive()
        await old.send(type="query", id="q", request=chat("old connection"))
        for _ in range(2):
            assert isinstance(await old.receive(), EventFrame)
        async with connect(server) as new:
            ready = await new.receive()
            assert isinstance(ready, Ready) and ready.resumed is True
            frames = await old.until_terminal("q")
            assert isinstance(frames[-1], Aborted) and frames[-1].usage["input_tokens"] > 0
            with pytest.raises(ConnectionClosed) as info:
                await old.receive()
            assert info.value.reason is not None
            assert info.value.reason.code == 4409
            await new.send(type="query", id="q", request=chat("new connection"))
            assert isinstance((await new.until_terminal("q"))[-1], Done)


async def test_error_frame_for_count_tokens_failure(server: Server, emulator: Emulator) -> None:
    emulator.script("401")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="count_tokens", id="c", request={"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]})
        frame = await client.receive()
    assert isinstance(frame, ErrorFrame) and frame.error.status == 401
