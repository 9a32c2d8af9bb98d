"""ModelsFetcher: the upstream's GET /v1/models merged into the catalog, bounded, never fatal.

A model the catalog does not know becomes usable with the upstream's limits (or none: never
clamped); every failure leaves the built-in catalog in force.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing

from actors.client_pool import ClientPool
from actors.config.settings import Config, Secret
from actors.server import open_gateway
from actors.upstream.models_fetcher import MAX_MODELS_BODY, ModelsFetcher
from emulator import Emulator
from protocol.frames import Done
from protocol.models.aliases import ModelSettings
from protocol.models.catalog import BUILTIN, Catalog
from protocol.models.listing import find_model, model_entries
from protocol.request_builder import BuildSettings, SessionLatch, build_request
from protocol.retry import Context, Failure, GiveUp, RetryPolicy, RetryState, decide

KEY = "sk-ant-test-key-0123456789"
BASE = "http://upstream.test"

NEW_OPUS = {
    "type": "model",
    "id": "claude-opus-9",
    "display_name": "Claude Opus 9",
    "created_at": "2027-01-05T00:00:00Z",
    "max_input_tokens": 2_000_000,
    "max_tokens": 256_000,
    "line": "opus",
    "capabilities": {"effort": {"supported": True, "xhigh": {"supported": True}}},
}
NO_LIMITS: dict[str, object] = {"type": "model", "id": "claude-nimbus-1", "display_name": "Nimbus", "created_at": "2027-02-01T00:00:00Z"}
KNOWN = {"type": "model", "id": "claude-opus-4-8", "display_name": "Claude Opus 4.8", "created_at": "2026-05-28T00:00:00Z",
         "max_input_tokens": 1_000_000, "max_tokens": 128_000}

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def page(*models: dict[str, Any], has_more: bool = False) -> httpx.Response:
    body = {"data": list(models), "has_more": has_more, "first_id": None, "last_id": models[-1]["id"] if models else None}
    return httpx.Response(200, json=body)


async def fetch(nursery: trio.Nursery, handler: Handler, **changes: Any) -> tuple[Catalog, ModelsFetcher, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await handler(request)

    config = msgspec.structs.replace(Config(base_url=BASE, api_key=Secret(KEY), ledger_path=":memory:"), **changes)
    to_pool = await nursery.start(ClientPool(config, transport=httpx.MockTransport(record)).run)
    fetcher = ModelsFetcher(config, to_pool)
    await nursery.start(fetcher.run)
    await fetcher.settled.wait()
    return fetcher.catalog, fetcher, seen


def max_tokens_sent(catalog: Catalog, model: str, asked: int) -> int:
    request = {"model": model, "max_tokens": asked, "messages": [{"role": "user", "content": "x"}]}
    built, _ = build_request(request, settings=BuildSettings(models=ModelSettings(catalog=catalog)), latch=SessionLatch())
    value = built.body["max_tokens"]
    assert isinstance(value, int)
    return value


async def test_a_model_unknown_to_the_catalog_becomes_usable(nursery: trio.Nursery) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return page(NEW_OPUS, NO_LIMITS, KNOWN)

    catalog, fetcher, seen = await fetch(nursery, handler)
    assert [str(r.url) for r in seen] == [f"{BASE}/v1/models?limit=1000"]
    assert seen[0].headers["x-api-key"] == KEY and seen[0].headers["anthropic-version"]
    assert fetcher.learnt == ("claude-opus-9", "claude-nimbus-1")
    assert BUILTIN.model("claude-opus-9") is None
    spec = catalog.model("claude-opus-9")
    assert spec is not None
    assert (spec.family, spec.released, spec.context_window, spec.max_output) == ("opus", "2027-01-05", 2_000_000, 256_000)
    assert spec.has("effort") and spec.has("xhigh")
    # Usable: within its limit nothing is clamped; a model without a limit is never clamped.
    assert max_tokens_sent(catalog, "claude-opus-9", 200_000) == 200_000
    assert max_tokens_sent(catalog, "claude-opus-9", 300_000) == 256_000
    assert max_tokens_sent(catalog, "claude-nimbus-1", 900_000) == 900_000
    # Its line puts it in the repeated-overload family.
    overloaded = Failure(kind="status", error_type="overloaded_error", message="Overloaded", status=529)
    third = RetryState(attempt=3, loop_attempt=3, model="claude-opus-9", consecutive_529=2)
    assert isinstance(decide(RetryPolicy(catalog=catalog), third, overloaded, Context(now=0.0, rand=0.0)), GiveUp)
    # It is listed, and the catalog's own models are untouched.
    assert [m.first_party for m in catalog.listing()][:2] == ["claude-nimbus-1", "claude-opus-9"]
    assert catalog.model("claude-opus-4-8") == BUILTIN.model("claude-opus-4-8")


async def test_pages_are_followed_with_after_id(nursery: trio.Nursery) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if "after_id" in request.url.params:
            assert request.url.params["after_id"] == "claude-opus-9"
            return page(NO_LIMITS)
        return page(NEW_OPUS, has_more=True)

    catalog, fetcher, seen = await fetch(nursery, handler)
    assert len(seen) == 2 and fetcher.learnt == ("claude-opus-9", "claude-nimbus-1")
    assert catalog.model("claude-nimbus-1") is not None


async def slow(request: httpx.Request) -> httpx.Response:
    await trio.sleep(3600)
    return page(NEW_OPUS)


async def status_500(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, json={"type": "error", "error": {"type": "api_error", "message": "boom"}})


async def not_a_list(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"data": "nope"})


async def too_big(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"[" + b" " * MAX_MODELS_BODY + b"]")


async def broken(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


@pytest.mark.parametrize("handler", [slow, status_500, not_a_list, too_big, broken])
async def test_any_failure_leaves_the_built_in_catalog(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, handler: Handler
) -> None:
    catalog, fetcher, _ = await fetch(nursery, handler)
    assert catalog is BUILTIN and fetcher.learnt == ()


@pytest.mark.parametrize("changes", [{"provider": "bedrock"}, {"disable_nonessential_traffic": True}])
async def test_skipped_off_the_first_party_and_without_nonessential_traffic(
    nursery: trio.Nursery, changes: dict[str, Any]
) -> None:
    catalog, _, seen = await fetch(nursery, functools.partial(status_500), **changes)
    assert catalog is BUILTIN and seen == []


async def test_through_the_gateway_a_new_model_is_listed_and_sent_unclamped(nursery: trio.Nursery) -> None:
    emulator = Emulator(api_keys=frozenset({KEY}))
    emulator.models = [NEW_OPUS, NO_LIMITS, *emulator.models]
    url = await nursery.start(emulator.run)
    config = Config(base_url=url, api_key=Secret(KEY), ledger_path=":memory:", build=BuildSettings(disable_prompt_caching=True))
    async with open_gateway(config) as gateway:
        catalog = await gateway.settled_catalog()
        assert catalog.model("claude-opus-9") is not None
        listed = find_model(model_entries(gateway.catalog, gateway.models), "claude-opus-9")
        assert listed is not None and listed["max_tokens"] == 256_000
        request = {"model": "claude-nimbus-1", "max_tokens": 500_000, "messages": [{"role": "user", "content": "Hi"}]}
        async with gateway.query(request) as frames:
            last = [frame async for frame in frames][-1]
        summary = await gateway.cost("default")
        # The request builder reads the merged catalog: the new Opus's own limit applies.
        over = {"model": "claude-opus-9", "max_tokens": 300_000, "messages": [{"role": "user", "content": "Hi"}]}
        async with gateway.query(over, session_id="other") as frames:
            assert isinstance([frame async for frame in frames][-1], Done)
    assert isinstance(last, Done) and last.model == "claude-nimbus-1"
    sent = [r for r in emulator.requests if r.path.startswith("/v1/messages")]
    assert [r.json["max_tokens"] for r in sent] == [500_000, 256_000]  # type: ignore[index]
    assert last.cost_usd > 0  # priced at the unknown-model price, and flagged
    assert summary.unknown_model_cost
