"""``switchboard serve`` as a real process: first stdout line, emulator fallback, no secrets."""

from __future__ import annotations

import msgspec
import trio
from harness import chat, clean_env, serve_process
from trio_websocket import open_websocket_url

SECRET = "sk-ant-api03-never-print-me-0123456789"
URL_PASSWORD = "url-password-never-print-me"


async def serve_and_query(
    env: dict[str, str], *args: str, text: str = "from the cli"
) -> tuple[str, list[dict[str, object]], bytes]:
    """Start ``switchboard serve --port 0``, run one query through it, stop it. Its ledger
    stays in memory (tests/integration/test_ledger_durability.py covers the file)."""
    async with serve_process(env, *args) as served:
        url = await served.read_line()
        frames: list[dict[str, object]] = []
        async with open_websocket_url(url + "/v1/sessions/cli") as ws:
            frames.append(msgspec.json.decode(await ws.get_message()))
            await ws.send_message(msgspec.json.encode({"type": "query", "id": "q", "request": chat(text)}).decode())
            while frames[-1]["type"] not in ("done", "error", "aborted"):
                frames.append(msgspec.json.decode(await ws.get_message()))
    return url, frames, bytes(served.stderr)


async def test_serve_without_credentials_uses_the_emulator_and_prints_its_url_first() -> None:
    url, frames, stderr = await serve_and_query(clean_env())
    assert url.startswith("ws://127.0.0.1:")
    assert frames[0]["type"] == "ready" and frames[-1]["type"] == "done"
    assert b"built-in emulator" in stderr


async def test_secrets_never_reach_the_logs_even_in_debug(nursery: trio.Nursery) -> None:
    from emulator import Emulator

    upstream = await nursery.start(Emulator(api_keys=frozenset({SECRET})).run)
    secrets = (SECRET, URL_PASSWORD, "hidden-value-42")
    # An upstream that echoes the credentials back in a response header (a misbehaving
    # proxy): with SWITCHBOARD_DEBUG_HTTP=1 the HTTP client logs every response header, so
    # each secret reaches a log call and only the redaction keeps it out of stderr.
    echo = f"<<emulator:429:times=1,overage_disabled_reason={'%20'.join(secrets)}>> from the cli"
    _, frames, stderr = await serve_and_query(
        clean_env(
            ANTHROPIC_API_KEY=SECRET,
            ANTHROPIC_BASE_URL=upstream.replace("http://", f"http://user:{URL_PASSWORD}@"),
            ANTHROPIC_CUSTOM_HEADERS="X-Auth-Extra: hidden-value-42",
            SWITCHBOARD_DEBUG_HTTP="1",
        ),
        "--debug",
        text=echo,
    )
    assert frames[-1]["type"] == "done"
    assert b"DEBUG" in stderr
    for secret in secrets:
        assert secret.encode() not in stderr
    # Not vacuous: the echoing header was logged, redacted.
    assert b"(b'anthropic-ratelimit-unified-overage-disabled-reason', b'*** *** ***')" in stderr
