"""Token usage: the wire shape, the normalised shape, and the merge rules.

Streaming usage is *cumulative* (docs/reference/reference-client.md 2.6, docs/reference/wire.md 2.3): ``message_start``
carries the input side, each ``message_delta`` repeats the running totals. So one upstream
message's usage is *merged* (later values overwrite earlier ones), never summed; a query's or
a session's usage is the *sum* of its messages' merged usages.

Merge rules (docs/reference/reference-client.md 2.6, ``updateUsage``):

- ``input_tokens``, ``cache_creation_input_tokens``, ``cache_read_input_tokens`` are
  overwritten only by a value that is present and > 0: ``message_delta`` often sends explicit
  zeros, which must not erase what ``message_start`` said. The 1-hour part of the nested
  ``cache_creation`` split follows the same rule as its total (the reference takes any present
  value, so an echoed ``{"ephemeral_1h_input_tokens": 0}`` would keep the total but drop the
  split and bill 1-hour writes at the 5-minute price; cumulative counts never go down).
- ``output_tokens`` is overwritten by any present value (a negative one counts as 0).
- ``server_tool_use`` counters, ``speed`` and ``iterations`` take the new value when present.
- ``service_tier`` is kept from the first value seen (``message_start``).

Validity: a count must be a non-negative JSON integer no larger than ``MAX_TOKEN_COUNT``.
The wire shapes accept any JSON value in a count field, so that a bad count never makes the
whole event malformed; ``merge_usage`` then repairs it and sets ``Usage.malformed``:

- an integer above the bound is clamped to ``MAX_TOKEN_COUNT``;
- a negative integer is ignored for the input counts and counts as 0 elsewhere (as before);
- a finite float is truncated to an integer, then bounded the same way;
- anything else (a string, a boolean, an object, NaN) counts as absent.

A malformed usage is priced as repaired and its record is marked unknown-cost
(``protocol.ledger.record_parts``: ``unknown_model``, so the session's
``unknown_model_cost``), docs/protocol.md (the cost summary); never silently free, never a crash.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

# The largest token (or request) count one message may report. The largest context window
# is 10**6 tokens and output is far smaller, so 10**9 is 1000 times any honest count, while
# 10**9 tokens at the highest price per token stays below 10**17 picodollars: every sum the
# ledger keeps fits an SQLite integer (2**63 - 1, about 9.2 * 10**18) for millions of such
# messages.
MAX_TOKEN_COUNT: Final = 10**9


class WireCacheCreation(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``usage.cache_creation`` as the API sends it: the TTL split of the cache writes.

    Counts are any JSON value here (see the module docstring, "Validity")."""

    ephemeral_5m_input_tokens: object = None
    ephemeral_1h_input_tokens: object = None


class WireServerToolUse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``usage.server_tool_use`` as the API sends it (counts: any JSON value)."""

    web_search_requests: object = None
    web_fetch_requests: object = None


class WireUsageIteration(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of ``usage.iterations`` as the API sends it (counts: any JSON value)."""

    type: str | None = None
    model: str | None = None
    input_tokens: object = None
    output_tokens: object = None
    cache_creation_input_tokens: object = None
    cache_read_input_tokens: object = None


