"""Pricing: canonical model names, exact costs in picodollars, and the display formats.

Pure: no clock (the caller passes the ISO date a price is looked up for), no environment.
The table itself is data in ``protocol/models/catalog.toml``.

Billing rules (docs/reference/wire.md 10, docs/reference/reference-client.md 3.1), applied by ``cost_of``:

- Uncached input, output, cache reads: each at its own price.
- Cache writes: ``cache_creation_1h_input_tokens`` at the 1-hour price (2x input), the rest of
  ``cache_creation_input_tokens`` at the 5-minute price (1.25x), as the API bills and
  Claude Code 2.1.197 prices them (docs/reference/reference-client-now.md 2; 2.1.88 billed every write at
  1.25x).
- Web search: per request ($0.01). Web fetch is free (counted, never priced).
- Fast mode: ``usage.speed == "fast"`` uses the model's fast prices when it has them, else the
  standard prices (the upstream said fast, but no fast price is known).
- Long context: when the model has a long-context tier and the request's total input
  (uncached + cache writes + cache reads) exceeds the tier's threshold, the WHOLE request,
  every part including output, is billed at the long-context prices. For Sonnet 4/4.5 and
  Opus 4.6 this needs the 1M-context beta (``long_context=True``); Haiku 5.5's 100K tier
  applies to every request. The reference client has no such tier; the API does.
- Unknown model: priced at ``DEFAULT_PRICE`` (the catalog's ``unknown_price_model``, Sonnet
  4.6, $3 / $15) and flagged ``unknown_model``: never dropped, never free. A model learnt from
  the upstream's ``/v1/models`` has no price, so it is flagged too.
- Advisor: each ``usage.iterations`` entry with ``type == "advisor_message"`` and a model is
  priced at its own model's prices (all its cache writes at the 5-minute price: iterations
  carry no TTL split; no fast mode, no 1M beta) and added as ``advisor_pico``; an unknown
  advisor model sets ``unknown_model``.

``Cost.total_pico`` is exactly the sum of the parts: everything is integer picodollars.
"""

from __future__ import annotations

import math
import re
from typing import Final

import msgspec

from protocol.models.catalog import BUILTIN
from protocol.prices import PICO_PER_USD, PRICE_TABLE, PriceEntry, Rates
from protocol.usage import Usage, UsageIteration

__all__ = [
    "DEFAULT_PRICE",
    "PICO_PER_USD",
    "PRICE_TABLE",
    "Cost",
    "PriceEntry",
    "Rates",
    "canonical_model",
    "cost_by_model",
    "cost_of",
    "format_cost",
    "format_number",
    "known_models",
    "price_for",
    "usd",
]

_BY_MODEL: Final[dict[str, tuple[PriceEntry, ...]]] = {key: BUILTIN.prices(key) for key in BUILTIN.priced_keys()}

# The unknown-model price. docs/reference/reference-client-now.md 2 uses the bootstrap's
# additional_model_costs, else the default model's tier, else 5/25; a gateway has no main-loop
# model, so the catalog names one (``unknown_price_model``: Sonnet 4.6, $3 / $15, cache
# 3.75 / 6 / 0.30), standard rates only.
DEFAULT_PRICE: Final[PriceEntry] = _BY_MODEL[BUILTIN.unknown_price_model][0]

_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_ADVISOR_TYPE: Final = "advisor_message"


class Cost(msgspec.Struct, frozen=True, kw_only=True):
    """The exact cost of one usage, picodollars; ``total_pico`` is the sum of the parts.

    ``canonical`` is the canonical model name, or for an unknown model the id as given.
    """

    total_pico: int
    input_pico: int
    output_pico: int
    cache_write_5m_pico: int
    cache_write_1h_pico: int
    cache_read_pico: int
    web_search_pico: int
    advisor_pico: int
    unknown_model: bool
    canonical: str

    @property
    def total_usd(self) -> float:
        """The total in dollars, for display and frames (never for arithmetic)."""
        return usd(self.total_pico)


