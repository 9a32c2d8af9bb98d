"""No retry storms: many sessions on one overloaded model share its overload gate."""

from __future__ import annotations

import pytest
import trio
from harness import chat

from actors.config.settings import Config
from actors.gateway import Gateway
from actors.server import open_gateway
from emulator import Emulator
from protocol.frames import Done, GatewayFrame, Heartbeat, RetryFrame


async def run_many(gateway: Gateway, n: int) -> list[list[GatewayFrame]]:
    results: list[list[GatewayFrame]] = []

    async def one(i: int) -> None:
        async with gateway.query(chat(f"storm {i}"), session_id=f"s{i}") as frames:
            results.append([frame async for frame in frames])

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return results


async def test_a_hundred_queries_through_a_minute_of_529s_make_few_attempts(
    config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.outage("529", seconds=60)
    async with open_gateway(config) as gateway:
        results = await run_many(gateway, 100)
    assert len(results) == 100
    assert all(isinstance(frames[-1], Done) for frames in results)
    attempts = len(emulator.requests)
    # Alone, each query would make 8 attempts to outlast the outage (0.5 s, 1 s, ... 32 s
    # of backoff): 800 in all. With the gate: the first wave, a few probes, the last wave.
    assert attempts <= 100 + 20 + 100, attempts
    # Every query waited through the outage (a minute) and heard from the gateway meanwhile:
    # a retry frame if it had tried, heartbeats while it waited at the gate.
    for frames in results:
        before_output = frames[: next(i for i, f in enumerate(frames) if not isinstance(f, RetryFrame | Heartbeat))]
        assert sum(isinstance(f, Heartbeat) for f in before_output) >= 1


async def test_a_single_query_sees_exactly_the_reference_schedule(
    config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.outage("529", seconds=60)
    async with open_gateway(config) as gateway:
        t0 = trio.current_time()
        results = await run_many(gateway, 1)
    frames = results[0]
    retries = [f for f in frames if isinstance(f, RetryFrame)]
    # The reference schedule: 0.5, 1, 2, 4, 8, 16, 32 s (plus jitter) outlasts 60 s at the 8th.
    assert len(retries) == 7 and len(emulator.requests) == 8
    assert trio.current_time() - t0 == pytest.approx(sum(r.delay_ms for r in retries) / 1000, abs=0.004)
