"""Claude Code signs itself in to the gateway, as ``/login`` does: ``claude auth login
--gateway-json`` (the CLI's sign-in driven through JSON lines, the form a program that shows
it to a person uses) against the gateway over TLS. The test answers as the person would:
accepts the gateway URL, trusts the certificate's fingerprint (the CLI pins it), and approves
the code on the verification page. Then ``claude -p`` runs on the stored sign-in; once the
user is disabled and the access token is near its end, the CLI's refresh gets
``invalid_grant`` (it drops its refresh token) and the request is refused with "sign in
again" (README.md "Claude Code for a whole organisation").
"""

from __future__ import annotations

import datetime
import functools
import json
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import pytest
import trio
from claude_code import ProxyTrap, Run, run_claude, sealed_env

from actors.access.identities import hash_password
from actors.config.from_env import with_sign_in
from actors.config.settings import Config
from actors.server import Server, run_server
from protocol.request_builder import BuildSettings

pytestmark = [
    pytest.mark.claude_code,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make the gateway's certificate"),
]

PASSWORD: Final = "correct horse battery"
MAX_BUDGET_USD: Final = "0.50"
# A safety net for the sign-in's subprocess, never an assertion about speed.
LOGIN_TIMEOUT: Final = 120


@pytest.fixture
async def tls_gateway(nursery: trio.Nursery, config: Config, tmp_path: Path) -> tuple[Server, Path]:
    """The gateway with sign-in on over TLS (a fresh self-signed certificate for 127.0.0.1)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await trio.run_process(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_stdout=True, capture_stderr=True,
    )
    config = msgspec.structs.replace(config, http_port=0, ledger_path=str(tmp_path / "ledger.sqlite3"), build=BuildSettings())
    config = with_sign_in(config, oauth=True, tls_cert=str(cert), tls_key=str(key))
    server: Server = await nursery.start(functools.partial(run_server, config))
    assert server.oauth is not None
    store = server.oauth.store
    now = datetime.datetime.now(datetime.UTC)
    await trio.to_thread.run_sync(lambda: store.add_user("ada", hash_password(PASSWORD), ("eng",), now))
    return server, cert


def client_env(home: Path, trap: ProxyTrap, cert: Path) -> dict[str, str]:
    """Claude Code's environment without a provider or credential of its own: the stored
    sign-in decides; the gateway's certificate is trusted through ``NODE_EXTRA_CA_CERTS``."""
    env = sealed_env(base_url="", api_key="", home=home, proxy=trap.url, NODE_EXTRA_CA_CERTS=str(cert))
    del env["ANTHROPIC_BASE_URL"], env["ANTHROPIC_API_KEY"]
    return env


def login(claude: Path, env: dict[str, str], home: Path, cert: Path) -> list[dict[str, Any]]:
    """``claude auth login --gateway-json``, answered as a person would (blocking: run in a
    worker thread). Returns every state the CLI reported."""
    seen: list[dict[str, Any]] = []
    with subprocess.Popen(
        [str(claude), "auth", "login", "--gateway-json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env, cwd=home, text=True,
    ) as cli:
        assert cli.stdin is not None and cli.stdout is not None
        try:
            for line in cli.stdout:
                message: dict[str, Any] = json.loads(line)
                seen.append(message)
                state = message["state"]
                if state in ("url_input", "trust_prompt", "confirm_account"):
                    cli.stdin.write(json.dumps({"state": state, "shown": message["shown"], "accept": True}) + "\n")
                    cli.stdin.flush()
                elif state == "polling":
                    form = {"user_code": message["userCode"], "username": "ada", "password": PASSWORD, "action": "approve"}
                    page = httpx.post(message["verificationUri"], data=form, verify=ssl.create_default_context(cafile=str(cert)))
                    assert page.status_code == 200, page.text
                elif state in ("done", "error"):
                    break
            cli.stdin.close()
            assert cli.wait(timeout=LOGIN_TIMEOUT) == 0, (seen, cli.stderr.read() if cli.stderr else "")
        finally:
            if cli.poll() is None:
                cli.kill()
    return seen


async def prompt(claude: Path, env: dict[str, str], home: Path, trap: ProxyTrap) -> dict[str, Any]:
    run: Run = await run_claude(
        claude, ["-p", "Say hello.", "--output-format", "json", "--max-turns", "2", "--max-budget-usd", MAX_BUDGET_USD],
        env, cwd=home,
    )
    assert trap.requests == [], f"Claude Code tried to leave loopback: {trap.requests}"
    if not run.stdout.strip():
        # The CLI ended before answering (its refresh was refused): what it said is on stderr.
        return {"exit": run.returncode, "stderr": run.stderr}
    answer: dict[str, Any] = json.loads(run.stdout)
    return answer


async def test_claude_code_signs_in_with_the_device_flow_then_a_disabled_user_must_sign_in_again(
    claude_code: Path, tls_gateway: tuple[Server, Path], trap: ProxyTrap, home: Path
) -> None:
    server, cert = tls_gateway
    assert server.http_url is not None and server.http_url.startswith("https://") and server.oauth is not None
    (home / ".claude").mkdir()
    settings = {"forceLoginMethod": "gateway", "forceLoginGatewayUrl": server.http_url}
    (home / ".claude" / "settings.json").write_text(json.dumps(settings))
    env = client_env(home, trap, cert)

    seen = await trio.to_thread.run_sync(functools.partial(login, claude_code, env, home, cert))
    states = [m["state"] for m in seen]
    assert "trust_prompt" in states and "polling" in states and states[-1] == "done", seen
    stored = json.loads((home / ".claude" / ".credentials.json").read_text())["enterpriseGateway"]
    assert stored["url"] == server.http_url and stored["idpRefreshToken"].startswith("sbr-")

    answered = await prompt(claude_code, env, home, trap)
    assert answered["is_error"] is False, answered
    assert {usage["provider"] for usage in answered["modelUsage"].values()} == {"gateway"}, answered

    store = server.oauth.store
    await trio.to_thread.run_sync(lambda: store.disable("ada", datetime.datetime.now(datetime.UTC)))
    # An hour later, as the client sees it: its access token ends within the refresh margin.
    credentials = json.loads((home / ".claude" / ".credentials.json").read_text())
    credentials["enterpriseGateway"]["expiresAt"] = int(time.time() * 1000) + 60_000
    (home / ".claude" / ".credentials.json").write_text(json.dumps(credentials))
    refused = await prompt(claude_code, env, home, trap)
    if "stderr" in refused:
        # The CLI refreshed first (its token was about to end): the refresh got invalid_grant
        # and the CLI stopped, telling the user to sign in again.
        assert refused["exit"] != 0 and "sign in again with /login" in refused["stderr"], refused
    else:
        # The CLI sent the old access token: the gateway refused it (401) with its message.
        assert refused["is_error"] is True and refused["api_error_status"] == 401, refused
        assert "sign in again with /login" in refused["result"], refused
    after = json.loads((home / ".claude" / ".credentials.json").read_text())["enterpriseGateway"]
    assert "idpRefreshToken" not in after, "the CLI keeps a refresh token the gateway refused"
