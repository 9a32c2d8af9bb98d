"""Upstream streams broken after their 200, found by the fuzz suite (tests/fuzz), as examples
through both doors: an event whose data is not JSON, a stream without ``message_stop``; and
an upstream redirect, which the HTTP door once passed on to its client.

Each ends its attempt as a malformed stream (``api_error``), never relayed as it came: the
attempt is voided (``tombstone``), charged, and retried as README "Retry behaviour" says (the
non-streaming fallback here, which answers soundly). The upstream is a small fake on loopback
that writes raw bytes (the emulator only writes well-formed streams); the user text picks the
answer.
"""

from __future__ import annotations

import functools
from typing import Final

import httpx
import msgspec
import pytest
import trio
import trio.testing
from harness import API_VERSION, chat, connect

from actors.config.settings import Config
from actors.server import Server, run_server
from protocol.frames import CostFrame, Done, ErrorFrame, EventFrame, RetryFrame, Tombstone

MODEL: Final = "claude-sonnet-4-6"


def _sse(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


SOUND: Final = [
    _sse("message_start", b'{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
         b'"model":"claude-sonnet-4-6","content":[],"stop_reason":null,"stop_sequence":null,'
         b'"usage":{"input_tokens":1000,"output_tokens":1}}}'),
    _sse("content_block_start", b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'),
    _sse("content_block_delta", b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}'),
    _sse("content_block_stop", b'{"type":"content_block_stop","index":0}'),
    _sse("message_delta", b'{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
         b'"usage":{"output_tokens":7}}'),
    _sse("message_stop", b'{"type":"message_stop"}'),
]  # fmt: skip
# Each broken stream: the sound one with one change (the user text names it).
BROKEN: Final = {
    # Data lines that are no JSON at all, in an unnamed event (once relayed raw: the
    # WebSocket client got a frame that is not JSON).
    "not_json": [*SOUND[:3], b"data: x\r\ndata: x\r\n\r\n", *SOUND[3:]],
    # Events the gateway does not read otherwise: still checked.
    "ping_not_json": [*SOUND[:3], _sse("ping", b"{not json"), *SOUND[3:]],
    "stop_not_json": [*SOUND[:5], _sse("message_stop", b"message_stop")],
    # The end lost: a message_delta with its stop_reason, then nothing (once taken as a
    # finished message: the HTTP client got the cost comment but never message_stop).
    "no_stop": SOUND[:5],
}
MESSAGE: Final = (
    b'{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":'
    b'[{"type":"text","text":"whole"}],"stop_reason":"end_turn","stop_sequence":null,'
    b'"usage":{"input_tokens":1000,"output_tokens":9}}'
)


async def _fake_upstream(requests: list[bytes], stream: trio.SocketStream) -> None:
    """One HTTP/1.1 exchange per connection."""
    async with stream:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += await stream.receive_some()
        requests.append(body)
        request = msgspec.json.decode(body)
        if request["messages"][0]["content"] == "redirect":
            await stream.send_all(
                b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/v1/messages\r\n"
                b"content-type: text/html\r\nconnection: close\r\n\r\n<html>moved</html>"
            )
            return
        if request.get("stream"):
            payload, kind = b"".join(BROKEN[request["messages"][0]["content"]]), b"text/event-stream"
        else:
            payload, kind = MESSAGE, b"application/json"
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: " + kind + b"\r\nconnection: close\r\n\r\n" + payload
        )


async def _serve(nursery: trio.Nursery, config: Config) -> tuple[Server, list[bytes]]:
    requests: list[bytes] = []
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, functools.partial(_fake_upstream, requests), 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    config = msgspec.structs.replace(config, base_url=f"http://127.0.0.1:{port}", http_port=0)
    return await nursery.start(functools.partial(run_server, config)), requests


@pytest.mark.parametrize("broken", sorted(BROKEN))
async def test_a_broken_stream_is_voided_charged_and_retried_through_the_websocket_door(
    nursery: trio.Nursery, config: Config, autojump_clock: trio.testing.MockClock, broken: str
) -> None:
    server, requests = await _serve(nursery, config)
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat(broken), max_retries=1)
        # Every frame decoded (harness.Client.receive): none carries the upstream's non-JSON.
        frames = await client.until_terminal("q")
        await client.send(type="get_cost")
        while not isinstance(cost := await client.receive(), CostFrame):
            pass
    events = [msgspec.json.decode(f.event) for f in frames if isinstance(f, EventFrame)]
    assert all(isinstance(event, dict) and "type" in event for event in events)
    assert len([f for f in frames if isinstance(f, Tombstone)]) == 1
    (retry,) = [f for f in frames if isinstance(f, RetryFrame)]
    assert retry.error.type == "api_error"
    if broken == "no_stop":
        assert "ended before message_stop" in retry.error.message
    done = frames[-1]
    assert isinstance(done, Done) and done.message["content"] == [{"type": "text", "text": "whole"}]
    assert [e["type"] for e in events if e.get("type") == "message_stop"] == ["message_stop"]  # the fallback's
    # The broken attempt was charged too (its 1000 input tokens), not only the fallback.
    assert cost.cost.model_usage[MODEL].input_tokens == 2000
    assert [msgspec.json.decode(r).get("stream") for r in requests] == [True, None]


@pytest.mark.parametrize("broken", sorted(BROKEN))
async def test_a_broken_stream_ends_the_http_doors_stream_with_an_error_or_its_retry(
    nursery: trio.Nursery, config: Config, autojump_clock: trio.testing.MockClock, broken: str
) -> None:
    server, requests = await _serve(nursery, config)
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None, headers=API_VERSION) as http:
        # No retries: the broken attempt, its output begun, ends the stream with an error event.
        response = await http.post(
            "/v1/messages", json={**chat(broken), "stream": True}, headers={"x-stainless-retry-count": "0"}
        )
        # The JSON answer is assembled from the stream: broken, then the gateway's retry.
        whole = await http.post("/v1/messages", json=chat(broken))
    assert response.status_code == 200
    body = response.content
    assert b"event: error" in body and b"api_error" in body
    assert b"switchboard cost_usd" not in body
    for line in body.split(b"\n"):
        if line.startswith(b"data: "):
            assert isinstance(msgspec.json.decode(line[6:]), dict), line
    assert whole.status_code == 200 and whole.json()["content"] == [{"type": "text", "text": "whole"}]
    assert [msgspec.json.decode(r).get("stream") for r in requests] == [True, True, None]


async def test_without_retries_the_websocket_query_ends_with_the_malformed_stream(
    nursery: trio.Nursery, config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    server, _ = await _serve(nursery, config)
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat("no_stop"), max_retries=0)
        frames = await client.until_terminal("q")
    end = frames[-1]
    assert isinstance(end, ErrorFrame) and end.error.type == "api_error"
    assert "message_stop" in end.error.message


async def test_an_upstream_redirect_is_a_502_without_its_location(
    nursery: trio.Nursery, config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """An SDK follows redirects, resending the body and its x-api-key: the door must never
    answer with the upstream's redirect (docs/protocol.md 2)."""
    server, _ = await _serve(nursery, config)
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None, headers=API_VERSION) as http:
        for stream in (False, True):
            for mode in ({"x-stainless-retry-count": "0"}, {"x-switchboard-retries": "gateway"}):
                response = await http.post("/v1/messages", json={**chat("redirect"), "stream": stream}, headers=mode)
                assert response.status_code == 502, (stream, mode)
                assert "location" not in response.headers
                assert response.json()["error"]["type"] == "api_error"
