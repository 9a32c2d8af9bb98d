"""Measure what the gateway adds, through each door: time to first event, events/s, CPU, memory.

Run it (Linux; the gateway and the emulator are started as subprocesses on loopback)::

    ./dev bench                      # levels 1, 10, 100; 20 requests per stream; 3 repeats
    ./dev bench --quick              # smoke run: levels 1 and 10, 5 requests, 1 repeat
    ./dev bench --pace-ms 10         # the emulator pauses 10 ms between events
    ./dev bench --bursty             # the emulator writes a whole answer at once (not the API's way)
    ./dev bench --ledger memory      # the gateway's cost ledger in memory instead of a SQLite file
    # another gateway against the same upstream, loaded like the HTTP door (path "other"):
    ./dev bench --other-gateway "litellm --model anthropic/claude-sonnet-4-6 --api_base {upstream} --port {port}"
    ./dev bench --json > bench.json  # the same numbers (and every repeat) as JSON
    .venv/bin/python scripts/bench.py --levels 1,50 --requests 40 --repeat 5
    .venv/bin/python scripts/bench.py --paths direct,http     # only these paths
    # 512 concurrent paced streams (64 deltas every 20 ms): every frame relayed?
    .venv/bin/python scripts/bench.py --levels 512 --pace-ms 20 --deltas 64 --requests 2 --repeat 1
    .venv/bin/python scripts/bench.py --idle-sessions 500     # memory per idle WebSocket session

What it does:

1. Starts ``switchboard emulator --port 0 --write-per-event`` (the fake Messages API, writing
   each SSE event on its own, as the API does while it generates: with trio's TCP_NODELAY
   each event is a TCP segment of its own, so the gateway reads and relays it on its own;
   ``--bursty`` drops ``--write-per-event``: an unpaced answer then goes out in one write and
   the gateway reads it in one or two reads, far cheaper than any real stream, and the
   output says BURSTY) and, for each concurrency level, a fresh
   ``switchboard serve --port 0 --http-port 0 --ledger FILE`` pointed at it
   (``ANTHROPIC_BASE_URL``, ``ANTHROPIC_API_KEY=sk-ant-bench``; no access tokens, so the HTTP
   door takes any ``x-api-key``). FILE is a fresh SQLite file in the bench's temporary
   directory: the durable ledger, as the product runs by default, never the real one;
   ``--ledger memory`` gives ``:memory:`` instead. With 2+ usable CPUs the
   gateway is pinned to the first and the emulator and this load generator to the others
   (``sched_setaffinity``); the output says which pinning was used. With ``--other-gateway
   CMD`` another gateway is started too, per level, pinned like ours (``_bench_other``:
   ``{upstream}``, ``{port}``, ``{host}`` in CMD are replaced; it is ready when ``{port}``
   accepts connections).
2. Checks once that the emulator and both doors see the same complete stream: every request
   asks, with the ``<<emulator:ok:deltas=N>>`` directive in the user text, for N text deltas,
   i.e. N + 6 events (56 by default). The benchmark stops if the paths differ. The other
   gateway's answer must end with ``message_stop``; its runs expect as many events as it
   gave here (another gateway may drop ``ping`` or add events).
3. For each level, ``--repeat`` times, runs each path of ``--paths`` (default all three,
   in this order, interleaved per repeat):

   - ``direct``: POST ``/v1/messages`` with ``stream: true`` (the body the gateway would
     send) to the emulator and read the SSE;
   - ``gateway`` (``--paths ws``): the gateway's WebSocket door (session ``bench-<n>``,
     clock started after its ``ready``), one ``query`` at a time;
   - ``http``: the gateway's HTTP door, measured exactly like the direct path (same body,
     same SSE reader and event count) but POSTed to the gateway's ``/v1/messages``, with
     ``x-switchboard-session: bench-http-<n>``;
   - ``other`` (with ``--other-gateway``): the other gateway, exactly as the ``http`` path.

   Every stream has a connection of its own (kept alive between its requests), spoken by
   the lean clients of ``scripts/_bench_wire.py`` rather than httpx and trio-websocket:
   the load generator shares its core with the emulator, and with the libraries' per-event
   work the client side, not the gateway, set the measured times at a few thousand events
   per second. The preflight (step 2) uses httpx and trio-websocket, so the real clients
   still check that the paths agree.

   Each of the N concurrent streams sends ``--warmup`` unmeasured requests, waits for
   every stream to finish warming up, then sends ``--requests`` measured ones back to back.
   Each run has a deadline (``--timeout``); unfinished requests then count as errors.

The numbers (per path and level; the median over the repeats, each repeat's in ``--json``):

- ``req/s``, ``events/s``: successful requests, and events received, per second of the
  measured phase (from the moment every stream finished warming up to the last answer).
- ``ttfe p50``/``p99`` (ms): time to first event, from sending the request (``POST`` or
  ``query`` frame) to holding the first complete event (SSE event / ``event`` frame).
  Nearest-rank percentiles over the successful requests of a repeat.
- ``+ttfe p50``/``p99`` (ms), gateway and http rows: the door's median TTFE percentile minus
  the direct one at the same level, i.e. the time the gateway adds before the first event
  (only when ``direct`` is among the paths).
- ``gap p99`` (ms): the 99th percentile of the time between consecutive events of a request
  (a stall shows here; direct events read from one chunk have a gap of 0). ``+gap p99``:
  minus the direct one at the same level (with ``--pace-ms``, what the gateway adds to the
  stream's rhythm).
- ``gw cpu/req`` (ms), gateway and http rows: the gateway process's CPU time over the
  measured phase, per measured request (from ``/proc/PID/stat`` utime + stime, refined
  with the threads' nanosecond ``/proc/PID/task/*/schedstat`` counters, since 10 ms ticks
  are too coarse here; for the other gateway, summed over its process tree).
  ``gw us/event``: the same CPU time per event relayed (every event the load generator
  received in the measured phase), in microseconds: what streaming costs the gateway per
  event, whatever the answers' length.
  ``gw %cpu``: the gateway's CPU time over the measured phase's wall time (100: one core
  busy, the gateway is the bottleneck). ``load %cpu``: the same for the emulator and this
  load generator together (they share the other core(s) when pinned; near 100 on one core,
  the client side is the bottleneck and the row measures it, not the gateway). ``--json``
  also has each one's CPU ms per request.
- ``other %cpu``: CPU time used by everything else on the machine meanwhile (``/proc/stat``
  minus the three processes above; 10 ms ticks), over the wall time: well above 0, other
  programs competed for the CPUs and the row is noisy.
- ``gw rss MiB``: the gateway's resident set (``VmRSS``) while the N streams are open: the
  largest of samples taken every 50 ms over the measured phase (and at its two ends).
  ``gw hwm MiB``: its peak resident set (``VmHWM``) over the run, warm-up included; the
  peak is reset at the start of each run (``/proc/PID/clear_refs``), so it is this door's
  and this run's, not an earlier run's (where the kernel refuses the reset, it is the peak
  since the gateway started for this level). Memory is the largest over the repeats.
- ``errors``: requests that failed, summed over the repeats, never averaged away: an HTTP
  error, a stream without ``message_stop``, a gateway ``error``/``aborted``/``rejected``
  frame, fewer or more events than expected, a connection lost, or a deadline hit.
  ``dropped``: the events missing from those streams. Reasons are listed under the table.

Reading the numbers:

- With ``--pace-ms 0`` the emulator writes the events back to back, one write each, as fast
  as it can: the gateway reads one or a few per read (how many depends on how the two
  processes' schedules interleave), so it is a closed-loop throughput test. ``--pace-ms``
  gives streams that trickle, as the API's do: every event is read on its own, the most
  a gateway pays per event, and a fairer TTFE comparison. With ``--bursty`` a direct client
  holds all events at once (its TTFE is the time to the whole answer, its gaps are 0) and
  the gateway's CPU per event is a best case no real stream gives.
- Paced streams start spread over one answer's duration (as independent clients would),
  then run back to back; ``+ttfe`` and ``+gap`` at a level where neither the gateway's core
  (``gw %cpu``) nor the other one (``load %cpu``) is near 100 are what the gateway adds.
- Paced streams at high concurrency load the emulator and this load generator with
  N * 1000 / pace events per second (512 streams at 20 ms: 25,600/s) on their core, and the
  gateway with as many on its own. Where ``load %cpu`` nears 100 the direct row falls behind
  the pace itself (``gap p99`` well above the pace) and the doors' ``+gap``/``+ttfe`` are
  relative to a saturated baseline; where ``gw %cpu`` nears 100 the gateway is the
  bottleneck and its gaps and first events queue. The ``errors``/``dropped`` columns still
  say whether every frame was relayed.
- The HTTP door holds an answer's content-free first events (``message_start``,
  ``content_block_start``, ``ping``) until its first content, so that a retry before any
  content stays invisible to an SSE client (actors/doors/http_answer.py). With ``--pace-ms`` the
  emulator paces those too, so the http rows' first event comes about three pacing
  intervals after the direct one's: that is the hold, not the gateway's speed. Without
  pacing they arrive together and ``+ttfe`` is the door's own cost.
- The HTTP path's SSE reader skips comment-only blocks (``: ...``, no event for an SSE
  client): the gateway's HTTP door ends each stream with ``: switchboard cost_usd=...``
  after ``message_stop``; it is not counted among the events.
- The machine is shared: ``other %cpu`` and the load average in the header say how much
  (it counts 10 ms ticks: over a run of a few tens of ms, as in ``--quick``, it is coarse).

``--idle-sessions N`` measures memory instead: with the emulator and one gateway started as
above, it opens and closes one warm-up session, reads the gateway's ``VmRSS``, opens N
WebSocket sessions (``bench-idle-<n>``, at most 32 handshakes at a time), waits for every
``ready``, lets the gateway settle for a second, reads ``VmRSS`` and ``VmHWM`` again, and
prints the growth per idle session in KB (KiB: 1024 bytes); then it closes them all and
reads ``VmRSS`` once more. Sessions that fail or are not ready by ``--timeout`` are reported
(and make the exit status 1).

Exit status: 0 no errors, 1 some requests failed, warm-up ones included (the table says
which), 2 the benchmark could not run (a process did not start, or the preflight check
failed), 130 interrupted. Logs of the emulator and gateways go to a temporary directory,
kept (and named on stderr) when something failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx
import msgspec
import trio
from _bench_idle import IdleResult, measure_idle, render_idle
from _bench_load import PATHS, RunSpec, Workload, direct_headers, query_frame, run_load
from _bench_other import open_other, tree_cpu_seconds
from _bench_procs import (
    Child,
    ChildFailed,
    Pinning,
    child_env,
    cpu_seconds,
    memory_bytes,
    open_child,
    peak_rss_bytes,
    pin_self,
    plan_pinning,
    reset_peak_rss,
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
# How often the gateway's VmRSS is sampled while a run's streams are open.
RSS_INTERVAL: Final = 0.05
# --paths names: "ws" is the gateway path (the WebSocket door).
_PATH_NAMES: Final = {"direct": "direct", "ws": "gateway", "gateway": "gateway", "http": "http", "other": "other"}
# A gateway of another make may take a while to start (imports, workers).
OTHER_START_TIMEOUT: Final = 120.0


T = TypeVar("T")

class BenchError(Exception):
    """The benchmark cannot run (exit status 2)."""


class _Frame(msgspec.Struct):
    type: str
    id: str | None = None
    event: dict[str, Any] | None = None


_FRAME: Final = msgspec.json.Decoder(_Frame)


async def _sse_event_types(client: httpx.AsyncClient, url: str, who: str, workload: Workload) -> list[str]:
    response = await client.post(
        url + "/v1/messages", content=workload.upstream_body(), headers=direct_headers("bench-http-preflight")
    )
    if response.status_code != 200:
        raise BenchError(f"preflight: {who} answered {response.status_code}: {response.text[:300]}")
    return [line[len("event:") :].strip() for line in response.text.splitlines() if line.startswith("event:")]


async def preflight(
    client: httpx.AsyncClient, emulator: str, gateway: Child | None, other: Child | None, workload: Workload
) -> int | None:
    """One request on each path: the emulator and our doors must carry the same
    ``expected_events`` event types; the other gateway's answer must end with
    ``message_stop``. Returns how many events the other gateway relays per answer (None
    without one): its runs expect that many.

    Raises BenchError otherwise.
    """
    with trio.fail_after(PREFLIGHT_TIMEOUT):
        direct = await _sse_event_types(client, emulator, "the emulator", workload)
        http: list[str] | None = None
        relayed: list[str] | None = None
        if gateway is not None:
            assert gateway.http_url is not None
            http = await _sse_event_types(client, gateway.http_url, "the gateway's HTTP door", workload)
            relayed = await _relayed_event_types(gateway.url, workload)
        others: list[str] | None = None
        if other is not None:
            others = await _sse_event_types(client, other.url, "the other gateway", workload)
    expected = workload.expected_events
    if len(direct) != expected or (relayed is not None and relayed != direct) or (http is not None and http != direct):
        raise BenchError(
            f"preflight: expected {expected} events on every path; direct gave {len(direct)} "
            f"{direct}, the WebSocket door {'-' if relayed is None else len(relayed)} {relayed}, the HTTP door "
            f"{'-' if http is None else len(http)} {http}"
        )
    if others is None:
        return None
    if not others or others[-1] != "message_stop":
        raise BenchError(f"preflight: the other gateway's answer did not end with message_stop: {others}")
    return len(others)


async def _relayed_event_types(url: str, workload: Workload) -> list[str]:
    relayed: list[str] = []
    async with open_websocket_url(url + "/v1/sessions/bench-preflight") as ws:
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
                return relayed
            elif frame.type in ("error", "aborted", "rejected"):
                raise BenchError(f"preflight: the gateway answered {frame.type}")


async def measure(
    spec: RunSpec,
    repeat: int,
    *,
    emulator: Child,
    target: Child | None,
    bystanders: list[Child],
    time_limit: float,
) -> RunMetrics:
    """Run ``spec`` once (at most ``time_limit`` s), reading CPU at the measured phase's two
    ends and the memory of ``target`` (the gateway whose door ``spec`` loads; None on the
    direct path) while its streams are open. ``bystanders``: the other gateways started,
    idle during this run; their CPU is not counted among the other programs'."""
    marks: list[tuple[float, float, float, float, float]] = []
    rss_seen: list[int] = []

    def sample_rss() -> None:
        rss = None if target is None else memory_bytes(target.pid)
        if rss is not None:
            rss_seen.append(rss)

    def mark() -> None:
        marks.append(
            (
                0.0 if target is None else _gateway_cpu(target),
                sum(_gateway_cpu(child) for child in bystanders),
                cpu_seconds(emulator.pid),
                time.process_time(),
                system_busy_seconds(),
            )
        )
        sample_rss()

    async def watch_rss() -> None:
        while True:
            await trio.sleep(RSS_INTERVAL)
            if len(marks) == 1:
                sample_rss()

    if target is not None:
        # This run's peak only, not one of the previous run through the other door.
        reset_peak_rss(target.pid)
    async with trio.open_nursery() as nursery:
        if target is not None:
            nursery.start_soon(watch_rss)
        outcome = await run_load(
            spec, deadline=trio.current_time() + time_limit, on_start=mark, on_end=mark
        )
        nursery.cancel_scope.cancel()
    if len(marks) == 2:
        gw, idle, emu, gen, system = (end - start for start, end in zip(*marks, strict=True))
        cpu = CpuUse(
            gateway=gw if target is not None else None,
            emulator=emu,
            loadgen=gen,
            # Whatever else ran meanwhile (other programs on a shared machine) is noise.
            others=max(0.0, system - gw - idle - emu - gen),
        )
    else:
        cpu = CpuUse(gateway=None, emulator=None, loadgen=0.0, others=None)
    return reduce_run(
        spec.path,
        spec.concurrency,
        repeat,
        outcome,
        expected_events=spec.expected,
        cpu=cpu,
        gateway_rss=max(rss_seen, default=None) if target is not None else None,
        gateway_peak_rss=peak_rss_bytes(target.pid) if target is not None else None,
    )


