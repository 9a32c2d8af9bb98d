"""The composition root: the actors, then the doors.

``run_gateway(config, *, task_status)`` starts every actor in dependency order inside its own
nursery (CostLedger, ClientPool, BootstrapFetcher, ModelsFetcher, StreamRelay, RetrySupervisor),
hands each its own clone of the addresses it talks to (their messages: ``actors/messages/``),
and reports a ``Gateway`` handle (``actors/gateway.py``, the embedding API) through
``task_status.started``; it runs until cancelled. ``open_gateway(config)`` is the same as an
async context manager that owns its nursery (README.md "Embedding"). With
``Config.use_emulator`` the built-in emulator is started first, on loopback, and the gateway
talks to it.

``run_server`` runs the gateway with its WebSocket door and, when configured, its HTTP door,
as one startable (used by ``switchboard serve``). The service lives or dies whole
(docs/supervision.md): a door whose listener fails or stops raises ``ServiceFailed``, which
cancels the other door and the gateway, so a process is never left half alive (the HTTP door
serving without the WebSocket door, or the reverse). Everything short of that (a query, a
connection, a request, an actor's message) is contained where it happens and never reaches
here.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import httpx
import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT
from actors.access.budgets import Budgets
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
from actors.doors.http import HttpDoor
from actors.doors.oauth import OAuthDoor, open_oauth_door
from actors.doors.websocket import FrontDoor
from actors.gateway import Gateway
from actors.messages.bootstrap import BootstrapFetcherAddress
from actors.messages.ledger import CostLedgerAddress
from actors.messages.pool import ClientPoolAddress
from actors.messages.supervisor import RetrySupervisorAddress
from actors.observe.log import Redactor
from actors.observe.metrics import Metrics
from actors.observe.otlp import Telemetry
from actors.retry_supervisor import RetrySupervisor
from actors.store.sqlite import MEMORY
from actors.store.sqlite_fleet import SqliteFleet
from actors.store.sqlite_shared import SharedSqliteTokenStore, open_shared_store
from actors.store.stores import open_token_store
from actors.stream_relay import StreamRelay
from actors.supervisor.admission import Admission
from actors.supervisor.drain import Drain
from actors.upstream.models_fetcher import ModelsFetcher
from protocol.errors import ServiceFailed

if TYPE_CHECKING:
    from actors.store.fleet_link import FleetLink

log = logging.getLogger("switchboard.gateway")

EMULATOR_KEY: Final = "sk-ant-emulator-local"
# Backstop for a graceful shutdown: how long the ledger keeps taking the usage of attempts
# that are being aborted. Longer than the relay's cleanup deadline, so it never cuts one off.
SHUTDOWN_GRACE: Final = 2 * CLEANUP_TIMEOUT


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
        if config.use_emulator:
            from emulator import Emulator  # only a gateway without credentials needs it

            url = await nursery.start(Emulator(api_keys=frozenset({EMULATOR_KEY})).run)
            log.info("no credentials and no ANTHROPIC_BASE_URL: using the built-in emulator at %s", url)
            config = msgspec.structs.replace(config, base_url=url, api_key=Secret(EMULATOR_KEY))
        ledger, to_ledger, fleet, budgets = await _start_ledger(nursery, config, metrics)
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
        drain = Drain(Admission(config.max_queries, metrics))
        to_supervisor = await _start_queries(nursery, config, to_pool, to_ledger, metrics, drain, models, fleet)
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


async def _start_ledger(
    nursery: trio.Nursery, config: Config, metrics: Metrics
) -> tuple[CostLedger, CostLedgerAddress, FleetLink | None, Budgets]:
    """Start the CostLedger on its store, the fleet link of a shared ledger, and the access
    tokens' Budgets on the ledger's store."""
    # One of ``serve --workers N``'s processes on an SQLite file: the file is shared
    # (actors/store/sqlite_shared.py; a PostgreSQL ledger is shared anyway).
    shared_file = config.workers > 1 and not is_postgres_url(ledger_file(config))
    new_ledger = functools.partial(CostLedger, open_store=open_shared_store) if shared_file else CostLedger
    ledger = new_ledger(
        ledger_file(config), metrics=metrics, fail_open=config.ledger_fail_open, drain_grace=SHUTDOWN_GRACE
    )
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
    return ledger, to_ledger, fleet, budgets


async def _start_queries(
    nursery: trio.Nursery,
    config: Config,
    to_pool: ClientPoolAddress,
    to_ledger: CostLedgerAddress,
    metrics: Metrics,
    drain: Drain,
    models: ModelsFetcher,
    fleet: FleetLink | None,
) -> RetrySupervisorAddress:
    """Start the StreamRelay and the RetrySupervisor, each with its own address clones."""
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
    to_supervisor: RetrySupervisorAddress = await nursery.start(supervisor.run)
    to_relay.close()
    return to_supervisor


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


class Server(msgspec.Struct, frozen=True, kw_only=True):
    """A running server: the embedding handle, the WebSocket door's URL and the HTTP door's
    (None when ``Config.http_port`` is None)."""

    gateway: Gateway
    ws_url: str
    http_url: str | None = None
    # The sign-in endpoints and their users (``Config.oauth``), else None.
    oauth: OAuthDoor | None = None


async def run_server(
    config: Config,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway and its doors until cancelled. Startable: gets the Server once every
    door accepts connections.

    A graceful shutdown is ``server.gateway.shutdown()`` (docs/protocol.md 3): the doors
    refuse new work, close their connections once their queries ended, and return; when it
    returns, cancel this to stop the actors (the ledger drains last)."""
    # The sign-in store is closed once the doors and their worker threads ended (PostgreSQL:
    # its connections).
    oauth: OAuthDoor | None = None
    try:
        async with trio.open_nursery() as nursery:
            gateway: Gateway = await nursery.start(functools.partial(run_gateway, config, transport=transport))
            drain = gateway.drain
            door = FrontDoor(gateway, config, gateway.fleet)
            port: int = await nursery.start(_door, "WebSocket door", door.run, drain)
            host = f"[{config.host}]" if ":" in config.host else config.host
            http_url: str | None = None
            if config.http_port is not None:
                oauth = await _sign_in(config, gateway)
                http_port: int = await nursery.start(_door, "HTTP door", HttpDoor(gateway, config, oauth).run, drain)
                http_url = f"{'https' if config.tls_cert else 'http'}://{host}:{http_port}"
            task_status.started(Server(gateway=gateway, ws_url=f"ws://{host}:{port}", http_url=http_url, oauth=oauth))
    finally:
        if oauth is not None:
            oauth.store.close()


