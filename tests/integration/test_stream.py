"""One streamed query end to end over real loopback sockets: relay, assembly, cost."""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec
import pytest
import trio
from harness import chat, connect

from actors.server import Server, open_gateway
from emulator import Emulator
from protocol.frames import (
    Aborted,
    CostFrame,
    Done,
    ErrorFrame,
    EventFrame,
    GatewayFrame,
    Ready,
    RetryFrame,
    TokenCount,
    Tombstone,
)
from protocol.pricing import cost_of, usd
from protocol.retry import retry_delay
from protocol.usage import Usage

TODAY_INDEPENDENT_MODEL = "claude-sonnet-4-6"


def event_types(frames: Sequence[object]) -> list[str]:
    return [msgspec.json.decode(f.event)["type"] for f in frames if isinstance(f, EventFrame)]


async def test_streamed_answer_is_relayed_in_order_and_assembled(server: Server, emulator: Emulator) -> None:
    async with connect(server) as client:
        ready = await client.receive()
        assert isinstance(ready, Ready)
        assert ready.session_id == "s1" and ready.resumed is False and ready.protocol == 1
        await client.send(type="query", id="q1", request=chat("Hello there"))
        frames = await client.until_terminal("q1")
    events = [f for f in frames if isinstance(f, EventFrame)]
    types = event_types(events)
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types[1] == "content_block_start" and "ping" in types and "message_delta" in types
    assert {f.attempt for f in events} == {1} and {f.model for f in events} == {TODAY_INDEPENDENT_MODEL}
    done = frames[-1]
    assert isinstance(done, Done)
    assert done.message["content"] == [{"type": "text", "text": "Echo: Hello there"}]
    assert done.stop_reason == "end_turn" and done.attempts == 1
    # The relayed bytes are the upstream's own: the deltas joined give the assembled text.
    deltas = [msgspec.json.decode(f.event) for f in events]
    text = "".join(d["delta"]["text"] for d in deltas if d["type"] == "content_block_delta")
    assert text == "Echo: Hello there"
    usage = done.usage
    expected = cost_of(
        Usage(input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"]),
        TODAY_INDEPENDENT_MODEL,
        on="2026-11-26",
    )
    assert usage["output_tokens"] > 0 and usage["input_tokens"] > 0
    assert done.cost_usd == pytest.approx(usd(expected.total_pico), abs=1e-12)
    assert done.session_cost_usd == done.cost_usd
    assert emulator.requests[0].headers["x-api-key"].startswith("sk-ant-test")
    assert emulator.requests[0].json["stream"] is True  # type: ignore[index]


async def test_thinking_and_tool_use_are_assembled(server: Server) -> None:
    request = chat("What is the weather? use get_weather")
    request["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    request["max_tokens"] = 4096
    request["tools"] = [
        {
            "name": "get_weather",
            "description": "Get weather",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
        }
    ]
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="t", request=request)
        done = (await client.until_terminal("t"))[-1]
    assert isinstance(done, Done)
    kinds = [block["type"] for block in done.message["content"]]
    assert kinds[0] == "thinking" and "tool_use" in kinds
    thinking = done.message["content"][0]
    assert thinking["thinking"] and thinking["signature"]
    tool = next(b for b in done.message["content"] if b["type"] == "tool_use")
    assert tool["name"] == "get_weather" and isinstance(tool["input"], dict) and "location" in tool["input"]
    assert done.stop_reason == "tool_use"


async def test_fifty_sessions_each_get_exactly_their_own_events(server: Server) -> None:
    results: dict[str, list[GatewayFrame]] = {}

    async def one(n: int) -> None:
        async with connect(server, session=f"many-{n}") as client:
            await client.receive()
            await client.send(type="query", id="q", request=chat(f"session number {n}"))
            results[f"many-{n}"] = await client.until_terminal("q")

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(one, n)
    assert len(results) == 50
    for name, frames in results.items():
        number = name.split("-")[1]
        done = frames[-1]
        assert isinstance(done, Done)
        assert done.message["content"][0]["text"] == f"Echo: session number {number}"
        deltas = [msgspec.json.decode(f.event) for f in frames if isinstance(f, EventFrame)]
        text = "".join(d["delta"]["text"] for d in deltas if d["type"] == "content_block_delta")
        assert text == f"Echo: session number {number}"


async def test_abort_mid_stream_closes_upstream_and_records_usage(server: Server, emulator: Emulator) -> None:
    emulator.script("stall:after=4")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat("a long answer"))
        seen = 0
        while seen < 4:
            frame = await client.receive()
            assert isinstance(frame, EventFrame)
            seen += 1
        await client.send(type="abort", id="q")
        frames = await client.until_terminal("q")
        aborted = frames[-1]
        # The client gets the ``aborted`` terminal frame (and no other end), with the usage
        # of what was relayed.
        assert isinstance(aborted, Aborted) and not any(isinstance(f, Done | ErrorFrame) for f in frames)
        assert aborted.usage["input_tokens"] > 0 and aborted.cost_usd > 0
        record = emulator.requests[0]
        await record.finished.wait()
        assert record.disconnected and not record.completed
        await client.send(type="get_cost")
        cost = await client.receive()
    # The ledger recorded exactly that.
    assert isinstance(cost, CostFrame) and aborted.cost_recorded
    assert cost.cost.total_cost_usd == pytest.approx(aborted.cost_usd)
    usage = cost.cost.model_usage["claude-sonnet-4-6"]
    assert usage.input_tokens == aborted.usage["input_tokens"]
    assert usage.output_tokens == aborted.usage["output_tokens"]


