"""The HTTP door as a faithful stand-in for the API (docs/protocol.md 2): what a client sent
goes upstream as sent unless it asks for the reference construction; the upstream's headers
come back; the API's own answers to a bad ``anthropic-version``; who retries, and within the
client's own timeout."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing
from harness import API_VERSION, chat

from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from emulator import Emulator, RecordedRequest

CLIENT_BETAS = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
# Whitespace, key order and an escaped character the gateway's encoder would not reproduce.
RAW_BODY = (
    b'{ "stream" : true,\n  "model": "claude-sonnet-4-6", "max_tokens": 999999,\n'
    b'  "messages": [{"role": "user", "content": "caf\\u00e9 \\/ one"}] }'
)


async def serve(nursery: trio.Nursery, config: Config, **changes: Any) -> Server:
    server: Server = await nursery.start(
        functools.partial(run_server, msgspec.structs.replace(config, http_port=0, **changes))
    )
    assert server.http_url is not None
    return server


def messages_calls(emulator: Emulator) -> list[RecordedRequest]:
    return [record for record in emulator.requests if record.path.split("?")[0] == "/v1/messages"]


async def test_what_a_client_sent_goes_upstream_byte_for_byte_with_its_betas(
    nursery: trio.Nursery, config: Config, emulator: Emulator
) -> None:
    server = await serve(nursery, config)
    headers = {**API_VERSION, "anthropic-beta": CLIENT_BETAS, "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
        response = await http.post("/v1/messages?beta=true", content=RAW_BODY, headers=headers)
        assert response.status_code == 200
        [sent] = messages_calls(emulator)
        assert sent.body == RAW_BODY
        assert sent.path == "/v1/messages?beta=true"  # the SDKs' beta namespace, kept
        assert sent.headers["anthropic-beta"] == CLIENT_BETAS
        assert sent.headers["anthropic-version"] == "2023-06-01"
        # Not streaming: the gateway streams upstream all the same, and changes nothing else.
        body = {**chat("plain"), "temperature": 0.5, "metadata": {"user_id": "u"}}
        response = await http.post("/v1/messages", json=body, headers=API_VERSION)
        assert response.status_code == 200 and response.json()["type"] == "message"
        upstream = messages_calls(emulator)[-1]
        assert upstream.path == "/v1/messages"
        assert upstream.json == {**body, "stream": True}
        assert "anthropic-beta" not in upstream.headers


async def test_the_reference_construction_applies_when_asked_by_header_or_token(
    nursery: trio.Nursery, config: Config, emulator: Emulator
) -> None:
    server = await serve(
        nursery,
        config,
        access_tokens=(Secret("tok-plain"), Secret("tok-construct")),
        construct_tokens=(Secret("tok-construct"),),
    )
    base = {**API_VERSION, "anthropic-beta": CLIENT_BETAS, "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
        asked = {**base, "x-api-key": "tok-plain", "x-switchboard-construct": "reference"}
        by_token = {**base, "authorization": "Bearer tok-construct"}
        declined = {**by_token, "x-switchboard-construct": "transparent"}
        for headers, constructed in ((asked, True), (by_token, True), (declined, False)):
            response = await http.post("/v1/messages", content=RAW_BODY, headers=headers)
            assert response.status_code == 200
            sent = messages_calls(emulator)[-1]
            assert (sent.body != RAW_BODY) == constructed
            betas = sent.headers["anthropic-beta"].split(",")
            # The reference's betas first, the client's after; max_tokens clamped.
            assert ("claude-code-20250219" in betas) == constructed
            assert all(beta in betas for beta in CLIENT_BETAS.split(","))
            assert isinstance(sent.json, dict) and (sent.json["max_tokens"] < 999999) == constructed


async def test_the_upstreams_headers_reach_the_client_with_the_gateways_id_beside(
    nursery: trio.Nursery, config: Config, emulator: Emulator
) -> None:
    server = await serve(nursery, config)
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None, headers=API_VERSION) as http:
        for body in (chat("json"), {**chat("sse"), "stream": True}):
            response = await http.post("/v1/messages", json=body)
            assert response.status_code == 200
            upstream = messages_calls(emulator)[-1]
            assert response.headers["request-id"] == upstream.request_id
            assert response.headers["x-switchboard-request-id"].startswith("req_sb_")
            limits = [name for name in response.headers if name.startswith("anthropic-ratelimit-")]
            assert "anthropic-ratelimit-requests-remaining" in limits and len(limits) >= 4
            # Each once: the upstream's replaced the gateway's own.
            assert len(response.headers.get_list("request-id")) == 1
            assert len(response.headers.get_list("content-type")) == 1
        count = {"model": "claude-sonnet-4-6", "messages": chat()["messages"]}
        response = await http.post("/v1/messages/count_tokens", json=count)
        assert response.status_code == 200
        assert response.headers["request-id"] == emulator.requests[-1].request_id


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (None, "anthropic-version: header is required"),
        ("2024-01-01", 'anthropic-version: "2024-01-01" is not a valid version'),
    ],
)
async def test_a_missing_or_unknown_api_version_gets_the_apis_400(
    nursery: trio.Nursery, config: Config, emulator: Emulator, version: str | None, message: str
) -> None:
    server = await serve(nursery, config)
    headers = {} if version is None else {"anthropic-version": version}
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
        for method, path in (("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"), ("GET", "/v1/models")):
            response = await http.request(method, path, json=chat(), headers=headers)
            assert response.status_code == 400, path
            assert response.json()["error"] == {"type": "invalid_request_error", "message": message}
            assert response.headers["x-should-retry"] == "false"
    assert messages_calls(emulator) == []


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"anthropic-version": "2023-06-01\xe9"}, 'anthropic-version: "2023-06-01\xe9" is not a valid version'),
        ({**API_VERSION, "anthropic-beta": "tools-2024-04-04,\x80"}, "anthropic-beta: the header value must be ASCII text"),
    ],
)
async def test_an_api_header_past_ascii_gets_a_400_and_never_goes_upstream(
    nursery: trio.Nursery, config: Config, emulator: Emulator, headers: dict[str, str], message: str
) -> None:
    """Such a value once crashed the query where it was forwarded upstream (a 500
    ``internal_error``): the API takes none, so the door refuses it as the client's error."""
    server = await serve(nursery, config)
    raw = {name.encode(): value.encode("latin-1") for name, value in headers.items()}
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            response = await http.post(path, json=chat(), headers=raw)
            assert response.status_code == 400, path
            assert response.json()["error"] == {"type": "invalid_request_error", "message": message}
            assert response.headers["x-should-retry"] == "false"
        # A beta that is ASCII goes as it is.
        response = await http.post("/v1/messages", json=chat(), headers={**API_VERSION, "anthropic-beta": "context-1m-2025-08-07"})
        assert response.status_code == 200, response.text
    assert len(messages_calls(emulator)) == 1


