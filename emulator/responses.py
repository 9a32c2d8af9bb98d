"""The emulated model: what a request gets back, as SSE events or one message (pure).

Content, in block order (docs/reference/wire.md 2.2 / 2.4 shapes):

1. ``thinking`` when the request has ``thinking.type`` ``enabled`` or ``adaptive``: three
   ``thinking_delta``s, then one ``signature_delta``.
2. ``text``: ``"Echo: " + <the last user message's text>`` (directives removed), or a fixed
   sentence when there is none; with ``deltas=N`` the text is ``"word0 word1 ... wordN-1"``.
   One ``text_delta`` per word, each keeping its trailing space, so the deltas join to the
   text. Left out when ``tool_choice`` forces a tool (the API starts with the tool then).
3. ``tool_use`` when the request has custom tools and ``tool_choice.type`` is ``any`` or
   ``tool``, or the last user text names a tool: id ``toolu_emu_<n>``, start input ``{}``,
   ``input_json_delta``s (the first ``""``) joining to the JSON of an input built from the
   schema's required properties (enum -> first value, string -> "Paris", number/integer ->
   1, boolean -> true, else null).

Output usage: every delta costs 1 token and every block 1 more. Blocks are emitted in order
until ``max_tokens`` is spent: a text or thinking block is cut between deltas, a tool_use
block is emitted whole or not at all. ``output_tokens`` is the tokens spent;
``stop_reason`` is ``max_tokens`` when anything was cut, else ``tool_use`` when a tool_use
block was emitted, else ``end_turn``.

The non-streaming message is built from the same plan, so it equals the stream assembled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from .faults import strip_directives
from .tokens import InputUsage

JSON = dict[str, object]

# The reply text when the last user message has no text (e.g. only tool results).
DEFAULT_TEXT: Final = "Hello from the Switchboard emulator."
# Fixed thinking text: a few deltas are enough to exercise a client's thinking path.
THINKING_DELTAS: Final = ("Let me think ", "about this request ", "step by step.")
# A fixed, base64-looking signature; clients only pass it back unmodified.
SIGNATURE: Final = "RW11bGF0ZWRTaWduYXR1cmVGb3JUaGlua2luZ0Jsb2Nr"
# Tool input JSON is streamed in pieces this long (the API sends a few characters each).
TOOL_JSON_PIECE: Final = 12

# A word with its trailing whitespace (leading whitespace only at the start of the text).
_WORD: Final = re.compile(r"\s*\S+\s*")
_encode: Final = msgspec.json.encode
# Constant events are built once; ping keeps the API's spaced JSON (docs/reference/wire.md 2.2).
PING_EVENT: Final = b'event: ping\ndata: {"type": "ping"}\n\n'
MESSAGE_STOP_EVENT: Final = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


@dataclass(frozen=True, slots=True)
class Block:
    """One content block: its ``content_block_start`` payload, deltas and final form."""

    start: JSON
    deltas: tuple[JSON, ...]
    final: JSON


@dataclass(frozen=True, slots=True)
class Reply:
    """Everything needed to answer one Messages request, streamed or not."""

    message_id: str
    model: str
    blocks: tuple[Block, ...]
    stop_reason: str
    input: InputUsage
    output_tokens: int


def split_words(text: str) -> list[str]:
    """``text`` as word pieces, each with its trailing whitespace; they join to ``text``."""
    pieces = _WORD.findall(text)
    return pieces if pieces else [text] if text else []


def last_user_text(body: Mapping[str, object]) -> str | None:
    """The text of the last ``user`` message (text blocks joined by newlines), or None."""
    messages = body.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            texts = [
                block["text"]
                for block in (content if isinstance(content, list) else [])
                if isinstance(block, Mapping)
                and block.get("type") == "text"
                and isinstance(block.get("text"), str)
            ]
            return "\n".join(texts) if texts else None
    return None


# A block before it is cut to fit max_tokens: its content_block_start payload and deltas.
_Draft = tuple[JSON, list[JSON]]


def _text_draft(text: str) -> _Draft:
    deltas: list[JSON] = [{"type": "text_delta", "text": w} for w in split_words(text)]
    return {"type": "text", "text": ""}, deltas


def _example_value(schema: object) -> object:
    """A plausible value for one JSON-schema property."""
    if not isinstance(schema, Mapping):
        return None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return {"string": "Paris", "number": 1, "integer": 1, "boolean": True}.get(str(kind))


def example_input(schema: object) -> JSON:
    """A tool input holding every required property of ``schema``."""
    if not isinstance(schema, Mapping):
        return {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = schema.get("required")
    names = (
        [name for name in required if isinstance(name, str)] if isinstance(required, list) else []
    )
    return {name: _example_value(properties.get(name)) for name in names}


# Claude Code's system reminders, which it puts in the user message for some models: they
# list every tool, so a tool named there was not asked for by the user.
_REMINDERS: Final = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)


def _chosen_tool(body: Mapping[str, object], text: str) -> tuple[Mapping[str, object] | None, bool]:
    """The custom tool the reply calls (or None) and whether tool_choice forced it."""
    tools = body.get("tools")
    custom = [
        tool
        for tool in (tools if isinstance(tools, list) else [])
        if isinstance(tool, Mapping)
        and isinstance(tool.get("name"), str)
        and isinstance(tool.get("input_schema"), Mapping)
    ]
    choice = body.get("tool_choice")
    choice_type = choice.get("type") if isinstance(choice, Mapping) else None
    if not custom or choice_type == "none":
        return None, False
    if choice_type == "tool" and isinstance(choice, Mapping):
        named = [tool for tool in custom if tool["name"] == choice.get("name")]
        return (named[0] if named else None), True
    if choice_type == "any":
        return custom[0], True
    said = _REMINDERS.sub("", text)
    return next((tool for tool in custom if str(tool["name"]) in said), None), False


def plan_reply(
    body: Mapping[str, object],
    *,
    sequence: int,
    input_usage: InputUsage,
    deltas: int | None = None,
) -> Reply:
    """Decide the reply to a checked Messages request (see the module docstring).

    ``sequence`` numbers the ids (``msg_emu_<n>``, ``toolu_emu_<n>``); ``deltas`` replaces
    the echo text by that many words.
    """
    max_tokens = body.get("max_tokens")
    assert isinstance(max_tokens, int), "plan_reply needs a checked request"
    blocks, cut = _fit(_drafts(body, sequence, deltas), max_tokens)
    has_tool = any(block.start["type"] == "tool_use" for block in blocks)
    return Reply(
        message_id=f"msg_emu_{sequence}",
        model=str(body.get("model")),
        blocks=blocks,
        stop_reason="max_tokens" if cut else "tool_use" if has_tool else "end_turn",
        input=input_usage,
        output_tokens=sum(1 + len(block.deltas) for block in blocks),
    )


def _drafts(body: Mapping[str, object], sequence: int, deltas: int | None) -> list[_Draft]:
    """Every block the reply would have with no max_tokens limit, in order."""
    raw_text = last_user_text(body)
    text = strip_directives(raw_text).strip() if raw_text is not None else ""
    drafts: list[_Draft] = []
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive"):
        thinking_deltas: list[JSON] = [
            {"type": "thinking_delta", "thinking": t} for t in THINKING_DELTAS
        ]
        thinking_deltas.append({"type": "signature_delta", "signature": SIGNATURE})
        drafts.append(({"type": "thinking", "thinking": "", "signature": ""}, thinking_deltas))
    tool, forced = _chosen_tool(body, text)
    if not forced:
        if deltas is not None:
            drafts.append(_text_draft(" ".join(f"word{i}" for i in range(deltas))))
        else:
            drafts.append(_text_draft(f"Echo: {text}" if text else DEFAULT_TEXT))
    if tool is not None:
        arguments = _encode(example_input(tool.get("input_schema"))).decode()
        pieces = [
            "",
            *(
                arguments[i : i + TOOL_JSON_PIECE]
                for i in range(0, len(arguments), TOOL_JSON_PIECE)
            ),
        ]
        start: JSON = {
            "type": "tool_use",
            "id": f"toolu_emu_{sequence}",
            "name": tool["name"],
            "input": {},
        }
        drafts.append((start, [{"type": "input_json_delta", "partial_json": p} for p in pieces]))
    return drafts


def _fit(drafts: list[_Draft], max_tokens: int) -> tuple[tuple[Block, ...], bool]:
    """The blocks that fit in ``max_tokens`` output tokens, and whether any was cut."""
    budget = max_tokens
    blocks: list[Block] = []
    for start, deltas in drafts:
        # A tool_use block with half its JSON would not parse: all or nothing.
        if budget < 1 or (start["type"] == "tool_use" and budget < 1 + len(deltas)):
            return tuple(blocks), True
        sent = deltas[: budget - 1]
        budget -= 1 + len(sent)
        blocks.append(Block(start, tuple(sent), _final(start, sent)))
        if len(sent) < len(deltas):
            return tuple(blocks), True
    return tuple(blocks), False


def _final(start: JSON, deltas: Sequence[JSON]) -> JSON:
    """The block as the non-streaming message shows it, after ``deltas``."""
    kind = start["type"]
    if kind == "text":
        return {"type": "text", "text": "".join(str(d["text"]) for d in deltas)}
    if kind == "thinking":
        signature = [str(d["signature"]) for d in deltas if d["type"] == "signature_delta"]
        return {
            "type": "thinking",
            "thinking": "".join(
                str(d["thinking"]) for d in deltas if d["type"] == "thinking_delta"
            ),
            "signature": signature[-1] if signature else "",
        }
    arguments = "".join(str(d["partial_json"]) for d in deltas)
    return {**start, "input": msgspec.json.decode(arguments) if arguments else {}}


def usage_json(reply: Reply, output_tokens: int) -> JSON:
    """The full ``usage`` object (message_start and the non-streaming message)."""
    usage = reply.input
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.ephemeral_5m_input_tokens,
            "ephemeral_1h_input_tokens": usage.ephemeral_1h_input_tokens,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message(
    reply: Reply, content: list[JSON], stop_reason: str | None, output_tokens: int
) -> JSON:
    return {
        "id": reply.message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_json(reply, output_tokens),
    }


def message_body(reply: Reply) -> bytes:
    """The non-streaming response body (docs/reference/wire.md 1.2)."""
    content = [block.final for block in reply.blocks]
    return _encode(_message(reply, content, reply.stop_reason, reply.output_tokens))


def sse_event(name: str, payload: object) -> bytes:
    """One SSE event: ``event: NAME`` and one ``data:`` line of compact JSON."""
    return b"event: %s\ndata: %s\n\n" % (name.encode(), _encode(payload))


def stream_events(reply: Reply) -> list[bytes]:
    """The whole SSE stream of ``reply``, one bytes object per event (docs/reference/wire.md 2.2)."""
    events = [
        sse_event(
            "message_start", {"type": "message_start", "message": _message(reply, [], None, 1)}
        )
    ]
    for index, block in enumerate(reply.blocks):
        events.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block.start},
            )
        )
        if index == 0:
            events.append(PING_EVENT)
        # The header of a delta event is the same for every delta of a block: build it once.
        head = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":'
            % index
        )
        events.extend(head + _encode(delta) + b"}\n\n" for delta in block.deltas)
        events.append(
            sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
        )
    if not reply.blocks:
        events.append(PING_EVENT)
    usage = reply.input
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
        "usage": {
            "input_tokens": usage.input_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "output_tokens": reply.output_tokens,
        },
    }
    events.append(sse_event("message_delta", delta))
    events.append(MESSAGE_STOP_EVENT)
    return events


def error_event(error_type: str, message: str) -> bytes:
    """A mid-stream ``event: error`` (docs/reference/wire.md 2.4, spaced like the API's)."""
    payload = {"type": "error", "error": {"type": error_type, "message": message}}
    # The stdlib's default separators give the API's ", " / ": " spacing.
    return b"event: error\ndata: %s\n\n" % json.dumps(payload).encode()
