"""The durable ledger as the user meets it: ``switchboard serve --ledger FILE`` killed with
``kill -9``, restarted on the same file, the session resumed; ``switchboard cost`` reads it.
The same with a PostgreSQL ledger (``ledger_location``: ``--ledger postgresql://...``).

Real processes and real time (a subprocess cannot share a virtual clock); every wait is for
a line, a frame or a process exit, bounded by ``fail_after``.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from harness import chat
from trio_websocket import WebSocketConnection, open_websocket_url, wrap_client_stream

from actors.config.settings import is_postgres_url
from actors.store.stores import open_token_store
from actors.store.token_rows import new_token
from actors.store.tokens import SILENT_AFTER
from emulator import Emulator
from protocol.budget import Limits
from protocol.pricing import PICO_PER_USD, cost_of, format_cost, usd
from protocol.usage import EMPTY_USAGE, WireUsage, merge_usage

KEY = "sk-ant-durability-test-0123456789"
CLI = [sys.executable, "-c", "from actors.cli.commands import main; main()"]
SESSION = "durable"
WAIT = 30  # seconds: a generous bound for a process start on a slow machine


def gateway_env(upstream: str, state_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_", "SWITCHBOARD_"))}
    env.update(
        ANTHROPIC_API_KEY=KEY,
        ANTHROPIC_BASE_URL=upstream,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        XDG_STATE_HOME=str(state_home),
    )
    return env


@asynccontextmanager
async def gateway(ledger: Path | str, env: dict[str, str]) -> AsyncIterator[tuple[str, trio.Process]]:
    """``switchboard serve --port 0 --ledger FILE``: yields its URL and the process; kills it
    at the end if the test has not."""
    command = [*CLI, "serve", "--port", "0", "--ledger", str(ledger)]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert process.stdout is not None
    try:
        line = b""
        with trio.fail_after(WAIT):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the gateway exited before printing its URL"
                line += chunk
        yield line.decode().strip(), process
    finally:
        process.kill()
        with trio.move_on_after(WAIT, shield=True):
            await process.wait()
        await process.stdout.aclose()


@asynccontextmanager
async def open_session(url: str, token: str | None = None) -> AsyncIterator[WebSocketConnection]:
    """A connection to the session that survives its server being killed: the test owns the
    TCP stream and closes it (trio-websocket leaves it open when the server vanishes)."""
    host, _, port = url.removeprefix("ws://").rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else None
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, host, f"/v1/sessions/{SESSION}", extra_headers=headers)
        try:
            yield ws
        finally:
            nursery.cancel_scope.cancel()


async def frame(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        decoded: dict[str, Any] = msgspec.json.decode(await ws.get_message())
        return decoded


async def run_query(ws: WebSocketConnection, query_id: str, text: str) -> dict[str, Any]:
    await ws.send_message(msgspec.json.encode({"type": "query", "id": query_id, "request": chat(text)}).decode())
    while (received := await frame(ws))["type"] not in ("done", "aborted", "error"):
        pass
    assert received["type"] == "done", received
    return received


async def kill_9(process: trio.Process) -> None:
    process.kill()  # SIGKILL: no cleanup runs, nothing is flushed by the gateway
    with trio.fail_after(WAIT):
        assert await process.wait() == -9


async def switchboard_cost(ledger: Path | str, env: dict[str, str], *args: str) -> str:
    with trio.fail_after(WAIT):
        result = await trio.run_process([*CLI, "cost", *args, "--ledger", str(ledger)], capture_stdout=True, env=env)
    return result.stdout.decode()


async def test_costs_survive_kill_9_and_the_session_resumes_after_a_restart(
    nursery: trio.Nursery, tmp_path: Path, ledger_location: str
) -> None:
    emulator = Emulator(api_keys=frozenset({KEY}))
    env = gateway_env(await nursery.start(emulator.run), tmp_path)
    ledger = ledger_location
    async with gateway(ledger, env) as (url, process):
        async with open_websocket_url(f"{url}/v1/sessions/{SESSION}") as ws:
            assert (await frame(ws))["resumed"] is False
            done = [await run_query(ws, "q1", "first question"), await run_query(ws, "q2", "a second, longer question")]
        await kill_9(process)
    reported = sum(d["cost_usd"] for d in done)
    assert done[-1]["session_cost_usd"] == pytest.approx(reported, abs=1e-12)
    async with gateway(ledger, env) as (url, _):
        async with open_websocket_url(f"{url}/v1/sessions/{SESSION}") as ws:
            ready = await frame(ws)
        assert ready["resumed"] is True
        cost = ready["cost"]
        assert cost["total_cost_usd"] == pytest.approx(reported, abs=1e-12)
        [(model, usage)] = cost["model_usage"].items()
        assert model == "claude-sonnet-4-6"
        assert usage["input_tokens"] == sum(d["usage"]["input_tokens"] for d in done)
        assert usage["output_tokens"] == sum(d["usage"]["output_tokens"] for d in done)
        # `switchboard cost` reads the ledger while the gateway has it open.
        assert msgspec.json.decode(await switchboard_cost(ledger, env, SESSION, "--json")) == cost
        text = await switchboard_cost(ledger, env)
    assert text.splitlines()[0] == f"Total cost:            {format_cost(reported)}"
    assert "claude-sonnet-4-6:" in text.splitlines()[3]


async def test_the_input_side_of_a_stream_in_flight_survives_kill_9(
    nursery: trio.Nursery, tmp_path: Path, ledger_location: str
) -> None:
    emulator = Emulator(api_keys=frozenset({KEY}))
    env = gateway_env(await nursery.start(emulator.run), tmp_path)
    ledger = ledger_location
    async with gateway(ledger, env) as (url, process):
        async with open_session(url) as ws:
            await frame(ws)
            done = await run_query(ws, "q1", "a question answered in full")
            emulator.script("stall:after=3")
            await ws.send_message(msgspec.json.encode({"type": "query", "id": "q2", "request": chat("stalls")}).decode())
            # The relay records message_start's usage before relaying the next event, so
            # the third event means the provisional record is committed.
            events = [await frame(ws) for _ in range(3)]
            assert [e["type"] for e in events] == ["event"] * 3 and events[0]["event"]["type"] == "message_start"
            await ws.send_message('{"type": "get_cost"}')
            live = await frame(ws)
            await kill_9(process)
    start_usage = msgspec.convert(events[0]["event"]["message"]["usage"], WireUsage)
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    provisional = usd(cost_of(merge_usage(EMPTY_USAGE, start_usage), "claude-sonnet-4-6", on=today).total_pico)
    expected = done["cost_usd"] + provisional
    assert live["type"] == "cost" and live["cost"]["total_cost_usd"] == pytest.approx(expected, abs=1e-12)
    async with gateway(ledger, env) as (url, _):
        async with open_websocket_url(f"{url}/v1/sessions/{SESSION}") as ws:
            ready = await frame(ws)
    assert ready["resumed"] is True
    assert ready["cost"]["total_cost_usd"] == pytest.approx(expected, abs=1e-12)
    usage = ready["cost"]["model_usage"]["claude-sonnet-4-6"]
    assert usage["input_tokens"] == done["usage"]["input_tokens"] + (start_usage.input_tokens or 0)


async def test_an_unusable_ledger_stops_serve_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    env = gateway_env("http://127.0.0.1:9", tmp_path)
    with trio.fail_after(WAIT):
        result = await trio.run_process(
            [*CLI, "serve", "--port", "0", "--ledger", str(tmp_path / "a-file" / "ledger.sqlite3")],
            capture_stdout=True, capture_stderr=True, check=False, env=env,
        )
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode().startswith("switchboard: cannot open the cost ledger")
    assert KEY not in result.stderr.decode()


async def test_a_budget_reservation_left_by_kill_9_is_released_and_its_usage_spent(
    nursery: trio.Nursery, tmp_path: Path, ledger_location: str
) -> None:
    """docs/protocol.md "Access tokens and budgets": a process killed with queries in flight
    does not shrink the budget for good; the killed query's recorded usage is spent."""
    emulator = Emulator(api_keys=frozenset({KEY}))
    env = gateway_env(await nursery.start(emulator.run), tmp_path)
    ledger = ledger_location
    store = open_token_store(ledger)
    token = new_token()
    try:
        store.add("ci", token, Limits(budget_pico=PICO_PER_USD, period="total"), datetime.datetime.now(datetime.UTC))
        async with gateway(ledger, env) as (url, process):
            async with open_session(url, token) as ws:
                await frame(ws)
                emulator.script("stall:after=3")
                await ws.send_message(msgspec.json.encode({"type": "query", "id": "q", "request": chat("stalls")}).decode())
                # The third event means the provisional record is committed (the test above).
                events = [await frame(ws) for _ in range(3)]
                assert events[0]["event"]["type"] == "message_start"
                await kill_9(process)
        info = store.get("ci")
        assert info is not None and info.account.reserved_pico > 0 and info.account.in_flight == 1
        if is_postgres_url(ledger):
            # Another instance releases it once the killed one has been silent long enough.
            later = datetime.datetime.now(datetime.UTC) + SILENT_AFTER + datetime.timedelta(seconds=1)
            assert store.release_dead("another", later) == 1
        else:
            async with gateway(ledger, env):
                pass  # one process holds an SQLite ledger: its start releases every reservation
        info = store.get("ci")
        assert info is not None
        start_usage = msgspec.convert(events[0]["event"]["message"]["usage"], WireUsage)
        today = datetime.datetime.now(datetime.UTC).date().isoformat()
        provisional = cost_of(merge_usage(EMPTY_USAGE, start_usage), "claude-sonnet-4-6", on=today).total_pico
        assert (info.account.reserved_pico, info.account.in_flight) == (0, 0)
        assert info.account.spent_pico == provisional > 0
    finally:
        store.close()


