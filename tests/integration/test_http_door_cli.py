"""``switchboard serve --http-port 0``: the second stdout line is the HTTP door, and it serves."""

from __future__ import annotations

import httpx
import msgspec
from harness import chat, clean_env, serve_process


async def test_serve_prints_the_http_url_second_and_serves_the_messages_api() -> None:
    async with serve_process(clean_env(), "--http-port", "0") as served:
        ws_url = await served.read_line()
        http_url = await served.read_line()
        async with httpx.AsyncClient(base_url=http_url, timeout=30) as http:
            health = await http.get("/healthz")
            answer = await http.post(
                "/v1/messages",
                json=chat("over http"),
                headers={"anthropic-version": "2023-06-01"},
            )
    assert ws_url.startswith("ws://127.0.0.1:") and http_url.startswith("http://127.0.0.1:")
    assert health.status_code == 200
    instance = health.json()["instance_id"]
    assert instance and f"switchboard instance {instance} listening".encode() in served.stderr
    assert answer.status_code == 200, answer.text
    assert msgspec.json.decode(answer.content)["content"] == [
        {"type": "text", "text": "Echo: over http"}
    ]
    assert b"HTTP door" in served.stderr
