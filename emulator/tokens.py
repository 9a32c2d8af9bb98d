"""Deterministic token counts and an emulated prompt cache (pure apart from the cache set).

Formulas (so tests and benchmarks can assert costs exactly):

- ``tokens(x) = max(1, len(msgspec.json.encode(x)) // 4)`` for any JSON value ``x``.
- The *prompt* is a flat JSON list of items in API order: each tool definition, then the
  system prompt (the string, or each of its blocks), then for each message its role string
  followed by its content (the string, or each block), then the literal ``"assistant"`` for
  the turn being written. ``cache_control`` keys are removed from every item first (a cache
  marker is not prompt text). ``total = tokens(prompt)``; ``count_tokens`` returns it.
- A *breakpoint* is an item that carried ``cache_control`` (or the last content item when
  the request has a top-level ``cache_control``); ``tokens(prefix(i))`` is ``tokens`` of
  the items up to and including item ``i``.
- Reads: the longest prefix already in the cache, searched from the last breakpoint back
  over at most 20 items (the API's lookback window) and at every earlier breakpoint:
  ``cache_read_input_tokens = tokens(prefix(hit))``. The cache is keyed by ``(model,
  sha256 of the prefix items)``.
- Writes: everything from the hit (or the start) up to the last breakpoint,
  ``cache_creation_input_tokens = tokens(prefix(last)) - cache_read_input_tokens``, split
  by TTL: each stretch between breakpoints counts toward the TTL of the breakpoint that
  ends it (``"1h"`` -> ``ephemeral_1h_input_tokens``, anything else -> ``5m``). After a
  request, every breakpoint prefix is in the cache.
- ``input_tokens = total - cache_read - cache_creation``; the trailing ``"assistant"`` item
  keeps it >= 1, so ``input + cache_creation + cache_read == total`` always.
- With one breakpoint this is the plain rule "cached -> read it all, else write it all".
- A breakpoint whose prefix is shorter than the model's minimum cacheable length
  (``emulator/models.py``: 512 to 4096 tokens) is ignored, as the API ignores it: with no
  breakpoint left, ``cache_creation_input_tokens`` and ``cache_read_input_tokens`` are 0.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, final

import msgspec

# The API looks back this many blocks from a breakpoint for an earlier cache entry.
LOOKBACK_BLOCKS: Final = 20

_encode: Final = msgspec.json.encode
# The role of the turn the model writes; always last, so uncached input is never zero.
_ASSISTANT_ITEM: Final = _encode("assistant")


def tokens(value: object) -> int:
    """The emulator's token estimate of one JSON value: ``max(1, len(json) // 4)``."""
    return max(1, len(_encode(value)) // 4)


@dataclass(frozen=True, slots=True)
class InputUsage:
    """The input side of a message's usage (docs/reference/wire.md 2.3 field names)."""

    input_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0

    @property
    def total(self) -> int:
        """Input + cache writes + cache reads: what count_tokens reports."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


@dataclass(frozen=True, slots=True)
class _Prompt:
    """The prompt flattened to encoded items, with its breakpoints as (index, ttl)."""

    items: list[bytes]
    breakpoints: list[tuple[int, str]]
    # ends[i]: the summed length of items 0..i, so a prefix's size is O(1).
    ends: list[int]

    def tokens_through(self, index: int) -> int:
        """``tokens`` of the JSON list of items ``0..index`` (-1: nothing, 0 tokens)."""
        if index < 0:
            return 0
        # msgspec encodes a list as "[a,b,c]": brackets, items, and one comma between each.
        return max(1, (2 + self.ends[index] + index) // 4)

    @property
    def total(self) -> int:
        return self.tokens_through(len(self.items) - 1)


def _strip_marker(item: object) -> tuple[object, str | None]:
    """``item`` without its ``cache_control``, and that breakpoint's TTL if it had one."""
    if isinstance(item, Mapping) and "cache_control" in item:
        control = item["cache_control"]
        ttl = control.get("ttl") if isinstance(control, Mapping) else None
        stripped = {key: value for key, value in item.items() if key != "cache_control"}
        return stripped, ttl if isinstance(ttl, str) else "5m"
    return item, None


def _flatten(body: Mapping[str, object]) -> _Prompt:
    """The prompt items of ``body`` in API order (see the module docstring)."""
    items: list[bytes] = []
    breakpoints: list[tuple[int, str]] = []

    def add(values: Iterable[object]) -> None:
        for value in values:
            stripped, ttl = _strip_marker(value)
            if ttl is not None:
                breakpoints.append((len(items), ttl))
            items.append(_encode(stripped))

    tools = body.get("tools")
    add(tools if isinstance(tools, list) else ())
    system = body.get("system")
    add(system if isinstance(system, list) else () if system is None else (system,))
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, Mapping):
            items.append(_encode(message.get("role")))
            content = message.get("content")
            add(content if isinstance(content, list) else (content,))
    top = body.get("cache_control")
    if isinstance(top, Mapping) and items:
        # Top-level cache_control puts the breakpoint on the last block of the prompt.
        ttl = top.get("ttl")
        breakpoints.append((len(items) - 1, ttl if isinstance(ttl, str) else "5m"))
    items.append(_ASSISTANT_ITEM)
    return _Prompt(items, sorted(set(breakpoints)), list(itertools.accumulate(map(len, items))))


