"""Claude Code in gateway mode (``CLAUDE_CODE_USE_GATEWAY=1``) with a token the test obtained
through the gateway's device flow, approved on the verification page as a user would (form
posts, as the page's own form sends them): it runs a prompt through the gateway; once its
user is disabled, its requests are refused with the gateway's "sign in again", and the
refresh a signed-in client would make gets ``invalid_grant``, which sends it to ``/login``
(README.md "Claude Code for a whole organisation").
"""

from __future__ import annotations

import datetime
import functools
import json
from pathlib import Path

import httpx
import msgspec
import pytest
import trio
from claude_code import ProxyTrap, Run, device_sign_in, run_claude, sealed_env

from actors.access.identities import hash_password
from actors.config.settings import Config
from actors.server import Server, run_server
from protocol.oauth import GRANT_REFRESH
from protocol.request_builder import BuildSettings

pytestmark = pytest.mark.claude_code

PASSWORD = "correct horse battery"
MAX_TURNS = "2"
# A spending bound (the emulator's echo of the default model's first turn is about $0.18).
MAX_BUDGET_USD = "0.50"


@pytest.fixture
async def gateway(nursery: trio.Nursery, config: Config, tmp_path: Path) -> Server:
    """The gateway with sign-in on and its users in a ledger file, before the emulator."""
    config = msgspec.structs.replace(
        config, http_port=0, oauth=True, ledger_path=str(tmp_path / "ledger.sqlite3"), build=BuildSettings()
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    assert server.oauth is not None and server.http_url is not None
    store = server.oauth.store
    await trio.to_thread.run_sync(
        lambda: store.add_user("ada", hash_password(PASSWORD), ("eng",), datetime.datetime.now(datetime.UTC))
    )
    return server


async def claude_in_gateway_mode(claude: Path, gateway: Server, trap: ProxyTrap, home: Path, token: str) -> Run:
    assert gateway.http_url is not None
    env = sealed_env(base_url=gateway.http_url, api_key="", home=home, proxy=trap.url)
    del env["ANTHROPIC_API_KEY"]
    env.update(CLAUDE_CODE_USE_GATEWAY="1", ANTHROPIC_AUTH_TOKEN=token)
    args = ["-p", "Say hello.", "--output-format", "json", "--max-turns", MAX_TURNS, "--max-budget-usd", MAX_BUDGET_USD]
    run = await run_claude(claude, args, env, cwd=home)
    assert trap.requests == [], f"Claude Code tried to leave loopback: {trap.requests}"
    return run


async def test_claude_code_signed_in_by_the_device_flow_runs_a_prompt_then_a_disabled_user_must_sign_in_again(
    claude_code: Path, gateway: Server, trap: ProxyTrap, home: Path
) -> None:
    assert gateway.http_url is not None and gateway.oauth is not None
    issued = await device_sign_in(gateway.http_url, "ada", PASSWORD)

    run = await claude_in_gateway_mode(claude_code, gateway, trap, home, issued["access_token"])
    assert run.returncode == 0, run.stdout
    result = run.result
    assert result["is_error"] is False and result["result"], run
    assert all(usage["provider"] == "gateway" for usage in result["modelUsage"].values()), run

    store = gateway.oauth.store
    await trio.to_thread.run_sync(lambda: store.disable("ada", datetime.datetime.now(datetime.UTC)))
    refused = await claude_in_gateway_mode(claude_code, gateway, trap, home, issued["access_token"])
    answer = json.loads(refused.stdout)
    assert answer["is_error"] is True and answer["api_error_status"] == 401, refused
    assert "sign in again with /login" in answer["result"], refused
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        refresh = await client.post("/oauth/token", data={"grant_type": GRANT_REFRESH, "refresh_token": issued["refresh_token"]})
    assert refresh.status_code == 401 and refresh.json()["error"] == "invalid_grant"
