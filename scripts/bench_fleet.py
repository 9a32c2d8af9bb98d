"""Measure what the shared ledger costs: a budget check per query, and a second instance.

Run it on purpose (never part of the suite; it needs the PostgreSQL server the tests use,
127.0.0.1:5432 with trust authentication, and a few minutes of a quiet machine)::

    .venv/bin/python scripts/bench_fleet.py                  # both parts, 3 repeats
    .venv/bin/python scripts/bench_fleet.py --part budget --streams 1 --requests 100   # no queueing
    .venv/bin/python scripts/bench_fleet.py --json > fleet.json

Both parts start ``switchboard emulator --write-per-event`` (each SSE event its own write, as
the API sends them) and load gateways' HTTP door with the lean keep-alive clients of
``scripts/_bench_wire.py`` (``_bench_load.direct_request``): ``--streams`` concurrent
streams, each sending ``--warmup`` unmeasured requests, then, after all have warmed up,
``--requests`` measured ones back to back (``stream: true``, ``--deltas`` text deltas per
answer). Nothing is pinned: two gateways, the emulator and the load generator share the
machine's cores, as they would on a small host. The PostgreSQL databases are fresh ones
(``switchboard_bench_<random>``), dropped at the end; the SQLite ledger is a temporary file.

1. ``--part budget``: the added time of a budget check (an atomic reservation of the
   query's worst case before it goes upstream, its settlement to the real cost after it,
   README.md "Deployment", docs/protocol.md "Access tokens and budgets"), once per store
   (an SQLite file, a PostgreSQL database). One gateway; three kinds of access, each under
   the same load, interleaved per repeat:

   - ``env token``: a token of ``SWITCHBOARD_ACCESS_TOKENS``: no ledger token work at all;
   - ``ledger token``: a ledger token without a budget (``switchboard tokens add``): the
     token is looked up, its query still reserved and settled (concurrency and rpm are
     counted in the store);
   - ``budget``: a ledger token with a budget (a large one: never refused).

2. ``--part fleet``: throughput on one PostgreSQL ledger, one instance against two. Two
   gateways run throughout; the ``1 instance`` rows send every request to the first, the
   ``2 instances`` rows alternate each stream's requests between both (stream n's request k
   goes to instance (n + k) mod 2, on a keep-alive connection to each). No access tokens.

The numbers (median over ``--repeat``):

- ``req/s``: measured requests per second of the measured phase (first start to last end);
- ``p50``/``p99`` (ms): time per request, from sending it to its ``message_stop``
  (nearest-rank, over the phase's requests);
- ``gw cpu/req`` (ms): the gateways' CPU time (``/proc``, ``_bench_procs.cpu_seconds``) over
  the measured phase per measured request, summed over the gateways that served; ``emu
  cpu/req``: the emulator's; ``pg cpu/req``: every PostgreSQL server process's on this
  machine (``comm`` postgres; other users of the server count too, so it is an upper
  bound; on the SQLite rows it is whatever else used the server meanwhile);
- ``errors``: failed requests (summed); any makes the exit status 1.

The header gives the date, the command line and the load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import msgspec
import psycopg
import trio
from _bench_load import direct_headers, direct_request
from _bench_procs import Child, child_env, cpu_seconds, open_child, switchboard_command
from _bench_report import percentile
from _bench_wire import HttpConnection

ADMIN_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
MODEL: Final = "claude-sonnet-4-6"
# The token of SWITCHBOARD_ACCESS_TOKENS for the "env token" rows (loopback only).
ENV_TOKEN: Final = "bench-env-token"
# A budget no run comes near: the check is made, never refuses.
LARGE_BUDGET_USD: Final = "1000000"
# Upstream settings the gateways must not inherit from the caller's shell.
_ENV_DROP: Final = ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BEDROCK_BASE_URL", "SWITCHBOARD_LEDGER", "SWITCHBOARD_ACCESS_TOKENS")


@dataclass(frozen=True, slots=True)
class Phase:
    """One measured phase: its requests' times (s), wall time, CPU seconds, errors."""

    times: list[float]
    wall: float
    gateway_cpu: float
    emulator_cpu: float
    postgres_cpu: float
    errors: int


@dataclass(frozen=True, slots=True)
class Row:
    """One table row: a case's medians over the repeats."""

    part: str
    store: str
    case: str
    req_s: float
    p50_ms: float
    p99_ms: float
    gw_cpu_ms: float
    emu_cpu_ms: float
    pg_cpu_ms: float
    errors: int


