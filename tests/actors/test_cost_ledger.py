"""CostLedger: exact totals, provisional/final records, durability, resume, group commit.

The ledger actor is driven directly through its inbox. A file store runs its calls on a
worker thread, so those tests use trio's real clock (nothing in them waits on a timer);
``":memory:"`` stays on the event loop and works under the autojump clock.
"""

from __future__ import annotations

import datetime
import logging
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_testkit import clear_ledger, database_text

import actors.store.ledger_sessions
from actors._util import ask
from actors.config.settings import is_postgres_url
from actors.cost_ledger import CostLedger
from actors.messages.ledger import (
    CostLedgerAddress,
    GetCost,
    OpenSession,
    RecordDuration,
    RecordUsage,
    SessionOpened,
    UsageRecorded,
)
from actors.store.ledger_sessions import owner_digest
from actors.store.stores import read_sessions
from protocol.errors import ActorUnavailable
from protocol.frames import CostSummary, ModelUsageSummary
from protocol.ledger import MAX_PART_COST_PICO
from protocol.pricing import cost_of, usd
from protocol.usage import MAX_TOKEN_COUNT, Usage, UsageIteration

DAY = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
SONNET = "claude-sonnet-4-6"
# Sonnet 4.6 list prices in picodollars per token: input 3, 5m write 3.75, 1h write 6,
# read 0.30, output 15 ($/Mtok).
START = Usage(
    input_tokens=1000,
    cache_creation_input_tokens=2000,
    cache_creation_1h_input_tokens=500,
    cache_read_input_tokens=10_000,
    output_tokens=1,
)
START_PICO = 1000 * 3_000_000 + 1500 * 3_750_000 + 500 * 6_000_000 + 10_000 * 300_000 + 1 * 15_000_000
FINAL = Usage(
    input_tokens=1000,
    cache_creation_input_tokens=2000,
    cache_creation_1h_input_tokens=500,
    cache_read_input_tokens=10_000,
    output_tokens=800,
)
FINAL_PICO = 1000 * 3_000_000 + 1500 * 3_750_000 + 500 * 6_000_000 + 10_000 * 300_000 + 800 * 15_000_000


@asynccontextmanager
async def running(path: str = ":memory:") -> AsyncIterator[tuple[CostLedger, CostLedgerAddress]]:
    """A ledger on ``path`` for the block; closing the address at the end stops it."""
    ledger = CostLedger(path, now=lambda: DAY)
    async with trio.open_nursery() as nursery:
        address: CostLedgerAddress = await nursery.start(ledger.run)
        with address:
            yield ledger, address


async def record(
    address: CostLedgerAddress,
    usage: Usage,
    *,
    session: str = "s",
    model: str = SONNET,
    record_id: str = "",
    final: bool = True,
) -> UsageRecorded:
    return await ask(
        address,
        lambda reply: RecordUsage(
            session_id=session,
            model=model,
            usage=usage,
            record_id=record_id,
            final=final,
            query_id="q",
            attempt=1,
            reply=reply,
        ),
    )


async def open_session(address: CostLedgerAddress, session: str = "s", owner: str | None = None) -> SessionOpened:
    return await ask(address, lambda reply: OpenSession(session_id=session, owner=owner, reply=reply))


async def cost(address: CostLedgerAddress, session: str = "s") -> CostSummary:
    return await ask(address, lambda reply: GetCost(session_id=session, reply=reply))


async def test_the_final_version_replaces_the_provisional_one_so_a_message_counts_once() -> None:
    async with running() as (_, ledger):
        provisional = await record(ledger, START, record_id="q:1:a", final=False)
        assert provisional.cost_pico == START_PICO == 14_640_000_000
        assert provisional.session_cost_pico == START_PICO
        assert (await cost(ledger)).total_cost_usd == pytest.approx(0.01464, abs=1e-15)
        final = await record(ledger, FINAL, record_id="q:1:a")
        assert final.cost_pico == FINAL_PICO == 26_625_000_000
        assert final.session_cost_pico == FINAL_PICO
        again = await record(ledger, FINAL, record_id="q:1:a")  # a repeated final is ignored
        assert again.session_cost_pico == FINAL_PICO
        summary = await cost(ledger)
    assert summary.total_cost_usd == pytest.approx(0.026625, abs=1e-15)
    assert summary.model_usage == {
        SONNET: ModelUsageSummary(
            input_tokens=1000,
            output_tokens=800,
            cache_read_input_tokens=10_000,
            cache_creation_input_tokens=2000,
            web_search_requests=0,
            cost_usd=0.026625,
        )
    }