def usd(pico: int) -> float:
    """Picodollars to dollars, for display and frames only: sums stay in integers."""
    return pico / PICO_PER_USD


def known_models() -> frozenset[str]:
    """Every canonical model name the price table knows."""
    return frozenset(_BY_MODEL)


# --- canonical names -------------------------------------------------------------------------


def canonical_model(model_id: str) -> str | None:
    """The catalog key of any provider's id for a priced model, or None when it is unknown.

    ``canonical_model("us.anthropic.claude-opus-4-6-v1") == "claude-opus-4-6"``, as do the
    Vertex, Foundry, ARN and ``[1m]`` forms (``Catalog.model``). Idempotent: a key maps to
    itself.
    """
    model = BUILTIN.model(model_id)
    return model.key if model is not None and model.key in _BY_MODEL else None


# --- price lookup ----------------------------------------------------------------------------


def price_for(canonical: str, on: str) -> PriceEntry | None:
    """The latest entry for ``canonical`` effective on the ISO date ``on`` (``YYYY-MM-DD``).

    None when the model is unknown or ``on`` predates its first entry. A full ISO timestamp is
    accepted (only its date prefix matters). Raises ``ValueError`` when ``on`` is not an ISO
    date: a typo must not silently pick the wrong price.
    """
    day = _iso_day(on)
    found: PriceEntry | None = None
    for entry in _BY_MODEL.get(canonical, ()):
        if entry.effective <= day:
            found = entry
    return found


def _iso_day(on: str) -> str:
    if _ISO_DATE.match(on) is None:
        raise ValueError(f"not an ISO date: {on!r}")
    return on[:10]


def _entry_for(canonical: str, on: str) -> PriceEntry:
    # A known model asked about before its first entry (a snapshot used before its price was
    # published, a skewed clock) gets its earliest price rather than the unknown default.
    return price_for(canonical, on) or _BY_MODEL[canonical][0]


def _rates(entry: PriceEntry, *, fast: bool, long: bool) -> Rates:
    if fast and long and entry.fast_long_context is not None:
        return entry.fast_long_context
    if fast and entry.fast is not None:
        return entry.fast
    if long and entry.long_context is not None:
        return entry.long_context
    return entry.standard


def _count(n: int | None) -> int:
    # Usage counts are non-negative by contract; a corrupt negative must not refund money.
    return n if n is not None and n > 0 else 0


# --- cost ------------------------------------------------------------------------------------


def cost_of(usage: Usage, model: str, *, on: str, long_context: bool = False) -> Cost:
    """The exact cost of ``usage`` on ``model`` at the list prices effective on ``on``.

    ``long_context`` says the request used the 1M-context beta. See the module docstring for
    every rule. Raises ``ValueError`` only for a malformed ``on``.
    """
    _iso_day(on)
    canonical = canonical_model(model)
    entry = DEFAULT_PRICE if canonical is None else _entry_for(canonical, on)

    uncached = _count(usage.input_tokens)
    writes = _count(usage.cache_creation_input_tokens)
    one_hour = min(_count(usage.cache_creation_1h_input_tokens), writes)
    reads = _count(usage.cache_read_input_tokens)
    long = (
        entry.long_context is not None
        and uncached + writes + reads > entry.long_context_threshold
        and (long_context or not entry.long_context_needs_beta)
    )
    rates = _rates(entry, fast=usage.speed == "fast", long=long)

    advisor_pico = 0
    unknown = canonical is None
    for iteration in usage.iterations:
        if iteration.type == _ADVISOR_TYPE and iteration.model:
            advisor = cost_of(_iteration_usage(iteration), iteration.model, on=on)
            advisor_pico += advisor.total_pico
            unknown = unknown or advisor.unknown_model

    input_pico = uncached * rates.input
    output_pico = _count(usage.output_tokens) * rates.output
    write_5m_pico = (writes - one_hour) * rates.cache_write_5m
    write_1h_pico = one_hour * rates.cache_write_1h
    read_pico = reads * rates.cache_read
    web_search_pico = _count(usage.web_search_requests) * entry.web_search
    return Cost(
        total_pico=(
            input_pico
            + output_pico
            + write_5m_pico
            + write_1h_pico
            + read_pico
            + web_search_pico
            + advisor_pico
        ),
        input_pico=input_pico,
        output_pico=output_pico,
        cache_write_5m_pico=write_5m_pico,
        cache_write_1h_pico=write_1h_pico,
        cache_read_pico=read_pico,
        web_search_pico=web_search_pico,
        advisor_pico=advisor_pico,
        unknown_model=unknown,
        canonical=model if canonical is None else canonical,
    )


