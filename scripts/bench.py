"""Measure what the gateway adds: time to first event and relayed events/s, vs the emulator direct.

Run it (Linux; the gateway and the emulator are started as subprocesses on loopback)::

    ./dev bench                      # levels 1, 10, 100; 20 requests per stream; 3 repeats
    ./dev bench --quick              # smoke run: levels 1 and 10, 5 requests, 1 repeat
    ./dev bench --pace-ms 10         # the emulator pauses 10 ms between events
    ./dev bench --json > bench.json  # the same numbers (and every repeat) as JSON
    .venv/bin/python scripts/bench.py --levels 1,50 --requests 40 --repeat 5

What it does:

1. Starts ``switchboard emulator --port 0`` (the fake Messages API) and, for each
   concurrency level, a fresh ``switchboard serve --port 0`` pointed at it
   (``ANTHROPIC_BASE_URL``, ``ANTHROPIC_API_KEY=sk-ant-bench``). With 2+ usable CPUs the
   gateway is pinned to the first and the emulator and this load generator to the others
   (``sched_setaffinity``); the output says which pinning was used.
2. Checks once that both paths see the same complete stream: every request asks, with the
   ``<<emulator:ok:deltas=N>>`` directive in the user text, for N text deltas, i.e. N + 6
   events (56 by default). The benchmark stops if the two paths differ.
3. For each level, ``--repeat`` times, runs the *direct* path then the *gateway* path.
   Direct: one pooled ``httpx.AsyncClient`` POSTs ``/v1/messages`` with ``stream: true``
   (the body the gateway would send) and reads the SSE. Gateway: one WebSocket connection
   per stream (session ``bench-<n>``, clock started after its ``ready``), one ``query`` at a
   time. Each of the N concurrent streams sends ``--warmup`` unmeasured requests, waits for
   every stream to finish warming up, then sends ``--requests`` measured ones back to back.
   Each run has a deadline (``--timeout``); unfinished requests then count as errors.

The numbers (per path and level; the median over the repeats, each repeat's in ``--json``):

- ``req/s``, ``events/s``: successful requests, and events received, per second of the
  measured phase (from the moment every stream finished warming up to the last answer).
- ``ttfe p50``/``p99`` (ms): time to first event, from sending the request (``POST`` or
  ``query`` frame) to holding the first complete event (SSE event / ``event`` frame).
  Nearest-rank percentiles over the successful requests of a repeat.
- ``+ttfe p50``/``p99`` (ms), gateway rows: the gateway's median TTFE percentile minus the
  direct one at the same level, i.e. the time the gateway adds before the first event.
- ``gap p99`` (ms): the 99th percentile of the time between consecutive events of a request
  (a stall shows here; direct events read from one chunk have a gap of 0).
- ``gw cpu/req`` (ms): the gateway process's CPU time over the measured phase, per measured
  request (from ``/proc/PID/stat`` utime + stime, refined with the threads' nanosecond
  ``/proc/PID/task/*/schedstat`` counters, since 10 ms ticks are too coarse here).
  ``gw %cpu``: the gateway's CPU time over the measured phase's wall time (100: one core
  busy, the gateway is the bottleneck). ``load %cpu``: the same for the emulator and this
  load generator together (they share the other core(s) when pinned; near 100 on one core,
  the client side is the bottleneck and the row measures it, not the gateway). ``--json``
  also has each one's CPU ms per request.
- ``other %cpu``: CPU time used by everything else on the machine meanwhile (``/proc/stat``
  minus the three processes above; 10 ms ticks), over the wall time: well above 0, other
  programs competed for the CPUs and the row is noisy.
- ``gw rss MiB``: the gateway's peak resident set (``VmHWM``) since it started for this level.
- ``errors``: requests that failed, summed over the repeats, never averaged away: an HTTP
  error, a stream without ``message_stop``, a gateway ``error``/``aborted``/``rejected``
  frame, fewer or more events than expected, a connection lost, or a deadline hit.
  ``dropped``: the events missing from those streams. Reasons are listed under the table.

Reading the numbers:

- With ``--pace-ms 0`` the emulator writes a whole answer in one write, so a direct client
  holds all 56 events at once (its TTFE is the time to the whole answer, its gaps are 0)
  while the gateway relays them one frame each. ``--pace-ms`` gives streams that trickle,
  as the API's do, and a fairer TTFE comparison.
- The direct path is an httpx client. httpcore's connection pool rescans all of its
  connections, for each connection, on every request (work grows with the square of the
  connections; httpcore 1.0.9), so at 100 streams the direct rows
  can be bound by this load generator (``load %cpu`` near 100) and show a *negative* added
  TTFE. The gateway's upstream client is httpx too and pays the same cost in ``gw cpu/req``.
- The machine is shared: ``other %cpu`` and the load average in the header say how much.

Exit status: 0 no errors, 1 some requests failed (the table says which), 2 the benchmark
could not run (a process did not start, or the preflight check failed), 130 interrupted.
Logs of the emulator and gateways go to a temporary directory, kept (and named on stderr)
when something failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import trio
from _bench_load import RunSpec, Workload, direct_headers, query_frame, run_load
from _bench_procs import (
    Child,
    ChildFailed,
    Pinning,
    child_env,
    cpu_seconds,
    open_child,
    peak_rss_bytes,
    pin_self,
    plan_pinning,
    system_busy_seconds,
)
from _bench_report import (
    CpuUse,
    RunMetrics,
    Summary,
    reduce_run,
    render_json,
    render_table,
    summarise,
)
from trio_websocket import open_websocket_url

DEFAULT_LEVELS: Final = (1, 10, 100)
QUICK_LEVELS: Final = (1, 10)
# Upstream settings the gateway must not inherit from the caller's shell: the bench talks to
# the emulator only, with its own key, without client auth and without debug logging.
_GATEWAY_ENV_DROP: Final = (
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_CUSTOM_HEADERS",
    "SWITCHBOARD_ACCESS_TOKENS",
    "ANTHROPIC_LOG",
)
PREFLIGHT_TIMEOUT: Final = 30.0


class BenchError(Exception):
    """The benchmark cannot run (exit status 2)."""


class _Frame(msgspec.Struct):
    type: str
    id: str | None = None
    event: dict[str, Any] | None = None


_FRAME: Final = msgspec.json.Decoder(_Frame)


async def preflight(client: httpx.AsyncClient, emulator: str, gateway: str, workload: Workload) -> None:
    """One request on each path: both must carry the same ``expected_events`` event types.

    Raises BenchError otherwise.
    """
    with trio.fail_after(PREFLIGHT_TIMEOUT):
        response = await client.post(
            emulator + "/v1/messages", content=workload.upstream_body(), headers=direct_headers()
        )
        if response.status_code != 200:
            raise BenchError(f"preflight: the emulator answered {response.status_code}: {response.text[:300]}")
        direct = [
            line[len("event:") :].strip()
            for line in response.text.splitlines()
            if line.startswith("event:")
        ]
        relayed: list[str] = []
        async with open_websocket_url(gateway + "/v1/sessions/bench-preflight") as ws:
            if _FRAME.decode(await ws.get_message()).type != "ready":
                raise BenchError("preflight: the gateway's first frame was not ready")
            await ws.send_message(query_frame("preflight", workload))
            while True:
                frame = _FRAME.decode(await ws.get_message())
                if frame.id != "preflight":
                    continue
                if frame.type == "event" and frame.event is not None:
                    relayed.append(str(frame.event.get("type")))
                elif frame.type == "tombstone":
                    relayed.clear()
                elif frame.type == "done":
                    break
                elif frame.type in ("error", "aborted", "rejected"):
                    raise BenchError(f"preflight: the gateway answered {frame.type}")
    expected = workload.expected_events
    if len(direct) != expected or relayed != direct:
        raise BenchError(
            f"preflight: expected {expected} events on both paths; direct gave {len(direct)} "
            f"{direct}, the gateway {len(relayed)} {relayed}"
        )


async def measure(
    spec: RunSpec,
    repeat: int,
    *,
    emulator: Child,
    gateway: Child,
    client: httpx.AsyncClient,
    time_limit: float,
) -> RunMetrics:
    """Run ``spec`` once (at most ``time_limit`` s), reading CPU at the measured phase's two ends."""
    on_gateway = spec.path == "gateway"
    marks: list[tuple[float, float, float, float]] = []

    def mark() -> None:
        marks.append(
            (cpu_seconds(gateway.pid), cpu_seconds(emulator.pid), time.process_time(), system_busy_seconds())
        )

    outcome = await run_load(
        spec, deadline=trio.current_time() + time_limit, on_start=mark, on_end=mark, client=client
    )
    if len(marks) == 2:
        gw, emu, gen, system = (end - start for start, end in zip(*marks, strict=True))
        cpu = CpuUse(
            # An idle gateway's CPU would only blur the direct rows; it still counts as ours below.
            gateway=gw if on_gateway else None,
            emulator=emu,
            loadgen=gen,
            # Whatever else ran meanwhile (other programs on a shared machine) is noise.
            others=max(0.0, system - gw - emu - gen),
        )
    else:
        cpu = CpuUse(gateway=None, emulator=None, loadgen=0.0, others=None)
    return reduce_run(
        spec.path,
        spec.concurrency,
        repeat,
        outcome,
        expected_events=spec.workload.expected_events,
        cpu=cpu,
        gateway_rss=peak_rss_bytes(gateway.pid) if on_gateway else None,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def bench(args: argparse.Namespace, pinning: Pinning, log_dir: Path) -> list[Summary]:
    """Run every level and repeat; return the summaries, direct then gateway per level.

    Raises ChildFailed or BenchError when the benchmark cannot run.
    """
    workload = Workload(model=args.model, deltas=args.deltas, pace_ms=args.pace_ms)
    levels: list[int] = args.levels
    emulator_args = ["emulator", "--host", "127.0.0.1", "--port", "0"]
    # No ledger file: a benchmark's made-up usage must never mix into real costs.
    gateway_args = ["serve", "--host", "127.0.0.1", "--port", "0", "--ledger", ":memory:"]
    # Room for every stream's connection plus the preflight's, all kept alive between runs.
    limits = httpx.Limits(max_connections=max(levels) + 8, max_keepalive_connections=max(levels) + 8)
    summaries: list[Summary] = []
    async with (
        open_child(
            "emulator",
            emulator_args,
            env=child_env({}),
            cpus=pinning.others,
            log_path=log_dir / "emulator.log",
            url_prefix="http://",
        ) as emulator,
        httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0)) as client,
    ):
        _progress(f"emulator at {emulator.url} (pid {emulator.pid}); logs in {log_dir}")
        gateway_env = child_env(
            {"ANTHROPIC_BASE_URL": emulator.url, "ANTHROPIC_API_KEY": "sk-ant-bench"},
            drop=_GATEWAY_ENV_DROP,
        )
        for index, level in enumerate(levels):
            async with open_child(
                "gateway",
                gateway_args,
                env=gateway_env,
                cpus=pinning.gateway,
                log_path=log_dir / f"gateway-x{level}.log",
                url_prefix="ws://",
            ) as gateway:
                _progress(f"level {level}: gateway at {gateway.url} (pid {gateway.pid})")
                if index == 0:
                    await preflight(client, emulator.url, gateway.url, workload)
                    _progress(f"preflight: {workload.expected_events} events on both paths")
                runs: dict[str, list[RunMetrics]] = {"direct": [], "gateway": []}
                for repeat in range(args.repeat):
                    # Interleaved, so a slow drift of the machine affects both paths alike.
                    for path in ("direct", "gateway"):
                        url = emulator.url if path == "direct" else gateway.url
                        spec = RunSpec(path, url, level, args.warmup, args.requests, workload)
                        metrics = await measure(
                            spec, repeat, emulator=emulator, gateway=gateway, client=client, time_limit=args.timeout
                        )
                        runs[path].append(metrics)
                        _progress(
                            f"  x{level} repeat {repeat + 1}/{args.repeat} {path:7}: "
                            f"{metrics.requests_per_s:8.1f} req/s, ttfe p50 {_ms(metrics.ttfe_p50_ms)}, "
                            f"{metrics.errors} errors"
                        )
                direct = summarise(runs["direct"])
                summaries += [direct, summarise(runs["gateway"], direct)]
    return summaries


