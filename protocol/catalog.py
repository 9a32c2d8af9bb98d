"""The model catalog: every model the gateway knows, loaded from ``protocol/catalog.toml`` (pure).

``load_catalog(raw)`` turns the TOML text into a ``Catalog`` of typed Structs and checks it
(every price a whole number of picodollars per token, every alias resolvable, no id claimed
by two models). ``BUILTIN`` is the catalog shipped with the package. ``Catalog.merged`` adds
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
  one of ``overload_fallback_families``; reference-client-now.md 3);
- ``bedrock_geo(region)``: the inference-profile geo prefix for an AWS region;
- ``listing()``: the models with a first-party id, newest first (``GET /v1/models``).

Reading the file is the only I/O, once at import, from the package's own data
(``importlib.resources``); the rest is pure.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Final, Literal, final

import msgspec

from protocol.errors import RemoteProtocolError

PICO_PER_USD: Final = 10**12
# $/Mtok -> picodollars per token: USD * 1e12 / 1e6.
_PICO_PER_TOKEN_PER_USD_MTOK: Final = 10**6
# The four providers (reference-client.md 5.2).
FIRST_PARTY: Final = "firstParty"
BEDROCK: Final = "bedrock"
VERTEX: Final = "vertex"
FOUNDRY: Final = "foundry"
PROVIDERS: Final = (FIRST_PARTY, BEDROCK, VERTEX, FOUNDRY)

# Capability names (the data file's [capability_names] describes each).
EFFORT: Final = "effort"
XHIGH: Final = "xhigh"
ADAPTIVE_THINKING: Final = "adaptive_thinking"
THINKING_OFF: Final = "thinking_off"
MID_CONVERSATION_SYSTEM: Final = "mid_conversation_system"
FAST_MODE: Final = "fast_mode"
ADVISOR: Final = "advisor"
INTERLEAVED_THINKING_3P: Final = "interleaved_thinking_3p"
CAPABILITIES: Final = frozenset(
    {EFFORT, XHIGH, ADAPTIVE_THINKING, THINKING_OFF, MID_CONVERSATION_SYSTEM, FAST_MODE, ADVISOR, INTERLEAVED_THINKING_3P}
)
# The API's model lines (anthropic-sdk-python types/model_line.py): an upstream ``line`` names
# the family of a model the catalog does not know.
FAMILIES: Final = frozenset({"haiku", "sonnet", "opus", "fable", "mythos"})
# ``created_at`` of a model whose release date is unknown: the API itself uses the epoch then.
EPOCH: Final = "1970-01-01T00:00:00Z"

Context1M = Literal["native", "beta", "none"]


class Rates(msgspec.Struct, frozen=True, kw_only=True):
    """One price set, picodollars per token."""

    input: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    output: int


class PriceEntry(msgspec.Struct, frozen=True):
    """The prices of one model (its catalog key) from ``effective`` until its next entry.

    ``long_context`` applies to the whole request when its total input (uncached + cache
    writes + cache reads) exceeds ``long_context_threshold``; with
    ``long_context_needs_beta`` only when the request used the 1M-context beta, otherwise
    always. ``fast`` applies when the upstream reports ``usage.speed == "fast"``;
    ``fast_long_context`` when both apply.
    """

    model: str
    effective: str
    standard: Rates
    long_context: Rates | None = None
    fast: Rates | None = None
    fast_long_context: Rates | None = None
    long_context_threshold: int = 200_000
    long_context_needs_beta: bool = True
    web_search: int = 10_000_000_000


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One model. ``None`` limits are unknown: the gateway never clamps on them.

    ``origin``: ``"catalog"`` (the data file) or ``"upstream"`` (learnt from ``/v1/models``).
    """

    key: str
    display_name: str
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
    capabilities: frozenset[str] = frozenset()
    legacy_remap: bool = False
    origin: str = "catalog"

    def id_for(self, provider: str) -> str | None:
        """This model's id on ``provider``, or None when the provider does not offer it."""
        if provider == BEDROCK:
            return self.bedrock
        if provider == VERTEX:
            return self.vertex
        if provider == FOUNDRY:
            return self.foundry
        return self.first_party

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def claude_3(self) -> bool:
        """A Claude 3 model: the betas of reference 6 that say "non-claude-3" skip it."""
        return self.generation == 3

    def created_at(self) -> str:
        """RFC 3339 release time for ``GET /v1/models`` (the epoch when unknown, as the API)."""
        return f"{self.released}T00:00:00Z" if self.released else EPOCH


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


class _CatalogFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
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
        exact = Decimal(usd_per_mtok.strip()) * _PICO_PER_TOKEN_PER_USD_MTOK
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


