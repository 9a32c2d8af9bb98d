"""Model aliases, per-provider model ids and limits, from the catalog (protocol/models/catalog.toml) (pure).

``resolve_model`` turns what a client asked for (an alias, a ``[1m]`` suffix, a legacy id, a
first-party id) into the id sent upstream for a provider, and says whether the 1M-context
beta applies. ``output_limits`` and ``context_window`` give a model's token limits; an
unknown limit is None, and nothing clamps on it. Every answer comes from a ``Catalog``
(``ModelSettings.catalog``, by default the built-in one): no rule here looks at a model's name.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from protocol.models.catalog import (
    BEDROCK,
    BUILTIN,
    FIRST_PARTY,
    FOUNDRY,
    PROVIDERS,
    VERTEX,
    Catalog,
    ModelSpec,
)

__all__ = [
    "BEDROCK",
    "DEFAULT_CONTEXT_WINDOW",
    "FIRST_PARTY",
    "FOUNDRY",
    "ONE_M_CONTEXT_WINDOW",
    "PROVIDERS",
    "VERTEX",
    "ModelSettings",
    "ResolvedModel",
    "context_window",
    "default_haiku",
    "default_opus",
    "default_sonnet",
    "output_limits",
    "resolve_model",
    "small_fast_model",
]

# docs/reference/reference-client.md 5.3: has1mContext is /\[1m\]/i; normalizeModelStringForAPI strips [1m]/[2m].
_ONE_M: Final = re.compile(r"\[1m\]", re.IGNORECASE)
_CONTEXT_SUFFIX: Final = re.compile(r"\[[12]m\]", re.IGNORECASE)
# reference 5.3: the default context window, and the 1M window of [1m] / the 1M beta.
DEFAULT_CONTEXT_WINDOW: Final = 200_000
ONE_M_CONTEXT_WINDOW: Final = 1_000_000
_BEDROCK_DEFAULT_GEO: Final = "us."


class ModelSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The model part of ``BuildSettings``: env overrides, read once by actors/config/from_env.py, and
    the catalog in force (the built-in one, or it merged with the upstream's ``/v1/models``)."""

    default_opus: str | None = None  # ANTHROPIC_DEFAULT_OPUS_MODEL
    default_sonnet: str | None = None  # ANTHROPIC_DEFAULT_SONNET_MODEL
    default_haiku: str | None = None  # ANTHROPIC_DEFAULT_HAIKU_MODEL
    default_fable: str | None = None  # ANTHROPIC_DEFAULT_FABLE_MODEL
    small_fast: str | None = None  # ANTHROPIC_SMALL_FAST_MODEL
    main_model: str | None = None  # ANTHROPIC_MODEL: used when a request names no model
    disable_legacy_remap: bool = False  # CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP
    disable_1m: bool = False  # CLAUDE_CODE_DISABLE_1M_CONTEXT
    # AWS_REGION (else AWS_DEFAULT_REGION): picks the geo prefix of Bedrock ids; None keeps "us.".
    bedrock_region: str | None = None
    catalog: Catalog = BUILTIN


class ResolvedModel(msgspec.Struct, frozen=True, kw_only=True):
    """``api_id``: the id sent upstream (no ``[1m]``); ``canonical``: the catalog key, or the
    id lower-cased for a model the catalog does not know; ``spec``: the catalog's entry (None:
    unknown); ``one_m``: the 1M-context beta and window apply."""

    api_id: str
    canonical: str
    one_m: bool
    spec: ModelSpec | None = None


def _override(settings: ModelSettings, alias: str) -> str | None:
    """docs/reference/reference-client-now.md 1: ANTHROPIC_DEFAULT_{OPUS,SONNET,HAIKU,FABLE}_MODEL replace
    what these aliases name."""
    return {
        "opus": settings.default_opus,
        "sonnet": settings.default_sonnet,
        "haiku": settings.default_haiku,
        "fable": settings.default_fable,
    }.get(alias)


def _provider_id(model_id: str, settings: ModelSettings, provider: str) -> str:
    """A first-party id (or catalog key) as ``provider`` names that model; any other id as is."""
    model = settings.catalog.first_party_model(model_id)
    if model is None:
        return model_id
    provider_id = model.id_for(provider)
    if provider_id is None:
        # The provider does not offer it (as far as the catalog knows): let the upstream say so.
        return model.first_party if provider == FIRST_PARTY and model.first_party else model_id
    if provider == BEDROCK and provider_id.startswith(_BEDROCK_DEFAULT_GEO) and settings.bedrock_region:
        geo = settings.catalog.bedrock_geo(settings.bedrock_region)
        if geo is not None:
            provider_id = f"{geo}.{provider_id.removeprefix(_BEDROCK_DEFAULT_GEO)}"
    return provider_id


