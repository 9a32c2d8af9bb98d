"""Golden upstream requests (issue 5): what the gateway sends the emulator, exactly.

For realistic requests of one session in turn, the exact path, ``anthropic-beta`` header and
body the emulator received, including what stays latched across the session's requests,
and the ``cache_break`` a ``done`` frame carries when the prompt cache's reads fall. The
emulator refuses unknown betas with the API's 400, so every golden request passing also
proves that every beta sent is a known one.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
import trio
from harness import Client, connect

from actors.config.settings import Config
from actors.server import Server, open_gateway, run_server
from emulator import Emulator
from emulator.validation import KNOWN_BETAS
from protocol import betas as B
from protocol.caching import CacheBreak
from protocol.frames import Done, GatewayFrame
from protocol.models.aliases import PROVIDERS
from protocol.request_builder import BuildSettings

EPHEMERAL = {"type": "ephemeral"}
BASE = [B.CLAUDE_CODE, B.INTERLEAVED_THINKING, B.CONTEXT_MANAGEMENT, B.PROMPT_CACHING_SCOPE, B.EFFORT]


async def serve(nursery: trio.Nursery, config: Config, settings: BuildSettings) -> Server:
    server: Server = await nursery.start(functools.partial(run_server, msgspec.structs.replace(config, build=settings)))
    return server


async def ask(client: Client, query_id: str, request: dict[str, Any], **options: Any) -> list[GatewayFrame]:
    await client.send(type="query", id=query_id, request=request, **options)
    return await client.until_terminal(query_id)


def sent(emulator: Emulator, n: int) -> tuple[str, list[str], Any]:
    record = [r for r in emulator.requests if r.path.startswith("/v1/messages")][n]
    return record.path, record.headers.get("anthropic-beta", "").split(","), record.json


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text, **extra}]}


async def test_a_session_of_realistic_requests(nursery: trio.Nursery, config: Config, emulator: Emulator) -> None:
    settings = BuildSettings(extra_betas=("files-api-2025-04-14",), extra_body={"metadata": {"user_id": "u-1"}})
    server = await serve(nursery, config, settings)
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    async with connect(server) as client:
        await client.receive()
        # 1. Plain chat through an alias, with a system prompt.
        frames = await ask(client, "q1", {"model": "sonnet", "max_tokens": 512, "system": "Be terse.",
                                          "messages": [{"role": "user", "content": "Hi"}]})
        assert isinstance(frames[-1], Done) and frames[-1].model == "claude-sonnet-5"
        assert sent(emulator, 0) == ("/v1/messages", [*BASE, "files-api-2025-04-14"], {
            "model": "claude-sonnet-5",
            "max_tokens": 512,
            "system": [{"type": "text", "text": "Be terse.", "cache_control": EPHEMERAL}],
            "messages": [user("Hi", cache_control=EPHEMERAL)],
            "stream": True,
            "metadata": {"user_id": "u-1"},
        })
        # 2. Tools, a deferred one, and an image; tool search latches its beta.
        deferred = {"name": "search_docs", "input_schema": {"type": "object"}, "defer_loading": True}
        request = {
            "model": "claude-sonnet-4-6", "max_tokens": 512, "tools": [*tools, deferred],
            "messages": [{"role": "user", "content": [image, {"type": "text", "text": "Weather?"}]}],
        }
        frames = await ask(client, "q2", request)
        assert isinstance(frames[-1], Done)
        _, betas, body = sent(emulator, 1)
        assert betas == [*BASE[:4], B.TOOL_SEARCH_1P, B.EFFORT, "files-api-2025-04-14"]
        assert body["tools"] == [*tools, deferred]
        assert body["messages"] == [{"role": "user", "content": [image, {"type": "text", "text": "Weather?", "cache_control": EPHEMERAL}]}]
        # 3. Thinking on a 1M-context Opus, in fast mode: temperature dropped, [1m] stripped.
        request = {"model": "opus[1m]", "max_tokens": 200_000, "temperature": 0.3,
                   "thinking": {"type": "enabled", "budget_tokens": 4096},
                   "messages": [{"role": "user", "content": "Think."}]}
        frames = await ask(client, "q3", request, fast_mode=True)
        assert isinstance(frames[-1], Done) and frames[-1].model == "claude-opus-4-8"
        assert sent(emulator, 2) == ("/v1/messages", [
            B.CLAUDE_CODE, B.CONTEXT_1M, B.INTERLEAVED_THINKING, B.CONTEXT_MANAGEMENT, B.PROMPT_CACHING_SCOPE,
            B.EFFORT, B.FAST_MODE, B.TOOL_SEARCH_1P, "files-api-2025-04-14",
        ], {
            "model": "claude-opus-4-8",
            "max_tokens": 128_000,
            "thinking": {"type": "enabled", "budget_tokens": 4096},
            "messages": [user("Think.", cache_control=EPHEMERAL)],
            "stream": True,
            "speed": "fast",
            "metadata": {"user_id": "u-1"},
        })
        # 4. Plain chat again: both latched betas stay; no speed without fast mode.
        frames = await ask(client, "q4", {"model": "opus", "max_tokens": 64, "messages": [{"role": "user", "content": "Bye"}]})
        assert isinstance(frames[-1], Done)
        _, betas, body = sent(emulator, 3)
        assert betas == [*BASE, B.TOOL_SEARCH_1P, B.FAST_MODE, "files-api-2025-04-14"]
        assert "speed" not in body
    # Another session starts with no latch.
    async with connect(server, session="other") as client:
        await client.receive()
        await ask(client, "q5", {"model": "opus", "max_tokens": 64, "messages": [{"role": "user", "content": "Bye"}]})
        assert sent(emulator, 4)[1] == [*BASE, "files-api-2025-04-14"]


async def test_tool_pairing_is_repaired_before_sending(nursery: trio.Nursery, config: Config, emulator: Emulator) -> None:
    server = await serve(nursery, config, BuildSettings(disable_prompt_caching=True))
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "stale"},
                                     {"type": "text", "text": "continue"}]},
    ]
    async with connect(server) as client:
        await client.receive()
        frames = await ask(client, "q", {"model": "sonnet", "max_tokens": 64, "messages": messages})
    assert isinstance(frames[-1], Done)
    assert sent(emulator, 0)[2]["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "[Tool result missing due to internal error]", "is_error": True},
        {"type": "text", "text": "continue"},
    ]}


async def test_count_tokens_goes_through_the_same_construction(
    nursery: trio.Nursery, config: Config, emulator: Emulator
) -> None:
    server = await serve(nursery, config, BuildSettings())
    async with connect(server) as client:
        await client.receive()
        await client.send(type="count_tokens", id="c", request={"model": "sonnet[1m]", "messages": [{"role": "user", "content": "x"}]})
        await client.receive()
    path, betas, body = sent(emulator, 0)
    assert path.startswith("/v1/messages/count_tokens")
    assert betas == [B.CLAUDE_CODE, B.CONTEXT_1M, *BASE[1:]]
    assert body == {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "x"}]}


async def test_a_cache_break_is_named_in_the_done_frame(nursery: trio.Nursery, config: Config, emulator: Emulator) -> None:
    server = await serve(nursery, config, BuildSettings())
    system = "You are a careful assistant. " * 400  # about 3 000 emulator tokens
    async with connect(server) as client:
        await client.receive()
        first = await ask(client, "q1", {"model": "sonnet", "max_tokens": 64, "system": system,
                                         "messages": [{"role": "user", "content": "one"}]})
        second = await ask(client, "q2", {"model": "sonnet", "max_tokens": 64, "system": system,
                                          "messages": [{"role": "user", "content": "two"}]})
        third = await ask(client, "q3", {"model": "sonnet", "max_tokens": 64, "system": system + "Be brief.",
                                         "messages": [{"role": "user", "content": "three"}]})
    done = [f[-1] for f in (first, second, third)]
    assert all(isinstance(d, Done) for d in done)
    assert done[0].cache_break is None and done[1].cache_break is None  # type: ignore[union-attr]
    read = done[1].usage["cache_read_input_tokens"]  # type: ignore[union-attr]
    assert read > 2_000
    assert done[2].cache_break == CacheBreak(  # type: ignore[union-attr]
        reason="system prompt changed (+9 chars)", cache_read_before=read, cache_read_after=0
    )


async def test_client_betas_are_kept_and_session_activity_is_exposed(config: Config, emulator: Emulator) -> None:
    request = {"model": "haiku", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    client_betas = (("anthropic-beta", f"pdfs-2024-09-25,{B.CLAUDE_CODE}"),)
    async with open_gateway(config) as gateway:
        async with gateway.query(request, session_id="s", source="title", headers=client_betas) as frames:
            await frames.receive()
            assert (await gateway.session_activity()).active == ("s",)
            async for _ in frames:
                pass
        activity = await gateway.session_activity()
        assert activity.active == () and [s for s, _ in activity.idle] == ["s"]
    # Haiku for a non-agentic source: no claude-code beta of its own, but the client's stays.
    assert sent(emulator, 0)[1] == [
        B.INTERLEAVED_THINKING, B.CONTEXT_MANAGEMENT, B.PROMPT_CACHING_SCOPE, "pdfs-2024-09-25", B.CLAUDE_CODE
    ]


def test_every_beta_the_builder_can_send_is_known_to_the_emulator() -> None:
    sendable = {v for n, v in vars(B).items() if n.isupper() and isinstance(v, str) and v not in PROVIDERS}
    assert len(sendable) >= 15
    assert sendable <= KNOWN_BETAS
