"""The RetrySupervisor's contract (actors/retry_supervisor.py).

``RunQuery`` (FrontDoor, Gateway): start a query; its frames go to its ``outbound``.
``RunCountTokens`` (FrontDoor, Gateway) -> ``CountResult``.
``GetSessionActivity`` (Gateway, for the dashboard) -> ``SessionActivity``: a snapshot of
which sessions have an upstream request in flight; the per-session state itself
(actors/supervisor/session_state.py) is the supervisor's task tree's alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

import msgspec
import trio

from actors.messages.relay import CountResult
from actors.supervisor.options import DEFAULT_OPTIONS, QueryOptions
from protocol.frames import ErrorInfo, GatewayFrame, Query
from protocol.wire import JsonObject


class RunQuery(msgspec.Struct, frozen=True, kw_only=True):
    """``headers``: extra upstream headers of this query (the HTTP door forwards the client's
    ``anthropic-version`` and ``anthropic-beta``); they override the pool's defaults.
    ``options``: the HTTP door's (actors/supervisor/options.py); the defaults change nothing."""

    session_id: str
    query: Query
    scope: trio.CancelScope
    outbound: trio.MemorySendChannel[GatewayFrame]
    headers: tuple[tuple[str, str], ...] = ()
    options: QueryOptions = DEFAULT_OPTIONS
    # Called once with the query's cost (picodollars, every attempt) when it has ended:
    # settles its budget reservation (actors/access/budgets.py). Must not block or raise.
    on_end: Callable[[int], None] | None = None
    # Called before each attempt after the first with the request that attempt sends (its
    # ``model`` the attempt's): grows the budget reservation by its worst case, or returns
    # the error that ends the query instead (actors/access/query_budgets.py ``_top_up``).
    top_up: Callable[[JsonObject], Awaitable[ErrorInfo | None]] | None = None


class RunCountTokens(msgspec.Struct, frozen=True, kw_only=True):
    """``transparent``: the body and betas as the client sent them (the model id in the
    provider's form; Vertex keeps only its allow-list of betas)."""

    query_id: str
    request: JsonObject
    reply: trio.MemorySendChannel[CountResult]
    headers: tuple[tuple[str, str], ...] = ()
    transparent: bool = False


class SessionActivity(msgspec.Struct, frozen=True, kw_only=True):
    """Which sessions the supervisor knows, at one moment: ``active`` have an upstream
    request in flight (docs/reference/reference-client.md 8, session activity); ``idle`` have none, each
    with the trio time its last request ended (None: none has ended yet)."""

    active: tuple[str, ...] = ()
    idle: tuple[tuple[str, float | None], ...] = ()


class GetSessionActivity(msgspec.Struct, frozen=True, kw_only=True):
    reply: trio.MemorySendChannel[SessionActivity]


RetrySupervisorMsg: TypeAlias = RunQuery | RunCountTokens | GetSessionActivity


RetrySupervisorAddress: TypeAlias = trio.MemorySendChannel[RetrySupervisorMsg]