async def test_the_gateways_own_refusals_say_not_to_retry(nursery: trio.Nursery, config: Config) -> None:
    server = await serve(nursery, config, access_tokens=(Secret("tok"),))
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None, headers=API_VERSION) as http:
        unauthorized = await http.post("/v1/messages", json=chat())
        authorized = {"x-api-key": "tok"}
        missing = await http.get("/v1/nothing", headers=authorized)
        bad = await http.post("/v1/messages", content=b"[]", headers=authorized)
        other = await http.post(
            "/v1/messages", json=chat(), headers={**authorized, "x-switchboard-session": "bad id!"}
        )
    for response, status, error_type in (
        (unauthorized, 401, "authentication_error"),
        (missing, 404, "not_found_error"),
        (bad, 400, "invalid_request_error"),
        (other, 400, "invalid_request_error"),
    ):
        assert response.status_code == status and response.json()["error"]["type"] == error_type
        assert response.headers["x-should-retry"] == "false"
    assert missing.json()["error"]["message"] == "The requested resource could not be found."


async def test_a_retrying_client_gets_the_upstreams_status_and_headers_after_one_attempt(
    nursery: trio.Nursery, config: Config, emulator: Emulator
) -> None:
    server = await serve(nursery, config)
    retrying = {**API_VERSION, "x-stainless-retry-count": "0"}
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
        emulator.script("529:retry_after=7,should_retry=true", "ok")
        response = await http.post("/v1/messages", json=chat(), headers=retrying)
        assert response.status_code == 529 and response.json()["error"]["type"] == "overloaded_error"
        assert response.headers["retry-after"] == "7" and response.headers["x-should-retry"] == "true"
        assert response.headers["request-id"] == messages_calls(emulator)[0].request_id
        assert len(messages_calls(emulator)) == 1
        # Forced the other way: the gateway retries (after the upstream's 7 s) and succeeds.
        emulator.reset()
        emulator.script("500", "ok")
        forced = {**retrying, "x-switchboard-retries": "gateway"}
        response = await http.post("/v1/messages", json=chat(), headers=forced)
        assert response.status_code == 200 and len(messages_calls(emulator)) == 2
        # And a client without the header gets the gateway's retries by default...
        emulator.reset()
        emulator.script("429", "ok")
        response = await http.post("/v1/messages", json=chat(), headers=API_VERSION)
        assert response.status_code == 200 and len(messages_calls(emulator)) == 2
        # ... unless it asks for one attempt.
        emulator.reset()
        emulator.script("429", "ok")
        response = await http.post("/v1/messages", json=chat(), headers={**API_VERSION, "x-switchboard-retries": "client"})
        assert response.status_code == 429 and len(messages_calls(emulator)) == 1