class UsageIteration(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of ``usage.iterations`` (advisor sub-messages carry their own model), its
    counts valid (``merge_usage`` repaired them)."""

    type: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class WireUsage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A ``usage`` object exactly as decoded from the wire: every field may be absent or null.

    Unknown fields are ignored on decode; the relayed event bytes keep them for the client.
    Counts are any JSON value (see the module docstring, "Validity").
    """

    input_tokens: object = None
    output_tokens: object = None
    cache_creation_input_tokens: object = None
    cache_read_input_tokens: object = None
    cache_creation: WireCacheCreation | None = None
    server_tool_use: WireServerToolUse | None = None
    service_tier: str | None = None
    speed: str | None = None
    iterations: list[WireUsageIteration] | None = None


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Normalised usage of one message, a query, or a session: plain non-negative counts.

    ``cache_creation_1h_input_tokens`` is the part of ``cache_creation_input_tokens`` written
    with the 1-hour TTL (billed at 2x input instead of 1.25x); the rest is 5-minute writes.
    ``speed`` is ``"fast"`` when the upstream billed fast mode; ``iterations`` holds advisor
    sub-message usage, priced at its own model (only meaningful on a single message).
    ``malformed``: some count the upstream sent was not a valid count and was repaired (see
    the module docstring, "Validity"); the cost of such a usage is not known.
    ``estimated``: ``output_tokens`` is the gateway's estimate, not the upstream's count (a
    stream cut short before its final usage, ``protocol.estimate``); of a sum: some part is.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    service_tier: str | None = None
    speed: str | None = None
    iterations: tuple[UsageIteration, ...] = ()
    malformed: bool = False
    estimated: bool = False

    @property
    def total_input_tokens(self) -> int:
        """Input as the API bills it: uncached + cache writes + cache reads."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    @property
    def is_empty(self) -> bool:
        """True when nothing at all was counted."""
        return (
            self.total_input_tokens == 0
            and self.output_tokens == 0
            and self.web_search_requests == 0
            and self.web_fetch_requests == 0
            and not self.iterations
        )


EMPTY_USAGE = Usage()


class _Counts:
    """Reads wire counts, remembering whether any of them was not a valid count."""

    __slots__ = ("malformed",)

    def __init__(self) -> None:
        self.malformed = False

    def read(self, value: object) -> int | None:
        """A valid count; one above the bound clamped to it; a negative one as it is (the merge
        rules above ignore it or count it as 0); None for absent or not a number."""
        if value is None:
            return None
        if isinstance(value, float) and math.isfinite(value):
            self.malformed = True
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value <= MAX_TOKEN_COUNT:
                return value
            self.malformed = True
            return min(value, MAX_TOKEN_COUNT)
        self.malformed = True
        return None

    def iteration(self, wire: WireUsageIteration) -> UsageIteration:
        def count(value: object) -> int | None:
            n = self.read(value)
            return None if n is None else max(n, 0)

        return UsageIteration(
            type=wire.type,
            model=wire.model,
            input_tokens=count(wire.input_tokens),
            output_tokens=count(wire.output_tokens),
            cache_creation_input_tokens=count(wire.cache_creation_input_tokens),
            cache_read_input_tokens=count(wire.cache_read_input_tokens),
        )


def _positive_or(new: int | None, old: int) -> int:
    return new if new is not None and new > 0 else old


def merge_usage(acc: Usage, part: WireUsage) -> Usage:
    """Fold one cumulative wire ``usage`` into the running usage of the same message.

    Never raises: invalid counts are repaired and flag the result ``malformed``."""
    counts = _Counts()
    cache_creation = _positive_or(counts.read(part.cache_creation_input_tokens), acc.cache_creation_input_tokens)
    one_hour = acc.cache_creation_1h_input_tokens
    if part.cache_creation is not None:
        counts.read(part.cache_creation.ephemeral_5m_input_tokens)
        one_hour = _positive_or(counts.read(part.cache_creation.ephemeral_1h_input_tokens), one_hour)
    web_search = acc.web_search_requests
    web_fetch = acc.web_fetch_requests
    if part.server_tool_use is not None:
        search = counts.read(part.server_tool_use.web_search_requests)
        if search is not None:
            web_search = search
        fetch = counts.read(part.server_tool_use.web_fetch_requests)
        if fetch is not None:
            web_fetch = fetch
    output = counts.read(part.output_tokens)
    input_tokens = _positive_or(counts.read(part.input_tokens), acc.input_tokens)
    cache_read = _positive_or(counts.read(part.cache_read_input_tokens), acc.cache_read_input_tokens)
    iterations = (
        tuple(counts.iteration(i) for i in part.iterations) if part.iterations is not None else acc.iterations
    )
    return Usage(
        input_tokens=input_tokens,
        output_tokens=max(output, 0) if output is not None else acc.output_tokens,
        cache_creation_input_tokens=cache_creation,
        cache_read_input_tokens=cache_read,
        # Never more 1h writes than writes: a malformed split must not bill phantom tokens.
        cache_creation_1h_input_tokens=min(max(one_hour, 0), cache_creation),
        web_search_requests=max(web_search, 0),
        web_fetch_requests=max(web_fetch, 0),
        service_tier=acc.service_tier if acc.service_tier is not None else part.service_tier,
        speed=part.speed if part.speed is not None else acc.speed,
        iterations=iterations,
        malformed=acc.malformed or counts.malformed,
        estimated=acc.estimated,
    )


def reports_output(part: WireUsage) -> bool:
    """True when ``part`` carries an output count ``merge_usage`` takes (valid or repaired)."""
    return _Counts().read(part.output_tokens) is not None


def add_usage(total: Usage, msg: Usage) -> Usage:
    """Sum two usages (a query's attempts, a session's messages). Iterations are not summed."""
    return Usage(
        input_tokens=total.input_tokens + msg.input_tokens,
        output_tokens=total.output_tokens + msg.output_tokens,
        cache_creation_input_tokens=total.cache_creation_input_tokens + msg.cache_creation_input_tokens,
        cache_read_input_tokens=total.cache_read_input_tokens + msg.cache_read_input_tokens,
        cache_creation_1h_input_tokens=(
            total.cache_creation_1h_input_tokens + msg.cache_creation_1h_input_tokens
        ),
        web_search_requests=total.web_search_requests + msg.web_search_requests,
        web_fetch_requests=total.web_fetch_requests + msg.web_fetch_requests,
        service_tier=msg.service_tier if msg.service_tier is not None else total.service_tier,
        speed=msg.speed if msg.speed is not None else total.speed,
        malformed=total.malformed or msg.malformed,
        estimated=total.estimated or msg.estimated,
    )
