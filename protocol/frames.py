"""Front-door frames (docs/protocol.md section 1), both directions, as tagged unions.

Every frame is one JSON object with a ``type`` tag. Client commands are decoded with one
typed decoder (``decode_command``), which maps every failure to ``RemoteProtocolError`` and
recovers the refused frame's ``id`` for the ``rejected`` answer. Gateway frames are encoded
with one shared encoder (``encode_frame``); ``EventFrame.event`` is ``msgspec.Raw``, so an
upstream event's bytes go out exactly as they came in.

Schema evolution (docs/protocol.md: extend, never break): new fields get defaults; nothing is
renamed. Client commands forbid unknown fields so a misspelt option is refused, not ignored.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Final, TypeAlias, cast

import msgspec

from protocol.bounded_json import MAX_DEPTH, BoundedDecoder
from protocol.caching import CacheBreak
from protocol.errors import RemoteProtocolError
from protocol.wire import JsonObject

PROTOCOL_VERSION: Final = 1

# docs/protocol.md 1: session ids are 1 to 128 characters of [A-Za-z0-9._-].
SESSION_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")


# --- shared objects -------------------------------------------------------------------------


class ErrorInfo(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The error object of docs/protocol.md: upstream or gateway error type, message, status, id.

    ``status`` and ``request_id`` are always present (null when unknown). The optional fields
    after them appear only when set: ``prompt_tokens``/``max_prompt_tokens`` on
    ``prompt_too_long``, so a client knows how far to compact.
    """

    type: str
    message: str
    status: int | None
    request_id: str | None
    prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    # A gateway refusal that waiting ends (a token's budget, rpm or concurrency limit,
    # docs/protocol.md "Access tokens and budgets"): seconds until it may succeed (the HTTP
    # door's ``retry-after``).
    retry_after_s: int | None = None


