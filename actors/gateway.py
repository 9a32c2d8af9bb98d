"""The Gateway handle: the embedding API of a running gateway.

A ``Gateway`` is what the composition root (``run_gateway``/``open_gateway`` in
``actors/server.py``) hands out once every actor runs: sessions, queries, token counts, costs,
the graceful shutdown. It owns no actor's state: it asks by message (``GetSessionActivity``,
``GetBootstrap``, the ledger's reads) or reads a snapshot an actor publishes (the
BootstrapFetcher's ``BootstrapState``, the ModelsFetcher's catalog, the ledger's health). The
doors (the WebSocket FrontDoor, the HTTP door) run on one, and so does an embedding program
(README.md "Embedding"; no socket of ours in between)::

    async with open_gateway(config) as gateway:
        async with gateway.query({"model": "claude-sonnet-4-6", "max_tokens": 256,
                                  "messages": [{"role": "user", "content": "Hi"}]}) as frames:
            async for frame in frames:
                ...   # EventFrame, RetryFrame, ..., then one Done | Aborted | ErrorFrame

While ``Config.max_queries`` queries run, a new one waits in line (actors/supervisor/admission.py): its
first frames are then ``Queued`` and ``Heartbeat``s; ``gateway.query(..., admission_timeout=S)``
waits at most ``S`` seconds before the block and raises ``Overloaded`` instead.

Graceful shutdown (``actors.supervisor.drain``; what ``switchboard serve`` does on SIGTERM/SIGINT)::

    await gateway.shutdown()   # no new query; those in flight get Config.shutdown_grace,
                               # then end with error shutting_down; returns once drained
    # then leave open_gateway (or cancel run_gateway): the actors stop, the ledger last
"""

from __future__ import annotations

import functools
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Final, TypeVar, final

import msgspec
import trio

from actors._util import ask
from actors.access.budgets import (
    Access,
    Budgets,
    ResolvePrincipal,
    authenticate,
)
from actors.access.policy import PolicySource
from actors.access.query_budgets import reserve_all, settle_all, top_up_all
from actors.config.settings import Config
from actors.cost_ledger import CostLedger
from actors.messages.bootstrap import BootstrapFetcherAddress, BootstrapState, GetBootstrap
from actors.messages.ledger import (
    CostLedgerAddress,
    CostLedgerMsg,
    GetCost,
    OpenSession,
    SessionOpened,
)
from actors.messages.relay import CountResult
from actors.messages.supervisor import (
    GetSessionActivity,
    RetrySupervisorAddress,
    RunCountTokens,
    RunQuery,
    SessionActivity,
)
from actors.observe.metrics import Metrics
from actors.observe.otlp import Telemetry
from actors.store.health import LedgerHealth
from actors.supervisor.drain import Drain
from actors.supervisor.handover import hand_over
from actors.supervisor.options import DEFAULT_OPTIONS, QueryOptions
from actors.upstream.models_fetcher import ModelsFetcher
from protocol.bootstrap import merge_model_options
from protocol.client_request import validate_request
from protocol.errors import RemoteProtocolError
from protocol.frames import (
    CostSummary,
    ErrorFrame,
    ErrorInfo,
    GatewayFrame,
    ModelOption,
    Query,
    TokenBudget,
)
from protocol.models.catalog import BUILTIN, Catalog
from protocol.models.options import DEFAULT_MODEL_OPTIONS
from protocol.wire import JsonObject

if TYPE_CHECKING:
    from actors.store.fleet_link import FleetLink

T = TypeVar("T")

# Frames a query may have queued for its reader: lets the relay hand over a chunk's several
# events without a task switch per event, yet bounded, so a slow reader pushes back on the
# upstream stream instead of growing memory.
QUERY_BUFFER: Final = 16


