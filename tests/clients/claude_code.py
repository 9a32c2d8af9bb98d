"""Claude Code, the real client, for the tests and scripts: installed once, run sealed off.

``install()`` puts the pinned npm release (``CLAUDE_CODE_VERSION``, the one place it is named)
into ``$XDG_CACHE_HOME/switchboard/claude-code/<version>`` (``~/.cache`` by default) with
``npm install --prefix`` the first time, and reuses it afterwards. An exclusive ``flock`` on a
lock file next to it makes two test processes that start together install it once: the second
waits, then finds the stamp the first wrote. Without ``node`` or ``npm`` it raises
``ClaudeCodeUnavailable`` (the tests skip with its message); a failed install raises
``RuntimeError`` (the tests fail: on a machine with npm the real client must run).

``sealed_env()`` is the whole environment Claude Code gets: nothing is inherited from the
test process but ``PATH``. It points Claude Code at the gateway (``ANTHROPIC_BASE_URL``, the
gateway token as ``ANTHROPIC_API_KEY``), turns off its telemetry, updater, error reports and
every other nonessential request, gives it a fresh ``HOME`` and ``CLAUDE_CONFIG_DIR``, and
routes anything not on loopback through ``ProxyTrap``: a proxy that answers nothing and
records every request it receives, so a test proves that every request went to the gateway by
finding the trap empty.

``run_claude()`` runs it as a subprocess under ``trio.move_on_after``: the timeout is a
safety net against a client that never ends, never an assertion about speed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import trio

from actors.server import Server
from protocol.oauth import GRANT_DEVICE

# The pinned release: the current one when these tests were written (2026-12-07). Bumping it
# is the whole upgrade; the next run installs it next to the old one.
CLAUDE_CODE_VERSION: Final = "2.1.332"
PACKAGE: Final = "@anthropic-ai/claude-code"
# One install downloads a ~400 MB native binary: generous, but bounded.
INSTALL_TIMEOUT: Final = 900.0
# A safety net for one `claude -p` run: a run here takes about a second.
RUN_TIMEOUT: Final = 120.0
_STAMP: Final = ".installed"
# The access token the gateway fixture accepts and every client run presents.
GATEWAY_TOKEN: Final = "sb-gateway-token-for-claude-code"


class ClaudeCodeUnavailable(Exception):
    """node or npm is not on PATH: the real-client tests cannot run here."""


def cache_dir(version: str = CLAUDE_CODE_VERSION) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard" / "claude-code" / version


def install(version: str = CLAUDE_CODE_VERSION) -> Path:
    """The ``claude`` executable of ``version``, installed first if needed (see module doc)."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise ClaudeCodeUnavailable(
            f"Claude Code tests need {' and '.join(missing)} on PATH (npm install {PACKAGE})"
        )
    root = cache_dir(version)
    root.mkdir(parents=True, exist_ok=True)
    executable = root / "node_modules" / ".bin" / "claude"
    with open(root.parent / f"{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (root / _STAMP).exists() and executable.exists():
            return executable
        command = ["npm", "install", "--prefix", str(root), "--no-audit", "--no-fund"]
        done = subprocess.run(
            [*command, f"{PACKAGE}@{version}"],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
        if done.returncode != 0 or not executable.exists():
            raise RuntimeError(f"npm install {PACKAGE}@{version} failed:\n{done.stderr[-4000:]}")
        shown = subprocess.run(
            [str(executable), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        if not shown.stdout.startswith(version):
            raise RuntimeError(f"claude --version says {shown.stdout!r}, not {version}")
        (root / _STAMP).write_text(version + "\n")
    return executable


@dataclass(frozen=True)
class Door:
    """The gateway under test (the `door` fixture of tests/clients/conftest.py)."""

    server: Server
    url: str
    ledger: Path


@dataclass
class ProxyTrap:
    """A loopback HTTP proxy that refuses everything and records each request line: where
    Claude Code would have gone had it tried to leave loopback (``CONNECT host:443 ...``)."""

    requests: list[str] = field(default_factory=list)
    url: str = ""  # set by whoever starts ``run``

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        task_status.started(f"http://127.0.0.1:{port}")
        await trio.serve_listeners(self._refuse, listeners)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            with trio.move_on_after(10):
                while b"\r\n" not in head and len(head) < 8192:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    head += chunk
            self.requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
            try:
                await stream.send_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            except trio.BrokenResourceError:
                pass


def sealed_env(
    *, base_url: str, api_key: str, home: Path, proxy: str, **extra: str
) -> dict[str, str]:
    """The whole environment of one Claude Code run (see the module docstring)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "TMPDIR": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "HTTPS_PROXY": proxy,
        "HTTP_PROXY": proxy,
        "https_proxy": proxy,
        "http_proxy": proxy,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    env.update(extra)
    return env


@dataclass(frozen=True)
class Run:
    """One finished ``claude -p`` run: exit code, output, and stdout as JSON when it is."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        decoded = json.loads(self.stdout)
        assert isinstance(decoded, dict), self.stdout
        return decoded

    def __str__(self) -> str:
        return (
            f"exit {self.returncode}\nstdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}"
        )


async def run_claude(
    claude: Path,
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path,
    safety_timeout: float = RUN_TIMEOUT,
) -> Run:
    """Run ``claude ARGS`` to its end; fails (AssertionError) if it outlives ``safety_timeout``."""
    with trio.move_on_after(safety_timeout):
        done = await trio.run_process(
            [str(claude), *args],
            env=dict(env),
            cwd=str(cwd),
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        return Run(done.returncode, done.stdout.decode(), done.stderr.decode())
    raise AssertionError(f"claude {' '.join(args)!r} still running after {safety_timeout} s")


async def device_sign_in(base_url: str, user: str, password: str) -> dict[str, Any]:
    """The gateway's device flow as the CLI runs it (README.md "Claude Code for a whole
    organisation"), approved on the verification page by ``user`` with the form the page
    sends: the token endpoint's answer (``access_token``, ``expires_in``, ``refresh_token``)."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        doc = (await client.get("/.well-known/oauth-authorization-server")).json()
        device = (await client.post(doc["device_authorization_endpoint"], data={"surface": "claude_code"})).json()
        page = await client.get(device["verification_uri_complete"])
        assert page.status_code == 200 and device["user_code"] in page.text
        form = {"user_code": device["user_code"], "username": user, "password": password, "action": "approve"}
        assert (await client.post(device["verification_uri"], data=form)).status_code == 200
        issued = await client.post(doc["token_endpoint"], data={"grant_type": GRANT_DEVICE, "device_code": device["device_code"]})
        assert issued.status_code == 200, issued.text
        body: dict[str, Any] = issued.json()
        return body
