"""``RunQuery``, the message that starts a query in the RetrySupervisor, and
``QueryContext``, what every query's run shares.

Types only: the Gateway sends ``RunQuery``, the supervisor (actors/retry_supervisor.py)
receives it and makes the ``QueryContext``, and the query's run (actors/query_run.py) and
its attempts (actors/attempt_build.py) read both, with no import between them for their
sake.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable

import msgspec
import trio

from actors.client_pool import ClientPoolAddress
from actors.config import Config
from actors.cost_ledger import CostLedgerAddress
from actors.drain import Drain
from actors.metrics import Metrics
from actors.provider_builds import ProviderBuilds
from actors.query_options import DEFAULT_OPTIONS, QueryOptions
from actors.retry_shared import SharedRetryState
from actors.session_state import SessionStates
from actors.stream_relay import StreamRelayAddress
from protocol.frames import ErrorInfo, GatewayFrame, Query
from protocol.wire import JsonObject


class RunQuery(msgspec.Struct, frozen=True, kw_only=True):
    """``headers``: extra upstream headers of this query (the HTTP door forwards the client's
    ``anthropic-version`` and ``anthropic-beta``); they override the pool's defaults.
    ``options``: the HTTP door's (actors/query_options.py); the defaults change nothing."""

    session_id: str
    query: Query
    scope: trio.CancelScope
    outbound: trio.MemorySendChannel[GatewayFrame]
    headers: tuple[tuple[str, str], ...] = ()
    options: QueryOptions = DEFAULT_OPTIONS
    # Called once with the query's cost (picodollars, every attempt) when it has ended:
    # settles its budget reservation (actors/budgets.py). Must not block or raise.
    on_end: Callable[[int], None] | None = None
    # Called before each attempt after the first with the request that attempt sends (its
    # ``model`` the attempt's): grows the budget reservation by its worst case, or returns
    # the error that ends the query instead (actors/gateway.py ``_top_up``).
    top_up: Callable[[JsonObject], Awaitable[ErrorInfo | None]] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class QueryContext:
    """What every query's run shares, made once by the RetrySupervisor: the state its
    queries share and the addresses it closes (actors/query_run.py). ``drain``: the
    graceful shutdown each run reports its end to."""

    config: Config
    shared: SharedRetryState
    sessions: SessionStates
    builds: ProviderBuilds
    metrics: Metrics
    rng: random.Random
    to_relay: StreamRelayAddress
    to_ledger: CostLedgerAddress
    to_pool: ClientPoolAddress
    drain: Drain | None = None
