"""``switchboard serve`` stopped with a real SIGTERM while streams are in flight.

Real processes and real time (a subprocess cannot share a virtual clock): a query that ends
within the grace gets every frame and ``done``, one that does not gets ``error``
``shutting_down``, then the connection closes with 1001, the process exits 0, and
``switchboard cost`` finds the usage of both in the ledger file. Every wait is for a line, a
frame or a process exit, bounded by ``fail_after``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import trio
from harness import chat, clean_env, serve_process
from trio_websocket import ConnectionClosed, wrap_client_stream

MODEL = "claude-sonnet-4-6"
GRACE_S = 2  # long enough for FINISHES on a loaded machine, short for the suite
# 20 events 20 ms apart (under half a second), and an answer that stalls for good.
FINISHES = "finishes <<emulator:ok:deltas=10,pace_ms=20>>"
STALLS = "stalls <<emulator:stall:after=5>>"
WAIT = 30  # seconds: a generous bound for a process on a slow machine


def query(query_id: str, text: str) -> str:
    return msgspec.json.encode({"type": "query", "id": query_id, "request": chat(text)}).decode()


async def test_sigterm_lets_a_stream_finish_cuts_the_rest_and_exits_0(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    frames: list[dict[str, Any]] = []
    async with serve_process(clean_env(), "--ledger", str(ledger), "--shutdown-grace", str(GRACE_S)) as served:
        url = await served.read_line()
        host, _, port = url.removeprefix("ws://").rpartition(":")
        with trio.fail_after(WAIT):
            # The test owns the TCP stream: trio-websocket's client leaves it open when the
            # server closes first (as in harness.connect).
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream, trio.open_nursery() as nursery:
                ws = await wrap_client_stream(nursery, stream, host, "/v1/sessions/rolling")
                assert msgspec.json.decode(await ws.get_message())["type"] == "ready"
                await ws.send_message(query("cut", STALLS))
                while not frames or frames[-1]["type"] != "event":
                    frames.append(msgspec.json.decode(await ws.get_message()))
                await ws.send_message(query("finishes", FINISHES))
                while frames[-1].get("id") != "finishes":
                    frames.append(msgspec.json.decode(await ws.get_message()))
                served.process.send_signal(signal.SIGTERM)
                try:
                    while True:
                        frames.append(msgspec.json.decode(await ws.get_message()))
                except ConnectionClosed as closed:
                    close_code = closed.reason.code if closed.reason is not None else None
                nursery.cancel_scope.cancel()
            assert await served.process.wait() == 0, bytes(served.stderr).decode()
    terminal = {frame["id"]: frame for frame in frames if frame["type"] in ("done", "error", "aborted")}
    assert terminal["finishes"]["type"] == "done"
    assert terminal["cut"]["type"] == "error" and terminal["cut"]["error"]["type"] == "shutting_down"
    assert close_code == 1001
    assert b"SIGTERM: shutting down" in served.stderr
    # The usage of both, the one cut off included, is in the ledger file.
    cost = await trio.run_process(
        [sys.executable, "-c", "from actors.cli.commands import main; main()", "cost", "rolling", "--ledger", str(ledger), "--json"],
        capture_stdout=True,
        stderr=subprocess.DEVNULL,
    )
    summary = msgspec.json.decode(cost.stdout)
    done = terminal["finishes"]
    assert summary["model_usage"][MODEL]["input_tokens"] > done["usage"]["input_tokens"] > 0
    # The finished answer's every delta came before its ``done``.
    deltas = [
        frame["event"]["delta"]["text"]
        for frame in frames
        if frame.get("id") == "finishes" and frame["type"] == "event" and frame["event"]["type"] == "content_block_delta"
    ]
    assert "".join(deltas) == done["message"]["content"][0]["text"] == " ".join(f"word{i}" for i in range(10))
