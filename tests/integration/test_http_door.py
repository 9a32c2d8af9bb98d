"""The HTTP door driven by the official anthropic SDK while the gateway talks to the emulator.

The sync client runs in a worker thread (``call``), on the real clock, so those tests wait on
no timer. The async client runs in the test's own trio run (it works under trio: httpx2 goes
through anyio), so the tests with backoffs use it with the autojump clock.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anthropic
import httpx
import msgspec
import pytest
import trio
from harness import API_VERSION, chat
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from actors.store.ledger_sessions import owner_digest
from emulator import Emulator, RecordedRequest
from protocol.http_api import default_session

T = TypeVar("T")
MODEL = "claude-sonnet-4-6"
WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the weather for a place",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["location"],
    },
}


async def call(fn: Callable[[], T]) -> T:
    """Run a blocking SDK call in a worker thread while the gateway serves."""
    return await trio.to_thread.run_sync(fn)


async def start(nursery: trio.Nursery, config: Config, **changes: Any) -> Server:
    # The SDK here runs with max_retries=0 yet sends x-stainless-retry-count: these tests are
    # about the gateway's own retries, so it retries (tests/integration/test_client_retries.py
    # is about the other mode).
    changes.setdefault("http_retries", "gateway")
    config = msgspec.structs.replace(config, http_port=0, **changes)
    server: Server = await nursery.start(functools.partial(run_server, config))
    assert server.http_url is not None
    return server


@pytest.fixture(autouse=True)
def no_door_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """hypercorn logs a handler's exception instead of raising it: fail the test on one."""
    yield
    errors = [
        r.getMessage()
        for r in caplog.get_records("call")
        if r.name.startswith("switchboard.httpdoor") and r.levelno >= logging.WARNING
    ]
    assert not errors, errors


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config) -> Server:
    return await start(nursery, config)


@pytest.fixture
def sdk(server: Server) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        api_key="client-key-not-forwarded", base_url=server.http_url, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as client:
        yield client


def api_calls(emulator: Emulator, path: str = "/v1/messages") -> list[RecordedRequest]:
    """The upstream requests to ``path`` (the gateway also fetches its bootstrap config)."""
    return [record for record in emulator.requests if record.path.split("?")[0] == path]


async def first_call(emulator: Emulator) -> RecordedRequest:
    """The first ``/v1/messages`` request, once it arrived."""
    n = 0
    while (record := await emulator.wait_for_request(n)).path != "/v1/messages":
        n += 1
    return record


def comparable(message: anthropic.types.Message) -> dict[str, Any]:
    data = message.model_dump(exclude={"id"})
    for block in data["content"]:
        block.pop("parsed_output", None)
        if block["type"] == "tool_use":
            block["id"] = "toolu"
    return data


async def test_text_streamed_and_not_is_what_the_api_sends(
    sdk: anthropic.Anthropic, server: Server, emulator: Emulator
) -> None:
    def streamed() -> tuple[list[str], anthropic.types.Message]:
        with sdk.messages.stream(**chat("hello through the door")) as stream:
            return list(stream.text_stream), stream.get_final_message()

    texts, final = await call(streamed)
    raw = await call(
        lambda: sdk.messages.with_raw_response.create(**chat("hello through the door"))
    )
    message = raw.parse()
    assert texts == ["Echo: ", "hello ", "through ", "the ", "door"]
    assert (
        message.content[0].type == "text"
        and message.content[0].text == "Echo: hello through the door"
    )
    assert comparable(final) == comparable(message)
    # The gateway's own credential went upstream, with the client's API version; never the
    # client's key.
    upstream = api_calls(emulator)[-1].headers
    assert upstream["x-api-key"].startswith("sk-ant-test") and "authorization" not in upstream
    assert upstream["anthropic-version"] == "2026-10-21"
    assert all(
        "client-key-not-forwarded" not in value
        for record in emulator.requests
        for value in record.headers.values()
    )
    # Charged to the default session, the cost in the headers.
    assert raw.headers["x-switchboard-session"] == "http-default"
    assert raw.headers["request-id"].startswith("req_")
    summary = await server.gateway.cost("http-default")
    cost = float(raw.headers["x-switchboard-cost-usd"])
    assert cost > 0
    assert float(raw.headers["x-switchboard-session-cost-usd"]) == pytest.approx(
        summary.total_cost_usd
    )
    assert summary.total_cost_usd == pytest.approx(2 * cost)  # the same prompt twice


