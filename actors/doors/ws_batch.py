"""Several WebSocket text messages in one socket write (the FrontDoor's writer uses it).

trio-websocket sends one message per ``send_message`` call: one lock round, one wsproto
serialisation, one ``send`` system call per event. Profiling the gateway at 10 concurrent
streams put a third of its CPU there (scripts/bench.py, py-spy). This helper frames a batch
with ``protocol.wsframe`` and writes it under the connection's own send lock, so it never
interleaves with the library's control frames (pongs, close).

Over a plain TCP connection (``trio.SocketStream``) the batch is first written with one
``os.write`` on the socket's descriptor: trio's ``send_all`` ends every send that completes
at once with a scheduler round (a yield, then one more pass of the run loop and its
``epoll_wait``), and the writer already yields at its next ``receive``. Whatever the socket
does not take at once (its buffer is full, an error) goes through ``send_all``, which waits,
and reports errors, as before.

``abort`` drops a connection at once, without a close frame: the way out after a write was
cancelled mid-frame (a slow reader that did not resume reading within the grace after its
cut-off), since no close frame can follow half a frame. The client sees code 1006; a slow
reader whose last write completes gets the close frame 4408 instead (``front_door``).

It relies on three private attributes of trio-websocket's ``WebSocketConnection``
(``_stream``, ``_stream_lock``, ``_close_reason``) and its ``_abort_web_socket``, pinned by
the version range in pyproject.toml; ``tests/actors/test_ws_batch.py`` checks them, so an
upgrade that moves them fails a test instead of the door.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from protocol.wsframe import text_frame


async def send_text_batch(
    ws: WebSocketConnection, payloads: list[bytes], on_wait: Callable[[], None] | None = None
) -> None:
    """Send each payload as one text message, all in one write. A checkpoint only when the
    socket does not take the whole batch at once (see the module docstring); ``on_wait`` is
    called just before the write waits (for the connection's lock or for the socket), so a
    caller times only the writes that do wait.

    Raises:
        ConnectionClosed: the connection is closed or closing (as ``send_message`` does).
    """
    if ws._close_reason is not None:
        raise ConnectionClosed(ws._close_reason)
    data = b"".join([text_frame(payload) for payload in payloads])
    lock = ws._stream_lock
    # Uncontended (the usual case: only pongs and the close frame share it), take the lock
    # without the scheduler round ``async with lock`` costs; the write is the checkpoint.
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        if on_wait is not None:
            on_wait()
        await lock.acquire()
    try:
        written = _write_now(ws._stream, data)
        if written < len(data):
            if on_wait is not None:
                on_wait()
            await ws._stream.send_all(memoryview(data)[written:])
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await ws._abort_web_socket()
        raise ConnectionClosed(ws._close_reason) from None
    finally:
        lock.release()


def _write_now(stream: trio.abc.Stream, data: bytes) -> int:
    """Write to a plain TCP stream's socket what it takes now, without a scheduler round; the
    bytes written (0 for any other stream, a full buffer or an error: ``send_all`` then
    waits, or raises as trio does)."""
    if type(stream) is not trio.SocketStream:
        return 0
    try:
        return os.write(stream.socket.fileno(), data)
    except OSError:
        return 0


async def abort(ws: WebSocketConnection) -> None:
    """Close the TCP connection now, without a closing handshake. A checkpoint."""
    await trio.aclose_forcefully(ws._stream)
    await ws._abort_web_socket()
