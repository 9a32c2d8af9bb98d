"""Vertex AI end to end (issue 6): google-auth fetches access tokens for a service account
from the emulator's token endpoint on loopback; the emulator checks them on every request."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import msgspec
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import chat, connect

from actors.config.settings import Config
from actors.server import Server, run_server
from emulator import Emulator
from protocol.frames import Done, EventFrame, RetryFrame, TokenCount
from protocol.pricing import cost_of, usd
from protocol.usage import Usage, WireUsage, merge_usage

MODEL = "claude-sonnet-4-5@20250929"
PROJECT = "switchboard-test"
SERVICE_ACCOUNT = "gateway@switchboard-test.iam.gserviceaccount.com"
_PRIVATE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


@pytest.fixture
async def emulator(nursery: trio.Nursery) -> Emulator:
    emulator = Emulator(vertex_auth=True, google_token_lifetime=3600)
    await nursery.start(emulator.run)
    return emulator


@pytest.fixture
def google_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emulator: Emulator) -> Path:
    """Application default credentials = a service account file whose token endpoint is the
    emulator; no gcloud config, no metadata server."""
    key_file = tmp_path / "service-account.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "0123456789abcdef",
                "private_key": _PRIVATE_KEY,
                "client_email": SERVICE_ACCOUNT,
                "client_id": "1234567890",
                "token_uri": f"{emulator.url}/token",
            }
        )
    )
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    return key_file


async def vertex_gateway(nursery: trio.Nursery, emulator: Emulator, **changes: object) -> Server:
    config = Config(
        provider="vertex",
        vertex_base_url=f"{emulator.url}/v1",
        vertex_region="us-east5",
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


def messages(emulator: Emulator) -> list[object]:
    return [r for r in emulator.requests if r.path != "/token"]


async def test_a_query_streams_through_vertex_with_a_fresh_token(
    nursery: trio.Nursery, emulator: Emulator, google_env: Path
) -> None:
    server = await vertex_gateway(nursery, emulator)
    frames = await query(server, chat("Hello there", model=MODEL, max_tokens=64))
    done = frames[-1]
    assert isinstance(done, Done), frames
    assert done.message["content"] == [{"type": "text", "text": "Echo: Hello there"}]
    types = [msgspec.json.decode(f.event)["type"] for f in frames if isinstance(f, EventFrame)]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    token_request, sent = emulator.requests
    assert token_request.path == "/token" and emulator.token_issuers == [SERVICE_ACCOUNT]
    assert sent.path == (
        f"/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/{MODEL}:streamRawPredict"
    )
    assert sent.headers["authorization"] == "Bearer ya29.emulator-1"
    assert "anthropic-version" not in sent.headers and "x-api-key" not in sent.headers
    body = sent.json
    assert isinstance(body, dict)
    assert "model" not in body and body["stream"] is True
    assert body["anthropic_version"] == "vertex-2023-10-16" and body["max_tokens"] == 64
    assert "anthropic_beta" not in body  # betas stay in the header on Vertex
    usage = merge_usage(Usage(), msgspec.convert(done.usage, WireUsage))
    expected = cost_of(usage, "claude-sonnet-4-5-20250929", on="2026-11-26")
    assert done.cost_usd == pytest.approx(usd(expected.total_pico), abs=1e-12) and done.cost_usd > 0


async def test_a_quota_429_in_google_shape_is_retried(
    nursery: trio.Nursery, emulator: Emulator, google_env: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = await vertex_gateway(nursery, emulator)
    emulator.script("429")
    frames = await query(server, chat("Hello", model=MODEL))
    retry = frames[0]
    assert isinstance(retry, RetryFrame), frames
    assert retry.error.status == 429 and retry.error.type == "rate_limit_error"
    assert retry.error.message.startswith("Quota exceeded for aiplatform.googleapis.com")
    assert isinstance(frames[-1], Done)
    first, second = messages(emulator)
    assert first.status == 429 and second.status == 200  # type: ignore[attr-defined]


async def test_a_revoked_token_is_replaced_once_after_a_401(
    nursery: trio.Nursery, emulator: Emulator, google_env: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = await vertex_gateway(nursery, emulator)
    emulator.revoke_google_tokens()
    results: list[list[object]] = []

    async def one(n: int) -> None:
        results.append(await query(server, chat(f"n{n}", model=MODEL), session=f"s{n}"))

    async with trio.open_nursery() as inner:
        for n in range(3):
            inner.start_soon(one, n)
    for frames in results:
        retry = frames[0]
        assert isinstance(retry, RetryFrame) and retry.error.status == 401
        assert retry.error.message.startswith("Request had invalid authentication credentials.")
        assert isinstance(frames[-1], Done)
    assert emulator.token_issuers == [SERVICE_ACCOUNT] * 2  # at start, and once for all three
    used = sorted((r.status, r.headers["authorization"]) for r in messages(emulator))  # type: ignore[attr-defined]
    assert used == [(200, "Bearer ya29.emulator-2")] * 3 + [(401, "Bearer ya29.emulator-1")] * 3


async def test_the_token_is_refreshed_ahead_of_expiry_while_the_old_one_is_served(
    nursery: trio.Nursery, emulator: Emulator, google_env: Path, mock_clock: trio.testing.MockClock
) -> None:
    """google-auth fetches each token on a worker thread, from the emulator in this trio run.
    An autojump clock leapt ahead whenever every task waited on that thread (the gateway's
    periodic timers re-arm, so it leapt again and again under load), so the token's virtual
    age at the gateway and at the emulator parted and an old token could be sent expired.
    Here virtual time moves only when the test says (``mock_clock.jump``)."""
    emulator.google_token_lifetime = 600
    server = await vertex_gateway(nursery, emulator)
    mock_clock.jump(400)  # past the early-refresh point (600 - 300 s), the token still valid
    assert isinstance((await query(server, chat("one", model=MODEL)))[-1], Done)
    # That request started the early refresh in the background: the token endpoint is asked
    # (before or after the message request reaches the emulator: a thread races the relay).
    await emulator.wait_for_request(2)
    assert sorted(r.path == "/token" for r in emulator.requests) == [False, True, True]
    # Past the old token's expiry every request has the new one (waiting for the refresh if
    # it is still under way).
    mock_clock.jump(250)
    assert isinstance((await query(server, chat("two", model=MODEL), session="s2"))[-1], Done)
    assert len(emulator.token_issuers) == 2
    first, second = messages(emulator)
    assert first.headers["authorization"] == "Bearer ya29.emulator-1"  # type: ignore[attr-defined]
    assert second.headers["authorization"] == "Bearer ya29.emulator-2"  # type: ignore[attr-defined]
    assert all(r.status == 200 for r in emulator.requests)


async def test_count_tokens_through_vertex(nursery: trio.Nursery, emulator: Emulator, google_env: Path) -> None:
    server = await vertex_gateway(nursery, emulator, vertex_region_overrides=(("claude-sonnet-4-5", "europe-west1"),))
    request = {"model": MODEL, "messages": [{"role": "user", "content": "How many tokens is this?"}]}
    async with connect(server) as client:
        await client.receive()
        await client.send(type="count_tokens", id="c", request=request)
        frame = await client.receive()
    assert isinstance(frame, TokenCount) and frame.input_tokens > 0
    (sent,) = messages(emulator)
    assert sent.path == (  # type: ignore[attr-defined]
        f"/v1/projects/{PROJECT}/locations/europe-west1/publishers/anthropic/models/count-tokens:rawPredict"
    )
    assert sent.json["model"] == MODEL  # type: ignore[attr-defined]
    assert sent.json["anthropic_version"] == "vertex-2023-10-16"  # type: ignore[attr-defined]
