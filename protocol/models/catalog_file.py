"""The shape of ``protocol/models/catalog.toml`` and its rows as typed entries (pure).

``decode_catalog_file(raw)`` checks the TOML text against the file's schema (its tables and
rows as Structs); ``catalog_entries(data)`` turns the rows into ``ModelSpec`` and
``PriceEntry`` values, checking the rules a row keeps on its own (every price a whole number
of picodollars per token, capabilities and families known, dates ISO). ``load_catalog`` in
``protocol/models/catalog.py`` builds the ``Catalog`` from them and checks the rules across
rows.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

import msgspec

from protocol.models.spec import (
    CAPABILITIES,
    FAMILIES,
    PICO_PER_TOKEN_PER_USD_MTOK,
    Context1M,
    ModelSpec,
    PriceEntry,
    Rates,
)


class ModelOptionRow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    value: str
    label: str
    description: str | None = None


# --- the file's shape ------------------------------------------------------------------------


class _PriceRow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    effective: str
    standard: str
    long_context: str | None = None
    fast: str | None = None
    fast_long_context: str | None = None
    long_context_threshold: int = 200_000
    long_context_needs_beta: bool = True


class _ModelRow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: str
    name: str
    family: str | None = None
    generation: int | None = None
    released: str | None = None
    first_party: str | None = None
    aliases: tuple[str, ...] = ()
    bedrock: str | None = None
    vertex: str | None = None
    foundry: str | None = None
    context_window: int | None = None
    context_1m: Context1M = "none"
    max_output_default: int | None = None
    max_output: int | None = None
    capabilities: tuple[str, ...] = ()
    legacy_remap: bool = False
    prices: tuple[_PriceRow, ...] = ()


class CatalogFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    as_of: str
    sources: tuple[str, ...]
    unknown_price_model: str
    web_search_usd: str
    overload_fallback_families: tuple[str, ...]
    small_fast_families: tuple[str, ...]
    unknown_capabilities: tuple[str, ...]
    capability_names: dict[str, str]
    model_options: tuple[ModelOptionRow, ...]
    aliases: dict[str, dict[str, str]]
    bedrock_geo: dict[str, str]
    models: tuple[_ModelRow, ...]


_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _pico(usd_per_mtok: str) -> int:
    try:
        exact = Decimal(usd_per_mtok.strip()) * PICO_PER_TOKEN_PER_USD_MTOK
    except InvalidOperation:
        raise ValueError(f"not a price: {usd_per_mtok!r}") from None
    if exact != exact.to_integral_value() or exact < 0:
        raise ValueError(f"{usd_per_mtok} $/Mtok is not a whole number of picodollars per token")
    return int(exact)


def _rates(text: str | None) -> Rates | None:
    """``"input / 5m write / 1h write / cache read / output"`` in $/Mtok."""
    if text is None:
        return None
    parts = text.split("/")
    if len(parts) != 5:
        raise ValueError(f"want 5 prices 'in / 5m / 1h / read / out', got {text!r}")
    input_, write_5m, write_1h, read, output = (_pico(part) for part in parts)
    return Rates(input=input_, cache_write_5m=write_5m, cache_write_1h=write_1h, cache_read=read, output=output)


def decode_catalog_file(raw: bytes | str) -> CatalogFile:
    """The TOML text of ``protocol/models/catalog.toml`` as its schema's Structs.

    Raises:
        ValueError: the text breaks the schema.
    """
    try:
        return msgspec.toml.decode(raw, type=CatalogFile)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"model catalog: {exc}") from exc


def catalog_entries(data: CatalogFile) -> tuple[tuple[ModelSpec, ...], tuple[PriceEntry, ...]]:
    """The models and price entries of the file's rows, in file order.

    Raises:
        ValueError: a row breaks a rule of the data (a price that is not whole picodollars,
            an unknown capability or family, a date that is not ISO), or the file's
            capability names differ from ``CAPABILITIES``.
    """
    web_search = _pico(data.web_search_usd) * PICO_PER_TOKEN_PER_USD_MTOK
    models: list[ModelSpec] = []
    prices: list[PriceEntry] = []
    for row in data.models:
        models.append(_model_spec(row))
        prices.extend(_price_entries(row, web_search))
    unknown_caps = set(data.unknown_capabilities) - CAPABILITIES
    if unknown_caps or set(data.capability_names) != CAPABILITIES:
        raise ValueError("model catalog: capability names differ from protocol/models/catalog.py's")
    return tuple(models), tuple(prices)


def _model_spec(row: _ModelRow) -> ModelSpec:
    unknown = set(row.capabilities) - CAPABILITIES
    if unknown:
        raise ValueError(f"model catalog: {row.key}: unknown capabilities {sorted(unknown)}")
    if row.family is not None and row.family not in FAMILIES:
        raise ValueError(f"model catalog: {row.key}: unknown family {row.family!r}")
    if row.released is not None and not _ISO_DATE.fullmatch(row.released):
        raise ValueError(f"model catalog: {row.key}: released {row.released!r} is not an ISO date")
    return ModelSpec(
        key=row.key,
        display_name=row.name,
        family=row.family,
        generation=row.generation,
        released=row.released,
        first_party=row.first_party,
        aliases=row.aliases,
        bedrock=row.bedrock,
        vertex=row.vertex,
        foundry=row.foundry,
        context_window=row.context_window,
        context_1m=row.context_1m,
        max_output_default=row.max_output_default,
        max_output=row.max_output,
        capabilities=frozenset(row.capabilities),
        legacy_remap=row.legacy_remap,
    )


def _price_entries(row: _ModelRow, web_search: int) -> list[PriceEntry]:
    prices: list[PriceEntry] = []
    for price in row.prices:
        if not _ISO_DATE.fullmatch(price.effective):
            raise ValueError(f"model catalog: {row.key}: effective {price.effective!r} is not an ISO date")
        standard = _rates(price.standard)
        assert standard is not None
        prices.append(
            PriceEntry(
                row.key,
                price.effective,
                standard,
                long_context=_rates(price.long_context),
                fast=_rates(price.fast),
                fast_long_context=_rates(price.fast_long_context),
                long_context_threshold=price.long_context_threshold,
                long_context_needs_beta=price.long_context_needs_beta,
                web_search=web_search,
            )
        )
    return prices