def _gateway_cpu(child: Child) -> float:
    """A gateway's CPU seconds so far: ours is one process; another may run workers."""
    return tree_cpu_seconds(child.pid) if child.name == "other" else cpu_seconds(child.pid)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _emulator_args(bursty: bool) -> list[str]:
    """The emulator's command line: each SSE event its own write (as the API writes while it
    generates), unless ``bursty`` (a whole unpaced answer in one write)."""
    return ["emulator", "--host", "127.0.0.1", "--port", "0", *([] if bursty else ["--write-per-event"])]


def _gateway_args(ledger: str) -> list[str]:
    return ["serve", "--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--ledger", ledger]


def _ledger(args: argparse.Namespace, log_dir: Path, name: str) -> str:
    """The gateway's ``--ledger``: a fresh SQLite file in the bench's temporary directory
    (``--ledger disk``, the product's durable default; never the real ledger, so made-up
    usage never mixes into real costs), or ``:memory:``."""
    return ":memory:" if args.ledger == "memory" else str(log_dir / f"ledger-{name}.sqlite3")


def _gateway_env(emulator: Child) -> dict[str, str]:
    return child_env(
        {"ANTHROPIC_BASE_URL": emulator.url, "ANTHROPIC_API_KEY": "sk-ant-bench"},
        drop=_GATEWAY_ENV_DROP,
    )


