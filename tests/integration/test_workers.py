"""``switchboard serve --workers N`` on one SQLite ledger file (README.md "Deployment"), with
real processes, sockets and file.

Two kinds of set-up: the parent with its workers on one port (both serve, a killed worker
is started again, SIGTERM drains every worker, an in-memory ledger is refused), and two
workers started by the test on ports of their own against one prepared file, so that the
test knows which worker a connection reaches (a session taken over from the other worker,
the same resume and cost summary from both). Every wait is for a line, a frame, an answer
or an exit, bounded by ``fail_after``; one emulator, run by the test, serves every worker.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio
from harness import API_VERSION, ServeProcess, chat, clean_env, connect_url, serve_process
from trio_websocket import ConnectionClosed

from actors.store.sqlite_shared import prepare_shared_ledger
from actors.store.stores import read_sessions
from emulator import Emulator
from protocol.frames import Aborted, CostFrame, Done, ErrorFrame, Ready
from protocol.http_api import format_usd
from protocol.pricing import usd

KEY = "sk-ant-workers-test"
WAIT = 60  # seconds: a generous bound for several processes on a slow shared machine
STALL = "<<emulator:stall:after=3>> stall here"
FINISHES = "finishes <<emulator:ok:deltas=10,pace_ms=20>>"


class Worker:
    """One running worker: its process and doors."""

    def __init__(self, process: ServeProcess, ws_url: str, http_url: str) -> None:
        self.process = process
        self.ws_url = ws_url
        self.http_url = http_url


@asynccontextmanager
async def upstream() -> AsyncIterator[dict[str, str]]:
    """An emulator; the environment that sends a gateway to it."""
    async with trio.open_nursery() as nursery:
        url = await nursery.start(Emulator(api_keys=frozenset({KEY})).run)
        yield clean_env(ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY=KEY)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def two_workers(ledger: Path) -> AsyncIterator[tuple[Worker, Worker]]:
    """Two workers of ``--workers 2`` started by the test, each on ports of its own, on the
    file the parent would have prepared."""
    prepare_shared_ledger(str(ledger)).close()
    args = ("--ledger", str(ledger), "--http-port", "0", "--workers", "2", "--worker-of")
    async with upstream() as env, serve_process(env, *args, "1") as first:
        a = Worker(first, await first.read_line(), await first.read_line())
        async with serve_process(env, *args, "2") as second:
            b = Worker(second, await second.read_line(), await second.read_line())
            try:
                yield a, b
            finally:
                for w in (a, b):
                    print("stderr of", w.ws_url, bytes(w.process.stderr).decode()[-3000:])  # shown on failure


async def receive_ready(client: object) -> Ready:
    frame = await client.receive()  # type: ignore[attr-defined]
    assert isinstance(frame, Ready)
    return frame


async def until_events(client: object, query_id: str, count: int) -> None:
    seen = 0
    while seen < count:
        frame = await client.receive()  # type: ignore[attr-defined]
        if getattr(frame, "id", None) == query_id:
            seen += 1


def stored_total(ledger: Path, session_id: str) -> float:
    return usd(dict(read_sessions(str(ledger), session_id))[session_id].total_pico)


async def test_a_connection_on_the_other_worker_takes_the_session_over(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    async with two_workers(ledger) as (a, b):
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
                    # The aborted query was charged on the other worker: in this one's summary.
                    await second.send(type="get_cost")
                    while not isinstance(cost := await second.receive(), CostFrame):
                        pass
                    assert cost.cost.total_cost_usd > 0
                    assert cost.cost.total_cost_usd == stored_total(ledger, "shared")


async def test_both_workers_give_the_files_totals_for_a_session_charged_through_both(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    async with two_workers(ledger) as (a, b), httpx.AsyncClient(headers=API_VERSION, timeout=WAIT) as http:
        session = {"x-switchboard-session": "both"}
        costs: list[Decimal] = []
        session_costs: list[Decimal] = []
        for worker in (a, b, a, b):
            answer = await http.post(worker.http_url + "/v1/messages", json=chat("charge me"), headers=session)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-switchboard-cost-recorded"] == "true"
            costs.append(Decimal(answer.headers["x-switchboard-cost-usd"]))
            session_costs.append(Decimal(answer.headers["x-switchboard-session-cost-usd"]))
        # Each answer's session total counts every query before it, whichever worker ran it.
        running = [sum(costs[: i + 1], Decimal()) for i in range(len(costs))]
        assert session_costs == pytest.approx(running, abs=Decimal("0.000002"))
        stored = stored_total(ledger, "both")
        assert session_costs[-1] == Decimal(format_usd(stored))
        # A resume on either worker gives the same summary, the file's, and so does get_cost.
        with trio.fail_after(WAIT):
            for worker in (a, b):
                async with connect_url(worker.ws_url, "both") as client:
                    ready = await receive_ready(client)
                    assert ready.resumed and ready.cost.total_cost_usd == stored
                    await client.send(type="get_cost")
                    while not isinstance(cost := await client.receive(), CostFrame):
                        pass
                    assert cost.cost == ready.cost


class Parent:
    """A running ``serve --workers 2``: its stdout lines, and its stderr as it grows."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stderr = bytearray()
        self.grew = trio.Event()
        self.served = ServeProcess(process, self.stderr)

    async def collect_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr.extend(chunk)
            self.grew.set()
            self.grew = trio.Event()

    async def until_logged(self, pattern: str, count: int = 1) -> re.Match[bytes]:
        """Wait until ``count`` stderr lines match ``pattern``; the last match."""
        while len(found := list(re.finditer(pattern.encode(), bytes(self.stderr)))) < count:
            await self.grew.wait()
        return found[-1]


