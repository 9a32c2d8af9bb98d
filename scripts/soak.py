"""Soak: many sessions through both doors, random upstream faults, random ``kill -9`` of the
gateway; at the end, the ledger file must hold every cost the gateway reported as recorded.

Run it (loopback only; it stops by itself)::

    .venv/bin/python scripts/soak.py                  # one minute
    .venv/bin/python scripts/soak.py --minutes 5 --sessions 12 --seed 7

What it does:

1. Starts ``switchboard emulator --port 0`` (a process of its own, so killing the gateway
   leaves it alone) and ``switchboard serve --port 0 --http-port 0 --ledger FILE`` pointed
   at it (``ANTHROPIC_BASE_URL``, ``ANTHROPIC_API_KEY``: the emulator takes any non-empty
   key), with ``CLAUDE_CODE_MAX_RETRIES`` small so a failing query ends in seconds.
2. Runs ``--sessions`` workers, half on the WebSocket door (session ``soak-ws-N``), half on
   the HTTP door (``x-switchboard-session: soak-http-N``, JSON and SSE answers), each
   sending one query after another until the time is up. A query asks for a random fault
   with the emulator's directive ``<<emulator:SPEC>>`` (README "The emulator": 529, 429,
   ``overloaded_midstream``, ``drop``, a short ``stall``, a paced answer...); some
   WebSocket queries are aborted after their first event.
3. Every few seconds (``--kill-every``) kills the gateway with SIGKILL and starts it again
   on the same ledger file; the workers reconnect to the new ports. A query cut by a kill
   counts as ``lost`` (its cost was never reported).
4. Records, per session, every cost reported as recorded: a ``done`` frame's ``cost_usd``
   (not when it says ``cost_recorded: false``; a frame without the field counts), an HTTP
   JSON answer's ``x-switchboard-cost-usd``, an SSE stream's closing
   ``: switchboard cost_usd=...`` comment.
5. Stops the gateway, reads the ledger with ``switchboard cost --json --ledger FILE`` and
   checks that each session holds at least what was reported, to the micro-dollar (it may
   hold more: aborted and failed attempts are charged without a ``done``).

It prints a summary (queries; done, error, aborted, lost, timed-out counts, and HTTP 400s, the
door refusing the soak's own request, which a sound soak never gets; kills; reported,
ledger and missing dollars) and exits 1 if any reported cost is missing from the ledger.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import trio
from _bench_procs import (
    REPO,
    _first_lines,
    child_env,
    open_child,
    stop_process,
    switchboard_command,
)
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

PICO_PER_USD: Final = 10**12
PICO_PER_MICRO: Final = 10**6
MODEL: Final = "claude-sonnet-4-6"
# Upstream retries per query: a fault for good ends a query in seconds, not minutes.
MAX_RETRIES: Final = 2
# One query, retries and faults included, ends within this; past it, it counts as timed out.
QUERY_TIMEOUT: Final = 60.0
# How long a worker waits for a restarted gateway before giving up on this round.
RECONNECT_TIMEOUT: Final = 30.0
START_TIMEOUT: Final = 30.0
# The faults asked for, with the emulator's directive; None: a plain answer. Each directive
# text applies once (README "The emulator"), so the retry of a faulted query succeeds, unless
# it says ``times=all``; the random ``deltas`` makes most texts new.
FAULTS: Final[tuple[str | None, ...]] = (
    None, None, None, None,
    "529", "429:retry_after=1", "529:times=all", "500",
    "overloaded_midstream:after=3", "drop:after=2", "drop:after=0",
    "stall:after=2,seconds=2", "ok:pace_ms=20", "max_tokens:limit=3",
)  # fmt: skip
SSE_COST: Final = b": switchboard cost_usd="


# --- what was reported, and the check ---------------------------------------------------------


def to_pico(usd: float | str) -> int:
    """Dollars as printed by the gateway (12 decimals at most) to picodollars, exactly."""
    return round(float(usd) * PICO_PER_USD)


def reported_cost(frame: dict[str, Any]) -> int | None:
    """The cost a terminal WebSocket frame reports as recorded, in picodollars: a ``done``'s
    ``cost_usd`` unless it says ``cost_recorded: false``; None for anything else."""
    if frame.get("type") != "done" or frame.get("cost_recorded", True) is False:
        return None
    return to_pico(frame["cost_usd"])


def sse_reported_cost(body: bytes) -> int | None:
    """The cost in an SSE stream's closing comment (``: switchboard cost_usd=X ...``)."""
    at = body.rfind(SSE_COST)
    if at < 0:
        return None
    value = body[at + len(SSE_COST) :].split(None, 1)[0]
    return to_pico(value.decode())


