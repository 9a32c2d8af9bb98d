"""The list-price table: now data in ``protocol/models/catalog.toml``, read by ``protocol/models/catalog.py``.

This module keeps the names other modules and tests use: the two price types, the table as
one ``PriceEntry`` per model per price change, and the money constants. Money is integer
**picodollars** (1e-12 USD) per token, so every list price is exact: ``$3 / Mtok`` is 3e-6
USD per token, 3_000_000 picodollars.
"""

from __future__ import annotations

from typing import Final

from protocol.models.catalog import BUILTIN, PICO_PER_USD, PriceEntry, Rates

__all__ = ["PICO_PER_USD", "PRICE_TABLE", "WEB_SEARCH_PICO", "PriceEntry", "Rates"]

# Web search: $10 per 1,000 requests (docs/reference/reference-client-now.md 2: $0.01 per request).
WEB_SEARCH_PICO: Final = 10_000_000_000

PRICE_TABLE: Final[tuple[PriceEntry, ...]] = BUILTIN.prices_table
