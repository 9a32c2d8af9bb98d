"""FrontDoor on its own (actors/doors/websocket.py), without a listener: each connection is a
``trio.testing.memory_stream_pair`` whose server end trio-websocket wraps and hands to
``FrontDoor.handle_request``, as the listener does. Behind the door runs the gateway's actor
system over an httpx ``MockTransport`` upstream (tests/README.md "Memory transports")."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import msgspec
import pytest
import trio
import trio.testing
from actor_fakes import SONNET, ChunkedBody, Upstream, config, message_events, sse, stream_response
from harness import Client, chat
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    wrap_client_stream,
    wrap_server_stream,
)

from actors.config.settings import Config, Secret
from actors.doors.websocket import FrontDoor
from actors.doors.ws_connection import SLOW_READER, SUPERSEDED
from actors.gateway import Gateway
from actors.server import run_gateway
from protocol.frames import Aborted, Done, EventFrame, GatewayFrame, Ready, Rejected


@dataclass
class Door:
    door: FrontDoor
    gateway: Gateway
    upstream: Upstream
    # Where the server side of each connection runs: it outlives the client's end.
    nursery: trio.Nursery


async def open_door(nursery: trio.Nursery, upstream: Upstream, settings: Config | None = None) -> Door:
    settings = settings or config(max_queries_per_session=8)
    gateway: Gateway = await nursery.start(functools.partial(run_gateway, settings, transport=upstream.transport))
    return Door(FrontDoor(gateway, settings), gateway, upstream, nursery)


async def serve_one(door: FrontDoor, stream: trio.abc.Stream) -> None:
    """What the listener does for one accepted connection."""
    async with trio.open_nursery() as nursery:
        request = await wrap_server_stream(nursery, stream)
        await door.handle_request(request)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect(
    door: Door, path: str = "/v1/sessions/s1", token: str | None = None, *, lockstep: bool = False
) -> AsyncIterator[Client]:
    """A client connection. ``lockstep``: the server's writes wait until the client reads
    them (a memory pair buffers without bound otherwise)."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    door.nursery.start_soon(serve_one, door.door, server_stream)
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    async with trio.open_nursery() as nursery:
        # trio-websocket names socket streams in its signature; any trio stream works.
        ws = await wrap_client_stream(nursery, cast(Any, client_stream), "gateway.test", path, extra_headers=headers)
        try:
            yield Client(ws)
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()


async def ready(client: Client) -> Ready:
    frame = await client.receive()
    assert isinstance(frame, Ready), frame
    return frame


async def handshake_status(door: Door, path: str, token: str | None = None) -> int:
    """The HTTP status the door refused the handshake with (trio-websocket's client raises
    it in its reader task, so it arrives inside exception groups)."""
    statuses: list[int] = []
    try:
        async with connect(door, path, token):
            pass
    except* ConnectionRejected as group:
        statuses = [leaf.status_code for leaf in leaves(group)]
    assert len(statuses) == 1, statuses
    return statuses[0]


async def queries_ended(door: Door) -> None:
    """Wait until every query has ended, its usage recorded: a graceful shutdown returns
    then. Each must end by itself (aborted), long before the shutdown's grace would cut it."""
    grace = 3600.0
    began = trio.current_time()
    await door.gateway.drain.shutdown(grace)
    assert trio.current_time() - began < grace


async def read_until_closed(client: Client) -> tuple[list[GatewayFrame], int | None]:
    """The frames still to come, and the close code that ended them."""
    frames: list[GatewayFrame] = []
    try:
        while True:
            frames.append(await client.receive())
    except ConnectionClosed as closed:
        return frames, None if closed.reason is None else closed.reason.code


def leaves(group: BaseExceptionGroup[Any]) -> list[Any]:
    out: list[Any] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def held_stream(opened: trio.Event, resume: trio.Event, text: str = "Hello") -> tuple[ChunkedBody, Any]:
    """A complete answer whose third event waits for ``resume`` (``opened`` is set then)."""

    async def gate(index: int) -> None:
        if index == 2:
            opened.set()
            await resume.wait()

    response = stream_response(sse(*message_events(text)), gate=gate)
    assert isinstance(response.stream, ChunkedBody)
    return response.stream, response


async def test_a_connection_gets_its_ready_frame_then_a_query_its_events_and_done(nursery: trio.Nursery) -> None:
    door = await open_door(nursery, Upstream(stream_response(sse(*message_events("Hi from upstream")))))
    async with connect(door) as client:
        first = await ready(client)
        assert (first.session_id, first.resumed) == ("s1", False)
        await client.send(type="query", id="q1", request=chat(model=SONNET))
        frames = await client.until_terminal("q1")
    assert all(isinstance(frame, EventFrame) for frame in frames[:-1]) and len(frames) == 7
    done = frames[-1]
    assert isinstance(done, Done) and done.message["content"] == [{"type": "text", "text": "Hi from upstream"}]
    assert [msgspec.json.decode(r.content)["model"] for r in door.upstream.requests] == [SONNET]


async def test_malformed_frames_are_rejected_and_the_connection_goes_on(nursery: trio.Nursery) -> None:
    door = await open_door(nursery, Upstream(stream_response(sse(*message_events()))))
    async with connect(door) as client:
        await ready(client)
        await client.ws.send_message("{not json")
        await client.ws.send_message("[1, 2]")
        await client.send(type="launch", id="x1")
        await client.send(type="query", id="x2")
        await client.send(type="query", id="x3", request=chat(), surprise=True)
        await client.send(type="abort", id="nobody")
        refused = [await client.receive() for _ in range(6)]
        await client.send(type="query", id="q1", request=chat())
        done = (await client.until_terminal("q1"))[-1]
    assert all(isinstance(frame, Rejected) for frame in refused)
    assert [(frame.id, frame.error.type) for frame in cast(list[Rejected], refused)] == [
        (None, "bad_frame"), (None, "bad_frame"), ("x1", "bad_frame"), ("x2", "bad_frame"), ("x3", "bad_frame"),
        ("nobody", "unknown_query"),
    ]
    assert isinstance(done, Done)
    # Nothing refused went upstream.
    assert len(door.upstream.requests) == 1


