"""The FrontDoor's WebSocket server: trio-websocket's, but failing a connection as RFC 6455 says.

When what a client sent breaks the protocol (a text message that is not UTF-8, RFC 6455
8.1; a frame that breaks the framing rules), wsproto reports it as a ``CloseConnection``
event with the close code the RFC prescribes (1007 for invalid UTF-8, 1002 for a protocol
error). trio-websocket 0.12 then ends the connection without sending that close frame, so
the client sees 1006 and never learns what it did wrong. ``serve_websocket`` here is
trio-websocket's own, with a connection that sends the close frame first (docs/protocol.md 1).

It reaches into trio-websocket 0.12's internals (``_reader_task``, ``_get_request``,
``_handle_close_connection_event``, ``_send``); ``tests/integration/test_security.py``
checks the close code through a raw client, so an upgrade that changes them fails there.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

# The listen backlog of a shared port: trio's own default (the kernel caps it at somaxconn).
LISTEN_BACKLOG: Final = 0xFFFF


class _FailingConnection(WebSocketConnection):
    """A server connection that tells the client why wsproto failed it."""

    async def _handle_close_connection_event(self, event: CloseConnection) -> None:
        # A close the client sent moves wsproto to REMOTE_CLOSING; a parse failure of its
        # bytes leaves the state OPEN: then the close frame is ours to send.
        if self._wsproto.state == ConnectionState.OPEN:
            try:
                await self._send(CloseConnection(code=event.code, reason=event.reason))
            except ConnectionClosed:
                pass
        await super()._handle_close_connection_event(event)


class _Server(WebSocketServer):
    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        # trio-websocket's WebSocketServer._handle_connection, with ``_FailingConnection``.
        async with trio.open_nursery() as nursery:
            connection = _FailingConnection(
                stream,
                WSConnection(ConnectionType.SERVER),
                message_queue_size=self._message_queue_size,
                max_message_size=self._max_message_size,
                receive_buffer_size=self._receive_buffer_size,
            )
            nursery.start_soon(connection._reader_task)
            with trio.move_on_after(self._connect_timeout) as connect_scope:
                request = await connection._get_request()
            if connect_scope.cancelled_caught:
                nursery.cancel_scope.cancel()
                await stream.aclose()
                return
            try:
                await self._handler(request)
            finally:
                with trio.move_on_after(self._disconnect_timeout):
                    # aclose() shuts the reader task down even when cancelled.
                    await connection.aclose()


async def serve_websocket(
    handler: Callable[[WebSocketRequest], Awaitable[None]],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    reuse_port: bool = False,
    **options: Any,
) -> NoReturn:
    """``trio_websocket.serve_websocket`` without TLS, whose connections send the close frame
    of a protocol failure. ``options``: ``WebSocketServer``'s keyword arguments. Startable:
    ``started()`` gets the server once it accepts connections. ``reuse_port``: the port is
    shared with other processes (SO_REUSEPORT: ``serve --workers N``, README.md "Deployment")."""
    if reuse_port:
        listeners = await _reuse_port_listeners(port, host)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host)
    server = _Server(handler, listeners, **options)
    await server.run(task_status=task_status)


async def _reuse_port_listeners(port: int, host: str) -> list[trio.SocketListener]:
    """A listener on ``reuse_port_socket``: the kernel spreads the connections over every
    process listening on the port."""
    sock = trio.socket.from_stdlib_socket(reuse_port_socket(host, port))
    sock.listen(LISTEN_BACKLOG)
    return [trio.SocketListener(sock)]


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT, not listening yet: every
    process that binds the port so shares it (``serve --workers N``, README.md "Deployment")."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