class ModelUsageSummary(msgspec.Struct, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    web_search_requests: int = 0
    cost_usd: float = 0.0
    # Of output_tokens, those from streams cut short: the gateway's estimate (protocol/estimate.py).
    estimated_output_tokens: int = 0


class CostSummary(msgspec.Struct, kw_only=True):
    """A session's cost summary (docs/protocol.md 1), keyed by the model id as sent upstream.

    ``estimated_cost_usd``: the part of ``total_cost_usd`` from usage records whose output
    count is the gateway's estimate (docs/protocol.md "Cost of a stream cut short").
    """

    session_id: str
    total_cost_usd: float = 0.0
    api_duration_ms: int = 0
    api_duration_without_retries_ms: int = 0
    model_usage: dict[str, ModelUsageSummary] = msgspec.field(default_factory=dict)
    unknown_model_cost: bool = False
    estimated_cost_usd: float = 0.0


class ModelOption(msgspec.Struct, kw_only=True, frozen=True):
    """One entry of ``ready.models``: the value to send, a label and a description."""

    value: str
    label: str
    description: str = ""


# --- client to gateway ----------------------------------------------------------------------


class _Command(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    pass


class Query(_Command, frozen=True, tag="query"):
    id: str
    request: JsonObject
    source: str = "sdk"
    fallback_model: str | None = None
    fast_mode: bool | None = None
    persistent: bool | None = None
    max_retries: int | None = None
    recover: bool | None = None


class Abort(_Command, frozen=True, tag="abort"):
    id: str


class CountTokens(_Command, frozen=True, tag="count_tokens"):
    id: str
    request: JsonObject


class GetCost(_Command, frozen=True, tag="get_cost"):
    pass


ClientCommand: TypeAlias = Query | Abort | CountTokens | GetCost


# --- gateway to client ----------------------------------------------------------------------


class _Frame(msgspec.Struct, kw_only=True, tag_field="type"):
    pass


class TokenBudget(msgspec.Struct, kw_only=True, frozen=True):
    """A ledger access token's budget as of now (docs/protocol.md "Access tokens and
    budgets"): ``renews_at`` is an ISO 8601 UTC time, null for a ``total`` budget."""

    name: str
    limit_usd: float
    period: str
    spent_usd: float
    reserved_usd: float
    remaining_usd: float
    renews_at: str | None


class Ready(_Frame, tag="ready"):
    session_id: str
    resumed: bool
    cost: CostSummary
    models: list[ModelOption]
    protocol: int = PROTOCOL_VERSION
    # Only for a connection whose token has a budget (absent otherwise).
    budget: TokenBudget | msgspec.UnsetType = msgspec.UNSET


class EventFrame(_Frame, tag="event"):
    id: str
    attempt: int
    model: str
    event: msgspec.Raw


class RetryFrame(_Frame, tag="retry"):
    id: str
    attempt: int
    max_retries: int
    delay_ms: int
    error: ErrorInfo


class Heartbeat(_Frame, tag="heartbeat"):
    id: str
    attempt: int
    remaining_ms: int


class Queued(_Frame, tag="queued"):
    """The query waits for one of the gateway's ``limit`` slots, ``position``-th in line
    (docs/protocol.md "Admission"; an extension: a client may ignore it). ``heartbeat``
    frames (``attempt`` 0) follow while it waits; then it runs as usual."""

    id: str
    position: int
    limit: int


class Tombstone(_Frame, tag="tombstone"):
    id: str
    attempt: int


class Fallback(_Frame, tag="fallback"):
    id: str
    from_model: str
    to_model: str
    reason: str


class FastMode(_Frame, tag="fast_mode"):
    id: str
    active: bool
    reason: str
    until_ms: int | None = None


class Done(_Frame, tag="done"):
    id: str
    model: str
    stop_reason: str | None
    message: JsonObject
    usage: JsonObject
    cost_usd: float
    session_cost_usd: float
    attempts: int
    duration_ms: int
    duration_without_retries_ms: int
    # issue 5: the prompt cache's reads fell since the session's previous request
    # (docs/reference/reference-client.md 7.5); diagnostics only.
    cache_break: CacheBreak | None = None
    # False: the cost ledger could not commit this query's usage (a full disk, an I/O error):
    # it is counted in memory only, lost if the process dies before the ledger recovers.
    cost_recorded: bool = True


class Aborted(_Frame, tag="aborted"):
    id: str
    usage: JsonObject
    cost_usd: float
    cost_recorded: bool = True  # as ``Done.cost_recorded``


class ErrorFrame(_Frame, tag="error"):
    id: str
    error: ErrorInfo


class Rejected(_Frame, tag="rejected"):
    id: str | None
    error: ErrorInfo


class TokenCount(_Frame, tag="token_count"):
    id: str
    input_tokens: int


class CostFrame(_Frame, tag="cost"):
    cost: CostSummary
    budget: TokenBudget | msgspec.UnsetType = msgspec.UNSET  # as in ``Ready``


GatewayFrame: TypeAlias = (
    Ready
    | EventFrame
    | RetryFrame
    | Heartbeat
    | Queued
    | Tombstone
    | Fallback
    | FastMode
    | Done
    | Aborted
    | ErrorFrame
    | Rejected
    | TokenCount
    | CostFrame
)

# The frames that end a query (docs/protocol.md 1: exactly one per query, nothing after it).
TERMINAL_FRAMES: Final = (Done, Aborted, ErrorFrame)

_COMMAND: Final = BoundedDecoder(ClientCommand)


class _FrameId(msgspec.Struct):
    id: Any = None


# Only the ``id`` of a refused frame, so that its ``rejected`` answer names it even when the
# frame was refused for its depth: msgspec skips the rest without building it (a frame
# nested near msgspec's recursion limit still ends as a decode error, with no id).
_ID: Final = BoundedDecoder(_FrameId, max_depth=sys.maxsize)
_FRAME_ENCODER: Final = msgspec.json.Encoder()
# A gateway frame carries an upstream value (an event, the assembled message) two levels down
# (``frame.event``, ``frame.message``); the upstream's own JSON is bounded at ``MAX_DEPTH``, so
# a frame may nest that much deeper (with a margin) and a client must still read it.
FRAME_MAX_DEPTH: Final = MAX_DEPTH + 4
_FRAME_DECODER: Final = BoundedDecoder(GatewayFrame, max_depth=FRAME_MAX_DEPTH)


def decode_command(raw: bytes | str) -> ClientCommand:
    """Decode one client frame.

    Raises:
        RemoteProtocolError: not JSON, not an object, unknown ``type``, a missing, unknown or
            mistyped field, over a limit of ``protocol.bounded_json`` (nested too deep).
            ``.frame_id`` holds the frame's ``id`` when it was a string.
    """
    try:
        return cast(ClientCommand, _COMMAND.decode(raw))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(f"bad frame: {exc}", frame_id=_frame_id(raw)) from exc


def _frame_id(raw: bytes | str) -> str | None:
    try:
        frame_id = _ID.decode(raw).id
    except msgspec.DecodeError:
        return None
    return frame_id if isinstance(frame_id, str) else None


def encode_frame(frame: GatewayFrame) -> bytes:
    """Encode a gateway frame to JSON bytes (one shared encoder)."""
    return _FRAME_ENCODER.encode(frame)


def decode_frame(raw: bytes | str) -> GatewayFrame:
    """Decode a gateway frame (for clients and tests). Raises ``msgspec`` errors as they are."""
    return cast(GatewayFrame, _FRAME_DECODER.decode(raw))
