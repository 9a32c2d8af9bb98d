"""Claude Code itself (the pinned npm release, ``claude_code.CLAUDE_CODE_VERSION``) through
the HTTP door against the emulator: ``claude -p ... --output-format json`` as a subprocess.

Each test checks that Claude Code never left loopback (the proxy trap stayed empty) and that
what reached the emulator came from the gateway. One test also runs it straight against the
emulator, to compare what reaches the upstream either way. Deselect with ``-m "not claude_code"``;
skipped with a reason where node or npm is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import pytest
import trio
from claude_code import GATEWAY_TOKEN, Door, ProxyTrap, Run, run_claude, sealed_env
from prometheus_client.parser import text_string_to_metric_families

from actors.config.settings import Config
from actors.store.ledger_sessions import owner_digest
from emulator import Emulator, RecordedRequest
from protocol.http_api import default_session

pytestmark = pytest.mark.claude_code

# Turns a run may take: one is enough for an answer, two for a tool round trip. A bound, so a
# client that keeps calling tools ends instead of looping until the
# safety timeout.
MAX_TURNS = "3"
# A spending bound for the same reason: --max-turns does not count the turns that background
# agents start. One answer here costs under $0.08 at list prices.
MAX_BUDGET_USD = "0.15"
# The session Claude Code's requests are charged to: it sends no x-switchboard-session, so
# the gateway's default per-token session.
SESSION = default_session(owner_digest(GATEWAY_TOKEN))

def _models() -> list[Any]:
    # The current models by id, and the aliases, which 2.1.332 resolves to the 5.5 models.
    return ["claude-opus-4-8", "claude-sonnet-5", "claude-haiku-4-5-20251001", "opus", "sonnet", "haiku"]


async def claude_p(
    claude: Path, door: Door, trap: ProxyTrap, home: Path, prompt: str, *args: str, **env: str
) -> Run:
    """``claude -p PROMPT --output-format json ARGS`` through ``door``, sealed off."""
    key = env.pop("api_key", GATEWAY_TOKEN)
    environment = sealed_env(base_url=door.url, api_key=key, home=home, proxy=trap.url, **env)
    run = await run_claude(
        claude, ["-p", prompt, "--output-format", "json", *args], environment, cwd=home
    )
    assert trap.requests == [], f"Claude Code tried to leave loopback: {trap.requests}"
    return run


def api_calls(emulator: Emulator) -> list[RecordedRequest]:
    return [r for r in emulator.requests if r.path.startswith("/v1/messages")]


def blocks(request: RecordedRequest, kind: str) -> list[dict[str, Any]]:
    """Every content block of type ``kind`` in the request's messages."""
    body = request.json
    assert isinstance(body, dict)
    return [
        block
        for message in body["messages"]
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == kind
    ]


async def ledger_summary(door: Door) -> dict[str, Any]:
    """The session's cost summary as ``switchboard cost --json`` reads it from the ledger."""
    command = [sys.executable, "-c", "from actors.cli.commands import main; main()"]
    shown = await trio.run_process(
        [*command, "cost", SESSION, "--json", "--ledger", str(door.ledger)], capture_stdout=True
    )
    summary = msgspec.json.decode(shown.stdout)
    assert isinstance(summary, dict)
    return summary


async def door_requests(door: Door) -> dict[tuple[str, str], float]:
    """``switchboard_http_requests_total`` by (route, status)."""
    headers = {"x-api-key": GATEWAY_TOKEN}
    async with httpx.AsyncClient(base_url=door.url, headers=headers) as http:
        text = (await http.get("/metrics")).text
    (family,) = (
        f for f in text_string_to_metric_families(text) if f.name == "switchboard_http_requests"
    )
    return {
        (s.labels["route"], s.labels["status"]): s.value
        for s in family.samples
        if s.name.endswith("_total")
    }