async def _sign_in(config: Config, gateway: Gateway) -> OAuthDoor | None:
    """With ``Config.oauth``: the sign-in endpoints over the ledger's users, and the gateway
    resolving their bearer tokens (README.md "Claude Code for a whole organisation")."""
    if not config.oauth:
        return None
    location = ledger_file(config)
    if location == MEMORY:
        oauth = open_oauth_door(location, public_url=config.public_url)
    else:
        oauth = await trio.to_thread.run_sync(lambda: open_oauth_door(location, public_url=config.public_url))
    gateway.resolve_principal = oauth.resolve
    return oauth


async def _door(
    name: str,
    run: Callable[..., Awaitable[None]],
    drain: Drain,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a door; its end, unless the server is being cancelled or drained (a graceful
    shutdown, after which a door returns by itself), ends the service.

    Raises:
        ServiceFailed: the door's listener failed (also at start: the port is taken) or
            stopped serving.
    """
    try:
        await run(task_status=task_status)
    except Exception as exc:
        raise ServiceFailed(f"the {name} failed: {_leaf(exc)!r}") from exc
    if drain.begun.is_set():
        return
    # Returning under a cancelled scope is a shutdown, and this checkpoint says so.
    await trio.lowlevel.checkpoint()
    raise ServiceFailed(f"the {name} stopped serving")


def _leaf(exc: BaseException) -> BaseException:
    """The first exception of a (nested) group, for a one-line message."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
