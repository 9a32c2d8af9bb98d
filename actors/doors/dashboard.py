"""The dashboard: its page and its JSON endpoints on the HTTP door (docs/protocol.md, "Dashboard").

Routes (all ``GET``; the HttpDoor hands over every path ``is_dashboard_path`` accepts):
    ``/dashboard`` and ``/dashboard/<asset>``: the page (one HTML, one JS, one CSS, the vendored
    uPlot chart library and its CSS), package data under ``actors/doors/static/dashboard``, read
    once at start. Served without a token: the page holds no data, it asks for a token and
    sends it as ``Authorization: Bearer`` on its JSON calls (kept in ``sessionStorage``).
    ``/v1/switchboard/spend``: spend per day or hour, stacked by model or token, with totals,
    cache savings and hit rate. ``/v1/switchboard/sessions``: the top sessions and tokens by
    spend. ``/v1/switchboard/live``: queries and sessions in flight, the last hour's retries,
    fallbacks and overloads. ``/v1/switchboard/health``: the ledger's and its store's health.
    ``/v1/switchboard/budgets``: the ledger tokens' budgets and what is left (``budget_rows``).
Who sees what:
    The JSON endpoints take a token as the rest of the door does (``x-api-key`` or
    ``Authorization: Bearer``): an access token (``Config.access_tokens``) sees the sessions
    it owns (the ledger keeps a digest of the token that created a session,
    ``actors.store.ledger_sessions.owner_digest``), an admin token (``Config.admin_tokens``,
    ``SWITCHBOARD_ADMIN_TOKENS``) sees every session. With no token of either kind
    configured (loopback development) everything is visible without one. Gateway-wide
    figures with no session or token in them (queries in flight, retries, overloads, health)
    are shown to every token.
Where the numbers come from:
    Spend and sessions: the CostLedger, asked by message (``ReadSpend``, ``ReadTop``), which
    aggregates its store after committing (so: every committed usage record) and the pure
    arithmetic of ``protocol.dashboard``. Live: the Gateway (``session_activity``, the owners
    from the ledger's ``SessionOwners``) and the metrics (``Metrics.active``, ``recent``,
    ``overloaded_now``). Health: ``Gateway.ledger_health`` and a timed read of the store.
Failure policy:
    A bad query string is a 400 ``invalid_request_error``; a ledger that cannot answer (gone,
    or its read failed) a 503 ``api_error``. Everything else is the door's (one request's
    failure is its own, answered 500).
"""

from __future__ import annotations

import datetime
import importlib.resources
import time
from collections.abc import Callable, Sequence
from typing import Final, final

import msgspec
import trio

from actors.access.budgets import among, budget_view, presented
from actors.config.settings import Config
from actors.doors.asgi import Exchange, RequestHead
from actors.doors.http_answer import send_error
from actors.gateway import Gateway
from actors.messages.ledger import ReadSpend, ReadTop, SessionOwners
from actors.store.ledger_sessions import owner_digest
from actors.store.token_rows import TokenInfo
from protocol.dashboard import (
    EVERYONE,
    Bucket,
    OwnerSpend,
    Scope,
    SessionSpend,
    SpendRow,
    bucket_key,
    parse_spend_query,
    parse_top_query,
    sessions_answer,
    spend_answer,
)
from protocol.errors import ActorUnavailable, RemoteProtocolError
from protocol.http_api import JSON_CONTENT_TYPE
from protocol.wire import JSON

