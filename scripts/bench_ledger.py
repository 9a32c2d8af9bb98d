"""Measure the CostLedger's group commit: records/s and commits for N concurrent writers.

Each writer records ``--records`` final usage records one after another (waiting for each
reply, as a StreamRelay does), all writers at once, against a fresh SQLite file, and with
``--stores sqlite,postgresql`` also against a fresh PostgreSQL database (created on the
server of ``--pg-url``, a database its user may create databases in, and dropped after)::

    .venv/bin/python scripts/bench_ledger.py --writers 1,16,128,512 --records 200
    .venv/bin/python scripts/bench_ledger.py --synchronous FULL   # an fsync per commit
    .venv/bin/python scripts/bench_ledger.py --stores sqlite,postgresql \
        --pg-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import actors.store.sqlite
from actors._util import ask
from actors.cost_ledger import CostLedger
from actors.messages.ledger import CostLedgerAddress, RecordUsage, UsageRecorded
from protocol.usage import Usage

USAGE = Usage(input_tokens=1200, output_tokens=300, cache_read_input_tokens=5000)


def make(session_id: str, record_id: str, reply: trio.MemorySendChannel[UsageRecorded]) -> RecordUsage:
    return RecordUsage(
        session_id=session_id, model="claude-sonnet-4-6", usage=USAGE, record_id=record_id, reply=reply
    )


async def measure(path: str, writers: int, records: int) -> tuple[float, int, int]:
    ledger = CostLedger(path)
    async with trio.open_nursery() as nursery:
        address: CostLedgerAddress = await nursery.start(ledger.run)
        with address:

            async def writer(n: int) -> None:
                for i in range(records):
                    await ask(address, functools.partial(make, f"s{n}", f"{n}:{i}"))

            started = time.perf_counter()
            async with trio.open_nursery() as writers_nursery:
                for n in range(writers):
                    writers_nursery.start_soon(writer, n)
            elapsed = time.perf_counter() - started
            stats = ledger.statistics()
    return elapsed, stats.commits, stats.messages


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new database on ``admin_url``'s server for one measurement; dropped afterwards."""
    import psycopg

    name = f"switchboard_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", default="1,16,128,512", help="comma-separated concurrency levels")
    parser.add_argument("--records", type=int, default=200, help="records per writer")
    parser.add_argument("--dir", default=None, help="directory for the ledger files (default: a temp dir)")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default=actors.store.sqlite.SYNCHRONOUS)
    parser.add_argument("--stores", default="sqlite", help="comma-separated: sqlite, postgresql")
    parser.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server and user that may create databases (for --stores postgresql)",
    )
    args = parser.parse_args()
    actors.store.sqlite.SYNCHRONOUS = args.synchronous  # type: ignore[misc]
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        print(
            f"{'store':>10} {'writers':>8} {'records':>8} {'seconds':>8} {'records/s':>10} "
            f"{'commits':>8} {'per commit':>10}"
        )
        for store in args.stores.split(","):
            for level in (int(w) for w in args.writers.split(",")):
                with contextlib.ExitStack() as stack:
                    if store == "postgresql":
                        location = stack.enter_context(fresh_database(args.pg_url))
                    else:
                        location = os.path.join(directory, f"ledger-{level}.sqlite3")
                    elapsed, commits, messages = trio.run(measure, location, level, args.records)
                print(
                    f"{store:>10} {level:>8} {messages:>8} {elapsed:>8.2f} {messages / elapsed:>10.0f} "
                    f"{commits:>8} {messages / max(commits, 1):>10.1f}"
                )


if __name__ == "__main__":
    main()