@asynccontextmanager
async def parent(env: dict[str, str], ledger: Path | str, *args: str) -> AsyncIterator[tuple[Parent, str, str]]:
    """``serve --workers 2`` (the parent) on ``ledger``, once it printed its URLs; stopped
    (SIGTERM, then SIGKILL) on exit."""
    command = [sys.executable, "-c", "from actors.cli.commands import main; main()", "serve", "--port", "0", "--ledger", str(ledger)]
    command += ["--http-port", "0", "--workers", "2", *args]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    running = Parent(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(running.collect_stderr)
            try:
                yield running, await running.served.read_line(), await running.served.read_line()
            finally:
                print("stderr:", bytes(running.stderr).decode()[-4000:])  # shown on failure
                process.terminate()
                with trio.move_on_after(WAIT, shield=True):
                    await process.wait()
    finally:
        process.kill()
        with trio.move_on_after(WAIT, shield=True):
            await process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


async def instances_seen(http_url: str, wanted: int) -> set[str]:
    """Ask ``/healthz`` on a new connection each time until ``wanted`` instances answered."""
    seen: set[str] = set()
    while len(seen) < wanted:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            seen.add((await http.get(http_url + "/healthz")).json()["instance_id"])
    return seen


async def test_two_workers_on_one_port_both_serve_and_a_killed_one_is_started_again(tmp_path: Path) -> None:
    async with upstream() as env, parent(env, tmp_path / "ledger.sqlite3") as (served, ws_url, http_url):
        with trio.fail_after(WAIT):
            assert ws_url.rpartition(":")[0] == http_url.replace("http", "ws").rpartition(":")[0]
            assert len(await instances_seen(http_url, 2)) == 2
            started = await served.until_logged(r"worker 1 started \(pid (\d+)\)")
            old_pid = int(started.group(1))
            os.kill(old_pid, signal.SIGKILL)
            await served.until_logged(r"worker 1 exited with code -9; starting it again")
            again = await served.until_logged(r"worker 1 started \(pid (\d+)\)", count=2)
            await served.until_logged("worker 1 ready", count=2)
            assert int(again.group(1)) != old_pid
            # The new worker serves beside the other: two instances answer again.
            assert len(await instances_seen(http_url, 2)) == 2


async def test_sigterm_drains_every_worker_and_the_parent_exits_0(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    async with upstream() as env, parent(env, ledger, "--shutdown-grace", "10") as (served, ws_url, _):
        with trio.fail_after(WAIT):
            async with connect_url(ws_url, "draining") as client:
                await receive_ready(client)
                await client.send(type="query", id="q", request=chat(FINISHES))
                await until_events(client, "q", 2)
                served.process.send_signal(signal.SIGTERM)
                frames = await client.until_terminal("q")
                assert isinstance(frames[-1], Done)
            assert await served.process.wait() == 0
    for index in (1, 2):
        assert f"worker {index} exited with code 0".encode() in served.stderr
    assert b"SIGTERM forwarded" in served.stderr
    assert stored_total(ledger, "draining") > 0


async def test_workers_shut_down_when_their_parent_is_killed(tmp_path: Path) -> None:
    async with upstream() as env, parent(env, tmp_path / "ledger.sqlite3") as (served, _, _):
        with trio.fail_after(WAIT):
            served.process.kill()
            # The workers write to the same stderr pipe, which the test still reads.
            await served.until_logged(r"\[worker \d\] switchboard.workers the parent process is gone", count=2)
            await served.until_logged(r"\[worker \d\] switchboard switchboard stopped", count=2)


async def test_workers_on_a_postgresql_ledger_are_instances_of_its_fleet(pg_url: str) -> None:
    async with upstream() as env, parent(env, pg_url) as (served, _, http_url):
        with trio.fail_after(WAIT):
            assert len(await instances_seen(http_url, 2)) == 2
            await served.until_logged("session takeover across instances on channel", count=2)


async def test_a_second_signal_is_forwarded_and_ends_the_workers_grace_at_once(tmp_path: Path) -> None:
    async with upstream() as env, parent(env, tmp_path / "ledger.sqlite3", "--shutdown-grace", "600") as (served, ws_url, _):
        with trio.fail_after(WAIT):
            async with connect_url(ws_url, "stalled") as client:
                await receive_ready(client)
                await client.send(type="query", id="q", request=chat(STALL))
                await until_events(client, "q", 2)
                served.process.send_signal(signal.SIGTERM)
                await served.until_logged(r"\[worker \d\] switchboard SIGTERM: shutting down", count=2)
                served.process.send_signal(signal.SIGTERM)
                frames = await client.until_terminal("q")
                assert isinstance(frames[-1], ErrorFrame) and frames[-1].error.type == "shutting_down"
            assert await served.process.wait() == 0
    assert served.stderr.count(b"SIGTERM again: ending the grace now") >= 1


async def test_an_in_memory_ledger_is_refused_with_workers() -> None:
    command = [sys.executable, "-c", "from actors.cli.commands import main; main()", "serve", "--workers", "2", "--ledger", ":memory:"]
    with trio.fail_after(WAIT):
        result = await trio.run_process(command, env=clean_env(), capture_stderr=True, check=False)
    assert result.returncode == 2
    assert b"--workers above 1 needs a ledger the workers share" in result.stderr


async def test_workers_that_cannot_start_stop_the_parent_with_their_exit_code(tmp_path: Path) -> None:
    taken = socket.socket()  # a listener without SO_REUSEPORT: no worker can bind its port
    with taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = [sys.executable, "-c", "from actors.cli.commands import main; main()", "serve", "--workers", "2"]
        command += ["--port", port, "--ledger", str(tmp_path / "ledger.sqlite3")]
        with trio.fail_after(WAIT):
            result = await trio.run_process(command, env=clean_env(), capture_stderr=True, capture_stdout=True, check=False)
    assert result.returncode == 1
    assert re.search(rb"switchboard: worker \d exited with code 1 before it was ready", result.stderr)
    assert result.stdout == b""  # no URL: never ready


def test_workers_auto_is_the_usable_cpus() -> None:
    from actors.cli.workers import workers_arg

    assert workers_arg("auto") == len(os.sched_getaffinity(0))
    assert workers_arg("3") == 3
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match="--workers takes a count"):
            workers_arg(bad)