async def test_usage_is_keyed_by_the_model_as_sent_and_advisors_count_at_their_own_model() -> None:
    bedrock_opus = "us.anthropic.claude-opus-4-6-v1"
    usage = Usage(
        input_tokens=100,
        output_tokens=50,
        speed="fast",
        web_search_requests=3,
        iterations=(
            UsageIteration(type="advisor_message", model="claude-haiku-4-5", input_tokens=2000, output_tokens=100),
            UsageIteration(type="message", model="claude-haiku-4-5", input_tokens=99_999),
        ),
    )
    async with running() as (_, ledger):
        recorded = await record(ledger, usage, model=bedrock_opus)
        unknown = await record(ledger, Usage(input_tokens=1000), model="claude-nonexistent-9")
        summary = await cost(ledger)
    # Opus 4.6 fast: $30 / $150; web search $0.01 each; the advisor at Haiku 4.5's $1 / $5.
    opus_pico = 100 * 30_000_000 + 50 * 150_000_000 + 3 * 10_000_000_000
    haiku_pico = 2000 * 1_000_000 + 100 * 5_000_000
    assert recorded.cost_pico == opus_pico + haiku_pico == 43_000_000_000
    assert not recorded.unknown_model
    # An unknown model: the documented default (Sonnet 4.6, $3 input), flagged.
    assert unknown.cost_pico == 3_000_000_000 and unknown.unknown_model
    assert list(summary.model_usage) == [bedrock_opus, "claude-haiku-4-5", "claude-nonexistent-9"]
    assert summary.model_usage[bedrock_opus].cost_usd == pytest.approx(0.0405, abs=1e-15)
    assert summary.model_usage[bedrock_opus].web_search_requests == 3
    assert summary.model_usage["claude-haiku-4-5"].input_tokens == 2000
    assert summary.model_usage["claude-haiku-4-5"].cost_usd == pytest.approx(0.0025, abs=1e-15)
    assert summary.total_cost_usd == pytest.approx(0.046, abs=1e-15)
    assert summary.unknown_model_cost