async def test_thinking_and_tool_use_stream_through_the_async_client(server: Server) -> None:
    request = {
        **chat("use get_weather", max_tokens=2048),
        "tools": [WEATHER_TOOL],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    async with anthropic.AsyncAnthropic(
        api_key="k", base_url=server.http_url, max_retries=0
    ) as client:
        async with client.messages.stream(**request) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
        created = await client.messages.create(**request)
    assert "thinking" in kinds and "signature" in kinds and "input_json" in kinds
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    thinking, _, tool = final.content
    assert thinking.type == "thinking" and thinking.signature and thinking.thinking
    assert tool.type == "tool_use" and (tool.name, tool.input) == (
        "get_weather",
        {"location": "Paris"},
    )
    assert final.stop_reason == "tool_use"
    assert comparable(final) == comparable(created)


async def test_count_tokens_and_models(
    sdk: anthropic.Anthropic, server: Server, emulator: Emulator
) -> None:
    counted = await call(
        lambda: sdk.messages.count_tokens(model=MODEL, messages=chat()["messages"])
    )
    usage = (await call(lambda: sdk.messages.create(**chat()))).usage
    assert counted.input_tokens == usage.input_tokens > 0
    assert len(api_calls(emulator, "/v1/messages/count_tokens")) == 1
    # The catalog's models, newest first, paged as the API pages; the SDK's auto-paging walks
    # every page with after_id.
    every = [spec.first_party for spec in server.gateway.catalog.listing()]
    page = await call(lambda: sdk.models.list(limit=1000))
    assert [model.id for model in page.data] == every and not page.has_more
    walked = await call(lambda: [model.id for model in sdk.models.list(limit=7)])
    assert walked == every
    first = await call(sdk.models.list)
    assert len(first.data) == 20 and first.has_more
    one = await call(lambda: sdk.models.retrieve("claude-opus-4-8"))
    assert (one.id, one.display_name, one.max_tokens) == ("claude-opus-4-8", "Claude Opus 4.8", 128_000)
    assert one.created_at.isoformat().startswith("2026-05-28")
    with pytest.raises(anthropic.BadRequestError):
        await call(lambda: sdk.models.list(limit=5000))
    with pytest.raises(anthropic.NotFoundError):
        await call(lambda: sdk.models.retrieve("claude-nonexistent"))


async def test_retries_before_any_content_are_invisible(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    # A 529, then an overload after the events that carry no content (message_start,
    # content_block_start, ping: held back, then dropped). Virtual time for the backoffs.
    emulator.script("529", "ok", "overloaded_midstream:after=3")
    async with anthropic.AsyncAnthropic(
        api_key="k", base_url=server.http_url, max_retries=0
    ) as client:
        message = await client.messages.create(**chat("first"))
        async with client.messages.stream(**chat("second")) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
    assert message.content[0].type == "text" and message.content[0].text == "Echo: first"
    assert final.content[0].type == "text" and final.content[0].text == "Echo: second"
    assert kinds.count("message_start") == 1
    # The third request failed after three events; the fourth (streamed or, by the reference's
    # rule after a mid-stream failure, not) gave the answer the client saw, alone.
    calls = api_calls(emulator)
    assert [r.status for r in calls] == [529, 200, 200, 200]
    assert calls[2].fault is not None and calls[2].fault.kind == "overloaded_midstream"


async def test_errors_raise_the_sdk_classes_and_are_not_retried_again(
    nursery: trio.Nursery, config: Config, emulator: Emulator
) -> None:
    server = await start(nursery, config, max_retries=0)
    emulator.script("400:message=bad things", "529", "529")
    with anthropic.Anthropic(api_key="k", base_url=server.http_url, max_retries=2) as client:
        with pytest.raises(anthropic.BadRequestError) as bad:
            await call(lambda: client.messages.create(**chat()))
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await call(lambda: client.messages.create(**chat()))

        def streamed() -> None:
            # Another model: the overload gate of the first one would hold this for 0.5 s.
            with client.messages.stream(**chat(model="claude-haiku-4-5")) as stream:
                stream.until_done()

        # A stream that fails before any content is an HTTP error too, with its own class.
        with pytest.raises(anthropic.OverloadedError):
            await call(streamed)
    assert bad.value.status_code == 400 and bad.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad things"},
        "request_id": api_calls(emulator)[0].request_id,
    }
    assert bad.value.request_id == api_calls(emulator)[0].request_id
    assert overloaded.value.status_code == 529 and overloaded.value.type == "overloaded_error"
    assert overloaded.value.response.headers["x-should-retry"] == "false"
    # The SDK (max_retries=2) obeyed x-should-retry: one upstream request per call.
    assert len(api_calls(emulator)) == 3


async def test_failure_after_content_ends_the_stream_with_an_error_event(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("overloaded_midstream:after=4")
    texts: list[str] = []

    async def streamed(client: anthropic.AsyncAnthropic) -> None:
        async with client.messages.stream(**chat("partial answer")) as stream:
            async for text in stream.text_stream:
                texts.append(text)

    async with anthropic.AsyncAnthropic(
        api_key="k", base_url=server.http_url, max_retries=0
    ) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await streamed(client)
    assert texts == ["Echo: "]
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    # The query was aborted, not retried behind the client's back (a minute of virtual time
    # later there is still one upstream request), and its usage is charged.
    await trio.sleep(60)
    assert len(api_calls(emulator)) == 1 and api_calls(emulator)[0].finished.is_set()
    assert (await server.gateway.cost("http-default")).model_usage[MODEL].input_tokens > 0


async def test_access_tokens_sessions_and_owners(
    nursery: trio.Nursery, config: Config, emulator: Emulator
) -> None:
    server = await start(nursery, config, access_tokens=(Secret("tok-alice"), Secret("tok-bob")))
    url = str(server.http_url)
    async with httpx.AsyncClient(headers=API_VERSION, base_url=url, timeout=None) as http:
        missing = await http.post("/v1/messages", json=chat())
        wrong = await http.post("/v1/messages", json=chat(), headers={"x-api-key": "nope"})
        by_key = await http.post(
            "/v1/messages",
            json=chat(),
            headers={"x-api-key": "tok-alice", "x-switchboard-session": "shared"},
        )
        scrape = await http.get("/metrics")
        health = await http.get("/healthz")
    assert [missing.status_code, wrong.status_code, scrape.status_code] == [401, 401, 401]
    assert msgspec.json.decode(wrong.content)["error"]["type"] == "authentication_error"
    assert health.status_code == 200  # liveness needs no token
    assert by_key.status_code == 200 and by_key.headers["x-switchboard-session"] == "shared"
    # The SDK 2.x sends its key as a bearer token.
    with anthropic.Anthropic(api_key="tok-bob", base_url=url, max_retries=0) as bob:
        with pytest.raises(anthropic.PermissionDeniedError):
            await call(
                lambda: bob.messages.create(
                    **chat(), extra_headers={"x-switchboard-session": "shared"}
                )
            )
        raw = await call(lambda: bob.messages.with_raw_response.create(**chat("mine")))
    bobs_session = default_session(owner_digest("tok-bob"))
    assert raw.headers["x-switchboard-session"] == bobs_session and "tok-bob" not in bobs_session
    assert (await server.gateway.cost(bobs_session)).total_cost_usd > 0
    assert (await server.gateway.cost("shared")).total_cost_usd == pytest.approx(
        float(by_key.headers["x-switchboard-cost-usd"])
    )
    sent = [value for record in emulator.requests for value in record.headers.values()]
    assert not any("tok-" in value for value in sent)


async def test_streaming_ends_with_the_cost_comment(
    http: httpx.AsyncClient, server: Server
) -> None:
    request = {**chat("count me"), "stream": True}
    response = await http.post(
        "/v1/messages?beta=true", json=request, headers={"x-switchboard-session": "costly"}
    )
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = response.content.split(b"\n\n")
    assert events[0].startswith(b"event: message_start\ndata: {")
    assert events[-3] == b'event: message_stop\ndata: {"type":"message_stop"}'
    comment = events[-2].decode()
    summary = await server.gateway.cost("costly")
    assert comment.startswith(": switchboard cost_usd=")
    assert float(comment.split("session_cost_usd=")[1]) == pytest.approx(summary.total_cost_usd)


async def test_bad_requests_get_the_api_envelope(nursery: trio.Nursery, config: Config) -> None:
    server = await start(nursery, config, max_frame_bytes=64 * 1024)
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as http:
        answers = [
            await http.post("/v1/messages", content=b"{not json"),
            await http.post("/v1/messages", content=b"[1, 2]"),
            await http.post("/v1/messages", json={"messages": []}),
            await http.post(
                "/v1/messages", json=chat(), headers={"x-switchboard-session": "bad id"}
            ),
            await http.post("/v1/messages", content=b"x" * (65 * 1024)),
            await http.get("/v2/elsewhere"),
            await http.get("/v1/messages"),
        ]
    statuses = [(a.status_code, msgspec.json.decode(a.content)["error"]["type"]) for a in answers]
    assert statuses == [
        (400, "invalid_request_error"),
        (400, "invalid_request_error"),
        (400, "invalid_request_error"),
        (400, "invalid_request_error"),
        (413, "request_too_large"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
    ]
    for answer in answers:
        body = msgspec.json.decode(answer.content)
        assert body["type"] == "error" and body["error"]["message"]
        assert body["request_id"] == answer.headers["request-id"]


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_cancels_the_upstream_and_usage_is_charged(
    http: httpx.AsyncClient, server: Server, emulator: Emulator, stream: bool
) -> None:
    emulator.script("stall:after=4")
    request = {**chat("going away"), "stream": stream}
    async with trio.open_nursery() as nursery:

        async def client() -> None:
            async with http.stream("POST", "/v1/messages", json=request) as response:
                async for _ in response.aiter_bytes():
                    nursery.cancel_scope.cancel()  # the first bytes came: hang up

        nursery.start_soon(client)
        if not stream:
            # A JSON answer sends nothing before the end: hang up once the upstream stalled.
            record = await first_call(emulator)
            await trio.testing.wait_all_tasks_blocked()
            assert record.events_sent == 4 and not record.finished.is_set()
            nursery.cancel_scope.cancel()
    record = api_calls(emulator)[0]
    await record.finished.wait()
    assert record.disconnected and not record.completed
    await trio.testing.wait_all_tasks_blocked()
    summary = await server.gateway.cost("http-default")
    assert summary.total_cost_usd > 0 and summary.model_usage[MODEL].input_tokens > 0


# Every metric README documents: (family name as the parser reports it, type).
DOCUMENTED_METRICS = {
    ("switchboard_queries", "counter"),
    ("switchboard_query_errors", "counter"),
    ("switchboard_query_duration_seconds", "histogram"),
    ("switchboard_active_queries", "gauge"),
    ("switchboard_active_sessions", "gauge"),
    ("switchboard_retries", "counter"),
    ("switchboard_fallbacks", "counter"),
    ("switchboard_upstream_latency_seconds", "histogram"),
    ("switchboard_time_to_first_token_seconds", "histogram"),
    ("switchboard_tokens", "counter"),
    ("switchboard_cost_usd", "counter"),
    ("switchboard_overloaded", "gauge"),
    ("switchboard_http_requests", "counter"),
}


async def scrape(http: httpx.AsyncClient) -> dict[str, Metric]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def sample(family: Metric, suffix: str = "", **labels: str) -> float:
    return sum(
        float(s.value)
        for s in family.samples
        if s.name == family.name + suffix and labels.items() <= s.labels.items()
    )


async def test_metrics_are_scraped_and_parse(http: httpx.AsyncClient, emulator: Emulator) -> None:
    emulator.script("stall:after=4")
    before = await scrape(http)
    assert {(name, family.type) for name, family in before.items()} >= DOCUMENTED_METRICS
    assert sample(before["switchboard_active_sessions"]) == 0
    async with http.stream(
        "POST", "/v1/messages", json={**chat("stalls"), "stream": True}
    ) as stalled:
        async for _ in stalled.aiter_bytes():
            break  # the response began: the session is in use
        during = await scrape(http)
    await (api_calls(emulator)[0]).finished.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert (await http.post("/v1/messages", json=chat())).status_code == 200
    assert (await http.get("/nowhere")).status_code == 404
    after = await scrape(http)
    assert sample(during["switchboard_active_sessions"]) == 1
    assert sample(after["switchboard_active_sessions"]) == 0
    requests = after["switchboard_http_requests"]
    assert sample(requests, "_total", route="messages", status="200") == 2
    assert sample(requests, "_total", route="unknown", status="404") == 1
    assert (
        sample(requests, "_total", route="metrics", status="200") == 2
    )  # this scrape counts after


async def test_repeated_overload_falls_back_inside(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    # Virtual time: the async client runs in this trio run, so the overload gate's waits
    # (0.5 s, then 1 s) take no real time.
    emulator.script(*["529:retry_after=0"] * 3)
    headers = {"x-switchboard-fallback-model": "claude-sonnet-4-6"}
    async with anthropic.AsyncAnthropic(
        api_key="k", base_url=server.http_url, max_retries=0
    ) as client:
        message = await client.messages.create(
            **chat("fall back", model="claude-opus-4-6"), extra_headers=headers
        )
    assert message.model == "claude-sonnet-4-6" and message.content[0].type == "text"
    models = [call_.json["model"] for call_ in api_calls(emulator)]  # type: ignore[index]
    assert models == ["claude-opus-4-6"] * 3 + ["claude-sonnet-4-6"]
