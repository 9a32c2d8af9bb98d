"""Prompt caching: breakpoints (docs/reference/reference-client.md 7.2) and cache-break detection (7.5) (pure).

``add_breakpoints`` marks a body's system prompt and last message; ``snapshot`` hashes a
request's prompt parts before it is sent and ``check_break`` compares the cache reads of two
consecutive requests of one tracking key, naming the likely cause of a drop.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from protocol.models.catalog import BUILTIN
from protocol.wire import JsonObject

# The API's limit of cache_control blocks per request (more gives a 400).
MAX_BREAKPOINTS: Final = 4
# reference 7.2: at most two breakpoints on the system prompt.
MAX_SYSTEM_BREAKPOINTS: Final = 2
# reference 7.2: no marker on these assistant blocks.
_UNMARKABLE: Final = frozenset({"thinking", "redacted_thinking", "connector_text"})
# reference 7.5: a break is a drop of more than 5% and at least 2 000 tokens.
BREAK_RATIO: Final = 0.95
MIN_CACHE_MISS_TOKENS: Final = 2_000
# reference 7.5: gaps that explain a drop by TTL expiry.
_HOUR: Final = 3600.0
_FIVE_MINUTES: Final = 300.0
# reference 7.5: at most 10 tracked keys per session, oldest evicted.
MAX_TRACKED_SOURCES: Final = 10
_encode: Final = msgspec.json.Encoder(order="sorted")


def cache_control(ttl_1h: bool) -> JsonObject:
    return {"type": "ephemeral", "ttl": "1h"} if ttl_1h else {"type": "ephemeral"}


def count_breakpoints(body: JsonObject) -> int:
    """How many blocks carry ``cache_control`` (system, messages and tools)."""
    count = 0
    system = body.get("system")
    for group in (system if isinstance(system, list) else [], body.get("tools") or []):
        count += sum(1 for b in group if isinstance(b, dict) and "cache_control" in b)
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            count += sum(1 for b in content if isinstance(b, dict) and "cache_control" in b)
    return count


def add_breakpoints(body: JsonObject, *, ttl_1h: bool) -> None:
    """Mark ``body`` in place (it must be the request's own copy): one marker on the last
    message's last markable block, then one on the system prompt's last block, each only
    while the total stays within ``MAX_BREAKPOINTS``. Client marks are kept as they are."""
    budget = MAX_BREAKPOINTS - count_breakpoints(body)
    messages = body.get("messages")
    if budget > 0 and isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        last = messages[-1]
        content = last.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if isinstance(content, list):
            content = [dict(b) if isinstance(b, dict) else b for b in content]
            for block in reversed(content):
                if isinstance(block, dict) and block.get("type") not in _UNMARKABLE:
                    if "cache_control" not in block:
                        block["cache_control"] = cache_control(ttl_1h)
                        budget -= 1
                    break
            messages[-1] = {**last, "content": content}
    system = body.get("system")
    if isinstance(system, str) and system:
        system = [{"type": "text", "text": system}]
    if budget > 0 and isinstance(system, list) and system:
        marked = sum(1 for b in system if isinstance(b, dict) and "cache_control" in b)
        blocks = [dict(b) if isinstance(b, dict) else b for b in system]
        last_block = blocks[-1]
        if marked < MAX_SYSTEM_BREAKPOINTS and isinstance(last_block, dict) and "cache_control" not in last_block:
            last_block["cache_control"] = cache_control(ttl_1h)
        body["system"] = blocks


def strip_cache_control(value: Any) -> Any:
    """``value`` with every ``cache_control`` key removed, at any depth (a new object)."""
    if isinstance(value, dict):
        return {k: strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip_cache_control(v) for v in value]
    return value


def _digest(value: object) -> str:
    return hashlib.sha256(_encode.encode(value)).hexdigest()[:16]


def _system_text(system: object) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    return ""


class PromptSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """reference 7.5 phase 1: what a request's cacheable prefix depends on."""

    model: str
    system_hash: str
    system_chars: int
    cache_control_hash: str
    tools_hash: str
    tool_hashes: dict[str, str]
    betas: tuple[str, ...]
    fast_mode: bool
    effort: str | None
    extra_body_hash: str


class CacheBaseline(msgspec.Struct, frozen=True, kw_only=True):
    """A tracking key's last request: its snapshot and the cache reads its answer had
    (None until the answer came, or after a reset)."""

    snapshot: PromptSnapshot
    cache_read: int | None = None
    finished_at: float | None = None


class CacheBreak(msgspec.Struct, frozen=True, kw_only=True):
    """The ``done`` frame's ``cache_break`` (docs/protocol.md): diagnostics only."""

    reason: str
    cache_read_before: int
    cache_read_after: int


def tracking_key(source: str, agent_id: str | None = None) -> str | None:
    """reference 7.5: compact shares the main thread's cache; untracked sources give None."""
    if source == "compact":
        return "repl_main_thread"
    if source.startswith(("repl_main_thread", "sdk", "agent:custom", "agent:default", "agent:builtin")):
        return agent_id or source
    return None


def snapshot(body: JsonObject, betas: list[str], *, fast_mode: bool, extra_body: JsonObject) -> PromptSnapshot:
    """Hash the prompt parts of a built body (reference 7.5 phase 1)."""
    system = body.get("system")
    system_marks = [b.get("cache_control") for b in system if isinstance(b, dict)] if isinstance(system, list) else []
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and not t.get("defer_loading")]
    stripped_tools = strip_cache_control(tools)
    output_config = body.get("output_config")
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    return PromptSnapshot(
        model=str(body.get("model")),
        system_hash=_digest(strip_cache_control(system)),
        system_chars=len(_system_text(system)),
        cache_control_hash=_digest(system_marks),
        tools_hash=_digest(stripped_tools),
        tool_hashes={str(t.get("name")): _digest(t) for t in stripped_tools},
        betas=tuple(sorted(betas)),
        fast_mode=fast_mode,
        effort=effort if isinstance(effort, str) else None,
        extra_body_hash=_digest(extra_body),
    )


