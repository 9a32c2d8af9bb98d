"""Network and stream faults, each driven through the emulator in virtual time."""

from __future__ import annotations

import functools

import msgspec
import trio
from harness import chat, connect

from actors.config.settings import Config
from actors.server import Server, run_server
from emulator import Emulator
from protocol.frames import Done, EventFrame, Heartbeat, RetryFrame, Tombstone


async def run_one(server: Server, text: str = "fault") -> list[object]:
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat(text))
        return list(await client.until_terminal("q"))


async def test_stalled_stream_times_out_is_voided_and_retried(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    config = msgspec.structs.replace(config, api_timeout=10.0)
    server: Server = await nursery.start(functools.partial(run_server, config))
    emulator.script("stall:after=3,seconds=600")
    started = trio.current_time()
    frames = await run_one(server)
    kinds = [type(f).__name__ for f in frames]
    assert kinds[:5] == ["EventFrame"] * 3 + ["Tombstone", "RetryFrame"]
    retry = frames[4]
    assert isinstance(retry, RetryFrame) and retry.error.type == "timeout_error" and retry.error.status is None
    assert isinstance(frames[-1], Done) and frames[-1].attempts == 2
    # The read timeout fired 10 s after the last chunk, then the reference backoff.
    assert trio.current_time() - started >= 10.0
    record = emulator.requests[0]
    await record.finished.wait()
    assert record.disconnected


async def test_slow_first_byte_within_the_timeout_is_just_slow(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("slow_first_byte:seconds=30")
    started = trio.current_time()
    frames = await run_one(server)
    assert isinstance(frames[-1], Done) and frames[-1].attempts == 1
    assert trio.current_time() - started == 30.0


async def test_connection_dropped_mid_stream_is_retried(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("drop:after=3")
    frames = await run_one(server)
    tomb = next(i for i, f in enumerate(frames) if isinstance(f, Tombstone))
    retry = frames[tomb + 1]
    assert isinstance(retry, RetryFrame) and retry.error.type == "connection_error"
    assert isinstance(frames[-1], Done) and frames[-1].attempts == 2


async def test_connection_dropped_before_the_status_line_is_retried(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("drop:after=0")
    frames = await run_one(server)
    assert isinstance(frames[0], RetryFrame)
    assert isinstance(frames[-1], Done)


async def test_a_200_that_is_not_an_event_stream_is_a_failed_attempt(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("bad_stream")
    frames = await run_one(server)
    retry = frames[0]
    assert isinstance(retry, RetryFrame) and retry.error.type == "api_error"
    assert isinstance(frames[-1], Done) and frames[-1].attempts == 2


async def test_long_waits_send_a_heartbeat_every_30_seconds(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("429:retry_after=75")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        retry = await client.receive()
        assert isinstance(retry, RetryFrame) and retry.delay_ms == 75_000
        t0 = trio.current_time()
        beats = []
        frame = await client.receive()
        while isinstance(frame, Heartbeat):
            beats.append((trio.current_time() - t0, frame.remaining_ms, frame.attempt))
            frame = await client.receive()
        assert isinstance(frame, EventFrame)
        assert trio.current_time() - t0 == 75.0
        assert beats == [(30.0, 45_000, 1), (60.0, 15_000, 1)]
        assert isinstance((await client.until_terminal("q"))[-1], Done)


async def test_abort_during_a_backoff_ends_the_query_at_once(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("529:retry_after=600")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        assert isinstance(await client.receive(), RetryFrame)
        t0 = trio.current_time()
        await client.send(type="abort", id="q")
        frames = await client.until_terminal("q")
        assert [type(f).__name__ for f in frames] == ["Aborted"]
        assert trio.current_time() - t0 < 1.0
    assert len(emulator.requests) == 1