async def test_a_done_frame_says_cost_recorded_only_after_the_commit_kill_9_between(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The ledger replies only after its commit (actors/store/sqlite.py "Durability"): while
    the test holds the SQLite write lock, the gateway cannot commit the second query, so its
    ``done`` must say ``cost_recorded`` false; killed then, before any commit, the restarted
    gateway has exactly what the ``done`` frames said was recorded. A gateway that answers
    before committing says true here and loses it to the kill."""
    emulator = Emulator(api_keys=frozenset({KEY}))
    env = gateway_env(await nursery.start(emulator.run), tmp_path)
    ledger = tmp_path / "ledger.sqlite3"
    async with gateway(ledger, env) as (url, process):
        async with open_session(url) as ws:
            await frame(ws)
            first = await run_query(ws, "q1", "committed before the lock")
            lock = sqlite3.connect(ledger, timeout=WAIT, isolation_level=None)
            try:
                lock.execute("BEGIN IMMEDIATE")  # the write lock: no commit gets through
                second = await run_query(ws, "q2", "answered while the ledger cannot commit")
                await kill_9(process)
            finally:
                lock.close()
    assert first["cost_recorded"] is True
    assert second["cost_recorded"] is False
    async with gateway(ledger, env) as (url, _):
        async with open_websocket_url(f"{url}/v1/sessions/{SESSION}") as ws:
            ready = await frame(ws)
    assert ready["cost"]["total_cost_usd"] == pytest.approx(first["cost_usd"], abs=1e-12)
