"""The non-streaming fallback: its request, and its answer replayed as a stream.

docs/reference/reference-client.md 2.3: after a stream breaks, the reference retries without streaming,
with ``max_tokens`` capped at 64 000 and a thinking budget below the cap. The gateway's
clients always get a stream, so ``events_from_message`` turns the complete message into the
event sequence a stream of it would have produced (``message_start``, each block's start,
one delta carrying all of its content, stop, ``message_delta``, ``message_stop``). Feeding
those events to ``MessageAssembler`` gives the message back (a property test checks it).
"""

from __future__ import annotations

from typing import Any, Final

from protocol.retry import MAX_NON_STREAMING_TOKENS
from protocol.wire import JSON, JsonObject

# Fields of the final message that a stream carries in message_delta.delta, not in start.
_DELTA_FIELDS: Final = ("stop_reason", "stop_sequence", "stop_details", "container")


def nonstreaming_body(body: JsonObject) -> JsonObject:
    """The body of a non-streaming attempt: no ``stream``, max_tokens <= 64k, thinking
    budget below it."""
    out = {k: v for k, v in body.items() if k != "stream"}
    max_tokens = out.get("max_tokens")
    capped = min(max_tokens, MAX_NON_STREAMING_TOKENS) if isinstance(max_tokens, int) else MAX_NON_STREAMING_TOKENS
    out["max_tokens"] = capped
    thinking = out.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and budget >= capped:
            out["thinking"] = {**thinking, "budget_tokens": capped - 1}
    return out


def _shell(block: JsonObject) -> tuple[JsonObject, JsonObject | None]:
    """A block's ``content_block_start`` payload and the one delta that fills it (if any)."""
    kind = block.get("type")
    if kind == "text":
        shell = {k: v for k, v in block.items() if k != "text"}
        shell["text"] = ""
        return shell, {"type": "text_delta", "text": block.get("text", "")}
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}, None
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        shell = dict(block)
        shell["input"] = {}
        return shell, {"type": "input_json_delta", "partial_json": JSON.encode(block.get("input", {})).decode()}
    return dict(block), None


def events_from_message(message: JsonObject) -> list[tuple[str, bytes]]:
    """The ``(event name, data)`` sequence a stream of ``message`` would have carried."""
    usage = message.get("usage") or {}
    start_message = {k: v for k, v in message.items() if k not in _DELTA_FIELDS}
    start_message["content"] = []
    start_message["stop_reason"] = None
    start_message["stop_sequence"] = None
    start_message["usage"] = {**usage, "output_tokens": 0}
    events: list[tuple[str, Any]] = [("message_start", {"type": "message_start", "message": start_message})]
    for index, block in enumerate(message.get("content") or []):
        if not isinstance(block, dict):
            continue
        shell, delta = _shell(block)
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": shell}))
        if block.get("type") == "thinking":
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": block.get("thinking", "")}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": block.get("signature", "")}}))
        elif delta is not None:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta_fields = {k: message.get(k) for k in _DELTA_FIELDS if k in message}
    events.append(("message_delta", {"type": "message_delta", "delta": delta_fields, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return [(name, JSON.encode(data)) for name, data in events]