async def test_client_disconnect_cancels_upstream_and_records_usage(server: Server, emulator: Emulator) -> None:
    emulator.script("stall:after=3")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat("going away"))
        for _ in range(3):
            assert isinstance(await client.receive(), EventFrame)
    record = emulator.requests[0]
    await record.finished.wait()
    assert record.disconnected
    # The relay closed the upstream before recording in its shielded cleanup; what is left
    # of that cleanup is channel work, done once every task is blocked again.
    await trio.testing.wait_all_tasks_blocked()
    summary = await server.gateway.cost("s1")
    assert summary.model_usage["claude-sonnet-4-6"].input_tokens > 0


async def test_retryable_errors_retried_with_reference_delays(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("529", "429", "500", "429:retry_after=7")
    rng = random.Random(1234)
    expected = [retry_delay(n, None, rng.random()) for n in (1, 2, 3)]
    rng.random()
    expected.append(7.0)
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        retries: list[RetryFrame] = []
        for n in range(4):
            frame = await client.receive()
            assert isinstance(frame, RetryFrame), frame
            sent_at = trio.current_time()
            retries.append(frame)
            await emulator.wait_for_request(n + 1)
            assert trio.current_time() - sent_at == pytest.approx(expected[n], abs=1e-9)
        frames = await client.until_terminal("q")
    assert [r.attempt for r in retries] == [1, 2, 3, 4]
    assert [r.delay_ms for r in retries] == [round(d * 1000) for d in expected]
    assert [r.error.status for r in retries] == [529, 429, 500, 429]
    assert [r.error.type for r in retries] == ["overloaded_error", "rate_limit_error", "api_error", "rate_limit_error"]
    assert all(r.max_retries == 10 and r.error.request_id for r in retries)
    done = frames[-1]
    assert isinstance(done, Done) and done.attempts == 5
    assert [f for f in frames if isinstance(f, Tombstone)] == []


async def test_overload_mid_stream_tombstones_and_retries(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("overloaded_midstream:after=4")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat("partial then overloaded"))
        frames = await client.until_terminal("q")
    kinds = [type(f).__name__ for f in frames]
    tomb = kinds.index("Tombstone")
    assert kinds[:tomb] == ["EventFrame"] * 4
    assert kinds[tomb + 1] == "RetryFrame"
    retry = frames[tomb + 1]
    assert isinstance(retry, RetryFrame) and retry.error.type == "overloaded_error" and retry.error.status is None
    done = frames[-1]
    assert isinstance(done, Done) and done.attempts == 2
    assert {f.attempt for f in frames[tomb + 2 : -1] if isinstance(f, EventFrame)} == {2}
    # The failed attempt's input was billed too: counted in the query's usage.
    assert done.usage["input_tokens"] == 2 * frames_input(frames)


def frames_input(frames: Sequence[object]) -> int:
    start = next(f for f in frames if isinstance(f, EventFrame))
    return int(msgspec.json.decode(start.event)["message"]["usage"]["input_tokens"])


async def test_non_retryable_error_ends_with_upstream_error(server: Server, emulator: Emulator) -> None:
    emulator.script("400:message=bad things")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        frames = await client.until_terminal("q")
    assert len(frames) == 1
    error = frames[0]
    assert isinstance(error, ErrorFrame)
    assert error.error.type == "invalid_request_error" and error.error.status == 400
    assert error.error.message == "bad things" and error.error.request_id


async def test_retries_exhausted_gives_up_with_the_last_error(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script(*["503"] * 3)
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat(), max_retries=2)
        frames = await client.until_terminal("q")
    assert [type(f).__name__ for f in frames] == ["RetryFrame", "RetryFrame", "ErrorFrame"]
    assert frames[-1].error.status == 503  # type: ignore[union-attr]
    assert len(emulator.requests) == 3


async def test_count_tokens_and_get_cost(server: Server) -> None:
    async with connect(server) as client:
        await client.receive()
        await client.send(type="count_tokens", id="c", request={"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]})
        count = await client.receive()
        assert isinstance(count, TokenCount) and count.id == "c" and count.input_tokens > 0
        await client.send(type="get_cost")
        cost = await client.receive()
        assert isinstance(cost, CostFrame) and cost.cost.session_id == "s1" and cost.cost.total_cost_usd == 0


async def test_query_embedded_in_a_callers_nursery(config: object) -> None:
    async with open_gateway(config) as gateway:  # type: ignore[arg-type]
        async with gateway.query(chat("embedded"), session_id="embed") as frames:
            received = [frame async for frame in frames]
        done = received[-1]
        assert isinstance(done, Done)
        assert done.message["content"][0]["text"] == "Echo: embedded"
        assert all(isinstance(f, EventFrame) for f in received[:-1])
        summary = await gateway.cost("embed")
        assert summary.total_cost_usd == pytest.approx(done.cost_usd)


async def test_leaving_an_embedded_query_early_aborts_it(config: object, emulator: Emulator) -> None:
    emulator.script("stall:after=2")
    async with open_gateway(config) as gateway:  # type: ignore[arg-type]
        async with gateway.query(chat("leave early"), session_id="early") as frames:
            async for frame in frames:
                assert isinstance(frame, EventFrame)
                relayed = msgspec.json.decode(frame.event)
                break
        record = await emulator.wait_for_request(0)
        await record.finished.wait()
        assert record.disconnected
        # The abort still records what was relayed: message_start's usage, in the ledger.
        await trio.testing.wait_all_tasks_blocked()
        summary = await gateway.cost("early")
    assert relayed["type"] == "message_start"
    input_tokens = relayed["message"]["usage"]["input_tokens"]
    assert input_tokens > 0
    assert summary.model_usage["claude-sonnet-4-6"].input_tokens == input_tokens
    assert summary.total_cost_usd > 0
