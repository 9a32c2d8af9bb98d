"""Admission under saturation (docs/protocol.md "Admission"), in-process on the autojump
clock: the gateway and both doors in the test's trio run, with ``max_queries=2``.

Over the bound a WebSocket query gets ``queued`` at once, ``heartbeat``s while it waits, and
runs when a slot frees, in arrival order; an abort ends its wait at once with ``aborted``;
an HTTP request waits at most ``admission_wait``, then gets 529 with ``retry-after``; a
shutdown ends every waiter at once with ``shutting_down``; an embedding caller waits, or
gives a timeout and gets ``Overloaded``.
"""

from __future__ import annotations

import functools

import httpx
import msgspec
import pytest
import trio
import trio.testing
from harness import Client, chat, connect

from actors.config.settings import Config
from actors.server import Server, open_gateway, run_server
from actors.supervisor.channel import HEARTBEAT_INTERVAL
from protocol.errors import Overloaded
from protocol.frames import (
    TERMINAL_FRAMES,
    Aborted,
    Done,
    ErrorFrame,
    EventFrame,
    GatewayFrame,
    Heartbeat,
    Queued,
    Ready,
)

LIMIT = 2
WAIT = 10.0
HEADERS = {"anthropic-version": "2023-06-01"}


def holding(seconds: float) -> str:
    """A prompt whose answer streams three events, then waits ``seconds`` on the trio clock
    before it ends: its query holds a slot that long (every time it is sent)."""
    return f"<<emulator:stall:after=3,seconds={seconds:g},times=all>> holds a slot"


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config) -> Server:
    config = msgspec.structs.replace(
        config, http_port=0, max_queries=LIMIT, admission_wait=WAIT, shutdown_grace=100.0
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    return server


async def first_event(client: Client, query_id: str) -> None:
    while not (isinstance(frame := await client.receive(), EventFrame) and frame.id == query_id):
        pass


async def hold_slots(client: Client, seconds: float, *ids: str) -> None:
    """Start a query per id that holds its slot for ``seconds``; returns once each streams."""
    for query_id in ids:
        await client.send(type="query", id=query_id, request=chat(holding(seconds)))
        await first_event(client, query_id)


async def next_of(client: Client, query_id: str) -> GatewayFrame:
    """The next frame of ``query_id`` (the other queries' frames are skipped)."""
    while getattr(frame := await client.receive(), "id", None) != query_id:
        pass
    return frame


async def frames_until_terminal(
    client: Client, *ids: str, log: list[tuple[str, GatewayFrame]] | None = None
) -> dict[str, list[tuple[float, GatewayFrame]]]:
    """Every frame of ``ids`` with the trio time it arrived, until each has its terminal one;
    ``log`` gets them all in the order they arrived."""
    frames: dict[str, list[tuple[float, GatewayFrame]]] = {query_id: [] for query_id in ids}
    open_ids = set(ids)
    while open_ids:
        frame = await client.receive()
        query_id = getattr(frame, "id", None)
        if query_id in frames:
            frames[query_id].append((trio.current_time(), frame))
            if log is not None:
                log.append((query_id, frame))
            if isinstance(frame, TERMINAL_FRAMES):
                open_ids.discard(query_id)
    return frames


def metric(server: Server, name: str) -> float | None:
    return server.gateway.metrics.registry.get_sample_value(name)


async def test_a_query_over_the_bound_is_queued_gets_heartbeats_then_runs_to_done(
    server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(server, "full") as client:
        assert isinstance(await client.receive(), Ready)
        await hold_slots(client, 70.0, "a", "b")
        began = trio.current_time()
        await client.send(type="query", id="c", request=chat())
        frames = await frames_until_terminal(client, "a", "b", "c")
    waited = frames["c"]
    assert waited[0] == (began, Queued(id="c", position=1, limit=LIMIT))
    heartbeats = [(t, f) for t, f in waited if isinstance(f, Heartbeat)]
    assert [t - began for t, _ in heartbeats] == [HEARTBEAT_INTERVAL, 2 * HEARTBEAT_INTERVAL]
    assert all(f.attempt == 0 and f.remaining_ms >= 1000 for _, f in heartbeats)
    # It ran once a slot freed, no sooner, and ended as any query does.
    freed = min(frames[q][-1][0] for q in ("a", "b"))
    first_run = next(t for t, f in waited if isinstance(f, EventFrame))
    assert first_run >= freed > began
    assert isinstance(waited[-1][1], Done)
    assert [type(f) for _, f in frames["a"] + frames["b"] if isinstance(f, TERMINAL_FRAMES)] == [Done, Done]
    gateway = server.gateway
    assert (gateway.drain.admission.in_use, gateway.drain.admission.queued) == (0, 0)
    assert metric(server, "switchboard_queued_queries") == 0


async def test_waiting_queries_run_in_the_order_they_arrived(
    server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(server, "line") as client:
        await client.receive()
        await hold_slots(client, 10.0, "a")
        await hold_slots(client, 20.0, "b")
        for query_id in ("c", "d", "e"):
            await client.send(type="query", id=query_id, request=chat())
        log: list[tuple[str, GatewayFrame]] = []
        frames = await frames_until_terminal(client, "a", "b", "c", "d", "e", log=log)
    positions = [f.position for q in "cde" for _, f in frames[q] if isinstance(f, Queued)]
    assert positions == [1, 2, 3]
    # Each waiter's first event comes after the terminal frame of the query whose slot it
    # took: "c" takes the slot "a" frees; "d", not the later "e", the one "c" frees; "e"
    # then the one "d" frees, while "b" still holds its own.
    ends = [q for q, f in log if isinstance(f, TERMINAL_FRAMES)]
    starts = [q for q, f in log if isinstance(f, EventFrame) and q in "cde"]
    assert list(dict.fromkeys(starts)) == ["c", "d", "e"]
    assert ends == ["a", "c", "d", "e", "b"]
    assert all(isinstance(frames[q][-1][1], Done) for q in "abcde")


async def test_an_abort_while_queued_ends_the_query_at_once_and_keeps_the_slots_right(
    server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    admission = server.gateway.drain.admission
    async with connect(server, "abort") as client:
        await client.receive()
        await hold_slots(client, 40.0, "a", "b")
        await client.send(type="query", id="c", request=chat())
        await client.send(type="query", id="d", request=chat())
        assert await next_of(client, "c") == Queued(id="c", position=1, limit=LIMIT)
        assert await next_of(client, "d") == Queued(id="d", position=2, limit=LIMIT)
        began = trio.current_time()
        await client.send(type="abort", id="c")
        aborted = await next_of(client, "c")
        assert trio.current_time() == began
        assert isinstance(aborted, Aborted) and aborted.id == "c"
        assert aborted.cost_usd == 0 and aborted.usage.get("input_tokens", 0) == 0
        assert (admission.in_use, admission.queued) == (2, 1)
        frames = await frames_until_terminal(client, "a", "b", "d")
    assert all(isinstance(frames[q][-1][1], Done) for q in "abd")
    assert (admission.in_use, admission.queued) == (0, 0)
    assert server.gateway.drain.in_flight == 0


async def test_an_http_request_over_the_bound_waits_its_bound_then_gets_529_with_retry_after(
    server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(server, "full") as client:
        await client.receive()
        await hold_slots(client, 60.0, "a", "b")
        began = trio.current_time()
        async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
            answer = await http.post("/v1/messages", json=chat(), headers=HEADERS)
        assert trio.current_time() - began == pytest.approx(WAIT)
        await frames_until_terminal(client, "a", "b")
    assert answer.status_code == 529
    assert answer.json()["type"] == "error"
    assert answer.json()["error"]["type"] == "overloaded_error"
    assert answer.headers["x-should-retry"] == "true"
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert int(answer.headers["retry-after-ms"]) == 1000 * int(answer.headers["retry-after"])
    assert answer.headers["request-id"] == answer.json()["request_id"]
    assert metric(server, "switchboard_admission_rejections_total") == 1
    assert metric(server, "switchboard_queued_queries") == 0
    assert server.gateway.drain.admission.in_use == 0


async def test_an_http_request_that_gets_a_slot_within_the_bound_succeeds(
    server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(server, "busy") as client:
        await client.receive()
        await hold_slots(client, 4.0, "a", "b")
        began = trio.current_time()
        async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
            answer = await http.post("/v1/messages", json=chat(), headers=HEADERS)
        waited = trio.current_time() - began
        await frames_until_terminal(client, "a", "b")
    assert answer.status_code == 200 and answer.json()["type"] == "message"
    assert 0 < waited < WAIT
    assert metric(server, "switchboard_admission_rejections_total") == 0


async def test_a_shutdown_ends_the_waiting_queries_at_once_with_shutting_down(
    nursery: trio.Nursery, server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    http_answer: list[httpx.Response] = []

    async def post() -> None:
        async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
            http_answer.append(await http.post("/v1/messages", json=chat(), headers=HEADERS))

    async with connect(server, "draining") as client:
        await client.receive()
        await hold_slots(client, 20.0, "a", "b")
        await client.send(type="query", id="c", request=chat())
        assert isinstance(await next_of(client, "c"), Queued)
        nursery.start_soon(post)
        await trio.testing.wait_all_tasks_blocked()
        assert server.gateway.drain.admission.queued == 2
        began = trio.current_time()
        nursery.start_soon(server.gateway.shutdown)
        frames = await frames_until_terminal(client, "a", "b", "c")
    ended_at, terminal = frames["c"][-1]
    assert ended_at == began and len(frames["c"]) == 1
    assert isinstance(terminal, ErrorFrame) and terminal.error.type == "shutting_down"
    assert "never started" in terminal.error.message
    # The running queries kept their slots and finished within the grace.
    assert all(isinstance(frames[q][-1][1], Done) for q in "ab")
    assert http_answer and http_answer[0].status_code == 503
    assert http_answer[0].json()["error"]["message"] == "the gateway is shutting down"


async def test_an_embedded_query_waits_in_line_or_gives_up_after_its_timeout(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    config = msgspec.structs.replace(config, max_queries=1)
    async with open_gateway(config) as gateway, trio.open_nursery() as nursery:
        held = trio.Event()

        async def hold() -> None:
            async with gateway.query(chat(holding(30.0)), session_id="embedded") as frames:
                async for _ in frames:
                    held.set()

        nursery.start_soon(hold)
        await held.wait()
        began = trio.current_time()
        with pytest.raises(Overloaded) as refused:
            async with gateway.query(chat(), session_id="embedded", admission_timeout=5.0):
                pass
        assert trio.current_time() - began == pytest.approx(5.0)
        assert refused.value.retry_after >= 1
        async with gateway.query(chat(), session_id="embedded") as frames:
            waited = [frame async for frame in frames]
        assert isinstance(waited[0], Queued)
        assert waited[0] == Queued(id=waited[0].id, position=1, limit=1)
        assert isinstance(waited[-1], Done)
