"""Assemble one upstream message from its stream events, and keep its usage.

``MessageAssembler`` is the sans-IO core of the StreamRelay: feed it each event's name and
data bytes in order; it tracks the message (``message_start`` fields, each content block
with its deltas applied, ``message_delta`` fields) and the message's merged usage
(``protocol.usage.merge_usage``: cumulative counts, never summed). Deltas are accumulated as
lists of string pieces and joined once, when a block stops, so a long answer costs O(n).

It also counts the output it was fed (``relayed``: a few integer additions per delta), so
that a stream cut short before the upstream's final output count is billed an estimate of
it (``settled_usage``, ``protocol.estimate``).

Errors: ``RemoteProtocolError`` (error_type ``api_error``) for an event stream that
contradicts itself: a delta for a block that was never started, a delta of the wrong type
for its block, a tool input that is not JSON when its block stops, undecodable JSON. Every
event is checked to be one JSON object within the bounds of ``protocol.bounded_json``, those
the assembler does not otherwise read too (``message_stop``, ``ping``, event names it does
not know), since each is relayed to the client as it is: an upstream event that is not JSON
is a malformed stream, never relayed raw (docs/protocol.md, "Bounds on what the gateway
decodes"). An in-stream ``error`` event is not raised: ``feed`` returns its error object.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from protocol.errors import RemoteProtocolError
from protocol.estimate import RelayedContent, settle
from protocol.usage import EMPTY_USAGE, Usage, WireUsage, merge_usage, reports_output
from protocol.wire import (
    ANY_EVENT,
    BLOCK_DELTA,
    BLOCK_START,
    BLOCK_STOP,
    JSON_OBJECT,
    MESSAGE_DELTA,
    STREAM_ERROR,
    ErrorObject,
    JsonObject,
)

# Which delta types may extend which block types (docs/reference/reference-client.md 2.1: a mismatch is a
# broken stream and fails the attempt).
_DELTA_TARGET: Final = {
    "text_delta": ("text", "text"),
    "input_json_delta": ("input", "tool_use", "server_tool_use", "mcp_tool_use"),
    "thinking_delta": ("thinking", "thinking"),
}


class _Block:
    __slots__ = ("block", "field", "open", "pieces")

    def __init__(self, block: JsonObject) -> None:
        self.block = block
        self.pieces: list[str] = []
        self.field: str | None = None
        self.open = True


class MessageAssembler:
    """Builds the complete assistant message of one upstream stream."""

    __slots__ = (
        "_blocks", "_message", "_opaque_chars", "_other_deltas", "_text_bytes", "error",
        "output_reported", "started", "stopped", "usage",
    )

    def __init__(self) -> None:
        self._message: JsonObject | None = None
        self._blocks: dict[int, _Block] = {}
        self.usage: Usage = EMPTY_USAGE
        self.started = False
        self.stopped = False
        self.error: ErrorObject | None = None
        # A message_delta carried the upstream's output count: ``usage`` is what it billed.
        self.output_reported = False
        # The output fed so far, for ``relayed`` (protocol.estimate.RelayedContent).
        self._text_bytes = 0
        self._opaque_chars = 0
        self._other_deltas = 0

    @property
    def model(self) -> str | None:
        """The model the upstream named in ``message_start``, once seen."""
        if self._message is None:
            return None
        model = self._message.get("model")
        return model if isinstance(model, str) else None

    @property
    def stop_reason(self) -> str | None:
        if self._message is None:
            return None
        reason = self._message.get("stop_reason")
        return reason if isinstance(reason, str) else None

    def relayed(self) -> RelayedContent:
        """What the stream delivered of the message's output so far."""
        return RelayedContent(
            text_bytes=self._text_bytes,
            opaque_chars=self._opaque_chars,
            blocks=len(self._blocks),
            other_deltas=self._other_deltas,
        )

    def settled_usage(self) -> Usage:
        """The usage to bill for the message as it stands: ``usage`` once the upstream
        reported its output count, else ``usage`` with the output estimated from what was
        relayed (``protocol.estimate.settle``, flagged ``estimated``). Before
        ``message_start``: ``usage`` (nothing was billed)."""
        if self.output_reported or not self.started:
            return self.usage
        return settle(self.usage, self.relayed())

    @property
    def has_output(self) -> bool:
        """True once any content block started (the client has seen partial output)."""
        return bool(self._blocks)

    def feed(self, name: str, data: bytes) -> ErrorObject | None:
        """Apply one event. Returns the error object of an ``error`` event, else None.

        Raises:
            RemoteProtocolError: the stream contradicts itself or is not JSON.
        """
        try:
            if name == "content_block_delta":
                self._delta(data)
            elif name == "message_start":
                self._start(data)
            elif name == "content_block_start":
                start = BLOCK_START.decode(data)
                block = self._blocks[start.index] = _Block(dict(start.content_block))
                if block.block.get("type") == "redacted_thinking":
                    redacted = block.block.get("data")
                    self._opaque_chars += len(redacted) if isinstance(redacted, str) else 0
            elif name == "content_block_stop":
                self._close_block(self._block(BLOCK_STOP.decode(data).index))
            elif name == "message_delta":
                self._message_delta(data)
            elif name == "error":
                self.error = STREAM_ERROR.decode(data).error
                return self.error
            else:
                # message_stop, ping and event names the gateway does not know are relayed
                # and otherwise ignored: only checked to be a JSON object.
                ANY_EVENT.decode(data)
                if name == "message_stop":
                    self.stopped = True
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RemoteProtocolError(f"malformed {name} event: {exc}", error_type="api_error") from exc
        return None

    def message(self) -> JsonObject:
        """The assembled message so far (blocks still open are closed as they stand)."""
        message: JsonObject = dict(self._message) if self._message is not None else {}
        content: list[Any] = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if block.open:
                self._close_block(block, strict=False)
            content.append(block.block)
        message["content"] = content
        message["usage"] = usage_json(self.usage)
        return message

    def _start(self, data: bytes) -> None:
        body = JSON_OBJECT.decode(data).get("message")
        if not isinstance(body, dict):
            raise RemoteProtocolError("message_start without a message", error_type="api_error")
        self._message = body
        self.started = True
        self.usage = merge_usage(self.usage, msgspec.convert(body.get("usage") or {}, WireUsage))

    def _block(self, index: int) -> _Block:
        block = self._blocks.get(index)
        if block is None:
            raise RemoteProtocolError(f"content block {index} not found", error_type="api_error")
        return block

    def _delta(self, data: bytes) -> None:
        event = BLOCK_DELTA.decode(data)
        block = self._block(event.index)
        delta = event.delta
        kind = delta.type
        target = _DELTA_TARGET.get(kind)
        if target is not None:
            if block.block.get("type") not in target[1:]:
                raise RemoteProtocolError(
                    f"{kind} for a {block.block.get('type')} block", error_type="api_error"
                )
            piece = delta.text if kind == "text_delta" else (
                delta.partial_json if kind == "input_json_delta" else delta.thinking
            )
            block.field = target[0]
            if piece:
                block.pieces.append(piece)
                # UTF-8 bytes (protocol.estimate); isascii() is O(1), so ASCII costs a len().
                self._text_bytes += len(piece) if piece.isascii() else len(piece.encode())
        elif kind == "signature_delta":
            signature = block.block["signature"] = delta.signature or ""
            self._opaque_chars += len(signature)
        else:
            self._other_deltas += 1
            if kind == "citations_delta" and delta.citation is not None:
                citations = block.block.get("citations")
                if not isinstance(citations, list):
                    citations = block.block["citations"] = []
                citations.append(delta.citation)

    def _close_block(self, block: _Block, *, strict: bool = True) -> None:
        block.open = False
        if block.field is None:
            return
        joined = "".join(block.pieces)
        block.pieces = []
        if block.field == "input":
            try:
                block.block["input"] = JSON_OBJECT.decode(joined) if joined.strip() else {}
            except msgspec.DecodeError as exc:
                if strict:
                    raise RemoteProtocolError(
                        f"tool input is not a JSON object: {exc}", error_type="api_error"
                    ) from exc
                block.block["input"] = {}
        else:
            block.block[block.field] = str(block.block.get(block.field) or "") + joined
        block.field = None

    def _message_delta(self, data: bytes) -> None:
        event = MESSAGE_DELTA.decode(data)
        if self._message is None:
            raise RemoteProtocolError("message_delta before message_start", error_type="api_error")
        self._message.update(event.delta)
        self.usage = merge_usage(self.usage, event.usage)
        self.output_reported = self.output_reported or reports_output(event.usage)


def usage_json(usage: Usage) -> JsonObject:
    """Usage in the API's own JSON shape (for assembled messages and front-door frames)."""
    out: JsonObject = {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_creation_input_tokens
            - usage.cache_creation_1h_input_tokens,
            "ephemeral_1h_input_tokens": usage.cache_creation_1h_input_tokens,
        },
        "output_tokens": usage.output_tokens,
    }
    if usage.estimated:
        # docs/protocol.md "Cost of a stream cut short": the output count is the gateway's estimate.
        out["estimated"] = True
    if usage.web_search_requests or usage.web_fetch_requests:
        out["server_tool_use"] = {
            "web_search_requests": usage.web_search_requests,
            "web_fetch_requests": usage.web_fetch_requests,
        }
    if usage.service_tier is not None:
        out["service_tier"] = usage.service_tier
    if usage.speed is not None:
        out["speed"] = usage.speed
    return out
