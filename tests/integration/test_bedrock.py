"""Bedrock end to end (issue 6): the gateway signs with botocore's standard chain, the
emulator verifies SigV4 and answers in event-stream framing, over real loopback sockets."""

from __future__ import annotations

import functools

import httpx
import msgspec
import pytest
import trio
from harness import chat, connect

from actors.config.settings import Config
from actors.server import Server, run_server
from emulator import Emulator
from protocol.frames import Done, ErrorFrame, EventFrame, RetryFrame, TokenCount
from protocol.pricing import cost_of, usd
from protocol.providers.bedrock import BODY_ONLY_BETAS
from protocol.usage import Usage, WireUsage, merge_usage

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
NEW_KEY_ID, NEW_SECRET = "AKIDEXAMPLE2", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY2"
CREDENTIAL_SCOPE = f"Credential={KEY_ID}/"
_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> pytest.MonkeyPatch:
    """botocore's standard chain sees only the test keys: no files, no metadata endpoints."""
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    return monkeypatch


async def bedrock_gateway(nursery: trio.Nursery, emulator: Emulator, **changes: object) -> Server:
    url = await nursery.start(emulator.run)
    config = Config(
        provider="bedrock",
        bedrock_base_url=url,
        bedrock_region="us-east-1",
        retry_seed=1234,
        ledger_path=":memory:",
        disable_nonessential_traffic=True,
        **changes,  # type: ignore[arg-type]
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    return server


async def query(server: Server, request: dict[str, object]) -> list[object]:
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=request)
        return list(await client.until_terminal("q"))


def signed_by(headers: dict[str, str], key_id: str) -> bool:
    return headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={key_id}/"
    ) and headers["authorization"].split("/")[2:4] == ["us-east-1", "bedrock"]


async def test_a_query_streams_through_bedrock_with_a_verified_signature(
    nursery: trio.Nursery, aws_env: pytest.MonkeyPatch
) -> None:
    emulator = Emulator(aws_keys={KEY_ID: SECRET})
    server = await bedrock_gateway(nursery, emulator)
    request = chat("Hello there", model=MODEL, max_tokens=64)
    frames = await query(server, request)
    done = frames[-1]
    assert isinstance(done, Done), frames
    assert done.message["content"] == [{"type": "text", "text": "Echo: Hello there"}]
    types = [msgspec.json.decode(f.event)["type"] for f in frames if isinstance(f, EventFrame)]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    (sent,) = emulator.requests
    assert sent.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream"
    assert sent.status == 200 and sent.completed
    assert signed_by(sent.headers, KEY_ID)
    assert "anthropic-version" not in sent.headers and "x-api-key" not in sent.headers
    assert sent.headers["x-amz-date"].endswith("Z")
    assert sent.headers["x-amzn-bedrock-accept"] == "application/json"
    # The InvokeModel body: model and stream moved out, the Bedrock version in; every beta
    # travels in the body, the body-only ones not in the header (the request builder of
    # issue 5 chooses which betas and cache breakpoints, so they are compared, not listed).
    body = sent.json
    assert isinstance(body, dict)
    assert "model" not in body and "stream" not in body
    assert body["anthropic_version"] == "bedrock-2023-05-31" and body["max_tokens"] == 64
    assert [message["role"] for message in body["messages"]] == ["user"]
    header_betas = [b for b in sent.headers.get("anthropic-beta", "").split(",") if b]
    assert set(header_betas) <= set(body.get("anthropic_beta", []))
    assert not set(header_betas) & BODY_ONLY_BETAS
    # Costs are keyed by the canonical model (protocol/pricing.canonical_model).
    usage = merge_usage(Usage(), msgspec.convert(done.usage, WireUsage))
    expected = cost_of(usage, "claude-sonnet-4-5-20250929", on="2026-11-26")
    assert done.cost_usd == pytest.approx(usd(expected.total_pico), abs=1e-12) and done.cost_usd > 0


