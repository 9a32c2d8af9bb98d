"""Credential recovery (docs/reference/reference-client.md 1.9): key helper, OAuth token file, keep-alive."""

from __future__ import annotations

import functools
from pathlib import Path

import msgspec
import trio
from harness import chat, connect

from actors._util import ask
from actors.client_pool import UPSTREAM_SHARDS, ClientPool
from actors.config.settings import Config
from actors.messages.pool import Acquire, ClientPoolAddress, Lease, ReportBroken
from actors.server import Server, run_server
from emulator import Emulator
from protocol.frames import Done, ErrorFrame, RetryFrame
from protocol.models.options import DEFAULT_MODEL_OPTIONS


async def serve_with(nursery: trio.Nursery, upstream_url: str, **changes: object) -> Server:
    # No bootstrap fetch: these tests count the upstream requests and the credential loads.
    config = Config(base_url=upstream_url, retry_seed=1234, disable_nonessential_traffic=True, **changes)  # type: ignore[arg-type]
    server: Server = await nursery.start(functools.partial(run_server, config))
    return server


async def query(server: Server, session: str = "s", text: str = "hi") -> list[object]:
    async with connect(server, session=session) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat(text))
        return list(await client.until_terminal("q"))


def helper(tmp_path: Path) -> tuple[str, Path, Path]:
    """A key helper that prints the key file and counts its runs."""
    key, runs = tmp_path / "key", tmp_path / "runs"
    return f"echo run >> {runs}; cat {key}", key, runs


async def test_key_helper_is_run_again_after_a_401_and_the_retry_succeeds(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(api_keys=frozenset({"key-2"}))
    url = await nursery.start(emulator.run)
    command, key, runs = helper(tmp_path)
    key.write_text("key-1\n")
    server = await serve_with(nursery, url, api_key_helper=command)
    key.write_text("key-2\n")  # rotated after the gateway loaded key-1
    frames = await query(server)
    assert isinstance(frames[0], RetryFrame) and frames[0].error.status == 401
    assert isinstance(frames[-1], Done)
    assert [r.headers["x-api-key"] for r in emulator.requests] == ["key-1", "key-2"]
    assert runs.read_text().count("run") == 2


async def test_concurrent_401s_share_one_refresh(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(api_keys=frozenset({"key-2"}))
    url = await nursery.start(emulator.run)
    command, key, runs = helper(tmp_path)
    key.write_text("key-1")
    server = await serve_with(nursery, url, api_key_helper=command)
    key.write_text("key-2")
    results: list[list[object]] = []

    async def one(n: int) -> None:
        results.append(await query(server, session=f"s{n}", text=f"n{n}"))

    async with trio.open_nursery() as inner:
        for n in range(5):
            inner.start_soon(one, n)
    assert all(isinstance(frames[-1], Done) for frames in results)
    assert runs.read_text().count("run") == 2  # at start, and once for all five 401s


async def test_a_helper_that_gives_the_same_key_fails_clearly_without_retrying(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(api_keys=frozenset({"never"}))
    url = await nursery.start(emulator.run)
    command, key, _ = helper(tmp_path)
    key.write_text("key-1")
    server = await serve_with(nursery, url, api_key_helper=command)
    frames = await query(server)
    assert len(frames) == 1 and isinstance(frames[0], ErrorFrame) and frames[0].error.status == 401
    assert len(emulator.requests) == 1


async def test_key_helper_output_is_cached_for_its_ttl(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator()
    url = await nursery.start(emulator.run)
    command, key, runs = helper(tmp_path)
    key.write_text("key-1")
    server = await serve_with(nursery, url, api_key_helper=command, api_key_helper_ttl=300.0)
    await query(server)
    await query(server, session="t")
    assert runs.read_text().count("run") == 1
    key.write_text("key-2")
    await trio.sleep(301)
    await query(server, session="u")
    assert runs.read_text().count("run") == 2
    assert emulator.requests[-1].headers["x-api-key"] == "key-2"


async def test_oauth_token_file_is_re_read_after_a_401(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(api_keys=frozenset({"tok-2"}))
    url = await nursery.start(emulator.run)
    token_file = tmp_path / "credentials.json"
    token_file.write_text(msgspec.json.encode({"claudeAiOauth": {"accessToken": "tok-1"}}).decode())
    server = await serve_with(nursery, url, oauth_token_file=str(token_file))
    token_file.write_text(msgspec.json.encode({"accessToken": "tok-2"}).decode())
    frames = await query(server)
    assert isinstance(frames[-1], Done)
    assert [r.headers["authorization"] for r in emulator.requests] == ["Bearer tok-1", "Bearer tok-2"]
    assert "oauth-2025-04-20" in emulator.requests[1].headers["anthropic-beta"]


async def leased_clients(address: ClientPoolAddress) -> set[int]:
    """The upstream clients a round of leases spreads over (by identity)."""
    leases: list[Lease] = [await ask(address, lambda reply: Acquire(reply=reply)) for _ in range(UPSTREAM_SHARDS)]
    return {id(lease.client) for lease in leases}


async def connections_for_three_requests(address: ClientPoolAddress, url: str) -> int:
    """How many connections one leased upstream client opens for three requests in a row."""
    lease: Lease = await ask(address, lambda reply: Acquire(reply=reply))
    ports = set()
    for _ in range(3):
        async with lease.client.stream(
            "POST", url + "/v1/messages/count_tokens", content=b"{}", headers={"x-api-key": "k"}
        ) as response:
            ports.add(response.extensions["network_stream"].get_extra_info("client_addr"))
            await response.aread()
    return len(ports)


async def test_a_reset_connection_turns_keep_alive_off(nursery: trio.Nursery) -> None:
    emulator = Emulator()
    url = await nursery.start(emulator.run)
    pool = ClientPool(Config(base_url=url))
    address = await nursery.start(pool.run)
    first = await leased_clients(address)
    assert len(first) == UPSTREAM_SHARDS  # leases are spread over the upstream clients
    assert await connections_for_three_requests(address, url) == 1  # kept alive
    await address.send(ReportBroken())
    second = await leased_clients(address)
    assert not first & second  # fresh clients...
    assert await connections_for_three_requests(address, url) == 3  # ...without keep-alive
    await address.send(ReportBroken())
    assert await leased_clients(address) == second  # only once: keep-alive stays off
    assert await connections_for_three_requests(address, url) == 3
    address.close()


async def test_a_dropped_connection_is_reported_and_retried(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("drop:after=0")
    frames = await query(server)
    retry = frames[0]
    assert isinstance(retry, RetryFrame) and retry.error.type == "connection_error"
    assert isinstance(frames[-1], Done)


async def test_bootstrap_uses_the_pools_credential_whatever_its_source(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(api_keys=frozenset({"helper-key"}))
    url = await nursery.start(emulator.run)
    command, key, _ = helper(tmp_path)
    key.write_text("helper-key")
    config = Config(base_url=url, api_key_helper=command, ledger_path=":memory:")
    server: Server = await nursery.start(functools.partial(run_server, config))
    # The startup fetches (bootstrap, GET /v1/models) lease from the pool in either order.
    first_two = [await emulator.wait_for_request(n) for n in (0, 1)]
    [record] = [r for r in first_two if r.path == "/api/claude_cli/bootstrap"]
    assert record.headers["x-api-key"] == "helper-key" and record.status == 200
    await record.finished.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert len(server.gateway.models) == len(DEFAULT_MODEL_OPTIONS) + 1  # one learnt option