def _default_timeout(args: argparse.Namespace) -> float:
    """A run's deadline: generous over the paced duration of one stream's requests."""
    per_request = (args.deltas + 6) * args.pace_ms / 1000 + 0.05
    return float(60.0 + 5 * (args.warmup + args.requests) * per_request)


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("levels must be integers >= 1")
    return levels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Gateway vs direct: time to first event and events/s at several concurrencies.",
        epilog="See the module docstring (scripts/bench.py) for what each number means.",
    )
    parser.add_argument("--levels", type=_levels, default=None, help="concurrency levels (default 1,10,100)")
    parser.add_argument("--requests", type=int, default=None, help="measured requests per stream (default 20)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per stream (default 2)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per level; medians reported (default 3)")
    parser.add_argument("--deltas", type=int, default=50, help="text deltas per answer (default 50: 56 events)")
    parser.add_argument("--pace-ms", type=int, default=0, help="emulator pause between events (default 0)")
    parser.add_argument("--model", default="claude-sonnet-4-6", help="model in the requests")
    parser.add_argument("--timeout", type=float, default=None, help="deadline of one run, s (default: scaled)")
    parser.add_argument("--quick", action="store_true", help="smoke run: levels 1,10; 5 requests; 1 repeat")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of the table")
    args = parser.parse_args(argv)
    quick = args.quick
    # --quick changes only the defaults; explicit options still win.
    for name, normal, smoke in (
        ("levels", list(DEFAULT_LEVELS), list(QUICK_LEVELS)),
        ("requests", 20, 5),
        ("warmup", 2, 1),
        ("repeat", 3, 1),
    ):
        if getattr(args, name) is None:
            setattr(args, name, smoke if quick else normal)
    if args.requests < 1 or args.warmup < 0 or args.repeat < 1 or args.deltas < 0 or args.pace_ms < 0:
        parser.error("--requests and --repeat must be >= 1; --warmup, --deltas, --pace-ms >= 0")
    if args.timeout is None:
        args.timeout = _default_timeout(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinning = plan_pinning(enabled=not args.no_pin)
    # Before trio.run starts any thread: threads inherit the CPU set of their creator.
    pin_self(pinning.others)
    log_dir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    # Other programs' load skews every number here: say how busy the machine was.
    load_average = os.getloadavg()[0]
    summaries: list[Summary] | None = None
    status = 0
    # Raised inside nurseries, these may arrive in an exception group: except* takes both.
    try:
        summaries = trio.run(bench, args, pinning, log_dir)
    except* (ChildFailed, BenchError) as group:
        for exc in group.exceptions:
            print(f"bench: {exc}", file=sys.stderr)
        status = 2
    except* KeyboardInterrupt:
        status = 130
    if summaries is None:
        print(f"bench: stopped; logs kept in {log_dir}", file=sys.stderr)
        return status
    errors = sum(s.errors for s in summaries)
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        document = {
            "config": config,
            "expected_events": args.deltas + 6,
            "pinning": pinning.describe(),
            "load_average_at_start": load_average,
            "cpus": os.cpu_count(),
            "summaries": [asdict(s) for s in summaries],
        }
        print(render_json(document))
    else:
        header = [
            f"switchboard bench: {args.deltas + 6} events/request (deltas={args.deltas}, "
            f"pace {args.pace_ms} ms), {args.requests} measured + {args.warmup} warm-up requests "
            f"per stream, median of {args.repeat} repeat(s)",
            f"pinning: {pinning.describe()}; load average at start {load_average:.2f} "
            f"on {os.cpu_count()} CPU(s)",
            "times in ms; +ttfe: gateway minus direct; cpu/req: process CPU ms per measured request",
            "",
        ]
        print(render_table(summaries, header))
    if errors:
        print(f"bench: {errors} failed request(s); logs kept in {log_dir}", file=sys.stderr)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