def load_catalog(raw: bytes | str) -> Catalog:
    """The catalog in ``raw`` (the TOML text of ``protocol/catalog.toml``).

    Raises:
        ValueError: the text breaks the schema or a rule of the data (a price that is not
            whole picodollars, an unknown capability, an alias that names nothing, an id
            claimed twice, a date that is not ISO).
    """
    try:
        data = msgspec.toml.decode(raw, type=_CatalogFile)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"model catalog: {exc}") from exc
    web_search = _pico(data.web_search_usd) * _PICO_PER_TOKEN_PER_USD_MTOK
    models: list[ModelSpec] = []
    prices: list[PriceEntry] = []
    for row in data.models:
        unknown = set(row.capabilities) - CAPABILITIES
        if unknown:
            raise ValueError(f"model catalog: {row.key}: unknown capabilities {sorted(unknown)}")
        if row.family is not None and row.family not in FAMILIES:
            raise ValueError(f"model catalog: {row.key}: unknown family {row.family!r}")
        if row.released is not None and not _ISO_DATE.fullmatch(row.released):
            raise ValueError(f"model catalog: {row.key}: released {row.released!r} is not an ISO date")
        models.append(
            ModelSpec(
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
        )
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
    unknown_caps = set(data.unknown_capabilities) - CAPABILITIES
    if unknown_caps or set(data.capability_names) != CAPABILITIES:
        raise ValueError("model catalog: capability names differ from protocol/catalog.py's")
    catalog = Catalog(
        as_of=data.as_of,
        sources=data.sources,
        models=tuple(models),
        prices=tuple(prices),
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
# Provider forms of one model, normalised in this order (reference-client.md 3.1, 5.3;
# wire.md 7.7, 8, 9):
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
        """reference-client-now.md 3: 3 consecutive 529s count for a model whose catalog
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


# --- an upstream GET /v1/models answer (anthropic-sdk-python types/model_info.py) -------------

# A model id longer than this is not an id: such an entry is skipped.
MAX_MODEL_ID: Final = 256


class _Support(msgspec.Struct, frozen=True):
    supported: bool = False


class _Effort(msgspec.Struct, frozen=True):
    supported: bool = False
    xhigh: _Support | None = None


class _ThinkingTypes(msgspec.Struct, frozen=True):
    adaptive: _Support | None = None
    disabled: _Support | None = None


class _Thinking(msgspec.Struct, frozen=True):
    supported: bool = False
    types: _ThinkingTypes | None = None


class _Capabilities(msgspec.Struct, frozen=True):
    effort: _Effort | None = None
    thinking: _Thinking | None = None


class UpstreamModel(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the upstream's ``GET /v1/models`` (unknown fields ignored)."""

    id: str
    display_name: str | None = None
    created_at: str | None = None
    max_input_tokens: int | None = None
    max_tokens: int | None = None
    line: str | None = None
    capabilities: _Capabilities | None = None

    def released(self) -> str | None:
        day = (self.created_at or "")[:10]
        return day if _ISO_DATE.fullmatch(day) and not day.startswith("1970") else None

    def spec(self, assumed: frozenset[str]) -> ModelSpec:
        """A catalog entry for a model the catalog does not know."""
        capabilities = set(assumed) | {THINKING_OFF}
        caps = self.capabilities
        if caps is not None and caps.effort is not None and caps.effort.supported:
            capabilities.add(EFFORT)
            if caps.effort.xhigh is not None and caps.effort.xhigh.supported:
                capabilities.add(XHIGH)
        types = caps.thinking.types if caps is not None and caps.thinking is not None else None
        if types is not None:
            if types.adaptive is not None and types.adaptive.supported:
                capabilities.add(ADAPTIVE_THINKING)
            if types.disabled is not None and not types.disabled.supported:
                capabilities.discard(THINKING_OFF)
        positive = [n for n in (self.max_input_tokens, self.max_tokens) if n is not None and n > 0]
        return ModelSpec(
            key=self.id.strip().lower(),
            display_name=self.display_name or self.id,
            family=self.line if self.line in FAMILIES else None,
            released=self.released(),
            first_party=self.id.strip(),
            context_window=self.max_input_tokens if self.max_input_tokens in positive else None,
            max_output=self.max_tokens if self.max_tokens in positive else None,
            capabilities=frozenset(capabilities),
            origin="upstream",
        )


class UpstreamPage(msgspec.Struct, frozen=True, kw_only=True):
    data: tuple[UpstreamModel, ...] = ()
    has_more: bool = False
    last_id: str | None = None


_PAGE: Final = msgspec.json.Decoder(UpstreamPage)


def decode_models_page(raw: bytes) -> UpstreamPage:
    """An upstream ``GET /v1/models`` body (the caller bounds its size); entries with an
    implausible id are dropped.

    Raises:
        RemoteProtocolError: not the API's list shape.
    """
    try:
        page = _PAGE.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(f"GET /v1/models answer: {exc}") from exc
    kept = tuple(m for m in page.data if 0 < len(m.id.strip()) <= MAX_MODEL_ID)
    return msgspec.structs.replace(page, data=kept)


def _builtin() -> Catalog:
    return load_catalog(importlib.resources.files("protocol").joinpath("catalog.toml").read_bytes())


BUILTIN: Final[Catalog] = _builtin()
"""The catalog shipped with the package (``protocol/catalog.toml``)."""
