"""HTTP/1.1 server side of one TCP connection: h11 over a trio stream.

The wrapper keeps h11's rules (keep-alive cycles, chunked framing chosen by h11 when no
content-length is given) and adds what the emulator needs on top: a bounded request body,
``100 Continue`` for clients that wait for it, and ``watch_for_eof``, which reads the socket
while a response is being produced so that a client going away is noticed at once, even
when the server is not writing (a stall, a slow first byte).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final, final

import h11
import trio

logger: Final = logging.getLogger("emulator")

# Bytes per receive call: big enough for a typical Messages request in one read.
READ_SIZE: Final = 65536
# The API's own request size limit (docs/reference/wire.md 3.2, 413 request_too_large).
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
# Pipelined bytes the EOF watcher buffers before it stops reading (and stops watching):
# a client that pipelines more than this gets no disconnect detection, not unbounded memory.
MAX_PIPELINED_BYTES: Final = 1024 * 1024

Headers = list[tuple[bytes, bytes]]


class MalformedRequest(Exception):
    """The peer sent something that is not HTTP/1.1; ``status`` is the reply to send."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    """One complete request. ``too_large`` means the body was cut at MAX_BODY_BYTES."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    too_large: bool = False


@final
class HttpConnection:
    """The server side of one HTTP/1.1 connection.

    One task reads requests (``next_request``) and writes responses (the ``head`` /
    ``chunk`` / ``end`` encoders and ``send``); while a response is produced, another task
    may run ``watch_for_eof``. Sending raises ``trio.BrokenResourceError`` when the peer is
    gone. The caller closes the stream.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._conn = h11.Connection(h11.SERVER)

    async def next_request(self) -> Request | None:
        """Read the next request, body included; None when the peer closed cleanly.

        Raises MalformedRequest on bad HTTP and trio.BrokenResourceError on a reset.
        """
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise MalformedRequest(str(exc), exc.error_status_hint) from exc
            if event is h11.NEED_DATA:
                # b"" (EOF) is fed too: h11 turns it into ConnectionClosed or an error.
                self._conn.receive_data(bytes(await self._stream.receive_some(READ_SIZE)))
            elif isinstance(event, h11.Request):
                head = event
                if self._conn.they_are_waiting_for_100_continue:
                    await self.send(
                        self._conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                    )
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    assert head is not None
                    return self._request(head, b"", too_large=True)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return self._request(head, bytes(body))
            else:  # ConnectionClosed, or PAUSED after a request h11 will not reuse
                return None

    @staticmethod
    def _request(head: h11.Request, body: bytes, *, too_large: bool = False) -> Request:
        # Header names arrive lower-cased from h11; for repeated names the last one wins.
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers}
        return Request(
            method=head.method.decode("ascii", "replace"),
            target=head.target.decode("latin-1"),
            headers=headers,
            body=body,
            too_large=too_large,
        )

    def head(self, status: int, headers: Headers) -> bytes:
        """Encode the status line and headers (no content-length: h11 picks chunked)."""
        return self._conn.send(h11.Response(status_code=status, headers=headers)) or b""

    def chunk(self, data: bytes) -> bytes:
        """Encode ``data`` as body bytes (a chunk when the body is chunked)."""
        return self._conn.send(h11.Data(data=data)) or b""

    def end(self) -> bytes:
        """Encode the end of the body (the chunked terminator when chunked)."""
        return self._conn.send(h11.EndOfMessage()) or b""

    async def send(self, data: bytes) -> None:
        """Write ``data``; raises trio.BrokenResourceError if the peer is gone."""
        if data:
            await self._stream.send_all(data)

    async def send_error_and_close(self, status: int, message: str) -> None:
        """Best effort: answer a malformed request with a plain-text error."""
        if self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = message.encode("utf-8", "replace")
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        try:
            data = self.head(status, headers) + self.chunk(body) + self.end()
        except h11.LocalProtocolError:
            return
        await self.send(data)

    def start_next_cycle(self) -> bool:
        """Reset for the next request after a complete exchange; False: close instead."""
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            return True
        return False

    async def watch_for_eof(self) -> None:
        """Return once the peer closed or reset the connection; until then, run.

        Bytes that arrive meanwhile (a pipelined next request) are kept for
        ``next_request``. Cancel this task before the next ``next_request`` call.
        """
        buffered = 0
        while buffered <= MAX_PIPELINED_BYTES:
            try:
                data = await self._stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            buffered += len(data)
            self._conn.receive_data(bytes(data))
        await trio.sleep_forever()