async def test_a_throttling_exception_frame_is_a_429_and_is_retried(
    nursery: trio.Nursery, aws_env: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(aws_keys={KEY_ID: SECRET})
    server = await bedrock_gateway(nursery, emulator)
    emulator.script("error_midstream:type=rate_limit_error,after=0")
    frames = await query(server, chat("Hello", model=MODEL))
    retry = frames[0]
    assert isinstance(retry, RetryFrame), frames
    assert retry.error.status == 429 and retry.error.type == "rate_limit_error"
    assert retry.error.message.startswith("throttlingException: ")
    assert isinstance(frames[-1], Done)
    assert [r.path.rsplit("/", 1)[-1] for r in emulator.requests] == ["invoke-with-response-stream"] * 2
    assert all(signed_by(r.headers, KEY_ID) for r in emulator.requests)


async def test_a_503_status_is_retried(
    nursery: trio.Nursery, aws_env: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(aws_keys={KEY_ID: SECRET})
    server = await bedrock_gateway(nursery, emulator)
    emulator.script("503")
    frames = await query(server, chat("Hello", model=MODEL))
    retry = frames[0]
    assert isinstance(retry, RetryFrame) and retry.error.status == 503
    assert isinstance(frames[-1], Done)
    assert emulator.requests[0].status == 503
    assert emulator.requests[0].body == emulator.requests[1].body


async def test_rotated_keys_are_reloaded_once_after_a_403_and_the_retry_succeeds(
    nursery: trio.Nursery, aws_env: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(aws_keys={NEW_KEY_ID: NEW_SECRET})  # the old key is no longer valid
    server = await bedrock_gateway(nursery, emulator)
    aws_env.setenv("AWS_ACCESS_KEY_ID", NEW_KEY_ID)  # rotated after the gateway loaded the old one
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", NEW_SECRET)
    results: list[list[object]] = []

    async def one(n: int) -> None:
        async with connect(server, session=f"s{n}") as client:
            await client.receive()
            await client.send(type="query", id="q", request=chat(f"n{n}", model=MODEL))
            results.append(list(await client.until_terminal("q")))

    async with trio.open_nursery() as inner:
        for n in range(3):
            inner.start_soon(one, n)
    for frames in results:
        retry = frames[0]
        assert isinstance(retry, RetryFrame) and retry.error.status == 403
        assert retry.error.message == "The security token included in the request is invalid."
        assert isinstance(frames[-1], Done)
    statuses = [(r.status, r.headers["authorization"].split("/")[0]) for r in emulator.requests]
    old, new = f"AWS4-HMAC-SHA256 Credential={KEY_ID}", f"AWS4-HMAC-SHA256 Credential={NEW_KEY_ID}"
    assert sorted(statuses) == [(200, new)] * 3 + [(403, old)] * 3


async def test_a_wrong_secret_fails_the_signature_check_without_retrying(
    nursery: trio.Nursery, aws_env: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    emulator = Emulator(aws_keys={KEY_ID: SECRET})
    server = await bedrock_gateway(nursery, emulator)
    frames = await query(server, chat("Hello", model=MODEL))
    error = frames[-1]
    assert isinstance(error, ErrorFrame)
    assert error.error.status == 403 and error.error.message.startswith("The request signature we calculated")
    # One refresh: the chain gave the same keys, so the 403 is final.
    assert len(emulator.requests) == 1


async def test_count_tokens_through_bedrock(nursery: trio.Nursery, aws_env: pytest.MonkeyPatch) -> None:
    emulator = Emulator(aws_keys={KEY_ID: SECRET})
    server = await bedrock_gateway(nursery, emulator)
    request = {"model": MODEL, "messages": [{"role": "user", "content": "How many tokens is this?"}]}
    async with connect(server) as client:
        await client.receive()
        await client.send(type="count_tokens", id="c", request=request)
        frame = await client.receive()
    assert isinstance(frame, TokenCount) and frame.input_tokens > 0
    (sent,) = emulator.requests
    assert sent.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/count-tokens"
    assert signed_by(sent.headers, KEY_ID)
    assert sent.status == 200


async def test_a_bearer_api_key_is_sent_instead_of_a_signature(nursery: trio.Nursery) -> None:
    from actors.config.settings import Secret

    emulator = Emulator(bedrock_tokens=frozenset({"bedrock-api-key-1"}))
    server = await bedrock_gateway(nursery, emulator, bedrock_bearer=Secret("bedrock-api-key-1"))
    frames = await query(server, chat("Hello", model=MODEL))
    assert isinstance(frames[-1], Done)
    (sent,) = emulator.requests
    assert sent.headers["authorization"] == "Bearer bedrock-api-key-1"
    assert "x-amz-date" not in sent.headers


async def test_a_broken_stream_falls_back_to_invoke(
    nursery: trio.Nursery, aws_env: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = Emulator(aws_keys={KEY_ID: SECRET})
    server = await bedrock_gateway(nursery, emulator)
    emulator.script("drop:after=2")
    frames = await query(server, chat("Hello there", model=MODEL))
    done = frames[-1]
    assert isinstance(done, Done) and done.message["content"] == [{"type": "text", "text": "Echo: Hello there"}]
    first, second = emulator.requests
    assert first.path.endswith("/invoke-with-response-stream") and first.completed is False
    assert second.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke"
    assert second.status == 200 and signed_by(second.headers, KEY_ID)
    assert isinstance(second.json, dict) and "stream" not in second.json


async def test_side_by_side_models_are_routed_to_their_providers(
    nursery: trio.Nursery, aws_env: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    from actors.config.settings import Secret

    emulator = Emulator(api_keys=frozenset({"sk-ant-side"}), aws_keys={NEW_KEY_ID: NEW_SECRET})
    url = await nursery.start(emulator.run)
    config = Config(
        base_url=url,
        api_key=Secret("sk-ant-side"),
        bedrock_base_url=url,
        provider_routes=(("us.anthropic.", "bedrock"),),
        retry_seed=1234,
        ledger_path=":memory:",
        disable_nonessential_traffic=True,
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    first_party = await query(server, chat("Hello", model="claude-sonnet-4-5-20250929"))
    assert isinstance(first_party[-1], Done)
    # Bedrock's keys are loaded at its first request, then rotate: its 403 refreshes
    # Bedrock's credential (found by the generation that failed), not the first party's.
    aws_env.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    async with connect(server, session="s2") as client:
        await client.receive()
        await client.send(type="count_tokens", id="c", request={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
        await client.receive()
    aws_env.setenv("AWS_ACCESS_KEY_ID", NEW_KEY_ID)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", NEW_SECRET)
    bedrock = await query(server, chat("Hello", model=MODEL))
    assert isinstance(bedrock[0], RetryFrame) and bedrock[0].error.status == 403
    assert isinstance(bedrock[-1], Done)
    paths = [(r.path, r.status) for r in emulator.requests]
    assert paths == [
        ("/v1/messages", 200),
        (f"/model/{MODEL}/count-tokens", 403),
        (f"/model/{MODEL}/invoke-with-response-stream", 403),
        (f"/model/{MODEL}/invoke-with-response-stream", 200),
    ]
    assert emulator.requests[0].headers["x-api-key"] == "sk-ant-side"
    assert signed_by(emulator.requests[3].headers, NEW_KEY_ID)
    # Each request got its own provider's betas: the first-party-only ones never reach Bedrock.
    first_party_betas = emulator.requests[0].headers.get("anthropic-beta", "")
    assert "prompt-caching-scope-2026-01-05" in first_party_betas
    bedrock_body = emulator.requests[3].json
    assert isinstance(bedrock_body, dict)
    bedrock_betas = bedrock_body.get("anthropic_beta", [])
    assert "prompt-caching-scope-2026-01-05" not in bedrock_betas
    assert "prompt-caching-scope-2026-01-05" not in emulator.requests[3].headers.get("anthropic-beta", "")


async def test_the_http_door_sends_a_first_party_request_to_bedrock_translated_only(
    nursery: trio.Nursery, aws_env: pytest.MonkeyPatch
) -> None:
    emulator = Emulator(aws_keys={KEY_ID: SECRET})
    server = await bedrock_gateway(nursery, emulator, http_port=0)
    assert server.http_url is not None
    request = {**chat("Hello there", model="claude-sonnet-4-5-20250929", max_tokens=64), "stream": True}
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14"}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=None, headers=headers) as http:
        response = await http.post("/v1/messages", json=request)
    assert response.status_code == 200 and "event: message_stop" in response.text
    (sent,) = emulator.requests
    # The first-party id in Bedrock's form, Bedrock's body shape; the client's beta, no other.
    assert sent.path == f"/model/{MODEL}/invoke-with-response-stream"
    body = sent.json
    assert isinstance(body, dict) and body["anthropic_beta"] == ["interleaved-thinking-2025-05-14"]
    assert body["messages"] == request["messages"] and body["max_tokens"] == 64
    assert "system" not in body and "tools" not in body