def _body(deltas: int) -> bytes:
    request = {
        "model": MODEL,
        "max_tokens": 256,
        "stream": True,
        "messages": [{"role": "user", "content": f"<<emulator:ok:deltas={deltas}>> bench the fleet"}],
    }
    return msgspec.json.encode(request)


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL server process on this machine (``comm`` postgres)."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if (entry / "comm").read_text().strip() == "postgres":
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


def _used_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two ``postgres_cpu`` readings (a process new since counts whole)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


async def run_phase(
    targets: Sequence[Child], emulator: Child, args: argparse.Namespace, token: str | None, tag: str
) -> Phase:
    """``--streams`` streams, each alternating its requests over ``targets``; one phase."""
    body = _body(args.deltas)
    expected = args.deltas + 6  # message_start, block start, ping, deltas, block stop, delta, stop
    times: list[float] = []
    errors = 0
    warmed = 0
    all_warm = trio.Event()
    marks: dict[str, float] = {}
    pg_before: dict[int, float] = {}

    async def stream(n: int) -> None:
        nonlocal errors, warmed
        headers = direct_headers(f"bench-fleet-{tag}-{n}")
        if token is not None:
            headers["x-api-key"] = token
        connections = [HttpConnection(*_address(t.http_url or "")) for t in targets]
        try:
            for k in range(args.warmup + args.requests):
                if k == args.warmup:
                    warmed += 1
                    if warmed == args.streams:
                        marks["start"] = time.perf_counter()
                        marks["gw"] = sum(cpu_seconds(t.pid) for t in targets)
                        marks["emu"] = cpu_seconds(emulator.pid)
                        pg_before.update(postgres_cpu())
                        all_warm.set()
                    await all_warm.wait()
                sample = await direct_request(connections[(n + k) % len(connections)], "/v1/messages", body, expected, headers)
                if k >= args.warmup:
                    if sample.error is not None:
                        errors += 1
                        _progress(f"request failed: {sample.error}")
                    else:
                        times.append(sample.total)
                elif sample.error is not None:
                    raise SystemExit(f"warm-up request failed: {sample.error}")
        finally:
            for connection in connections:
                await connection.aclose()

    async with trio.open_nursery() as nursery:
        for n in range(args.streams):
            nursery.start_soon(stream, n)
    end = time.perf_counter()
    return Phase(
        times=times,
        wall=end - marks["start"],
        gateway_cpu=sum(cpu_seconds(t.pid) for t in targets) - marks["gw"],
        emulator_cpu=cpu_seconds(emulator.pid) - marks["emu"],
        postgres_cpu=_used_since(pg_before, postgres_cpu()),
        errors=errors,
    )


def summarise(part: str, store: str, case: str, phases: list[Phase]) -> Row:
    def median(fn: Callable[[Phase], float]) -> float:
        return statistics.median(fn(p) for p in phases)

    def per_request(seconds: Callable[[Phase], float]) -> Callable[[Phase], float]:
        return lambda p: seconds(p) / max(1, len(p.times)) * 1000

    return Row(
        part=part,
        store=store,
        case=case,
        req_s=median(lambda p: len(p.times) / p.wall),
        p50_ms=median(lambda p: (percentile(p.times, 50) or 0.0) * 1000),
        p99_ms=median(lambda p: (percentile(p.times, 99) or 0.0) * 1000),
        gw_cpu_ms=median(per_request(lambda p: p.gateway_cpu)),
        emu_cpu_ms=median(per_request(lambda p: p.emulator_cpu)),
        pg_cpu_ms=median(per_request(lambda p: p.postgres_cpu)),
        errors=sum(p.errors for p in phases),
    )


@contextlib.contextmanager
def pg_database(admin: str) -> Iterator[str]:
    """A fresh database on the server of ``admin``, dropped on exit."""
    name = f"switchboard_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield urlsplit(admin)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def add_token(ledger: str, name: str, *options: str) -> str:
    """``switchboard tokens add NAME OPTIONS --ledger LEDGER``: the token it prints."""
    done = subprocess.run(
        [*switchboard_command(), "tokens", "add", name, *options, "--ledger", ledger],
        capture_output=True,
        text=True,
        check=True,
        env=child_env({}, drop=_ENV_DROP),
    )
    return next(word for word in done.stdout.split() if word.startswith("sb-"))


@contextlib.asynccontextmanager
async def gateway(emulator: Child, ledger: str, log: Path, extra: dict[str, str] | None = None) -> AsyncIterator[Child]:
    env = child_env({"ANTHROPIC_BASE_URL": emulator.url, "ANTHROPIC_API_KEY": "sk-ant-bench", **(extra or {})}, drop=_ENV_DROP)
    args = ["serve", "--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--ledger", ledger]
    async with open_child("gateway", args, env=env, cpus=None, log_path=log, url_prefix="ws://", http_url=True) as child:
        yield child


