"""Retries through the gateway cost Claude Code no more than retries direct: no multiplication.

Claude Code retries on its own (``x-stainless-retry-count`` on every request); the gateway
retries too. Each test runs Claude Code under the same upstream faults twice, direct to the
emulator and through the HTTP door, with the same retry limit on both, through
``scripts/retry_contract.py``'s ``measure`` (that script prints the full table). Run alone:

    ./dev test tests/clients/test_retry_contract.py

Wall-clock times: a run is a real process, so "ends within BOUND_SECONDS of direct" is the
one timing asserted, with a bound far above the jitter of process start and backoff.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from retry_contract import Row, measure

pytestmark = pytest.mark.claude_code

# The same small limit for Claude Code (CLAUDE_CODE_MAX_RETRIES) and the gateway: enough to see
# a retry multiply, short enough for the suite (Claude Code's first backoff is 0.5 s).
MAX_RETRIES: Final = 1
# How much later than direct the run through the gateway may end: process start-up and the
# backoff jitter (up to 25 %) vary by a second or so on a busy machine; a multiplied schedule
# (a client retry around each gateway retry series) adds whole series.
BOUND_SECONDS: Final = 3.0
MODEL: Final = "claude-sonnet-5"


async def both(claude: Path, scenario: str) -> tuple[Row, Row]:
    direct = await measure(
        claude, scenario, via_gateway=False, max_retries=MAX_RETRIES, model=MODEL
    )
    gateway = await measure(
        claude, scenario, via_gateway=True, max_retries=MAX_RETRIES, model=MODEL
    )
    return direct, gateway


async def test_sustained_529_through_the_gateway_ends_within_bound_of_direct(
    claude_code: Path,
) -> None:
    direct, gateway = await both(claude_code, "sustained 529")
    assert direct.exit_code != 0 and direct.attempts == MAX_RETRIES + 1, direct
    assert gateway.exit_code == direct.exit_code and "529" in gateway.outcome, gateway
    assert gateway.attempts <= direct.attempts, (direct, gateway)
    assert gateway.seconds <= direct.seconds + BOUND_SECONDS, (direct, gateway)


async def test_a_passing_overload_is_retried_through_the_gateway_as_direct(
    claude_code: Path,
) -> None:
    # One 529, then answers: retried once either way, and Claude Code gets its answer (a
    # gateway that gave up at once with x-should-retry: false would fail it here).
    direct, gateway = await both(claude_code, "one 529")
    assert direct.exit_code == 0 and direct.attempts == 2, direct
    assert gateway.exit_code == 0 and gateway.outcome.startswith("Echo: "), gateway
    assert gateway.attempts <= direct.attempts, (direct, gateway)
    assert gateway.seconds <= direct.seconds + BOUND_SECONDS, (direct, gateway)
