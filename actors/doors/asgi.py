"""Small typed ASGI plumbing for the HTTP door (served by hypercorn's trio worker).

``request_head`` reads a request's method, path, query and headers; ``read_body`` its body,
up to a limit; ``Exchange`` sends one response, whole or streamed, and remembers its status;
``watch_disconnect`` turns the server's ``http.disconnect`` before the response is complete
into a cancelled scope; ``serve_lifespan`` answers the lifespan protocol. Header names are lower-cased; values are
decoded as latin-1, as HTTP defines them; a repeated header's values are joined with ``,``.

A send after the client went away is a silent no-op in hypercorn: ``watch_disconnect`` is how
a handler learns of it. hypercorn also sends ``http.disconnect`` from inside the app's own
last ``send`` (the response is complete), and then, still in the app's task, either closes
the connection (``Connection: close``) or starts its keep-alive timer: cancelling the handler
then would cut that short and leave the connection open for good, so a disconnect after the
response is complete cancels nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, final

import msgspec
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, HTTPScope

from protocol.errors import ClientGone, SwitchboardError

Headers = Sequence[tuple[bytes, bytes]]

# nginx's name for "the client closed the connection before the response": used in logs and
# metrics for a request whose response was never sent.
CLIENT_CLOSED: Final = 499


class BodyTooLarge(SwitchboardError):
    """The request body is over the limit (declared or sent)."""


class BodyStalled(SwitchboardError):
    """The request body stopped arriving (no part of it for the idle timeout)."""


class RequestHead(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    path: str
    query: str
    headers: dict[str, str]
    # The client's address (the verification page's rate limit); "" when the server gives none.
    client: str = ""


def request_head(scope: HTTPScope) -> RequestHead:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1").strip()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return RequestHead(
        method=scope["method"],
        path=scope["path"],
        query=scope["query_string"].decode("latin-1"),
        headers=headers,
        client=client[0] if (client := scope.get("client")) else "",
    )


async def read_body(
    receive: ASGIReceiveCallable, head: RequestHead, limit: int, *, idle_timeout: float
) -> bytes:
    """The whole request body. A checkpoint.

    Raises:
        BodyTooLarge: ``content-length`` or the bytes received exceed ``limit``.
        ClientGone: the client disconnected first.
        BodyStalled: no part of the body came for ``idle_timeout`` seconds.
    """
    declared = head.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {declared} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    while True:
        event: ASGIReceiveEvent | None = None
        with trio.move_on_after(idle_timeout):
            event = await receive()
        if event is None:
            raise BodyStalled(f"no part of the request body came for {idle_timeout:g} s")
        if event["type"] == "http.disconnect":
            raise ClientGone("client disconnected while sending the request body")
        if event["type"] != "http.request":
            continue
        size += len(event["body"])
        if size > limit:
            raise BodyTooLarge(f"request body is over the {limit}-byte limit")
        chunks.append(event["body"])
        if not event.get("more_body", False):
            return b"".join(chunks)


async def watch_disconnect(
    receive: ASGIReceiveCallable, exchange: Exchange, scope: trio.CancelScope
) -> None:
    """Cancel ``scope`` when the client disconnects before ``exchange`` has sent its whole
    response. Call once the body is read."""
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            if not exchange.complete:
                scope.cancel(reason="client disconnected")
            return


async def serve_lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Acknowledge startup and shutdown: the door has nothing to set up or tear down."""
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@final
class Exchange:
    """One response: sent whole (``respond``) or streamed (``start``, ``write``, ``end``).

    ``status`` is what was sent (``CLIENT_CLOSED`` until then); ``base_headers`` go on every
    response of the exchange; ``complete`` is set as the response's last part is handed to
    the server.
    """

    def __init__(
        self, send: ASGISendCallable, base_headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        self._send = send
        self.base_headers = list(base_headers)
        self.status = CLIENT_CLOSED
        self.started = False
        self.complete = False

    async def respond(
        self, status: int, body: bytes, content_type: bytes, headers: Headers = ()
    ) -> None:
        """Send a whole response with a ``content-length``."""
        await self.start(
            status,
            [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        )
        await self.end(body)

    async def start(self, status: int, headers: Headers) -> None:
        """Send the status line and headers; the body follows with ``write`` and ``end``."""
        assert not self.started, "one response per exchange"
        self.started = True
        self.status = status
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*self.base_headers, *headers],
            }
        )

    async def write(self, chunk: bytes) -> None:
        if chunk:
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self, chunk: bytes = b"") -> None:
        self.complete = True
        await self._send({"type": "http.response.body", "body": chunk, "more_body": False})
