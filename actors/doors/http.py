"""HttpDoor: the Anthropic-compatible HTTP door of docs/protocol.md section 2.

Role:
    Serves the Messages API to programs that already speak it (the official SDKs, any tool
    that takes ``ANTHROPIC_BASE_URL``): ``POST /v1/messages`` (SSE or JSON, also
    ``?beta=true``), ``POST /v1/messages/count_tokens``, ``GET /v1/models[/{id}]``, and
    ``GET /healthz`` and ``GET /metrics``, the Claude Code gateway protocol's
    ``GET /managed/settings`` (``actors.access.policy``) and ``POST /v1/metrics|logs|traces``
    (OTLP, ``actors.observe.otlp``; README.md "Claude Code for a whole organisation"), and the dashboard (``GET /dashboard``, its JSON
    endpoints ``GET /v1/switchboard/...``: ``actors.doors.dashboard``, which authenticates them
    itself). Every query goes through the ``Gateway`` handle, so
    retries, fallbacks and cost tracking apply; what the client gets is what the API sends.
    An ASGI app (``__call__``) served by hypercorn's trio worker in the gateway's own trio run.
Per request:
    Auth, then the body (at most ``Config.max_frame_bytes``: 413 beyond; 408 when it stops
    arriving for ``BODY_IDLE_TIMEOUT``), then one nursery:
    the handler, and a watcher awaiting ``http.disconnect``. A client that goes away cancels
    the handler, which leaves ``gateway.query`` and so aborts the query at once: the upstream
    request is closed and what it used is still recorded.
Streaming (``actors.doors.http_answer``):
    Events are written as SSE exactly as relayed. Retries before any content are invisible:
    events without content (``message_start``, ``content_block_start``, ``ping``) are held
    until the first one with content, and dropped with an attempt that is voided. Once
    content is written a voided attempt cannot be hidden on plain SSE: the stream ends with
    the API's ``error`` event and the query is aborted (never a silently truncated 200).
Auth and sessions:
    With ``Config.access_tokens``, a token is required as ``x-api-key`` or ``Authorization:
    Bearer`` (401 ``authentication_error`` otherwise); the upstream credential is always the
    gateway's own, and of the client's headers only ``anthropic-version`` and
    ``anthropic-beta`` go upstream (a missing or unknown ``anthropic-version`` gets the API's
    400, so does an ``anthropic-beta`` that is not ASCII text). ``x-switchboard-session`` names the session charged
    (validated like a WebSocket session id; owned by the token that created it: 403
    otherwise); without it, one default session per token (``protocol.http_api``).
What goes upstream, and who retries (docs/protocol.md 2):
    By default the client's body and betas as sent (``transparent``); the reference
    construction with ``x-switchboard-construct: reference`` or a token in
    ``Config.construct_tokens``. A client that retries on its own (``x-stainless-retry-count``,
    or ``x-switchboard-retries`` / ``Config.http_retries``) gets one upstream attempt and the
    upstream's answer; otherwise the gateway retries, within the client's own timeout
    (``x-stainless-timeout``).
Lifecycle:
    ``run`` binds ``(Config.host, Config.http_port)``, calls ``task_status.started(port)``
    and serves until cancelled, or until a graceful shutdown (``Gateway.shutdown``) has
    ended every query: then hypercorn closes the listener and the idle connections, lets
    the responses in flight finish (``CLEANUP_TIMEOUT``) and ``run`` returns.
Shutdown (``actors.supervisor.drain``):
    Once the shutdown begins, ``GET /healthz`` answers 503 ``{"status":"shutting_down"}``
    (a load balancer stops sending), and a new request (but ``/metrics``) gets 503
    ``api_error`` "the gateway is shutting down" with ``connection: close``, which the SDKs
    retry, on a new connection. A query in flight runs on through the grace; one the grace
    cuts off ends as any ``shutting_down`` error: 503 before its stream began, the API's
    ``error`` event after.
Failure policy:
    The gateway's own refusals (400, 401, 403, 404, 405, 411, 413) carry ``x-should-retry:
    false``: the same request gets the same answer, and Claude Code otherwise retries a 401
    ten times (docs/protocol.md 2). A 408 and a 503 while shutting down stay retryable.
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
import logging
import secrets
import socket
from typing import Final, final

import hypercorn.config
import hypercorn.trio
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from actors._util import CLEANUP_TIMEOUT, report_internal
from actors.access.budgets import Access, presented
from actors.access.policy import managed_settings
from actors.config.settings import Config
from actors.doors.asgi import (
    BodyStalled,
    BodyTooLarge,
    Exchange,
    RequestHead,
    read_body,
    request_head,
    serve_lifespan,
)
from actors.doors.dashboard import Dashboard, is_dashboard_path
from actors.doors.http_answer import Reply, send_error, shutting_down
from actors.doors.http_messages import BODY_IDLE_TIMEOUT, KEEP_ALIVE_TIMEOUT, MessagesPost
from actors.doors.hypercorn_send import install_direct_writes
from actors.doors.oauth import OAuthDoor
from actors.doors.ws_server import reuse_port_socket
from actors.gateway import Gateway
from actors.observe.otlp import answer_export
from actors.supervisor.options import UpstreamHeads
from protocol.errors import ClientGone, RemoteProtocolError
from protocol.http_api import (
    JSON_CONTENT_TYPE,
    beta_error,
    version_error,
)
from protocol.models.listing import find_model, model_entries, models_answer
from protocol.oauth import OAUTH_PATHS
from protocol.otlp import MAX_EXPORT_BYTES, SIGNALS, encoding_of
from protocol.passthrough import client_retries
from protocol.policy import filter_models
from protocol.wire import JSON

log = logging.getLogger("switchboard.httpdoor")

# The fixed routes: (method, route name for logs and metrics). ``/v1/models/{id}`` is the one
# route with a parameter, matched apart.
_ROUTES: Final = {
    "/v1/messages": ("POST", "messages"),
    "/v1/messages/count_tokens": ("POST", "count_tokens"),
    "/v1/models": ("GET", "models"),
    "/healthz": ("GET", "healthz"),
    "/metrics": ("GET", "metrics"),
    # The Claude Code gateway protocol (README.md "Claude Code for a whole organisation").
    "/managed/settings": ("GET", "managed_settings"),
    "/v1/metrics": ("POST", "otlp_metrics"),
    "/v1/logs": ("POST", "otlp_logs"),
    "/v1/traces": ("POST", "otlp_traces"),
}
_MODEL_PREFIX: Final = "/v1/models/"
# The API's own words for a path it does not serve (docs/reference/wire.md 3.1).
NOT_FOUND_MESSAGE: Final = "The requested resource could not be found."
# A 401 with sign-in on: the token expired, was revoked, or its user disabled.
SIGN_IN_AGAIN: Final = "the sign-in is not valid (expired or revoked): sign in again with /login"
# What a client is told of an unexpected failure (docs/supervision.md): that it happened,
# not what (the details are in the gateway's log under the request id).
INTERNAL_MESSAGE: Final = "internal error in the gateway; it is logged"
# The gateway's own id of a request, beside the upstream's ``request-id`` (docs/protocol.md 2).
REQUEST_ID_HEADER: Final = b"x-switchboard-request-id"
# The listen backlog: hypercorn's default of 100 overflowed when 512 clients connected at
# once (scripts/bench.py --levels 512: connections reset, kernel ListenOverflows rising);
# 4096 is Linux's usual somaxconn and what trio gives the WebSocket door.
LISTEN_BACKLOG: Final = 4096
# docs/protocol.md 3: what a load balancer's health check sees once a shutdown has begun.
HEALTH_SHUTTING_DOWN: Final = b'{"status":"shutting_down"}'
# Routes still answered while shutting down: the health check (with 503) and the metrics.
_DRAINING_ROUTES: Final = frozenset({"healthz", "metrics"})


@final
class HttpDoor:
    """The HTTP server and ASGI app (see the module docstring)."""

    def __init__(self, gateway: Gateway, config: Config, oauth: OAuthDoor | None = None) -> None:
        self._gateway = gateway
        self._config = config
        # The sign-in endpoints (``--oauth``; actors/doors/oauth.py), and the scheme clients use.
        self._oauth = oauth
        self._scheme = "https" if config.tls_cert else "http"
        self._post = MessagesPost(gateway, config)
        self._dashboard = Dashboard(gateway, config)

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
        if self._config.workers > 1:
            # The port is shared with the other workers of ``serve --workers N`` (README.md
            # "Deployment"): a socket of ours with SO_REUSEPORT, which hypercorn then owns.
            sock = reuse_port_socket(host, self._config.http_port or 0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server.bind = [f"fd://{sock.detach()}"]
        if self._config.tls_cert is not None:
            # README.md "Claude Code for a whole organisation": the client pins this leaf.
            server.certfile = self._config.tls_cert
            server.keyfile = self._config.tls_key
        # After a shutdown's queries ended: how long the responses in flight get to finish.
        server.graceful_timeout = CLEANUP_TIMEOUT
        drain = self._gateway.drain
        install_direct_writes()
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
        arrived = trio.current_time()
        request_id = "req_sb_" + secrets.token_hex(12)
        exchange = Exchange(
            send, [(b"request-id", request_id.encode()), (REQUEST_ID_HEADER, request_id.encode())]
        )
        route = "unknown"
        try:
            route = await self._route(head, receive, exchange, request_id, arrived)
        except Exception as exc:
            report_internal(log, self._gateway.metrics, "http_request", f"request {request_id}", exc)
            await _internal_error(exchange, request_id)
        finally:
            self._gateway.metrics.http_request(route, exchange.status)
            log.debug("%s %s -> %d", head.method, head.path, exchange.status)

    async def _route(
        self,
        head: RequestHead,
        receive: ASGIReceiveCallable,
        exchange: Exchange,
        request_id: str,
        arrived: float,
    ) -> str:
        """Answer one request; returns its route name."""
        if self._oauth is not None and head.path in OAUTH_PATHS:
            if self._gateway.drain.begun.is_set():
                await shutting_down(exchange, request_id)
                return "oauth"
            return await self._oauth.handle(head, receive, exchange, self._scheme)
        if is_dashboard_path(head.path):
            if self._gateway.drain.begun.is_set():
                await shutting_down(exchange, request_id)
                return "dashboard"
            return await self._dashboard.handle(head, exchange, request_id)
        method, route = _ROUTES.get(
            head.path, ("GET", "model") if head.path.startswith(_MODEL_PREFIX) else ("", "unknown")
        )
        if route == "unknown":
            await send_error(exchange, 404, "not_found_error", NOT_FOUND_MESSAGE, request_id)
            return route
        if head.method != method:
            await send_error(
                exchange,
                405,
                "invalid_request_error",
                f"method {head.method} not allowed on {head.path}",
                request_id,
                retry=False,
            )
            return route
        draining = self._gateway.drain.begun.is_set()
        if route == "healthz":
            await self._healthz(exchange, draining)
            return route
        if draining and route not in _DRAINING_ROUTES:
            await shutting_down(exchange, request_id)
            return route
        access = await self._gateway.authenticate(presented(head.headers))
        if access is None:
            unknown = SIGN_IN_AGAIN if self._oauth is not None else "invalid x-api-key"
            await send_error(exchange, 401, "authentication_error", unknown, request_id, retry=False)
            return route
        await self._answer_authenticated(route, access, head, receive, exchange, request_id, arrived)
        return route

    async def _healthz(self, exchange: Exchange, draining: bool) -> None:
        """``GET /healthz``: 200 while the ledger is healthy, 503 degraded or shutting down."""
        if draining:
            await exchange.respond(503, HEALTH_SHUTTING_DOWN, JSON_CONTENT_TYPE)
            return
        health = self._gateway.ledger_health
        instance = self._gateway.instance_id
        if health.healthy:
            await exchange.respond(200, JSON.encode({"status": "ok", "instance_id": instance}), JSON_CONTENT_TYPE)
        else:
            body = JSON.encode({"status": "degraded", "reason": health.reason, "instance_id": instance})
            await exchange.respond(503, body, JSON_CONTENT_TYPE)

    async def _answer_authenticated(
        self,
        route: str,
        access: Access,
        head: RequestHead,
        receive: ASGIReceiveCallable,
        exchange: Exchange,
        request_id: str,
        arrived: float,
    ) -> None:
        """Answer one authenticated request on ``route`` (``_route`` found it and checked
        the method, the drain and the credentials)."""
        if route == "metrics":
            metrics = self._gateway.metrics
            await exchange.respond(200, metrics.render(), metrics.content_type.encode())
        elif route == "managed_settings":
            await managed_settings(self._gateway.policy, access, head, exchange, request_id)
        elif route.startswith("otlp_"):
            await self._otlp(head, receive, exchange, request_id)
        elif (
            refused := version_error(head.headers.get("anthropic-version"))
            or beta_error(head.headers.get("anthropic-beta"))
        ) is not None:
            await send_error(exchange, 400, "invalid_request_error", refused, request_id)
        elif route == "models":
            await self._models(head.query, exchange, request_id, self._gateway.policy.patterns(access))
        elif route == "model":
            model_id = head.path.removeprefix(_MODEL_PREFIX)
            await self._model(model_id, exchange, request_id, self._gateway.policy.patterns(access))
        else:
            await self._post.post(
                route,
                head,
                receive,
                exchange,
                Reply(
                    request_id=request_id,
                    heads=UpstreamHeads(),
                    client_retries=client_retries(head.headers, self._config.http_retries),
                ),
                access,
                arrived,
            )

    async def _otlp(
        self, head: RequestHead, receive: ASGIReceiveCallable, exchange: Exchange, request_id: str
    ) -> None:
        """``POST /v1/metrics|logs|traces``: an OTLP export, counted and maybe forwarded
        (actors/observe/otlp.py); 200 whatever becomes of it, 413 over ``MAX_EXPORT_BYTES``."""
        try:
            body = await read_body(receive, head, MAX_EXPORT_BYTES, idle_timeout=BODY_IDLE_TIMEOUT)
        except BodyTooLarge as exc:
            await send_error(exchange, 413, "request_too_large", str(exc), request_id)
            return
        except BodyStalled as exc:
            await send_error(exchange, 408, "timeout_error", str(exc), request_id)
            return
        except ClientGone:
            return
        content_type = head.headers.get("content-type", "application/x-protobuf")
        encoding = encoding_of(content_type)
        self._gateway.telemetry.receive(SIGNALS[head.path], encoding, content_type.encode("latin-1"), body)
        await answer_export(exchange, encoding)

    async def _models(
        self, query: str, exchange: Exchange, request_id: str, patterns: tuple[str, ...] | None
    ) -> None:
        """``GET /v1/models``: the catalog's models, paged as the API pages (protocol/models/listing.py),
        those the user's allow-list names (protocol/policy.py)."""
        entries = filter_models(model_entries(self._gateway.catalog, self._gateway.models), patterns)
        try:
            body = models_answer(entries, query)
        except RemoteProtocolError as exc:
            await send_error(exchange, 400, exc.error_type, str(exc), request_id)
            return
        await exchange.respond(200, body, JSON_CONTENT_TYPE)

    async def _model(
        self, model_id: str, exchange: Exchange, request_id: str, patterns: tuple[str, ...] | None
    ) -> None:
        entries = filter_models(model_entries(self._gateway.catalog, self._gateway.models), patterns)
        found = find_model(entries, model_id)
        if found is None:
            await send_error(exchange, 404, "not_found_error", f"model: {model_id}", request_id, retry=False)
            return
        await exchange.respond(200, JSON.encode(found), JSON_CONTENT_TYPE)

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
