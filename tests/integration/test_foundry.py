"""Microsoft Foundry end to end (issue 6): an API key sent twice as Foundry wants it, or an
Entra ID token that azure-identity gets from a managed-identity endpoint on loopback."""

from __future__ import annotations

import functools

import msgspec
import pytest
import trio
from harness import chat, connect

from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from emulator import Emulator
from protocol.frames import Done, EventFrame, RetryFrame, TokenCount
from protocol.pricing import cost_of, usd
from protocol.usage import Usage, WireUsage, merge_usage

MODEL = "claude-sonnet-4-5"
KEY = "foundry-key-0123"
IDENTITY_SECRET = "identity-header-secret"
_AZURE_VARIABLES = (
    "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE", "AZURE_USERNAME", "AZURE_PASSWORD", "MSI_ENDPOINT", "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_TOKEN_CREDENTIALS", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
)


async def foundry_gateway(nursery: trio.Nursery, emulator: Emulator, **changes: object) -> Server:
    url = await nursery.start(emulator.run)
    config = Config(
        provider="foundry",
        foundry_base_url=f"{url}/anthropic",
        retry_seed=1234,
        ledger_path=":memory:",
        disable_nonessential_traffic=True,
        **changes,  # type: ignore[arg-type]
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    return server


async def query(server: Server, request: dict[str, object], session: str = "s1") -> list[object]:
    async with connect(server, session=session) as client:
        await client.receive()
        await client.send(type="query", id="q", request=request)
        return list(await client.until_terminal("q"))


async def test_a_query_streams_through_foundry_with_its_api_key(nursery: trio.Nursery) -> None:
    emulator = Emulator(foundry_keys=frozenset({KEY}))
    server = await foundry_gateway(nursery, emulator, foundry_api_key=Secret(KEY))
    frames = await query(server, chat("Hello there", model=MODEL, max_tokens=64))
    done = frames[-1]
    assert isinstance(done, Done), frames
    assert done.message["content"] == [{"type": "text", "text": "Echo: Hello there"}]
    assert [msgspec.json.decode(f.event)["type"] for f in frames if isinstance(f, EventFrame)][-1] == "message_stop"
    (sent,) = emulator.requests
    assert sent.path == "/anthropic/v1/messages"
    assert sent.headers["x-api-key"] == KEY and sent.headers["api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01" and "authorization" not in sent.headers
    assert isinstance(sent.json, dict) and sent.json["model"] == MODEL and sent.json["stream"] is True
    usage = merge_usage(Usage(), msgspec.convert(done.usage, WireUsage))
    expected = cost_of(usage, "claude-sonnet-4-5-20250929", on="2026-11-26")
    assert done.cost_usd == pytest.approx(usd(expected.total_pico), abs=1e-12) and done.cost_usd > 0


async def test_an_overload_is_retried(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    emulator = Emulator(foundry_keys=frozenset({KEY}))
    server = await foundry_gateway(nursery, emulator, foundry_api_key=Secret(KEY))
    emulator.script("529")
    frames = await query(server, chat("Hello", model=MODEL))
    retry = frames[0]
    assert isinstance(retry, RetryFrame) and retry.error.status == 529
    assert isinstance(frames[-1], Done)
    assert [r.status for r in emulator.requests] == [529, 200]
    assert emulator.requests[0].body == emulator.requests[1].body


async def test_count_tokens_through_foundry(nursery: trio.Nursery) -> None:
    emulator = Emulator(foundry_keys=frozenset({KEY}))
    server = await foundry_gateway(nursery, emulator, foundry_api_key=Secret(KEY))
    request = {"model": MODEL, "messages": [{"role": "user", "content": "How many tokens is this?"}]}
    async with connect(server) as client:
        await client.receive()
        await client.send(type="count_tokens", id="c", request=request)
        frame = await client.receive()
    assert isinstance(frame, TokenCount) and frame.input_tokens > 0
    (sent,) = emulator.requests
    assert sent.path == "/anthropic/v1/messages/count_tokens" and sent.headers["api-key"] == KEY


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_SECRET)
    return monkeypatch


async def test_an_entra_token_is_replaced_once_after_a_401(
    nursery: trio.Nursery, azure_env: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(foundry_keys=frozenset(), identity_secret=IDENTITY_SECRET)
    url = await nursery.start(emulator.run)
    azure_env.setenv("IDENTITY_ENDPOINT", f"{url}/msi/token")
    server = await foundry_gateway(nursery, emulator)
    emulator.revoke_entra_tokens()
    frames = await query(server, chat("Hello", model=MODEL))
    retry = frames[0]
    assert isinstance(retry, RetryFrame) and retry.error.status == 401
    assert isinstance(frames[-1], Done)
    paths = [(r.path.split("?")[0], r.status) for r in emulator.requests]
    assert paths == [
        ("/msi/token", 200), ("/anthropic/v1/messages", 401), ("/msi/token", 200), ("/anthropic/v1/messages", 200),
    ]
    token_request = emulator.requests[0]
    assert token_request.path == "/msi/token?api-version=2019-08-01&resource=https://cognitiveservices.azure.com"
    assert token_request.headers["x-identity-header"] == IDENTITY_SECRET
    assert [r.headers.get("authorization") for r in emulator.requests if r.path.startswith("/anthropic")] == [
        "Bearer eyJ0eXAiOiJKV1QifQ.emulator-1",
        "Bearer eyJ0eXAiOiJKV1QifQ.emulator-2",
    ]
