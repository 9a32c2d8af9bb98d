"""RetrySupervisor: runs each query's attempts and decides, by the reference rules, what next.

Role:
    For each ``RunQuery``: run attempt after attempt through the StreamRelay; after a failed
    one, ask ``protocol.retry.decide`` (pure) what to do. Announce every retry (``retry``
    frame, from the first one), void a partial attempt (``tombstone``), switch model after
    repeated overload (``fallback``), switch fast mode off (``fast_mode``), and end the query
    with exactly one terminal frame: ``done``, ``error`` or ``aborted``. Each query is a
    ``QueryRun`` (actors/query_run.py) in a task of this actor's nursery; this module holds
    the actor: its inbox, the state its queries share, and the count_tokens requests.
Inbox (``RetrySupervisorMsg``):
    ``RunQuery`` (FrontDoor, Gateway): start a query; it runs in its own task.
    ``RunCountTokens`` (FrontDoor, Gateway): one count_tokens request.
Outputs:
    StreamRelay (``RunAttempt``, ``RunCount``), ClientPool (``Refresh`` after a 401 or a
    revoked token, ``ReportBroken`` after a reset connection), CostLedger
    (``RecordDuration``), each query's outbound channel (the query owns its clone).
Shared state:
    ``SharedRetryState``: a per-model overload gate (no retry storms: while a model is
    overloaded, one probe at a time goes upstream and the other queries wait without
    spending attempts; see protocol/overload.py) and per-model fast-mode cooldowns.
    ``SessionStates`` (``sessions``, which the Gateway reads): per-session request latches,
    cache-break baselines and activity. ``ProviderBuilds``: the builder's settings per provider.
Lifecycle:
    ``run`` opens its nursery and inbox, then ``task_status.started(address)``; when the inbox
    ends it lets the queries in flight finish, then closes its addresses of the StreamRelay,
    the CostLedger and the ClientPool, and returns.
Failure policy:
    The query's ``scope`` is its abort signal (abort, disconnect, takeover, shutdown): the
    attempt in flight is cancelled, its usage collected (shielded, with a deadline) and an
    ``aborted`` frame sent with the usage and cost so far. A client that went away only
    means frames go nowhere; usage is still recorded.
Timers:
    Backoff sleeps and gate waits on trio's clock (a MockClock drives them), with a
    ``heartbeat`` frame at least every ``HEARTBEAT_INTERVAL`` of any wait.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeAlias, assert_never, final

import msgspec
import trio

from actors._util import answer, inbox_messages
from actors.client_pool import ClientPoolAddress
from actors.config import Config
from actors.cost_ledger import CostLedgerAddress
from actors.metrics import Metrics
from actors.provider_builds import ProviderBuilds
from actors.query_run import QueryRun
from actors.retry_shared import SharedRetryState
from actors.session_state import SessionStates
from actors.stream_relay import CountResult, RunCount, StreamRelayAddress
from protocol.betas import split_beta_header, with_beta_header
from protocol.catalog import BUILTIN, Catalog
from protocol.frames import GatewayFrame, Query
from protocol.request_builder import count_tokens_request
from protocol.wire import JsonObject


class RunQuery(msgspec.Struct, frozen=True, kw_only=True):
    """``headers``: extra upstream headers of this query (the HTTP door forwards the client's
    ``anthropic-version`` and ``anthropic-beta``); they override the pool's defaults."""

    session_id: str
    query: Query
    scope: trio.CancelScope
    outbound: trio.MemorySendChannel[GatewayFrame]
    headers: tuple[tuple[str, str], ...] = ()


class RunCountTokens(msgspec.Struct, frozen=True, kw_only=True):
    query_id: str
    request: JsonObject
    reply: trio.MemorySendChannel[CountResult]
    headers: tuple[tuple[str, str], ...] = ()


RetrySupervisorMsg: TypeAlias = RunQuery | RunCountTokens
RetrySupervisorAddress: TypeAlias = trio.MemorySendChannel[RetrySupervisorMsg]


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
        catalog: Callable[[], Catalog] = lambda: BUILTIN,
    ) -> None:
        self._config = config
        self._metrics = metrics if metrics is not None else Metrics()
        self._to_relay = to_relay
        self._to_ledger = to_ledger
        self._to_pool = to_pool
        self._rng = rng
        # issue 5: request-construction latches, cache-break baselines and activity per session.
        self.sessions = SessionStates()
        # The model catalog in force (the ModelsFetcher's, once it has merged the upstream's).
        self._builds = ProviderBuilds(config, catalog)

    async def run(
        self, *, task_status: trio.TaskStatus[RetrySupervisorAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve queries until every address clone is closed. Startable."""
        shared = SharedRetryState(fast_mode_disabled=self._config.disable_fast_mode, metrics=self._metrics)
        address, inbox = trio.open_memory_channel[RetrySupervisorMsg](0)
        with self._to_relay, self._to_ledger, self._to_pool:
            async with trio.open_nursery() as nursery:
                with inbox:
                    task_status.started(address)
                    async for msg in inbox_messages(inbox):
                        match msg:
                            case RunQuery():
                                nursery.start_soon(self._query_run(msg, shared).run)
                            case RunCountTokens():
                                nursery.start_soon(self._count_task, msg)
                            case _:
                                assert_never(msg)

    def _query_run(self, msg: RunQuery, shared: SharedRetryState) -> QueryRun:
        return QueryRun(
            msg,
            config=self._config,
            shared=shared,
            sessions=self.sessions,
            builds=self._builds,
            metrics=self._metrics,
            rng=self._rng,
            to_relay=self._to_relay,
            to_ledger=self._to_ledger,
            to_pool=self._to_pool,
        )

    async def _count_task(self, msg: RunCountTokens) -> None:
        with msg.reply:
            send, receive = trio.open_memory_channel[CountResult](1)
            headers, client_betas = split_beta_header(msg.headers)
            settings = self._builds.settings(str(msg.request.get("model")))
            built = count_tokens_request(msg.request, settings=settings, client_betas=client_betas)
            with receive:
                await self._to_relay.send(
                    RunCount(body=built.body, headers=with_beta_header(headers, built.betas), reply=send)
                )
                try:
                    result = await receive.receive()
                except trio.EndOfChannel:
                    return
            answer(msg.reply, result)