async def test_a_bad_connection_leaves_another_sessions_query_untouched(nursery: trio.Nursery) -> None:
    opened, resume = trio.Event(), trio.Event()
    _, held = held_stream(opened, resume, "undisturbed")
    door = await open_door(nursery, Upstream(held))
    async with connect(door, "/v1/sessions/calm") as calm:
        await ready(calm)
        await calm.send(type="query", id="q1", request=chat())
        await opened.wait()
        async with connect(door, "/v1/sessions/noisy") as noisy:
            await ready(noisy)
            await noisy.ws.send_message("\x00 garbage")
            await noisy.send(type="query", id="q1")
            assert [type(await noisy.receive()) for _ in range(2)] == [Rejected, Rejected]
        resume.set()
        frames = await calm.until_terminal("q1")
    assert [type(frame) for frame in frames] == [EventFrame] * 6 + [Done]
    done = frames[-1]
    assert isinstance(done, Done) and done.message["content"][0]["text"] == "undisturbed"


async def test_handshakes_are_refused_before_any_state_is_touched(nursery: trio.Nursery) -> None:
    settings = config(access_tokens=(Secret("door-token-0123456789"),))
    door = await open_door(nursery, Upstream(), settings)
    assert await handshake_status(door, "/v1/elsewhere") == 404
    assert await handshake_status(door, "/v1/sessions/bad%20id") == 400
    assert await handshake_status(door, "/v1/sessions/s1") == 401
    assert await handshake_status(door, "/v1/sessions/s1", token="wrong-token-0123456789") == 401
    async with connect(door, "/v1/sessions/s1", token="door-token-0123456789") as client:
        assert (await ready(client)).resumed is False


async def test_a_second_connection_takes_the_session_over(nursery: trio.Nursery) -> None:
    opened, resume = trio.Event(), trio.Event()
    body, held = held_stream(opened, resume)
    door = await open_door(nursery, Upstream(held))
    async with connect(door) as first:
        await ready(first)
        await first.send(type="query", id="q1", request=chat())
        await opened.wait()
        async with connect(door) as second:
            assert (await ready(second)).resumed is True
            frames = await first.until_terminal("q1")
            with pytest.raises(ConnectionClosed) as closed:
                await first.receive()
    assert isinstance(frames[-1], Aborted)
    reason = closed.value.reason
    assert reason is not None and reason.code == SUPERSEDED
    # The aborted query's upstream response was closed, its usage kept.
    await body.closed.wait()
    assert (await door.gateway.cost("s1")).total_cost_usd > 0


async def test_a_disconnect_aborts_the_connections_queries(nursery: trio.Nursery) -> None:
    opened, resume = trio.Event(), trio.Event()
    body, held = held_stream(opened, resume)
    door = await open_door(nursery, Upstream(held))
    async with connect(door) as client:
        await ready(client)
        await client.send(type="query", id="q1", request=chat())
        await opened.wait()
    await body.closed.wait()
    await queries_ended(door)
    summary = await door.gateway.cost("s1")
    assert summary.total_cost_usd > 0 and summary.estimated_cost_usd > 0


async def test_the_frames_of_a_connections_queries_keep_their_order(nursery: trio.Nursery) -> None:
    upstream = Upstream(*(stream_response(sse(*message_events(f"answer {n}"))) for n in range(3)))
    door = await open_door(nursery, upstream)
    async with connect(door) as client:
        await ready(client)
        for n in range(3):
            await client.send(type="query", id=f"q{n}", request=chat())
        per_query: dict[str, list[GatewayFrame]] = {f"q{n}": [] for n in range(3)}
        ended = 0
        while ended < 3:
            frame = await client.receive()
            assert isinstance(frame, (EventFrame, Done)), frame
            per_query[frame.id].append(frame)
            ended += isinstance(frame, Done)
    for frames in per_query.values():
        names = [msgspec.json.decode(f.event)["type"] for f in frames if isinstance(f, EventFrame)]
        assert names == [name for name, _ in message_events()] and isinstance(frames[-1], Done)


async def test_a_client_that_reads_nothing_is_cut_off_and_its_query_charged(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Memory streams only: no real I/O is in flight, so the autojump clock may leap to the
    # slow-reader deadline (tests/README.md).
    response = stream_response(sse(*message_events("many words", deltas=500)))
    assert isinstance(response.stream, ChunkedBody)
    door = await open_door(nursery, Upstream(response), config(slow_reader_timeout=60.0))
    async with connect(door, lockstep=True) as client:
        await ready(client)
        await client.send(type="query", id="q1", request=chat())
        started = trio.current_time()
        # The client reads nothing more: the door's writes stall, then the relay's sends.
        await response.stream.closed.wait()
        assert trio.current_time() - started >= 60.0
        frames, code = await read_until_closed(client)
    # The cut-off write completed once the client read again: the close frame says why.
    assert code == SLOW_READER
    assert not any(isinstance(frame, Done) for frame in frames)
    await queries_ended(door)
    summary = await door.gateway.cost("s1")
    assert summary.total_cost_usd > 0 and summary.estimated_cost_usd > 0