async def test_a_malformed_usage_is_priced_flagged_unknown_and_logged_with_its_query(
    ledger_location: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = ledger_location
    # What merge_usage makes of {"output_tokens": 2**64}: clamped to the bound and flagged.
    usage = Usage(input_tokens=10, output_tokens=MAX_TOKEN_COUNT, malformed=True)
    with caplog.at_level(logging.WARNING, logger="switchboard.ledger"):
        async with running(path) as (_, ledger):
            await open_session(ledger)
            provisional = await record(ledger, usage, record_id="q:1:a", final=False)
            assert "usage counts" not in caplog.text  # warned once, for the final version
            recorded = await record(ledger, usage, record_id="q:1:a")
            summary = await cost(ledger)
    assert provisional.unknown_model and recorded.unknown_model
    assert recorded.cost_pico == 10 * 3_000_000 + MAX_TOKEN_COUNT * 15_000_000
    assert summary.unknown_model_cost and summary.total_cost_usd == pytest.approx(15_000.00003)
    assert caplog.text.count("usage counts") == 1 and "query q attempt 1" in caplog.text
    # The flag is durable: the session resumes with it.
    async with running(path) as (_, ledger):
        assert (await open_session(ledger)).cost.unknown_model_cost


async def test_a_sessions_cost_past_the_integer_range_is_kept_exact_and_resumes(ledger_location: str) -> None:
    """A hostile upstream's usage, priced at the bound per part (protocol.ledger), a hundred
    times: the session's sum passes 2**63 - 1 picodollars, where SQLite's SUM overflows; the
    ledger, ``switchboard cost``'s reader and a restart all keep it exact."""
    path = ledger_location
    usage = Usage(input_tokens=10, output_tokens=5, web_search_requests=MAX_TOKEN_COUNT)
    async with running(path) as (_, ledger):
        await open_session(ledger)
        for n in range(100):
            recorded = await record(ledger, usage, record_id=f"q:{n}:a")
            assert recorded.cost_pico == MAX_PART_COST_PICO and recorded.unknown_model
        live = await cost(ledger)
    expected = 100 * MAX_PART_COST_PICO
    assert expected > 2**63
    assert live.total_cost_usd == usd(expected) and live.unknown_model_cost
    stored = dict(read_sessions(path))["s"]
    assert stored.total_pico == expected and stored.models[SONNET].web_search_requests == 100 * MAX_TOKEN_COUNT
    async with running(path) as (_, ledger):
        resumed = await open_session(ledger)
    assert resumed.cost.total_cost_usd == usd(expected) and resumed.cost.unknown_model_cost


async def test_every_session_resumes_after_a_restart_with_its_full_summary(tmp_path: Path, ledger_location: str) -> None:
    path = ledger_location
    alice = owner_digest("token-of-alice")
    async with running(path) as (_, ledger):
        assert (await open_session(ledger, "a", alice)).resumed is False
        await record(ledger, FINAL, session="a")
        await record(ledger, Usage(input_tokens=10, output_tokens=5), session="a", model="claude-haiku-4-5")
        await ledger.send(RecordDuration(session_id="a", duration_ms=4000, duration_without_retries_ms=1500))
        await open_session(ledger, "b")
        await record(ledger, START, session="b", record_id="b:1:x", final=False)
        await open_session(ledger, "empty")
        before = {sid: await cost(ledger, sid) for sid in ("a", "b", "empty")}
    assert before["a"].api_duration_ms == 4000 and before["a"].api_duration_without_retries_ms == 1500
    async with running(path) as (_, ledger):
        for sid in ("a", "b", "empty"):
            opened = await open_session(ledger, sid, alice)
            assert opened.resumed is True and opened.cost == before[sid]
        assert not (await open_session(ledger, "a", owner_digest("token-of-mallory"))).owner_ok
        # The provisional record of b was loaded too: its final version replaces it.
        await record(ledger, FINAL, session="b", record_id="b:1:x")
        assert (await cost(ledger, "b")).total_cost_usd == pytest.approx(0.026625, abs=1e-15)
    # `switchboard cost` reads the same figures from the file.
    stored = dict(read_sessions(path))
    assert list(stored) == ["a", "b", "empty"]
    assert stored["a"].summary("a") == before["a"]
    assert stored["b"].total_pico == FINAL_PICO
    # The owner is kept as a digest: the access token itself is in no file, no table.
    for file in await trio.Path(tmp_path).iterdir():
        assert b"token-of-alice" not in await file.read_bytes()
    if is_postgres_url(path):
        assert alice is not None and alice in database_text(path)
        assert "token-of-alice" not in database_text(path)


async def test_a_provisional_record_nobody_replaced_stays_counted(ledger_location: str) -> None:
    path = ledger_location
    async with running(path) as (_, ledger):
        await record(ledger, START, record_id="q:1:lost", final=False)
    async with running(path) as (_, ledger):
        summary = await cost(ledger)
    assert summary.total_cost_usd == pytest.approx(0.01464, abs=1e-15)
    assert summary.model_usage[SONNET].input_tokens == 1000


async def test_concurrent_writers_share_commits(ledger_location: str) -> None:
    writers = 64
    async with running(ledger_location) as (ledger, address):
        results: list[UsageRecorded] = []

        async def one(n: int) -> None:
            results.append(await record(address, FINAL, session=f"s{n % 4}", record_id=f"r{n}"))

        async with trio.open_nursery() as nursery:
            for n in range(writers):
                nursery.start_soon(one, n)
        stats = ledger.statistics()
        summaries = [await cost(address, f"s{k}") for k in range(4)]
    assert len(results) == writers
    assert stats.messages == writers and stats.failed_commits == 0
    # Every writer was waiting before the ledger's first commit: one batch, one commit.
    assert stats.commits == stats.batches == 1
    assert all(s.total_cost_usd == pytest.approx(16 * FINAL_PICO / 1e12, abs=1e-15) for s in summaries)


async def test_a_failed_read_refuses_only_the_sessions_not_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.sqlite3"
    async with running(str(path)) as (_, address):
        await record(address, FINAL, session="cold")
    async with running(str(path)) as (ledger, address):
        await open_session(address, "hot")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("ALTER TABLE sessions RENAME TO elsewhere")
        with caplog.at_level(logging.ERROR, logger="switchboard.ledger"), pytest.raises(ActorUnavailable):
            await cost(address, "cold")
        assert "cannot read session cold" in caplog.text
        assert ledger.health.reason == "cost ledger cannot read 1 session(s): no such table: sessions"
        assert ledger.health.refusal is None  # commits still work: other sessions are served
        assert (await cost(address, "hot")).session_id == "hot"
        other.execute("ALTER TABLE elsewhere RENAME TO sessions")
        other.close()
        assert (await cost(address, "cold")).total_cost_usd == pytest.approx(0.026625, abs=1e-15)
        assert ledger.health.healthy


@pytest.mark.parametrize(("column", "value"), [("output_tokens", "lots"), ("cost_pico", 1.5)])
async def test_a_row_that_is_not_integers_is_a_failed_read_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, column: str, value: object
) -> None:
    path = tmp_path / "ledger.sqlite3"
    async with running(str(path)) as (_, address):
        await record(address, FINAL, session="cold")
        await record(address, START, session="cold", record_id="open", final=False)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(f"UPDATE usage SET {column} = ?", (value,))  # a file damaged by hand
    other.close()
    async with running(str(path)) as (_, address):
        await open_session(address, "hot")
        with caplog.at_level(logging.ERROR, logger="switchboard.ledger"), pytest.raises(ActorUnavailable):
            await cost(address, "cold")
        assert "cannot read session cold" in caplog.text and "not an integer" in caplog.text
        assert (await cost(address, "hot")).session_id == "hot"


