"""StreamRelay on its own (actors/stream_relay.py, actors/upstream/relay_attempt.py), through its
messages: a ``RunAttempt`` in, event frames on the query's outbound channel, one
``AttemptOutcome`` out, usage records to the (fake) CostLedger. The upstream is an httpx
``MockTransport`` whose SSE body the test releases chunk by chunk (tests/README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import trio
import trio.testing
from actor_fakes import (
    SONNET,
    ChunkedBody,
    FakeLedger,
    Upstream,
    config,
    error_response,
    message_events,
    sse,
    stream_response,
)

from actors._util import ask
from actors.client_pool import ClientPool
from actors.messages.relay import (
    AttemptOutcome,
    CountResult,
    RunAttempt,
    RunCount,
    StreamRelayAddress,
)
from actors.stream_relay import StreamRelay
from protocol.frames import EventFrame, GatewayFrame

REQUEST: dict[str, Any] = {"model": SONNET, "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}]}


class Gates:
    """The upstream body's pace: chunk ``n`` is sent once ``open(n)`` was called."""

    def __init__(self, count: int) -> None:
        self._events = [trio.Event() for _ in range(count)]

    async def wait(self, index: int) -> None:
        await self._events[index].wait()

    def open(self, index: int) -> None:
        self._events[index].set()


@dataclass
class Rig:
    upstream: Upstream
    ledger: FakeLedger
    relay: StreamRelayAddress


async def rig(nursery: trio.Nursery, upstream: Upstream, **options: Any) -> Rig:
    ledger = FakeLedger()
    to_ledger = await nursery.start(ledger.run)
    to_pool = await nursery.start(ClientPool(config(), transport=upstream.transport).run)
    relay: StreamRelayAddress = await nursery.start(StreamRelay(to_pool=to_pool, to_ledger=to_ledger, **options).run)
    return Rig(upstream, ledger, relay)


