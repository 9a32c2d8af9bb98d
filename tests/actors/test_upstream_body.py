"""body_chunks: the relay's upstream body read below httpx's client layer (actors/upstream/client.py).

Against a loopback HTTP/1.1 server the tests check that the lean reader is the one used,
that it gives the body's bytes exactly, that the connection goes back to the pool after a
complete body and is dropped after a cut one, and that its errors are the httpx exceptions
``failure_from_exception`` maps. The private attributes of httpx and httpcore it relies on
are checked by every test that takes the lean path: an upgrade that moves them fails here.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio.testing

from actors.upstream.client import UpstreamClient, _H11Body, body_chunks, failure_from_exception

Handler = Callable[[trio.SocketStream], Awaitable[None]]
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
CHUNKED = HEAD + b"transfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_request(stream: trio.SocketStream) -> bool:
    """Read one request head and its content-length body; False at the connection's end."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return False
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")),
        0,
    )
    while len(rest) < length:
        rest += await stream.receive_some(65536)
    return True


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback server running ``handler`` per connection; yields its URL and a list with
    one entry per connection accepted."""
    connections: list[int] = []

    async def serve(stream: trio.SocketStream) -> None:
        connections.append(1)
        await handler(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1/messages", connections
        nursery.cancel_scope.cancel()


def client(read_timeout: float = 5.0) -> UpstreamClient:
    return UpstreamClient(
        tls=httpx.create_ssl_context(),
        timeout=httpx.Timeout(5.0, read=read_timeout),
        limits=httpx.Limits(max_connections=1),
    )


async def read_all(upstream: UpstreamClient, url: str) -> tuple[list[bytes], bool]:
    """The body's chunks, and whether the lean reader read them."""
    async with upstream.stream("POST", url, content=b"{}", headers={"content-type": "application/json"}) as response:
        chunks = body_chunks(response)
        return [piece async for piece in chunks], isinstance(chunks, _H11Body)


async def events_then_end(stream: trio.SocketStream) -> None:
    """Two requests on one connection: each answered with three chunks, one write each."""
    while await read_request(stream):
        await stream.send_all(CHUNKED)
        for piece in (b"event: a\ndata: {}\n\n", b"event: b\n", b"data: {}\n\n"):
            await stream.send_all(chunk(piece))
        await stream.send_all(b"0\r\n\r\n")


async def test_the_lean_reader_gives_the_body_exactly_and_keeps_the_connection() -> None:
    upstream = client()
    async with server(events_then_end) as (url, connections):
        first, lean = await read_all(upstream, url)
        second, _ = await read_all(upstream, url)
    await upstream.aclose()
    assert lean
    assert b"".join(first) == b"".join(second) == b"event: a\ndata: {}\n\nevent: b\ndata: {}\n\n"
    assert all(first)
    assert connections == [1]


async def test_chunks_already_received_come_as_one() -> None:
    async def all_at_once(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(CHUNKED + chunk(b"x" * 10) + chunk(b"y" * 10) + b"0\r\n\r\n")

    upstream = client()
    async with server(all_at_once) as (url, _):
        chunks, lean = await read_all(upstream, url)
    await upstream.aclose()
    assert lean
    assert chunks == [b"x" * 10 + b"y" * 10]


async def test_a_content_length_body_is_read_to_its_length() -> None:
    async def sized(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(HEAD + b"content-length: 5\r\n\r\nhello")

    upstream = client()
    async with server(sized) as (url, _):
        chunks, lean = await read_all(upstream, url)
    await upstream.aclose()
    assert lean
    assert b"".join(chunks) == b"hello"


async def test_a_body_cut_short_is_a_stale_connection_failure_and_the_connection_is_dropped() -> None:
    async def cut(stream: trio.SocketStream) -> None:
        if await read_request(stream):
            await stream.send_all(CHUNKED + chunk(b"event: a\n"))
            await stream.aclose()

    upstream = client()
    async with server(cut) as (url, connections):
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await read_all(upstream, url)
        with pytest.raises(httpx.RemoteProtocolError):
            await read_all(upstream, url)
    await upstream.aclose()
    failure = failure_from_exception(caught.value, mid_stream=True)
    assert failure is not None and failure.kind == "connection" and failure.stale
    assert connections == [1, 1]


async def test_a_silent_upstream_is_a_read_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(CHUNKED + chunk(b"event: a\n"))
        await trio.sleep_forever()

    upstream = client(read_timeout=30.0)
    async with server(silent) as (url, _):
        with pytest.raises(httpx.ReadTimeout) as caught:
            await read_all(upstream, url)
    await upstream.aclose()
    failure = failure_from_exception(caught.value, mid_stream=True)
    assert failure is not None and failure.kind == "timeout"


async def test_an_encoded_body_and_a_mock_transport_are_read_through_httpx() -> None:
    async def gzipped(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(HEAD + b"content-encoding: identity, br\r\ncontent-length: 0\r\n\r\n")

    upstream = client()
    async with server(gzipped) as (url, _):
        async with upstream.stream("POST", url, content=b"{}", headers={}) as response:
            assert not isinstance(body_chunks(response), _H11Body)
    await upstream.aclose()
    mock = UpstreamClient(
        tls=httpx.create_ssl_context(),
        timeout=httpx.Timeout(5.0),
        limits=httpx.Limits(),
        transport=httpx.MockTransport(lambda request: httpx.Response(200, content=b"event: a\ndata: {}\n\n")),
    )
    async with mock.stream("POST", "http://upstream.test/v1/messages", headers={}) as response:
        chunks = body_chunks(response)
        assert not isinstance(chunks, _H11Body)
        assert b"".join([piece async for piece in chunks]) == b"event: a\ndata: {}\n\n"
