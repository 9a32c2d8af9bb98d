"""Every retry rule of docs/reference/reference-client.md 1 and 2, as a client sees it, in virtual time.

Each test drives the gateway through the emulator over loopback and asserts the exact
frames, delays and upstream requests. Jitter comes from ``random.Random(1234)`` (the
``config`` fixture's seed): one draw per failed attempt, in order.
"""

from __future__ import annotations

import functools
import random
import time
from typing import Any

import msgspec
import pytest
import trio
from harness import Client, chat, connect

from actors.config.settings import Config
from actors.server import Server, run_server
from emulator import Emulator
from protocol.frames import (
    Done,
    ErrorFrame,
    EventFrame,
    Fallback,
    FastMode,
    GatewayFrame,
    RetryFrame,
    Tombstone,
)
from protocol.retry import backoff

OPUS = "claude-opus-4-6"
SONNET = "claude-sonnet-4-6"
OVERFLOW = "input length and `max_tokens` exceed context limit: {} + 20000 > 200000, decrease input length or `max_tokens` and try again"


def jitter(n: int) -> list[float]:
    rng = random.Random(1234)
    return [rng.random() for _ in range(n)]


async def serve(nursery: trio.Nursery, config: Config, **changes: Any) -> Server:
    server: Server = await nursery.start(functools.partial(run_server, msgspec.structs.replace(config, **changes)))
    return server


async def run_query(server: Server, **query: Any) -> list[GatewayFrame]:
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", **query)
        return await client.until_terminal("q")


def kinds(frames: list[GatewayFrame]) -> list[str]:
    names = [type(f).__name__ for f in frames]
    out: list[str] = []
    for name in names:
        if name == "EventFrame" and out and out[-1] == "EventFrame*":
            continue
        out.append("EventFrame*" if name == "EventFrame" else name)
    return out