async def bench(args: argparse.Namespace, pinning: Pinning, log_dir: Path) -> list[Summary]:
    """Run every level and repeat; return the summaries, one per path (in ``PATHS`` order) per level.

    Raises ChildFailed or BenchError when the benchmark cannot run.
    """
    workload = Workload(model=args.model, deltas=args.deltas, pace_ms=args.pace_ms)
    levels: list[int] = args.levels
    paths: list[str] = args.paths
    ours = "gateway" in paths or "http" in paths
    summaries: list[Summary] = []
    other_expected: int | None = None
    async with (
        open_child(
            "emulator",
            _emulator_args(args.bursty),
            env=child_env({}),
            cpus=pinning.others,
            log_path=log_dir / "emulator.log",
            url_prefix="http://",
        ) as emulator,
        httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as preflight_client,
    ):
        _progress(f"emulator at {emulator.url} (pid {emulator.pid}); logs in {log_dir}")
        for index, level in enumerate(levels):
            async with contextlib.AsyncExitStack() as stack:
                gateway: Child | None = None
                other: Child | None = None
                if ours:
                    gateway = await stack.enter_async_context(
                        open_child(
                            "gateway",
                            _gateway_args(_ledger(args, log_dir, f"x{level}")),
                            env=_gateway_env(emulator),
                            cpus=pinning.gateway,
                            log_path=log_dir / f"gateway-x{level}.log",
                            url_prefix="ws://",
                            http_url=True,
                        )
                    )
                    _progress(
                        f"level {level}: gateway at {gateway.url} and {gateway.http_url} (pid {gateway.pid})"
                    )
                if "other" in paths:
                    other = await stack.enter_async_context(
                        open_other(
                            args.other_gateway,
                            upstream=emulator.url,
                            env=_gateway_env(emulator),
                            cpus=pinning.gateway,
                            log_path=log_dir / f"other-x{level}.log",
                            start_timeout=args.other_start_timeout,
                        )
                    )
                    _progress(f"level {level}: other gateway at {other.url} (pid {other.pid})")
                if index == 0:
                    other_expected = await preflight(preflight_client, emulator.url, gateway, other, workload)
                    _progress(
                        f"preflight: {workload.expected_events} events on every path"
                        + ("" if other_expected is None else f"; {other_expected} through the other gateway")
                    )
                targets: dict[str, Child | None] = {"direct": None, "gateway": gateway, "http": gateway, "other": other}
                urls = {
                    "direct": emulator.url,
                    "gateway": gateway.url if gateway else "",
                    "http": gateway.http_url if gateway and gateway.http_url else "",
                    "other": other.url if other else "",
                }
                started = [child for child in (gateway, other) if child is not None]
                runs: dict[str, list[RunMetrics]] = {path: [] for path in paths}
                for repeat in range(args.repeat):
                    # Interleaved, so a slow drift of the machine affects every path alike.
                    for path in paths:
                        spec = RunSpec(
                            path,
                            urls[path],
                            level,
                            args.warmup,
                            args.requests,
                            workload,
                            expected_events=other_expected if path == "other" else None,
                        )
                        target = targets[path]
                        metrics = await measure(
                            spec,
                            repeat,
                            emulator=emulator,
                            target=target,
                            bystanders=[child for child in started if child is not target],
                            time_limit=args.timeout,
                        )
                        runs[path].append(metrics)
                        _progress(
                            f"  x{level} repeat {repeat + 1}/{args.repeat} {path:7}: "
                            f"{metrics.requests_per_s:8.1f} req/s, ttfe p50 {_ms(metrics.ttfe_p50_ms)}, "
                            f"{metrics.errors} errors, {metrics.dropped} dropped"
                        )
                direct = summarise(runs["direct"]) if "direct" in runs else None
                summaries += [direct if path == "direct" and direct else summarise(runs[path], direct) for path in paths]
    return summaries