@dataclass
class Running:
    """One attempt in flight: its frames arrive on ``frames``, its outcome on ``outcome``."""

    frames: trio.MemoryReceiveChannel[GatewayFrame]
    outcome: trio.MemoryReceiveChannel[AttemptOutcome]
    scope: trio.CancelScope

    def received(self) -> list[GatewayFrame]:
        out: list[GatewayFrame] = []
        while True:
            try:
                out.append(self.frames.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return out

    async def result(self) -> AttemptOutcome:
        return await self.outcome.receive()


async def start(
    relay: StreamRelayAddress, *, capacity: int = 64, attempt: int = 1, streaming: bool = True
) -> Running:
    outbound, frames = trio.open_memory_channel[GatewayFrame](capacity)
    reply, outcome = trio.open_memory_channel[AttemptOutcome](1)
    scope = trio.CancelScope()
    await relay.send(RunAttempt(
        session_id="s1", query_id="q1", attempt=attempt, model=SONNET, body=REQUEST,
        outbound=outbound, scope=scope, reply=reply, streaming=streaming,
    ))
    return Running(frames, outcome, scope)


def event_names(frames: list[GatewayFrame]) -> list[str]:
    names = []
    for frame in frames:
        assert isinstance(frame, EventFrame) and (frame.id, frame.attempt, frame.model) == ("q1", 1, SONNET)
        names.append(msgspec.json.decode(frame.event)["type"])
    return names


ALL_EVENTS = [name for name, _ in message_events()]


async def test_each_event_is_relayed_in_order_as_it_arrives(nursery: trio.Nursery) -> None:
    gates = Gates(len(ALL_EVENTS))
    actors = await rig(nursery, Upstream(stream_response(sse(*message_events("Hi there")), gate=gates.wait)))
    running = await start(actors.relay)
    seen: list[GatewayFrame] = []
    for index in range(len(ALL_EVENTS)):
        gates.open(index)
        await trio.testing.wait_all_tasks_blocked()
        # Each event is on the client's channel before the next chunk comes: nothing waits
        # for the rest of the stream.
        seen.extend(running.received())
        assert len(seen) == index + 1
    assert event_names(seen) == ALL_EVENTS
    outcome = await running.result()
    assert outcome.failure is None and not outcome.aborted and outcome.relayed == len(ALL_EVENTS)
    assert outcome.message is not None and outcome.message["content"] == [{"type": "text", "text": "Hi there"}]
    # One provisional record at message_start, one final with the upstream's own count.
    assert [(r.final, r.usage.output_tokens, r.usage.estimated) for r in actors.ledger.usage] == [
        (False, 1, False), (True, 5, False)
    ]
    assert outcome.usage.output_tokens == 5 and outcome.cost_pico == FakeLedger.COST


async def test_the_request_goes_to_the_messages_endpoint_with_the_leased_credential(nursery: trio.Nursery) -> None:
    actors = await rig(nursery, Upstream(stream_response(sse(*message_events()))))
    running = await start(actors.relay)
    assert (await running.result()).failure is None
    (request,) = actors.upstream.requests
    assert (request.method, request.url.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == config().api_key.reveal()  # type: ignore[union-attr]
    body = msgspec.json.decode(request.content)
    assert (body["model"], body["messages"]) == (SONNET, REQUEST["messages"])


async def test_a_stream_cut_before_message_stop_fails_mid_stream_and_bills_an_estimate(nursery: trio.Nursery) -> None:
    actors = await rig(nursery, Upstream(stream_response(sse(*message_events()[:3]))))
    running = await start(actors.relay)
    outcome = await running.result()
    assert event_names(running.received()) == ALL_EVENTS[:3]
    failure = outcome.failure
    assert failure is not None and (failure.kind, failure.mid_stream) == ("protocol", True)
    assert "message_stop" in failure.message
    assert outcome.message is None and outcome.relayed == 3
    (final,) = actors.ledger.finals()
    assert final.usage.estimated and final.usage.input_tokens == 10


async def test_a_connection_reset_mid_stream_is_a_stale_connection_failure(nursery: trio.Nursery) -> None:
    reset = httpx.ReadError("[Errno 104] Connection reset by peer")
    actors = await rig(nursery, Upstream(stream_response(sse(*message_events()[:2]), then=reset)))
    running = await start(actors.relay)
    outcome = await running.result()
    failure = outcome.failure
    assert failure is not None and (failure.kind, failure.mid_stream, failure.stale) == ("connection", True, True)
    assert outcome.relayed == 2 and len(actors.ledger.finals()) == 1


async def test_an_error_event_inside_the_stream_is_the_attempts_failure(nursery: trio.Nursery) -> None:
    error = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    actors = await rig(nursery, Upstream(stream_response(sse(*message_events()[:3], error))))
    running = await start(actors.relay)
    outcome = await running.result()
    failure = outcome.failure
    assert failure is not None and (failure.kind, failure.error_type, failure.mid_stream) == (
        "stream", "overloaded_error", True
    )
    # The error event is the supervisor's to judge, not an event for the client.
    assert event_names(running.received()) == ALL_EVENTS[:3]


async def test_a_429_is_a_status_failure_carrying_retry_after(nursery: trio.Nursery) -> None:
    answer = error_response(429, "rate_limit_error", {"retry-after": "7", "request-id": "req_429"})
    actors = await rig(nursery, Upstream(answer))
    running = await start(actors.relay)
    outcome = await running.result()
    failure = outcome.failure
    assert failure is not None
    assert (failure.kind, failure.status, failure.error_type, failure.retry_after) == (
        "status", 429, "rate_limit_error", "7"
    )
    assert (outcome.relayed, running.received(), actors.ledger.usage) == (0, [], [])


async def test_cancelling_the_scope_aborts_the_attempt_and_closes_the_upstream(nursery: trio.Nursery) -> None:
    gates = Gates(len(ALL_EVENTS))
    response = stream_response(sse(*message_events()), gate=gates.wait)
    body = response.stream
    actors = await rig(nursery, Upstream(response))
    running = await start(actors.relay)
    for index in range(3):
        gates.open(index)
    await trio.testing.wait_all_tasks_blocked()
    running.scope.cancel()
    outcome = await running.result()
    assert outcome.aborted and outcome.failure is None and outcome.message is None
    assert outcome.relayed == 3
    assert isinstance(body, ChunkedBody) and body.closed.is_set()
    # What the upstream billed so far is recorded once, its output estimated.
    (final,) = actors.ledger.finals()
    assert final.usage.estimated


async def test_a_client_that_went_away_ends_the_attempt_as_aborted(nursery: trio.Nursery) -> None:
    gates = Gates(len(ALL_EVENTS))
    actors = await rig(nursery, Upstream(stream_response(sse(*message_events()), gate=gates.wait)))
    running = await start(actors.relay)
    gates.open(0)
    await trio.testing.wait_all_tasks_blocked()
    running.frames.close()
    gates.open(1)
    outcome = await running.result()
    assert outcome.aborted and outcome.relayed == 1
    assert len(actors.ledger.finals()) == 1


async def test_a_silent_upstream_trips_the_idle_watchdog(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def silent_after_two(index: int) -> None:
        if index >= 2:
            await trio.sleep_forever()

    actors = await rig(
        nursery, Upstream(stream_response(sse(*message_events()), gate=silent_after_two)), idle_timeout=30.0
    )
    started = trio.current_time()
    outcome = await (await start(actors.relay)).result()
    failure = outcome.failure
    assert failure is not None and (failure.kind, failure.mid_stream) == ("timeout", True)
    assert 30.0 <= trio.current_time() - started < 31.0


async def test_attempts_run_side_by_side(nursery: trio.Nursery) -> None:
    gates = Gates(len(ALL_EVENTS))
    actors = await rig(nursery, Upstream(
        stream_response(sse(*message_events("slow")), gate=gates.wait),
        stream_response(sse(*message_events("fast"))),
    ))
    slow = await start(actors.relay, attempt=1)
    await trio.testing.wait_all_tasks_blocked()
    fast = await start(actors.relay, attempt=2)
    # The second attempt completes while the first waits on its upstream.
    outcome = await fast.result()
    assert outcome.message is not None and outcome.message["content"][0]["text"] == "fast"
    for index in range(len(ALL_EVENTS)):
        gates.open(index)
    assert (await slow.result()).failure is None


async def test_the_non_streaming_fallback_is_relayed_as_the_events_of_a_stream(nursery: trio.Nursery) -> None:
    message = {
        "id": "msg_whole", "type": "message", "role": "assistant", "model": SONNET,
        "content": [{"type": "text", "text": "all at once"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    actors = await rig(nursery, Upstream(httpx.Response(200, json=message)))
    running = await start(actors.relay, streaming=False)
    outcome = await running.result()
    assert event_names(running.received()) == ALL_EVENTS
    assert outcome.failure is None and outcome.message is not None
    assert outcome.message["content"] == [{"type": "text", "text": "all at once"}]
    (request,) = actors.upstream.requests
    # One plain request: the fallback asks for no stream.
    assert msgspec.json.decode(request.content).get("stream") in (None, False)
    assert [record.usage.output_tokens for record in actors.ledger.finals()] == [3]


async def test_a_count_is_answered_with_the_upstreams_number_or_its_failure(nursery: trio.Nursery) -> None:
    overloaded = error_response(529, "overloaded_error")
    actors = await rig(nursery, Upstream(httpx.Response(200, json={"input_tokens": 42}), overloaded))
    body: dict[str, Any] = {"model": SONNET, "messages": REQUEST["messages"]}
    counted: CountResult = await ask(actors.relay, lambda reply: RunCount(body=body, reply=reply))
    assert (counted.input_tokens, counted.failure) == (42, None)
    refused: CountResult = await ask(actors.relay, lambda reply: RunCount(body=body, reply=reply))
    assert refused.failure is not None and (refused.failure.status, refused.input_tokens) == (529, None)
    assert {request.url.path for request in actors.upstream.requests} == {"/v1/messages/count_tokens"}
