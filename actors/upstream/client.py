"""The httpx boundary: the upstream client, and the one place that maps transport errors and
error responses.

``UpstreamClient`` sends the gateway's requests through httpx's transport API
(``AsyncHTTPTransport.handle_async_request``: httpcore's connection pool, h11, TLS) rather
than through ``httpx.AsyncClient``. Per request the client layer merges URLs and default
headers, runs auth and redirect flows and copies each response's cookies into a jar (through
``urllib.request``): about 145 us of CPU per request (``scripts/bench.py``: 1.68 -> 1.31 ms per
56-event request through the WebSocket door), and the gateway needs none of it. Its requests
are complete (``base_headers`` plus the credential), it follows no redirects, and, like the
reference client, it keeps no cookies. The proxy environment (``HTTPS_PROXY``, ``HTTP_PROXY``,
``ALL_PROXY``, ``NO_PROXY``; ``actors.config.settings.environment_proxies``) is honoured per
upstream host.

``failure_from_exception`` turns an httpx (or trio) exception into a ``Failure``;
``failure_from_response`` turns a non-2xx response and its body into one. Nothing else in
the gateway inspects httpx exception types.

A password in a configured URL never reaches a log: the transport API sends no userinfo
and logs no URL (httpcore's debug lines name the host and port only), httpx's proxy
support moves a proxy's userinfo into ``Proxy-Authorization``, and no request of the
gateway goes through ``httpx.AsyncClient`` (whose ``HTTP Request: GET URL`` line would show
it whole). ``without_userinfo`` strips it where a URL is shown (a ``Lease``'s ``repr``).

``body_chunks`` reads a streamed response's body for the relay's hot path. Through httpx's
``aiter_bytes`` every chunk climbs six async generators (httpx's ``aiter_bytes``,
``aiter_raw`` and response stream, httpcore's pool stream, connection stream and body
reader) and enters three context managers (httpx's and httpcore's exception mapping, a
``trio.fail_after`` per read). Over an HTTP/1.1 connection of httpcore's pool on trio,
without a content encoding (the gateway asks for none), ``body_chunks`` drives the
connection's h11 parser and reads its socket stream itself: one coroutine per chunk, the
read timeout a plain cancel scope, and the chunks h11 already holds joined into one. Its
errors are the httpx exceptions httpcore's would have become (``ReadTimeout``,
``ReadError``, ``RemoteProtocolError``), so ``failure_from_exception`` stays the one
mapping. Closing the response (``stream``'s exit) releases or drops the connection as
before: httpcore decides from the same h11 state. Any other response (HTTP/2, a test's
``MockTransport``, a content encoding) is read through ``aiter_bytes``. It relies on private
attributes of httpx and httpcore, pinned by the version ranges in pyproject.toml and checked
by ``tests/actors/test_upstream_body.py``, so an upgrade that moves them fails a test and,
at run time, falls back to ``aiter_bytes`` instead of breaking the relay.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import h11
import httpx
import trio
from httpcore._async.connection_pool import PoolByteStream
from httpcore._async.http11 import AsyncHTTP11Connection, HTTP11ConnectionByteStream
from httpcore._backends.trio import TrioStream
from httpx._transports.default import AsyncResponseStream

from protocol.retry import Failure
from protocol.wire import ERROR_TYPE_OF_STATUS, parse_error_body


def failure_from_exception(exc: BaseException, *, mid_stream: bool = False) -> Failure | None:
    """The Failure for a transport error, or None when ``exc`` is not one (re-raise it).

    ``mid_stream``: it happened while reading a 200's body. A read/write error or a peer that
    closed mid-response marks the connection ``stale`` (reset or broken, reference 1.3).
    """
    if isinstance(exc, httpx.TimeoutException):
        return Failure(
            kind="timeout",
            error_type="timeout_error",
            message=f"upstream timed out ({type(exc).__name__})",
            mid_stream=mid_stream,
        )
    if isinstance(exc, httpx.TransportError):
        return Failure(
            kind="connection",
            error_type="connection_error",
            message=f"upstream connection failed ({type(exc).__name__}: {exc})",
            mid_stream=mid_stream,
            stale=isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError),
        )
    return None


def failure_from_response(response: httpx.Response, body: bytes) -> Failure:
    """The Failure for a non-2xx response (its body already read)."""
    status = response.status_code
    headers = response.headers
    error = parse_error_body(body)
    if error is not None:
        error_type, message = error.type, error.message
    else:
        # No API envelope (a proxy, a load balancer): the type the status stands for.
        error_type = ERROR_TYPE_OF_STATUS.get(status, "api_error")
        message = body[:500].decode("utf-8", "replace") or f"upstream answered {status}"
    return Failure(
        kind="status",
        error_type=error_type,
        message=message,
        status=status,
        request_id=headers.get("request-id"),
        retry_after=headers.get("retry-after"),
        retry_after_ms=headers.get("retry-after-ms"),
        should_retry=headers.get("x-should-retry"),
        ratelimit_reset=headers.get("anthropic-ratelimit-unified-reset"),
        overage_disabled_reason=headers.get("anthropic-ratelimit-unified-overage-disabled-reason"),
    )


def without_userinfo(url: str) -> str:
    """``url`` without its ``user:password@`` part (the Messages requests send none either)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def bypasses_proxy(host: str, port: int | None, no_proxy: tuple[str, ...]) -> bool:
    """Whether ``NO_PROXY`` exempts ``host``: ``*``, the host itself, a parent domain
    (``example.com`` or ``.example.com`` covers ``api.example.com``), or ``host:port``."""
    host = host.lower().strip("[]")
    for entry in no_proxy:
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and (not entry_port.isdigit() or int(entry_port) != port):
            continue
        name = name.lstrip(".").strip("[]")
        if host == name or host.endswith("." + name):
            return True
    return False


