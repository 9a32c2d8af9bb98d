"""RetrySupervisor: runs each query's attempts and decides, by the reference rules, what next.

Role:
    For each ``RunQuery``: run attempt after attempt through the StreamRelay, as the
    query's pure machine (protocol/query_machine.py, which applies ``protocol.retry``'s
    rules after a failed one) says. Announce every retry (``retry``
    frame, from the first one), void a partial attempt (``tombstone``), switch model after
    repeated overload (``fallback``), switch fast mode off (``fast_mode``), and end the query
    with exactly one terminal frame: ``done``, ``error`` or ``aborted``. Each query is a
    ``QueryRun`` (actors/supervisor/run.py) in a task of this actor's nursery; this module holds
    the actor: its inbox, the state its queries share (one ``QueryContext``,
    actors/supervisor/context.py), and the count_tokens requests.
Inbox (``RetrySupervisorMsg``):
    ``RunQuery`` (FrontDoor, Gateway): start a query; it runs in its own task.
    ``RunCountTokens`` (FrontDoor, Gateway): one count_tokens request.
    ``GetSessionActivity`` (Gateway, for the dashboard): a ``SessionActivity`` snapshot.
Outputs:
    StreamRelay (``RunAttempt``, ``RunCount``), ClientPool (``Refresh`` after a 401 or a
    revoked token, ``ReportBroken`` after a reset connection), CostLedger
    (``RecordDuration``), each query's outbound channel (the query owns its clone).
Shared state:
    ``SharedRetryState``: a per-model overload gate (no retry storms: while a model is
    overloaded, one probe at a time goes upstream and the other queries wait without
    spending attempts; see protocol/overload.py) and per-model fast-mode cooldowns.
    ``SessionStates``: per-session request latches, cache-break baselines and activity,
    this actor's task tree's alone (others ask ``GetSessionActivity``). ``ProviderBuilds``: the builder's settings per provider.
Lifecycle:
    ``run`` opens its nursery and inbox, then ``task_status.started(address)``; when the inbox
    ends it lets the queries in flight finish, then closes its addresses of the StreamRelay,
    the CostLedger and the ClientPool, and returns.
Failure policy:
    Each query's run is a supervision boundary (docs/supervision.md): an unexpected
    exception ends that query alone with an ``error`` frame of type ``internal_error`` (the
    usage of its attempts is recorded by the StreamRelay as always), is logged once with the
    query id and counted (``where="query"``). A message whose handling fails is answered
    so (a ``RunQuery`` with that ``error`` frame, a ``RunCountTokens`` with ``fail``),
    counted as ``actor:RetrySupervisor``, and the next message is served.
    The query's ``scope`` is its abort signal (abort, disconnect, takeover, shutdown): the
    attempt in flight is cancelled, its usage collected (shielded, with a deadline) and an
    ``aborted`` frame sent with the usage and cost so far; when the graceful shutdown's
    cut-off cancelled it (``Drain.ended_by_shutdown``), an ``error`` frame of type
    ``shutting_down`` instead. A client that went away only
    means frames go nowhere; usage is still recorded.
Timers:
    Backoff sleeps and gate waits on trio's clock (a MockClock drives them), with a
    ``heartbeat`` frame at least every ``HEARTBEAT_INTERVAL`` of any wait.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, assert_never, final

import trio

from actors._util import (
    CLEANUP_TIMEOUT,
    answer,
    contained,
    fail,
    inbox_messages,
    internal_error_info,
    receive_reply,
    report_internal,
)
from actors.config.settings import Config
from actors.messages.ledger import CostLedgerAddress
from actors.messages.pool import ClientPoolAddress
from actors.observe.metrics import Metrics
from actors.supervisor.builder_settings import ProviderBuilds
from actors.supervisor.channel import deliver
from actors.supervisor.drain import Drain
from actors.supervisor.run import QueryRun
from actors.supervisor.shared import SharedRetryState

if TYPE_CHECKING:
    from actors.store.fleet_link import FleetLink
from actors.messages.relay import CountResult, RunCount, StreamRelayAddress
from actors.messages.supervisor import (
    GetSessionActivity,
    RetrySupervisorAddress,
    RetrySupervisorMsg,
    RunCountTokens,
    RunQuery,
    SessionActivity,
)
from actors.supervisor.context import QueryContext
from actors.supervisor.session_state import SessionStates
from protocol.betas import count_tokens_betas, split_beta_header, with_beta_header
from protocol.errors import ActorFailed
from protocol.frames import ErrorFrame, ErrorInfo
from protocol.models.catalog import BUILTIN, Catalog
from protocol.passthrough import passthrough_model
from protocol.request_builder import count_tokens_request
from protocol.wire import JsonObject

log = logging.getLogger("switchboard.supervisor")
# The error of a query whose run failed outside its own boundary (the backstop's answer).
_RUN_FAILED: Final = internal_error_info(ActorFailed("the query's run failed"))


@final
class RetrySupervisor:
    """Runs queries with the reference client's retry rules (see the module docstring)."""

    def __init__(
        self,
        *,
        config: Config,
        to_relay: StreamRelayAddress,
        to_ledger: CostLedgerAddress,
        to_pool: ClientPoolAddress,
        rng: random.Random,
        metrics: Metrics | None = None,
        drain: Drain | None = None,
        catalog: Callable[[], Catalog] = lambda: BUILTIN,
        fleet: FleetLink | None = None,
    ) -> None:
        self._config = config
        # With a PostgreSQL ledger: the overload gates shared by the instances (actors.store.pg_fleet).
        self._fleet = fleet
        # The graceful shutdown: each query run reports its end to it (actors/supervisor/drain.py).
        self._drain = drain
        self._metrics = metrics if metrics is not None else Metrics()
        self._to_relay = to_relay
        self._to_ledger = to_ledger
        self._to_pool = to_pool
        self._rng = rng
        # issue 5: request-construction latches, cache-break baselines and activity per session.
        self._sessions = SessionStates()
        # The model catalog in force (the ModelsFetcher's, once it has merged the upstream's).
        self._builds = ProviderBuilds(config, catalog)

    async def run(
        self, *, task_status: trio.TaskStatus[RetrySupervisorAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve queries until every address clone is closed. Startable."""
        shared = SharedRetryState(
            fast_mode_disabled=self._config.disable_fast_mode, metrics=self._metrics, fleet=self._fleet
        )
        ctx = QueryContext(
            config=self._config,
            shared=shared,
            sessions=self._sessions,
            builds=self._builds,
            metrics=self._metrics,
            rng=self._rng,
            to_relay=self._to_relay,
            to_ledger=self._to_ledger,
            to_pool=self._to_pool,
            drain=self._drain,
        )
        address, inbox = trio.open_memory_channel[RetrySupervisorMsg](0)
        with self._to_relay, self._to_ledger, self._to_pool:
            async with trio.open_nursery() as nursery:
                with inbox:
                    task_status.started(address)
                    async for msg in inbox_messages(inbox):
                        try:
                            self._handle(msg, ctx, nursery)
                        except Exception as exc:
                            report_internal(log, self._metrics, "actor:RetrySupervisor", _what(msg), exc)
                            self._refuse(msg, internal_error_info(exc), nursery)

    def _handle(self, msg: RetrySupervisorMsg, ctx: QueryContext, nursery: trio.Nursery) -> None:
        match msg:
            case RunQuery():
                # The run is the query's boundary; this backstop catches what escapes it.
                task = functools.partial(
                    contained,
                    self._query_run(msg, ctx).run,
                    log=log,
                    metrics=self._metrics,
                    where="query",
                    what=_what(msg),
                    on_failure=functools.partial(self._refuse, msg, _RUN_FAILED, nursery),
                )
            case RunCountTokens():
                task = functools.partial(
                    contained,
                    functools.partial(self._count_task, msg),
                    log=log,
                    metrics=self._metrics,
                    where="actor:RetrySupervisor",
                    what=_what(msg),
                    on_failure=functools.partial(fail, msg.reply, "RetrySupervisor"),
                )
            case GetSessionActivity():
                sessions = self._sessions
                answer(msg.reply, SessionActivity(active=tuple(sessions.active()), idle=tuple(sessions.idle())))
                return
            case _:
                assert_never(msg)
        nursery.start_soon(task)

    def _refuse(self, msg: RetrySupervisorMsg, info: ErrorInfo, nursery: trio.Nursery) -> None:
        """Answer a message that could not be served: a query gets its terminal ``error``
        frame (unless its run closed its channel already), a count request ``fail``."""
        match msg:
            case RunQuery():
                nursery.start_soon(_end_query, msg, info, self._drain)
            case RunCountTokens() | GetSessionActivity():
                fail(msg.reply, "RetrySupervisor")
            case _:
                assert_never(msg)

    def _query_run(self, msg: RunQuery, ctx: QueryContext) -> QueryRun:
        return QueryRun(msg, ctx)

    async def _count_task(self, msg: RunCountTokens) -> None:
        with msg.reply:
            try:
                result = await self._count(msg)
            except Exception:
                # Answered before the channel closes; ``contained`` reports it.
                fail(msg.reply, "RetrySupervisor")
                raise
            if result is not None:
                answer(msg.reply, result)

    async def _count(self, msg: RunCountTokens) -> CountResult | None:
        """The relay's count; None when the relay dropped the request (shutting down)."""
        send, receive = trio.open_memory_channel[CountResult](1)
        headers, client_betas = split_beta_header(msg.headers)
        settings = self._builds.settings(str(msg.request.get("model")))
        if msg.transparent:
            model = passthrough_model(str(msg.request.get("model")), settings.models, settings.provider)
            body: JsonObject = {**msg.request, "model": model}
            betas = count_tokens_betas(client_betas, settings.provider)
        else:
            built = count_tokens_request(msg.request, settings=settings, client_betas=client_betas)
            body, betas = built.body, built.betas
        with receive:
            await self._to_relay.send(RunCount(body=body, headers=with_beta_header(headers, betas), reply=send))
            try:
                return await receive_reply(receive)
            except trio.EndOfChannel:
                return None


def _what(msg: RetrySupervisorMsg) -> str:
    match msg:
        case RunQuery():
            return f"query {msg.query.id}"
        case RunCountTokens():
            return f"count_tokens {msg.query_id}"
        case GetSessionActivity():
            return "message GetSessionActivity"
        case _:
            assert_never(msg)


async def _end_query(msg: RunQuery, info: ErrorInfo, drain: Drain | None) -> None:
    """The terminal ``error`` frame of a query whose run could not start or failed outside
    its own boundary; nothing when its channel is closed already (its run sent its end).
    The drain then no longer counts it, and its slot passes on (a no-op when its run ended)."""
    try:
        with msg.outbound, trio.move_on_after(CLEANUP_TIMEOUT):
            await deliver(msg.outbound, ErrorFrame(id=msg.query.id, error=info))
    finally:
        if drain is not None:
            drain.query_ended(msg.scope)
