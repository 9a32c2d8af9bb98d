"""Telemetry forwarding (actors/observe/otlp.py): exports reach each collector unchanged, a collector
that keeps failing is skipped by its breaker, and a stuck one never blocks ``receive``."""

from __future__ import annotations

import json

import httpx
import trio
import trio.testing

from actors.observe.metrics import Metrics
from actors.observe.otlp import QUEUE_SIZE, Telemetry, destination_label
from protocol.otlp import BREAKER_FAILURES

LOGS = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{}]}]}]}).encode()
COLLECTOR = "http://user:secret@collector.example:4318"


def forwards(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "switchboard_otlp_forwards_total", {"destination": "collector.example:4318", "outcome": outcome}
    )
    return value or 0.0


async def test_an_export_reaches_the_collector_unchanged(nursery: trio.Nursery) -> None:
    got: list[httpx.Request] = []
    arrived = trio.Event()

    async def collector(request: httpx.Request) -> httpx.Response:
        got.append(request)
        arrived.set()
        return httpx.Response(200)

    metrics = Metrics()
    telemetry = Telemetry(metrics, (COLLECTOR,), transport=httpx.MockTransport(collector))
    await nursery.start(telemetry.run)
    assert telemetry.receive("logs", "json", b"application/json", LOGS) == 1
    await arrived.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert got[0].url.path == "/v1/logs"
    assert got[0].content == LOGS
    assert got[0].headers["content-type"] == "application/json"
    assert forwards(metrics, "sent") == 1


async def test_a_failing_collector_trips_its_breaker(nursery: trio.Nursery) -> None:
    calls = 0

    async def collector(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503)

    metrics = Metrics()
    telemetry = Telemetry(metrics, (COLLECTOR,), transport=httpx.MockTransport(collector))
    await nursery.start(telemetry.run)
    for _ in range(BREAKER_FAILURES + 2):
        telemetry.receive("logs", "json", b"application/json", LOGS)
        await trio.testing.wait_all_tasks_blocked()
    assert calls == BREAKER_FAILURES
    assert forwards(metrics, "failed") == BREAKER_FAILURES
    assert forwards(metrics, "circuit_open") == 2


async def test_a_stuck_collector_never_blocks_receive_and_drops_past_the_queue(nursery: trio.Nursery) -> None:
    async def collector(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    metrics = Metrics()
    telemetry = Telemetry(metrics, (COLLECTOR,), transport=httpx.MockTransport(collector))
    await nursery.start(telemetry.run)
    # One export is taken by the stuck POST, QUEUE_SIZE wait, the rest are dropped.
    telemetry.receive("logs", "json", b"application/json", LOGS)
    await trio.testing.wait_all_tasks_blocked()
    for _ in range(QUEUE_SIZE + 3):
        telemetry.receive("logs", "json", b"application/json", LOGS)
    assert forwards(metrics, "dropped") == 3


def test_an_undecodable_export_is_counted_and_not_forwarded() -> None:
    metrics = Metrics()
    telemetry = Telemetry(metrics, (COLLECTOR,))
    assert telemetry.receive("logs", "json", b"application/json", b"{") is None
    assert metrics.registry.get_sample_value(
        "switchboard_otlp_exports_total", {"signal": "logs", "encoding": "json", "outcome": "undecodable"}
    ) == 1


def test_a_collector_is_named_by_host_and_port_only() -> None:
    assert destination_label(COLLECTOR + "/path") == "collector.example:4318"
    assert "secret" not in destination_label(COLLECTOR)
