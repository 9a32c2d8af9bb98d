"""BootstrapFetcher against the emulator on loopback, in virtual time, leasing its client and
credential from a ClientPool (or a stand-in answering the pool's messages).

Every test awaits ``GetBootstrap(settled=True)``: the answer comes once the startup fetch
has ended, whichever way, so nothing is polled.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec
import pytest
import trio
from harness import connect

import actors.bootstrap_fetcher
from actors._util import answer, ask, fail
from actors.bootstrap_fetcher import BOOTSTRAP_TIMEOUT, BootstrapFetcher
from actors.client_pool import ClientPool
from actors.config.settings import Config, Secret
from actors.messages.bootstrap import BootstrapFetcherAddress, BootstrapState, GetBootstrap
from actors.messages.pool import (
    Acquire,
    ClientPoolAddress,
    ClientPoolMsg,
    Lease,
    Refresh,
    RefreshResult,
    ReportBroken,
)
from actors.server import Server, run_server
from actors.upstream.credentials import Credential
from emulator import Emulator
from protocol.frames import ModelOption, Ready
from protocol.models.options import DEFAULT_MODEL_OPTIONS

# tests/conftest.py's key: the only one its ``upstream`` emulator accepts (a plain
# ``from conftest import`` is ambiguous next to tests/emulator/conftest.py).
TEST_KEY = "sk-ant-test-key-0123456789"


class Upstream(Protocol):
    """What the ``upstream`` fixture gives: an emulator and its URL."""

    @property
    def emulator(self) -> Emulator: ...

    @property
    def url(self) -> str: ...


@dataclass(frozen=True)
class OwnUpstream:
    emulator: Emulator
    url: str


LEARNT = ModelOption(
    value="claude-opus-4-5-20251101", label="Opus 4.5", description="Previous Opus, for work that was tuned on it"
)
CACHED = b'{"additional_model_options":[{"model":"claude-cached","name":"Cached","description":"from disk"}]}'


def make_config(upstream: Upstream, **changes: object) -> Config:
    return msgspec.structs.replace(
        Config(base_url=upstream.url, api_key=Secret(TEST_KEY), ledger_path=":memory:"), **changes
    )


async def settle(
    nursery: trio.Nursery, config: Config, *, cache_path: str | None, to_pool: ClientPoolAddress | None = None
) -> BootstrapState:
    """Run a fetcher (on a ClientPool of ``config``'s unless ``to_pool``) until it settles."""
    if to_pool is None:
        to_pool = await nursery.start(ClientPool(config).run)
    fetcher = BootstrapFetcher(config, to_pool, cache_path=cache_path)
    address: BootstrapFetcherAddress = await nursery.start(fetcher.run)
    with address:
        return await ask(address, lambda reply: GetBootstrap(reply=reply, settled=True))


async def stand_in_pool(
    nursery: trio.Nursery, config: Config, keys: list[str], *, refresh_fails: bool = False
) -> tuple[ClientPoolAddress, list[int]]:
    """A ClientPool stand-in: leases a real pool's client with ``keys[n]`` after ``n``
    refreshes (each answered ``changed``), or fails every Refresh. Returns its address and
    the generations refreshed."""
    real: ClientPoolAddress = await nursery.start(ClientPool(config).run)
    address, inbox = trio.open_memory_channel[ClientPoolMsg](0)
    refreshed: list[int] = []

    async def serve() -> None:
        with real, inbox:
            async for msg in inbox:
                match msg:
                    case Acquire():
                        lease: Lease = await ask(real, lambda reply: Acquire(reply=reply))
                        key = keys[len(refreshed)]
                        answer(msg.reply, msgspec.structs.replace(
                            lease, credential=Credential(api_key=key), generation=len(refreshed) + 1
                        ))
                    case Refresh() if refresh_fails:
                        fail(msg.reply, "ClientPool")
                    case Refresh():
                        refreshed.append(msg.generation)
                        answer(msg.reply, RefreshResult(changed=True))
                    case ReportBroken():
                        pass

    nursery.start_soon(serve)
    return address, refreshed


def bootstrap_requests(emulator: Emulator) -> list[dict[str, str]]:
    return [r.headers for r in emulator.requests if r.path == "/api/claude_cli/bootstrap"]


async def test_learnt_options_and_client_data_are_kept_and_cached(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cache = tmp_path / "bootstrap.json"
    state = await settle(nursery, make_config(upstream), cache_path=str(cache))
    assert state == BootstrapState(
        client_data={"coral_reef_sonnet": "true"}, model_options=(LEARNT,), source="upstream", settled=True
    )
    assert msgspec.json.decode(cache.read_bytes())["additional_model_options"][0]["model"] == LEARNT.value
    assert cache.stat().st_mode & 0o777 == 0o600
    # The same answer again: the cache file is left alone (written only when it changed).
    inode = cache.stat().st_ino
    assert (await settle(nursery, make_config(upstream), cache_path=str(cache))).source == "upstream"
    assert cache.stat().st_ino == inode
    [headers, _] = bootstrap_requests(upstream.emulator)
    assert headers["x-api-key"] == TEST_KEY and headers["user-agent"].startswith("switchboard/")


async def test_an_oauth_token_is_preferred(nursery: trio.Nursery, upstream: Upstream, autojump_clock: trio.testing.MockClock) -> None:
    config = make_config(upstream, api_key=Secret("sk-ant-not-used"), auth_token=Secret(TEST_KEY))
    assert (await settle(nursery, config, cache_path=None)).source == "upstream"
    [headers] = bootstrap_requests(upstream.emulator)
    assert headers["authorization"] == f"Bearer {TEST_KEY}" and headers["anthropic-beta"] == "oauth-2025-04-20"
    assert "x-api-key" not in headers


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"disable_nonessential_traffic": True}, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"),
        ({"provider": "bedrock"}, "provider bedrock"),
        ({"api_key": None}, "no credential"),
    ],
)
async def test_skipped_without_a_request(
    nursery: trio.Nursery,
    upstream: Upstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, object],
    reason: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache = tmp_path / "bootstrap.json"
    cache.write_bytes(CACHED)
    with caplog.at_level(logging.INFO, logger="switchboard.bootstrap"):
        state = await settle(nursery, make_config(upstream, **changes), cache_path=str(cache))
    assert state.source == "cache" and state.model_options[0].value == "claude-cached"
    assert upstream.emulator.requests == []
    assert f"bootstrap fetch skipped: {reason}" in caplog.text


