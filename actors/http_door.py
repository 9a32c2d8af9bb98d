"""HttpDoor: the Anthropic-compatible HTTP door of PROTOCOL.md section 2.

Role:
    Serves the Messages API to programs that already speak it (the official SDKs, any tool
    that takes ``ANTHROPIC_BASE_URL``): ``POST /v1/messages`` (SSE or JSON, also
    ``?beta=true``), ``POST /v1/messages/count_tokens``, ``GET /v1/models[/{id}]``, and
    ``GET /healthz`` and ``GET /metrics``. Every query goes through the ``Gateway`` handle, so
    retries, fallbacks and cost tracking apply; what the client gets is what the API sends.
    An ASGI app (``__call__``) served by hypercorn's trio worker in the gateway's own trio run.
Per request:
    Auth, then the body (at most ``Config.max_frame_bytes``: 413 beyond; 408 when it stops
    arriving for ``BODY_IDLE_TIMEOUT``), then one nursery:
    the handler, and a watcher awaiting ``http.disconnect``. A client that goes away cancels
    the handler, which leaves ``gateway.query`` and so aborts the query at once: the upstream
    request is closed and what it used is still recorded.
Streaming (``actors.http_answer``):
    Events are written as SSE exactly as relayed. Retries before any content are invisible:
    events without content (``message_start``, ``content_block_start``, ``ping``) are held
    until the first one with content, and dropped with an attempt that is voided. Once
    content is written a voided attempt cannot be hidden on plain SSE: the stream ends with
    the API's ``error`` event and the query is aborted (never a silently truncated 200).
Auth and sessions:
    With ``Config.access_tokens``, a token is required as ``x-api-key`` or ``Authorization:
    Bearer`` (401 ``authentication_error`` otherwise); the upstream credential is always the
    gateway's own, and of the client's headers only ``anthropic-version`` and
    ``anthropic-beta`` go upstream. ``x-switchboard-session`` names the session charged
    (validated like a WebSocket session id; owned by the token that created it: 403
    otherwise); without it, one default session per token (``protocol.http_api``).
Lifecycle:
    ``run`` binds ``(Config.host, Config.http_port)``, calls ``task_status.started(port)``
    and serves until cancelled, or until a graceful shutdown (``Gateway.shutdown``) has
    ended every query: then hypercorn closes the listener and the idle connections, lets
    the responses in flight finish (``CLEANUP_TIMEOUT``) and ``run`` returns.
Shutdown (``actors.drain``):
    Once the shutdown begins, ``GET /healthz`` answers 503 ``{"status":"shutting_down"}``
    (a load balancer stops sending), and a new request (but ``/metrics``) gets 503
    ``api_error`` "the gateway is shutting down" with ``connection: close``, which the SDKs
    retry, on a new connection. A query in flight runs on through the grace; one the grace
    cuts off ends as any ``shutting_down`` error: 503 before its stream began, the API's
    ``error`` event after.
Failure policy:
    One request's failure never reaches another: each request is a supervision boundary
    (docs/supervision.md). An unexpected exception is logged once with the request id,
    counted (``switchboard_internal_errors_total{where="http_request"}``) and answered with
    a 500 in the API's error envelope (``api_error``), or, once an SSE stream has begun, by
    ending it with the API's ``error`` event; leaving the query aborts it, and its usage is
    recorded. A query the gateway ended with ``internal_error`` gets the same 500.
Timers:
    ``BODY_IDLE_TIMEOUT`` for a request body that stops arriving; between requests,
    hypercorn's keep-alive timeout (``KEEP_ALIVE_TIMEOUT``) closes idle connections.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from typing import Final, final

import hypercorn.config
import hypercorn.trio
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from actors._util import CLEANUP_TIMEOUT, report_internal
from actors.asgi import (
    BodyStalled,
    BodyTooLarge,
    ClientGone,
    Exchange,
    RequestHead,
    read_body,
    request_head,
    serve_lifespan,
    watch_disconnect,
)
from actors.config import Config
from actors.cost_ledger import owner_digest
from actors.gateway import Gateway
from actors.http_answer import CONNECTION_CLOSE, answer_json, answer_stream, send_error
from protocol.errors import ActorUnavailable, Overloaded, RemoteProtocolError
from protocol.frames import SESSION_ID
from protocol.http_api import (
    JSON_CONTENT_TYPE,
    default_session,
    http_error,
    parse_body,
)
from protocol.model_list import find_model, model_entries, models_answer
from protocol.wire import JSON, JsonObject

log = logging.getLogger("switchboard.httpdoor")

# The fixed routes: (method, route name for logs and metrics). ``/v1/models/{id}`` is the one
# route with a parameter, matched apart.
_ROUTES: Final = {
    "/v1/messages": ("POST", "messages"),
    "/v1/messages/count_tokens": ("POST", "count_tokens"),
    "/v1/models": ("GET", "models"),
    "/healthz": ("GET", "healthz"),
    "/metrics": ("GET", "metrics"),
}
_MODEL_PREFIX: Final = "/v1/models/"
# Of the client's headers, only these reach the upstream (PROTOCOL.md 2): its API version and
# betas. Its credential never does.
FORWARDED_HEADERS: Final = ("anthropic-version", "anthropic-beta")
SESSION_HEADER: Final = "x-switchboard-session"
# What a client is told of an unexpected failure (docs/supervision.md): that it happened,
# not what (the details are in the gateway's log under the request id).
INTERNAL_MESSAGE: Final = "internal error in the gateway; it is logged"
# The model to continue on after repeated overload (PROTOCOL.md 1 ``query.fallback_model``):
# an HTTP request has no other place to say it.
FALLBACK_HEADER: Final = "x-switchboard-fallback-model"
# Idle keep-alive connections: longer than hypercorn's 5 s default, so an SDK's pooled
# connection between two turns of a conversation is usually still open.
KEEP_ALIVE_TIMEOUT: Final = 75.0
# A request body that stops arriving for this long is answered 408 and its connection closed:
# hypercorn's keep-alive timer runs only between requests, so without it a client could hold
# a connection (a file descriptor) for good by never finishing a body. As long as the
# keep-alive timeout: idle within a request is allowed what idle between requests is.
BODY_IDLE_TIMEOUT: Final = KEEP_ALIVE_TIMEOUT
# The listen backlog: hypercorn's default of 100 overflowed when 512 clients connected at
# once (scripts/bench.py --levels 512: connections reset, kernel ListenOverflows rising);
# 4096 is Linux's usual somaxconn and what trio gives the WebSocket door.
LISTEN_BACKLOG: Final = 4096
# PROTOCOL.md 3: what a load balancer's health check sees once a shutdown has begun.
HEALTH_SHUTTING_DOWN: Final = b'{"status":"shutting_down"}'
# Routes still answered while shutting down: the health check (with 503) and the metrics.
_DRAINING_ROUTES: Final = frozenset({"healthz", "metrics"})


@final
class HttpDoor:
    """The HTTP server and ASGI app (see the module docstring)."""

    def __init__(self, gateway: Gateway, config: Config) -> None:
        self._gateway = gateway
        self._config = config

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. Startable: ``started()`` gets the bound port."""
        server = hypercorn.config.Config()
        host = self._config.host
        server.bind = [
            f"[{host}]:{self._config.http_port or 0}"
            if ":" in host
            else f"{host}:{self._config.http_port or 0}"
        ]
        server.accesslog = None
        server.errorlog = logging.getLogger("switchboard.httpdoor.server")
        server.include_server_header = False
        server.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
        server.backlog = LISTEN_BACKLOG
        # After a shutdown's queries ended: how long the responses in flight get to finish.
        server.graceful_timeout = CLEANUP_TIMEOUT
        drain = self._gateway.drain
        serve = functools.partial(
            hypercorn.trio.serve, self, server, mode="asgi", shutdown_trigger=drain.queries_ended.wait
        )
        with drain.hold():
            async with trio.open_nursery() as nursery:
                binds: list[str] = await nursery.start(serve)
                task_status.started(int(binds[0].rpartition(":")[2]))

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        head = request_head(scope)
        request_id = "req_sb_" + secrets.token_hex(12)
        exchange = Exchange(send, [(b"request-id", request_id.encode())])
        route = "unknown"
        try:
            route = await self._route(head, receive, exchange, request_id)
        except Exception as exc:
            report_internal(log, self._gateway.metrics, "http_request", f"request {request_id}", exc)
            await _internal_error(exchange, request_id)
        finally:
            self._gateway.metrics.http_request(route, exchange.status)
            log.debug("%s %s -> %d", head.method, head.path, exchange.status)

    async def _route(
        self, head: RequestHead, receive: ASGIReceiveCallable, exchange: Exchange, request_id: str
    ) -> str:
        """Answer one request; returns its route name."""
        method, route = _ROUTES.get(
            head.path, ("GET", "model") if head.path.startswith(_MODEL_PREFIX) else ("", "unknown")
        )
        if route == "unknown":
            await send_error(exchange, 404, "not_found_error", f"no route {head.path}", request_id)
            return route
        if head.method != method:
            await send_error(
                exchange,
                405,
                "invalid_request_error",
                f"method {head.method} not allowed on {head.path}",
                request_id,
            )
            return route
        draining = self._gateway.drain.begun.is_set()
        if route == "healthz":
            if draining:
                await exchange.respond(503, HEALTH_SHUTTING_DOWN, JSON_CONTENT_TYPE)
                return route
            health = self._gateway.ledger_health
            if health.healthy:
                await exchange.respond(200, b'{"status":"ok"}', JSON_CONTENT_TYPE)
            else:
                body = JSON.encode({"status": "degraded", "reason": health.reason})
                await exchange.respond(503, body, JSON_CONTENT_TYPE)
            return route
        if draining and route not in _DRAINING_ROUTES:
            await _shutting_down(exchange, request_id)
            return route
        allowed, token = self._authenticate(head)
        if not allowed:
            await send_error(exchange, 401, "authentication_error", "invalid x-api-key", request_id)
            return route
        if route == "metrics":
            metrics = self._gateway.metrics
            await exchange.respond(200, metrics.render(), metrics.content_type.encode())
        elif route == "models":
            await self._models(head.query, exchange, request_id)
        elif route == "model":
            await self._model(head.path.removeprefix(_MODEL_PREFIX), exchange, request_id)
        else:
            await self._post(route, head, receive, exchange, request_id, token)
        return route

    def _authenticate(self, head: RequestHead) -> tuple[bool, str | None]:
        """``(allowed, token)``: with no tokens configured everyone is allowed (token None)."""
        tokens = self._config.access_tokens
        if not tokens:
            return True, None
        scheme, _, bearer = head.headers.get("authorization", "").partition(" ")
        presented = [head.headers.get("x-api-key", "")]
        if scheme.lower() == "bearer":
            presented.append(bearer.strip())
        for candidate in presented:
            if candidate and any(
                hmac.compare_digest(candidate.encode(), t.reveal().encode()) for t in tokens
            ):
                return True, candidate
        return False, None

    async def _models(self, query: str, exchange: Exchange, request_id: str) -> None:
        """``GET /v1/models``: the catalog's models, paged as the API pages (protocol/model_list.py)."""
        entries = model_entries(self._gateway.catalog, self._gateway.models)
        try:
            body = models_answer(entries, query)
        except RemoteProtocolError as exc:
            await send_error(exchange, 400, exc.error_type, str(exc), request_id)
            return
        await exchange.respond(200, body, JSON_CONTENT_TYPE)

    async def _model(self, model_id: str, exchange: Exchange, request_id: str) -> None:
        found = find_model(model_entries(self._gateway.catalog, self._gateway.models), model_id)
        if found is None:
            await send_error(exchange, 404, "not_found_error", f"model: {model_id}", request_id)
            return
        await exchange.respond(200, JSON.encode(found), JSON_CONTENT_TYPE)

    async def _post(
        self,
        route: str,
        head: RequestHead,
        receive: ASGIReceiveCallable,
        exchange: Exchange,
        request_id: str,
        token: str | None,
    ) -> None:
        try:
            request = parse_body(
                await read_body(
                    receive, head, self._config.max_frame_bytes, idle_timeout=BODY_IDLE_TIMEOUT
                )
            )
        except BodyTooLarge as exc:
            await send_error(exchange, 413, "request_too_large", str(exc), request_id)
            return
        except BodyStalled as exc:
            await send_error(exchange, 408, "timeout_error", str(exc), request_id)
            return
        except ClientGone:
            return
        except RemoteProtocolError as exc:
            await send_error(exchange, 400, "invalid_request_error", str(exc), request_id)
            return
        forwarded = tuple(
            (name, head.headers[name]) for name in FORWARDED_HEADERS if head.headers.get(name)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, receive, exchange, nursery.cancel_scope)
            try:
                if route == "count_tokens":
                    await self._count_tokens(request, forwarded, exchange, request_id)
                else:
                    await self._messages(request, head, forwarded, exchange, request_id, token)
            except RemoteProtocolError as exc:
                await send_error(exchange, 400, "invalid_request_error", str(exc), request_id)
            except ActorUnavailable:
                await _shutting_down(exchange, request_id)
            except Overloaded as exc:
                await _overloaded(exchange, request_id, exc)
            nursery.cancel_scope.cancel()

    async def _count_tokens(
        self,
        request: JsonObject,
        forwarded: tuple[tuple[str, str], ...],
        exchange: Exchange,
        request_id: str,
    ) -> None:
        result = await self._gateway.count_tokens(request, query_id=request_id, headers=forwarded)
        if result.failure is not None:
            info = result.failure.info()
            status, error_type = http_error(info)
            await send_error(
                exchange, status, error_type, info.message, info.request_id or request_id
            )
            return
        await exchange.respond(
            200, JSON.encode({"input_tokens": result.input_tokens or 0}), JSON_CONTENT_TYPE
        )

    async def _messages(
        self,
        request: JsonObject,
        head: RequestHead,
        forwarded: tuple[tuple[str, str], ...],
        exchange: Exchange,
        request_id: str,
        token: str | None,
    ) -> None:
        owner = owner_digest(token)
        session_id = head.headers.get(SESSION_HEADER) or default_session(owner)
        if not SESSION_ID.fullmatch(session_id):
            message = f"{SESSION_HEADER}: must be 1 to 128 characters of [A-Za-z0-9._-]"
            await send_error(exchange, 400, "invalid_request_error", message, request_id)
            return
        opened = await self._gateway.open_session(session_id, owner=owner)
        if not opened.owner_ok:
            message = f"session {session_id} belongs to another access token"
            await send_error(exchange, 403, "permission_error", message, request_id)
            return
        exchange.base_headers.append((SESSION_HEADER.encode(), session_id.encode()))
        with self._gateway.session_in_use(session_id):
            async with self._gateway.query(
                request,
                session_id=session_id,
                query_id=request_id,
                fallback_model=head.headers.get(FALLBACK_HEADER) or None,
                headers=forwarded,
                admission_timeout=self._config.admission_wait,
            ) as frames:
                if request.get("stream") is True:
                    await answer_stream(frames, exchange, request_id)
                else:
                    await answer_json(frames, exchange, request_id)


