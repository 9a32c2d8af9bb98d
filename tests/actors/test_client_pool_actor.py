"""ClientPool on its own (actors/client_pool.py), through its messages: ``Acquire``,
``Refresh``, ``ReportBroken``. The credential source is a function of the test (no helper
process, no file: no thread), the upstream an httpx ``MockTransport`` (tests/README.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from actor_fakes import BASE_URL, Upstream, config, error_response

import actors.client_pool
from actors._util import ask
from actors.client_pool import ClientPool
from actors.config.settings import Config
from actors.messages.pool import (
    Acquire,
    ClientPoolAddress,
    Lease,
    Refresh,
    RefreshResult,
    ReportBroken,
)
from actors.upstream.credentials import Credential, CredentialError


class Source:
    """A credential source: each load returns the next key (``key-1``, ``key-2``...), once
    ``release`` is set; ``valid_for`` makes each credential expire that long after its load."""

    def __init__(self, *, valid_for: float | None = None) -> None:
        self.loads = 0
        self.release = trio.Event()
        self.release.set()
        self.failing = False
        self._valid_for = valid_for

    async def load(self, config: Config) -> Credential:
        self.loads += 1
        await self.release.wait()
        if self.failing:
            raise CredentialError("the helper exited with 1 and no key")
        until = None if self._valid_for is None else trio.current_time() + self._valid_for
        return Credential(api_key=f"key-{self.loads}", valid_until=until)


@pytest.fixture
def source(monkeypatch: pytest.MonkeyPatch) -> Source:
    source = Source()
    monkeypatch.setattr(actors.client_pool, "load_credential", source.load)
    return source


async def start_pool(nursery: trio.Nursery, upstream: Upstream | None = None) -> ClientPoolAddress:
    pool = ClientPool(config(), transport=(upstream or Upstream()).transport)
    address: ClientPoolAddress = await nursery.start(pool.run)
    return address


@pytest.fixture
async def pool(nursery: trio.Nursery, source: Source) -> AsyncIterator[ClientPoolAddress]:
    address = await start_pool(nursery)
    with address:
        yield address


async def acquire(pool: ClientPoolAddress) -> Lease:
    lease: Lease = await ask(pool, lambda reply: Acquire(reply=reply))
    return lease


async def refresh(pool: ClientPoolAddress, generation: int) -> RefreshResult:
    result: RefreshResult = await ask(pool, lambda reply: Refresh(generation=generation, reply=reply))
    return result


def api_key(lease: Lease) -> str | None:
    return dict(lease.headers).get("x-api-key")


async def test_a_lease_carries_the_loaded_credential_and_the_base_headers(
    pool: ClientPoolAddress, source: Source
) -> None:
    lease = await acquire(pool)
    headers = dict(lease.headers)
    assert (api_key(lease), headers["anthropic-version"], lease.base_url) == ("key-1", "2023-06-01", BASE_URL)
    assert lease.generation >= 1
    # Leases reuse the credential loaded at start: no load per request.
    await acquire(pool)
    assert source.loads == 1


async def test_concurrent_refreshes_of_one_failed_generation_reload_once(
    pool: ClientPoolAddress, source: Source
) -> None:
    failed = await acquire(pool)
    source.release = trio.Event()
    results: list[RefreshResult] = []

    async def refresher() -> None:
        results.append(await refresh(pool, failed.generation))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(refresher)
        await trio.testing.wait_all_tasks_blocked()
        # Every request that failed with that generation waits on the one load under way.
        assert (source.loads, results) == (2, [])
        source.release.set()
    assert results == [RefreshResult(changed=True)] * 5
    fresh = await acquire(pool)
    assert (api_key(fresh), fresh.generation > failed.generation) == ("key-2", True)
    # A late report of the replaced generation costs no load.
    assert await refresh(pool, failed.generation) == RefreshResult(changed=True)
    assert source.loads == 2


async def test_a_refresh_that_loads_the_same_credential_reports_no_change(
    pool: ClientPoolAddress, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = await acquire(pool)

    async def same(config: Config) -> Credential:
        return Credential(api_key="key-1")

    monkeypatch.setattr(actors.client_pool, "load_credential", same)
    assert await refresh(pool, lease.generation) == RefreshResult(changed=False)
    assert (await acquire(pool)).generation == lease.generation


async def test_a_failed_credential_source_leaves_requests_without_a_credential(
    pool: ClientPoolAddress, source: Source
) -> None:
    lease = await acquire(pool)
    source.failing = True
    assert await refresh(pool, lease.generation) == RefreshResult(changed=True)
    bare = await acquire(pool)
    assert api_key(bare) is None and "authorization" not in dict(bare.headers)


async def test_an_expired_credential_is_reloaded_before_the_lease(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    source = Source(valid_for=60.0)
    monkeypatch.setattr(actors.client_pool, "load_credential", source.load)
    with await start_pool(nursery) as pool:
        assert api_key(await acquire(pool)) == "key-1"
        await trio.sleep(59)
        assert (api_key(await acquire(pool)), source.loads) == ("key-1", 1)
        await trio.sleep(2)
        assert (api_key(await acquire(pool)), source.loads) == ("key-2", 2)


async def test_a_reset_connection_turns_keep_alive_off_for_the_leases_after_it(
    pool: ClientPoolAddress, source: Source
) -> None:
    before = [await acquire(pool) for _ in range(actors.client_pool.UPSTREAM_SHARDS)]
    assert all(lease.client.keep_alive for lease in before)
    await pool.send(ReportBroken())
    after = [await acquire(pool) for _ in range(actors.client_pool.UPSTREAM_SHARDS)]
    assert not any(lease.client.keep_alive for lease in after)
    old_clients = {id(lease.client) for lease in before}
    assert old_clients.isdisjoint(id(lease.client) for lease in after)
    # The credential is the same: a reset is no reason to reload it.
    assert {api_key(lease) for lease in after} == {"key-1"} and source.loads == 1
    # A second report changes nothing more: the clients stay.
    await pool.send(ReportBroken())
    again = {id((await acquire(pool)).client) for _ in range(actors.client_pool.UPSTREAM_SHARDS)}
    assert again == {id(lease.client) for lease in after}


async def test_a_lease_from_before_the_reset_still_sends(nursery: trio.Nursery, source: Source) -> None:
    upstream = Upstream(error_response(404, "not_found_error"), error_response(404, "not_found_error"))
    with await start_pool(nursery, upstream) as pool:
        old = await acquire(pool)
        await pool.send(ReportBroken())
        new = await acquire(pool)
        for lease in (old, new):
            response = await lease.client.request("POST", f"{lease.base_url}/v1/messages", headers=dict(lease.headers))
            assert response.status_code == 404
    assert [request.headers["x-api-key"] for request in upstream.requests] == ["key-1", "key-1"]


async def test_the_pool_serves_until_every_address_is_closed(nursery: trio.Nursery, source: Source) -> None:
    ended = trio.Event()

    async def run_pool(task_status: trio.TaskStatus[ClientPoolAddress]) -> None:
        await ClientPool(config(), transport=Upstream().transport).run(task_status=task_status)
        ended.set()

    address: ClientPoolAddress = await nursery.start(run_pool)
    clone = address.clone()
    address.close()
    assert api_key(await acquire(clone)) == "key-1"
    clone.close()
    await ended.wait()