@pytest.mark.parametrize("model", _models())
async def test_print_json_answers_on_each_model(
    claude_code: Path, door: Door, trap: ProxyTrap, home: Path, emulator: Emulator, model: str
) -> None:
    run = await claude_p(
        claude_code, door, trap, home, "Say hello", "--model", model,
        "--max-turns", MAX_TURNS, "--max-budget-usd", MAX_BUDGET_USD,
    )  # fmt: skip
    assert run.returncode == 0, run
    result = run.result
    assert result["subtype"] == "success" and result["is_error"] is False, run
    assert result["result"].startswith("Echo: ") and result["result"].endswith("Say hello")
    # Everything the emulator saw was the Messages API on the SDK's beta path, which the door
    # keeps (Claude Code's base URL is the door; the trap proves it went nowhere else).
    calls = api_calls(emulator)
    assert calls and all(r.path == "/v1/messages?beta=true" for r in calls)
    assert set(result["modelUsage"]) == {r.json["model"] for r in calls if isinstance(r.json, dict)}


async def test_tool_round_trip(
    claude_code: Path, door: Door, trap: ProxyTrap, home: Path, emulator: Emulator
) -> None:
    # The emulator calls a tool the user text names, with "Paris" for every required string
    # (emulator/responses.py): so Bash runs the command `Paris`, which this PATH provides.
    bin_dir = home / "bin"
    bin_dir.mkdir()
    marker = "tool-ran-7f3a"
    script = bin_dir / "Paris"
    script.write_text(f"#!/bin/sh\necho {marker}\n")
    script.chmod(0o755)
    path = f"{bin_dir}:{sealed_env(base_url='', api_key='', home=home, proxy='')['PATH']}"
    run = await claude_p(
        claude_code, door, trap, home, "Run Bash",
        "--model", "claude-sonnet-5", "--allowedTools", "Bash(Paris)", "--max-turns", MAX_TURNS,
        PATH=path,
    )  # fmt: skip
    assert run.returncode == 0, run
    assert run.result["subtype"] == "success" and run.result["num_turns"] == 2, run
    first, second = api_calls(emulator)
    assert blocks(first, "tool_use") == []
    (tool_result,) = blocks(second, "tool_result")
    (tool_use,) = blocks(second, "tool_use")
    assert tool_use["name"] == "Bash" and tool_use["input"]["command"] == "Paris"
    assert tool_result["tool_use_id"] == tool_use["id"]
    assert marker in json.dumps(tool_result["content"])
    assert not tool_result.get("is_error")
    assert run.result["result"] == "Hello from the Switchboard emulator."
    # Two requests, the second reading the first's cache: still the same cost on both sides.
    ledger = await ledger_summary(door)
    assert ledger["total_cost_usd"] == pytest.approx(run.result["total_cost_usd"], rel=1e-9)


@pytest.mark.parametrize("model", ["claude-opus-4-8", "claude-sonnet-5"])
async def test_total_cost_equals_the_gateway_ledger(
    claude_code: Path, door: Door, trap: ProxyTrap, home: Path, emulator: Emulator, model: str
) -> None:
    run = await claude_p(
        claude_code, door, trap, home, "Say hello", "--model", model,
        "--max-turns", MAX_TURNS,
    )  # fmt: skip
    assert run.returncode == 0, run
    ledger = await ledger_summary(door)
    assert set(ledger["model_usage"]) == set(run.result["modelUsage"])
    assert ledger["total_cost_usd"] == pytest.approx(run.result["total_cost_usd"], rel=1e-9)


async def test_wrong_token_fails_at_once(
    claude_code: Path, door: Door, trap: ProxyTrap, home: Path, emulator: Emulator
) -> None:
    run = await claude_p(
        claude_code, door, trap, home, "Say hello", "--model", "claude-sonnet-5",
        api_key="not-the-gateway-token",
    )  # fmt: skip
    assert run.returncode != 0, run
    assert "invalid api key" in run.stdout.lower() + run.stderr.lower(), run
    # One refused request, not retried (x-should-retry: false), and nothing went upstream.
    assert (await door_requests(door)).get(("messages", "401")) == 1
    assert api_calls(emulator) == []


