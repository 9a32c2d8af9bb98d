"""The gateway with its WebSocket door, as one startable (used by ``switchboard serve``)."""

from __future__ import annotations

import functools

import httpx
import msgspec
import trio

from actors.config import Config
from actors.front_door import FrontDoor
from actors.gateway import Gateway, run_gateway


class Server(msgspec.Struct, frozen=True, kw_only=True):
    """A running server: the embedding handle and the WebSocket door's URL."""

    gateway: Gateway
    ws_url: str


async def run_server(
    config: Config,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway and its WebSocket door until cancelled. Startable: gets the Server."""
    async with trio.open_nursery() as nursery:
        gateway: Gateway = await nursery.start(functools.partial(run_gateway, config, transport=transport))
        port: int = await nursery.start(FrontDoor(gateway, config).run)
        host = f"[{config.host}]" if ":" in config.host else config.host
        task_status.started(Server(gateway=gateway, ws_url=f"ws://{host}:{port}"))
