"""The gateway with its WebSocket door and, when configured, its HTTP door, as one startable
(used by ``switchboard serve``).

The service lives or dies whole (docs/supervision.md): a door whose listener fails or stops
raises ``ServiceFailed``, which cancels the other door and the gateway, so a process is never
left half alive (the HTTP door serving without the WebSocket door, or the reverse).
Everything short of that (a query, a connection, a request, an actor's message) is contained
where it happens and never reaches here.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import httpx
import msgspec
import trio

from actors.config.settings import Config, ledger_file
from actors.doors.http import HttpDoor
from actors.doors.oauth import OAuthDoor, open_oauth_door
from actors.doors.websocket import FrontDoor
from actors.gateway import Gateway, run_gateway
from actors.store.sqlite import MEMORY
from actors.supervisor.drain import Drain
from protocol.errors import ServiceFailed


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