def _alias(settings: ModelSettings, provider: str, alias: str, depth: int = 0) -> str | None:
    """What an alias stands for on ``provider`` (an override, or the catalog's target as a
    provider id, ``[1m]`` kept), or None when ``alias`` is not one."""
    target = _override(settings, alias) or settings.catalog.alias(provider, alias)
    if target is None:
        return None
    marker = "[1m]" if _ONE_M.search(target) else ""
    name = _CONTEXT_SUFFIX.sub("", target).strip()
    if depth < 8 and settings.catalog.alias(provider, name) is not None:
        inner = _alias(settings, provider, name, depth + 1)
        return None if inner is None else inner + marker
    return _provider_id(name, settings, provider) + marker


def _alias_id(settings: ModelSettings, provider: str, alias: str) -> str:
    resolved = _alias(settings, provider, alias)
    assert resolved is not None, f"the catalog has no {alias} alias for {provider}"
    return _CONTEXT_SUFFIX.sub("", resolved).strip()


def provider_model_id(model: str, settings: ModelSettings, provider: str) -> str:
    """A first-party model id in ``provider``'s form (its catalog id, in the region's geography
    on Bedrock); any other id unchanged."""
    return _provider_id(model, settings, provider)


def default_opus(settings: ModelSettings, provider: str) -> str:
    return _alias_id(settings, provider, "opus")


def default_sonnet(settings: ModelSettings, provider: str) -> str:
    return _alias_id(settings, provider, "sonnet")


def default_haiku(settings: ModelSettings, provider: str) -> str:
    return _alias_id(settings, provider, "haiku")


def small_fast_model(settings: ModelSettings, provider: str) -> str:
    """reference 5.3: ``ANTHROPIC_SMALL_FAST_MODEL || default Haiku``."""
    return settings.small_fast or default_haiku(settings, provider)


def resolve_model(requested: str, settings: ModelSettings, provider: str = FIRST_PARTY) -> ResolvedModel:
    """What a client asked for, as sent upstream (reference 5.3, docs/reference/reference-client-now.md 1).

    Aliases resolve per provider; a legacy Opus id goes to the ``opus`` alias on the first
    party; a first-party id (dated, or the API's alias) becomes the provider's id; anything
    else (a provider id, a custom name) is sent as given, in its own case.
    """
    one_m = bool(_ONE_M.search(requested)) and not settings.disable_1m
    base = _CONTEXT_SUFFIX.sub("", requested).strip()
    alias = base.lower()
    if alias == "default":
        # No model named: ANTHROPIC_MODEL (itself possibly an alias), else the default model.
        main = settings.main_model
        if main and main.strip().lower() not in ("default", "default[1m]"):
            chosen = resolve_model(main, settings, provider)
            return msgspec.structs.replace(chosen, one_m=chosen.one_m or one_m)
    catalog = settings.catalog
    aliased = _alias(settings, provider, alias)
    if aliased is not None:
        base = aliased
    else:
        model = catalog.first_party_model(base)
        if model is not None and model.legacy_remap and provider == FIRST_PARTY and not settings.disable_legacy_remap:
            base = default_opus(settings, provider)
        elif model is not None and provider != FIRST_PARTY:
            # The first party takes its own ids and aliases as given; a cloud needs its own id.
            base = _provider_id(base, settings, provider)
    # An alias or override may itself carry [1m] (ANTHROPIC_DEFAULT_SONNET_MODEL=claude-sonnet-4-6[1m]).
    one_m = one_m or (bool(_ONE_M.search(base)) and not settings.disable_1m)
    api_id = _CONTEXT_SUFFIX.sub("", base).strip()
    spec = catalog.model(api_id)
    return ResolvedModel(
        api_id=api_id, canonical=spec.key if spec is not None else api_id.lower(), one_m=one_m, spec=spec
    )


def context_window(model: ResolvedModel) -> int:
    """The model's context window: 1M with ``[1m]`` (or natively), else the catalog's, else
    the default 200K."""
    if model.one_m:
        return ONE_M_CONTEXT_WINDOW
    spec = model.spec
    return spec.context_window if spec is not None and spec.context_window else DEFAULT_CONTEXT_WINDOW


def output_limits(model_id: str, catalog: Catalog = BUILTIN) -> tuple[int | None, int | None]:
    """(default max output tokens, upper limit) of a model, any provider's id; None where the
    catalog does not know it (then nothing clamps)."""
    spec = catalog.model(model_id)
    if spec is None:
        return None, None
    return spec.max_output_default, spec.max_output
