"""ClientPool: owns the upstream HTTP client and the credentials it sends.

Role:
    Holds one pooled ``httpx.AsyncClient`` for the first-party API (base URL, timeouts,
    keep-alive limits) and the headers every request carries: credential, API version,
    ``ANTHROPIC_CUSTOM_HEADERS``. Hands both out as a ``Lease``.
Inbox (``ClientPoolMsg``):
    ``Acquire`` from the StreamRelay, once per attempt: answered with a ``Lease``.
Outputs:
    None; it only answers.
Lifecycle:
    ``run`` opens the client, then calls ``task_status.started(address)``; when every clone of
    the address is closed it closes the client and returns.
Failure policy:
    Nothing here fails per request; an error opening the client propagates (fatal at start).
Timers:
    The client's timeouts: ``Config.api_timeout`` for read/write/pool, 5 s to connect
    (wire.md 5.1, the SDK's defaults).
"""

from __future__ import annotations

from typing import Final, TypeAlias, final

import httpx
import msgspec
import trio

from actors._util import answer
from actors.config import Config

# wire.md 1.1: the API version the gateway speaks when the client did not name one.
API_VERSION: Final = "2023-06-01"
# wire.md 5.1: the SDK connects within 5 s; a connect should never take the read timeout.
CONNECT_TIMEOUT: Final = 5.0
# Enough connections for every stream the gateway carries at once (the benchmark runs 512);
# keeping them alive spares a TCP handshake on every request.
MAX_CONNECTIONS: Final = 1024


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt needs to talk upstream: the client, the base URL, the headers."""

    client: httpx.AsyncClient
    base_url: str
    headers: tuple[tuple[str, str], ...]


class Acquire(msgspec.Struct, frozen=True, kw_only=True):
    reply: trio.MemorySendChannel[Lease]


ClientPoolMsg: TypeAlias = Acquire
ClientPoolAddress: TypeAlias = trio.MemorySendChannel[ClientPoolMsg]


def base_headers(config: Config) -> tuple[tuple[str, str], ...]:
    """The headers of every upstream request: version, content type, credential, custom."""
    headers: list[tuple[str, str]] = [
        ("anthropic-version", API_VERSION),
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ]
    if config.api_key is not None:
        headers.append(("x-api-key", config.api_key.reveal()))
    if config.auth_token is not None:
        headers.append(("authorization", f"Bearer {config.auth_token.reveal()}"))
    headers.extend(config.custom_headers)
    return tuple(headers)


@final
class ClientPool:
    """The upstream client and its credentials (see the module docstring)."""

    def __init__(self, config: Config, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._config = config
        self._transport = transport

    async def run(
        self, *, task_status: trio.TaskStatus[ClientPoolAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve leases until every address clone is closed. Startable; returns the address."""
        config = self._config
        timeout = httpx.Timeout(config.api_timeout, connect=min(CONNECT_TIMEOUT, config.api_timeout))
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
        address, inbox = trio.open_memory_channel[ClientPoolMsg](0)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, transport=self._transport) as client:
            lease = Lease(client=client, base_url=config.base_url, headers=base_headers(config))
            with inbox:
                task_status.started(address)
                async for msg in inbox:
                    answer(msg.reply, lease)
