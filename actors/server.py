"""The gateway with its WebSocket door and, when configured, its HTTP door, as one startable
(used by ``switchboard serve``)."""

from __future__ import annotations

import functools

import httpx
import msgspec
import trio

from actors.config import Config
from actors.front_door import FrontDoor
from actors.gateway import Gateway, run_gateway
from actors.http_door import HttpDoor


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
        port: int = await nursery.start(FrontDoor(gateway, config).run)
        host = f"[{config.host}]" if ":" in config.host else config.host
        http_url: str | None = None
        if config.http_port is not None:
            http_port: int = await nursery.start(HttpDoor(gateway, config).run)
            http_url = f"http://{host}:{http_port}"
        task_status.started(Server(gateway=gateway, ws_url=f"ws://{host}:{port}", http_url=http_url))
