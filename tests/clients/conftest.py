"""Fixtures for driving real clients through the HTTP door: Claude Code installed once per
test session, and per test the gateway (its HTTP door, an access token, a ledger file)
against the emulator, a proxy trap, and a fresh home directory for the client.

Claude Code is a real subprocess, so these tests run on the real clock (no autojump clock):
every wait has a timeout, used as a safety net, never asserted on.
"""

from __future__ import annotations

import functools
from pathlib import Path

import msgspec
import pytest
import trio
from claude_code import GATEWAY_TOKEN, ClaudeCodeUnavailable, Door, ProxyTrap, install

from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from protocol.request_builder import BuildSettings


@pytest.fixture(scope="session")
def claude_code() -> Path:
    """The pinned Claude Code executable (installed on first use); skips without node/npm."""
    try:
        return install()
    except ClaudeCodeUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
async def trap(nursery: trio.Nursery) -> ProxyTrap:
    trap = ProxyTrap()
    trap.url = await nursery.start(trap.run)
    return trap


@pytest.fixture
async def door(nursery: trio.Nursery, config: Config, tmp_path: Path) -> Door:
    """The gateway as `switchboard serve` runs it (prompt caching on, an access token, a
    ledger file), its HTTP door on a free port, in front of the test's emulator."""
    ledger = tmp_path / "ledger.sqlite3"
    config = msgspec.structs.replace(
        config,
        http_port=0,
        access_tokens=(Secret(GATEWAY_TOKEN),),
        ledger_path=str(ledger),
        build=BuildSettings(),
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    assert server.http_url is not None
    return Door(server, server.http_url, ledger)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """Claude Code's HOME, CLAUDE_CONFIG_DIR parent and working directory."""
    path = tmp_path / "home"
    path.mkdir()
    return path
