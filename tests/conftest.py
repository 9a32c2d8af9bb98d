"""Shared fixtures: the emulator on loopback, the gateway with its WebSocket door, a client.

Rules for every test here (trio-websocket's test module rules): loopback only, port 0, the
``autojump_clock`` whenever anything waits on a timer, no real sleeps, and every wait for
"something happened" is an await on an event or a frame, never a poll.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import trio

from actors.config import Config, Secret
from actors.server import Server, run_server
from emulator import Emulator

TEST_KEY = "sk-ant-test-key-0123456789"


@dataclass(frozen=True)
class Upstream:
    emulator: Emulator
    url: str


@pytest.fixture
async def upstream(nursery: trio.Nursery) -> Upstream:
    emulator = Emulator(api_keys=frozenset({TEST_KEY}))
    return Upstream(emulator, await nursery.start(emulator.run))


@pytest.fixture
def emulator(upstream: Upstream) -> Emulator:
    return upstream.emulator


@pytest.fixture
def config(upstream: Upstream) -> Config:
    return Config(
        base_url=upstream.url,
        api_key=Secret(TEST_KEY),
        retry_seed=1234,
        max_queries_per_session=8,
    )


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config) -> Server:
    return await nursery.start(functools.partial(run_server, config))


