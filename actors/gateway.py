"""The composition root and the embedding API.

``run_gateway(config, *, task_status)`` starts every actor in dependency order inside its own
nursery (CostLedger, ClientPool, BootstrapFetcher, ModelsFetcher, StreamRelay, RetrySupervisor),
hands each its own clone of the addresses it talks to (their messages: ``actors/messages/``),
and reports a ``Gateway`` handle through ``task_status.started``; it runs until cancelled.
``open_gateway(config)`` is the same as an async context manager that owns its nursery. The
doors (the WebSocket FrontDoor, the HTTP door) are not started here: ``actors/server.py``
runs them on a Gateway.

The Gateway owns no actor's state: it asks by message (``GetSessionActivity``,
``GetBootstrap``, the ledger's reads) or reads a snapshot an actor publishes (the
BootstrapFetcher's ``BootstrapState``, the ModelsFetcher's catalog, the ledger's health).

Embedding (no socket of ours in between)::

    async with open_gateway(config) as gateway:
        async with gateway.query({"model": "claude-sonnet-4-6", "max_tokens": 256,
                                  "messages": [{"role": "user", "content": "Hi"}]}) as frames:
            async for frame in frames:
                ...   # EventFrame, RetryFrame, ..., then one Done | Aborted | ErrorFrame

While ``Config.max_queries`` queries run, a new one waits in line (actors/supervisor/admission.py): its
first frames are then ``Queued`` and ``Heartbeat``s; ``gateway.query(..., admission_timeout=S)``
waits at most ``S`` seconds before the block and raises ``Overloaded`` instead.

With ``Config.use_emulator`` the built-in emulator is started first, on loopback, and the
gateway talks to it.

Graceful shutdown (``actors.supervisor.drain``; what ``switchboard serve`` does on SIGTERM/SIGINT)::

    await gateway.shutdown()   # no new query; those in flight get Config.shutdown_grace,
                               # then end with error shutting_down; returns once drained
    # then leave open_gateway (or cancel run_gateway): the actors stop, the ledger last
"""

from __future__ import annotations

import functools
import logging
import random
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Final, TypeVar, final

import httpx
import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, ask
from actors.access.budgets import (
    Access,
    Budgets,
    HeldReservation,
    Reservation,
    ResolvePrincipal,
    authenticate,
)
from actors.access.policy import PolicySource
from actors.bootstrap_fetcher import BootstrapFetcher
from actors.client_pool import ClientPool
from actors.config.settings import (
    Config,
    Secret,
    bootstrap_cache_file,
    is_postgres_url,
    ledger_file,
)
from actors.cost_ledger import CostLedger
from actors.messages.bootstrap import BootstrapFetcherAddress, BootstrapState, GetBootstrap
from actors.messages.ledger import (
    CostLedgerAddress,
    CostLedgerMsg,
    GetCost,
    OpenSession,
    SessionOpened,
)
from actors.messages.pool import ClientPoolAddress
from actors.messages.relay import CountResult
from actors.messages.supervisor import (
    GetSessionActivity,
    RetrySupervisorAddress,
    RunCountTokens,
    RunQuery,
    SessionActivity,
)
from actors.observe.log import Redactor
from actors.observe.metrics import Metrics
from actors.observe.otlp import Telemetry
from actors.retry_supervisor import RetrySupervisor
from actors.store.health import LedgerHealth
from actors.store.rows import STORE_ERRORS
from actors.store.sqlite import MEMORY
from actors.store.sqlite_fleet import SqliteFleet
from actors.store.sqlite_shared import SharedSqliteTokenStore, open_shared_store
from actors.store.stores import open_token_store
from actors.store.token_rows import SUBJECT_PREFIXES
from actors.stream_relay import StreamRelay
from actors.supervisor.admission import Admission, Ticket
from actors.supervisor.drain import Drain
from actors.supervisor.options import DEFAULT_OPTIONS, QueryOptions
from actors.upstream.models_fetcher import ModelsFetcher
from protocol.bootstrap import merge_model_options
from protocol.budget import Refusal
from protocol.client_request import validate_request
from protocol.errors import ActorUnavailable, Overloaded, RemoteProtocolError, ShuttingDown
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

log = logging.getLogger("switchboard.gateway")