@dataclass(frozen=True)
class SessionCheck:
    session_id: str
    reported_pico: int
    ledger_pico: int

    @property
    def missing_pico(self) -> int:
        """What was reported and is not in the ledger, to the micro-dollar (0 if nothing)."""
        reported = math.floor(self.reported_pico / PICO_PER_MICRO + 0.5)
        held = math.floor(self.ledger_pico / PICO_PER_MICRO + 0.5)
        return max(0, reported - held) * PICO_PER_MICRO


def check_ledger(reported: dict[str, int], summaries: list[dict[str, Any]]) -> list[SessionCheck]:
    """Each reporting session against the ledger's cost summaries (``switchboard cost
    --json``): what it reported, and what the ledger holds (0 for a session it lacks)."""
    held = {summary["session_id"]: to_pico(summary["total_cost_usd"]) for summary in summaries}
    return [
        SessionCheck(session_id=sid, reported_pico=pico, ledger_pico=held.get(sid, 0))
        for sid, pico in sorted(reported.items())
    ]


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """``switchboard cost --json --ledger PATH``: every session's cost summary."""
    result = subprocess.run(
        [*switchboard_command(), "cost", "--json", "--ledger", str(path)],
        capture_output=True, check=True, cwd=REPO, env=child_env({}), timeout=60,
    )  # fmt: skip
    summaries = msgspec.json.decode(result.stdout)
    assert isinstance(summaries, list)
    return summaries


# --- the gateway, killed and restarted ---------------------------------------------------------


@dataclass
class Stats:
    outcomes: Counter[str] = field(default_factory=Counter)
    reported: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    restarts: int = 0

    def report(self, session_id: str, pico: int | None) -> None:
        if pico is not None:
            self.reported[session_id] = self.reported.get(session_id, 0) + pico


