"""The HTTP door's retry contract with clients that retry on their own (docs/protocol.md 2).

A simulated client retries like Claude Code (docs/reference/reference-client-now.md 3): backoff
``min(0.5 * 2**(n-1), 32)`` s plus 0..25 % jitter, ``max(retry-after, backoff)`` when the
answer says ``retry-after`` (over 60 s: it gives up), at most 10 retries, and for the Opus
family it gives up after 3 consecutive 529s; every request says ``x-stainless-retry-count: 0``.
Each scenario runs it directly against the emulator and then through the gateway, with the
same jitter, and checks the README's contract: through the gateway no more upstream attempts,
and no more time than directly plus ``BOUND``. All in virtual time.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx
import msgspec
import pytest
import trio
import trio.testing
from harness import API_VERSION, chat

from actors.config.settings import Config
from actors.server import Server, run_server
from emulator import Emulator

# tests/conftest.py's key: the only one its ``upstream`` emulator accepts (a plain
# ``from conftest import`` is ambiguous next to tests/emulator/conftest.py).
TEST_KEY = "sk-ant-test-key-0123456789"
OPUS = "claude-opus-4-6"
SONNET = "claude-sonnet-4-6"
# README "The HTTP door": what the gateway may add to a retrying client's time. With the
# emulator on loopback in virtual time an upstream answer takes no time, so the bound the
# README states (the time to one upstream answer, per request) is 0 here; what is left is
# float rounding.
BOUND = 0.001


class Upstream(Protocol):
    """What the ``upstream`` fixture gives: an emulator and its URL."""

    @property
    def emulator(self) -> Emulator: ...

    @property
    def url(self) -> str: ...


@dataclass
class Outcome:
    status: int
    attempts: int  # requests the client sent
    elapsed: float
    statuses: list[int]


async def claude_code(
    http: httpx.AsyncClient, model: str, rng: random.Random, *, text: str = "hi"
) -> Outcome:
    """One request, retried as Claude Code does (see the module docstring)."""
    started = trio.current_time()
    statuses: list[int] = []
    consecutive_529 = 0
    retries = 0
    headers = {
        **API_VERSION,
        "x-api-key": TEST_KEY,
        "x-stainless-retry-count": "0",
        "x-stainless-timeout": "600",
    }
    while True:
        response = await http.post("/v1/messages?beta=true", json=chat(text, model=model), headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 200:
            break
        consecutive_529 = consecutive_529 + 1 if response.status_code == 529 else 0
        retryable = response.status_code in (408, 409, 429) or response.status_code >= 500
        if not retryable or retries >= 10 or (model == OPUS and consecutive_529 >= 3):
            break
        retries += 1
        base = min(0.5 * 2 ** (retries - 1), 32.0)
        delay = base + rng.random() * 0.25 * base
        told = response.headers.get("retry-after")
        if told is not None and told.isdigit():
            if int(told) > 60:
                break
            delay = max(delay, float(told))
        await trio.sleep(delay)
    return Outcome(statuses[-1], len(statuses), trio.current_time() - started, statuses)


def upstream_attempts(emulator: Emulator) -> int:
    return sum(1 for record in emulator.requests if record.path.split("?")[0] == "/v1/messages")


@dataclass
class Run:
    outcomes: list[list[Outcome]]  # per client, per request
    attempts: int


async def run_clients(
    url: str, emulator: Emulator, scenario: Callable[[Emulator], None], models: Sequence[str], rounds: int
) -> Run:
    """Run one client per model concurrently against ``url``, each sending ``rounds``
    requests in turn, after ``scenario`` scripts the emulator afresh; the upstream attempts
    they caused. Client ``i`` draws its jitter from ``Random(i)`` on every run."""
    emulator.reset()
    scenario(emulator)
    outcomes: list[list[Outcome]] = [[] for _ in models]
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:

        async def one(i: int, model: str) -> None:
            rng = random.Random(i)
            for n in range(rounds):
                outcomes[i].append(await claude_code(http, model, rng, text=f"client {i} turn {n}"))

        async with trio.open_nursery() as nursery:
            for i, model in enumerate(models):
                nursery.start_soon(one, i, model)
    return Run(outcomes, upstream_attempts(emulator))


def sustained_529(emulator: Emulator) -> None:
    emulator.outage("529", seconds=100_000)


def intermittent_529(emulator: Emulator) -> None:
    emulator.script("529", "ok", "529", "529", "ok", "529")


def rate_limited(emulator: Emulator) -> None:
    emulator.script("429:retry_after=3", "429:retry_after=3")


def outage_that_ends(emulator: Emulator) -> None:
    emulator.outage("529", seconds=20)


# name: (the emulator's script, one client per model, requests per client)
SCENARIOS: dict[str, tuple[Callable[[Emulator], None], list[str], int]] = {
    "sustained 529, Opus": (sustained_529, [OPUS], 1),
    "sustained 529, Sonnet": (sustained_529, [SONNET], 1),
    "intermittent 529": (intermittent_529, [SONNET], 4),
    "429 with retry-after": (rate_limited, [SONNET], 2),
    "an outage that ends": (outage_that_ends, [SONNET], 2),
    "sustained 529, 8 Opus clients": (sustained_529, [OPUS] * 8, 1),
    "an outage that ends, 8 clients": (outage_that_ends, [SONNET] * 8, 2),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_a_client_that_retries_takes_no_longer_and_no_more_attempts_through_the_gateway(
    nursery: trio.Nursery,
    config: Config,
    upstream: Upstream,
    autojump_clock: trio.testing.MockClock,
    name: str,
) -> None:
    scenario, models, rounds = SCENARIOS[name]
    direct = await run_clients(upstream.url, upstream.emulator, scenario, models, rounds)
    server: Server = await nursery.start(
        functools.partial(run_server, msgspec.structs.replace(config, http_port=0))
    )
    assert server.http_url is not None
    through = await run_clients(server.http_url, upstream.emulator, scenario, models, rounds)
    assert through.attempts <= direct.attempts, (direct, through)
    for alone, gated in zip(direct.outcomes, through.outcomes, strict=True):
        assert [o.status for o in gated] == [o.status for o in alone], (alone, gated)
        # Per request, and so per client.
        for one, other in zip(alone, gated, strict=True):
            assert other.elapsed <= one.elapsed + BOUND, (one, other)


async def test_a_client_waits_at_most_one_upstream_response_for_a_probe_in_flight(
    nursery: trio.Nursery, config: Config, upstream: Upstream, autojump_clock: trio.testing.MockClock
) -> None:
    """The README's BOUND where an upstream answer takes time: client B arrives while A's
    probe waits 2 s for its answer; through the gateway B waits for that probe's 200 (no
    attempt meanwhile) and then goes, at most one upstream response time later than directly."""
    slow = 2.0

    def scenario(emulator: Emulator) -> None:
        emulator.script("529", f"slow_first_byte:seconds={slow:g}", "ok")

    async def clients(url: str) -> Run:
        upstream.emulator.reset()
        scenario(upstream.emulator)
        outcomes: list[list[Outcome]] = [[], []]
        async with httpx.AsyncClient(base_url=url, timeout=None) as http:

            async def one(i: int, start: float) -> None:
                await trio.sleep(start)
                outcomes[i].append(await claude_code(http, SONNET, random.Random(0), text=f"client {i}"))

            async with trio.open_nursery() as inner:
                inner.start_soon(one, 0, 0.0)
                inner.start_soon(one, 1, 1.0)  # A's probe (at ~0.5 s) is still waiting then
        return Run(outcomes, upstream_attempts(upstream.emulator))

    direct = await clients(upstream.url)
    server: Server = await nursery.start(
        functools.partial(run_server, msgspec.structs.replace(config, http_port=0))
    )
    assert server.http_url is not None
    through = await clients(server.http_url)
    assert through.attempts <= direct.attempts == 3
    (a_direct,), (b_direct,) = direct.outcomes
    (a_through,), (b_through,) = through.outcomes
    assert [a_through.status, b_through.status] == [a_direct.status, b_direct.status] == [200, 200]
    assert a_through.elapsed <= a_direct.elapsed + BOUND
    assert b_direct.elapsed == 0.0 and 0 < b_through.elapsed <= b_direct.elapsed + slow
    assert b_through.attempts == 1
