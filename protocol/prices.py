"""The list-price table as data: one ``PriceEntry`` per model per price change.

Pure data and its two types; the rules that read it live in ``protocol/pricing.py``.

Money is integer **picodollars** (1e-12 USD) per token, so every list price is exact:
``$3 / Mtok`` is 3e-6 USD per token, 3_000_000 picodollars. Entries are written with
``_r(input, 5m write, 1h write, cache read, output)`` in USD per million tokens, the column
order of wire.md 10.2, and converted exactly (a price that is not a whole number of
picodollars per token fails at import).

``effective`` is the ISO date a price took effect. Sources, in order of preference: the
model page's "Released" date or an announcement date; else the snapshot date inside the
model id (``claude-opus-4-1-20250805``), which is at or a few days before the public launch
and so never later than the first real request. Each guess says so in a comment.

Tags as in wire.md 0: [DOC] official docs page, [OBS] third-party observation.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import msgspec

PICO_PER_USD: Final = 10**12
# $/Mtok -> picodollars per token: USD * 1e12 / 1e6.
_PICO_PER_TOKEN_PER_USD_MTOK: Final = 10**6
# Web search: $10 per 1,000 requests (reference-client.md 3.1, every tier: 0.01 per request).
WEB_SEARCH_PICO: Final = 10_000_000_000


class Rates(msgspec.Struct, frozen=True, kw_only=True):
    """One price set, picodollars per token."""

    input: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    output: int


class PriceEntry(msgspec.Struct, frozen=True):
    """The prices of one canonical model from ``effective`` until its next entry.

    ``long_context`` applies to the whole request when its total input (uncached + cache
    writes + cache reads) exceeds ``long_context_threshold``; with
    ``long_context_needs_beta`` only when the request used the 1M-context beta (Sonnet 4/4.5,
    Opus 4.6), otherwise always (Haiku 5.5's prompt-length tier). ``fast`` applies when the
    upstream reports ``usage.speed == "fast"``; ``fast_long_context`` when both apply.
    """

    model: str
    effective: str
    standard: Rates
    long_context: Rates | None = None
    fast: Rates | None = None
    fast_long_context: Rates | None = None
    long_context_threshold: int = 200_000
    long_context_needs_beta: bool = True
    web_search: int = WEB_SEARCH_PICO


def _pico(usd_per_mtok: str) -> int:
    exact = Decimal(usd_per_mtok) * _PICO_PER_TOKEN_PER_USD_MTOK
    if exact != exact.to_integral_value():
        raise ValueError(f"{usd_per_mtok} $/Mtok is not a whole number of picodollars per token")
    return int(exact)


def _r(input: str, write_5m: str, write_1h: str, read: str, output: str) -> Rates:
    """Rates from USD per million tokens, in wire.md 10.2's column order."""
    return Rates(
        input=_pico(input),
        cache_write_5m=_pico(write_5m),
        cache_write_1h=_pico(write_1h),
        cache_read=_pico(read),
        output=_pico(output),
    )


# Shared price sets (wire.md 10.2; multipliers 5m = 1.25x, 1h = 2x, read = 0.1x input).
_OPUS_15_75: Final = _r("15", "18.75", "30", "1.50", "75")
_OPUS_5_25: Final = _r("5", "6.25", "10", "0.50", "25")
_SONNET_3_15: Final = _r("3", "3.75", "6", "0.30", "15")
# Sonnet 4 / 4.5 with the 1M beta and > 200K input: $6 / $22.50, caching multipliers stack
# (wire.md 10.3).
_SONNET_LONG: Final = _r("6", "7.50", "12", "0.60", "22.50")
_SONNET_2_10: Final = _r("2", "2.50", "4", "0.20", "10")
_MYTHOS_10_50: Final = _r("10", "12.50", "20", "1", "50")
_MYTHOS_51: Final = _r("10", "12.50", "20", "0.25", "50")
# Fable/Mythos 5.2: $8 / $40, cache read $0.20 [OBS launch notes, 2026-11-09]; 1h write 2x.
_MYTHOS_52: Final = _r("8", "10", "16", "0.20", "40")
_FAST_2X_MYTHOS_52: Final = _r("16", "20", "32", "0.40", "80")
# Fast mode at 2x every token type (wire.md 10.4 for Opus 5; [OBS] for the others:
# Google's Fable 5.2 fast-mode page states 2x across input, output, cache writes and reads).
_FAST_2X_OPUS_5_25: Final = _r("10", "12.50", "20", "1", "50")

PRICE_TABLE: Final[tuple[PriceEntry, ...]] = (
    # Claude 3 family. Dates: the snapshot date in the model id.
    PriceEntry("claude-3-opus", "2024-02-29", _OPUS_15_75),
    PriceEntry("claude-3-haiku", "2024-03-07", _r("0.25", "0.30", "0.50", "0.03", "1.25")),
    # claude-3-5-sonnet: first snapshot 20240620 (launch date; not in the reference).
    PriceEntry("claude-3-5-sonnet", "2024-06-20", _SONNET_3_15),
    PriceEntry("claude-3-5-haiku", "2024-10-22", _r("0.80", "1", "1.60", "0.08", "4")),
    PriceEntry("claude-3-7-sonnet", "2025-02-19", _SONNET_3_15),
    # Claude 4 family. Dates: the snapshot date in the model id.
    PriceEntry("claude-opus-4", "2025-05-14", _OPUS_15_75),
    PriceEntry("claude-sonnet-4", "2025-05-14", _SONNET_3_15),
    # The long-context tier arrived with the context-1m-2025-08-07 beta (wire.md 10.3).
    PriceEntry("claude-sonnet-4", "2025-08-07", _SONNET_3_15, long_context=_SONNET_LONG),
    PriceEntry("claude-opus-4-1", "2025-08-05", _OPUS_15_75),
    PriceEntry("claude-sonnet-4-5", "2025-09-29", _SONNET_3_15, long_context=_SONNET_LONG),
    PriceEntry("claude-haiku-4-5", "2025-10-01", _r("1", "1.25", "2", "0.10", "5")),
    PriceEntry("claude-opus-4-5", "2025-11-01", _OPUS_5_25),
    # Opus 4.6, released 2026-02-05 [OBS]. Long context $10 / $37.50, fast 6x: $30 / $150,
    # and fast over 200K $60 / $225 (wire.md 10.3, 10.4; reference-client.md 3.1
    # COST_TIER_30_150 gives the fast cache prices 37.50 / 3.00).
    PriceEntry(
        "claude-opus-4-6",
        "2026-02-05",
        _OPUS_5_25,
        long_context=_r("10", "12.50", "20", "1", "37.50"),
        fast=_r("30", "37.50", "60", "3", "150"),
        fast_long_context=_r("60", "75", "120", "6", "225"),
    ),
    # 1M context GA on 2026-03-13 "at standard pricing": the > 200K surcharge is gone for
    # Opus 4.6 [OBS, several reports of the announcement; wire.md 10.3 marks it UNVERIFIED].
    PriceEntry(
        "claude-opus-4-6", "2026-03-13", _OPUS_5_25, fast=_r("30", "37.50", "60", "3", "150")
    ),
    # Sonnet 4.6, released 2026-02-17 [OBS]. No long-context tier here (its 1M beta lasted
    # four weeks and its surcharge is not documented in the reference).
    PriceEntry("claude-sonnet-4-6", "2026-02-17", _SONNET_3_15),
    # Mythos Preview, announced 2026-04-07: $25 / $125 [OBS, not in the reference]; cache
    # prices by the standard multipliers.
    PriceEntry("claude-mythos-preview", "2026-04-07", _r("25", "31.25", "50", "2.50", "125")),
    # Opus 4.7, released 2026-04-16 [OBS]. Its fast mode (removed 2026-07-24) has no known
    # price, so fast usage is billed at the standard rates.
    PriceEntry("claude-opus-4-7", "2026-04-16", _OPUS_5_25),
    # Opus 4.8, released 2026-05-28 [OBS]; fast $10 / $50, 2x [OBS].
    PriceEntry("claude-opus-4-8", "2026-05-28", _OPUS_5_25, fast=_FAST_2X_OPUS_5_25),
    # Fable 5 / Mythos 5, released 2026-06-09 [DOC model page].
    PriceEntry("claude-fable-5", "2026-06-09", _MYTHOS_10_50),
    PriceEntry("claude-mythos-5", "2026-06-09", _MYTHOS_10_50),
    # Sonnet 5, released 2026-06-30 [DOC model page]; the announced rise to $3 / $15 was
    # called off [OBS], so $2 / $10 stands.
    PriceEntry("claude-sonnet-5", "2026-06-30", _SONNET_2_10),
    # Opus 5, released 2026-07-24 [DOC model page]; fast $10 / $50 (wire.md 10.4).
    PriceEntry("claude-opus-5", "2026-07-24", _OPUS_5_25, fast=_FAST_2X_OPUS_5_25),
    # Fable 5.1 / Mythos 5.1, released 2026-09-01 [OBS announcement]; cache read 0.025x.
    PriceEntry("claude-fable-5-1", "2026-09-01", _MYTHOS_51),
    PriceEntry("claude-mythos-5-1", "2026-09-01", _MYTHOS_51),
    # Opus 5.5, released 2026-09-22 [OBS]; cache read 0.05x (wire.md 10.2); fast $8 / $40,
    # 2x [OBS].
    PriceEntry(
        "claude-opus-5-5",
        "2026-09-22",
        _r("4", "5", "8", "0.20", "20"),
        fast=_r("8", "10", "16", "0.40", "40"),
    ),
    # Sonnet 5.5, released 2026-09-28 [OBS] at Sonnet 5's prices; cache read cut to $0.10 on
    # 2026-10-07 (wire.md 10.2).
    PriceEntry("claude-sonnet-5-5", "2026-09-28", _SONNET_2_10),
    PriceEntry("claude-sonnet-5-5", "2026-10-07", _r("2", "2.50", "4", "0.10", "10")),
    # Haiku 5.5, released 2026-10-07 [DOC model page]: a prompt over 100K tokens bills the
    # whole request at 5x, with no beta involved (wire.md 10.2).
    PriceEntry(
        "claude-haiku-5-5",
        "2026-10-07",
        _r("0.10", "0.125", "0.20", "0.01", "0.50"),
        long_context=_r("0.50", "0.625", "1", "0.05", "2.50"),
        long_context_threshold=100_000,
        long_context_needs_beta=False,
    ),
    # Fable 5.2 / Mythos 5.2, released 2026-11-09 [OBS]; fast 2x [OBS Google Cloud docs].
    PriceEntry("claude-fable-5-2", "2026-11-09", _MYTHOS_52, fast=_FAST_2X_MYTHOS_52),
    PriceEntry("claude-mythos-5-2", "2026-11-09", _MYTHOS_52, fast=_FAST_2X_MYTHOS_52),
)
