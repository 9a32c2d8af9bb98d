"""``--debug``: one line per upstream attempt on ``switchboard.upstream``; the HTTP client's
own loggers stay at WARNING unless ``SWITCHBOARD_DEBUG_HTTP=1`` (README "Configuration")."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator

import msgspec
import pytest
import trio
from harness import chat, connect

from actors.config.settings import Config
from actors.observe.log import HTTP_LOGGERS, configure_logging
from actors.server import run_server
from emulator import Emulator


async def test_one_debug_line_per_upstream_attempt(
    nursery: trio.Nursery,
    config: Config,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Credentials in the base URL must not reach the log line.
    assert emulator.url is not None
    base_url = emulator.url.replace("http://", "http://user:hunter2@")
    server = await nursery.start(functools.partial(run_server, msgspec.structs.replace(config, base_url=base_url)))
    caplog.set_level(logging.DEBUG, logger="switchboard.upstream")
    emulator.script("529")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        await client.until_terminal("q")
    lines = [r.getMessage() for r in caplog.records if r.name == "switchboard.upstream"]
    assert len(lines) == 2
    url = f"{emulator.url}/v1/messages"
    first, second = lines
    betas = emulator.requests[0].headers.get("anthropic-beta") or "-"
    assert first.startswith(f"upstream attempt=1 POST {url} model=claude-sonnet-4-6 betas={betas} ")
    assert " status=529 request_id=req_emu_1 duration_ms=" in first
    assert second.startswith(f"upstream attempt=2 POST {url} ")
    assert " status=200 request_id=req_emu_2 " in second
    assert all("hunter2" not in line and "user:" not in line for line in lines)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "switchboard.upstream")


async def test_no_line_without_debug(
    server: object, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.upstream")
    async with connect(server) as client:  # type: ignore[arg-type]
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        await client.until_terminal("q")
    assert not [r for r in caplog.records if r.name == "switchboard.upstream"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in HTTP_LOGGERS}
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restore_logging")
def test_http_client_internals_only_on_request() -> None:
    configure_logging(debug=True, environ={})
    assert logging.getLogger().level == logging.DEBUG
    assert {logging.getLogger(name).level for name in ("httpx", "httpcore")} == {logging.WARNING}
    configure_logging(debug=True, environ={"SWITCHBOARD_DEBUG_HTTP": "1"})
    assert {logging.getLogger(name).level for name in ("httpx", "httpcore")} == {logging.DEBUG}
    configure_logging(debug=False, environ={"SWITCHBOARD_DEBUG_HTTP": "1"})
    assert {logging.getLogger(name).level for name in ("httpx", "httpcore")} == {logging.WARNING}
