"""Two ``switchboard serve`` processes on one PostgreSQL ledger (README.md "Deployment"): a
session taken over across instances, the store's totals reported by both, one killed
with ``kill -9`` while the other serves on, and (the slow test, ``-m "not slow"`` leaves it
out) the PostgreSQL cluster restarted under both. One emulator, run by the test, serves both."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import httpx
import pytest
import trio
from harness import API_VERSION, ServeProcess, chat, clean_env, connect_url, serve_process
from pg_testkit import restart_cluster, restart_cluster_or_skip
from trio_websocket import ConnectionClosed

from actors.store.pg_totals import read_pg_sessions
from emulator import Emulator
from protocol.frames import Aborted, CostFrame, Done, ErrorFrame, Ready
from protocol.http_api import format_usd
from protocol.pricing import PICO_PER_USD, usd

KEY = "sk-ant-fleet-test"
WAIT = 30  # seconds: a generous bound for a cross-process wait on a slow machine
# A query that streams three events, then stalls until aborted (emulator/faults.py).
STALL = "<<emulator:stall:after=3>> stall here"


class Instance:
    """One running gateway process: its WebSocket and HTTP doors."""

    def __init__(self, process: ServeProcess, ws_url: str, http_url: str) -> None:
        self.process = process
        self.ws_url = ws_url
        self.http_url = http_url


@asynccontextmanager
async def fleet(pg_url: str, count: int = 2) -> AsyncIterator[tuple[Emulator, list[Instance]]]:
    """An emulator and ``count`` gateways on it, all on the ledger ``pg_url``."""
    emulator = Emulator(api_keys=frozenset({KEY}))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(emulator.run)
        env = clean_env(ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY=KEY)
        instances: list[Instance] = []
        async with serve_process(env, "--ledger", pg_url, "--http-port", "0") as first:
            instances.append(Instance(first, await first.read_line(), await first.read_line()))
            async with serve_process(env, "--ledger", pg_url, "--http-port", "0") as second:
                instances.append(Instance(second, await second.read_line(), await second.read_line()))
                try:
                    yield emulator, instances
                finally:
                    for i in instances:
                        print("stderr of", i.ws_url, bytes(i.process.stderr).decode()[-3000:])  # shown on failure
        nursery.cancel_scope.cancel()


async def receive_ready(client: object) -> Ready:
    frame = await client.receive()  # type: ignore[attr-defined]
    assert isinstance(frame, Ready)
    return frame


async def until_events(client: object, query_id: str, count: int) -> None:
    """Wait until ``count`` frames of ``query_id`` arrived (its stream is under way)."""
    seen = 0
    while seen < count:
        frame = await client.receive()  # type: ignore[attr-defined]
        if getattr(frame, "id", None) == query_id:
            seen += 1


def stored_total(pg_url: str, session_id: str) -> float:
    """The session's total cost in the store, as the frames carry it."""
    return usd(dict(read_pg_sessions(pg_url, session_id))[session_id].total_pico)


async def test_a_connection_on_another_instance_takes_the_session_over(pg_url: str) -> None:
    async with fleet(pg_url) as (_, (a, b)):
        healths = []
        async with httpx.AsyncClient(timeout=WAIT) as http:
            for instance in (a, b):
                healths.append((await http.get(instance.http_url + "/healthz")).json()["instance_id"])
        assert healths[0] != healths[1]
        with trio.fail_after(WAIT):
            async with connect_url(a.ws_url, "shared") as first:
                await receive_ready(first)
                await first.send(type="query", id="q1", request=chat(STALL))
                await until_events(first, "q1", 2)
                async with connect_url(b.ws_url, "shared") as second:
                    assert (await receive_ready(second)).resumed
                    frames = await first.until_terminal("q1")
                    assert isinstance(frames[-1], Aborted)
                    with pytest.raises(ConnectionClosed) as closed:
                        await first.receive()
                    assert closed.value.reason is not None and closed.value.reason.code == 4409
                    # The second connection serves on, and its summary holds the aborted
                    # query's charge, made on the other instance.
                    await second.send(type="get_cost")
                    while not isinstance(cost := await second.receive(), CostFrame):
                        pass
                    assert cost.cost.total_cost_usd > 0
                    assert cost.cost.total_cost_usd == stored_total(pg_url, "shared")