async def _shutting_down(exchange: Exchange, request_id: str) -> None:
    """503 ``api_error``: the gateway takes no new work. Worth a retry, on a new connection:
    on another instance behind a load balancer."""
    exchange.base_headers.append(CONNECTION_CLOSE)
    await send_error(exchange, 503, "api_error", "the gateway is shutting down", request_id)


async def _overloaded(exchange: Exchange, request_id: str, exc: Overloaded) -> None:
    """529 ``overloaded_error``: every query slot stayed taken for ``Config.admission_wait``
    (docs/protocol.md "Admission"). Worth a retry, after ``retry-after`` seconds."""
    exchange.base_headers += [
        (b"retry-after", str(exc.retry_after).encode()),
        (b"x-should-retry", b"true"),
    ]
    await send_error(exchange, 529, "overloaded_error", str(exc), request_id)


async def _internal_error(exchange: Exchange, request_id: str) -> None:
    """Answer a request that failed unexpectedly: a 500 ``api_error`` in the API's envelope,
    or the end of a stream already begun; nothing once the answer is complete."""
    if exchange.complete:
        return
    try:
        await send_error(exchange, 500, "api_error", INTERNAL_MESSAGE, request_id, retry=False)
    except Exception:
        # The client's connection is unusable too; the failure is logged already.
        log.debug("request %s: the internal error could not be sent", request_id, exc_info=True)
