"""Claude Code signed in to the gateway (the Claude Code gateway protocol, README.md "Claude
Code for a whole organisation"): its managed settings, its model allow-list and its telemetry,
with the real CLI (``claude -p``) against the emulator.

The user ada (group ``eng``) is in the gateway's identity store (``serve --oauth``); the
test signs her in through the device flow, approving on the verification page as she would,
and stores the sign-in as ``/login`` does (``$CLAUDE_CONFIG_DIR/.credentials.json``: the
gateway's URL, the bearer token, and the gateway's pin, which for plain HTTP on loopback is
``http-loopback``; the CLI's own ``/login`` over TLS is tests/clients/test_claude_code_login.py).
Only a signed-in client
reads ``/managed/settings`` (``CLAUDE_CODE_USE_GATEWAY`` with a token in the environment does
not); the settings it gets turn on its model discovery (``/v1/models``) and its OpenTelemetry,
which goes to the gateway's ``/v1/{metrics,logs}``. Its spend lands on the user in the ledger.
"""

from __future__ import annotations

import datetime
import functools
import json
import time
from pathlib import Path
from typing import Final

import msgspec
import pytest
import trio
from claude_code import Door, ProxyTrap, Run, device_sign_in, run_claude, sealed_env
from prometheus_client.parser import text_string_to_metric_families

from actors.access.identities import hash_password
from actors.cli.cost import read_spend
from actors.config.settings import Config
from actors.server import Server, run_server
from emulator import Emulator
from protocol.pricing import PICO_PER_USD
from protocol.request_builder import BuildSettings

pytestmark = pytest.mark.claude_code

PASSWORD: Final = "correct horse battery"
# The settings' env turns on what only managed settings turn on here: model discovery and
# telemetry (exported every second, so a short run exports before it exits).
POLICY: Final = """
[default]
settings.env = { CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY = "1", CLAUDE_CODE_ENABLE_TELEMETRY = "1", \
OTEL_METRICS_EXPORTER = "otlp", OTEL_LOGS_EXPORTER = "otlp", OTEL_EXPORTER_OTLP_PROTOCOL = "http/protobuf", \
OTEL_METRIC_EXPORT_INTERVAL = "1000", OTEL_LOGS_EXPORT_INTERVAL = "1000" }

[groups.eng]
models = ["claude-sonnet-*", "claude-haiku-*"]
"""


@pytest.fixture
async def door(nursery: trio.Nursery, config: Config, tmp_path: Path) -> Door:
    """The gateway with the policy and sign-in, its HTTP door on loopback, ada in its store."""
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    ledger = tmp_path / "ledger.sqlite3"
    config = msgspec.structs.replace(
        config, http_port=0, ledger_path=str(ledger), build=BuildSettings(), policy_path=str(policy), oauth=True
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    assert server.http_url is not None
    assert server.oauth is not None
    store = server.oauth.store
    await trio.to_thread.run_sync(
        lambda: store.add_user("ada", hash_password(PASSWORD), ("eng",), datetime.datetime.now(datetime.UTC))
    )
    return Door(server, server.http_url.rstrip("/"), ledger)


async def signed_in(home: Path, door: Door) -> None:
    """Sign ada in through the device flow and store the sign-in as ``/login`` does."""
    issued = await device_sign_in(door.url, "ada", PASSWORD)
    expires_at_ms = (int(time.time()) + int(issued["expires_in"])) * 1000
    stored = {
        "enterpriseGateway": {"url": door.url, "jwt": issued["access_token"], "expiresAt": expires_at_ms},
        "gatewayTrust": {"127.0.0.1": "http-loopback"},
    }
    config_dir = home / ".claude"
    config_dir.mkdir(exist_ok=True)
    (config_dir / ".credentials.json").write_text(json.dumps(stored))


async def claude_signed_in(claude: Path, door: Door, trap: ProxyTrap, home: Path, model: str) -> Run:
    await signed_in(home, door)
    env = sealed_env(base_url="", api_key="", home=home, proxy=trap.url)
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "DISABLE_TELEMETRY"):
        del env[name]
    run = await run_claude(
        claude, ["-p", "Say hello", "--output-format", "json", "--model", model, "--max-turns", "2"], env, cwd=home
    )
    assert trap.requests == [], f"Claude Code tried to leave loopback: {trap.requests}"
    return run


def samples(door: Door, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The ``_total`` samples of the counter ``name``, by their labels."""
    text = door.server.gateway.metrics.render().decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for s in family.samples
        if s.name.endswith("_total")
    }


async def test_signed_in_claude_code_gets_its_settings_and_sends_its_telemetry(
    claude_code: Path, door: Door, trap: ProxyTrap, home: Path, emulator: Emulator
) -> None:
    run = await claude_signed_in(claude_code, door, trap, home, "claude-sonnet-5")
    assert run.returncode == 0, run
    assert run.result["is_error"] is False and run.result["result"].startswith("Echo: "), run
    routes = samples(door, "switchboard_http_requests")
    # The managed settings reached it: it fetched them, and did what only they turn on.
    assert routes.get((("route", "managed_settings"), ("status", "200")), 0) >= 1, routes
    assert routes.get((("route", "models"), ("status", "200")), 0) >= 1, routes
    exports = samples(door, "switchboard_otlp_exports")
    accepted = {dict(labels)["signal"] for labels, n in exports.items() if dict(labels)["outcome"] == "accepted" and n}
    assert {"metrics", "logs"} <= accepted, exports
    assert not any(dict(labels)["outcome"] == "undecodable" for labels in exports), exports
    assert sum(samples(door, "switchboard_otlp_items").values()) > 0
    # Its spend is ada's in the ledger (``switchboard cost --by user``), all of it.
    by_user = {g.key: g for g in await trio.to_thread.run_sync(read_spend, str(door.ledger), "user")}
    assert set(by_user) == {"ada"}
    assert by_user["ada"].cost_pico / PICO_PER_USD == pytest.approx(run.result["total_cost_usd"], rel=1e-9)


async def test_a_model_outside_the_groups_allow_list_is_refused_with_a_message_the_cli_shows(
    claude_code: Path, door: Door, trap: ProxyTrap, home: Path, emulator: Emulator
) -> None:
    run = await claude_signed_in(claude_code, door, trap, home, "claude-opus-4-8")
    result = run.result
    assert result["is_error"] is True, run
    assert "claude-opus-4-8 is not allowed for ada" in result["result"], run
    assert result.get("api_error_status") == 400
    assert not [r for r in emulator.requests if r.path.startswith("/v1/messages")]