# The page under one path, the data under the API's own prefix, so that a proxy in front of
# the door can route or protect the two apart (docs/protocol.md section 4).
PAGE_PREFIX: Final = "/dashboard"
API_PREFIX: Final = "/v1/switchboard/"
# The page's files: URL name -> (package file, content type). A fixed list: no path from a
# request ever reaches the file system.
_ASSETS: Final[dict[str, tuple[str, bytes]]] = {
    "": ("index.html", b"text/html; charset=utf-8"),
    "app.js": ("app.js", b"text/javascript; charset=utf-8"),
    "style.css": ("style.css", b"text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("uPlot.iife.min.js", b"text/javascript; charset=utf-8"),
    "uPlot.min.css": ("uPlot.min.css", b"text/css; charset=utf-8"),
}
# Package data (pyproject.toml), so an installed gateway serves the page too.
_STATIC_PACKAGE: Final = "actors.doors.static.dashboard"
# The page loads only its own files and calls only its own origin.
_PAGE_HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
    ),
    (b"cache-control", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
)
# Spend figures are per token: no cache in between may keep one token's answer for another.
_API_HEADERS: Final = ((b"cache-control", b"no-store"),)
# Live sessions listed at most (the count is always whole): a page, not a report.
MAX_LIVE_LISTED: Final = 100


def is_dashboard_path(path: str) -> bool:
    """Whether the dashboard answers ``path`` (the HttpDoor routes it here)."""
    return path == PAGE_PREFIX or path.startswith(PAGE_PREFIX + "/") or path.startswith(API_PREFIX)


def budget_rows(scope: Scope, tokens: Sequence[TokenInfo], now: datetime.datetime) -> list[dict[str, object]]:
    """Each budget of the ledger's tokens visible to ``scope`` (every one; or the token's
    own, its digest being ``scope.owner``) with what is left: ``{"name", "limit_usd",
    "spent_usd", "left_usd", "period"}`` and the rest of docs/protocol.md's ``budget``
    fields. None: the page hides its budgets panel."""
    rows: list[dict[str, object]] = []
    for info in tokens:
        if not scope.everyone and info.token_hash != scope.owner:
            continue
        view = budget_view(info, now)
        if view is not None:
            row: dict[str, object] = msgspec.structs.asdict(view)
            row["left_usd"] = view.remaining_usd
            rows.append(row)
    return rows


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _load_assets() -> dict[str, tuple[bytes, bytes]]:
    files = importlib.resources.files(_STATIC_PACKAGE)
    return {
        name: (files.joinpath(file).read_bytes(), content_type)
        for name, (file, content_type) in _ASSETS.items()
    }


