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

from actors.config import Config
from actors.drain import Drain
from actors.front_door import FrontDoor
from actors.gateway import Gateway, run_gateway
from actors.http_door import HttpDoor
from protocol.errors import ServiceFailed


class Server(msgspec.Struct, frozen=True, kw_only=True):
    """A running server: the embedding handle, the WebSocket door's URL and the HTTP door's
    (None when ``Config.http_port`` is None)."""

    gateway: Gateway
    ws_url: str
    http_url: str | None = None


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
    async with trio.open_nursery() as nursery:
        gateway: Gateway = await nursery.start(functools.partial(run_gateway, config, transport=transport))
        drain = gateway.drain
        door = FrontDoor(gateway, config, gateway.fleet)
        port: int = await nursery.start(_door, "WebSocket door", door.run, drain)
        host = f"[{config.host}]" if ":" in config.host else config.host
        http_url: str | None = None
        if config.http_port is not None:
            http_port: int = await nursery.start(_door, "HTTP door", HttpDoor(gateway, config).run, drain)
            http_url = f"http://{host}:{http_port}"
        task_status.started(Server(gateway=gateway, ws_url=f"ws://{host}:{port}", http_url=http_url))


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
