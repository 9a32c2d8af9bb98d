"""The BootstrapFetcher's contract (actors/bootstrap_fetcher.py).

``GetBootstrap`` -> ``BootstrapState``: at once, or with ``settled=True`` once the startup
fetch has ended. ``BootstrapState`` is also the snapshot the fetcher publishes
(``BootstrapFetcher.state``): immutable, replaced as a whole, read without a checkpoint
(``Gateway.models``).
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec
import trio

from protocol.frames import ModelOption
from protocol.wire import JsonObject


class BootstrapState(msgspec.Struct, frozen=True, kw_only=True):
    """What the gateway knows from the bootstrap API.

    ``model_options``: the additional options only (``merge_model_options`` joins them to
    the defaults). ``source``: ``"none"``, ``"cache"`` (the disk cache) or ``"upstream"``
    (this start's fetch). ``settled``: the startup fetch has ended, whichever way.
    """

    client_data: JsonObject | None = None
    model_options: tuple[ModelOption, ...] = ()
    source: str = "none"
    settled: bool = False


class GetBootstrap(msgspec.Struct, frozen=True, kw_only=True):
    reply: trio.MemorySendChannel[BootstrapState]
    settled: bool = False


BootstrapFetcherMsg: TypeAlias = GetBootstrap


BootstrapFetcherAddress: TypeAlias = trio.MemorySendChannel[BootstrapFetcherMsg]
