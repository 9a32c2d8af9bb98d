"""RetrySupervisor on its own (actors/retry_supervisor.py, actors/supervisor/run.py), through its
messages: a ``RunQuery`` in, the query's frames out on its outbound channel, which the run
closes after exactly one terminal frame. Behind it run the real StreamRelay and ClientPool
over an httpx ``MockTransport`` upstream, and a fake CostLedger: all in memory, so the
backoff waits run on the ``autojump_clock`` (tests/README.md)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from actor_fakes import (
    OPUS,
    SONNET,
    FakeLedger,
    Handler,
    Upstream,
    config,
    error_response,
    message_events,
    sse,
    stream_response,
)

import actors.client_pool
from actors._util import ask
from actors.client_pool import ClientPool
from actors.config.settings import Config
from actors.messages.pool import Acquire, ClientPoolAddress, Lease
from actors.messages.supervisor import RetrySupervisorAddress, RunQuery
from actors.retry_supervisor import RetrySupervisor
from actors.stream_relay import StreamRelay
from actors.upstream.credentials import Credential
from protocol.frames import (
    TERMINAL_FRAMES,
    Aborted,
    Done,
    ErrorFrame,
    EventFrame,
    Fallback,
    GatewayFrame,
    Heartbeat,
    Query,
    RetryFrame,
    Tombstone,
)


@dataclass
class Rig:
    upstream: Upstream
    ledger: FakeLedger
    supervisor: RetrySupervisorAddress
    pool: ClientPoolAddress


async def rig(nursery: trio.Nursery, upstream: Upstream, **changes: Any) -> Rig:
    settings = config(**changes)
    ledger = FakeLedger()
    to_ledger = await nursery.start(ledger.run)
    to_pool = await nursery.start(ClientPool(settings, transport=upstream.transport).run)
    relay = StreamRelay(to_pool=to_pool.clone(), to_ledger=to_ledger.clone())
    to_relay = await nursery.start(relay.run)
    supervisor = RetrySupervisor(
        config=settings, to_relay=to_relay, to_ledger=to_ledger, to_pool=to_pool.clone(), rng=random.Random(1234)
    )
    return Rig(upstream, ledger, await nursery.start(supervisor.run), to_pool)


def chat(model: str = SONNET) -> dict[str, Any]:
    return {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}]}


@dataclass
class Running:
    frames: trio.MemoryReceiveChannel[GatewayFrame]
    scope: trio.CancelScope

    async def until_closed(self) -> list[GatewayFrame]:
        """Every frame of the query, until the run closes its channel."""
        return [frame async for frame in self.frames]


async def start(supervisor: RetrySupervisorAddress, query_id: str = "q1", **query: Any) -> Running:
    outbound, frames = trio.open_memory_channel[GatewayFrame](256)
    scope = trio.CancelScope()
    request = query.pop("request", None) or chat()
    with outbound:
        await supervisor.send(RunQuery(
            session_id="s1", query=Query(id=query_id, request=request, **query), scope=scope, outbound=outbound.clone()
        ))
    return Running(frames, scope)


async def run(supervisor: RetrySupervisorAddress, **query: Any) -> list[GatewayFrame]:
    frames = await (await start(supervisor, **query)).until_closed()
    assert_one_terminal(frames)
    return frames


def assert_one_terminal(frames: list[GatewayFrame]) -> None:
    terminals = [frame for frame in frames if isinstance(frame, TERMINAL_FRAMES)]
    assert terminals == frames[-1:], frames


def kinds(frames: list[GatewayFrame]) -> list[str]:
    """Frame types, a run of event frames as ``EventFrame*``, heartbeats left out."""
    out: list[str] = []
    for frame in frames:
        name = type(frame).__name__ + ("*" if isinstance(frame, EventFrame) else "")
        if not isinstance(frame, Heartbeat) and not (out and out[-1] == name == "EventFrame*"):
            out.append(name)
    return out


def complete(text: str = "Hello", model: str = SONNET) -> httpx.Response:
    return stream_response(sse(*message_events(text, model=model)))


async def test_a_clean_query_relays_its_events_and_ends_with_done(nursery: trio.Nursery) -> None:
    parts = await rig(nursery, Upstream(complete("All good")))
    frames = await run(parts.supervisor)
    assert kinds(frames) == ["EventFrame*", "Done"]
    done = frames[-1]
    assert isinstance(done, Done) and (done.attempts, done.model, done.stop_reason) == (1, SONNET, "end_turn")
    assert done.message["content"] == [{"type": "text", "text": "All good"}]
    assert [(record.session_id, record.final) for record in parts.ledger.usage] == [("s1", False), ("s1", True)]
    assert len(parts.ledger.durations) == 1


async def test_a_429_is_retried_after_its_retry_after(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    limited = error_response(429, "rate_limit_error", {"retry-after": "7"})
    parts = await rig(nursery, Upstream(limited, complete()))
    frames = await run(parts.supervisor)
    assert kinds(frames) == ["RetryFrame", "EventFrame*", "Done"]
    retry = frames[0]
    assert isinstance(retry, RetryFrame)
    assert (retry.attempt, retry.delay_ms, retry.error.status, retry.error.type) == (1, 7000, 429, "rate_limit_error")
    first, second = parts.upstream.times
    assert second - first >= 7.0
    done = frames[-1]
    assert isinstance(done, Done) and done.attempts == 2


async def test_three_529s_on_opus_fall_back_to_the_query_fallback_model(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    overloaded = [error_response(529, "overloaded_error") for _ in range(3)]
    parts = await rig(nursery, Upstream(*overloaded, complete(model=SONNET)))
    frames = await run(parts.supervisor, request=chat(OPUS), fallback_model=SONNET)
    assert kinds(frames) == ["RetryFrame", "RetryFrame", "Fallback", "EventFrame*", "Done"]
    fallback = next(frame for frame in frames if isinstance(frame, Fallback))
    assert (fallback.from_model, fallback.to_model, fallback.reason) == (OPUS, SONNET, "overloaded")
    assert [body["model"] for body in parts.upstream.bodies()] == [OPUS, OPUS, OPUS, SONNET]
    done = frames[-1]
    assert isinstance(done, Done) and (done.model, done.attempts) == (SONNET, 4)


async def test_a_request_error_is_not_retried(nursery: trio.Nursery) -> None:
    parts = await rig(nursery, Upstream(error_response(400, "invalid_request_error")))
    frames = await run(parts.supervisor)
    assert kinds(frames) == ["ErrorFrame"]
    error = frames[0]
    assert isinstance(error, ErrorFrame) and (error.error.status, error.error.type) == (400, "invalid_request_error")
    assert len(parts.upstream.requests) == 1


async def test_a_reset_connection_is_retried_and_turns_the_pools_keep_alive_off(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)

    parts = await rig(nursery, Upstream(reset, complete()))
    frames = await run(parts.supervisor)
    assert kinds(frames) == ["RetryFrame", "EventFrame*", "Done"]
    retry = frames[0]
    assert isinstance(retry, RetryFrame) and retry.error.type == "connection_error"
    lease: Lease = await ask(parts.pool, lambda reply: Acquire(reply=reply))
    assert not lease.client.keep_alive


async def test_abort_ends_the_query_with_one_aborted_frame_and_records_its_usage(nursery: trio.Nursery) -> None:
    opened = trio.Event()

    async def stall_after_two(index: int) -> None:
        if index == 2:
            opened.set()
        if index >= 2:
            await trio.sleep_forever()

    parts = await rig(nursery, Upstream(stream_response(sse(*message_events()), gate=stall_after_two)))
    running = await start(parts.supervisor)
    await opened.wait()
    running.scope.cancel()
    frames = await running.until_closed()
    assert_one_terminal(frames)
    assert kinds(frames) == ["EventFrame*", "Aborted"]
    aborted = frames[-1]
    assert isinstance(aborted, Aborted) and aborted.usage["input_tokens"] == 10
    (final,) = parts.ledger.finals()
    assert final.usage.estimated


async def test_a_query_that_fails_unexpectedly_ends_alone(nursery: trio.Nursery) -> None:
    held = trio.Event()

    async def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in the transport")

    async def held_back(request: httpx.Request) -> httpx.Response:
        await held.wait()
        return complete("still here")

    handlers: list[Handler] = [held_back, broken]
    parts = await rig(nursery, Upstream(*handlers))
    bystander = await start(parts.supervisor, query_id="ok")
    await trio.testing.wait_all_tasks_blocked()
    failed = await run(parts.supervisor, query_id="bad")
    assert kinds(failed) == ["ErrorFrame"]
    error = failed[0]
    assert isinstance(error, ErrorFrame) and error.error.type == "internal_error"
    held.set()
    frames = await bystander.until_closed()
    assert_one_terminal(frames)
    assert kinds(frames) == ["EventFrame*", "Done"]


async def test_a_client_that_went_away_still_has_its_usage_recorded(nursery: trio.Nursery) -> None:
    opened, resume = trio.Event(), trio.Event()

    async def hold_at_two(index: int) -> None:
        if index == 2:
            opened.set()
            await resume.wait()

    parts = await rig(nursery, Upstream(stream_response(sse(*message_events()), gate=hold_at_two)))
    running = await start(parts.supervisor)
    await opened.wait()
    running.frames.close()
    resume.set()
    await trio.testing.wait_all_tasks_blocked()
    # The relay stopped at the closed channel; the upstream's bill so far is still kept.
    (final,) = parts.ledger.finals()
    assert final.usage.estimated and final.session_id == "s1"


async def test_a_401_refreshes_the_credential_and_retries_with_the_new_one(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    loads: list[str] = []

    async def rotating(config: Config) -> Credential:
        loads.append(f"key-{len(loads) + 1}")
        return Credential(api_key=loads[-1])

    # A trio function, not the helper process: no thread hop under the autojump clock.
    monkeypatch.setattr(actors.client_pool, "load_credential", rotating)
    parts = await rig(nursery, Upstream(error_response(401, "authentication_error"), complete()))
    frames = await run(parts.supervisor)
    assert kinds(frames) == ["RetryFrame", "EventFrame*", "Done"]
    assert [request.headers["x-api-key"] for request in parts.upstream.requests] == ["key-1", "key-2"]
    assert loads == ["key-1", "key-2"]


async def test_a_stream_cut_mid_answer_is_voided_and_answered_again(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    whole = {
        "id": "msg_whole", "type": "message", "role": "assistant", "model": SONNET,
        "content": [{"type": "text", "text": "second try"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    cut = stream_response(sse(*message_events()[:3]))
    parts = await rig(nursery, Upstream(cut, httpx.Response(200, json=whole)))
    frames = await run(parts.supervisor)
    assert kinds(frames) == ["EventFrame*", "Tombstone", "RetryFrame", "EventFrame*", "Done"]
    tombstone = next(frame for frame in frames if isinstance(frame, Tombstone))
    assert tombstone.attempt == 1
    done = frames[-1]
    assert isinstance(done, Done) and done.attempts == 2
    assert done.message["content"] == [{"type": "text", "text": "second try"}]
    # After a stream broke mid-answer the reference client asks without streaming.
    assert [body.get("stream") for body in parts.upstream.bodies()] == [True, None]
    # Both attempts are billed: the cut one by estimate.
    assert [record.usage.estimated for record in parts.ledger.finals()] == [True, False]
