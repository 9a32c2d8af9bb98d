"""Measure the retry contract with Claude Code itself: direct to the emulator, and through the
gateway's HTTP door, under scripted upstream faults. Run on purpose, not in the suite:

    .venv/bin/python scripts/retry_contract.py [--max-retries N] [--model M] [--json]

For each scenario and path it runs one ``claude -p "Say hello" --output-format json`` (the
pinned release of ``tests/clients/claude_code.py``, installed on first use) and prints the
wall-clock time to its final answer, the number of upstream attempts the emulator saw, and the
outcome. Claude Code and the gateway get the same retry limit (``CLAUDE_CODE_MAX_RETRIES`` and
``Config.max_retries``), small by default so the sustained outage ends in seconds, not hours:
with the default 10, a gateway that retries under a client that also retries multiplies both.

Scenarios (the emulator's faults, README "The emulator"):
    sustained 529     every request 529 for an hour
    one 529           the first attempt 529, then answers
    intermittent 529  the first two attempts 529, then answers
    429 retry-after   one 429 with ``retry-after: 2``, then answers
    outage ends       every request 529 for OUTAGE_SECONDS, then answers

What 2.1.332 does (measured 2026-12-07): it obeys ``x-should-retry: false`` even on a 529
(a 529 with it ends the run after one attempt; without it, ten retries), and every one of its
retries is a fresh request with ``x-stainless-retry-count: 0``. That header puts it in the
HTTP door's client mode (docs/protocol.md 2, "Retries"): one upstream attempt per request,
the upstream's own status and headers back, so Claude Code retries as it would directly and
the attempts are the same, not their product. With ``--max-retries 10`` (the defaults), on
Sonnet 5 and on Opus 4.8 (its 3 x 529 rule), every scenario made the same number of upstream
attempts through the gateway as directly, and ended within Claude Code's own jitter of the
direct time (the closing note of that day has the tables).

Everything stays on loopback: the emulator and the gateway run in this process, and Claude
Code gets the sealed environment of the tests (its proxy trap must stay empty).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "clients"))

from claude_code import ProxyTrap, install, run_claude, sealed_env

from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from emulator import Emulator

# Shorter than Claude Code's first three backoffs together (0.5 + 1 + 2 s plus jitter): with
# the default 3 retries, a client that waits well gets through it.
OUTAGE_SECONDS: Final = 3.0
# Sonnet: no "3 consecutive 529s" fallback rule (that one applies to Opus), so a sustained 529
# shows the plain retry schedule.
DEFAULT_MODEL: Final = "claude-sonnet-5"
DEFAULT_MAX_RETRIES: Final = 3
# A safety net for one run: a sustained outage through a multiplying gateway with 3 retries
# takes about 4 x 4 attempts.
RUN_TIMEOUT: Final = 600.0
_TOKEN: Final = "retry-contract-token"


def _sustained(emulator: Emulator) -> None:
    emulator.outage("529", seconds=3600)


def _one_529(emulator: Emulator) -> None:
    emulator.script("529")


def _intermittent(emulator: Emulator) -> None:
    emulator.script("529", "529")


def _rate_limited(emulator: Emulator) -> None:
    emulator.script("429:retry_after=2")


def _outage_ends(emulator: Emulator) -> None:
    emulator.outage("529", seconds=OUTAGE_SECONDS)


SCENARIOS: Final[dict[str, Callable[[Emulator], None]]] = {
    "sustained 529": _sustained,
    "one 529": _one_529,
    "intermittent 529": _intermittent,
    "429 retry-after": _rate_limited,
    "outage ends": _outage_ends,
}


@dataclass(frozen=True)
class Row:
    scenario: str
    path: str  # "direct" or "gateway"
    exit_code: int
    seconds: float  # wall clock, start of `claude` to its exit
    attempts: int  # POST /v1/messages the emulator saw
    client_requests: int  # POST /v1/messages Claude Code made (direct: the same)
    outcome: str  # Claude Code's result text (shortened)


async def measure(
    claude: Path, scenario: str, *, via_gateway: bool, max_retries: int, model: str
) -> Row:
    """One Claude Code run under ``scenario``, direct or through the gateway."""
    async with trio.open_nursery() as nursery:
        emulator = Emulator()
        upstream: str = await nursery.start(emulator.run)
        trap = ProxyTrap()
        trap.url = await nursery.start(trap.run)
        url = upstream
        if via_gateway:
            config = Config(
                base_url=upstream,
                api_key=Secret("sk-ant-retry-contract"),
                http_port=0,
                access_tokens=(Secret(_TOKEN),),
                ledger_path=":memory:",
                disable_nonessential_traffic=True,
                max_retries=max_retries,
            )
            server: Server = await nursery.start(functools.partial(run_server, config))
            assert server.http_url is not None
            url = server.http_url
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            env = sealed_env(
                base_url=url,
                api_key=_TOKEN,
                home=home,
                proxy=trap.url,
                CLAUDE_CODE_MAX_RETRIES=str(max_retries),
            )
            SCENARIOS[scenario](emulator)
            started = trio.current_time()
            run = await run_claude(
                claude,
                ["-p", "Say hello", "--output-format", "json", "--model", model],
                env,
                cwd=home,
                safety_timeout=RUN_TIMEOUT,
            )
            seconds = trio.current_time() - started
        assert trap.requests == [], f"Claude Code tried to leave loopback: {trap.requests}"
        attempts = sum(1 for r in emulator.requests if r.path.startswith("/v1/messages"))
        client_requests = await door_requests(url) if via_gateway else attempts
        try:
            outcome = str(json.loads(run.stdout).get("result", ""))
        except ValueError:
            outcome = (run.stdout or run.stderr).strip()
        nursery.cancel_scope.cancel()
    return Row(
        scenario=scenario,
        path="gateway" if via_gateway else "direct",
        exit_code=run.returncode,
        seconds=round(seconds, 2),
        attempts=attempts,
        client_requests=client_requests,
        outcome=outcome.replace("\n", " ")[:60],
    )


async def door_requests(url: str) -> int:
    """How many ``POST /v1/messages`` the gateway's HTTP door answered (its metrics)."""
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": _TOKEN}) as http:
        text = (await http.get("/metrics")).text
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "switchboard_http_requests"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get("route") == "messages"
        )
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | path | exit | seconds to final answer | Claude Code requests "
        "| upstream attempts | outcome |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.scenario} | {r.path} | {r.exit_code} | {r.seconds:.2f} | {r.client_requests} "
        f"| {r.attempts} | {r.outcome} |"
        for r in rows
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    claude = install()
    rows = []
    for scenario in args.scenarios or SCENARIOS:
        for via_gateway in (False, True):
            row = await measure(
                claude,
                scenario,
                via_gateway=via_gateway,
                max_retries=args.max_retries,
                model=args.model,
            )
            print(row, file=sys.stderr)
            rows.append(row)
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else table(rows))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--json", action="store_true", help="rows as JSON instead of a table")
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], metavar="SCENARIO")
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse_args())
