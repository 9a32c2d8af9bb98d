"""The load generator's lean clients: their parsers under any split, and each against the real
server it measures (the emulator, the gateway's WebSocket door)."""

from __future__ import annotations

import msgspec
import trio
from _bench_wire import (
    ChunkedDecoder,
    Closed,
    FrameReader,
    HttpConnection,
    SSECounter,
    WebSocketConnection,
    client_frame,
)
from hypothesis import given
from hypothesis import strategies as st

from actors.server import Server
from emulator import Emulator
from protocol.wsframe import text_frame

pieces = st.lists(st.binary(min_size=1, max_size=300), max_size=8)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(pieces, st.lists(st.integers(min_value=0), max_size=12), st.booleans())
def test_chunked_bodies_decode_under_any_split(body: list[bytes], cuts: list[int], trailer: bool) -> None:
    wire = b"".join(f"{len(p):x}{';ext=1' if i % 2 else ''}\r\n".encode() + p + b"\r\n" for i, p in enumerate(body))
    wire += b"0\r\n" + (b"x-trailer: 1\r\n" if trailer else b"") + b"\r\n"
    decoder = ChunkedDecoder()
    out = b"".join(decoder.feed(part) for part in split(wire, cuts))
    assert out == b"".join(body) and decoder.done


@given(
    st.lists(st.one_of(st.binary(max_size=200), st.binary(min_size=126, max_size=70_000)), max_size=5),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_server_frames_read_under_any_split(payloads: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(text_frame(p) for p in payloads) + bytes((0x88, 2)) + (4408).to_bytes(2, "big")
    reader = FrameReader()
    messages = [m for part in split(wire, cuts) for m in reader.feed(part)]
    assert messages == [(1, p) for p in payloads] + [(8, (4408).to_bytes(2, "big"))]


def test_fragments_are_joined() -> None:
    wire = bytes((0x01, 3)) + b"abc" + bytes((0x89, 0)) + bytes((0x80, 2)) + b"de"
    assert FrameReader().feed(wire) == [(9, b""), (1, b"abcde")]


@given(st.binary(max_size=70_000), st.binary(min_size=4, max_size=4))
def test_client_frames_are_masked(payload: bytes, mask: bytes) -> None:
    frame = client_frame(1, payload, mask)
    assert frame[0] == 0x81 and frame[1] & 0x80
    header = {126: 4, 127: 10}.get(frame[1] & 0x7F, 2)
    assert frame[header : header + 4] == mask
    masked = frame[header + 4 :]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(masked)) == payload


def test_sse_counting_skips_comments_and_notices_errors() -> None:
    counter = SSECounter()
    assert counter.feed(b"event: message_start\ndata: {}\n\n: keep-alive\n\nevent: ping\nda") == 1
    assert counter.feed(b"ta: {}\n\nevent: error\ndata: {}\n\n") == 2
    assert counter.events == 3 and counter.error and counter.last.startswith(b"event: error")


async def test_http_connection_streams_answers_and_reads_an_error_body(nursery: trio.Nursery) -> None:
    emulator = Emulator(api_keys=frozenset({"sk-ant-wire"}))
    await nursery.start(emulator.run)
    host, _, port = emulator_url(emulator).removeprefix("http://").rpartition(":")
    body = msgspec.json.encode(
        {"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": True,
         "messages": [{"role": "user", "content": "<<emulator:ok:deltas=7>> hi"}]}
    )
    headers = {"x-api-key": "sk-ant-wire", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    connection = HttpConnection(host, int(port))
    try:
        answers = [await connection.post_stream("/v1/messages", body, headers) for _ in range(2)]
        refused = await connection.post_stream("/v1/messages", body, {"content-type": "application/json"})
    finally:
        await connection.aclose()
    for answer in answers:
        assert answer.status == 200 and answer.sse.events == len(answer.times) == 13
        assert answer.sse.last.startswith(b"event: message_stop")
    assert refused.status in (400, 401) and b"error" in refused.body and not refused.times
    assert [r.status for r in emulator.requests] == [200, 200, refused.status]


def emulator_url(emulator: Emulator) -> str:
    assert emulator.url is not None
    return emulator.url


async def test_websocket_connection_runs_a_query_and_sees_the_close_code(server: Server) -> None:
    host, _, port = server.ws_url.removeprefix("ws://").rpartition(":")
    ws = await WebSocketConnection.connect(host, int(port), "/v1/sessions/wire")
    try:
        assert msgspec.json.decode(await ws.receive())["type"] == "ready"
        query = {"type": "query", "id": "q", "request": {
            "model": "claude-sonnet-4-6", "max_tokens": 50,
            "messages": [{"role": "user", "content": "<<emulator:ok:deltas=3>> hi"}]}}
        await ws.send_text(msgspec.json.encode(query))
        kinds: list[str] = []
        while not kinds or kinds[-1] != "done":
            kinds.append(msgspec.json.decode(await ws.receive())["type"])
        assert kinds.count("event") == 9
        # A second connection to the session takes it over: this one is closed with 4409.
        other = await WebSocketConnection.connect(host, int(port), "/v1/sessions/wire")
        try:
            closed: Closed | None = None
            with trio.fail_after(5):
                try:
                    while True:
                        await ws.receive()
                except Closed as exc:
                    closed = exc
            assert closed is not None and closed.code == 4409
        finally:
            await other.aclose()
    finally:
        await ws.aclose()
