"""ModelsFetcher: learns the upstream's models (``GET /v1/models``) at start, in the background.

Role:
    Once, at start: ``GET {base_url}/v1/models?limit=1000`` through a ClientPool lease (the
    pool's credential, headers and proxy), following ``has_more`` with ``after_id``, and
    merges the answer into the built-in catalog (``protocol.models.catalog.Catalog.merged``). A
    model released after the catalog was written is then listed by the HTTP door and built
    with the upstream's limits; without the answer it still works (never clamped, priced at
    the unknown-model price and flagged).
Inbox:
    None: it publishes ``catalog``, an immutable snapshot replaced as a whole, for synchronous
    readers (``Gateway.catalog``, the RetrySupervisor's ``ProviderBuilds``); ``settled`` is
    set once the fetch has ended, whichever way.
Outputs:
    The upstream ``GET /v1/models`` (first party only).
Lifecycle:
    ``run`` calls ``task_status.started()`` before any I/O, fetches, and returns; cancelling
    it cancels the fetch.
Failure policy:
    Nothing here is fatal: a failed fetch leaves the built-in catalog in force. Skipped (logged)
    when the provider is not the first party or ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` is
    set. A status other than 200, a timeout, a broken connection, a body over
    ``MAX_MODELS_BODY`` bytes, an answer that is not the API's list shape, or any other
    exception is logged and ignored; the pages read before it are still merged.
Timers:
    ``MODELS_TIMEOUT`` for the whole fetch, on trio's clock.
"""

from __future__ import annotations

import logging
from typing import Final, final
from urllib.parse import urlencode

import httpx
import trio

from actors._util import ask
from actors.config.settings import FIRST_PARTY, Config
from actors.messages.pool import Acquire, ClientPoolAddress, Lease
from protocol.errors import ActorUnavailable, RemoteProtocolError, SwitchboardError
from protocol.models.catalog import BUILTIN, Catalog, UpstreamModel, decode_models_page

log = logging.getLogger("switchboard.models")

# The bootstrap fetch's bound (docs/reference/reference-client.md 4: 5 s), for the whole of this one too:
# readiness never waits for it, and a slow upstream must not hold a task for long.
MODELS_TIMEOUT: Final = 5.0
# The API's largest page (ModelListParams.limit), so one request is the usual case.
PAGE_LIMIT: Final = 1000
# At most this many pages: 10,000 models is far more than the API lists; a cursor loop ends.
MAX_PAGES: Final = 10
# A page of 1,000 models with their capabilities is well under 4 MiB; a larger body is refused
# before it is decoded (every decode of outside data bounded).
MAX_MODELS_BODY: Final = 4 * 1024 * 1024
MODELS_PATH: Final = "/v1/models"


class ModelsFetchFailed(SwitchboardError):
    """One page could not be read (a status, an over-long body); the message says why."""


def skip_reason(config: Config) -> str | None:
    """Why the fetch must not run, or None when it may."""
    if config.provider != FIRST_PARTY:
        return f"provider {config.provider} is not the first party"
    if config.disable_nonessential_traffic:
        return "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC is set"
    return None


@final
class ModelsFetcher:
    """Fetches the upstream's models and publishes the merged catalog (module docstring)."""

    def __init__(self, config: Config, to_pool: ClientPoolAddress, *, catalog: Catalog = BUILTIN) -> None:
        self._config = config
        self._to_pool = to_pool
        self._catalog = catalog
        self.settled = trio.Event()
        self.learnt: tuple[str, ...] = ()

    @property
    def catalog(self) -> Catalog:
        """The catalog in force (immutable; replaced as a whole). Not a checkpoint."""
        return self._catalog

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fetch once, then return. Startable, at once (before any I/O). Closes ``to_pool``."""
        task_status.started()
        with self._to_pool:
            try:
                reason = skip_reason(self._config)
                if reason is not None:
                    log.info("GET /v1/models skipped: %s", reason)
                    return
                models: list[UpstreamModel] = []
                with trio.move_on_after(MODELS_TIMEOUT) as scope:
                    await self._fetch(models)
                if scope.cancelled_caught:
                    log.warning("GET /v1/models timed out after %.0f s", MODELS_TIMEOUT)
                if models:
                    self._merge(models)
            except Exception:
                # The catalog is an improvement, never a condition: whatever went wrong here
                # leaves the built-in catalog in force and the gateway running.
                log.exception("GET /v1/models: the fetch failed; the built-in catalog stays")
            finally:
                self.settled.set()

    def _merge(self, models: list[UpstreamModel]) -> None:
        known = self._catalog
        merged = known.merged(models)
        self.learnt = tuple(m.key for m in merged.models if known.get(m.key) is None)
        self._catalog = merged
        log.info(
            "GET /v1/models: %d models, %d new to the catalog%s",
            len(models),
            len(self.learnt),
            f" ({', '.join(self.learnt[:10])})" if self.learnt else "",
        )

    async def _fetch(self, into: list[UpstreamModel]) -> None:
        """Read every page into ``into``; stops (logged) at the first page that fails."""
        try:
            lease: Lease = await ask(self._to_pool, lambda reply: Acquire(reply=reply, provider=FIRST_PARTY))
        except ActorUnavailable:
            log.info("GET /v1/models skipped: the client pool is gone")
            return
        after: str | None = None
        for _ in range(MAX_PAGES):
            query = {"limit": str(PAGE_LIMIT)} | ({"after_id": after} if after else {})
            try:
                raw = await self._page(lease, lease.base_url + MODELS_PATH + "?" + urlencode(query))
                page = decode_models_page(raw)
            except (httpx.HTTPError, ModelsFetchFailed, RemoteProtocolError) as exc:
                log.warning("GET /v1/models failed: %s", exc if not isinstance(exc, httpx.HTTPError) else type(exc).__name__)
                return
            into.extend(page.data)
            if not page.has_more or not page.last_id or page.last_id == after:
                return
            after = page.last_id
        log.warning("GET /v1/models: stopped after %d pages", MAX_PAGES)

    async def _page(self, lease: Lease, url: str) -> bytes:
        async with lease.client.stream("GET", url, headers=dict(lease.headers)) as response:
            if response.status_code != 200:
                raise ModelsFetchFailed(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_MODELS_BODY:
                    raise ModelsFetchFailed(f"answer over {MAX_MODELS_BODY} bytes")
            return bytes(body)