async def idle(args: argparse.Namespace, pinning: Pinning, log_dir: Path) -> IdleResult:
    """The ``--idle-sessions`` mode: the gateway's memory per idle WebSocket session.

    Raises ChildFailed when a process does not start.
    """
    async with open_child(
        "emulator",
        _emulator_args(args.bursty),
        env=child_env({}),
        cpus=pinning.others,
        log_path=log_dir / "emulator.log",
        url_prefix="http://",
    ) as emulator:
        _progress(f"emulator at {emulator.url} (pid {emulator.pid}); logs in {log_dir}")
        async with open_child(
            "gateway",
            _gateway_args(_ledger(args, log_dir, "idle")),
            env=_gateway_env(emulator),
            cpus=pinning.gateway,
            log_path=log_dir / "gateway-idle.log",
            url_prefix="ws://",
            http_url=True,
        ) as gateway:
            _progress(f"gateway at {gateway.url} (pid {gateway.pid}); opening {args.idle_sessions} sessions")
            return await measure_idle(gateway.url, gateway.pid, args.idle_sessions, time_limit=args.timeout)


def _writes(args: argparse.Namespace) -> str:
    if args.bursty:
        return "BURSTY (--bursty: a whole answer in one write, read in one or two reads)"
    if args.pace_ms:
        return f"one event per write, {args.pace_ms} ms apart"
    return "one event per write, back to back (unpaced)"


