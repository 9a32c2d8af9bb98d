"""Ledger faults as clients and operators meet them, through both doors and ``switchboard serve``.

In-process: the gateway's store is wrapped (``harness.FaultyStore``) to fail commits as a
full disk does, or reads as a corrupt page does, on the autojump clock. As processes: a
corrupt ledger, a second gateway on the same file, a read-only directory, each refused at
start with a clear message and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import httpx
import msgspec
import pytest
import trio
import trio.testing
from harness import (
    API_VERSION,
    DISK_FULL,
    MALFORMED,
    FaultyStore,
    chat,
    clean_env,
    connect,
    corrupt_ledger,
    serve_process,
    tmpfs,
)
from prometheus_client.parser import text_string_to_metric_families
from test_door import rejected_status

import actors.server
from actors.config.settings import Config
from actors.cost_ledger import CostLedger
from actors.server import Server, run_server
from actors.store.health import RETRY_INITIAL_INTERVAL
from actors.store.sqlite import LedgerStore
from actors.store.stores import read_sessions
from protocol.frames import Aborted, Done, ErrorFrame

CLI = [sys.executable, "-c", "from actors.cli.commands import main; main()"]
WAIT = 30  # seconds: a generous bound for a process start on a slow machine


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> list[FaultyStore]:
    """The gateway's ledger store, wrapped to fail on demand; on the event loop, so the
    commit retry runs on the test's clock."""
    opened: list[FaultyStore] = []

    def open_store(path: str) -> FaultyStore:
        opened.append(FaultyStore(LedgerStore.open(path)))
        return opened[-1]

    monkeypatch.setattr(actors.server, "CostLedger", functools.partial(CostLedger, offload=False, open_store=open_store))
    return opened


async def start(nursery: trio.Nursery, config: Config, ledger: Path, **changes: object) -> Server:
    config = msgspec.structs.replace(config, http_port=0, ledger_path=str(ledger), **changes)
    server: Server = await nursery.start(functools.partial(run_server, config))
    return server