async def test_sessions_pushed_out_of_memory_are_reloaded_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors.store.ledger_sessions, "MAX_HOT_SESSIONS", 2)
    async with running() as (ledger, address):
        await record(address, START, session="old", record_id="r", final=False)
        before = await cost(address, "old")
        for sid in ("x", "y"):
            await record(address, FINAL, session=sid)
        assert ledger.statistics().hot_sessions == 2  # "old" was the least recently used
        assert await cost(address, "old") == before
        await record(address, FINAL, session="old", record_id="r")  # its provisional came back too
        assert (await cost(address, "old")).total_cost_usd == pytest.approx(0.026625, abs=1e-15)


async def test_drain_grace_stops_a_cancelled_ledger_whose_senders_linger(autojump_clock: trio.testing.MockClock) -> None:
    ledger = CostLedger(now=lambda: DAY, drain_grace=10.0)
    async with trio.open_nursery() as nursery:
        address: CostLedgerAddress = await nursery.start(ledger.run)
        lingering = address.clone()
        with address:
            await record(address, FINAL)
        started = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - started == 10.0
    with pytest.raises(trio.BrokenResourceError):
        lingering.send_nowait(GetCost(session_id="s", reply=trio.open_memory_channel[CostSummary](1)[0]))
    lingering.close()


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["r0", "r1", "r2", "r3"]),
        st.booleans(),
        st.integers(0, 50_000),
        st.integers(0, 5_000),
        st.integers(0, 90_000),
    ),
    max_size=20,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_totals_count_the_last_version_of_each_record_in_memory_and_after_a_restart(
    ledger_location: str, ops: list[tuple[str, str, bool, int, int, int]],
) -> None:
    # The oracle: per session and record, the last version until a final one; priced alone.
    last: dict[tuple[str, str], Usage] = {}
    finals: set[tuple[str, str]] = set()
    for session, record_id, final, input_tokens, output_tokens, read in ops:
        if (session, record_id) not in finals:
            last[session, record_id] = Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_input_tokens=read)
            if final:
                finals.add((session, record_id))
    expected = {
        s: sum(cost_of(u, SONNET, on="2026-11-26").total_pico for (sid, _), u in last.items() if sid == s)
        for s in ("a", "b")
    }

    async def scenario(path: str) -> None:
        async with running(path) as (_, ledger):
            for session, record_id, final, input_tokens, output_tokens, read in ops:
                usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_input_tokens=read)
                await record(ledger, usage, session=session, record_id=record_id, final=final)
            live = {s: await cost(ledger, s) for s in ("a", "b")}
        async with running(path) as (_, ledger):
            resumed = {s: await cost(ledger, s) for s in ("a", "b")}
        assert resumed == live
        stored = dict(read_sessions(path))
        for s in ("a", "b"):
            assert live[s].total_cost_usd == usd(expected[s])
            assert (stored[s].total_pico if s in stored else 0) == expected[s]

    if is_postgres_url(ledger_location):
        # One database for every example: each starts on an empty one.
        clear_ledger(ledger_location)
        trio.run(scenario, ledger_location)
        return
    with tempfile.TemporaryDirectory() as directory:
        trio.run(scenario, os.path.join(directory, "ledger.sqlite3"))


async def test_two_instances_on_one_postgresql_ledger_report_the_stores_totals(pg_url: str) -> None:
    # Each ledger holds the session in memory; the other's records still reach its answers
    # (module docstring, "Several instances").
    async with running(pg_url) as (first, a), running(pg_url) as (second, b):
        assert first.instance_id != second.instance_id
        one = await record(a, FINAL, session="both", record_id="q1:1:m")
        assert one.session_cost_pico == FINAL_PICO
        two = await record(b, START, session="both", record_id="q2:1:m", final=False)
        assert two.session_cost_pico == FINAL_PICO + START_PICO
        three = await record(a, FINAL, session="both", record_id="q3:1:m")
        assert three.session_cost_pico == 2 * FINAL_PICO + START_PICO
        await b.send(RecordDuration(session_id="both", duration_ms=7, duration_without_retries_ms=5))
        await cost(b, "both")  # answered after the commit that holds the duration
        await a.send(RecordDuration(session_id="both", duration_ms=3, duration_without_retries_ms=2))
        summaries = [await cost(address, "both") for address in (a, b)]
        opened: SessionOpened = await ask(b, lambda reply: OpenSession(session_id="both", owner=None, reply=reply))
    assert summaries[0] == summaries[1] == opened.cost
    assert summaries[0].total_cost_usd == usd(2 * FINAL_PICO + START_PICO)
    assert (summaries[0].api_duration_ms, summaries[0].api_duration_without_retries_ms) == (10, 7)
    assert read_sessions(pg_url, "both")[0][1].summary("both") == summaries[0]