# The headers of Claude Code's request that reach the upstream through the door, each with the
# value Claude Code sends directly (docs/protocol.md 2, "What goes upstream"): its
# anthropic-version and anthropic-beta as sent; content-type and accept (the gateway's own,
# the same values); content-length (the body's, unchanged); host (the same emulator either
# way); x-api-key (the gateway's credential, here the very key the direct run presents). Every
# other header Claude Code sends (user-agent, x-app, x-stainless-*, x-claude-code-session-id,
# anthropic-dangerous-direct-browser-access, accept-encoding, connection) stays at the door.
FORWARDED_HEADERS: Final = frozenset(
    {"anthropic-version", "anthropic-beta", "content-type", "accept", "content-length", "host", "x-api-key"}
)
# A local date in Claude Code's system prompt: differs between two runs either side of midnight.
TODAYS_DATE: Final = re.compile(rb"Today's date is \d{4}-\d{2}-\d{2}\.")


def without_per_run_values(request: RecordedRequest, run: Run) -> bytes:
    """The request's body bytes with the values that differ between any two runs of Claude Code
    itself (two direct runs compared) replaced by placeholders, and nothing else touched."""
    body = request.json
    assert isinstance(body, dict)
    user = json.loads(body["metadata"]["user_id"])
    # metadata.user_id's session_id: a random id per run (the run's own session_id).
    session = run.result["session_id"]
    assert user["session_id"] == session
    # metadata.user_id's device_id: a random id Claude Code makes on its first start and keeps
    # in its config directory; each run here starts with a fresh one.
    device = user["device_id"]
    assert re.fullmatch(r"[0-9a-f]{64}", device), device
    raw = request.body
    assert session.encode() in raw and device.encode() in raw
    raw = raw.replace(session.encode(), b"<session>").replace(device.encode(), b"<device>")
    return TODAYS_DATE.sub(b"Today's date is <date>.", raw)


async def test_upstream_request_equals_what_claude_code_sends_directly(
    claude_code: Path, door: Door, trap: ProxyTrap, home: Path, emulator: Emulator, config: Config
) -> None:
    # Once straight against the emulator, with the key it accepts (the gateway's upstream key).
    assert config.api_key is not None
    environment = sealed_env(
        base_url=config.base_url, api_key=config.api_key.reveal(), home=home, proxy=trap.url
    )
    model = ("--model", "claude-opus-4-8")
    direct_run = await run_claude(
        claude_code, ["-p", "Say hello", "--output-format", "json", *model], environment, cwd=home
    )
    assert direct_run.returncode == 0, direct_run
    assert trap.requests == [], f"Claude Code tried to leave loopback: {trap.requests}"
    # Then through the door, as a fresh Claude Code at the same path: the working directory
    # and config directory are in the system prompt, so both runs must share them.
    await trio.to_thread.run_sync(shutil.rmtree, home)
    await trio.Path(home).mkdir()
    gateway_run = await claude_p(claude_code, door, trap, home, "Say hello", *model)
    assert gateway_run.returncode == 0, gateway_run
    direct, through = api_calls(emulator)

    # Claude Code posts to the SDK's beta path (?beta=true), and so does the door upstream.
    assert direct.path == through.path == "/v1/messages?beta=true"
    # The body: Claude Code's own bytes, once its per-run ids and the date are set aside.
    assert without_per_run_values(through, gateway_run) == without_per_run_values(direct, direct_run)
    # Its betas and API version, exactly as Claude Code sent them directly.
    assert through.headers["anthropic-beta"] == direct.headers["anthropic-beta"]
    assert through.headers["anthropic-version"] == direct.headers["anthropic-version"]
    # And nothing else: the headers that go upstream are Claude Code's own values (the
    # credential the gateway's, never its access token), and no header of the gateway's.
    assert through.headers == {name: direct.headers[name] for name in FORWARDED_HEADERS}
    assert GATEWAY_TOKEN not in json.dumps(through.headers)
