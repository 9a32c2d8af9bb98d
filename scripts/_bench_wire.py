"""Lean loopback clients for the load generator: HTTP/1.1 with SSE bodies, and WebSocket.

Why not httpx and trio-websocket here: the load generator shares one core with the emulator,
and at a few thousand events per second their per-event work (httpx's chain of async
generators and h11 per read; trio-websocket's reader task, wsproto and a channel hop per
message) made the client side, not the gateway, set the measured first-event time and gaps.
These clients do one ``receive_some`` and a few slices per read. They speak only what the
benchmark needs, over one connection each, to servers we run ourselves:

- ``HttpConnection``: keep-alive ``POST`` with a fixed body; the response is read as a
  ``Content-Length`` body (errors) or a chunked one (SSE streams), and each complete SSE
  event is timed when the read that completed it returns.
- ``WebSocketConnection``: the opening handshake (RFC 6455 section 4.1, no extensions),
  masked text frames out, unmasked frames in (the gateway never fragments; continuation
  frames are joined anyway); a close frame ends the connection with ``Closed``.

The parsers (``ChunkedDecoder``, ``SSECounter``, ``FrameReader``) are pure and tested with
hypothesis in ``tests/scripts/test_bench_wire.py``.
"""

from __future__ import annotations

import base64
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import trio

_CRLF: Final = b"\r\n"
_HEAD_END: Final = b"\r\n\r\n"
_MAX_HEAD: Final = 64 * 1024
_READ: Final = 65536


class WireError(Exception):
    """The server broke the protocol, or closed the connection early."""


class Closed(WireError):
    """The server closed the WebSocket connection (``code`` from its close frame, or 1006)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed ({code} {reason})".strip())
        self.code = code
        self.reason = reason


# --- pure parsers ---------------------------------------------------------------------------


class ChunkedDecoder:
    """Incremental ``Transfer-Encoding: chunked`` decoder (RFC 9112 section 7.1).

    ``feed`` returns the body bytes complete so far; ``done`` is set after the last chunk and
    its (ignored) trailer section. Chunk extensions are ignored.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._left = -1  # bytes left in the current chunk; -1: a size line comes next
        self._trailer = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data
        out: list[bytes] = []
        position = 0
        while not self.done:
            if self._trailer:
                end = buffer.find(_CRLF, position)
                if end < 0:
                    break
                # An empty line ends the trailer section (and the message).
                self.done = end == position
                position = end + 2
            elif self._left < 0:
                end = buffer.find(_CRLF, position)
                if end < 0:
                    break
                size_text = buffer[position:end].split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise WireError(f"bad chunk size line {buffer[position:end]!r}") from None
                position = end + 2
                if size == 0:
                    self._trailer = True
                else:
                    self._left = size
            elif self._left > 0:
                take = buffer[position : position + self._left]
                if not take:
                    break
                out.append(take)
                position += len(take)
                self._left -= len(take)
            else:
                if len(buffer) - position < 2:
                    break
                if buffer[position : position + 2] != _CRLF:
                    raise WireError("chunk data not followed by CRLF")
                position += 2
                self._left = -1
        self._buffer = buffer[position:]
        return b"".join(out)


@dataclass(slots=True)
class SSECounter:
    """Counts the events of an SSE body fed in pieces: events end at a blank line (``\\n\\n``,
    as the API, the emulator and the gateway send them); comment-only blocks (``: ...``) are
    not events. ``last`` is the last event block, ``error`` whether one was ``event: error``."""

    events: int = 0
    last: bytes = b""
    error: bool = False
    _pending: bytes = field(default=b"", repr=False)

    def feed(self, data: bytes) -> int:
        """Take body bytes; return how many events they completed."""
        pending = self._pending + data
        if b"\n\n" not in pending:
            self._pending = pending
            return 0
        *blocks, self._pending = pending.split(b"\n\n")
        completed = 0
        for block in blocks:
            if not block.strip() or all(line.startswith(b":") for line in block.strip().split(b"\n")):
                continue
            completed += 1
            self.last = block
            if block.startswith(b"event: error"):
                self.error = True
        self.events += completed
        return completed