async def test_x_should_retry_false_stops_a_503_and_true_retries_a_400(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("503:should_retry=false")
    frames = await run_query(server, request=chat())
    assert kinds(frames) == ["ErrorFrame"]
    emulator.script("400:should_retry=true")
    frames = await run_query(server, request=chat())
    assert kinds(frames) == ["RetryFrame", "EventFrame*", "Done"]


async def test_retry_after_ms_and_http_date_are_understood(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("429:retry_after_ms=2500,retry_after=9")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        retry = await client.receive()
        t0 = trio.current_time()
        await emulator.wait_for_request(1)
        assert isinstance(retry, RetryFrame) and retry.delay_ms == 2500
        assert trio.current_time() - t0 == pytest.approx(2.5)
        await client.until_terminal("q")


async def test_max_retries_from_the_environment_config(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await serve(nursery, config, max_retries=1)
    emulator.script("500", "500")
    frames = await run_query(server, request=chat())
    assert kinds(frames) == ["RetryFrame", "ErrorFrame"]
    assert frames[0].max_retries == 1  # type: ignore[union-attr]


async def test_background_sources_fail_on_the_first_529_foreground_retries(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("529")
    frames = await run_query(server, request=chat(), source="title_generation")
    assert kinds(frames) == ["ErrorFrame"]
    error = frames[0]
    assert isinstance(error, ErrorFrame) and error.error.status == 529 and "title_generation" in error.error.message
    emulator.script("529")
    frames = await run_query(server, request=chat(), source="repl_main_thread")
    assert kinds(frames) == ["RetryFrame", "EventFrame*", "Done"]


async def test_three_529s_on_opus_fall_back_with_tombstone_and_no_old_thinking(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("529", "529", "overloaded_midstream:after=3")
    request = chat(model=OPUS)
    request["messages"] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "sig"}, {"type": "text", "text": "a"}]},
        {"role": "user", "content": "second"},
    ]
    frames = await run_query(server, request=request, fallback_model=SONNET)
    assert kinds(frames) == ["RetryFrame", "RetryFrame", "EventFrame*", "Tombstone", "Fallback", "EventFrame*", "Done"]
    fallback = next(f for f in frames if isinstance(f, Fallback))
    assert (fallback.from_model, fallback.to_model, fallback.reason) == (OPUS, SONNET, "overloaded")
    tomb = next(f for f in frames if isinstance(f, Tombstone))
    assert tomb.attempt == 3
    done = frames[-1]
    assert isinstance(done, Done) and done.model == SONNET and done.attempts == 4
    assert {f.attempt for f in frames[-6:-1] if isinstance(f, EventFrame)} == {4}
    assert [r.json["model"] for r in emulator.requests] == [OPUS, OPUS, OPUS, SONNET]  # type: ignore[index]
    sent = emulator.requests[3].json["messages"][1]["content"]  # type: ignore[index]
    assert sent == [{"type": "text", "text": "a"}]
    assert emulator.requests[3].json["stream"] is True  # type: ignore[index]


async def test_three_529s_on_opus_without_fallback_is_repeated_overload(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("529", "529", "529")
    frames = await run_query(server, request=chat(model=OPUS))
    assert kinds(frames) == ["RetryFrame", "RetryFrame", "ErrorFrame"]
    error = frames[-1]
    assert isinstance(error, ErrorFrame) and error.error.type == "repeated_overload"
    assert len(emulator.requests) == 3


async def test_529s_on_sonnet_are_ordinary_retries(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script(*["529"] * 5)
    frames = await run_query(server, request=chat(model=SONNET), fallback_model="claude-haiku-4-5")
    assert kinds(frames) == ["RetryFrame"] * 5 + ["EventFrame*", "Done"]
    draws = jitter(5)
    assert [f.delay_ms for f in frames[:5]] == [round(backoff(n, draws[n - 1]) * 1000) for n in range(1, 6)]  # type: ignore[union-attr]


async def test_fallback_for_all_primary_models_widens_it(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await serve(nursery, config, fallback_for_all_models=True)
    emulator.script("529", "529", "529")
    frames = await run_query(server, request=chat(model=SONNET), fallback_model="claude-haiku-4-5")
    assert kinds(frames) == ["RetryFrame", "RetryFrame", "Fallback", "EventFrame*", "Done"]


async def test_context_overflow_retries_at_once_with_smaller_max_tokens(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("context_overflow:input=150000,limit=200000")
    t0 = trio.current_time()
    frames = await run_query(server, request=chat(max_tokens=60000))
    assert kinds(frames) == ["RetryFrame", "EventFrame*", "Done"]
    retry = frames[0]
    assert isinstance(retry, RetryFrame) and retry.delay_ms == 0 and retry.error.status == 400
    assert trio.current_time() == t0
    assert emulator.requests[1].json["max_tokens"] == 200000 - 150000 - 1000  # type: ignore[index]


async def test_context_overflow_below_the_floor_gives_up(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("context_overflow:input=198000,limit=200000")
    frames = await run_query(server, request=chat())
    assert kinds(frames) == ["ErrorFrame"]
    assert frames[0].error.type == "invalid_request_error"  # type: ignore[union-attr]


async def test_prompt_too_long_and_media_errors_end_with_their_own_types(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("prompt_too_long:tokens=213021,limit=200000")
    frames = await run_query(server, request=chat())
    error = frames[0]
    assert isinstance(error, ErrorFrame) and error.error.type == "prompt_too_long"
    assert (error.error.prompt_tokens, error.error.max_prompt_tokens) == (213021, 200000)
    emulator.script("400:message=messages.0.content.0.image.source.base64%3A image exceeds 5 MB maximum")
    frames = await run_query(server, request=chat())
    assert isinstance(frames[0], ErrorFrame) and frames[0].error.type == "media_too_large"


async def fast_query(client: Client, query_id: str) -> list[GatewayFrame]:
    await client.send(type="query", id=query_id, request=chat(model=OPUS), fast_mode=True)
    return await client.until_terminal(query_id)


async def test_fast_mode_short_retry_after_waits_and_keeps_fast_mode(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("429:retry_after=5")
    async with connect(server) as client:
        await client.receive()
        frames = await fast_query(client, "q")
    assert kinds(frames) == ["RetryFrame", "EventFrame*", "Done"]
    assert frames[0].delay_ms == 5000  # type: ignore[union-attr]
    for record in emulator.requests:
        assert record.json["speed"] == "fast"  # type: ignore[index]
        assert "fast-mode-2026-02-01" in record.headers["anthropic-beta"]


async def test_fast_mode_long_retry_after_starts_a_cooldown_shared_by_sessions(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("429:retry_after=120")
    async with connect(server, session="a") as first:
        await first.receive()
        frames = await fast_query(first, "q")
    assert kinds(frames) == ["FastMode", "RetryFrame", "EventFrame*", "Done"]
    off = frames[0]
    assert isinstance(off, FastMode) and not off.active and off.reason == "rate_limit"
    assert off.until_ms is not None
    assert frames[1].delay_ms == 0  # type: ignore[union-attr]
    assert "speed" not in emulator.requests[1].json  # type: ignore[operator]
    # Another session, same model, still inside the 10-minute cooldown: standard speed.
    async with connect(server, session="b") as second:
        await second.receive()
        frames = await fast_query(second, "q2")
    assert kinds(frames) == ["FastMode", "EventFrame*", "Done"]
    assert frames[0].reason == "cooldown" and frames[0].until_ms == off.until_ms  # type: ignore[union-attr]
    assert "speed" not in emulator.requests[2].json  # type: ignore[operator]
    assert "fast-mode-2026-02-01" in emulator.requests[2].headers["anthropic-beta"]
    # Past the cooldown, fast mode is back.
    await trio.sleep(10 * 60)
    async with connect(server, session="c") as third:
        await third.receive()
        frames = await fast_query(third, "q3")
    assert kinds(frames) == ["EventFrame*", "Done"]
    assert emulator.requests[3].json["speed"] == "fast"  # type: ignore[index]


async def test_fast_mode_overage_disabled_and_not_enabled_turn_it_off_for_good(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("429:overage_disabled_reason=org_level_disabled")
    async with connect(server) as client:
        await client.receive()
        frames = await fast_query(client, "q")
        assert kinds(frames) == ["FastMode", "RetryFrame", "EventFrame*", "Done"]
        assert frames[0].reason == "org_level_disabled" and frames[0].until_ms is None  # type: ignore[union-attr]
        frames = await fast_query(client, "q2")
        assert kinds(frames) == ["EventFrame*", "Done"]
    assert "speed" not in emulator.requests[-1].json  # type: ignore[operator]


async def test_fast_mode_not_enabled_400(server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock) -> None:
    emulator.script("400:message=Fast mode is not enabled for your organization")
    async with connect(server) as client:
        await client.receive()
        frames = await fast_query(client, "q")
    assert kinds(frames) == ["FastMode", "RetryFrame", "EventFrame*", "Done"]
    assert frames[0].reason == "not_enabled"  # type: ignore[union-attr]


async def test_a_401_with_a_static_key_fails_at_once(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("401")
    frames = await run_query(server, request=chat())
    assert kinds(frames) == ["ErrorFrame"]
    assert frames[0].error.type == "authentication_error"  # type: ignore[union-attr]
    assert len(emulator.requests) == 1


async def test_watchdog_voids_a_stalled_stream_and_falls_back_to_non_streaming(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await serve(nursery, config, stream_idle_timeout=90.0)
    emulator.script("stall:after=4,seconds=3600")
    t0 = trio.current_time()
    frames = await run_query(server, request=chat("stalls"))
    assert kinds(frames) == ["EventFrame*", "Tombstone", "RetryFrame", "EventFrame*", "Done"]
    retry = frames[5]
    assert isinstance(retry, RetryFrame) and retry.error.type == "timeout_error" and retry.delay_ms == 0
    assert trio.current_time() - t0 == pytest.approx(90.0)
    assert "stream" not in emulator.requests[1].json  # type: ignore[operator]
    done = frames[-1]
    assert isinstance(done, Done) and done.message["content"][0]["text"] == "Echo: stalls"


async def test_without_the_non_streaming_fallback_a_broken_stream_is_streamed_again(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await serve(nursery, config, nonstreaming_fallback=False)
    emulator.script("overloaded_midstream:after=3")
    frames = await run_query(server, request=chat())
    assert kinds(frames) == ["EventFrame*", "Tombstone", "RetryFrame", "EventFrame*", "Done"]
    assert frames[4].delay_ms == round(backoff(1, jitter(1)[0]) * 1000)  # type: ignore[union-attr]
    assert emulator.requests[1].json["stream"] is True  # type: ignore[index]


async def test_persistent_retry_waits_for_the_unified_reset_with_heartbeats(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server = await serve(nursery, config, unattended_retry=True, max_retries=1)
    # The supervisor's wall clock is real time at start plus trio's (virtual) time since.
    reset = int(time.time() + 95)
    emulator.script(f"429:reset={reset}", "529", "529", "529")
    frames = await run_query(server, request=chat())
    names = kinds(frames)
    assert names[0] == "RetryFrame" and names.count("RetryFrame") == 4 and names[-1] == "Done"
    first = frames[0]
    # Tolerant on purpose: int() drops up to 1 s and the real seconds a loaded machine spends
    # before the supervisor reads its wall clock come off the wait; 95 s is the exact upper bound.
    assert isinstance(first, RetryFrame) and 85_000 <= first.delay_ms <= 95_000
    beats = [f for f in frames[1 : names.index("EventFrame*")] if type(f).__name__ == "Heartbeat"]
    assert len(beats) >= 3  # 3 beats in a 95 s wait


async def test_query_persistent_flag_needs_the_gateways_permission(
    nursery: trio.Nursery, config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("529", "529")
    frames = await run_query(await serve(nursery, config), request=chat(), persistent=True, max_retries=1)
    assert kinds(frames) == ["RetryFrame", "ErrorFrame"]
    emulator.script("529", "529")
    allowed = await serve(nursery, config, allow_persistent_queries=True)
    frames = await run_query(allowed, request=chat(), persistent=True, max_retries=1)
    assert kinds(frames) == ["RetryFrame", "RetryFrame", "EventFrame*", "Done"]


def event_payloads(frames: list[GatewayFrame]) -> list[dict[str, Any]]:
    return [msgspec.json.decode(f.event) for f in frames if isinstance(f, EventFrame)]


async def test_recover_escalates_a_cut_off_answer_to_64k_output_tokens(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    frames = await run_query(server, request=chat("<<emulator:ok:deltas=12>>", max_tokens=5), recover=True)
    assert kinds(frames) == ["EventFrame*", "Tombstone", "EventFrame*", "Done"]
    first = [e["type"] for e in event_payloads([f for f in frames if getattr(f, "attempt", 0) == 1])]
    assert "message_delta" not in first and "message_stop" not in first  # the cut was withheld
    done = frames[-1]
    assert isinstance(done, Done) and done.stop_reason == "end_turn" and done.attempts == 2
    assert emulator.requests[1].json["max_tokens"] == 64_000  # type: ignore[index]


async def test_recover_continues_a_cut_off_answer_as_one_message(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("max_tokens:limit=3", "max_tokens:limit=3")
    frames = await run_query(server, request=chat("go on and on", max_tokens=64_000), recover=True)
    assert kinds(frames) == ["EventFrame*", "Done"]
    events = event_payloads(frames)
    assert [e["type"] for e in events].count("message_start") == 1
    assert [e["type"] for e in events].count("message_stop") == 1
    starts = [e["index"] for e in events if e["type"] == "content_block_start"]
    assert starts == [0, 1, 2]  # the three parts' blocks, numbered as one message
    done = frames[-1]
    assert isinstance(done, Done) and done.stop_reason == "end_turn" and done.attempts == 3
    assert len(done.message["content"]) == 3
    second = emulator.requests[1].json["messages"]  # type: ignore[index]
    assert second[-2]["role"] == "assistant" and second[-1]["content"][0]["text"].startswith("Output token limit hit.")


async def test_recover_gives_up_after_three_continuations_with_the_cut_answer(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script(*["max_tokens:limit=2"] * 4)
    frames = await run_query(server, request=chat("endless", max_tokens=64_000), recover=True)
    done = frames[-1]
    assert isinstance(done, Done) and done.stop_reason == "max_tokens" and done.attempts == 4
    assert len(done.message["content"]) == 4


async def test_without_recover_a_cut_off_answer_just_ends(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    frames = await run_query(server, request=chat("<<emulator:ok:deltas=12>>", max_tokens=5))
    assert kinds(frames) == ["EventFrame*", "Done"]
    assert frames[-1].stop_reason == "max_tokens"  # type: ignore[union-attr]
