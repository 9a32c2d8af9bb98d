"""The model catalog: every model the gateway knows, loaded from ``protocol/models/catalog.toml`` (pure).

``load_catalog(raw)`` turns the TOML text into a ``Catalog`` and checks it (every price a
whole number of picodollars per token, every alias resolvable, no id claimed by two models);
the file's schema and its rows' checks are in ``protocol/models/catalog_file.py``. ``BUILTIN`` is the catalog shipped with the package. ``Catalog.merged`` adds
what an upstream ``GET /v1/models`` answer says (``decode_models_page``), so a model released
after this file was written is listed and sized by the upstream's own word.

What the catalog answers, every rule by data and none by a model's name:

- ``model(id)``: the ``ModelSpec`` of any provider's id for a model (first-party dated or
  alias id, Bedrock with any geo prefix or ARN, Vertex ``@date``, Foundry, ``[1m]``), or None;
- ``first_party_model(id)``: the model of a first-party id (what a client of the gateway
  sends), for translating it to a provider's id;
- ``alias(provider, name)``: what an alias names on a provider;
- ``prices(key)``: a model's price entries, oldest first;
- ``counts_repeated_overload(id)``: 3 consecutive 529s count for this model (its family is
  one of ``overload_fallback_families``; docs/reference/reference-client-now.md 3);
- ``bedrock_geo(region)``: the inference-profile geo prefix for an AWS region;
- ``listing()``: the models with a first-party id, newest first (``GET /v1/models``).

The types (``ModelSpec``, ``PriceEntry``, capability names) are in ``protocol/models/spec.py``
and the upstream answer's in ``protocol/models/upstream_list.py``; this module re-exports them.
Reading the file is the only I/O, once at import, from the package's own data
(``importlib.resources``); the rest is pure.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterable, Mapping
from typing import Final, final

import msgspec

from protocol.models.catalog_file import ModelOptionRow, catalog_entries, decode_catalog_file
from protocol.models.spec import (
    ADAPTIVE_THINKING,
    ADVISOR,
    BEDROCK,
    CAPABILITIES,
    EFFORT,
    EPOCH,
    FAMILIES,
    FAST_MODE,
    FIRST_PARTY,
    FOUNDRY,
    INTERLEAVED_THINKING_3P,
    MID_CONVERSATION_SYSTEM,
    PICO_PER_USD,
    PROVIDERS,
    THINKING_OFF,
    VERTEX,
    XHIGH,
    ModelSpec,
    PriceEntry,
    Rates,
)
from protocol.models.upstream_list import UpstreamModel, UpstreamPage, decode_models_page

__all__ = [
    "ADAPTIVE_THINKING",
    "ADVISOR",
    "BEDROCK",
    "BUILTIN",
    "CAPABILITIES",
    "EFFORT",
    "EPOCH",
    "FAMILIES",
    "FAST_MODE",
    "FIRST_PARTY",
    "FOUNDRY",
    "INTERLEAVED_THINKING_3P",
    "MID_CONVERSATION_SYSTEM",
    "PICO_PER_USD",
    "PROVIDERS",
    "THINKING_OFF",
    "VERTEX",
    "XHIGH",
    "Catalog",
    "ModelSpec",
    "PriceEntry",
    "Rates",
    "UpstreamModel",
    "UpstreamPage",
    "decode_models_page",
    "load_catalog",
]


def load_catalog(raw: bytes | str) -> Catalog:
    """The catalog in ``raw`` (the TOML text of ``protocol/models/catalog.toml``).

    Raises:
        ValueError: the text breaks the schema or a rule of the data (a price that is not
            whole picodollars, an unknown capability, an alias that names nothing, an id
            claimed twice, a date that is not ISO).
    """
    data = decode_catalog_file(raw)
    models, prices = catalog_entries(data)
    catalog = Catalog(
        as_of=data.as_of,
        sources=data.sources,
        models=models,
        prices=prices,
        aliases=data.aliases,
        unknown_capabilities=frozenset(data.unknown_capabilities),
        overload_families=frozenset(data.overload_fallback_families),
        small_fast_families=frozenset(data.small_fast_families),
        bedrock_geo=data.bedrock_geo,
        model_options=data.model_options,
        unknown_price_model=data.unknown_price_model,
    )
    catalog.check()
    return catalog



# --- provider forms of an id -----------------------------------------------------------------
#
# Provider forms of one model, normalised in this order (docs/reference/reference-client.md 3.1, 5.3;
# docs/reference/wire.md 7.7, 8, 9):
#   "claude-opus-4-6[1m]"                           client-side 1M marker, any case
#   "arn:aws:bedrock:...:inference-profile/<id>"    Bedrock ARN: keep what follows the last "/"
#   "us.anthropic.<id>" / "anthropic.<id>"          Bedrock geo prefix and provider prefix
#   "<id>@20250929" / "<id>@default"                Vertex version
#   "<id>-v1:0" / "<id>-v2:0" / "<id>-v1"           Bedrock version
#   "<id>-20250929"                                 snapshot date
#   "<id>-latest" / "claude-opus-4-0"               the API's aliases
# Whatever remains must be a catalog key.
_MARKER: Final = re.compile(r"\[\d+m\]$")
_BEDROCK_PREFIX: Final = re.compile(r"^(?:[a-z][a-z0-9-]*\.)?anthropic\.")
_VERTEX_VERSION: Final = re.compile(r"@[^@]*$")
_BEDROCK_VERSION: Final = re.compile(r"-v\d+(?::[0-9a-z]+)*$")
_SNAPSHOT_DATE: Final = re.compile(r"-\d{8}$")
_ALIAS_SUFFIX: Final = re.compile(r"-(?:latest|0)$")


def _plain(model_id: str) -> str:
    """``model_id`` lower-cased, trimmed, without a trailing ``[1m]``-style marker."""
    return _MARKER.sub("", model_id.strip().lower())


def _normalised(model_id: str) -> str:
    name = _plain(model_id)
    if name.startswith("arn:"):
        name = name.rsplit("/", 1)[-1]
    name = _BEDROCK_PREFIX.sub("", name)
    name = _VERTEX_VERSION.sub("", name)
    name = _BEDROCK_VERSION.sub("", name)
    name = _SNAPSHOT_DATE.sub("", name)
    return _ALIAS_SUFFIX.sub("", name)


@final
class Catalog:
    """The models, prices and per-provider aliases (see the module docstring). Immutable:
    ``merged`` returns a new catalog."""

    def __init__(
        self,
        *,
        as_of: str,
        sources: tuple[str, ...],
        models: tuple[ModelSpec, ...],
        prices: tuple[PriceEntry, ...],
        aliases: Mapping[str, Mapping[str, str]],
        unknown_capabilities: frozenset[str],
        overload_families: frozenset[str],
        small_fast_families: frozenset[str],
        bedrock_geo: Mapping[str, str],
        model_options: tuple[ModelOptionRow, ...],
        unknown_price_model: str,
    ) -> None:
        self.as_of = as_of
        self.sources = sources
        self.models = models
        self.prices_table = prices
        self.aliases = {provider: dict(names) for provider, names in aliases.items()}
        self.unknown_capabilities = unknown_capabilities
        self.overload_families = overload_families
        self.small_fast_families = small_fast_families
        self.bedrock_geo_prefixes = dict(bedrock_geo)
        self.model_options = model_options
        self.unknown_price_model = unknown_price_model
        self._by_key = {model.key: model for model in models}
        self._first_party: dict[str, ModelSpec] = {}
        self._any_id: dict[str, ModelSpec] = {}
        for model in models:
            for form in (model.first_party, *model.aliases):
                if form is not None:
                    self._first_party.setdefault(form.lower(), model)
            for form in (model.key, model.first_party, *model.aliases, model.bedrock, model.vertex, model.foundry):
                if form is not None:
                    self._any_id.setdefault(form.lower(), model)
        by_model: dict[str, list[PriceEntry]] = {}
        for entry in prices:
            by_model.setdefault(entry.model, []).append(entry)
        self._prices = {key: tuple(sorted(entries, key=lambda e: e.effective)) for key, entries in by_model.items()}

    def check(self) -> None:
        """Raises ValueError when the data breaks a rule (see ``load_catalog``)."""
        if len(self._by_key) != len(self.models):
            raise ValueError("model catalog: a key appears twice")
        seen: dict[str, str] = {}
        for model in self.models:
            for form in {f.lower() for f in (model.first_party, *model.aliases) if f is not None}:
                if seen.setdefault(form, model.key) != model.key:
                    raise ValueError(f"model catalog: {form} is an id of {seen[form]} and {model.key}")
        for key in self._prices:
            if key not in self._by_key:
                raise ValueError(f"model catalog: prices for unknown model {key}")
        if self.unknown_price_model not in self._prices:
            raise ValueError(f"model catalog: unknown_price_model {self.unknown_price_model} has no price")
        for provider, names in self.aliases.items():
            if provider not in PROVIDERS:
                raise ValueError(f"model catalog: aliases for unknown provider {provider}")
            for name in names:
                target = self.alias_target(provider, name)
                if target is None or target not in self._by_key:
                    raise ValueError(f"model catalog: alias {name} on {provider} names no model")
        for option in self.model_options:
            if self.model(option.value) is None:
                raise ValueError(f"model catalog: model option {option.value} is not a model")

    # --- lookups ---------------------------------------------------------------------------

    def get(self, key: str) -> ModelSpec | None:
        """The model with this catalog key."""
        return self._by_key.get(key)

    def model(self, model_id: str) -> ModelSpec | None:
        """The model of any provider's id for it (see the module docstring), or None."""
        plain = _plain(model_id)
        found = self._any_id.get(plain)
        if found is not None:
            return found
        if plain.startswith("arn:"):
            found = self._any_id.get(plain.rsplit("/", 1)[-1])
            if found is not None:
                return found
        return self._by_key.get(_normalised(model_id))

    def first_party_model(self, model_id: str) -> ModelSpec | None:
        """The model whose first-party id (or API alias, or key) ``model_id`` is, exactly."""
        plain = _plain(model_id)
        found = self._first_party.get(plain)
        if found is None:
            found = self._by_key.get(plain)
        return found

    def alias_target(self, provider: str, name: str) -> str | None:
        """The catalog key an alias names on ``provider`` (following alias to alias), without
        a ``[1m]`` marker; None for a name that is not an alias there."""
        names = self.aliases.get(provider, {})
        current = name.lower()
        for _ in range(len(names) + 1):
            target = names.get(current)
            if target is None:
                return current if current != name.lower() else None
            current = _plain(target)
        return None

    def alias(self, provider: str, name: str) -> str | None:
        """What ``name`` names on ``provider`` as written in the data (maybe another alias,
        maybe with ``[1m]``); None when it is not an alias."""
        return self.aliases.get(provider, {}).get(name.lower())

    def prices(self, key: str) -> tuple[PriceEntry, ...]:
        """The price entries of the model with this key, oldest first (empty: unpriced)."""
        return self._prices.get(key, ())

    def priced_keys(self) -> frozenset[str]:
        return frozenset(self._prices)

    def counts_repeated_overload(self, model_id: str) -> bool:
        """docs/reference/reference-client-now.md 3: 3 consecutive 529s count for a model whose catalog
        family is opus, fable or mythos (any provider's id, ``[1m]`` or not; custom ids
        do not count)."""
        model = self.model(model_id)
        return model is not None and model.family in self.overload_families

    def is_small_fast(self, spec: ModelSpec | None) -> bool:
        """A model of a family the reference treats as Haiku (``small_fast_families``)."""
        return spec is not None and spec.family in self.small_fast_families

    def bedrock_geo(self, region: str) -> str | None:
        """The Bedrock geo prefix for an AWS region (the longest matching rule), or None."""
        best = max((prefix for prefix in self.bedrock_geo_prefixes if region.startswith(prefix)), key=len, default=None)
        return None if best is None else self.bedrock_geo_prefixes[best]

    def listing(self) -> tuple[ModelSpec, ...]:
        """The models a client can name (a first-party id), newest first, then by id."""
        listed = [m for m in self.models if m.first_party is not None]
        listed.sort(key=lambda m: m.first_party or "")
        listed.sort(key=lambda m: m.released or "", reverse=True)
        return tuple(listed)

    # --- merging what the upstream says ----------------------------------------------------

    def merged(self, upstream: Iterable[UpstreamModel]) -> Catalog:
        """This catalog with an upstream ``GET /v1/models`` answer merged in.

        A model the catalog knows keeps its entry, with the upstream's limits where it gives
        them (the API's word on its own limits); a model it does not know is added with what
        the upstream says (and, for the rest, what an unknown model is assumed to support).
        Prices never come from the upstream: a new model stays unpriced (flagged).
        """
        models = list(self.models)
        index = {model.key: i for i, model in enumerate(models)}
        for item in upstream:
            known = self.model(item.id)
            if known is not None:
                i = index[known.key]
                models[i] = msgspec.structs.replace(
                    models[i],
                    context_window=item.max_input_tokens or models[i].context_window,
                    max_output=item.max_tokens or models[i].max_output,
                    released=models[i].released or item.released(),
                )
                continue
            key = item.id.strip().lower()
            if key in index:
                continue
            index[key] = len(models)
            models.append(item.spec(self.unknown_capabilities))
        return Catalog(
            as_of=self.as_of,
            sources=self.sources,
            models=tuple(models),
            prices=self.prices_table,
            aliases=self.aliases,
            unknown_capabilities=self.unknown_capabilities,
            overload_families=self.overload_families,
            small_fast_families=self.small_fast_families,
            bedrock_geo=self.bedrock_geo_prefixes,
            model_options=self.model_options,
            unknown_price_model=self.unknown_price_model,
        )


def _builtin() -> Catalog:
    return load_catalog(importlib.resources.files("protocol.models").joinpath("catalog.toml").read_bytes())


BUILTIN: Final[Catalog] = _builtin()
"""The catalog shipped with the package (``protocol/models/catalog.toml``)."""
