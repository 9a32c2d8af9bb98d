"""BootstrapFetcher: learns the startup configuration from the bootstrap API, in the background.

Role:
    Once, at start: ``GET {base_url}/api/claude_cli/bootstrap`` (docs/reference/reference-client.md 4) and
    keep what it says: ``client_data`` (for the other actors) and the
    ``additional_model_options`` (they join the defaults in every ``ready.models``). Until
    the answer arrives, and whenever the fetch fails, the last good answer cached on disk
    stands in. Never delays the gateway: ``started`` comes before any I/O.
Inbox (``BootstrapFetcherMsg``):
    ``GetBootstrap`` (Gateway, for the FrontDoor and other actors): the current
    ``BootstrapState`` at once, or with ``settled=True`` once the startup fetch has ended
    (fetched, failed or skipped).
Outputs:
    ClientPool (``Acquire`` the first party's lease: its client and credential; ``Refresh``
    after a 401), the upstream bootstrap endpoint through that lease, and the cache file.
Lifecycle:
    ``run`` opens its inbox, calls ``task_status.started(address)``, then reads the cache
    and fetches in a background task of its own nursery; it returns when every address
    clone is closed, cancelling a fetch still running. It closes its ClientPool address
    once the startup fetch has ended.
Failure policy:
    Nothing here is fatal. Skipped (logged) when ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``
    is set, the provider is not the first party, or the pool's lease has no credential. A
    401 gets one retry after the pool's ``Refresh`` (with the credential then in force). A timeout, a connection
    error, another status or an answer that fails the schema is logged and ignored: the
    cached answer, if any, stays. The cache is written only when the answer changed. An
    unexpected exception in the startup fetch or in serving a message is logged and counted
    (``actor:BootstrapFetcher``, docs/supervision.md); a request it hit gets ``fail``.
Timers:
    ``BOOTSTRAP_TIMEOUT`` per request (the reference's axios timeout), on trio's clock.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import Final, assert_never, final

import httpx
import msgspec
import trio

from actors._util import answer, ask, contained, fail, inbox_messages, report_internal
from actors.config.settings import FIRST_PARTY, Config
from actors.messages.bootstrap import (
    BootstrapFetcherAddress,
    BootstrapFetcherMsg,
    BootstrapState,
    GetBootstrap,
)
from actors.messages.pool import Acquire, ClientPoolAddress, Lease, Refresh, RefreshResult
from actors.observe.metrics import Metrics
from actors.upstream.credentials import Credential
from protocol.bootstrap import (
    BOOTSTRAP_PATH,
    BootstrapAnswer,
    bootstrap_headers,
    decode_bootstrap,
    encode_bootstrap,
)
from protocol.errors import ActorFailed, ActorUnavailable, RemoteProtocolError

log = logging.getLogger("switchboard.bootstrap")

# docs/reference/reference-client.md 4: the reference gives the endpoint 5 s (axios timeout) per request.
BOOTSTRAP_TIMEOUT: Final = 5.0
USER_AGENT: Final = "switchboard/0.1.0"
# The answer is a few KiB; a body past this is refused while it is read, not held whole.
MAX_BOOTSTRAP_BODY: Final = 1024 * 1024


def skip_reason(config: Config) -> str | None:
    """Why the fetch must not run (docs/reference/reference-client.md 4), or None when it may (a lease
    without a credential skips it too: ``_get``)."""
    if config.disable_nonessential_traffic:
        return "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC is set"
    if config.provider != FIRST_PARTY:
        return f"provider {config.provider} has no bootstrap API"
    return None


@final
class BootstrapFetcher:
    """Fetches and serves the bootstrap state (see the module docstring).

    ``to_pool``: the ClientPool the fetch leases its client and credential from (the
    fetcher closes it once the startup fetch has ended). ``cache_path``: the JSON cache
    file, or None for none.
    """

    def __init__(
        self,
        config: Config,
        to_pool: ClientPoolAddress,
        *,
        cache_path: str | None,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._config = config
        self._to_pool = to_pool
        self._cache_path = cache_path
        self._state = BootstrapState()
        self._waiting: list[trio.MemorySendChannel[BootstrapState]] = []

    @property
    def state(self) -> BootstrapState:
        """The snapshot the fetcher publishes for synchronous readers (``Gateway.models``):
        immutable, replaced as a whole (actors/messages/bootstrap.py). Not a checkpoint."""
        return self._state

    async def run(
        self, *, task_status: trio.TaskStatus[BootstrapFetcherAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the state until every address clone is closed; fetch in the background.

        Startable, at once (before any I/O).
        """
        address, inbox = trio.open_memory_channel[BootstrapFetcherMsg](0)
        try:
            async with trio.open_nursery() as nursery:
                with inbox:
                    task_status.started(address)
                    nursery.start_soon(
                        functools.partial(
                            contained,
                            self._startup_task,
                            log=log,
                            metrics=self._metrics,
                            where="actor:BootstrapFetcher",
                            what="the bootstrap fetch",
                        )
                    )
                    async for msg in inbox_messages(inbox):
                        try:
                            self._handle(msg)
                        except Exception as exc:
                            report_internal(log, self._metrics, "actor:BootstrapFetcher", "message GetBootstrap", exc)
                            fail(msg.reply, "BootstrapFetcher")
                nursery.cancel_scope.cancel(reason="bootstrap fetcher closed")
        finally:
            for reply in self._waiting:
                reply.close()

    def _handle(self, msg: BootstrapFetcherMsg) -> None:
        match msg:
            case GetBootstrap():
                if msg.settled and not self._state.settled:
                    self._waiting.append(msg.reply)
                else:
                    answer(msg.reply, self._state)
            case _:
                assert_never(msg)

    async def _startup_task(self) -> None:
        try:
            with self._to_pool:
                await self._startup()
        finally:
            self._state = msgspec.structs.replace(self._state, settled=True)
            waiting, self._waiting = self._waiting, []
            for reply in waiting:
                answer(reply, self._state)

    async def _startup(self) -> None:
        cached = await self._read_cache()
        if cached is not None:
            self._state = _state(cached, "cache")
        reason = skip_reason(self._config)
        if reason is not None:
            log.info("bootstrap fetch skipped: %s", reason)
            return
        fetched = await self._fetch()
        if fetched is not None:
            self._state = _state(fetched, "upstream")
            if fetched != cached:
                await self._write_cache(fetched)
        elif cached is not None:
            log.info("using the cached bootstrap answer")

    async def _fetch(self) -> BootstrapAnswer | None:
        """One GET, and one more after a 401 and a credential refresh. None: failed or
        skipped (logged). The client and credential are a lease of the ClientPool's."""
        try:
            lease: Lease = await ask(self._to_pool, lambda reply: Acquire(reply=reply, provider=FIRST_PARTY))
        except ActorUnavailable:
            log.info("bootstrap fetch skipped: the client pool is gone")
            return None
        if _headers(lease.credential) is None:
            log.info("bootstrap fetch skipped: no credential")
            return None
        for attempt in (1, 2):
            headers = _headers(lease.credential)
            if headers is None:
                log.warning("bootstrap fetch: no credential after the refresh")
                return None
            answered: tuple[int, bytes | None] | None = None
            with trio.move_on_after(BOOTSTRAP_TIMEOUT):
                try:
                    answered = await _get(lease, dict(headers))
                except httpx.HTTPError as exc:
                    log.warning("bootstrap fetch failed: %s", type(exc).__name__)
                    return None
            if answered is None:
                log.warning("bootstrap fetch timed out after %.0f s", BOOTSTRAP_TIMEOUT)
                return None
            status, body = answered
            if status == 401 and attempt == 1:
                log.info("bootstrap fetch: 401, refreshing the credential and retrying once")
                lease = await self._refreshed(lease)
                continue
            if status != 200:
                log.warning("bootstrap fetch failed: HTTP %d", status)
                return None
            if body is None:
                log.warning("bootstrap answer ignored: over %d bytes", MAX_BOOTSTRAP_BODY)
                return None
            try:
                return decode_bootstrap(body)
            except RemoteProtocolError as exc:
                log.warning("bootstrap answer ignored: %s", exc)
                return None
        return None

    async def _refreshed(self, current: Lease) -> Lease:
        """The pool's lease after it reloaded the credential that failed (docs/reference/reference-client.md
        4), or ``current`` when nothing changed or the pool could not say."""
        try:
            result: RefreshResult = await ask(
                self._to_pool, lambda reply: Refresh(generation=current.generation, provider=FIRST_PARTY, reply=reply)
            )
            if not result.changed:
                return current
            return await ask(self._to_pool, lambda reply: Acquire(reply=reply, provider=FIRST_PARTY))
        except (ActorUnavailable, ActorFailed) as exc:
            # The pool logged its own failure; the retry goes with the credential in hand.
            log.warning("bootstrap fetch: the credential refresh failed: %s", exc)
            return current

    async def _read_cache(self) -> BootstrapAnswer | None:
        path = self._cache_path
        if path is None:
            return None
        try:
            raw = await trio.Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("bootstrap cache %s unreadable: %s", path, exc)
            return None
        try:
            return decode_bootstrap(raw)
        except RemoteProtocolError as exc:
            log.warning("bootstrap cache %s ignored: %s", path, exc)
            return None

    async def _write_cache(self, fetched: BootstrapAnswer) -> None:
        path = self._cache_path
        if path is None:
            return
        try:
            await trio.to_thread.run_sync(_replace_file, path, encode_bootstrap(fetched))
        except OSError as exc:
            log.warning("bootstrap cache %s not written: %s", path, exc)


async def _get(lease: Lease, headers: dict[str, str]) -> tuple[int, bytes | None]:
    """The status and, for a 200, the body (None: over ``MAX_BOOTSTRAP_BODY``)."""
    async with lease.client.stream("GET", lease.base_url + BOOTSTRAP_PATH, headers=headers) as response:
        if response.status_code != 200:
            return response.status_code, b""
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_BOOTSTRAP_BODY:
                return response.status_code, None
        return response.status_code, bytes(body)


def _headers(credential: Credential) -> tuple[tuple[str, str], ...] | None:
    return bootstrap_headers(api_key=credential.api_key, auth_token=credential.bearer, user_agent=USER_AGENT)


def _state(fetched: BootstrapAnswer, source: str) -> BootstrapState:
    return BootstrapState(client_data=fetched.client_data, model_options=fetched.model_options(), source=source)


def _replace_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a private temporary file, then a rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