def gauge(scrape: bytes, name: str) -> float:
    for family in text_string_to_metric_families(scrape.decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no metric {name}")


async def test_while_commits_fail_answers_say_so_health_is_503_new_queries_are_refused_then_all_recovers(
    nursery: trio.Nursery, config: Config, tmp_path: Path, stores: list[FaultyStore],
    autojump_clock: trio.testing.MockClock,
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    server = await start(nursery, config, ledger)
    [store] = stores
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as http:
        assert (await http.get("/healthz")).json()["status"] == "ok"
        async with connect(server, "s1") as client:
            await client.receive()  # ready
            # A query in flight when the disk fills (its provisional record is committed, its
            # final one is not): its done says its cost is not recorded.
            store.write_error, store.only_final = DISK_FULL, True
            await client.send(type="query", id="q1", request=chat("first"))
            q1 = (await client.until_terminal("q1"))[-1]
            assert store.write_times and (await http.get("/healthz")).status_code == 503
            assert isinstance(q1, Done) and q1.cost_usd > 0 and q1.cost_recorded is False
            health = await http.get("/healthz")
            assert health.status_code == 503
            assert health.json() == {
                "status": "degraded",
                "reason": f"cost ledger cannot commit: {DISK_FULL}",
                "instance_id": server.gateway.instance_id,
            }
            scrape = (await http.get("/metrics")).content
            assert gauge(scrape, "switchboard_ledger_healthy") == 0
            assert gauge(scrape, "switchboard_ledger_commit_failures_total") >= 1
            # New queries are refused, through either door, before anything goes upstream.
            await client.send(type="query", id="q2", request=chat("refused"))
            [q2] = await client.until_terminal("q2")
            assert isinstance(q2, ErrorFrame) and q2.error.type == "ledger_unavailable"
            assert q2.error.status == 503 and DISK_FULL in q2.error.message
            refused = await http.post("/v1/messages", json=chat("refused too"))
            assert refused.status_code == 503
            assert refused.json()["error"]["type"] == "api_error"
            assert "cost ledger cannot record usage" in refused.json()["error"]["message"]
            assert gauge((await http.get("/metrics")).content, "switchboard_ledger_refused_queries_total") == 2
            # The disk recovers: what was kept is committed, and all is as before.
            store.write_error = None
            await trio.sleep(16 * RETRY_INITIAL_INTERVAL)
            assert (await http.get("/healthz")).json()["status"] == "ok"
            await client.send(type="query", id="q3", request=chat("after"))
            q3 = (await client.until_terminal("q3"))[-1]
            assert isinstance(q3, Done) and q3.cost_recorded is True
            answered = await http.post("/v1/messages", json=chat("after"), headers={"x-switchboard-session": "s1"})
            assert answered.headers["x-switchboard-cost-recorded"] == "true"
            live = await server.gateway.cost("s1")
    stored = dict(read_sessions(str(ledger)))
    assert stored["s1"].summary("s1").total_cost_usd == live.total_cost_usd
    assert live.total_cost_usd == pytest.approx(
        q1.cost_usd + q3.cost_usd + float(answered.headers["x-switchboard-cost-usd"]), abs=1e-12
    )


async def test_failing_open_serves_every_answer_flagged(
    nursery: trio.Nursery, config: Config, tmp_path: Path, stores: list[FaultyStore],
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = await start(nursery, config, tmp_path / "ledger.sqlite3", ledger_fail_open=True)
    stores[0].write_error = DISK_FULL
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as http:
        async with connect(server, "s1") as client:
            await client.receive()
            await client.send(type="query", id="q1", request=chat())
            done = (await client.until_terminal("q1"))[-1]
            await client.send(type="query", id="q2", request=chat("<<emulator:stall:after=1,times=all>>"))
            await client.receive()  # message_start: the query is in flight
            await client.send(type="abort", id="q2")
            aborted = (await client.until_terminal("q2"))[-1]
        assert isinstance(done, Done) and done.cost_usd > 0 and not done.cost_recorded
        assert isinstance(aborted, Aborted) and aborted.cost_usd > 0 and not aborted.cost_recorded
        answered = await http.post("/v1/messages", json=chat())
        assert answered.status_code == 200 and answered.headers["x-switchboard-cost-recorded"] == "false"
        streamed = await http.post("/v1/messages", json={**chat(), "stream": True})
        assert streamed.content.split(b"\n\n")[-2].endswith(b" cost_recorded=false")
        assert (await http.get("/healthz")).status_code == 503
    stores[0].write_error = None


async def test_a_session_on_a_bad_page_fails_alone(
    nursery: trio.Nursery, config: Config, tmp_path: Path, stores: list[FaultyStore],
    autojump_clock: trio.testing.MockClock,
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    store = LedgerStore.open(str(ledger))
    store.close()
    server = await start(nursery, config, ledger)
    stores[0].bad_sessions = {"bad"}
    assert await rejected_status(server.ws_url + "/v1/sessions/bad") == 503
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as http:
        over_http = await http.post("/v1/messages", json=chat(), headers={"x-switchboard-session": "bad"})
        assert over_http.status_code == 503
        health = (await http.get("/healthz")).json()
        assert health == {
            "status": "degraded",
            "reason": f"cost ledger cannot read 1 session(s): {MALFORMED}",
            "instance_id": server.gateway.instance_id,
        }
        async with connect(server, "good") as client:  # the process and every other session live on
            await client.receive()
            await client.send(type="query", id="q", request=chat())
            done = (await client.until_terminal("q"))[-1]
            assert isinstance(done, Done) and done.cost_recorded


async def refused_start(*args: str, env: dict[str, str] | None = None) -> str:
    """``switchboard serve ARGS`` that must stop at once: exit code 2, nothing on stdout;
    returns the last line of its stderr (the error; the logs of the start come before it)."""
    with trio.fail_after(WAIT):
        result = await trio.run_process(
            [*CLI, "serve", "--port", "0", *args],
            capture_stdout=True, capture_stderr=True, check=False, env=env or clean_env(),
        )
    assert result.returncode == 2 and result.stdout == b"", result.stderr
    return result.stderr.decode().splitlines()[-1]


async def test_a_corrupt_ledger_stops_serve_with_a_clear_message(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    corrupt_ledger(ledger)
    stderr = await refused_start("--ledger", str(ledger))
    assert stderr.startswith(f"switchboard: the cost ledger {str(ledger)!r} is corrupt (")
    assert "move it aside" in stderr


async def test_a_second_gateway_on_the_same_ledger_is_refused_and_cost_still_reads_it(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    async with serve_process(clean_env(), "--ledger", str(ledger)) as first:
        assert (await first.read_line()).startswith("ws://")
        stderr = await refused_start("--ledger", str(ledger))
        assert stderr.startswith(f"switchboard: the cost ledger {str(ledger)!r} is in use by another switchboard process")
        with trio.fail_after(WAIT):
            cost = await trio.run_process(
                [*CLI, "cost", "--ledger", str(ledger)], capture_stdout=True, env=clean_env()
            )
        assert cost.stdout == b"No sessions in the ledger.\n"


async def test_a_read_only_directory_stops_serve_with_a_clear_message(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as directory:
        stderr = await refused_start("--ledger", str(directory / "ledger.sqlite3"))
    assert stderr.startswith("switchboard: cannot open the cost ledger")
    assert "Read-only file system" in stderr and "must be writable" in stderr