# What one read asks of the socket (httpcore's own ``READ_NUM_BYTES``).
_READ_BYTES: Final = 64 * 1024


class _H11Body:
    """The body of an HTTP/1.1 response of httpcore's pool, read below httpx (see the module
    docstring): an async iterator of the body's chunks, the chunks h11 holds joined."""

    __slots__ = ("_done", "_h11", "_read_timeout", "_stream")

    def __init__(self, connection: AsyncHTTP11Connection, stream: trio.abc.Stream, read_timeout: float) -> None:
        self._h11 = connection._h11_state
        self._stream = stream
        self._read_timeout = read_timeout
        self._done = False

    def __aiter__(self) -> _H11Body:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        parser = self._h11
        pieces: list[bytes] = []
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if type(event) is h11.Data:
                pieces.append(bytes(event.data))
            elif event is h11.NEED_DATA:
                if pieces:
                    break
                parser.receive_data(await self._receive())
            else:
                # EndOfMessage (or PAUSED, which a response body never reaches): the end.
                self._done = True
                if not pieces:
                    raise StopAsyncIteration
                break
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def _receive(self) -> bytes:
        """The socket's next bytes (b"" at its end), bounded by the read timeout."""
        try:
            if math.isinf(self._read_timeout):
                return bytes(await self._stream.receive_some(_READ_BYTES))
            with trio.CancelScope(deadline=trio.current_time() + self._read_timeout) as scope:
                return bytes(await self._stream.receive_some(_READ_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        # Only reached when the deadline cancelled the read.
        assert scope.cancelled_caught
        raise httpx.ReadTimeout("timed out")


def body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body of a streamed ``response`` (from ``UpstreamClient.stream``), chunk by chunk;
    read below httpx's client layer where it can be (see the module docstring)."""
    fast = _h11_body(response)
    return fast if fast is not None else response.aiter_bytes()


def _h11_body(response: httpx.Response) -> _H11Body | None:
    """The lean reader for ``response``, or None when it is not one it reads."""
    if response.headers.get("content-encoding", "identity").lower() != "identity":
        return None
    outer = response.stream
    if type(outer) is not AsyncResponseStream:
        return None
    pooled = getattr(outer, "_httpcore_stream", None)
    if type(pooled) is not PoolByteStream or pooled._closed:
        return None
    inner = getattr(pooled, "_stream", None)
    if type(inner) is not HTTP11ConnectionByteStream or inner._closed:
        return None
    connection = getattr(inner, "_connection", None)
    if type(connection) is not AsyncHTTP11Connection:
        return None
    network = getattr(connection, "_network_stream", None)
    stream = getattr(network, "_stream", None) if type(network) is TrioStream else None
    if not isinstance(stream, trio.abc.Stream) or not isinstance(connection._h11_state, h11.Connection):
        return None
    timeouts = response.request.extensions.get("timeout", {})
    read_timeout = timeouts.get("read") if isinstance(timeouts, dict) else None
    return _H11Body(connection, stream, math.inf if read_timeout is None else float(read_timeout))


class UpstreamClient:
    """Sends requests upstream through httpx's transport API (see the module docstring).

    One connection pool (``limits``) for direct requests and one per proxy URL in use;
    ``proxies`` maps a scheme to its proxy URL, unless ``no_proxy`` exempts the host
    (``Config.proxies``, ``Config.no_proxy``). ``timeout`` applies to every request.
    ``transport`` replaces them all (tests).
    """

    def __init__(
        self,
        *,
        tls: ssl.SSLContext,
        timeout: httpx.Timeout,
        limits: httpx.Limits,
        proxies: Mapping[str, str] | None = None,
        no_proxy: tuple[str, ...] = (),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._tls = tls
        self._limits = limits
        self._timeout = timeout.as_dict()
        self._proxies = dict(proxies or {}) if transport is None else {}
        self._no_proxy = no_proxy
        self._direct = transport or httpx.AsyncHTTPTransport(verify=tls, limits=limits)
        self._via_proxy: dict[str, httpx.AsyncBaseTransport] = {}
        # (scheme, host, port) -> the transport for it: the proxy decision, made once.
        self._routes: dict[tuple[str, str, int | None], httpx.AsyncBaseTransport] = {}

    @property
    def keep_alive(self) -> bool:
        """Whether idle connections are kept for reuse (the ClientPool's clients stop after a
        reset connection); what tests observe instead of the transport's pool."""
        return self._limits.max_keepalive_connections != 0

    def transport_for(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        key = (url.scheme, url.host, url.port)
        transport = self._routes.get(key)
        if transport is None:
            proxy = self._proxies.get(url.scheme)
            if proxy is None or bypasses_proxy(url.host, url.port, self._no_proxy):
                transport = self._direct
            else:
                transport = self._via_proxy.get(proxy)
                if transport is None:
                    transport = self._via_proxy[proxy] = httpx.AsyncHTTPTransport(
                        verify=self._tls, limits=self._limits, proxy=proxy
                    )
            self._routes[key] = transport
        return transport

    async def _send(
        self,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str],
        request_timeout: httpx.Timeout | None,
    ) -> httpx.Response:
        timeouts = self._timeout if request_timeout is None else request_timeout.as_dict()
        request = httpx.Request(method, url, content=content, headers=headers, extensions={"timeout": timeouts})
        response = await self.transport_for(request.url).handle_async_request(request)
        response.request = request
        return response

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str],
        request_timeout: httpx.Timeout | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """The response with its body unread; closed (its connection released) on exit.
        ``request_timeout`` replaces the client's for this request."""
        response = await self._send(method, url, content, headers, request_timeout)
        try:
            yield response
        finally:
            await response.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str],
        request_timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """The response with its body read."""
        async with self.stream(
            method, url, content=content, headers=headers, request_timeout=request_timeout
        ) as response:
            await response.aread()
        return response

    async def aclose(self) -> None:
        await self._direct.aclose()
        for transport in self._via_proxy.values():
            await transport.aclose()
