"""Messages API wire types: what the gateway decodes of the upstream's answers.

The gateway relays stream events as the bytes the upstream sent (docs/architecture.md principle 6); it
decodes only what it must read: ``message_start`` (id, model, usage), block starts and
deltas (to assemble the final message), ``message_delta`` (stop reason, usage) and
``error``. Decoders are built once, here, and bounded (``protocol.bounded_json``). Request
bodies are plain JSON objects (``JsonObject``): everything the gateway does not need to
understand passes through untouched (see ``protocol.client_request``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, TypeAlias

import msgspec

from protocol.bounded_json import BoundedDecoder
from protocol.usage import MAX_TOKEN_COUNT, WireUsage

# A JSON object as decoded by msgspec: the request body and content blocks are kept generic
# so that fields the gateway does not know pass through unchanged.
JsonObject: TypeAlias = dict[str, Any]


class ErrorObject(msgspec.Struct, kw_only=True):
    """The ``error`` member of an API error envelope or of an in-stream ``error`` event."""

    type: str = "api_error"
    message: str = ""


class ErrorEnvelope(msgspec.Struct, kw_only=True):
    """``{"type": "error", "error": {...}, "request_id": ...}`` (docs/reference/wire.md 3.1)."""

    error: ErrorObject
    type: str = "error"
    request_id: str | None = None


class MessageStartBody(msgspec.Struct, kw_only=True):
    """The ``message`` of ``message_start``: the fields the gateway reads."""

    id: str = ""
    model: str = ""
    usage: WireUsage = msgspec.field(default_factory=WireUsage)


class MessageStart(msgspec.Struct, kw_only=True):
    message: MessageStartBody


class BlockStart(msgspec.Struct, kw_only=True):
    index: int
    content_block: JsonObject


class Delta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A ``content_block_delta.delta``: one of text, input_json, thinking, signature, citations."""

    type: str
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None
    citation: Any = None


class BlockDelta(msgspec.Struct, kw_only=True):
    index: int
    delta: Delta


class BlockStop(msgspec.Struct, kw_only=True):
    index: int


class MessageDeltaBody(msgspec.Struct, kw_only=True):
    stop_reason: str | None = None
    stop_sequence: str | None = None


class MessageDelta(msgspec.Struct, kw_only=True):
    delta: JsonObject = msgspec.field(default_factory=dict)
    usage: WireUsage = msgspec.field(default_factory=WireUsage)


class AnyEvent(msgspec.Struct, kw_only=True):
    """Any stream event: a JSON object, its fields not read (decoding it checks that much)."""


class StreamError(msgspec.Struct, kw_only=True):
    error: ErrorObject = msgspec.field(default_factory=ErrorObject)


class CountTokensResult(msgspec.Struct, kw_only=True):
    # A count out of range is a malformed answer (protocol.usage.MAX_TOKEN_COUNT says why).
    input_tokens: Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKEN_COUNT)]


# docs/reference/wire.md 3.2: the status each API error type comes with.
STATUS_OF_ERROR_TYPE: Final[dict[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# The other way, for a non-2xx answer without an API envelope (a proxy's, a load
# balancer's): the type the status stands for; 408 is a timeout too.
ERROR_TYPE_OF_STATUS: Final[dict[int, str]] = {
    **{status: kind for kind, status in STATUS_OF_ERROR_TYPE.items()},
    408: "timeout_error",
}

MESSAGE_START: Final = BoundedDecoder(MessageStart)
BLOCK_START: Final = BoundedDecoder(BlockStart)
BLOCK_DELTA: Final = BoundedDecoder(BlockDelta)
BLOCK_STOP: Final = BoundedDecoder(BlockStop)
MESSAGE_DELTA: Final = BoundedDecoder(MessageDelta)
STREAM_ERROR: Final = BoundedDecoder(StreamError)
ANY_EVENT: Final = BoundedDecoder(AnyEvent)
ERROR_ENVELOPE: Final = BoundedDecoder(ErrorEnvelope)
JSON_OBJECT: Final = BoundedDecoder(JsonObject)
COUNT_TOKENS_RESULT: Final = BoundedDecoder(CountTokensResult)
JSON: Final = msgspec.json.Encoder()


def parse_error_body(body: bytes) -> ErrorObject | None:
    """The error object of an API error body, or None when the body is not that shape."""
    try:
        return ERROR_ENVELOPE.decode(body).error
    except msgspec.DecodeError:
        return None