def _ledger_text(args: argparse.Namespace) -> str:
    return "SQLite file in a temporary directory" if args.ledger == "disk" else ":memory:"


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


def _paths(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in _PATH_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"paths are direct, ws, http, other; got {text!r}")
    chosen = {_PATH_NAMES[name] for name in names}
    # Always in the same order: direct first, so the doors' rows can be compared with it.
    return [path for path in PATHS if path in chosen]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Gateway vs direct: time to first event and events/s at several concurrencies.",
        epilog="See the module docstring (scripts/bench.py) for what each number means.",
    )
    parser.add_argument("--levels", type=_levels, default=None, help="concurrency levels (default 1,10,100)")
    parser.add_argument(
        "--paths",
        type=_paths,
        default=None,
        help="paths to measure, comma-separated, from direct, ws (the WebSocket door), http (the HTTP "
        "door), other (--other-gateway) (default all of them)",
    )
    parser.add_argument("--requests", type=int, default=None, help="measured requests per stream (default 20)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per stream (default 2)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per level; medians reported (default 3)")
    parser.add_argument("--deltas", type=int, default=50, help="text deltas per answer (default 50: 56 events)")
    parser.add_argument("--pace-ms", type=int, default=0, help="emulator pause between events (default 0)")
    parser.add_argument(
        "--bursty",
        action="store_true",
        help="the emulator writes a whole unpaced answer in one write (default: each event its own "
        "write, as the API writes while it generates)",
    )
    parser.add_argument(
        "--ledger",
        choices=("disk", "memory"),
        default="disk",
        help="the gateway's cost ledger: a SQLite file in a temporary directory (disk, the product's "
        "durable default) or :memory: (default disk)",
    )
    parser.add_argument(
        "--other-gateway",
        default=None,
        metavar="CMD",
        help="also measure this command's HTTP API (POST /v1/messages, SSE) as the path 'other'; "
        "{upstream} is replaced by the emulator's URL, {port} by the port it must listen on, "
        "{host} by 127.0.0.1",
    )
    parser.add_argument(
        "--other-start-timeout",
        type=float,
        default=OTHER_START_TIMEOUT,
        help=f"seconds the other gateway may take to listen (default {OTHER_START_TIMEOUT:g})",
    )
    parser.add_argument("--model", default="claude-sonnet-4-6", help="model in the requests")
    parser.add_argument("--timeout", type=float, default=None, help="deadline of one run, s (default: scaled)")
    parser.add_argument("--quick", action="store_true", help="smoke run: levels 1,10; 5 requests; 1 repeat")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of the table")
    parser.add_argument(
        "--idle-sessions",
        type=int,
        default=None,
        metavar="N",
        help="instead of the load: open N idle WebSocket sessions and report the gateway's memory per session",
    )
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
    if args.bursty and args.pace_ms:
        parser.error("--bursty writes a whole answer at once: it cannot be paced (--pace-ms)")
    if args.paths is None:
        args.paths = [path for path in PATHS if path != "other" or args.other_gateway]
    if "other" in args.paths and not args.other_gateway:
        parser.error("the path 'other' needs --other-gateway CMD")
    if args.other_gateway is not None and "{port}" not in args.other_gateway:
        parser.error("--other-gateway: the command must contain {port}, the port it listens on")
    if args.idle_sessions is not None and args.idle_sessions < 1:
        parser.error("--idle-sessions must be >= 1")
    if args.timeout is None:
        args.timeout = _default_timeout(args) if args.idle_sessions is None else 60.0 + args.idle_sessions * 0.1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinning = plan_pinning(enabled=not args.no_pin)
    # Before trio.run starts any thread: threads inherit the CPU set of their creator.
    pin_self(pinning.others)
    log_dir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    # Other programs' load skews every number here: say how busy the machine was.
    load_average = os.getloadavg()[0]
    if args.idle_sessions is not None:
        return _main_idle(args, pinning, log_dir, load_average)
    summaries, status = _run_reporting_failures(bench, args, pinning, log_dir)
    if summaries is None:
        print(f"bench: stopped; logs kept in {log_dir}", file=sys.stderr)
        return status
    # A failed warm-up request is the gateway's failure too: reported, and exit status 1.
    errors = sum(s.errors + s.warmup_errors for s in summaries)
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        config["upstream_writes"] = _writes(args)
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
            f"upstream writes: {_writes(args)}; gateway ledger: {_ledger_text(args)}",
            f"pinning: {pinning.describe()}; load average at start {load_average:.2f} "
            f"on {os.cpu_count()} CPU(s)",
            "paths: direct = the emulator; gateway = the gateway's WebSocket door; http = its HTTP door"
            + ("; other = " + args.other_gateway if args.other_gateway else "")
            + " (one connection per stream)",
            "times in ms; +ttfe, +gap: door minus direct; cpu/req: process CPU ms per measured request; "
            "us/event: gateway CPU us per event relayed; "
            "gw rss: VmRSS while the streams are open; gw hwm: VmHWM over the run",
            "",
        ]
        print(render_table(summaries, header))
    if errors:
        print(f"bench: {errors} failed request(s), warm-up included; logs kept in {log_dir}", file=sys.stderr)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if errors else 0



