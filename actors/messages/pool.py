"""The ClientPool's contract (actors/client_pool.py): its inbox and the ``Lease`` it hands out.

``Acquire`` -> ``Lease`` (StreamRelay, BootstrapFetcher, ModelsFetcher; once per request),
``Refresh`` -> ``RefreshResult`` (after a 401 or a revoked token), ``ReportBroken`` (after a
reset connection; no reply).
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec
import trio

from actors.config.settings import FIRST_PARTY
from actors.upstream.client import UpstreamClient, without_userinfo
from actors.upstream.credentials import Credential
from actors.upstream.endpoints import Endpoint


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """What one request needs: the client, the base URL, the headers (the credential's
    among them), and the credential's generation (to report it if the upstream refuses it).
    ``credential``: the one those headers carry, for a request shaped otherwise (the
    BootstrapFetcher's). The lease's ``repr`` shows neither."""

    client: UpstreamClient
    base_url: str
    headers: tuple[tuple[str, str], ...]
    generation: int
    credential: Credential
    # issue 6: the provider, and its URL shaping and signing (None: the first party).
    provider: str = FIRST_PARTY
    endpoint: Endpoint | None = None

    def __repr__(self) -> str:
        return f"Lease(base_url={without_userinfo(self.base_url)!r}, generation={self.generation}, provider={self.provider!r}, headers=***)"


class Acquire(msgspec.Struct, frozen=True, kw_only=True):
    reply: trio.MemorySendChannel[Lease]
    # issue 6: the provider to lease for; None: the one ``Config.provider_routes`` gives
    # ``model``, else the configured default.
    provider: str | None = None
    model: str | None = None


class RefreshResult(msgspec.Struct, frozen=True, kw_only=True):
    changed: bool


class Refresh(msgspec.Struct, frozen=True, kw_only=True):
    generation: int
    reply: trio.MemorySendChannel[RefreshResult]
    # issue 6: whose credential failed (None: the provider that generation belongs to).
    provider: str | None = None


class ReportBroken(msgspec.Struct, frozen=True, kw_only=True):
    pass


ClientPoolMsg: TypeAlias = Acquire | Refresh | ReportBroken


ClientPoolAddress: TypeAlias = trio.MemorySendChannel[ClientPoolMsg]
