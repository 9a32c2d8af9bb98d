"""The StreamRelay's contract (actors/stream_relay.py): ``RunAttempt`` -> ``AttemptOutcome``,
``RunCount`` -> ``CountResult`` (the RetrySupervisor sends both)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import msgspec
import trio

from actors.supervisor.options import UpstreamHeads
from protocol.frames import GatewayFrame
from protocol.retry import Failure
from protocol.usage import EMPTY_USAGE, Usage
from protocol.wire import JsonObject


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How one attempt ended. ``failure`` None: ``message`` is the complete answer.

    ``usage``/``cost_pico`` are what this attempt's upstream message used (recorded already;
    its output estimated, ``usage.estimated``, when the stream was cut short before the
    upstream's final count, protocol/estimate.py);
    ``cost_recorded`` False: the ledger did not commit it (``UsageRecorded.recorded``);
    ``relayed`` counts the event frames the client received; ``aborted`` means the attempt
    was cancelled. ``internal_error``: the attempt failed unexpectedly (the relay logged and
    counted it); says what, for the client's ``internal_error``.
    """

    model: str
    message: JsonObject | None = None
    failure: Failure | None = None
    usage: Usage = EMPTY_USAGE
    cost_pico: int = 0
    session_cost_pico: int | None = None
    cost_recorded: bool = True
    relayed: int = 0
    duration: float = 0.0
    aborted: bool = False
    generation: int = 0
    internal_error: str | None = None


class RunAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt. ``streaming`` False: the non-streaming fallback (reference 2.3), whose
    answer is relayed as the events a stream of it would have carried.

    Output-limit recovery (protocol/recovery.py): ``withhold_output_limit`` keeps a
    ``max_tokens`` stop (its ``message_delta`` and ``message_stop``) from the client, since
    the answer may yet go on; ``continuation`` drops the ``message_start`` of an answer
    that continues an earlier one, and ``index_offset`` renumbers its blocks after the
    earlier ones, so the client sees one message."""

    session_id: str
    query_id: str
    attempt: int
    model: str
    body: JsonObject
    headers: tuple[tuple[str, str], ...] = ()
    streaming: bool = True
    withhold_output_limit: bool = False
    index_offset: int = 0
    continuation: bool = False
    query_started: float = 0.0
    measure_first_token: bool = False
    # The HTTP door's (actors/supervisor/options.py): the client's bytes, sent as they are when
    # set (the first party's format only), and where the response headers go.
    raw_body: bytes | None = None
    heads: UpstreamHeads | None = None
    beta_query: bool = False
    # Called (not awaited) as the upstream answers 200: the overload gate of the attempt's
    # model learns of a probe's success at once (actors/supervisor/shared.py).
    on_accepted: Callable[[], None] | None = None
    outbound: trio.MemorySendChannel[GatewayFrame]
    scope: trio.CancelScope
    reply: trio.MemorySendChannel[AttemptOutcome]


class CountResult(msgspec.Struct, frozen=True, kw_only=True):
    """``headers``: the upstream response's, as a client may get them (``client_headers``)."""

    input_tokens: int | None = None
    failure: Failure | None = None
    headers: tuple[tuple[str, str], ...] = ()


class RunCount(msgspec.Struct, frozen=True, kw_only=True):
    body: JsonObject
    headers: tuple[tuple[str, str], ...] = ()
    reply: trio.MemorySendChannel[CountResult]


StreamRelayMsg: TypeAlias = RunAttempt | RunCount


StreamRelayAddress: TypeAlias = trio.MemorySendChannel[StreamRelayMsg]