async def test_both_instances_report_the_stores_totals_for_a_session_charged_through_both(pg_url: str) -> None:
    async with fleet(pg_url) as (_, (a, b)), httpx.AsyncClient(headers=API_VERSION, timeout=WAIT) as http:
        session = {"x-switchboard-session": "both"}
        costs: list[Decimal] = []
        session_costs: list[Decimal] = []
        for instance in (a, b, a, b):
            answer = await http.post(instance.http_url + "/v1/messages", json=chat("charge me"), headers=session)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-switchboard-cost-recorded"] == "true"
            costs.append(Decimal(answer.headers["x-switchboard-cost-usd"]))
            session_costs.append(Decimal(answer.headers["x-switchboard-session-cost-usd"]))
        # Each answer's session total counts every query before it, whichever instance ran it.
        running = [sum(costs[: i + 1], Decimal()) for i in range(len(costs))]
        assert session_costs == pytest.approx(running, abs=Decimal("0.000002"))
        stored = stored_total(pg_url, "both")
        assert session_costs[-1] == Decimal(format_usd(stored))
        # Both report the same summary (ready frame and get_cost), the store's.
        with trio.fail_after(WAIT):
            for instance in (a, b):
                async with connect_url(instance.ws_url, "both") as client:
                    ready = await receive_ready(client)
                    assert ready.cost.total_cost_usd == stored


async def test_kill_9_of_one_instance_loses_nothing_reported_and_the_other_serves_on(pg_url: str) -> None:
    async with fleet(pg_url) as (_, (a, b)):
        reported = 0.0
        with trio.fail_after(WAIT):
            async with connect_url(a.ws_url, "crash") as client:
                await receive_ready(client)
                await client.send(type="query", id="q1", request=chat("before the crash"))
                done = (await client.until_terminal("q1"))[-1]
                assert isinstance(done, Done) and done.cost_recorded
                reported += done.cost_usd
                await client.send(type="query", id="q2", request=chat(STALL))
                await until_events(client, "q2", 2)
                a.process.process.send_signal(signal.SIGKILL)
                await a.process.process.wait()
            async with connect_url(b.ws_url, "crash") as client:
                ready = await receive_ready(client)
                assert ready.resumed
                await client.send(type="query", id="q3", request=chat("after the crash"))
                done = (await client.until_terminal("q3"))[-1]
                assert isinstance(done, Done) and done.cost_recorded
                reported += done.cost_usd
                # Everything reported is stored, and the survivor reports the store's total
                # (the killed instance's provisional record of q2 included).
                stored = stored_total(pg_url, "crash")
                assert stored >= reported
                assert done.session_cost_usd == stored


async def test_one_probe_at_a_time_for_both_instances_through_a_sustained_529(pg_url: str) -> None:
    async with fleet(pg_url) as (emulator, (a, b)):
        before = len(emulator.requests)
        # Overloaded for 2.5 s: each instance's query gets its first 529 (two requests), then
        # the fleet's one probe goes at about 0.6 s and 1.8 s (the reference backoff), fails,
        # and the next one, after the outage, succeeds and releases the other instance's
        # query. Gates per instance would probe twice as often: 8 requests instead of 6.
        emulator.outage("529", seconds=2.5)
        dones: list[Done] = []

        async def query(instance: Instance, session: str) -> None:
            async with connect_url(instance.ws_url, session) as client:
                await receive_ready(client)
                await client.send(type="query", id="q", request=chat("through the outage"))
                frames = await client.until_terminal("q")
                assert isinstance(frames[-1], Done), frames[-1]
                dones.append(frames[-1])

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(query, a, "on-a")
                nursery.start_soon(query, b, "on-b")
        messages = [r for r in emulator.requests[before:] if r.path == "/v1/messages"]
        assert len(dones) == 2
        statuses = [r.status for r in messages]
        assert statuses.count(529) <= 4 and len(messages) <= 6, statuses


