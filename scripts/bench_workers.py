"""Measure ``switchboard serve --workers N``: streams per second with 1 worker against N.

Run it on purpose (never part of the suite; a few minutes of a quiet machine)::

    .venv/bin/python scripts/bench_workers.py                       # 1 against 2 workers
    .venv/bin/python scripts/bench_workers.py --workers 1,2 --streams 256 --pace-ms 20

It starts ``switchboard emulator --write-per-event`` and, for each count of ``--workers``,
one gateway ``serve --workers N --ledger FILE --http-port 0`` (each its own temporary SQLite
file; ``--workers 1`` is the plain single process), all running throughout. Each phase loads
one gateway's HTTP door with ``--streams`` concurrent streams, each on its own keep-alive
connection (the kernel spreads the connections over the workers: SO_REUSEPORT), first
``--warmup`` unmeasured requests, then, after every stream has warmed up, ``--requests``
measured ones back to back: ``stream: true``, ``--deltas`` text deltas paced ``--pace-ms``
apart by the emulator (``<<emulator:ok:deltas=D,pace_ms=P>>``). The phases of the counts
alternate, ``--repeat`` times. Nothing is pinned: the gateway's processes, the emulator and
this load generator share the machine's cores (and whatever else runs on it: say so when
quoting the figures).

The numbers (median over the repeats):

- ``streams/s``: measured streams (requests) per second of the measured phase;
- ``x1``: that over the 1-worker row's;
- ``p50``/``p99`` (ms): time per stream, from sending the request to its ``message_stop``;
- ``gw cpu/stream`` (ms): CPU time of the gateway's processes (the parent and its workers)
  over the phase per measured stream; ``emu cpu/stream``: the emulator's;
- ``errors``: failed requests (summed); any makes the exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import msgspec
import trio
from _bench_load import direct_headers, direct_request
from _bench_procs import Child, child_env, cpu_seconds, open_child
from _bench_report import percentile
from _bench_wire import HttpConnection

MODEL: Final = "claude-sonnet-4-6"
_ENV_DROP: Final = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "SWITCHBOARD_ACCESS_TOKENS", "SWITCHBOARD_LEDGER")


@dataclass(frozen=True, slots=True)
class Phase:
    times: list[float]
    wall: float
    gateway_cpu: float
    emulator_cpu: float
    errors: int


@dataclass(frozen=True, slots=True)
class Row:
    workers: int
    streams_s: float
    p50_ms: float
    p99_ms: float
    gw_cpu_ms: float
    emu_cpu_ms: float
    errors: int


def _body(deltas: int, pace_ms: int) -> bytes:
    text = f"<<emulator:ok:deltas={deltas},pace_ms={pace_ms}>> bench the workers"
    request = {"model": MODEL, "max_tokens": 256, "stream": True, "messages": [{"role": "user", "content": text}]}
    return msgspec.json.encode(request)


def gateway_pids(parent: int) -> list[int]:
    """The parent and its children (the workers), read per thread: trio starts processes
    from a worker thread, whose children only its own ``children`` file lists."""
    pids = {parent}
    for task in Path(f"/proc/{parent}/task").iterdir():
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in (task / "children").read_text().split())
    return sorted(pids)


def gateway_cpu(parent: int) -> float:
    return sum(cpu_seconds(pid) for pid in gateway_pids(parent))


async def run_phase(gateway: Child, emulator: Child, args: argparse.Namespace, tag: str) -> Phase:
    """``--streams`` streams on ``gateway``; one phase."""
    body = _body(args.deltas, args.pace_ms)
    expected = args.deltas + 6  # message_start, block start, ping, deltas, block stop, delta, stop
    parts = urlsplit(gateway.http_url or "")
    assert parts.hostname is not None and parts.port is not None
    times: list[float] = []
    errors = 0
    warmed = 0
    all_warm = trio.Event()
    marks: dict[str, float] = {}

    async def stream(n: int) -> None:
        nonlocal errors, warmed
        headers = direct_headers(f"bench-workers-{tag}-{n}")
        connection = HttpConnection(parts.hostname or "", parts.port or 0)
        try:
            for k in range(args.warmup + args.requests):
                if k == args.warmup:
                    warmed += 1
                    if warmed == args.streams:
                        marks.update(start=time.perf_counter(), gw=gateway_cpu(gateway.pid), emu=cpu_seconds(emulator.pid))
                        all_warm.set()
                    await all_warm.wait()
                sample = await direct_request(connection, "/v1/messages", body, expected, headers)
                if k < args.warmup and sample.error is not None:
                    raise SystemExit(f"warm-up request failed: {sample.error}")
                if k >= args.warmup:
                    if sample.error is None:
                        times.append(sample.total)
                    else:
                        errors += 1
                        _progress(f"request failed: {sample.error}")
        finally:
            await connection.aclose()

    async with trio.open_nursery() as nursery:
        for n in range(args.streams):
            nursery.start_soon(stream, n)
    return Phase(
        times=times,
        wall=time.perf_counter() - marks["start"],
        gateway_cpu=gateway_cpu(gateway.pid) - marks["gw"],
        emulator_cpu=cpu_seconds(emulator.pid) - marks["emu"],
        errors=errors,
    )


def summarise(workers: int, phases: list[Phase]) -> Row:
    def median(fn: Callable[[Phase], float]) -> float:
        return statistics.median(fn(p) for p in phases)

    def per_stream(seconds: Callable[[Phase], float]) -> Callable[[Phase], float]:
        return lambda p: seconds(p) / max(1, len(p.times)) * 1000

    return Row(
        workers=workers,
        streams_s=median(lambda p: len(p.times) / p.wall),
        p50_ms=median(lambda p: (percentile(p.times, 50) or 0.0) * 1000),
        p99_ms=median(lambda p: (percentile(p.times, 99) or 0.0) * 1000),
        gw_cpu_ms=median(per_stream(lambda p: p.gateway_cpu)),
        emu_cpu_ms=median(per_stream(lambda p: p.emulator_cpu)),
        errors=sum(p.errors for p in phases),
    )


@contextlib.asynccontextmanager
async def gateways(emulator: Child, counts: list[int], work: Path) -> AsyncIterator[dict[int, Child]]:
    env = child_env({"ANTHROPIC_BASE_URL": emulator.url, "ANTHROPIC_API_KEY": "sk-ant-bench"}, drop=_ENV_DROP)
    async with contextlib.AsyncExitStack() as stack:
        running: dict[int, Child] = {}
        for count in counts:
            args = ["serve", "--port", "0", "--http-port", "0", "--workers", str(count)]
            args += ["--ledger", str(work / f"ledger-{count}.sqlite3"), "--max-queries", "0"]
            log = work / f"gateway-{count}.log"
            running[count] = await stack.enter_async_context(
                open_child(f"gateway x{count}", args, env=env, cpus=None, log_path=log, url_prefix="ws://", http_url=True)
            )
        yield running


def render(rows: list[Row], header: list[str]) -> str:
    base = next((r.streams_s for r in rows if r.workers == 1), None)
    columns = ("workers", "streams/s", "x1", "p50 ms", "p99 ms", "gw cpu/stream ms", "emu cpu/stream ms", "errors")
    lines = [*header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        ratio = f"{r.streams_s / base:.2f}" if base else "-"
        cells = [str(r.workers), f"{r.streams_s:.0f}", ratio, f"{r.p50_ms:.0f}", f"{r.p99_ms:.0f}"]
        cells += [f"{r.gw_cpu_ms:.2f}", f"{r.emu_cpu_ms:.2f}", str(r.errors)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


async def main_async(args: argparse.Namespace) -> int:
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = _load()
    counts = [int(c) for c in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        work = Path(tmp)
        emulator_args = ["emulator", "--host", "127.0.0.1", "--port", "0", "--write-per-event"]
        async with open_child(
            "emulator", emulator_args, env=child_env({}), cpus=None, log_path=work / "emulator.log", url_prefix="http://"
        ) as emulator, gateways(emulator, counts, work) as running:
            phases: dict[int, list[Phase]] = {count: [] for count in counts}
            for repeat in range(args.repeat):
                for count in counts:
                    _progress(f"{count} worker(s), repeat {repeat + 1}")
                    phases[count].append(await run_phase(running[count], emulator, args, f"{count}-{repeat}"))
    rows = [summarise(count, found) for count, found in phases.items()]
    header = [
        f"{started}; {os.cpu_count()} CPUs (usable {len(os.sched_getaffinity(0))}), unpinned, shared with whatever "
        f"else runs; load average (1, 5, 15 min) before {load_before}, after {_load()}",
        "command: " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        f"{args.streams} streams x {args.requests} requests ({args.warmup} warm-up), {args.deltas} deltas "
        f"{args.pace_ms} ms apart, median of {args.repeat}; emulator --write-per-event; SQLite ledger file",
    ]
    print(render(rows, header))
    return 1 if any(r.errors for r in rows) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated (default 1,2)")
    parser.add_argument("--streams", type=int, default=256, help="concurrent streams (default 256)")
    parser.add_argument("--requests", type=int, default=10, help="measured requests per stream (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured requests per stream first (default 2)")
    parser.add_argument("--deltas", type=int, default=20, help="text deltas per answer (default 20)")
    parser.add_argument("--pace-ms", type=int, default=20, help="ms between the emulator's deltas (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="phases per count, interleaved (default 3)")
    args = parser.parse_args()
    try:
        raise SystemExit(trio.run(main_async, args))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
