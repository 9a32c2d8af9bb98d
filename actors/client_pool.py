"""ClientPool: owns the upstream HTTP client and the credential it sends.

Role:
    Holds the pooled ``httpx.AsyncClient`` for the first-party API (base URL, timeouts,
    keep-alive limits) and the current credential with its generation number; hands both out
    as a ``Lease``. Refreshes the credential (reference-client.md 1.9) and rebuilds the
    client without keep-alive after a reset connection (1.3).
Inbox (``ClientPoolMsg``):
    ``Acquire`` (StreamRelay, BootstrapFetcher; once per request): a ``Lease``.
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
    the credential it would get has expired.
Timers:
    The client's timeouts (``Config.api_timeout``; 5 s to connect, wire.md 5.1); the key
    helper's TTL and the OAuth token's expiry, checked at each Acquire.
"""

from __future__ import annotations

import logging
from typing import Final, TypeAlias, assert_never, final

import httpx
import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, answer
from actors.config import Config
from actors.credentials import Credential, CredentialError, load_credential

log = logging.getLogger("switchboard.pool")

# wire.md 1.1: the API version the gateway speaks when the client did not name one.
API_VERSION: Final = "2023-06-01"
# wire.md 5.1: the SDK connects within 5 s; a connect should never take the read timeout.
CONNECT_TIMEOUT: Final = 5.0
# Enough connections for every stream the gateway carries at once (the benchmark runs 512);
# keeping them alive spares a TCP handshake on every request.
MAX_CONNECTIONS: Final = 1024


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """What one request needs: the client, the base URL, the headers, and the credential's
    generation (to report it if the upstream refuses it)."""

    client: httpx.AsyncClient
    base_url: str
    headers: tuple[tuple[str, str], ...]
    generation: int


class Acquire(msgspec.Struct, frozen=True, kw_only=True):
    reply: trio.MemorySendChannel[Lease]


class RefreshResult(msgspec.Struct, frozen=True, kw_only=True):
    changed: bool


class Refresh(msgspec.Struct, frozen=True, kw_only=True):
    generation: int
    reply: trio.MemorySendChannel[RefreshResult]


class ReportBroken(msgspec.Struct, frozen=True, kw_only=True):
    pass


ClientPoolMsg: TypeAlias = Acquire | Refresh | ReportBroken
ClientPoolAddress: TypeAlias = trio.MemorySendChannel[ClientPoolMsg]


def base_headers(config: Config) -> tuple[tuple[str, str], ...]:
    """The headers of every upstream request but the credential: version, types, custom."""
    return (
        ("anthropic-version", API_VERSION),
        ("content-type", "application/json"),
        ("accept", "application/json"),
        *config.custom_headers,
    )


def _client(config: Config, transport: httpx.AsyncBaseTransport | None, *, keep_alive: bool) -> httpx.AsyncClient:
    timeout = httpx.Timeout(config.api_timeout, connect=min(CONNECT_TIMEOUT, config.api_timeout))
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS if keep_alive else 0
    )
    return httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport)


@final
class ClientPool:
    """The upstream client and its credential (see the module docstring)."""

    def __init__(self, config: Config, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._config = config
        self._transport = transport
        self._clients: list[httpx.AsyncClient] = []
        self._keep_alive = True
        self._credential = Credential()
        self._generation = 0
        self._loading: trio.Event | None = None
        self._lease: Lease | None = None

    async def run(
        self, *, task_status: trio.TaskStatus[ClientPoolAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve leases until every address clone is closed. Startable."""
        address, inbox = trio.open_memory_channel[ClientPoolMsg](0)
        self._clients.append(_client(self._config, self._transport, keep_alive=True))
        try:
            async with trio.open_nursery() as nursery:
                with inbox:
                    await self._load()
                    task_status.started(address)
                    async for msg in inbox:
                        self._handle(msg, nursery)
        finally:
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                for client in self._clients:
                    await client.aclose()

    def _handle(self, msg: ClientPoolMsg, nursery: trio.Nursery) -> None:
        match msg:
            case Acquire():
                expired = self._credential.valid_until is not None and trio.current_time() >= self._credential.valid_until
                if expired or self._loading is not None:
                    self._begin_load(nursery)
                    nursery.start_soon(self._answer_after_load, msg)
                else:
                    answer(msg.reply, self._current_lease())
            case Refresh():
                if msg.generation < self._generation:
                    # Someone already replaced the credential that failed.
                    answer(msg.reply, RefreshResult(changed=True))
                    return
                self._begin_load(nursery)
                nursery.start_soon(self._answer_refresh, msg)
            case ReportBroken():
                if self._keep_alive:
                    log.warning("upstream connection reset: keep-alive is off from now on")
                    self._keep_alive = False
                    self._clients.append(_client(self._config, self._transport, keep_alive=False))
                    self._lease = None
            case _:
                assert_never(msg)

    def _begin_load(self, nursery: trio.Nursery) -> None:
        """Start loading the credential unless a load is under way; ``_loading`` is set at
        once, so whoever waits on it from now on waits for this load."""
        if self._loading is None:
            self._loading = trio.Event()
            nursery.start_soon(self._load)

    async def _load(self) -> None:
        """Load the credential; a new value is a new generation. A checkpoint."""
        if self._loading is None:
            self._loading = trio.Event()
        done = self._loading
        try:
            fresh = await load_credential(self._config)
        except CredentialError as exc:
            log.error("credential unavailable: %s", exc)
            fresh = Credential()
        finally:
            self._loading = None
            done.set()
        same = (fresh.api_key, fresh.bearer) == (self._credential.api_key, self._credential.bearer)
        self._credential = fresh
        if not same:
            self._generation += 1
            self._lease = None

    async def _answer_after_load(self, msg: Acquire) -> None:
        loading = self._loading
        if loading is not None:
            await loading.wait()
        answer(msg.reply, self._current_lease())

    async def _answer_refresh(self, msg: Refresh) -> None:
        loading = self._loading
        if loading is not None:
            await loading.wait()
        answer(msg.reply, RefreshResult(changed=msg.generation < self._generation))

    def _current_lease(self) -> Lease:
        if self._lease is None:
            headers = list(base_headers(self._config))
            headers.extend(self._credential.headers())
            self._lease = Lease(
                client=self._clients[-1],
                base_url=self._config.base_url,
                headers=tuple(headers),
                generation=self._generation,
            )
        return self._lease