def cost_by_model(
    usage: Usage, model: str, *, on: str, long_context: bool = False
) -> tuple[tuple[str, Usage, Cost], ...]:
    """``cost_of`` split per model, as the reference client's session totals count it.

    The message itself comes first (its usage without ``iterations``, under ``model``), then
    each advisor sub-message under its own model (docs/reference/reference-client.md 3.2, point 4). The
    parts' ``total_pico`` add up to ``cost_of(usage, model, ...).total_pico`` exactly.
    """
    own = msgspec.structs.replace(usage, iterations=())
    parts = [(model, own, cost_of(own, model, on=on, long_context=long_context))]
    for iteration in usage.iterations:
        if iteration.type == _ADVISOR_TYPE and iteration.model:
            advisor = _iteration_usage(iteration)
            parts.append((iteration.model, advisor, cost_of(advisor, iteration.model, on=on)))
    return tuple(parts)


def _iteration_usage(iteration: UsageIteration) -> Usage:
    return Usage(
        input_tokens=_count(iteration.input_tokens),
        output_tokens=_count(iteration.output_tokens),
        cache_creation_input_tokens=_count(iteration.cache_creation_input_tokens),
        cache_read_input_tokens=_count(iteration.cache_read_input_tokens),
    )


# --- display (docs/reference/reference-client.md 3.4) -------------------------------------------------------


def format_cost(usd_value: float, max_decimals: int = 4) -> str:
    """``$`` + two decimals above $0.50, else ``max_decimals`` decimals.

    ``0.0048 -> "$0.0048"``, ``0.5 -> "$0.5000"``, ``0.51 -> "$0.51"``,
    ``12.3456 -> "$12.35"``. Above $0.50 the rounding is half up on the value times 100, as
    the reference's ``Math.round(c * 100) / 100``.
    """
    if usd_value > 0.5:
        return f"${math.floor(usd_value * 100 + 0.5) / 100:.2f}"
    return f"${usd_value:.{max_decimals}f}"


_COMPACT_SUFFIXES: Final = ("", "k", "m", "b", "t")


def format_number(n: int) -> str:
    """Compact en-US style, lower-cased: ``12``, ``1.0k``, ``1.3k``, ``2.5m``.

    Below 1,000 the plain integer; from 1,000 on one decimal, always kept, rounded half up
    (``1_250 -> "1.3k"``); a value that rounds up to 1,000 of a unit moves to the next unit
    (``999_950 -> "1.0m"``), as ``Intl.NumberFormat`` compact notation does.
    """
    if n < 0:
        return "-" + format_number(-n)
    if n < 1000:
        return str(n)
    unit = 1
    while unit < len(_COMPACT_SUFFIXES) - 1 and n >= 1000 ** (unit + 1):
        unit += 1
    scale = 1000**unit
    tenths = (n * 10 + scale // 2) // scale
    if tenths >= 10_000 and unit < len(_COMPACT_SUFFIXES) - 1:
        unit += 1
        scale = 1000**unit
        tenths = (n * 10 + scale // 2) // scale
    return f"{tenths // 10}.{tenths % 10}{_COMPACT_SUFFIXES[unit]}"