async def test_the_gateway_gives_up_before_the_clients_own_timeout(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await serve(nursery, config, http_retries="gateway")
    emulator.outage("529", seconds=100_000)
    headers = {**API_VERSION, "x-stainless-retry-count": "0", "x-stainless-timeout": "20"}
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
        started = trio.current_time()
        response = await http.post("/v1/messages", json=chat(), headers=headers)
        elapsed = trio.current_time() - started
    # Backoffs of 0.5, 1, 2, 4, 8 s (and jitter) fit in the 19 s it may use (its timeout less
    # a second); the sixth attempt's next one, 16 s, does not.
    assert response.status_code == 529 and response.headers["x-should-retry"] == "false"
    assert 15.5 <= elapsed < 19.0
    assert len(messages_calls(emulator)) == 6


async def test_a_final_429_after_the_gateways_retries_keeps_the_upstreams_retry_after(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await serve(nursery, config, http_retries="gateway", max_retries=1)
    emulator.script("429:retry_after=2", "429:retry_after=9")
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None, headers=API_VERSION) as http:
        response = await http.post("/v1/messages", json=chat())
    assert response.status_code == 429 and response.json()["error"]["type"] == "rate_limit_error"
    # The last attempt's headers, and the gateway's word that retrying again is pointless.
    assert response.headers["retry-after"] == "9" and response.headers["x-should-retry"] == "false"
    assert response.headers["request-id"] == messages_calls(emulator)[-1].request_id
    assert "anthropic-ratelimit-requests-limit" in response.headers


async def test_while_the_upstreams_retry_after_runs_the_gate_answers_retrying_clients(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await serve(nursery, config)
    emulator.script("529:retry_after=5")
    retrying = {**API_VERSION, "x-stainless-retry-count": "0"}
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None, headers=retrying) as http:
        first = await http.post("/v1/messages", json=chat())
        await trio.sleep(1.5)
        second = await http.post("/v1/messages", json=chat("another"))
        assert len(messages_calls(emulator)) == 1  # the second never went upstream
        await trio.sleep(3.5)
        third = await http.post("/v1/messages", json=chat("later"))
        metrics = (await http.get("/metrics")).text
    assert first.status_code == 529 and first.headers["retry-after"] == "5"
    assert second.status_code == 529 and second.json()["error"]["type"] == "overloaded_error"
    assert second.headers["retry-after"] == "4" and second.headers["retry-after-ms"] == "3500"
    assert second.headers["x-should-retry"] == "true"
    assert third.status_code == 200 and len(messages_calls(emulator)) == 2
    assert 'switchboard_gate_answers_total{model="claude-sonnet-4-6"} 1.0' in metrics