def _run_reporting_failures(
    scenario: Callable[[argparse.Namespace, Pinning, Path], Awaitable[T]],
    args: argparse.Namespace,
    pinning: Pinning,
    log_dir: Path,
) -> tuple[T | None, int]:
    """Run a scenario under trio: its result and exit status 0, or None and 2 (the run
    failed; reasons printed) or 130 (interrupted)."""
    result: T | None = None
    status = 0
    # Raised inside nurseries, these may arrive in an exception group: except* takes both.
    try:
        result = trio.run(scenario, args, pinning, log_dir)
    except* (ChildFailed, BenchError) as group:
        for exc in group.exceptions:
            print(f"bench: {exc}", file=sys.stderr)
        status = 2
    except* KeyboardInterrupt:
        status = 130
    return result, status

def _main_idle(args: argparse.Namespace, pinning: Pinning, log_dir: Path, load_average: float) -> int:
    result, status = _run_reporting_failures(idle, args, pinning, log_dir)
    if result is None:
        print(f"bench: stopped; logs kept in {log_dir}", file=sys.stderr)
        return status
    if args.json:
        document = {
            "config": {"idle_sessions": args.idle_sessions, "timeout": args.timeout},
            "pinning": pinning.describe(),
            "load_average_at_start": load_average,
            "cpus": os.cpu_count(),
            "idle": asdict(result),
        }
        print(render_json(document))
    else:
        header = [
            f"switchboard bench: {args.idle_sessions} idle WebSocket sessions",
            f"pinning: {pinning.describe()}; load average at start {load_average:.2f} on {os.cpu_count()} CPU(s)",
            "",
        ]
        print(render_idle(result, header))
    if result.failed:
        print(f"bench: {result.failed} session(s) failed; logs kept in {log_dir}", file=sys.stderr)
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
