"""Test harness: a PROTOCOL.md WebSocket client and request builders (import as ``harness``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from actors.server import Server
from protocol.frames import TERMINAL_FRAMES, GatewayFrame, decode_frame


class Client:
    """A WebSocket client speaking PROTOCOL.md: send dicts, receive decoded frames."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, **frame: Any) -> None:
        await self.ws.send_message(msgspec.json.encode(frame).decode())

    async def receive(self) -> GatewayFrame:
        return decode_frame(await self.ws.get_message())

    async def until_terminal(self, query_id: str) -> list[GatewayFrame]:
        """Every frame of ``query_id`` up to and including its terminal frame."""
        frames: list[GatewayFrame] = []
        while True:
            frame = await self.receive()
            if getattr(frame, "id", None) != query_id:
                continue
            frames.append(frame)
            if isinstance(frame, TERMINAL_FRAMES):
                return frames


@asynccontextmanager
async def connect(server: Server, session: str = "s1", **kwargs: Any) -> AsyncIterator[Client]:
    """A client connection to ``session``. The test owns the TCP stream and closes it: the
    trio-websocket client leaves its socket open when the server closes first."""
    host, _, port = server.ws_url.removeprefix("ws://").rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, host, f"/v1/sessions/{session}", **kwargs)
        try:
            yield Client(ws)
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()


def chat(text: str = "Hello there", *, model: str = "claude-sonnet-4-6", max_tokens: int = 256) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
