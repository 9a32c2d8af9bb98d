"""``switchboard serve`` as a real process: first stdout line, emulator fallback, no secrets."""

from __future__ import annotations

import os
import subprocess
import sys

import msgspec
import trio
from harness import chat
from trio_websocket import open_websocket_url

SECRET = "sk-ant-api03-never-print-me-0123456789"


async def serve_and_query(env: dict[str, str], *args: str) -> tuple[str, list[dict[str, object]], bytes]:
    """Start ``switchboard serve --port 0``, run one query through it, stop it. Its ledger
    stays in memory (tests/integration/test_ledger_durability.py covers the file)."""
    command = [sys.executable, "-c", "from actors.cli import main; main()", "serve", "--port", "0", "--ledger", ":memory:", *args]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stderr is not None
    stderr = bytearray()

    async def collect_stderr() -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            stderr.extend(chunk)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_stderr)
            line = b""
            with trio.fail_after(30):
                while not line.endswith(b"\n"):
                    chunk = await process.stdout.receive_some(1)
                    assert chunk, bytes(stderr).decode()
                    line += chunk
            url = line.decode().strip()
            frames: list[dict[str, object]] = []
            async with open_websocket_url(url + "/v1/sessions/cli") as ws:
                frames.append(msgspec.json.decode(await ws.get_message()))
                await ws.send_message(msgspec.json.encode({"type": "query", "id": "q", "request": chat("from the cli")}).decode())
                while frames[-1]["type"] not in ("done", "error", "aborted"):
                    frames.append(msgspec.json.decode(await ws.get_message()))
            process.terminate()
            await process.wait()
    finally:
        process.kill()
        with trio.move_on_after(10, shield=True):
            await process.wait()
        for pipe in (process.stdout, process.stderr):
            await pipe.aclose()
    return url, frames, bytes(stderr)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_", "SWITCHBOARD_"))}
    env.update(extra)
    return env


async def test_serve_without_credentials_uses_the_emulator_and_prints_its_url_first() -> None:
    url, frames, stderr = await serve_and_query(clean_env())
    assert url.startswith("ws://127.0.0.1:")
    assert frames[0]["type"] == "ready" and frames[-1]["type"] == "done"
    assert b"built-in emulator" in stderr


async def test_secrets_never_reach_the_logs_even_in_debug(nursery: trio.Nursery) -> None:
    from emulator import Emulator

    upstream = await nursery.start(Emulator(api_keys=frozenset({SECRET})).run)
    _, frames, stderr = await serve_and_query(
        clean_env(ANTHROPIC_API_KEY=SECRET, ANTHROPIC_BASE_URL=upstream, ANTHROPIC_CUSTOM_HEADERS="X-Auth-Extra: hidden-value-42"),
        "--debug",
    )
    assert frames[-1]["type"] == "done"
    assert b"DEBUG" in stderr
    assert SECRET.encode() not in stderr and b"hidden-value-42" not in stderr
