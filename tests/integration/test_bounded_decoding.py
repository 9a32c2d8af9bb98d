"""Deeply nested JSON through both doors and from the upstream: refused, never fatal.

A client's too-deep frame is ``rejected`` and its connection keeps working; a too-deep HTTP
body is a 400; an upstream that nests too deep (an event, a tool input assembled from
``input_json_delta``, the non-streaming answer) fails that query with one terminal ``error``,
charges what it used, and a concurrent query completes. The upstream here is a small fake
on loopback (the emulator has no fault kind for this).
"""

from __future__ import annotations

import functools
from typing import Any

import httpx
import msgspec
import trio
from harness import chat, connect

from actors.config.settings import Config
from actors.server import Server, run_server
from protocol.bounded_json import MAX_DEPTH
from protocol.frames import CostFrame, Done, ErrorFrame, EventFrame, Rejected, RetryFrame, Tombstone

DEEP = 3 * MAX_DEPTH


def deep_text(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def deep_value(depth: int = DEEP) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_a_deep_frame_is_rejected_and_the_connection_keeps_working(server: Server) -> None:
    async with connect(server) as client:
        await client.receive()
        request = '{"model":"claude-sonnet-4-6","max_tokens":5,"messages":' + deep_text() + "}"
        await client.ws.send_message('{"type":"query","id":"deep","request":' + request + "}")
        # Deeper than msgspec's own recursion limit too.
        await client.ws.send_message(
            '{"type":"count_tokens","id":"deeper","request":' + deep_text(5000) + "}"
        )
        first, second = await client.receive(), await client.receive()
        assert (
            isinstance(first, Rejected) and first.id == "deep" and first.error.type == "bad_frame"
        )
        assert "deeper than" in first.error.message
        assert isinstance(second, Rejected) and second.error.type == "bad_frame"
        await client.send(type="query", id="after", request=chat())
        assert isinstance((await client.until_terminal("after"))[-1], Done)


async def test_a_deep_input_schema_through_the_http_door_is_a_400(
    nursery: trio.Nursery, config: Config
) -> None:
    config = msgspec.structs.replace(config, http_port=0)
    server: Server = await nursery.start(functools.partial(run_server, config))
    tool_schema: Any = {"type": "object"}
    for _ in range(DEEP):
        tool_schema = {"type": "object", "properties": {"x": tool_schema}}
    body = {**chat(), "tools": [{"name": "t", "description": "d", "input_schema": tool_schema}]}
    raw = _deep_json(body)
    version = {"anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None, headers=version) as http:
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            response = await http.post(
                path, content=raw, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400
            assert response.json()["error"]["type"] == "invalid_request_error"
        response = await http.post("/v1/messages", json=chat())
        assert response.status_code == 200 and response.json()["type"] == "message"


def _deep_json(value: Any) -> bytes:
    """Encode without recursion (msgspec's encoder has the same depth limit as its decoder)."""
    if isinstance(value, dict):
        return (
            b"{"
            + b",".join(
                msgspec.json.encode(k) + b":" + _deep_json_iter(v) for k, v in value.items()
            )
            + b"}"
        )
    return _deep_json_iter(value)


def _deep_json_iter(value: Any) -> bytes:
    opens: list[bytes] = []
    closes: list[bytes] = []
    while isinstance(value, dict) and set(value) == {"type", "properties"}:
        opens.append(b'{"type":' + msgspec.json.encode(value["type"]) + b',"properties":{"x":')
        closes.append(b"}}")
        value = value["properties"]["x"]
    if isinstance(value, dict):
        inner = _deep_json(value)
    elif isinstance(value, list):
        inner = b"[" + b",".join(_deep_json_iter(v) for v in value) + b"]"
    else:
        inner = msgspec.json.encode(value)
    return b"".join(opens) + inner + b"".join(reversed(closes))


# --- a fake upstream -------------------------------------------------------------------------

_USAGE_START = {"input_tokens": 1000, "output_tokens": 1}


def _sse(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def _stream(deep: str | None) -> bytes:
    """A tool_use answer; ``deep`` puts deep nesting in one place (None: a sound answer)."""
    start: dict[str, Any] = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [],
            "stop_reason": None,
            "usage": _USAGE_START,
        },
    }
    # The tool input past msgspec's own recursion limit (once a RecursionError that killed the
    # process), the message_delta between that and the gateway's limit.
    partial = '{"a": ' + (deep_text(5000) if deep == "tool_input" else "1") + "}"
    events = [
        ("message_start", msgspec.json.encode(start)),
        (
            "content_block_start",
            b'{"type":"content_block_start","index":0,"content_block":'
            b'{"type":"tool_use","id":"toolu_1","name":"t","input":{}}}',
        ),
        *[
            (
                "content_block_delta",
                msgspec.json.encode(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    }
                ),
            )
            for piece in (partial[: len(partial) // 2], partial[len(partial) // 2 :])
        ],
        ("content_block_stop", b'{"type":"content_block_stop","index":0}'),
        (
            "message_delta",
            b'{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}'
            + (b',"junk":' + deep_text().encode() if deep == "message_delta" else b"")
            + b"}",
        ),
        ("message_stop", b'{"type":"message_stop"}'),
    ]
    return b"".join(_sse(name, data) for name, data in events)


def _message(deep: bool) -> bytes:
    return (
        b'{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":'
        b'[{"type":"tool_use","id":"toolu_2","name":"t","input":{"a":'
        + (deep_text().encode() if deep else b"1")
        + b'}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":1000,"output_tokens":9}}'
    )


async def _fake_upstream(requests: list[bytes], stream: trio.SocketStream) -> None:
    """One HTTP/1.1 exchange per connection; the user text picks the answer."""
    async with stream:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += await stream.receive_some()
        requests.append(body)
        request = msgspec.json.decode(body)
        text = request["messages"][0]["content"]
        deep = text if text != "sound" else None
        if request.get("stream"):
            payload, kind = _stream(deep), b"text/event-stream"
        else:
            payload, kind = _message(deep is not None), b"application/json"
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: "
            + kind
            + b"\r\ncontent-length: "
            + str(len(payload)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + payload
        )


async def test_deep_nesting_from_the_upstream_fails_only_its_query(
    nursery: trio.Nursery, config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    requests: list[bytes] = []
    listeners = await nursery.start(
        functools.partial(
            trio.serve_tcp, functools.partial(_fake_upstream, requests), 0, host="127.0.0.1"
        )
    )
    port = listeners[0].socket.getsockname()[1]
    config = msgspec.structs.replace(config, base_url=f"http://127.0.0.1:{port}")
    server: Server = await nursery.start(functools.partial(run_server, config))
    results: dict[str, list[object]] = {}

    async def run(session: str, text: str) -> None:
        async with connect(server, session) as client:
            await client.receive()
            await client.send(type="query", id="q", request=chat(text), max_retries=1)
            results[session] = list(await client.until_terminal("q"))
            await client.send(type="get_cost")
            while not isinstance(frame := await client.receive(), CostFrame):
                pass
            results[session + ":cost"] = [frame]

    async with trio.open_nursery() as queries:
        for where in ("tool_input", "message_delta"):
            queries.start_soon(run, f"deep-{where}", where)
        queries.start_soon(run, "sound", "sound")

    sound = results["sound"]
    assert isinstance(sound[-1], Done) and sound[-1].message["content"][0]["input"] == {"a": 1}
    for where in ("tool_input", "message_delta"):
        frames = results[f"deep-{where}"]
        terminal = [f for f in frames if isinstance(f, (Done, ErrorFrame))]
        assert len(terminal) == 1 and frames[-1] is terminal[0]
        assert isinstance(terminal[0], ErrorFrame) and terminal[0].error.type == "api_error"
        # The stream's events up to the deep one were relayed, then voided; the non-streaming
        # fallback's deep answer failed too.
        assert any(isinstance(f, EventFrame) for f in frames) and any(
            isinstance(f, Tombstone) for f in frames
        )
        retries = [f for f in frames if isinstance(f, RetryFrame)]
        assert retries and all(r.error.type == "api_error" for r in retries)
        assert "deeper than" in terminal[0].error.message
        (cost,) = results[f"deep-{where}:cost"]
        assert isinstance(cost, CostFrame) and cost.cost.total_cost_usd > 0
    streamed = [msgspec.json.decode(r).get("stream") for r in requests]
    # Each deep query: its stream, then the non-streaming fallback twice (max_retries=1).
    assert streamed.count(True) == 3 and streamed.count(None) == 4
