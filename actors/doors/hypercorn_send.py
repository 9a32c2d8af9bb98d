"""The HTTP door's socket writes with one scheduler round instead of hypercorn's two.

Hypercorn's trio server writes every chunk of a response (``TCPServer.protocol_send``) under
``async with send_lock`` and through ``SocketStream.send_all``: each ends with a checkpoint,
so every relayed SSE event costs the HTTP door two more passes of trio's run loop (an
``epoll_wait`` and a task step each; strace of ``scripts/bench.py --paths http`` at one
paced stream: 8 system calls per event, 4 of them ``epoll_wait``).

``install_direct_writes`` wraps ``protocol_send`` once: a chunk for a plain TCP connection
whose lock is free is first written with one ``os.write`` on the socket's descriptor (no
await between the lock check and the write, so it never interleaves with a send in
progress), then the task yields once, as after hypercorn's own write: what hypercorn does
next (closing the connection after an answer whose upload it did not read, say) still comes
after every other task had its turn, as before. Only what the socket does not take (full
buffer, an error) goes through hypercorn's own path, which waits, shields and reports
errors as before. TLS connections and every other event take hypercorn's path unchanged.
It relies on ``TCPServer``'s ``stream`` and ``send_lock``
attributes, pinned by the version range in pyproject.toml and checked by
``tests/actors/test_hypercorn_send.py``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from hypercorn.events import Event, RawData
from hypercorn.trio.tcp_server import TCPServer

_MARK: Final = "_switchboard_direct_write"


def install_direct_writes() -> None:
    """Wrap ``TCPServer.protocol_send`` (once; later calls do nothing)."""
    original: Callable[[TCPServer, Event], Awaitable[None]] = TCPServer.protocol_send
    if getattr(original, _MARK, False):
        return

    async def protocol_send(self: TCPServer, event: Event) -> None:
        if isinstance(event, RawData):
            written = _write_now(self, event.data)
            if written == len(event.data):
                # The one scheduler round kept, as after hypercorn's own write: what follows
                # (a close after an answer, say) comes after a turn for everyone else, in
                # the order hypercorn's tests and clients see.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            if written:
                event = RawData(data=event.data[written:], address=event.address)
        await original(self, event)

    setattr(protocol_send, _MARK, True)
    protocol_send.__wrapped__ = original  # type: ignore[attr-defined]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]


def _write_now(server: Any, data: bytes) -> int:
    """The bytes of ``data`` a free, plain TCP connection's socket took at once (else 0)."""
    stream = server.stream
    lock: trio.Lock = server.send_lock
    if not data or type(stream) is not trio.SocketStream or lock.locked():
        return 0
    try:
        return os.write(stream.socket.fileno(), data)
    except OSError:
        return 0