@final
class Dashboard:
    """The dashboard's routes (see the module docstring). ``now``: the wall clock (UTC)."""

    def __init__(
        self, gateway: Gateway, config: Config, *, now: Callable[[], datetime.datetime] = _utc_now
    ) -> None:
        self._gateway = gateway
        self._config = config
        self._now = now
        self._assets = _load_assets()

    async def handle(self, head: RequestHead, exchange: Exchange, request_id: str) -> str:
        """Answer one request to a dashboard path; returns its route name (for metrics)."""
        if head.method != "GET":
            await send_error(
                exchange, 405, "invalid_request_error", f"method {head.method} not allowed on {head.path}", request_id
            )
            return "dashboard"
        if head.path == PAGE_PREFIX or head.path.startswith(PAGE_PREFIX + "/"):
            asset = self._assets.get(head.path.removeprefix(PAGE_PREFIX).removeprefix("/"))
            if asset is None:
                await send_error(exchange, 404, "not_found_error", f"no route {head.path}", request_id)
            else:
                await exchange.respond(200, asset[0], asset[1], _PAGE_HEADERS)
            return "dashboard"
        endpoint = head.path.removeprefix(API_PREFIX)
        handler = {
            "spend": self._spend,
            "sessions": self._sessions,
            "live": self._live,
            "health": self._health,
            "budgets": self._budgets,
        }.get(endpoint)
        if handler is None:
            await send_error(exchange, 404, "not_found_error", f"no route {head.path}", request_id)
            return "switchboard_unknown"
        scope = await self._scope(head)
        if scope is None:
            await send_error(exchange, 401, "authentication_error", "invalid x-api-key", request_id)
            return f"switchboard_{endpoint}"
        try:
            body = await handler(head.query, scope)
        except RemoteProtocolError as exc:
            await send_error(exchange, 400, "invalid_request_error", str(exc), request_id)
        except ActorUnavailable:
            await send_error(exchange, 503, "api_error", "the cost ledger cannot answer now", request_id)
        else:
            await exchange.respond(200, JSON.encode(body), JSON_CONTENT_TYPE, _API_HEADERS)
        return f"switchboard_{endpoint}"

    async def _scope(self, head: RequestHead) -> Scope | None:
        """Whose sessions the request's token sees; None: no valid token (a 401). A ledger
        access token (``switchboard tokens``) sees its own, as a configured one does."""
        access, admin = self._config.access_tokens, self._config.admin_tokens
        budgets = self._gateway.budgets
        if not access and not admin and (budgets is None or not await budgets.required()):
            return EVERYONE
        for candidate in presented(head.headers):
            if among(candidate, admin):
                return EVERYONE
            if among(candidate, access) or (budgets is not None and await budgets.lookup(candidate) is not None):
                return Scope(everyone=False, owner=owner_digest(candidate))
        return None

    async def _spend(self, query: str, scope: Scope) -> dict[str, object]:
        spend = parse_spend_query(query, self._now())
        return spend_answer(spend, await self._spend_rows(spend.since, spend.bucket, scope))

    async def _spend_rows(self, since: str, bucket: Bucket, scope: Scope) -> list[SpendRow]:
        def make(reply: trio.MemorySendChannel[list[SpendRow]]) -> ReadSpend:
            return ReadSpend(since=since, bucket=bucket, scope=scope, reply=reply)

        return await self._gateway.read_ledger(make)

    async def _sessions(self, query: str, scope: Scope) -> dict[str, object]:
        top = parse_top_query(query, self._now())

        def make(reply: trio.MemorySendChannel[tuple[list[SessionSpend], list[OwnerSpend]]]) -> ReadTop:
            return ReadTop(since=top.since, scope=scope, limit=top.top, reply=reply)

        sessions, owners = await self._gateway.read_ledger(make)
        live = frozenset((await self._gateway.session_activity()).active)
        return sessions_answer(sessions, owners, live, top.since)

    async def _live_sessions(self, scope: Scope) -> list[str]:
        active = sorted((await self._gateway.session_activity()).active)
        if scope.everyone:
            return active

        def make(reply: trio.MemorySendChannel[dict[str, str | None]]) -> SessionOwners:
            return SessionOwners(session_ids=tuple(active), reply=reply)

        owners = await self._gateway.read_ledger(make)
        return [sid for sid in active if sid in owners and owners[sid] == scope.owner]

    async def _live(self, query: str, scope: Scope) -> dict[str, object]:
        _no_parameters(query)
        metrics = self._gateway.metrics
        queries, sessions = metrics.active()
        live = await self._live_sessions(scope)
        return {
            "now": self._now().isoformat(),
            "active_queries": queries,
            "active_sessions": sessions,
            "live_sessions": live[:MAX_LIVE_LISTED],
            "live_session_count": len(live),
            "overloaded_now": metrics.overloaded_now(),
            "last_hour": metrics.recent(),
        }

    async def _health(self, query: str, scope: Scope) -> dict[str, object]:
        del scope
        _no_parameters(query)
        health = self._gateway.ledger_health
        draining = self._gateway.drain.begun.is_set()
        now = self._now()
        started = time.monotonic()
        try:
            await self._spend_rows(bucket_key(now, "hour"), "hour", EVERYONE)
            store: dict[str, object] = {"readable": True, "read_ms": round((time.monotonic() - started) * 1000, 3)}
        except ActorUnavailable:
            store = {"readable": False, "read_ms": None}
        status = "shutting_down" if draining else "ok" if health.healthy and store["readable"] else "degraded"
        return {
            "status": status,
            "ledger": {
                "healthy": health.healthy,
                "committing": health.committing,
                "reason": health.reason,
                "pending_records": health.pending_records,
            },
            "store": store,
        }

    async def _budgets(self, query: str, scope: Scope) -> dict[str, object]:
        _no_parameters(query)
        budgets = self._gateway.budgets
        if budgets is None:
            return {"budgets": []}
        return {"budgets": budget_rows(scope, await budgets.tokens(), self._now())}


def _no_parameters(query: str) -> None:
    if query:
        raise RemoteProtocolError("this endpoint takes no parameters", error_type="invalid_request_error")
