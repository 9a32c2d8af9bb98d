"""Shared fixtures: the emulator on loopback, the gateway with its WebSocket door, a client.

Rules for every test here (trio-websocket's test module rules): loopback only, port 0, no
real sleeps, and every wait for "something happened" is an await on an event or a frame,
never a poll. The clock: tests/README.md. The ``autojump_clock`` is safe only while no real
I/O is in flight; a new test of one actor's timers runs over memory transports
(tests/actors/actor_fakes.py) rather than these loopback fixtures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import trio
from pg_testkit import ledger_location as ledger_location
from pg_testkit import pg_admin as pg_admin
from pg_testkit import pg_url as pg_url

import actors.config.settings
from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from emulator import Emulator
from protocol.request_builder import BuildSettings

TEST_KEY = "sk-ant-test-key-0123456789"


@pytest.fixture(autouse=True)
def _ledger_in_memory_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``Config`` without ``ledger_path`` keeps its cost ledger in memory in tests: nothing
    is written to the home directory, and no store call runs on a worker thread (while a
    thread works, the autojump clock sees every task blocked and leaps to the next
    deadline). Tests of the durable store pass a file explicitly."""
    monkeypatch.setattr(actors.config.settings, "default_ledger_path", lambda env: actors.config.settings.MEMORY_LEDGER)


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
        # No file in the home directory, and no bootstrap request in the emulator's log
        # (tests/actors/test_bootstrap_fetcher.py turns it on where it is the subject).
        ledger_path=":memory:",
        disable_nonessential_traffic=True,
        # issue 5: no cache breakpoints added, so that repeating a prompt gives the same usage
        # (tests/integration/test_request_golden.py turns caching on where it is the subject).
        build=BuildSettings(disable_prompt_caching=True),
    )


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config) -> Server:
    server: Server = await nursery.start(functools.partial(run_server, config))
    return server