class Gateway:
    """The gateway process, and the doors' URLs of its current run (None while down)."""

    def __init__(self, emulator_url: str, ledger: Path, logs: Path) -> None:
        self.env = child_env(
            {
                "ANTHROPIC_BASE_URL": emulator_url,
                "ANTHROPIC_API_KEY": "sk-ant-soak",
                "CLAUDE_CODE_MAX_RETRIES": str(MAX_RETRIES),
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            },
            drop=("ANTHROPIC_AUTH_TOKEN", "SWITCHBOARD_ACCESS_TOKENS", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"),
        )
        self.ledger = ledger
        self.logs = logs
        self.process: trio.Process | None = None
        self.ws_url: str | None = None
        self.http_url: str | None = None
        self.up = trio.Event()
        self.runs = 0

    async def start(self) -> None:
        self.runs += 1
        with (self.logs / f"gateway-{self.runs}.log").open("wb") as log:
            process = await trio.lowlevel.open_process(
                [*switchboard_command(), "serve", "--port", "0", "--http-port", "0", "--ledger", str(self.ledger)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=self.env, cwd=str(REPO),
            )  # fmt: skip
        self.process = process
        assert process.stdout is not None
        lines: list[str] = []
        with trio.move_on_after(START_TIMEOUT):
            lines = await _first_lines(process.stdout, 2)
        if len(lines) < 2 or not lines[0].startswith("ws://") or not lines[1].startswith("http://"):
            raise RuntimeError(f"the gateway did not start: {lines!r}; see {self.logs}")
        self.ws_url, self.http_url = lines
        self.up.set()

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, no goodbye."""
        self.up = trio.Event()
        self.ws_url = self.http_url = None
        if self.process is not None:
            self.process.kill()
            await self.process.wait()
            if self.process.stdout is not None:
                await self.process.stdout.aclose()

    async def stop(self) -> None:
        self.up = trio.Event()
        if self.process is not None:
            await stop_process(self.process)
            if self.process.stdout is not None:
                await self.process.stdout.aclose()

    async def wait_up(self) -> bool:
        with trio.move_on_after(RECONNECT_TIMEOUT):
            await self.up.wait()
            return True
        return False


# --- the workers --------------------------------------------------------------------------------


def prompt(rng: random.Random, n: int) -> tuple[str, str | None]:
    """The query's text (unique, so an emulator directive is new) and its fault."""
    fault = rng.choice(FAULTS)
    text = f"soak query {n}: say something"
    if fault is not None:
        sep = "," if ":" in fault else ":"
        text += f" <<emulator:{fault}{sep}deltas={rng.randint(3, 120)}>>"
    return text, fault


def request(text: str, *, stream: bool | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": text}]}
    if stream is not None:
        body["stream"] = stream
    return body


async def ws_worker(gateway: Gateway, stats: Stats, session_id: str, deadline: float, rng: random.Random) -> None:
    n = 0
    while trio.current_time() < deadline:
        if not await gateway.wait_up():
            continue
        url = gateway.ws_url
        if url is None:
            continue
        try:
            async with open_websocket_url(f"{url}/v1/sessions/{session_id}", max_message_size=64 << 20) as ws:
                ready = msgspec.json.decode(await ws.get_message())
                assert ready["type"] == "ready", ready
                while trio.current_time() < deadline:
                    n += 1
                    text, _ = prompt(rng, n)
                    query_id = f"q{n}"
                    abort = rng.random() < 0.1
                    await ws.send_message(msgspec.json.encode({"type": "query", "id": query_id, "request": request(text)}).decode())
                    with trio.move_on_after(QUERY_TIMEOUT) as timer:
                        while True:
                            frame = msgspec.json.decode(await ws.get_message())
                            if frame.get("id") != query_id:
                                continue
                            if abort and frame["type"] == "event":
                                abort = False
                                await ws.send_message(msgspec.json.encode({"type": "abort", "id": query_id}).decode())
                            if frame["type"] in ("done", "aborted", "error"):
                                stats.outcomes[frame["type"]] += 1
                                stats.report(session_id, reported_cost(frame))
                                break
                    if timer.cancelled_caught:
                        stats.outcomes["timed_out"] += 1
                        break  # a new connection for the next query
        except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError):
            stats.outcomes["lost"] += 1
            await gateway.wait_up()


async def http_worker(gateway: Gateway, stats: Stats, session_id: str, deadline: float, rng: random.Random) -> None:
    n = 0
    # The API's version, required by the door as by the API (docs/protocol.md 2); no
    # x-stainless-retry-count: the gateway retries (its CLAUDE_CODE_MAX_RETRIES above).
    headers = {"x-switchboard-session": session_id, "x-api-key": "soak", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(timeout=QUERY_TIMEOUT) as client:
        while trio.current_time() < deadline:
            if not await gateway.wait_up():
                continue
            url = gateway.http_url
            if url is None:
                continue
            n += 1
            text, _ = prompt(rng, n)
            stream = rng.random() < 0.5
            try:
                response = await client.post(f"{url}/v1/messages", json=request(text, stream=stream), headers=headers)
            except httpx.TimeoutException:
                stats.outcomes["timed_out"] += 1
                continue
            except httpx.HTTPError:
                stats.outcomes["lost"] += 1
                await gateway.wait_up()
                continue
            body = response.content
            if stream and response.status_code == 200:
                if b"event: message_stop" in body and SSE_COST in body:
                    stats.outcomes["done"] += 1
                    stats.report(session_id, sse_reported_cost(body))
                else:
                    stats.outcomes["error"] += 1
            elif response.status_code == 200:
                stats.outcomes["done"] += 1
                cost = response.headers.get("x-switchboard-cost-usd")
                stats.report(session_id, to_pico(cost) if cost is not None else None)
            elif response.status_code == 400:
                # The door refused the soak's own request: a broken soak, shown apart.
                stats.outcomes["refused"] += 1
            else:
                stats.outcomes["error"] += 1


async def killer(gateway: Gateway, stats: Stats, deadline: float, rng: random.Random, every: tuple[float, float]) -> None:
    while True:
        pause = rng.uniform(*every)
        if trio.current_time() + pause >= deadline:
            return
        await trio.sleep(pause)
        await gateway.kill()
        stats.kills += 1
        await gateway.start()
        stats.restarts += 1


# --- the run --------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, workdir: Path) -> int:
    rng = random.Random(args.seed)
    stats = Stats()
    ledger = workdir / "ledger.sqlite3"
    async with open_child(
        "emulator", ["emulator", "--port", "0"], env=child_env({}), cpus=None,
        log_path=workdir / "emulator.log", url_prefix="http://",
    ) as emulator:  # fmt: skip
        gateway = Gateway(emulator.url, ledger, workdir)
        await gateway.start()
        try:
            deadline = trio.current_time() + args.minutes * 60
            async with trio.open_nursery() as nursery:
                for index in range(args.sessions):
                    worker = ws_worker if index % 2 == 0 else http_worker
                    name = f"soak-{'ws' if index % 2 == 0 else 'http'}-{index}"
                    nursery.start_soon(worker, gateway, stats, name, deadline, random.Random(rng.random()))
                nursery.start_soon(killer, gateway, stats, deadline, random.Random(rng.random()), tuple(args.kill_every))
        finally:
            await gateway.stop()
    checks = check_ledger(stats.reported, read_ledger(ledger))
    return summarize(stats, checks)


def summarize(stats: Stats, checks: list[SessionCheck]) -> int:
    reported = sum(c.reported_pico for c in checks)
    held = sum(c.ledger_pico for c in checks)
    missing = sum(c.missing_pico for c in checks)
    outcomes = stats.outcomes
    queries = sum(outcomes.values())
    print(f"queries {queries}: done {outcomes['done']}, error {outcomes['error']}, aborted {outcomes['aborted']}, "
          f"lost to a kill {outcomes['lost']}, timed out {outcomes['timed_out']}, "
          f"refused as malformed (HTTP 400) {outcomes['refused']}")  # fmt: skip
    print(f"gateway kills (SIGKILL) {stats.kills}, restarts {stats.restarts}")
    print(f"sessions {len(checks)}: reported ${reported / PICO_PER_USD:.6f}, ledger ${held / PICO_PER_USD:.6f}, "
          f"missing ${missing / PICO_PER_USD:.6f}")  # fmt: skip
    for check in checks:
        if check.missing_pico:
            print(f"  MISSING {check.session_id}: reported ${check.reported_pico / PICO_PER_USD:.6f}, "
                  f"ledger ${check.ledger_pico / PICO_PER_USD:.6f}")  # fmt: skip
    print("OK: the ledger holds every reported cost" if not missing else "FAIL: reported costs are missing")
    return 0 if not missing else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to run (default 1)")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions, half per door (default 8)")
    parser.add_argument("--kill-every", type=float, nargs=2, default=[4.0, 12.0], metavar=("MIN", "MAX"),
                        help="seconds between gateway kills, drawn uniformly (default 4 12)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (ledger, logs)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-soak-"))
    status = 1
    try:
        status = trio.run(soak, args, workdir)
    finally:
        if args.keep or status != 0:
            print(f"work directory (ledger, logs): {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