class FrameReader:
    """Incremental reader of server-to-client WebSocket frames (unmasked, RFC 6455 5.2).

    ``feed`` returns the complete messages as ``(opcode, payload)``: text (1), binary (2),
    close (8), ping (9), pong (10); fragments (opcode 0) are joined to their first frame.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        messages: list[tuple[int, bytes]] = []
        position = 0
        size = len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            if second & 0x80:
                raise WireError("a server frame must not be masked")
            length = second & 0x7F
            header = 2
            if length == 126:
                header = 4
                if size - position < header:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
            elif length == 127:
                header = 10
                if size - position < header:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
            end = position + header + length
            if end > size:
                break
            payload = buffer[position + header : end]
            position = end
            opcode = first & 0x0F
            final = bool(first & 0x80)
            if opcode >= 8:  # control frames are never fragmented
                messages.append((opcode, payload))
            elif opcode == 0:
                self._fragments.append(payload)
                if final:
                    messages.append((self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
            elif final:
                messages.append((opcode, payload))
            else:
                self._fragment_opcode = opcode
                self._fragments = [payload]
        self._buffer = buffer[position:]
        return messages


def client_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final client frame, masked with ``mask`` (4 random bytes unless given)."""
    mask = os.urandom(4) if mask is None else mask
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big") if size else b""
    return header + mask + masked


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers of a response head (without the blank line)."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise WireError(f"bad status line {status_line!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


# --- connections ----------------------------------------------------------------------------


async def _read_head(stream: trio.SocketStream, buffer: bytes) -> tuple[bytes, bytes]:
    """Read until the end of a response head; return the head and the bytes after it."""
    while _HEAD_END not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise WireError("response head too large")
        data = await stream.receive_some(_READ)
        if not data:
            raise WireError("connection closed before the response head")
        buffer += data
    head, _, rest = buffer.partition(_HEAD_END)
    return head, rest


@dataclass(slots=True)
class StreamResult:
    """One streamed answer: its status, event times (``perf_counter``), the SSE counter."""

    status: int
    times: list[float]
    sse: SSECounter
    body: bytes = b""


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to ``host:port``, reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._stream: trio.SocketStream | None = None

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def post_stream(self, path: str, body: bytes, headers: dict[str, str]) -> StreamResult:
        """POST ``body``; time each SSE event of a 200 answer (a non-200 one is read whole)."""
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self._host, self._port)
        stream = self._stream
        lines = [f"POST {path} HTTP/1.1", f"host: {self._host}:{self._port}", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head, rest = await _read_head(stream, b"")
        status, response_headers = parse_head(head)
        keep_alive = response_headers.get("connection", "").lower() != "close"
        sse = SSECounter()
        times: list[float] = []
        try:
            if "chunked" in response_headers.get("transfer-encoding", "").lower():
                decoder = ChunkedDecoder()
                data = rest
                while True:
                    completed = sse.feed(decoder.feed(data)) if status == 200 else 0
                    if completed:
                        now = time.perf_counter()
                        times.extend([now] * completed)
                    if decoder.done:
                        break
                    data = await stream.receive_some(_READ)
                    if not data:
                        raise WireError("connection closed mid-body")
                return StreamResult(status, times, sse)
            length = int(response_headers.get("content-length", "0"))
            while len(rest) < length:
                data = await stream.receive_some(_READ)
                if not data:
                    raise WireError("connection closed mid-body")
                rest += data
            return StreamResult(status, times, sse, body=rest[:length])
        except BaseException:
            keep_alive = False
            raise
        finally:
            if not keep_alive:
                await self.aclose()


class WebSocketConnection:
    """One client WebSocket connection (see the module docstring)."""

    def __init__(self, stream: trio.SocketStream, leftover: bytes) -> None:
        self._stream = stream
        self._reader = FrameReader()
        self._queue: deque[tuple[int, bytes]] = deque(self._reader.feed(leftover))
        # When the read that brought the last returned message completed (perf_counter).
        self.read_at = time.perf_counter()

    @classmethod
    async def connect(cls, host: str, port: int, path: str) -> WebSocketConnection:
        stream = await trio.open_tcp_stream(host, port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\nupgrade: websocket\r\n"
                f"connection: Upgrade\r\nsec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n"
            )
            await stream.send_all(request.encode())
            head, rest = await _read_head(stream, b"")
            status, _ = parse_head(head)
            if status != 101:
                raise WireError(f"handshake answered {status}")
        except BaseException:
            await stream.aclose()
            raise
        return cls(stream, rest)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def send_text(self, text: bytes) -> None:
        await self._stream.send_all(client_frame(1, text))

    async def receive(self) -> bytes:
        """The next text or binary message. Raises ``Closed`` when the server closes."""
        while True:
            while self._queue:
                opcode, payload = self._queue.popleft()
                if opcode in (1, 2):
                    return payload
                if opcode == 8:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    raise Closed(code, payload[2:].decode("utf-8", "replace"))
                if opcode == 9:
                    await self._stream.send_all(client_frame(10, payload))
            data = await self._stream.receive_some(_READ)
            self.read_at = time.perf_counter()
            if not data:
                raise Closed(1006)
            self._queue.extend(self._reader.feed(data))