def _progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def budget_part(emulator: Child, args: argparse.Namespace, work: Path) -> list[Row]:
    rows: list[Row] = []
    stores: list[tuple[str, contextlib.AbstractContextManager[str]]] = [
        ("sqlite", contextlib.nullcontext(str(work / "ledger.sqlite3"))),
        ("postgresql", pg_database(args.admin_url)),
    ]
    for store, location in stores:
        with location as ledger:
            tokens = {
                "env token": ENV_TOKEN,
                "ledger token": add_token(ledger, "plain"),
                "budget": add_token(ledger, "budgeted", "--budget-usd", LARGE_BUDGET_USD, "--period", "month"),
            }
            phases: dict[str, list[Phase]] = {case: [] for case in tokens}
            async with gateway(emulator, ledger, work / f"gateway-{store}.log", {"SWITCHBOARD_ACCESS_TOKENS": ENV_TOKEN}) as gw:
                for repeat in range(args.repeat):
                    for case, token in tokens.items():
                        _progress(f"budget, {store}, {case}, repeat {repeat + 1}")
                        phases[case].append(await run_phase([gw], emulator, args, token, f"{store}-{case.replace(' ', '-')}-{repeat}"))
            rows += [summarise("budget", store, case, found) for case, found in phases.items()]
    return rows


async def fleet_part(emulator: Child, args: argparse.Namespace, work: Path) -> list[Row]:
    with pg_database(args.admin_url) as ledger:
        phases: dict[str, list[Phase]] = {"1 instance": [], "2 instances": []}
        async with gateway(emulator, ledger, work / "fleet-a.log") as a, gateway(emulator, ledger, work / "fleet-b.log") as b:
            for repeat in range(args.repeat):
                for case, targets in (("1 instance", [a]), ("2 instances", [a, b])):
                    _progress(f"fleet, {case}, repeat {repeat + 1}")
                    phases[case].append(await run_phase(targets, emulator, args, None, f"{len(targets)}-{repeat}"))
        return [summarise("fleet", "postgresql", case, found) for case, found in phases.items()]


def render(rows: list[Row], header: list[str]) -> str:
    columns = ("part", "store", "case", "req/s", "p50 ms", "p99 ms", "gw cpu/req ms", "emu cpu/req ms", "pg cpu/req ms", "errors")
    lines = [*header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [r.part, r.store, r.case, f"{r.req_s:.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}"]
        cells += [f"{r.gw_cpu_ms:.2f}", f"{r.emu_cpu_ms:.2f}", f"{r.pg_cpu_ms:.2f}", str(r.errors)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


async def main_async(args: argparse.Namespace) -> int:
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        emulator_args = ["emulator", "--host", "127.0.0.1", "--port", "0", "--write-per-event"]
        async with open_child(
            "emulator", emulator_args, env=child_env({}), cpus=None, log_path=work / "emulator.log", url_prefix="http://"
        ) as emulator:
            rows: list[Row] = []
            if args.part in ("budget", "both"):
                rows += await budget_part(emulator, args, work)
            if args.part in ("fleet", "both"):
                rows += await fleet_part(emulator, args, work)
    header = [
        f"{started}; {os.cpu_count()} CPUs, unpinned; load average (1, 5, 15 min) before {load_before}, after {_load()}",
        "command: " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        f"{args.streams} streams x {args.requests} requests ({args.warmup} warm-up), {args.deltas} deltas per answer, "
        f"median of {args.repeat}; emulator --write-per-event",
    ]
    if args.json:
        print(msgspec.json.encode({"header": header, "rows": [asdict(r) for r in rows]}).decode())
    else:
        print(render(rows, header))
    return 1 if any(r.errors for r in rows) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--part", choices=("budget", "fleet", "both"), default="both")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams (default 16)")
    parser.add_argument("--requests", type=int, default=20, help="measured requests per stream (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured requests per stream first (default 2)")
    parser.add_argument("--deltas", type=int, default=20, help="text deltas per answer (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="phases per case, interleaved (default 3)")
    parser.add_argument("--admin-url", default=ADMIN_URL, help=f"a user that may create databases (default {ADMIN_URL})")
    parser.add_argument("--json", action="store_true", help="the rows as JSON")
    args = parser.parse_args()
    try:
        raise SystemExit(trio.run(main_async, args))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
