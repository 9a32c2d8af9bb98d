"""Messages repaired before sending (docs/reference/reference-client.md 8) (pure).

``repair_tool_pairing``: every ``tool_use`` gets a ``tool_result`` in the next user message
(a synthetic error result when it has none) and every ``tool_result`` without its
``tool_use`` is dropped, as the reference's ``ensureToolResultPairing`` does.
``limit_media``: at most ``API_MAX_MEDIA_PER_REQUEST`` images and documents, the oldest
dropped (those nested in tool results count too).
Both return new message lists and leave their input as it was.
"""

from __future__ import annotations

from typing import Any, Final

# reference 8 (constants/apiLimits.ts): the API's media limit per request.
API_MAX_MEDIA_PER_REQUEST: Final = 100
# The content of a synthetic tool_result, and of a user turn emptied by the repairs.
SYNTHETIC_TOOL_RESULT: Final = "[Tool result missing due to internal error]"
_MEDIA: Final = frozenset({"image", "document"})


def _blocks(message: Any) -> list[Any] | None:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else None


def _tool_use_ids(message: Any) -> list[str]:
    if not isinstance(message, dict) or message.get("role") != "assistant":
        return []
    return [
        str(b["id"]) for b in _blocks(message) or [] if isinstance(b, dict) and b.get("type") == "tool_use" and "id" in b
    ]


def _is_result(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "tool_result"


def repair_tool_pairing(messages: list[Any]) -> tuple[list[Any], int, int]:
    """(repaired messages, synthetic results added, orphan results dropped)."""
    out: list[Any] = []
    added = dropped = 0
    expected: list[str] = []
    for message in messages:
        is_user = isinstance(message, dict) and message.get("role") == "user"
        if expected and not is_user:
            out.append({"role": "user", "content": [_synthetic(i) for i in expected]})
            added += len(expected)
            expected = []
        if is_user:
            content = message.get("content")
            blocks = content if isinstance(content, list) else ([{"type": "text", "text": content}] if content else [])
            results: list[Any] = []
            others: list[Any] = []
            seen: set[str] = set()
            for block in blocks:
                if _is_result(block):
                    ident = str(block.get("tool_use_id"))
                    if ident in expected and ident not in seen:
                        seen.add(ident)
                        results.append(block)
                    else:
                        dropped += 1
                else:
                    others.append(block)
            missing = [_synthetic(i) for i in expected if i not in seen]
            added += len(missing)
            if missing or len(results) + len(others) != len(blocks):
                new_blocks = results + missing + others
                message = {**message, "content": new_blocks or [{"type": "text", "text": SYNTHETIC_TOOL_RESULT}]}
            expected = []
        out.append(message)
        expected = list(dict.fromkeys(_tool_use_ids(message)))
    if expected:
        out.append({"role": "user", "content": [_synthetic(i) for i in expected]})
        added += len(expected)
    return out, added, dropped


def _synthetic(tool_use_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": SYNTHETIC_TOOL_RESULT, "is_error": True}


def _count_media(blocks: list[Any]) -> int:
    count = 0
    for block in blocks:
        if isinstance(block, dict):
            if block.get("type") in _MEDIA:
                count += 1
            elif _is_result(block) and isinstance(block.get("content"), list):
                count += _count_media(block["content"])
    return count


def limit_media(messages: list[Any], limit: int = API_MAX_MEDIA_PER_REQUEST) -> tuple[list[Any], int]:
    """(messages with at most ``limit`` media blocks, the number dropped): oldest first."""
    total = sum(_count_media(_blocks(m) or []) for m in messages)
    excess = total - limit
    if excess <= 0:
        return messages, 0
    to_drop = excess

    def prune(blocks: list[Any]) -> list[Any]:
        nonlocal to_drop
        kept: list[Any] = []
        for block in blocks:
            if to_drop > 0 and isinstance(block, dict) and block.get("type") in _MEDIA:
                to_drop -= 1
                continue
            if to_drop > 0 and _is_result(block) and isinstance(block.get("content"), list):
                block = {**block, "content": prune(block["content"])}
            kept.append(block)
        return kept

    out: list[Any] = []
    for message in messages:
        blocks = _blocks(message)
        if to_drop > 0 and blocks is not None and _count_media(blocks):
            pruned = prune(blocks)
            message = {**message, "content": pruned or [{"type": "text", "text": SYNTHETIC_TOOL_RESULT}]}
        out.append(message)
    return out, excess
