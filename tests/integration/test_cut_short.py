"""What a cut-short stream cost, end to end: an aborted, a disconnected and a dropped stream are
charged an estimate of their output from the content relayed (protocol/estimate.py), and
marked as such, in the durable ledger too (both stores: ``ledger_location``); a stream that
completes is charged the upstream's own count.

Each test computes the expected estimate itself, from the event frames the client received,
with the formula of docs/protocol.md "Cost of a stream cut short"."""

from __future__ import annotations

import functools
import math
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from harness import chat, connect

from actors.cli.commands import main
from actors.config.settings import Config
from actors.server import Server, run_server
from actors.store.stores import read_sessions
from emulator import Emulator
from protocol.frames import Aborted, CostFrame, Done, EventFrame, GatewayFrame, Ready

MODEL = "claude-sonnet-4-6"


def _events(frames: list[GatewayFrame], attempt: int = 1) -> list[dict[str, Any]]:
    return [
        msgspec.json.decode(f.event) for f in frames if isinstance(f, EventFrame) and f.attempt == attempt
    ]


def expected_estimate(events: list[dict[str, Any]]) -> tuple[int, int]:
    """(the estimate of docs/protocol.md for these events, the emulator's own count of them:
    one token per delta and per block), computed here independently of the gateway."""
    text_bytes = opaque = blocks = other = deltas = reported = 0
    for event in events:
        if event["type"] == "message_start":
            reported = event["message"]["usage"]["output_tokens"]
        elif event["type"] == "content_block_start":
            blocks += 1
        elif event["type"] == "content_block_delta":
            deltas += 1
            delta = event["delta"]
            text = delta.get("text", delta.get("thinking", delta.get("partial_json")))
            if text is not None:
                text_bytes += len(text.encode())
            elif delta["type"] == "signature_delta":
                opaque += len(delta["signature"])
            else:
                other += 1
    estimate = math.ceil(text_bytes / 3) + math.ceil(opaque / 4) + blocks + other
    return max(estimate, reported), deltas + blocks


async def test_an_aborted_stream_is_charged_an_estimate_of_what_it_relayed(server: Server, emulator: Emulator) -> None:
    emulator.script("stall:after=12,deltas=40")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat("a long answer"))
        received = [await client.receive() for _ in range(12)]
        await client.send(type="abort", id="q")
        frames = received + await client.until_terminal("q")
        aborted = frames[-1]
        await client.send(type="get_cost")
        summary = await client.receive()
    assert isinstance(aborted, Aborted) and isinstance(summary, CostFrame)
    expected, emulator_count = expected_estimate(_events(frames))
    assert expected > 1  # more than message_start's placeholder, the old charge
    assert aborted.usage["output_tokens"] == expected and aborted.usage["estimated"] is True
    # Conservative: never less than the emulator billed for that content.
    assert expected >= emulator_count
    model = summary.cost.model_usage[MODEL]
    assert model.output_tokens == model.estimated_output_tokens == expected
    assert summary.cost.estimated_cost_usd == summary.cost.total_cost_usd == aborted.cost_usd


async def test_an_aborted_streams_estimate_is_stored_marked_on_both_stores(
    nursery: trio.Nursery, config: Config, emulator: Emulator, ledger_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    durable = msgspec.structs.replace(config, ledger_path=ledger_location)
    server: Server = await nursery.start(functools.partial(run_server, durable))
    emulator.script("stall:after=12,deltas=40")
    async with connect(server) as client:
        ready = await client.receive()
        await client.send(type="query", id="q", request=chat("a long answer"))
        received = [await client.receive() for _ in range(12)]
        await client.send(type="abort", id="q")
        frames = received + await client.until_terminal("q")
    aborted = frames[-1]
    assert isinstance(ready, Ready) and isinstance(aborted, Aborted) and aborted.cost_recorded
    expected, _ = expected_estimate(_events(frames))
    # What `switchboard cost` reads from the store, while the gateway still runs.
    stored = dict(read_sessions(ledger_location))[ready.session_id]
    assert stored.models[MODEL].estimated_output_tokens == stored.models[MODEL].output_tokens == expected
    assert stored.estimated_pico == stored.total_pico > 0
    main(["cost", ready.session_id, "--ledger", ledger_location])
    assert f"output (~{expected} estimated)" in capsys.readouterr().out


async def test_a_disconnected_stream_is_charged_an_estimate_of_what_it_relayed(
    server: Server, emulator: Emulator
) -> None:
    emulator.script("stall:after=9,deltas=40")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat("going away"))
        frames = [await client.receive() for _ in range(9)]
    record = emulator.requests[0]
    await record.finished.wait()
    assert record.disconnected
    # The relay records in its shielded cleanup; the rest is channel work (test_stream.py).
    await trio.testing.wait_all_tasks_blocked()
    expected, emulator_count = expected_estimate(_events(frames))
    assert expected >= emulator_count > 1
    async with connect(server) as client:
        ready = await client.receive()
    assert isinstance(ready, Ready) and ready.resumed
    model = ready.cost.model_usage[MODEL]
    assert model.output_tokens == model.estimated_output_tokens == expected
    assert ready.cost.estimated_cost_usd == ready.cost.total_cost_usd > 0


async def test_a_dropped_attempt_is_charged_an_estimate_and_its_retry_its_own_count(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("drop:after=10,deltas=40")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat("dropped"))
        frames = await client.until_terminal("q")
        await client.send(type="get_cost")
        summary = await client.receive()
    done = frames[-1]
    assert isinstance(done, Done) and done.attempts == 2 and isinstance(summary, CostFrame)
    dropped, emulator_count = expected_estimate(_events(frames, attempt=1))
    assert dropped >= emulator_count > 1
    final = next(e for e in _events(frames, attempt=2) if e["type"] == "message_delta")
    retried = final["usage"]["output_tokens"]
    # The query's usage sums both attempts, and says that part of it is estimated.
    assert done.usage["output_tokens"] == dropped + retried and done.usage["estimated"] is True
    model = summary.cost.model_usage[MODEL]
    assert model.output_tokens == dropped + retried and model.estimated_output_tokens == dropped
    assert 0 < summary.cost.estimated_cost_usd < summary.cost.total_cost_usd == done.cost_usd


async def test_a_completed_stream_is_never_estimated(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat("<<emulator:ok:deltas=50,pace_ms=20>>"))
        frames = await client.until_terminal("q")
        await client.send(type="get_cost")
        summary = await client.receive()
    done = frames[-1]
    assert isinstance(done, Done) and done.attempts == 1 and isinstance(summary, CostFrame)
    final = next(e for e in _events(frames) if e["type"] == "message_delta")
    assert done.usage["output_tokens"] == final["usage"]["output_tokens"] == 51
    assert "estimated" not in done.usage
    assert summary.cost.estimated_cost_usd == 0
    assert summary.cost.model_usage[MODEL].estimated_output_tokens == 0
