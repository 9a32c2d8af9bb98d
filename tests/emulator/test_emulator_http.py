"""The emulator over real loopback HTTP: endpoints, checks, keep-alive, the request log."""

from __future__ import annotations

from functools import partial
from typing import Any

import h11
import httpx
import msgspec
import pytest
import trio
from emulator_testkit import API_HEADERS, CACHEABLE_TEXT, WEATHER_TOOL, assemble, body, parse_sse

import emulator.connection
from emulator import Emulator, serve_emulator
from emulator.validation import KNOWN_BETAS


async def test_streaming_text_in_order(client: httpx.AsyncClient, emu: Emulator) -> None:
    response = await client.post("/v1/messages", json=body("one two three", stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked"
    events = parse_sse(response.text)
    texts = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert texts == ["Echo: ", "one ", "two ", "three"]
    assert [name for name, _ in events][:3] == ["message_start", "content_block_start", "ping"]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    record = emu.requests[0]
    await record.finished.wait()
    assert record.events_sent == len(events)
    assert record.completed


async def test_stream_and_message_agree(client: httpx.AsyncClient) -> None:
    extra: dict[str, Any] = {
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": [WEATHER_TOOL],
        "system": [
            {"type": "text", "text": CACHEABLE_TEXT, "cache_control": {"type": "ephemeral"}}
        ],
    }
    request = {**body("call get_weather please", **extra), "max_tokens": 4096}
    message = (await client.post("/v1/messages", json=request)).json()
    streamed = assemble(
        parse_sse((await client.post("/v1/messages", json={**request, "stream": True})).text)
    )
    # Ids are per request and the second request reads what the first wrote to the cache.
    for snapshot in (message, streamed):
        del snapshot["id"]
        snapshot["content"][2]["id"] = "toolu"
    assert (
        message["usage"]["cache_creation_input_tokens"]
        == streamed["usage"]["cache_read_input_tokens"]
    )
    for key in ("cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation"):
        del message["usage"][key], streamed["usage"][key]
    assert message == streamed
    assert [block["type"] for block in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["content"][2]["input"] == {"location": "Paris", "days": 1}
    assert message["stop_reason"] == "tool_use"


async def test_message_shape_and_headers(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages?beta=true", json=body("hi"))
    message = response.json()
    assert list(message) == [
        "id",
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "usage",
    ]
    assert message["id"].startswith("msg_emu_")
    assert response.headers["request-id"].startswith("req_emu_")
    for bucket in ("requests", "tokens", "input-tokens", "output-tokens"):
        for part in ("limit", "remaining"):
            assert int(response.headers[f"anthropic-ratelimit-{bucket}-{part}"]) > 0
        assert response.headers[f"anthropic-ratelimit-{bucket}-reset"].endswith("Z")


async def test_cache_write_then_read_over_http(client: httpx.AsyncClient) -> None:
    system = [
        {
            "type": "text",
            "text": CACHEABLE_TEXT,
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    first = (await client.post("/v1/messages", json=body("a", system=system))).json()["usage"]
    second = (await client.post("/v1/messages", json=body("b", system=system))).json()["usage"]
    assert (
        first["cache_creation"]["ephemeral_1h_input_tokens"]
        == first["cache_creation_input_tokens"]
        > 0
    )
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    assert second["cache_creation_input_tokens"] == 0


async def test_count_tokens_equals_total_input(client: httpx.AsyncClient) -> None:
    system = [{"type": "text", "text": CACHEABLE_TEXT, "cache_control": {"type": "ephemeral"}}]
    request = body("count me", system=system, tools=[WEATHER_TOOL])
    counted = await client.post(
        "/v1/messages/count_tokens", json={k: v for k, v in request.items() if k != "max_tokens"}
    )
    assert counted.json().keys() == {"input_tokens"}
    for _ in range(2):  # a cache write, then a cache read: the total stays the same
        usage = (await client.post("/v1/messages", json=request)).json()["usage"]
        total = (
            usage["input_tokens"]
            + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"]
        )
        assert total == counted.json()["input_tokens"]


async def test_models(client: httpx.AsyncClient) -> None:
    page = (await client.get("/v1/models")).json()
    ids = [model["id"] for model in page["data"]]
    assert {"claude-opus-4-6", "claude-sonnet-4-6", "claude-haiku-4-5-20251001"} <= set(ids)
    assert page["has_more"] is False
    assert (page["first_id"], page["last_id"]) == (ids[0], ids[-1])
    assert all(model["type"] == "model" and model["display_name"] for model in page["data"])
    one = (await client.get("/v1/models/claude-opus-4-6")).json()
    assert one["id"] == "claude-opus-4-6"
    assert (await client.get("/v1/models/claude-nope")).status_code == 404


def _error(response: httpx.Response) -> tuple[int, str, str]:
    envelope = response.json()
    assert envelope.keys() == {"type", "error", "request_id"}
    assert envelope["type"] == "error"
    assert envelope["request_id"] == response.headers["request-id"]
    return response.status_code, envelope["error"]["type"], envelope["error"]["message"]


async def test_credential_checks(nursery: trio.Nursery) -> None:
    emu = Emulator(api_keys=frozenset({"good"}))
    url = await nursery.start(emu.run)
    version = {"anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=url, headers=version) as http:
        missing = await http.post("/v1/messages", json=body())
        assert _error(missing) == (401, "authentication_error", "invalid x-api-key")
        wrong = await http.post("/v1/messages", json=body(), headers={"x-api-key": "bad"})
        assert _error(wrong)[0] == 401
        assert (
            await http.post("/v1/messages", json=body(), headers={"x-api-key": "good"})
        ).status_code == 200
        bearer = await http.post(
            "/v1/messages", json=body(), headers={"authorization": "Bearer good"}
        )
        assert bearer.status_code == 200
        assert (await http.get("/v1/models", headers={"x-api-key": "bad"})).status_code == 401


async def test_any_credential_is_enough_without_a_key_list(client: httpx.AsyncClient) -> None:
    headers = {"x-api-key": "", "authorization": "Bearer whatever"}
    assert (await client.post("/v1/messages", json=body(), headers=headers)).status_code == 200
    empty = {"x-api-key": "", "authorization": "Basic abc"}
    assert (await client.post("/v1/messages", json=body(), headers=empty)).status_code == 401


@pytest.mark.parametrize("version", ["2023-06-01", "2026-10-21"])
async def test_known_versions(client: httpx.AsyncClient, version: str) -> None:
    response = await client.post(
        "/v1/messages", json=body(), headers={"anthropic-version": version}
    )
    assert response.status_code == 200


async def test_bad_version(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/messages", json=body(), headers={"anthropic-version": "2024-01-01"}
    )
    assert _error(response)[:2] == (400, "invalid_request_error")
    assert "2024-01-01" in _error(response)[2]


async def test_betas(client: httpx.AsyncClient) -> None:
    good = "context-1m-2025-08-07, interleaved-thinking-2025-05-14,claude-code-20250219"
    assert (
        await client.post("/v1/messages", json=body(), headers={"anthropic-beta": good})
    ).status_code == 200
    bad = await client.post(
        "/v1/messages", json=body(), headers={"anthropic-beta": f"{good},made-up-2020-01-01"}
    )
    assert _error(bad) == (
        400,
        "invalid_request_error",
        "Unsupported beta header: made-up-2020-01-01",
    )
    assert {"afk-mode-2026-01-31", "fast-mode-2026-02-01", "oauth-2025-04-20"} <= KNOWN_BETAS


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"{not json", "error parsing the body"),
        (b"[]", "valid dictionary"),
        (
            msgspec.json.encode({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            "model: Field required",
        ),
        (
            msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens: Field required",
        ),
        (msgspec.json.encode(body(max_tokens=0)), "greater than or equal to 1"),
        (msgspec.json.encode(body(max_tokens="5")), "valid integer"),
        (msgspec.json.encode({**body(), "messages": []}), "at least 1 item"),
        (
            msgspec.json.encode({**body(), "messages": [{"role": "robot", "content": "x"}]}),
            "messages.0.role",
        ),
        (msgspec.json.encode(body(stream="yes")), "stream"),
        (msgspec.json.encode(body(tools={"name": "x"})), "tools"),
    ],
)
async def test_body_checks(client: httpx.AsyncClient, raw: bytes, complaint: str) -> None:
    response = await client.post(
        "/v1/messages", content=raw, headers={"content-type": "application/json"}
    )
    status, error_type, message = _error(response)
    assert (status, error_type) == (400, "invalid_request_error")
    assert complaint in message


async def test_count_tokens_needs_no_max_tokens(client: httpx.AsyncClient) -> None:
    request = {"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "x"}]}
    assert (await client.post("/v1/messages/count_tokens", json=request)).status_code == 200
    assert _error(await client.post("/v1/messages/count_tokens", json={"model": "m"}))[0] == 400
    # count_tokens takes the prompt only: max_tokens is an extra input there.
    refused = await client.post("/v1/messages/count_tokens", json={**request, "max_tokens": 5})
    assert _error(refused) == (400, "invalid_request_error", "max_tokens: Extra inputs are not permitted")


async def test_unknown_path_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert _error(await client.get("/v2/nothing"))[:2] == (404, "not_found_error")
    wrong = await client.get("/v1/messages")
    assert _error(wrong)[0] == 405
    assert wrong.headers["allow"] == "POST"


async def test_request_log(client: httpx.AsyncClient, emu: Emulator) -> None:
    waiter = trio.Event()
    seen: list[int] = []

    async def wait() -> None:
        seen.append((await emu.wait_for_request(1)).index)
        waiter.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await client.post("/v1/messages?beta=true", json=body("first"), headers={"X-Custom": "A"})
        await trio.testing.wait_all_tasks_blocked()
        assert not waiter.is_set()
        await client.post("/v1/messages", json=body("second"))
    assert seen == [1]
    first = emu.requests[0]
    await first.finished.wait()
    assert (first.index, first.method, first.path) == (0, "POST", "/v1/messages?beta=true")
    assert first.headers["x-custom"] == "A"
    assert first.json == body("first")
    assert msgspec.json.decode(first.body) == body("first")
    assert (first.status, first.fault, first.completed, first.disconnected) == (
        200,
        None,
        True,
        False,
    )
    assert first.finished.is_set()
    assert first.request_id != emu.requests[1].request_id


async def _raw_exchange(url: str, payload: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(payload)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


def _raw_request(request: dict[str, Any], *, close: bool = False) -> bytes:
    client = h11.Connection(h11.CLIENT)
    data = msgspec.json.encode(request)
    headers = [("host", "emu"), ("content-length", str(len(data))), *API_HEADERS.items()]
    if close:
        headers.append(("connection", "close"))
    return client.send(h11.Request(method="POST", target="/v1/messages", headers=headers)) + client.send(
        h11.Data(data=data)
    ) + client.send(h11.EndOfMessage())  # fmt: skip


async def test_keep_alive_serves_several_requests_on_one_connection(emu: Emulator) -> None:
    assert emu.url is not None
    payload = (
        _raw_request(body("one"))
        + _raw_request(body("two", stream=True))
        + _raw_request(body("three"), close=True)
    )
    received = await _raw_exchange(emu.url, payload)
    reader = h11.Connection(h11.CLIENT)
    reader.send(h11.Request(method="POST", target="/", headers=[("host", "emu")]))
    reader.send(h11.EndOfMessage())
    reader.receive_data(received)
    statuses = []
    for _ in range(3):
        event = reader.next_event()
        assert isinstance(event, h11.Response)
        statuses.append(event.status_code)
        while not isinstance(reader.next_event(), h11.EndOfMessage):
            pass
        if len(statuses) < 3:
            reader.start_next_cycle()
            reader.send(h11.Request(method="POST", target="/", headers=[("host", "emu")]))
            reader.send(h11.EndOfMessage())
    assert statuses == [200, 200, 200]
    for record in emu.requests:
        await record.finished.wait()
        assert record.completed


async def test_keep_alive_with_httpx(client: httpx.AsyncClient) -> None:
    ports = set()
    for _ in range(3):
        response = await client.post("/v1/messages", json=body(stream=True))
        ports.add(response.extensions["network_stream"].get_extra_info("client_addr"))
    assert len(ports) == 1


async def test_malformed_http_gets_400_and_the_server_lives_on(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    assert emu.url is not None
    received = await _raw_exchange(emu.url, b"NONSENSE\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 400")
    assert (await client.post("/v1/messages", json=body())).status_code == 200


async def test_concurrent_paced_streams(
    client: httpx.AsyncClient, emu: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    results: list[list[tuple[str, Any]]] = []

    async def one(index: int) -> None:
        request = body(f"stream {index}", stream=True)
        headers = {"x-emulator-deltas": "8", "x-emulator-pace-ms": "500"}
        results.append(
            parse_sse((await client.post("/v1/messages", json=request, headers=headers)).text)
        )

    async with trio.open_nursery() as nursery:
        for index in range(20):
            nursery.start_soon(one, index)
    # 14 events, 13 gaps of half a second: the streams ran side by side, not one after another.
    assert trio.current_time() - start == 13 * 0.5
    assert [len(events) for events in results] == [14] * 20
    assert len({record.request_id for record in emu.requests}) == 20


async def test_serve_emulator_gives_its_url(nursery: trio.Nursery) -> None:
    url = await nursery.start(partial(serve_emulator, "127.0.0.1", 0))
    async with httpx.AsyncClient(base_url=url, headers=API_HEADERS) as http:
        assert (await http.post("/v1/messages", json=body())).status_code == 200


async def test_expect_100_continue(emu: Emulator) -> None:
    assert emu.url is not None
    data = msgspec.json.encode(body())
    head = (
        b"POST /v1/messages HTTP/1.1\r\nhost: emu\r\nexpect: 100-continue\r\n"
        b"x-api-key: k\r\nanthropic-version: 2023-06-01\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(data)
    )
    host, port = emu.url.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(head)
        assert (await stream.receive_some(1000)).startswith(b"HTTP/1.1 100 ")
        await stream.send_all(data)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")


async def test_body_too_large(
    client: httpx.AsyncClient, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator.connection, "MAX_BODY_BYTES", 1000)
    response = await client.post("/v1/messages", json=body("x" * 5000))
    assert _error(response)[:2] == (413, "request_too_large")
    assert (await client.post("/v1/messages", json=body())).status_code == 200