@final
class Gateway:
    """A running gateway: sessions, queries, token counts, costs. Safe to share among tasks."""

    def __init__(
        self,
        *,
        config: Config,
        to_supervisor: RetrySupervisorAddress,
        to_ledger: CostLedgerAddress,
        metrics: Metrics | None = None,
        bootstrap_state: Callable[[], BootstrapState] | None = None,
        to_bootstrap: BootstrapFetcherAddress | None = None,
        drain: Drain | None = None,
        ledger: CostLedger | None = None,
        models_fetcher: ModelsFetcher | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self.config = config
        # Ledger access tokens with limits (actors/access/budgets.py); None: not kept (tests).
        self.budgets = budgets
        # Names the user a gateway-issued bearer token belongs to (issue 19); None: no
        # identity store, only access tokens and ledger tokens authenticate.
        self.resolve_principal: ResolvePrincipal | None = None
        # The organisation policy (actors/access/policy.py: allow-lists, managed settings) and the
        # OTLP exports' sink (actors/observe/otlp.py); run_gateway sets them from the configuration.
        self.policy = PolicySource()
        self._ledger = ledger
        self._models_fetcher = models_fetcher
        # The graceful shutdown's signals, shared with the RetrySupervisor and the doors.
        self.drain = drain if drain is not None else Drain()
        # The BootstrapFetcher's published snapshot (actors/messages/bootstrap.py).
        self._bootstrap_state = bootstrap_state
        self._to_bootstrap = to_bootstrap
        self.metrics = metrics if metrics is not None else Metrics()
        self.telemetry = Telemetry(self.metrics)
        self._session_users: Counter[str] = Counter()
        self._to_supervisor = to_supervisor
        self._to_ledger = to_ledger

    @contextmanager
    def session_in_use(self, session_id: str) -> Iterator[None]:
        """Count a user of the session (a WebSocket connection, an HTTP request) for the
        ``switchboard_active_sessions`` gauge: a session is active while it has one."""
        self._session_users[session_id] += 1
        if self._session_users[session_id] == 1:
            self.metrics.session_opened()
        try:
            yield
        finally:
            self._session_users[session_id] -= 1
            if self._session_users[session_id] == 0:
                del self._session_users[session_id]
                self.metrics.session_closed()

    @property
    def ledger_health(self) -> LedgerHealth:
        """The cost ledger's health (``/healthz``). Not a checkpoint."""
        if self._ledger is None:
            return LedgerHealth(healthy=True, committing=True)
        return self._ledger.health

    # With a PostgreSQL ledger: what the instances on it coordinate (actors.store.pg_fleet); set by
    # ``run_gateway``, read by the WebSocket door (takeover across instances).
    fleet: FleetLink | None = None

    @property
    def instance_id(self) -> str:
        """This process's instance id (README.md "Deployment"; ``/healthz``). Not a checkpoint."""
        return self._ledger.instance_id if self._ledger is not None else ""

    async def session_activity(self) -> SessionActivity:
        """The RetrySupervisor's sessions now: those with an upstream request in flight
        (docs/reference/reference-client.md 8, session activity) and the idle ones, each with the trio time
        its last request ended, for idle timeouts. A checkpoint.

        Raises ActorUnavailable when the supervisor is gone.
        """
        return await ask(self._to_supervisor, lambda reply: GetSessionActivity(reply=reply))

    @property
    def catalog(self) -> Catalog:
        """The model catalog in force: the built-in one, merged with the upstream's
        ``GET /v1/models`` once the ModelsFetcher has it (an immutable snapshot). Not a
        checkpoint."""
        return self._models_fetcher.catalog if self._models_fetcher is not None else BUILTIN

    async def settled_catalog(self) -> Catalog:
        """The catalog once the startup ``GET /v1/models`` has ended (fetched, failed or
        skipped). A checkpoint."""
        if self._models_fetcher is not None:
            await self._models_fetcher.settled.wait()
        return self.catalog

    @property
    def models(self) -> tuple[ModelOption, ...]:
        """The model options every client sees: the defaults, then the new ones learnt at
        bootstrap (the BootstrapFetcher's published state, immutable). Not a checkpoint."""
        learnt = self._bootstrap_state().model_options if self._bootstrap_state is not None else ()
        return merge_model_options(DEFAULT_MODEL_OPTIONS, learnt)

    async def bootstrap(self, *, settled: bool = False) -> BootstrapState:
        """What the bootstrap API said (``client_data``, model options); with ``settled``,
        once the startup fetch has ended. A checkpoint."""
        if self._to_bootstrap is None:
            return BootstrapState(settled=True)
        return await ask(self._to_bootstrap, lambda reply: GetBootstrap(reply=reply, settled=settled))

    async def authenticate(self, candidates: Sequence[str]) -> Access | None:
        """Who a request presenting the tokens ``candidates`` is; None: refuse it (401).
        ``SWITCHBOARD_ACCESS_TOKENS`` and the ledger's tokens (``switchboard tokens``) are
        accepted (actors/access/budgets.py), and, once ``resolve_principal`` is set, the bearer
        tokens it names a user for (issue 19). A checkpoint."""
        return await authenticate(self.budgets, self.config.access_tokens, candidates, self.resolve_principal)

    async def open_session(
        self, session_id: str, *, owner: str | None = None, user: str | None = None
    ) -> SessionOpened:
        """Create or resume a session; ``owner_ok`` False means another token owns it.
        ``user``: the signed-in user a new session is kept under in the ledger."""
        return await ask(
            self._to_ledger, lambda reply: OpenSession(session_id=session_id, owner=owner, user=user, reply=reply)
        )

    async def start_query(
        self,
        session_id: str,
        query: Query,
        outbound: trio.MemorySendChannel[GatewayFrame],
        scope: trio.CancelScope | None = None,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        admission_timeout: float | None = None,
        options: QueryOptions = DEFAULT_OPTIONS,
        budget: str | None = None,
        subjects: tuple[str, ...] = (),
    ) -> trio.CancelScope:
        """Start a query whose frames go to ``outbound`` (the query takes that end and closes
        it, also when this raises). Returns the query's abort handle (``scope``, or a new
        one): cancel it to abort. ``headers`` are extra upstream headers for this query
        (lower-case names; they override the defaults); ``options`` the HTTP door's
        (actors/supervisor/options.py). A checkpoint.

        While the cost ledger cannot commit (and does not fail open), the query ends at once
        with an ``error`` frame of type ``ledger_unavailable`` (status 503).

        ``budget``: the name of the ledger access token the query runs under; its limits
        are checked and its worst-case cost reserved first (actors/access/query_budgets.py),
        and a query they refuse ends at once with an ``error`` frame of type ``rate_limit_error``
        (status 429, ``retry_after_s`` when waiting helps). The reservation is settled to
        the query's cost when it ends (a query refused meanwhile, e.g. by admission, settles 0).
        ``subjects``: the signed-in user's and groups' subject keys whose limits the query
        counts against as well (actors/access/policy.py), each reserved, topped up and settled alike.

        Admission (actors/supervisor/admission.py; handover.py): while ``Config.max_queries``
        queries run, a new one waits in line for a slot. Without ``admission_timeout`` this returns at once and the
        query waits in its run (its first frames a ``queued``, then ``heartbeat``s); with it,
        this waits here for at most that many seconds before handing the query over.

        Raises:
            RemoteProtocolError: the request body cannot be sent (``bad_frame``).
            ShuttingDown: a graceful shutdown has begun (``shutdown``), also while it waited.
            Overloaded: no slot freed within ``admission_timeout``.
            ActorUnavailable: the gateway is stopping.
        """
        try:
            validate_request(query.request, frame_id=query.id)
        except RemoteProtocolError:
            outbound.close()
            raise
        scope = scope if scope is not None else trio.CancelScope()
        refusal = self._ledger.health.refusal if self._ledger is not None else None
        if refusal is not None:
            self.metrics.ledger_refused()
            error = ErrorInfo(type="ledger_unavailable", message=refusal, status=503, request_id=None)
            await _refuse(outbound, query.id, error)
            return scope
        on_end: Callable[[int], None] | None = None
        top_up: Callable[[JsonObject], Awaitable[ErrorInfo | None]] | None = None
        names = ((budget,) if budget is not None else ()) + subjects
        if names and self.budgets is not None:
            budgets = self.budgets
            holds = await reserve_all(budgets, self.metrics, names, session_id, query, options)
            if isinstance(holds, ErrorInfo):
                await _refuse(outbound, query.id, holds)
                return scope
            on_end = functools.partial(settle_all, holds)
            top_up = functools.partial(top_up_all, budgets, self.metrics, holds, query.id)
        run = RunQuery(
            session_id=session_id, query=query, scope=scope, outbound=outbound, headers=headers,
            options=options, on_end=on_end, top_up=top_up,
        )
        await hand_over(self.drain, self._to_supervisor, self.metrics, run, admission_timeout)
        return scope

    async def shutdown(self, grace: float | None = None) -> None:
        """Drain gracefully: take no new query (``start_query`` raises ``ShuttingDown``; the
        doors answer new work with ``shutting_down``, ``/healthz`` with 503 and close idle
        WebSocket connections with 1001), let the queries in flight run for ``grace``
        seconds (default ``Config.shutdown_grace``), end those still running with an
        ``error`` frame of type ``shutting_down`` (their usage is recorded), and wait for the
        doors to write their last frames and close. Returns then; the actors keep running
        until the gateway's nursery is cancelled, so the ledger still takes the last usage.

        Calling it again while it runs brings the end of the grace forward to at most
        ``grace`` from now (a second signal: ``shutdown(0)``) and returns when the first
        call does. A checkpoint.
        """
        await self.drain.shutdown(self.config.shutdown_grace if grace is None else grace)

    @asynccontextmanager
    async def query(
        self,
        request: JsonObject,
        *,
        session_id: str = "default",
        query_id: str | None = None,
        source: str = "sdk",
        fallback_model: str | None = None,
        max_retries: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        admission_timeout: float | None = None,
        options: QueryOptions = DEFAULT_OPTIONS,
        budget: str | None = None,
        subjects: tuple[str, ...] = (),
    ) -> AsyncIterator[trio.MemoryReceiveChannel[GatewayFrame]]:
        """Run one query; yields its frames, ending after the terminal one.

        Leaving the block before the terminal frame aborts the query (its usage is still
        recorded). Raises ``RemoteProtocolError`` for a request that cannot be sent.

        While ``Config.max_queries`` queries run, the query waits in line for a slot: its
        first frames are then a ``Queued`` and ``Heartbeat``s (attempt 0) every 30 s. With
        ``admission_timeout`` it waits before the block is entered instead, and raises
        ``Overloaded`` when no slot freed in time (``start_query``).
        """
        query = Query(
            id=query_id or secrets.token_hex(8),
            request=request,
            source=source,
            fallback_model=fallback_model,
            max_retries=max_retries,
        )
        send, receive = trio.open_memory_channel[GatewayFrame](QUERY_BUFFER)
        with receive:
            scope = await self.start_query(
                session_id, query, send, headers=headers, options=options, admission_timeout=admission_timeout,
                budget=budget, subjects=subjects,
            )
            try:
                yield receive
            finally:
                scope.cancel(reason="caller left the query")

    async def count_tokens(
        self,
        request: JsonObject,
        *,
        query_id: str = "count",
        headers: tuple[tuple[str, str], ...] = (),
        transparent: bool = False,
    ) -> CountResult:
        """Count a request's input tokens upstream; ``transparent``: the body and betas as
        sent (``RunCountTokens``). A checkpoint."""
        validate_request(request, count_only=True, frame_id=query_id)
        return await ask(
            self._to_supervisor,
            lambda reply: RunCountTokens(
                query_id=query_id, request=request, reply=reply, headers=headers, transparent=transparent
            ),
        )

    async def read_ledger(self, make: Callable[[trio.MemorySendChannel[T]], CostLedgerMsg]) -> T:
        """Ask the cost ledger one read-only question (the dashboard's ``ReadSpend``,
        ``ReadTop``, ``SessionOwners``) and wait for its answer. A checkpoint.

        Raises ActorUnavailable when the ledger is gone or the read failed (it logged why).
        """
        return await ask(self._to_ledger, make)

    async def budget(self, name: str | None) -> TokenBudget | msgspec.UnsetType:
        """The budget of the ledger token named ``name`` now (``ready.budget``, the ``cost``
        answer, the HTTP door's header); UNSET when there is none. A checkpoint."""
        if name is None or self.budgets is None:
            return msgspec.UNSET
        view = await self.budgets.view(name)
        return msgspec.UNSET if view is None else view

    async def cost(self, session_id: str) -> CostSummary:
        """The session's cost summary. A checkpoint."""
        return await ask(self._to_ledger, lambda reply: GetCost(session_id=session_id, reply=reply))


async def _refuse(outbound: trio.MemorySendChannel[GatewayFrame], query_id: str, error: ErrorInfo) -> None:
    """End a query refused before it started: its one ``error`` frame, then its outbound closed."""
    with outbound:
        try:
            await outbound.send(ErrorFrame(id=query_id, error=error))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
