"""Helpers shared by the emulator tests: request bodies and an SSE reader/assembler."""

from __future__ import annotations

from typing import Any, Final

import msgspec

API_HEADERS: Final = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
# A system text over the minimum cacheable length of claude-sonnet-4-6 (1024 tokens;
# ``emulator/models.py``): 5400 bytes of JSON, about 1350 emulator tokens.
CACHEABLE_TEXT: Final = "Context. " * 600

WEATHER_TOOL: Final = {
    "name": "get_weather",
    "description": "Get the weather",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["location", "days"],
    },
}


def body(text: str = "hello there world", **extra: Any) -> dict[str, Any]:
    """A minimal valid Messages request body asking ``text``."""
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def prompt(text: str = "hello there world", **extra: Any) -> dict[str, Any]:
    """A minimal valid count_tokens body (a Messages body without ``max_tokens``)."""
    return {k: v for k, v in body(text, **extra).items() if k != "max_tokens"}


def parse_sse(raw: str) -> list[tuple[str, Any]]:
    """(event name, decoded data) for each event of a complete SSE body."""
    events = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], msgspec.json.decode(fields["data"])))
    return events


def assemble(events: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build the final message from stream events the way the SDK's accumulator does."""
    message: dict[str, Any] = {}
    json_parts: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            message = data["message"]
        elif name == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block = message["content"][data["index"]]
            delta = data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                json_parts[data["index"]] = (
                    json_parts.get(data["index"], "") + delta["partial_json"]
                )
        elif name == "content_block_stop":
            if data["index"] in json_parts:
                block = message["content"][data["index"]]
                block["input"] = msgspec.json.decode(json_parts[data["index"]])
        elif name == "message_delta":
            message["stop_reason"] = data["delta"]["stop_reason"]
            message["stop_sequence"] = data["delta"]["stop_sequence"]
            message["usage"].update(data["usage"])
    return message
