"""The actors report to the metrics: a query with a retry, seen through /metrics' text."""

from __future__ import annotations

import trio
from harness import chat, connect
from prometheus_client.parser import text_string_to_metric_families

from actors.server import Server
from emulator import Emulator


def samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(server.gateway.metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_a_retried_query_is_counted_everywhere(
    server: Server, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.script("529")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat("metrics"))
        await client.until_terminal("q")
        emulator.script("529")
        await client.send(type="query", id="bad", request=chat(model="claude-opus-4-6"), source="title_generation")
        await client.until_terminal("bad")
    got = samples(server)
    model = (("model", "claude-sonnet-4-6"), ("outcome", "done"), ("provider", "anthropic"))
    assert got[("switchboard_queries_total", model)] == 1
    opus_error = (("model", "claude-opus-4-6"), ("outcome", "error"), ("provider", "anthropic"))
    assert got[("switchboard_queries_total", opus_error)] == 1
    assert got[("switchboard_retries_total", (("cause", "overloaded_error"),))] == 1
    assert got[("switchboard_active_queries", ())] == 0
    assert got[("switchboard_upstream_latency_seconds_count", (("provider", "anthropic"),))] == 3
    assert got[("switchboard_time_to_first_token_seconds_count", (("model", "claude-sonnet-4-6"),))] == 1
    assert got[("switchboard_tokens_total", (("model", "claude-sonnet-4-6"), ("type", "input")))] > 0
    assert got[("switchboard_cost_usd_total", (("model", "claude-sonnet-4-6"),))] > 0
    assert got[("switchboard_overloaded", (("model", "claude-sonnet-4-6"),))] == 0  # closed again
