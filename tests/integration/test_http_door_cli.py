"""``switchboard serve --http-port 0``: the second stdout line is the HTTP door, and it serves."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import msgspec
import trio
from harness import chat


def clean_env() -> dict[str, str]:
    """No credentials, no base URL: the gateway starts its built-in emulator."""
    prefixes = ("ANTHROPIC_", "CLAUDE_CODE_", "SWITCHBOARD_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


async def read_line(stream: trio.abc.ReceiveStream, stderr: bytearray) -> str:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        assert chunk, bytes(stderr).decode()
        line += chunk
    return line.decode().strip()


async def test_serve_prints_the_http_url_second_and_serves_the_messages_api() -> None:
    command = [
        sys.executable,
        "-c",
        "from actors.cli import main; main()",
        "serve",
        "--port",
        "0",
        "--http-port",
        "0",
    ]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env()
    )
    assert process.stdout is not None and process.stderr is not None
    stderr = bytearray()

    async def collect_stderr() -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            stderr.extend(chunk)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_stderr)
            with trio.fail_after(30):
                ws_url = await read_line(process.stdout, stderr)
                http_url = await read_line(process.stdout, stderr)
            async with httpx.AsyncClient(base_url=http_url, timeout=30) as http:
                health = await http.get("/healthz")
                answer = await http.post(
                    "/v1/messages",
                    json=chat("over http"),
                    headers={"anthropic-version": "2023-06-01"},
                )
            process.terminate()
            await process.wait()
    finally:
        process.kill()
        with trio.move_on_after(10, shield=True):
            await process.wait()
        for pipe in (process.stdout, process.stderr):
            await pipe.aclose()
    assert ws_url.startswith("ws://127.0.0.1:") and http_url.startswith("http://127.0.0.1:")
    assert health.status_code == 200
    assert answer.status_code == 200, answer.text
    assert msgspec.json.decode(answer.content)["content"] == [
        {"type": "text", "text": "Echo: over http"}
    ]
    assert b"HTTP door" in stderr