def changes(before: PromptSnapshot, after: PromptSnapshot) -> list[str]:
    """The client-side causes of reference 7.5, in its order and wording."""
    causes: list[str] = []
    if before.model != after.model:
        causes.append(f"model changed ({before.model} → {after.model})")
    system_changed = before.system_hash != after.system_hash
    if system_changed:
        delta = after.system_chars - before.system_chars
        causes.append(f"system prompt changed ({delta:+d} chars)")
    if before.tools_hash != after.tools_hash:
        added = len(after.tool_hashes.keys() - before.tool_hashes.keys())
        removed = len(before.tool_hashes.keys() - after.tool_hashes.keys())
        if added or removed:
            causes.append(f"tools changed (+{added}/-{removed} tools)")
        else:
            causes.append("tools changed (tool prompt/schema changed, same tool set)")
    if before.fast_mode != after.fast_mode:
        causes.append("fast mode toggled")
    if before.cache_control_hash != after.cache_control_hash and not system_changed:
        causes.append("cache_control changed (scope or TTL)")
    if before.betas != after.betas:
        added_betas = sorted(set(after.betas) - set(before.betas))
        removed_betas = sorted(set(before.betas) - set(after.betas))
        parts = [f"+{b}" for b in added_betas] + [f"-{b}" for b in removed_betas]
        causes.append(f"betas changed ({' '.join(parts)})")
    if before.effort != after.effort:
        causes.append(f"effort changed ({before.effort} → {after.effort})")
    if before.extra_body_hash != after.extra_body_hash:
        causes.append("extra body params changed")
    return causes


def check_break(
    previous: CacheBaseline | None,
    current: PromptSnapshot,
    *,
    cache_read: int,
    now: float,
) -> CacheBreak | None:
    """reference 7.5 phase 2: a break when reads fell by more than 5% and at least 2 000
    tokens since the tracking key's previous answer. Skipped for Haiku models (the catalog's
    family) and on the first call. ``now``: the time this answer finished (seconds, any fixed origin)."""
    if previous is None or previous.cache_read is None or BUILTIN.is_small_fast(BUILTIN.model(current.model)):
        return None
    before = previous.cache_read
    if not (cache_read < BREAK_RATIO * before and before - cache_read >= MIN_CACHE_MISS_TOKENS):
        return None
    causes = changes(previous.snapshot, current)
    if causes:
        reason = ", ".join(causes)
    elif previous.finished_at is None:
        reason = "unknown cause"
    elif now - previous.finished_at > _HOUR:
        reason = "possible 1h TTL expiry (prompt unchanged)"
    elif now - previous.finished_at > _FIVE_MINUTES:
        reason = "possible 5min TTL expiry (prompt unchanged)"
    else:
        reason = "likely server-side (prompt unchanged, <5min gap)"
    return CacheBreak(reason=reason, cache_read_before=before, cache_read_after=cache_read)
