"""Measure the SQLite fleet of ``serve --workers N`` (actors/store/sqlite_fleet.py): how long a
takeover takes to reach the other worker, and what the poll costs while nothing happens.

Run it on purpose (never part of the suite)::

    .venv/bin/python scripts/bench_sqlite_fleet.py [--claims 200] [--idle 10]

Two ``SqliteFleet`` on one temporary ledger file, in one trio run (each its own connection
and worker thread, as two processes have; one process's CPU is shared by both here):

- ``claim``: the time of ``SqliteFleet.claim`` (one ``INSERT ... RETURNING`` in a write
  transaction), ``--claims`` times, alternating fleets;
- ``takeover``: from a claim's return on one fleet to the other's holder of that session
  superseded (the claims made at a random moment of the 50 ms poll interval);
- ``idle cpu``: this process's CPU per second over ``--idle`` seconds with both fleets
  polling and nothing happening, halved (one fleet's cost).
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio
from _bench_report import percentile

from actors.store.sqlite_fleet import POLL, SqliteFleet
from actors.store.sqlite_shared import prepare_shared_ledger


def _ms(values: list[float], pct: float) -> str:
    return f"{(percentile(values, pct) or 0.0) * 1000:.2f}"


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-fleet-") as tmp:
        path = str(Path(tmp) / "ledger.sqlite3")
        prepare_shared_ledger(path).close()
        claims: list[float] = []
        takeovers: list[float] = []
        async with trio.open_nursery() as nursery:
            fleets: list[SqliteFleet] = [await nursery.start(SqliteFleet(path, name).run) for name in ("a", "b")]
            started = time.process_time()
            await trio.sleep(args.idle)
            idle_cpu = (time.process_time() - started) / args.idle / 2
            for n in range(args.claims):
                holder_fleet, taker = fleets[n % 2], fleets[(n + 1) % 2]
                taken = trio.Event()
                marks: dict[str, float] = {}

                def superseded(event: trio.Event = taken, at: dict[str, float] = marks) -> None:
                    at["taken"] = time.perf_counter()
                    event.set()

                held = await holder_fleet.claim(f"s{n}", superseded)
                # Both polls run in this process: a claim made right after one (as the
                # previous takeover's) would wait a whole interval. Real claims come at any time.
                await trio.sleep(random.uniform(0, POLL))
                before = time.perf_counter()
                await taker.claim(f"s{n}", lambda: None)
                claimed = time.perf_counter()
                claims.append(claimed - before)
                with trio.fail_after(10):
                    await taken.wait()
                takeovers.append(marks["taken"] - claimed)
                holder_fleet.release(held)
            nursery.cancel_scope.cancel()
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}; load average {os.getloadavg()[0]:.2f}; poll every {POLL * 1000:.0f} ms")
    print(f"command: {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}")
    print(f"claim ms: p50 {_ms(claims, 50)}, p99 {_ms(claims, 99)} ({len(claims)})")
    print(f"takeover ms: p50 {_ms(takeovers, 50)}, p99 {_ms(takeovers, 99)}, mean {statistics.mean(takeovers) * 1000:.2f}")
    print(f"idle cpu per fleet: {idle_cpu * 100:.2f} % of a core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--claims", type=int, default=200, help="takeovers measured (default 200)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle polling measured (default 10)")
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