def total_input_tokens(body: Mapping[str, object]) -> int:
    """The request's whole input in tokens (what ``/v1/messages/count_tokens`` answers)."""
    return _flatten(body).total


@final
class PromptCache:
    """The emulated server-side prompt cache: which (model, prefix digest) were written.

    Entries never expire; ``clear()`` forgets them all.
    """

    def __init__(self) -> None:
        self._entries: set[tuple[str, bytes]] = set()

    def clear(self) -> None:
        """Forget every cached prefix."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def usage(self, body: Mapping[str, object], model: str, *, minimum: int = 0) -> InputUsage:
        """Compute the input usage of ``body`` and write its breakpoint prefixes.

        The cache is updated: afterwards every breakpoint prefix of ``body`` of at least
        ``minimum`` tokens (the model's minimum cacheable length) is cached; shorter ones
        are ignored, as the API ignores them (no write, no read, no error).
        """
        prompt = _flatten(body)
        total = prompt.total
        breakpoints = [
            (index, ttl) for index, ttl in prompt.breakpoints if prompt.tokens_through(index) >= minimum
        ]
        if not breakpoints:
            return InputUsage(input_tokens=total)
        last = breakpoints[-1][0]
        wanted = {index for index, _ in breakpoints}
        wanted.update(range(max(0, last - LOOKBACK_BLOCKS + 1), last + 1))
        digests = _prefix_digests(prompt.items, wanted)
        hit = max(
            (index for index in wanted if (model, digests[index]) in self._entries), default=-1
        )
        read = prompt.tokens_through(hit)
        written = {"5m": 0, "1h": 0}
        previous = hit
        for index, ttl in breakpoints:
            if index > previous:
                stretch = prompt.tokens_through(index) - prompt.tokens_through(previous)
                written["1h" if ttl == "1h" else "5m"] += stretch
                previous = index
        self._entries.update((model, digests[index]) for index, _ in breakpoints)
        creation = written["5m"] + written["1h"]
        return InputUsage(
            input_tokens=total - read - creation,
            cache_creation_input_tokens=creation,
            cache_read_input_tokens=read,
            ephemeral_5m_input_tokens=written["5m"],
            ephemeral_1h_input_tokens=written["1h"],
        )


def _prefix_digests(items: Sequence[bytes], wanted: set[int]) -> dict[int, bytes]:
    """sha256 of the items ``0..i`` (comma-separated) for every ``i`` in ``wanted``."""
    digests: dict[int, bytes] = {}
    hasher = hashlib.sha256()
    for index in range(max(wanted) + 1):
        hasher.update(items[index])
        hasher.update(b",")
        if index in wanted:
            digests[index] = hasher.copy().digest()
    return digests