# Frames a query may have queued for its reader: lets the relay hand over a chunk's several
# events without a task switch per event, yet bounded, so a slow reader pushes back on the
# upstream stream instead of growing memory.
QUERY_BUFFER: Final = 16
EMULATOR_KEY: Final = "sk-ant-emulator-local"
# Backstop for a graceful shutdown: how long the ledger keeps taking the usage of attempts
# that are being aborted. Longer than the relay's cleanup deadline, so it never cuts one off.
SHUTDOWN_GRACE: Final = 2 * CLEANUP_TIMEOUT
# A token's refusal that waiting does not end (protocol/budget.py ``Refusal.kind``): not a
# 429. The budget, rpm and concurrency refusals are ``rate_limit_error`` 429.
_REFUSALS: Final = {"model": ("permission_error", 403), "revoked": ("authentication_error", 401)}


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
        (reference-client.md 8, session activity) and the idle ones, each with the trio time
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
        are checked and its worst-case cost reserved first (actors/access/budgets.py), and a query
        they refuse ends at once with an ``error`` frame of type ``rate_limit_error``
        (status 429, ``retry_after_s`` when waiting helps). The reservation is settled to
        the query's cost when it ends (a query refused meanwhile, e.g. by admission, settles 0).
        ``subjects``: the signed-in user's and groups' subject keys whose limits the query
        counts against as well (actors/access/policy.py), each reserved, topped up and settled alike.

        Admission (actors/supervisor/admission.py): while ``Config.max_queries`` queries run, a new one
        waits in line for a slot. Without ``admission_timeout`` this returns at once and the
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
            with outbound:
                try:
                    await outbound.send(ErrorFrame(id=query.id, error=error))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            return scope
        on_end: Callable[[int], None] | None = None
        top_up: Callable[[JsonObject], Awaitable[ErrorInfo | None]] | None = None
        names = ((budget,) if budget is not None else ()) + subjects
        if names and self.budgets is not None:
            budgets = self.budgets
            holds = await self._reserve_all(budgets, names, session_id, query, options)
            if isinstance(holds, ErrorInfo):
                with outbound:
                    try:
                        await outbound.send(ErrorFrame(id=query.id, error=holds))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                return scope
            on_end = functools.partial(_settle_all, holds)
            top_up = functools.partial(self._top_up_all, budgets, holds, query.id)
        try:
            # Counted before it is handed over, so a shutdown that begins meanwhile waits for it.
            ticket = self.drain.query_started(scope)
        except ShuttingDown:
            outbound.close()
            if on_end is not None:
                on_end(0)
            raise
        try:
            if admission_timeout is not None and not ticket.admitted:
                await self._admit_within(ticket, admission_timeout)
            await self._to_supervisor.send(
                RunQuery(
                    session_id=session_id, query=query, scope=scope, outbound=outbound, headers=headers,
                    options=options, on_end=on_end, top_up=top_up,
                )
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.drain.query_ended(scope)
            outbound.close()
            if on_end is not None:
                on_end(0)
            raise ActorUnavailable("the gateway is shutting down") from exc
        except BaseException:
            self.drain.query_ended(scope)
            outbound.close()
            if on_end is not None:
                on_end(0)
            raise
        return scope

    async def _reserve_all(
        self, budgets: Budgets, names: tuple[str, ...], session_id: str, query: Query, options: QueryOptions
    ) -> list[HeldReservation] | ErrorInfo:
        """Reserve the query's worst case against each subject of ``names`` in turn (its
        token, its user, their groups), or the first refusal (the ones already made are
        then settled to 0)."""
        holds: list[HeldReservation] = []
        for name in names:
            reserved = await self._reserve(budgets, name, session_id, query, options)
            if isinstance(reserved, ErrorInfo):
                _settle_all(holds, 0)
                return reserved
            holds.append(HeldReservation(budgets, reserved))
        return holds

    async def _top_up_all(
        self, budgets: Budgets, holds: list[HeldReservation], query_id: str, request: JsonObject
    ) -> ErrorInfo | None:
        """``_top_up`` each of the query's reservations; the first refusal ends the query
        (what was grown meanwhile is settled with the rest when it ends)."""
        for held in holds:
            refused = await self._top_up(budgets, held, query_id, request)
            if refused is not None:
                return refused
        return None

    async def _reserve(
        self, budgets: Budgets, name: str, session_id: str, query: Query, options: QueryOptions
    ) -> Reservation | ErrorInfo:
        """Reserve the query's worst case for token ``name``, or the error that ends it."""
        size = len(options.raw_body) if options.raw_body is not None else len(msgspec.json.encode(query.request))
        try:
            result = await budgets.reserve(name, query.request, size, session_id=session_id, query_id=query.id)
        except STORE_ERRORS as exc:
            log.error("query %s: the budget of token %s cannot be checked: %s", query.id, name, exc)
            self.metrics.ledger_refused()
            return ErrorInfo(
                type="ledger_unavailable", message="the budget cannot be checked now", status=503, request_id=None
            )
        if isinstance(result, Refusal):
            log.info("query %s refused: %s", query.id, result.message)
            return _refused(name, result)
        return result

    async def _top_up(self, budgets: Budgets, held: HeldReservation, query_id: str, request: JsonObject) -> ErrorInfo | None:
        """Before another billed attempt of a query under a budget: grow its reservation by
        that attempt's worst case, or the error that ends the query (docs/protocol.md
        "Access tokens and budgets")."""
        try:
            refusal = await budgets.top_up(held, request, len(msgspec.json.encode(request)))
        except STORE_ERRORS as exc:
            log.error("query %s: the budget of token %s cannot be checked: %s", query_id, held.name, exc)
            self.metrics.ledger_refused()
            return ErrorInfo(
                type="ledger_unavailable", message="the budget cannot be checked now", status=503, request_id=None
            )
        if refusal is None:
            return None
        log.info("query %s: retry refused: %s", query_id, refusal.message)
        return _refused(held.name, refusal)

    async def _admit_within(self, ticket: Ticket, patience: float) -> None:
        """Wait up to ``patience`` seconds for the ticket's slot (the caller gives the ticket back when
        this raises). A checkpoint.

        Raises:
            Overloaded: the wait ran out; ``retry_after`` estimates when a slot would free.
            ShuttingDown: a shutdown refused the waiting ticket.
        """
        admission = self.drain.admission
        with trio.move_on_after(patience):
            if not await ticket.wait():
                raise ShuttingDown("the gateway is shutting down")
            return
        self.metrics.admission_rejected()
        raise Overloaded(
            f"the gateway is running its maximum of {admission.limit} queries; none ended within {patience:g} s",
            retry_after=admission.retry_after(min(ticket.position, admission.queued)),
        )

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


def _refused(name: str, refusal: Refusal) -> ErrorInfo:
    """The error a budget refusal ends a query with: 429 ``rate_limit_error`` (with when to
    try again), but 403/401 for a model or a revoked token, and 429 ``billing_error`` for a
    user's or a group's spend cap (the gateway protocol's word for it: Claude Code then shows
    the message and does not retry into the block; README.md "Claude Code for a whole
    organisation")."""
    error_type, status = _REFUSALS.get(refusal.kind, ("rate_limit_error", 429))
    if refusal.kind == "budget" and name.startswith(SUBJECT_PREFIXES):
        error_type = "billing_error"
    return ErrorInfo(
        type=error_type, message=refusal.message, status=status, request_id=None, retry_after_s=refusal.retry_after_s
    )


def _settle_all(holds: list[HeldReservation], actual_pico: int) -> None:
    """Settle every reservation of a query to its real cost (each subject spent it all)."""
    for held in holds:
        held.settle(actual_pico)


async def run_gateway(
    config: Config,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole actor system until cancelled. Startable: ``started()`` gets the Gateway.

    ``transport`` replaces the upstream HTTP transport (tests). Internal failures propagate
    as an ExceptionGroup from this function.
    """
    async with trio.open_nursery() as nursery:
        # First: a policy file that cannot be read stops the start before any actor runs.
        policy = PolicySource(config.policy_path)
        await nursery.start(policy.run)
        metrics = Metrics()  # the actors report to it; the HTTP door's GET /metrics renders it
        # One of ``serve --workers N``'s processes on an SQLite file: the file is shared
        # (actors/store/sqlite_shared.py; a PostgreSQL ledger is shared anyway).
        shared_file = config.workers > 1 and not is_postgres_url(ledger_file(config))
        new_ledger = functools.partial(CostLedger, open_store=open_shared_store) if shared_file else CostLedger
        ledger = new_ledger(
            ledger_file(config), metrics=metrics, fail_open=config.ledger_fail_open, drain_grace=SHUTDOWN_GRACE
        )
        if config.use_emulator:
            from emulator import Emulator  # only a gateway without credentials needs it

            url = await nursery.start(Emulator(api_keys=frozenset({EMULATOR_KEY})).run)
            log.info("no credentials and no ANTHROPIC_BASE_URL: using the built-in emulator at %s", url)
            config = msgspec.structs.replace(config, base_url=url, api_key=Secret(EMULATOR_KEY))
        to_ledger: CostLedgerAddress = await nursery.start(ledger.run)
        fleet: FleetLink | None = None
        if is_postgres_url(ledger_file(config)):
            # Several instances on one ledger share takeovers and overload gates (README.md
            # "Deployment"). Imported only then: psycopg is the optional postgres extra.
            from actors.store.pg_fleet import Fleet

            fleet = await nursery.start(Fleet(ledger_file(config), ledger.instance_id).run)
        elif shared_file:
            fleet = await nursery.start(SqliteFleet(ledger_file(config), ledger.instance_id).run)
        # The ledger's store is open and migrated: the tokens' table is there.
        location = ledger_file(config)
        if location == MEMORY:
            budgets = Budgets(open_token_store(location), offload=False, metrics=metrics, instance_id=ledger.instance_id)
        else:
            budgets = Budgets(
                await trio.to_thread.run_sync(
                    lambda: SharedSqliteTokenStore.open(location) if shared_file else open_token_store(location)
                ),
                metrics=metrics,
                instance_id=ledger.instance_id,
            )
        await nursery.start(budgets.run)
        await policy.attach(budgets)
        telemetry = Telemetry(metrics, config.otlp_forward)
        await nursery.start(telemetry.run)
        to_pool: ClientPoolAddress = await nursery.start(ClientPool(config, transport=transport, metrics=metrics).run)
        # Started at once; it fetches in the background and never delays readiness. It leases
        # the pool's client and credential (whatever its source), and asks its refresh after a 401.
        fetcher = BootstrapFetcher(config, to_pool.clone(), cache_path=bootstrap_cache_file(config), metrics=metrics)
        to_bootstrap: BootstrapFetcherAddress = await nursery.start(fetcher.run)
        # Also at once and in the background: the upstream's GET /v1/models, merged into the
        # model catalog that request building and the HTTP door's /v1/models read.
        models = ModelsFetcher(config, to_pool.clone())
        await nursery.start(models.run)
        relay = StreamRelay(
            to_pool=to_pool.clone(),
            to_ledger=to_ledger.clone(),
            idle_timeout=config.stream_idle_timeout,
            nonstreaming_timeout=config.nonstreaming_timeout,
            slow_reader_timeout=config.slow_reader_timeout,
            metrics=metrics,
            redact=Redactor(config.secrets()).redact,
        )
        to_relay = await nursery.start(relay.run)
        rng = random.Random(config.retry_seed)
        drain = Drain(Admission(config.max_queries, metrics))
        supervisor = RetrySupervisor(
            config=config,
            to_relay=to_relay.clone(),
            to_ledger=to_ledger.clone(),
            to_pool=to_pool.clone(),
            rng=rng,
            metrics=metrics,
            drain=drain,
            catalog=lambda: models.catalog,
            fleet=fleet,
        )
        to_supervisor = await nursery.start(supervisor.run)
        to_relay.close()
        to_pool.close()
        gateway = Gateway(
            config=config,
            to_supervisor=to_supervisor,
            to_ledger=to_ledger,
            metrics=metrics,
            bootstrap_state=lambda: fetcher.state,
            to_bootstrap=to_bootstrap,
            drain=drain,
            ledger=ledger,
            models_fetcher=models,
            budgets=budgets,
        )
        gateway.fleet = fleet
        gateway.policy = policy
        gateway.telemetry = telemetry
        # The handle's channel ends close when this task is cancelled: with them closed, each
        # actor sees its inbox end once its other senders are done, and drains in order.
        with to_supervisor, to_ledger, to_bootstrap:
            task_status.started(gateway)
            await trio.sleep_forever()


@asynccontextmanager
async def open_gateway(
    config: Config, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[Gateway]:
    """The gateway as an async context manager owning its nursery; cancelled on exit."""
    async with trio.open_nursery() as nursery:
        gateway: Gateway = await nursery.start(lambda task_status: run_gateway(config, transport=transport, task_status=task_status))
        try:
            yield gateway
        finally:
            nursery.cancel_scope.cancel(reason="gateway closed")