# The cluster-restart test's bound, in seconds: the restart takes 2-3 s here, each
# instance's retry backoff (15 s at most) and its reconnection a few more.
RESTART_BUDGET = 120
CLIENTS_PER_INSTANCE = 3


def ledger_totals_pico(pg_url: str) -> dict[str, int]:
    """Every session's total in the ledger, read as an operator would: ``switchboard cost --json``."""
    command = [sys.executable, "-c", "from actors.cli.commands import main; main()", "cost", "--json", "--ledger", pg_url]
    listing = subprocess.run(command, capture_output=True, check=True, timeout=WAIT, env=clean_env())
    return {s["session_id"]: round(s["total_cost_usd"] * PICO_PER_USD) for s in json.loads(listing.stdout)}


@pytest.mark.slow
async def test_a_postgresql_restart_under_both_instances_loses_nothing_reported_as_recorded(pg_url: str) -> None:
    restart_cluster_or_skip()
    # Per session: the pico-USD of each done, and whether it said the cost was recorded.
    dones: dict[str, list[tuple[int, bool]]] = {}
    loaded, restarted = trio.Event(), trio.Event()
    async with fleet(pg_url) as (_, instances):

        async def client(instance: Instance, session: str) -> None:
            # Queries one after another until one made after the restart is recorded.
            seen = dones.setdefault(session, [])
            async with connect_url(instance.ws_url, session) as ws:
                await receive_ready(ws)
                for n in itertools.count():
                    await ws.send(type="query", id=f"q{n}", request=chat(f"query {n}"))
                    last = (await ws.until_terminal(f"q{n}"))[-1]
                    if isinstance(last, ErrorFrame):
                        # The ledger cannot commit: new queries are refused (README.md
                        # "Deployment", "Faults"). The restart is real time, so is this pause.
                        assert last.error.type == "ledger_unavailable", last
                        await trio.sleep(0.05)
                        continue
                    assert isinstance(last, Done), last
                    seen.append((round(last.cost_usd * PICO_PER_USD), last.cost_recorded is not False))
                    if last.cost_recorded is not False and restarted.is_set():
                        return
                    if sum(len(d) for d in dones.values()) >= 4 * 2 * CLIENTS_PER_INSTANCE:
                        loaded.set()

        with trio.fail_after(RESTART_BUDGET):
            async with trio.open_nursery() as nursery:
                for i, instance in enumerate(instances):
                    for c in range(CLIENTS_PER_INSTANCE):
                        nursery.start_soon(client, instance, f"on-{i}-{c}")
                await loaded.wait()  # queries in flight on both
                await trio.to_thread.run_sync(restart_cluster)
                restarted.set()
            # Both serve again, without a restart of their own: healthy, and each has
            # recorded a query made after the server came back (the clients' last).
            async with httpx.AsyncClient(timeout=WAIT) as http:
                for instance in instances:
                    health = await http.get(instance.http_url + "/healthz")
                    assert health.status_code == 200, health.text
                    assert instance.process.process.returncode is None
                    # The restart reached it: its PostgreSQL connections were cut.
                    assert b"listening connection broke" in instance.process.stderr
        stored = ledger_totals_pico(pg_url)
    # Every cost reported as recorded is in the ledger, and so is every other done's (kept in
    # memory while the server was away, committed once it was back): each session's total
    # is exactly the sum of its dones, to the pico-dollar.
    assert stored == {session: sum(cost for cost, _ in seen) for session, seen in dones.items()}
