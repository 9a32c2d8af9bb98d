"""ClientPool: owns the upstream HTTP client and the credential it sends.

Role:
    Holds the pooled ``UpstreamClient`` (timeouts, keep-alive limits) and, per provider
    (issue 6: the first party, Bedrock, Vertex, Foundry side by side), the current credential
    with its generation number; hands them out as a ``Lease`` (with the provider's
    ``Endpoint`` for the clouds). Refreshes the credential (docs/reference/reference-client.md 1.9) and rebuilds the
    client without keep-alive after a reset connection (1.3).
Inbox (``ClientPoolMsg``):
    ``Acquire`` (StreamRelay, BootstrapFetcher; once per request): a ``Lease`` for its
    ``provider`` (default: the configured one; another is loaded at its first Acquire).
    ``Refresh`` (RetrySupervisor, after a 401 or a revoked OAuth token): reload the
    credential once per failed generation, shared by every request that failed with it;
    answers whether a new credential is now in use.
    ``ReportBroken`` (RetrySupervisor, after a reset or broken connection): from now on, no
    keep-alive (a fresh client; the old one is closed at shutdown, as leases may still use it).
Outputs:
    None; it only answers.
Lifecycle:
    ``run`` opens the client and loads the credential, then ``task_status.started(address)``;
    when every clone of the address is closed it closes its clients and returns.
Failure policy:
    A credential source that fails (helper exits non-zero, token file unreadable) is logged;
    requests then go without that credential and the upstream's 401 ends them clearly.
    Loading happens in a task: an Acquire never waits behind another's slow refresh unless
    the credential it would get has expired. A message whose handling fails unexpectedly
    is answered with ``fail`` (the asker gets ``ActorFailed``), logged and counted
    (``actor:ClientPool``, docs/supervision.md); the pool serves its next message.
Timers:
    The client's timeouts (``Config.api_timeout``; 5 s to connect, docs/reference/wire.md 5.1); the key
    helper's TTL and the OAuth token's expiry, checked at each Acquire.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Final, assert_never, final

import httpx
import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, answer, contained, fail, inbox_messages, report_internal
from actors.config.settings import FIRST_PARTY, Config
from actors.messages.pool import (
    Acquire,
    ClientPoolAddress,
    ClientPoolMsg,
    Lease,
    Refresh,
    RefreshResult,
    ReportBroken,
)
from actors.observe.metrics import Metrics
from actors.upstream.client import UpstreamClient
from actors.upstream.cloud_credentials import load_cloud_credential
from actors.upstream.credentials import Credential, CredentialError, load_first_party_credential
from actors.upstream.endpoints import endpoint_for
from protocol.providers import route_provider

log = logging.getLogger("switchboard.pool")

# docs/reference/wire.md 1.1: the API version the gateway speaks when the client did not name one.
API_VERSION: Final = "2023-06-01"
# docs/reference/wire.md 5.1: the SDK connects within 5 s; a connect should never take the read timeout.
CONNECT_TIMEOUT: Final = 5.0
# Enough connections for every stream the gateway carries at once (the benchmark runs 512);
# keeping them alive spares a TCP handshake on every request.
MAX_CONNECTIONS: Final = 1024
# issue 6 (docs/reference/peers.md): after a failed early refresh, the next try waits this long (the
# current credential is still served), so a broken source is not asked on every request.
EARLY_REFRESH_RETRY_INTERVAL: Final = 30.0


async def load_credential(config: Config) -> Credential:
    """Load the credential of ``config.provider`` now: the first party's
    (actors/upstream/credentials.py) or a cloud's (actors/upstream/cloud_credentials.py). A checkpoint.

    Raises:
        CredentialError: the source cannot produce one (the message never holds a secret).
    """
    if config.provider == FIRST_PARTY:
        return await load_first_party_credential(config)
    return await load_cloud_credential(config)


def base_headers(config: Config) -> tuple[tuple[str, str], ...]:
    """The headers of every upstream request but the credential: version, types, custom."""
    return (
        ("anthropic-version", API_VERSION),
        ("content-type", "application/json"),
        ("accept", "application/json"),
        *config.custom_headers,
    )


# Upstream clients the pool spreads leases over. httpcore 1.0.9's pool does work per
# connection on every request (it checks each connection for expiry with a poll system
# call), so one pool with N connections costs O(N) per request; at 100 concurrent streams
# that was a third of the gateway's CPU (py-spy, scripts/bench.py --paths http). Eight
# pools with N/8 connections each cut it eightfold, and idle connections stay reusable.
UPSTREAM_SHARDS: Final = 8


def _client(
    config: Config, transport: httpx.AsyncBaseTransport | None, tls: ssl.SSLContext, *, keep_alive: bool
) -> UpstreamClient:
    timeout = httpx.Timeout(config.api_timeout, connect=min(CONNECT_TIMEOUT, config.api_timeout))
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS if keep_alive else 0
    )
    return UpstreamClient(
        tls=tls,
        timeout=timeout,
        limits=limits,
        proxies=dict(config.proxies),
        no_proxy=config.no_proxy,
        transport=transport,
    )


class _Slot:
    """One provider's credential, its generation and its current lease (issue 6: a pool
    serves every provider side by side; each has its own credential lifecycle)."""

    __slots__ = ("config", "credential", "early", "generation", "lease", "loaded", "loading")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.credential = Credential()
        self.generation = 0
        self.loaded = False
        self.loading: trio.Event | None = None
        # The load under way is an early (background) refresh.
        self.early = False
        self.lease: Lease | None = None


@final
class ClientPool:
    """The upstream client and the providers' credentials (see the module docstring)."""

    def __init__(
        self, config: Config, *, transport: httpx.AsyncBaseTransport | None = None, metrics: Metrics | None = None
    ) -> None:
        self._config = config
        self._transport = transport
        self._metrics = metrics
        self._clients: list[UpstreamClient] = []
        self._shards: list[UpstreamClient] = []
        self._tls: ssl.SSLContext | None = None
        self._turn = 0
        self._keep_alive = True
        self._slots: dict[str, _Slot] = {}
        # Generations are numbered across providers, so a Refresh names its slot by the
        # generation that failed alone.
        self._generations = 0
        self._owners: dict[int, _Slot] = {}

    def _slot(self, provider: str | None, model: str | None = None) -> _Slot:
        name = provider or (route_provider(model, self._config.provider_routes) if model else None)
        name = name or self._config.provider
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = _Slot(msgspec.structs.replace(self._config, provider=name))
        return slot

    async def run(
        self, *, task_status: trio.TaskStatus[ClientPoolAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve leases until every address clone is closed. Startable."""
        address, inbox = trio.open_memory_channel[ClientPoolMsg](0)
        self._new_shards(keep_alive=True)
        try:
            async with trio.open_nursery() as nursery:
                with inbox:
                    await self._load(self._slot(None))
                    task_status.started(address)
                    async for msg in inbox_messages(inbox):
                        try:
                            self._handle(msg, nursery)
                        except Exception as exc:
                            what = f"message {type(msg).__name__}"
                            report_internal(log, self._metrics, "actor:ClientPool", what, exc)
                            if not isinstance(msg, ReportBroken):
                                fail(msg.reply, "ClientPool")
        finally:
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                for client in self._clients:
                    await client.aclose()

    def _handle(self, msg: ClientPoolMsg, nursery: trio.Nursery) -> None:
        match msg:
            case Acquire():
                slot = self._slot(msg.provider, msg.model)
                now = trio.current_time()
                expired = not slot.loaded or (
                    slot.credential.valid_until is not None and now >= slot.credential.valid_until
                )
                if expired or (slot.loading is not None and not slot.early):
                    self._begin_load(slot, nursery)
                    self._start(nursery, functools.partial(self._answer_after_load, slot, msg), msg.reply)
                else:
                    # issue 6 (docs/reference/peers.md): ahead of expiry, refresh in the background and
                    # serve the credential still in hand meanwhile.
                    refresh_at = slot.credential.refresh_at
                    if refresh_at is not None and now >= refresh_at and slot.loading is None:
                        slot.early = True
                        self._begin_load(slot, nursery)
                    answer(msg.reply, self._current_lease(slot))
            case Refresh():
                owner = self._owners.get(msg.generation)
                slot = owner if owner is not None and msg.provider is None else self._slot(msg.provider)
                slot.early = False
                if msg.generation < slot.generation:
                    # Someone already replaced the credential that failed.
                    answer(msg.reply, RefreshResult(changed=True))
                    return
                self._begin_load(slot, nursery)
                self._start(nursery, functools.partial(self._answer_refresh, slot, msg), msg.reply)
            case ReportBroken():
                if self._keep_alive:
                    log.warning("upstream connection reset: keep-alive is off from now on")
                    self._keep_alive = False
                    self._new_shards(keep_alive=False)
                    for slot in self._slots.values():
                        slot.lease = None
            case _:
                assert_never(msg)

    def _begin_load(self, slot: _Slot, nursery: trio.Nursery) -> None:
        """Start loading the credential unless a load is under way; ``loading`` is set at
        once, so whoever waits on it from now on waits for this load."""
        if slot.loading is None:
            slot.loading = trio.Event()
            self._start(nursery, functools.partial(self._load, slot))

    def _start(
        self,
        nursery: trio.Nursery,
        task: Callable[[], Awaitable[object]],
        reply: trio.MemorySendChannel[Lease] | trio.MemorySendChannel[RefreshResult] | None = None,
    ) -> None:
        """Run ``task`` as a boundary: a failure is reported and ``reply`` gets ``fail``."""
        nursery.start_soon(
            functools.partial(
                contained,
                task,
                log=log,
                metrics=self._metrics,
                where="actor:ClientPool",
                what="a credential load or lease",
                on_failure=None if reply is None else functools.partial(fail, reply, "ClientPool"),
            )
        )

    async def _load(self, slot: _Slot) -> None:
        """Load the credential; a new value is a new generation. A checkpoint."""
        if slot.loading is None:
            slot.loading = trio.Event()
        done = slot.loading
        current = slot.credential
        try:
            fresh = await load_credential(slot.config)
        except CredentialError as exc:
            still_good = slot.loaded and (current.valid_until is None or trio.current_time() < current.valid_until)
            if slot.early and still_good:
                # issue 6: an early refresh failed; keep serving the old credential and try
                # again a little later.
                log.warning("credential refresh failed, still using the current one: %s", exc)
                retry_at = trio.current_time() + EARLY_REFRESH_RETRY_INTERVAL
                fresh = msgspec.structs.replace(current, refresh_at=retry_at)
            else:
                log.error("credential unavailable: %s", exc)
                fresh = Credential()
        finally:
            slot.loading = None
            slot.early = False
            slot.loaded = True
            done.set()
        same = (fresh.api_key, fresh.bearer, fresh.aws) == (current.api_key, current.bearer, current.aws)
        slot.credential = fresh
        if not same or slot.generation == 0:
            self._generations += 1
            slot.generation = self._generations
            self._owners[slot.generation] = slot
            slot.lease = None

    async def _answer_after_load(self, slot: _Slot, msg: Acquire) -> None:
        loading = slot.loading
        if loading is not None:
            await loading.wait()
        answer(msg.reply, self._current_lease(slot))

    async def _answer_refresh(self, slot: _Slot, msg: Refresh) -> None:
        loading = slot.loading
        if loading is not None:
            await loading.wait()
        answer(msg.reply, RefreshResult(changed=msg.generation < slot.generation))

    def _new_shards(self, *, keep_alive: bool) -> None:
        """A fresh set of upstream clients; the old ones stay open (leases in flight may use
        them) and are closed when the pool stops."""
        if self._tls is None:
            # One TLS context for every client: building one loads the CA bundle (~25 ms).
            self._tls = httpx.create_ssl_context()
        self._shards = [
            _client(self._config, self._transport, self._tls, keep_alive=keep_alive) for _ in range(UPSTREAM_SHARDS)
        ]
        self._clients.extend(self._shards)

    def _current_lease(self, slot: _Slot) -> Lease:
        """The slot's lease, on the next upstream client in turn."""
        self._turn = (self._turn + 1) % len(self._shards)
        client = self._shards[self._turn]
        if slot.lease is None:
            headers = list(base_headers(slot.config))
            headers.extend(slot.credential.headers())
            slot.lease = Lease(
                client=client,
                base_url=slot.config.base_url,
                headers=tuple(headers),
                generation=slot.generation,
                credential=slot.credential,
                provider=slot.config.provider,
                endpoint=endpoint_for(slot.config, slot.credential),
            )
        if slot.lease.client is not client:
            slot.lease = msgspec.structs.replace(slot.lease, client=client)
        return slot.lease