async def test_a_401_is_retried_once_with_refreshed_credentials(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(api_keys=frozenset({"key-new"}))
    upstream = OwnUpstream(emulator, await nursery.start(emulator.run))
    config = make_config(upstream, api_key=Secret("key-old"))
    to_pool, refreshed = await stand_in_pool(nursery, config, ["key-old", "key-new"])
    state = await settle(nursery, config, cache_path=None, to_pool=to_pool)
    assert state.source == "upstream" and refreshed == [1]
    assert [h["x-api-key"] for h in bootstrap_requests(emulator)] == ["key-old", "key-new"]


async def test_a_second_401_is_not_retried_again(nursery: trio.Nursery, upstream: Upstream, autojump_clock: trio.testing.MockClock) -> None:
    # A static key: the pool's refresh changes nothing and the retry uses the same key; a
    # third request would have found no fault left and succeeded.
    upstream.emulator.script_bootstrap("401", "401")
    state = await settle(nursery, make_config(upstream), cache_path=None)
    assert state == BootstrapState(settled=True)
    assert [h["x-api-key"] for h in bootstrap_requests(upstream.emulator)] == [TEST_KEY, TEST_KEY]


@pytest.mark.parametrize("fault", ["invalid_bootstrap", "500", "bad_stream", "drop:after=0"])
async def test_a_failed_or_invalid_answer_is_ignored_and_the_cache_stands_in(
    nursery: trio.Nursery,
    upstream: Upstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache = tmp_path / "bootstrap.json"
    cache.write_bytes(CACHED)
    upstream.emulator.script_bootstrap(fault)
    with caplog.at_level(logging.INFO, logger="switchboard.bootstrap"):
        state = await settle(nursery, make_config(upstream), cache_path=str(cache))
    assert state.source == "cache" and state.model_options == (ModelOption(value="claude-cached", label="Cached", description="from disk"),)
    assert cache.read_bytes() == CACHED
    assert "using the cached bootstrap answer" in caplog.text
    if fault == "invalid_bootstrap":
        assert "bootstrap answer ignored" in caplog.text and "name" in caplog.text


async def test_unreachable_upstream_without_a_cache_leaves_the_defaults(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there: connection refused
    config = Config(base_url=f"http://127.0.0.1:{port}", api_key=Secret(TEST_KEY))
    state = await settle(nursery, config, cache_path=str(tmp_path / "none.json"))
    assert state == BootstrapState(settled=True)
    assert not await trio.Path(tmp_path / "none.json").exists()


async def test_a_slow_endpoint_times_out_after_5_s_and_never_delays_readiness(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script_bootstrap("slow_first_byte:seconds=30")
    started = trio.current_time()
    server: Server = await nursery.start(
        functools.partial(run_server, msgspec.structs.replace(config, disable_nonessential_traffic=False))
    )
    async with connect(server) as client:
        ready = await client.receive()
    assert isinstance(ready, Ready) and trio.current_time() == started
    assert ready.models == list(DEFAULT_MODEL_OPTIONS)
    state = await server.gateway.bootstrap(settled=True)
    assert trio.current_time() - started == BOOTSTRAP_TIMEOUT == 5.0
    assert state == BootstrapState(settled=True)


async def test_learnt_options_join_ready_models(
    nursery: trio.Nursery, config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    server: Server = await nursery.start(
        functools.partial(run_server, msgspec.structs.replace(config, disable_nonessential_traffic=False))
    )
    assert (await server.gateway.bootstrap(settled=True)).client_data == {"coral_reef_sonnet": "true"}
    async with connect(server) as client:
        ready = await client.receive()
    assert isinstance(ready, Ready) and ready.models == [*DEFAULT_MODEL_OPTIONS, LEARNT]


async def test_a_failed_refresh_is_not_fatal(
    nursery: trio.Nursery, upstream: Upstream, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    upstream.emulator.script_bootstrap("401", "401")
    config = make_config(upstream)
    to_pool, _ = await stand_in_pool(nursery, config, [TEST_KEY], refresh_fails=True)
    state = await settle(nursery, config, cache_path=None, to_pool=to_pool)
    assert state == BootstrapState(settled=True)
    assert "the credential refresh failed" in caplog.text
    assert [h["x-api-key"] for h in bootstrap_requests(upstream.emulator)] == [TEST_KEY, TEST_KEY]


async def test_an_answer_over_the_size_limit_is_ignored(
    nursery: trio.Nursery,
    upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    monkeypatch.setattr(actors.bootstrap_fetcher, "MAX_BOOTSTRAP_BODY", 16)
    state = await settle(nursery, make_config(upstream), cache_path=None)
    assert state == BootstrapState(settled=True)
    assert len(bootstrap_requests(upstream.emulator)) == 1
    assert "bootstrap answer ignored: over 16 bytes" in caplog.text
