"""Telemetry: the HTTP door's ``POST /v1/metrics``, ``/v1/logs``, ``/v1/traces`` (OTLP/HTTP;
README.md "Claude Code for a whole organisation"; decoding: protocol/otlp.py).

Every export is answered 200 (``{}``, or the empty protobuf ``Export*ServiceResponse``),
whether it decoded, was forwarded or was discarded: a client's telemetry never costs it a
retry, and never waits on a collector. What came is counted in ``/metrics``
(``switchboard_otlp_exports``, ``switchboard_otlp_items``).

Forwarding (``Config.otlp_forward``, ``SWITCHBOARD_OTLP_FORWARD``: collector base URLs such as
``http://collector:4318``): each export's bytes go unchanged, with their content type, to
``{collector}/v1/{signal}``. One bounded queue per collector (``QUEUE_SIZE``; a full queue
drops the newest export, counted ``dropped``) and one task sending from it, each POST within
``SEND_TIMEOUT``; a ``protocol.otlp.Breaker`` per collector stops trying one that keeps
failing (its exports are counted ``circuit_open`` and dropped). Inference never waits on any
of this: ``receive`` only puts on queues.
"""

from __future__ import annotations

import logging
from typing import Final, final
from urllib.parse import urlsplit

import httpx
import trio

from actors.doors.asgi import Exchange
from actors.observe.metrics import Metrics
from protocol.otlp import Breaker, Encoding, OtlpError, Signal, count_items

log = logging.getLogger("switchboard.otlp")

# Exports waiting for one collector at most (each at most protocol.otlp.MAX_EXPORT_BYTES).
QUEUE_SIZE: Final = 64
# One POST to a collector, connect to answer.
SEND_TIMEOUT: Final = 10.0

_Export = tuple[Signal, bytes, bytes]  # signal, content type, body


def destination_label(url: str) -> str:
    """A collector's name in metrics and logs: its host and port, never a password or path."""
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "collector"


@final
class Telemetry:
    """Counts and forwards the OTLP exports clients send (see the module docstring)."""

    def __init__(
        self,
        metrics: Metrics,
        destinations: tuple[str, ...] = (),
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._metrics = metrics
        self._destinations = tuple(d.rstrip("/") for d in destinations)
        self._transport = transport
        self._queues = [trio.open_memory_channel[_Export](QUEUE_SIZE) for _ in self._destinations]

    def receive(self, signal: Signal, encoding: Encoding, content_type: bytes, body: bytes) -> int | None:
        """Count an export and queue it for every collector; its item count (None: it did
        not decode, and then it is not forwarded). Not a checkpoint."""
        try:
            items: int | None = count_items(body, signal, encoding)
        except OtlpError as exc:
            log.debug("an OTLP %s export did not decode: %s", signal, exc)
            items = None
        self._metrics.otlp_export(signal, encoding, items)
        if items is None:
            return None
        for destination, (send, _) in zip(self._destinations, self._queues, strict=True):
            try:
                send.send_nowait((signal, content_type, body))
            except trio.WouldBlock:
                self._metrics.otlp_forward(destination_label(destination), "dropped")
        return items

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Forward until cancelled (one task per collector). Startable."""
        async with httpx.AsyncClient(transport=self._transport, timeout=SEND_TIMEOUT) as client:
            async with trio.open_nursery() as nursery:
                for destination, (_, receive) in zip(self._destinations, self._queues, strict=True):
                    nursery.start_soon(self._forward, client, destination, receive)
                task_status.started()

    async def _forward(
        self, client: httpx.AsyncClient, destination: str, receive: trio.MemoryReceiveChannel[_Export]
    ) -> None:
        label = destination_label(destination)
        breaker = Breaker()
        async for signal, content_type, body in receive:
            if not breaker.allows(trio.current_time()):
                self._metrics.otlp_forward(label, "circuit_open")
                continue
            try:
                answer = await client.post(
                    f"{destination}/v1/{signal}", content=body, headers={"content-type": content_type.decode("latin-1")}
                )
                ok = answer.is_success
            except httpx.HTTPError as exc:
                log.warning("OTLP collector %s: %s", label, type(exc).__name__)
                ok = False
            if ok:
                breaker.succeeded()
            else:
                breaker.failed(trio.current_time())
            self._metrics.otlp_forward(label, "sent" if ok else "failed")


# The answers: an empty Export*ServiceResponse (no partial_success) in the request's encoding.
_EMPTY_JSON: Final = b"{}"
_PROTOBUF: Final = b"application/x-protobuf"


async def answer_export(exchange: Exchange, encoding: Encoding) -> None:
    """200 with an empty export response."""
    if encoding == "json":
        await exchange.respond(200, _EMPTY_JSON, b"application/json")
    else:
        await exchange.respond(200, b"", _PROTOBUF)
