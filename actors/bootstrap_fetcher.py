"""BootstrapFetcher: learns the startup configuration from the bootstrap API, in the background.

Role:
    Once, at start: ``GET {base_url}/api/claude_cli/bootstrap`` (reference-client.md 4) and
    keep what it says: ``client_data`` (for the other actors) and the
    ``additional_model_options`` (they join the defaults in every ``ready.models``). Until
    the answer arrives, and whenever the fetch fails, the last good answer cached on disk
    stands in. Never delays the gateway: ``started`` comes before any I/O.
Inbox (``BootstrapFetcherMsg``):
    ``GetBootstrap`` (Gateway, for the FrontDoor and other actors): the current
    ``BootstrapState`` at once, or with ``settled=True`` once the startup fetch has ended
    (fetched, failed or skipped).
Outputs:
    The upstream bootstrap endpoint (its own short-lived HTTP client) and the cache file.
Lifecycle:
    ``run`` opens its inbox, calls ``task_status.started(address)``, then reads the cache
    and fetches in a background task of its own nursery; it returns when every address
    clone is closed, cancelling a fetch still running.
Failure policy:
    Nothing here is fatal. Skipped (logged) when ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``
    is set, the provider is not the first party, or there is no credential. A 401 gets one
    retry after a credential refresh (the ``refresh`` hook). A timeout, a connection
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
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias, assert_never, final

import httpx
import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, answer, contained, fail, inbox_messages, report_internal
from actors.config import FIRST_PARTY, Config, Secret
from actors.messages.bootstrap import (
    BootstrapFetcherAddress,
    BootstrapFetcherMsg,
    BootstrapState,
    GetBootstrap,
)
from actors.metrics import Metrics
from actors.upstream import without_userinfo
from protocol.bootstrap import (
    BOOTSTRAP_PATH,
    BootstrapAnswer,
    bootstrap_headers,
    decode_bootstrap,
    encode_bootstrap,
)
from protocol.errors import RemoteProtocolError

log = logging.getLogger("switchboard.bootstrap")

# reference-client.md 4: the reference gives the endpoint 5 s (axios timeout) per request.
BOOTSTRAP_TIMEOUT: Final = 5.0
USER_AGENT: Final = "switchboard/0.1.0"


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """What the fetch authenticates with: an OAuth bearer is preferred over the API key."""

    api_key: Secret | None = None
    auth_token: Secret | None = None


# Called after a 401: fresh credentials, or None to retry with the same ones.
RefreshCredentials: TypeAlias = Callable[[], Awaitable[Credentials | None]]


async def no_refresh() -> Credentials | None:
    """The default refresh hook: nothing to refresh (the retry uses the same credentials)."""
    return None


def skip_reason(config: Config, credentials: Credentials) -> str | None:
    """Why the fetch must not run (reference-client.md 4), or None when it may."""
    if config.disable_nonessential_traffic:
        return "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC is set"
    if config.provider != FIRST_PARTY:
        return f"provider {config.provider} has no bootstrap API"
    if credentials.api_key is None and credentials.auth_token is None:
        return "no credential"
    return None


@final
class BootstrapFetcher:
    """Fetches and serves the bootstrap state (see the module docstring).

    ``cache_path``: the JSON cache file, or None for none. ``credentials``: default, the
    config's. ``transport``: replaces the HTTP transport (tests). ``refresh``: the hook a
    401 calls before its one retry.
    """

    def __init__(
        self,
        config: Config,
        *,
        cache_path: str | None,
        credentials: Credentials | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        refresh: RefreshCredentials = no_refresh,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._config = config
        self._cache_path = cache_path
        self._credentials = credentials or Credentials(api_key=config.api_key, auth_token=config.auth_token)
        self._transport = transport
        self._refresh = refresh
        self._state = BootstrapState()
        self._waiting: list[trio.MemorySendChannel[BootstrapState]] = []

    @property
    def state(self) -> BootstrapState:
        """The current state, published for synchronous readers (``Gateway.models``): an
        immutable snapshot that the fetcher replaces as a whole. Not a checkpoint."""
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
            cached = await self._read_cache()
            if cached is not None:
                self._state = _state(cached, "cache")
            reason = skip_reason(self._config, self._credentials)
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
        finally:
            self._state = msgspec.structs.replace(self._state, settled=True)
            waiting, self._waiting = self._waiting, []
            for reply in waiting:
                answer(reply, self._state)

    async def _fetch(self) -> BootstrapAnswer | None:
        """One GET, and one more after a 401 and a credential refresh. None: failed (logged)."""
        client = httpx.AsyncClient(transport=self._transport, timeout=None)
        try:
            return await self._get(client)
        finally:
            # A transport handed in (shared with the ClientPool) is not ours to close.
            if self._transport is None:
                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    await client.aclose()

    async def _get(self, client: httpx.AsyncClient) -> BootstrapAnswer | None:
        # No userinfo: httpx's client would log the URL whole, password included.
        url = without_userinfo(self._config.base_url) + BOOTSTRAP_PATH
        credentials = self._credentials
        for attempt in (1, 2):
            headers = _headers(credentials)
            if headers is None:
                log.warning("bootstrap fetch: no credential after the refresh")
                return None
            response: httpx.Response | None = None
            with trio.move_on_after(BOOTSTRAP_TIMEOUT):
                try:
                    response = await client.get(url, headers=dict(headers))
                except httpx.HTTPError as exc:
                    log.warning("bootstrap fetch failed: %s", type(exc).__name__)
                    return None
            if response is None:
                log.warning("bootstrap fetch timed out after %.0f s", BOOTSTRAP_TIMEOUT)
                return None
            if response.status_code == 401 and attempt == 1:
                log.info("bootstrap fetch: 401, refreshing the credential and retrying once")
                credentials = await self._refreshed(credentials)
                continue
            if response.status_code != 200:
                log.warning("bootstrap fetch failed: HTTP %d", response.status_code)
                return None
            try:
                return decode_bootstrap(response.content)
            except RemoteProtocolError as exc:
                log.warning("bootstrap answer ignored: %s", exc)
                return None
        return None

    async def _refreshed(self, current: Credentials) -> Credentials:
        try:
            return await self._refresh() or current
        except Exception:
            # The hook belongs to another actor; its failure must not end the gateway.
            log.exception("bootstrap fetch: the credential refresh failed")
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


def _headers(credentials: Credentials) -> tuple[tuple[str, str], ...] | None:
    return bootstrap_headers(
        api_key=credentials.api_key.reveal() if credentials.api_key else None,
        auth_token=credentials.auth_token.reveal() if credentials.auth_token else None,
        user_agent=USER_AGENT,
    )


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
