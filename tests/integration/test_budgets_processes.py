"""One budget hammered by two ``switchboard serve`` processes on one PostgreSQL ledger: the
reservations are atomic in the database, so the recorded spend never passes the budget,
and it gets close to it (docs/protocol.md "Access tokens and budgets"). Also the SQLite
path of ``switchboard tokens`` with a real process.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections import Counter

import httpx
import msgspec
import psycopg
import trio
from harness import API_VERSION, chat, clean_env, serve_process

from actors.store.stores import open_token_store
from actors.store.token_rows import new_token
from protocol.budget import Limits, worst_case_pico
from protocol.pricing import PICO_PER_USD

BUDGET_PICO = PICO_PER_USD // 5  # $0.20
WORKERS_PER_PROCESS = 12
# Output cut at max_tokens (the emulator's 400 words), so each query costs close to its
# reservation: the budget can be used up nearly to the end.
REQUEST = {**chat("<<emulator:ok:deltas=400>> spend it"), "max_tokens": 200}


async def test_two_processes_on_one_postgresql_budget_never_overshoot(pg_url: str) -> None:
    store = open_token_store(pg_url)
    token = new_token()
    try:
        store.add("hammer", token, Limits(budget_pico=BUDGET_PICO, period="total"), datetime.datetime.now(datetime.UTC))
    finally:
        store.close()
    outcomes: Counter[int] = Counter()
    stderr: list[bytearray] = []
    async with serve_process(clean_env(), "--ledger", pg_url, "--http-port", "0") as first, serve_process(
        clean_env(), "--ledger", pg_url, "--http-port", "0"
    ) as second:
        urls = []
        for served in (first, second):
            stderr.append(served.stderr)
            await served.read_line()
            urls.append(await served.read_line())

        async def worker(url: str) -> None:
            async with httpx.AsyncClient(headers=API_VERSION, base_url=url, timeout=60) as http:
                while True:
                    answer = await http.post("/v1/messages", json=REQUEST, headers={"x-api-key": token})
                    outcomes[answer.status_code] += 1
                    if answer.status_code != 200:
                        assert answer.status_code == 429, (answer.text, [bytes(e[-3000:]) for e in stderr])
                        assert msgspec.json.decode(answer.content)["error"]["type"] == "rate_limit_error"
                        return

        async with trio.open_nursery() as nursery:
            for url in urls:
                for _ in range(WORKERS_PER_PROCESS):
                    nursery.start_soon(worker, url)
    # Both processes stopped (SIGTERM): every settlement is in.
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT COALESCE(SUM(cost_pico), 0) FROM switchboard.usage").fetchone()
        limits = conn.execute(
            "SELECT spent_pico, reserved_pico, in_flight FROM switchboard.limits WHERE name = 'hammer'"
        ).fetchone()
    assert row is not None and limits is not None
    recorded = int(row[0])
    worst = worst_case_pico(REQUEST, len(msgspec.json.encode(REQUEST)), on=datetime.date.today().isoformat())
    report = (
        f"budget ${BUDGET_PICO / PICO_PER_USD:.6f}, recorded ${recorded / PICO_PER_USD:.6f}, "
        f"{outcomes[200]} queries served, {outcomes[429]} refused, worst case ${worst / PICO_PER_USD:.6f}; "
        f"limits row {limits}; stderr tails {[bytes(e[-3000:]) for e in stderr]}"
    )
    print(report.split("; limits row")[0])
    assert recorded <= BUDGET_PICO, report
    assert recorded >= BUDGET_PICO - 2 * WORKERS_PER_PROCESS * worst, report  # most of it used
    assert recorded >= BUDGET_PICO * 8 // 10, report
    assert (int(limits[0]), int(limits[1]), int(limits[2])) == (recorded, 0, 0), report
    assert outcomes[429] == 2 * WORKERS_PER_PROCESS


def test_the_tokens_cli_adds_lists_sets_and_revokes(tmp_path: object) -> None:
    ledger = os.path.join(str(tmp_path), "ledger.sqlite3")

    def tokens(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from actors.cli.commands import main; main()", "tokens", *args, "--ledger", ledger],
            capture_output=True, text=True, env=clean_env(), check=False, timeout=60,
        )

    added = tokens("add", "ci", "--budget-usd", "1.5", "--period", "day", "--rpm", "10", "--models", "a,b")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("sb-") and "shown only now" in added.stderr
    assert tokens("add", "ci").returncode == 2  # the name is taken
    assert tokens("set-budget", "ci", "--budget-usd", "2", "--models", "").returncode == 0
    listed = msgspec.json.decode(tokens("list", "--json").stdout)
    assert listed == [
        {
            "name": "ci",
            "created_at": listed[0]["created_at"],
            "budget": {
                "limit_usd": 2.0, "period": "day", "spent_usd": 0.0, "reserved_usd": 0.0,
                "remaining_usd": 2.0, "renews_at": listed[0]["budget"]["renews_at"],
            },
            "max_concurrent": None, "rpm": 10, "models": None, "in_flight": 0,
        }
    ]
    assert token not in tokens("list").stdout
    assert tokens("revoke", "ci").returncode == 0
    assert tokens("revoke", "ci").returncode == 1
    assert tokens("list", "--json").stdout.strip() == "[]"
    assert tokens("add", "x", "--budget-usd", "lots").returncode == 2
