"""Model aliases, per-provider model ids and limits (reference-client.md 5.3) (pure).

``resolve_model`` turns what a client asked for (an alias, a ``[1m]`` suffix, a legacy id)
into the id sent upstream for a provider, and says whether the 1M-context beta applies.
``output_limits`` and ``context_window`` give a model's token limits.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

# reference-client.md 5.2: the four providers.
FIRST_PARTY: Final = "firstParty"
BEDROCK: Final = "bedrock"
VERTEX: Final = "vertex"
FOUNDRY: Final = "foundry"
PROVIDERS: Final = (FIRST_PARTY, BEDROCK, VERTEX, FOUNDRY)

# reference-client.md 5.3: has1mContext is /\[1m\]/i; normalizeModelStringForAPI strips [1m]/[2m].
_ONE_M: Final = re.compile(r"\[1m\]", re.IGNORECASE)
_CONTEXT_SUFFIX: Final = re.compile(r"\[[12]m\]", re.IGNORECASE)

# Canonical (first-party) ids, and their ids per provider: (firstParty, bedrock, vertex, foundry).
OPUS_4_6: Final = "claude-opus-4-6"
SONNET_4_6: Final = "claude-sonnet-4-6"
SONNET_4_5: Final = "claude-sonnet-4-5-20250929"
HAIKU_4_5: Final = "claude-haiku-4-5-20251001"
_PROVIDER_IDS: Final[dict[str, tuple[str, str, str, str]]] = {
    OPUS_4_6: (OPUS_4_6, "us.anthropic.claude-opus-4-6-v1", OPUS_4_6, OPUS_4_6),
    SONNET_4_6: (SONNET_4_6, "us.anthropic.claude-sonnet-4-6", SONNET_4_6, SONNET_4_6),
    SONNET_4_5: (
        SONNET_4_5, "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5@20250929", "claude-sonnet-4-5",
    ),
    HAIKU_4_5: (HAIKU_4_5, "us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5@20251001", "claude-haiku-4-5"),
    "claude-3-7-sonnet-20250219": (
        "claude-3-7-sonnet-20250219", "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
        "claude-3-7-sonnet@20250219", "claude-3-7-sonnet",
    ),
    # reference 5.3: the 3.5 Sonnet v2 Bedrock id has no "us." prefix.
    "claude-3-5-sonnet-20241022": (
        "claude-3-5-sonnet-20241022", "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet",
    ),
    "claude-3-5-haiku-20241022": (
        "claude-3-5-haiku-20241022", "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "claude-3-5-haiku@20241022", "claude-3-5-haiku",
    ),
    "claude-sonnet-4-20250514": (
        "claude-sonnet-4-20250514", "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "claude-sonnet-4@20250514", "claude-sonnet-4",
    ),
    "claude-opus-4-20250514": (
        "claude-opus-4-20250514", "us.anthropic.claude-opus-4-20250514-v1:0", "claude-opus-4@20250514", "claude-opus-4",
    ),
    "claude-opus-4-1-20250805": (
        "claude-opus-4-1-20250805", "us.anthropic.claude-opus-4-1-20250805-v1:0",
        "claude-opus-4-1@20250805", "claude-opus-4-1",
    ),
    "claude-opus-4-5-20251101": (
        "claude-opus-4-5-20251101", "us.anthropic.claude-opus-4-5-20251101-v1:0",
        "claude-opus-4-5@20251101", "claude-opus-4-5",
    ),
}
# reference 5.3: explicit legacy Opus ids are remapped to the default Opus on the first party.
LEGACY_OPUS: Final = frozenset(
    {"claude-opus-4-20250514", "claude-opus-4-1-20250805", "claude-opus-4-0", "claude-opus-4-1"}
)
# reference 5.3: the default context window, and the 1M window of [1m] / the 1M beta.
DEFAULT_CONTEXT_WINDOW: Final = 200_000
ONE_M_CONTEXT_WINDOW: Final = 1_000_000
# reference 5.3: (substring of the canonical id, default max output, limit), most specific first.
_OUTPUT_LIMITS: Final = (
    ("opus-4-6", 64_000, 128_000),
    ("sonnet-4-6", 32_000, 128_000),
    ("opus-4-5", 32_000, 64_000),
    ("opus-4-1", 32_000, 32_000),
    ("opus-4", 32_000, 32_000),
    ("sonnet-4", 32_000, 64_000),
    ("haiku-4", 32_000, 64_000),
    ("3-7-sonnet", 32_000, 64_000),
    ("3-5-sonnet", 8_192, 8_192),
    ("3-5-haiku", 8_192, 8_192),
    ("claude-3-opus", 4_096, 4_096),
    ("claude-3-haiku", 4_096, 4_096),
)
# reference 5.3: the fallback when no entry matches.
_FALLBACK_LIMITS: Final = (32_000, 64_000)


class ModelSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The model part of ``BuildSettings``: env overrides, read once by actors/config.py."""

    default_opus: str | None = None  # ANTHROPIC_DEFAULT_OPUS_MODEL
    default_sonnet: str | None = None  # ANTHROPIC_DEFAULT_SONNET_MODEL
    default_haiku: str | None = None  # ANTHROPIC_DEFAULT_HAIKU_MODEL
    small_fast: str | None = None  # ANTHROPIC_SMALL_FAST_MODEL
    main_model: str | None = None  # ANTHROPIC_MODEL: used when a request names no model
    disable_legacy_remap: bool = False  # CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP
    disable_1m: bool = False  # CLAUDE_CODE_DISABLE_1M_CONTEXT


class ResolvedModel(msgspec.Struct, frozen=True, kw_only=True):
    """``api_id``: the id sent upstream (no ``[1m]``); ``canonical``: the first-party id the
    rules look at; ``one_m``: the 1M-context beta and window apply."""

    api_id: str
    canonical: str
    one_m: bool


def _provider_id(canonical: str, provider: str) -> str:
    ids = _PROVIDER_IDS.get(canonical)
    if ids is None or provider not in PROVIDERS:
        return canonical
    return ids[PROVIDERS.index(provider)]


def provider_model_id(model: str, provider: str) -> str:
    """A first-party model id in ``provider``'s form; any other id unchanged."""
    return _provider_id(model, provider)


def default_opus(settings: ModelSettings, provider: str) -> str:
    return settings.default_opus or _provider_id(OPUS_4_6, provider)


def default_sonnet(settings: ModelSettings, provider: str) -> str:
    # reference 5.3: third parties default to Sonnet 4.5.
    return settings.default_sonnet or _provider_id(SONNET_4_6 if provider == FIRST_PARTY else SONNET_4_5, provider)


def default_haiku(settings: ModelSettings, provider: str) -> str:
    return settings.default_haiku or _provider_id(HAIKU_4_5, provider)


def small_fast_model(settings: ModelSettings, provider: str) -> str:
    """reference 5.3: ``ANTHROPIC_SMALL_FAST_MODEL || default Haiku``."""
    return settings.small_fast or default_haiku(settings, provider)


def _canonical(api_id: str) -> str:
    """The first-party id of a provider id (the rules match on it)."""
    lowered = api_id.lower()
    for canonical, ids in _PROVIDER_IDS.items():
        if lowered in (i.lower() for i in ids):
            return canonical
    return lowered


def resolve_model(requested: str, settings: ModelSettings, provider: str = FIRST_PARTY) -> ResolvedModel:
    """What a client asked for, as sent upstream (reference 5.3). Custom names keep their case."""
    one_m = bool(_ONE_M.search(requested)) and not settings.disable_1m
    base = _CONTEXT_SUFFIX.sub("", requested).strip()
    alias = base.lower()
    if alias == "default":
        # No model named: ANTHROPIC_MODEL (itself possibly an alias), else the default Sonnet.
        main = settings.main_model
        if main and main.strip().lower() not in ("default", "default[1m]"):
            chosen = resolve_model(main, settings, provider)
            return msgspec.structs.replace(chosen, one_m=chosen.one_m or one_m)
        base = default_sonnet(settings, provider)
    if alias == "sonnet":
        base = default_sonnet(settings, provider)
    elif alias in ("opus", "best"):
        base = default_opus(settings, provider)
    elif alias == "haiku":
        base = default_haiku(settings, provider)
    elif alias == "opusplan":
        # Plan mode is a client-side notion: outside it, opusplan is Sonnet.
        base = default_sonnet(settings, provider)
    elif alias in LEGACY_OPUS and provider == FIRST_PARTY and not settings.disable_legacy_remap:
        base = default_opus(settings, provider)
    elif alias in _PROVIDER_IDS:
        base = _provider_id(alias, provider)
    # An override may itself carry [1m] (ANTHROPIC_DEFAULT_SONNET_MODEL=claude-sonnet-4-6[1m]).
    one_m = one_m or (bool(_ONE_M.search(base)) and not settings.disable_1m)
    api_id = _CONTEXT_SUFFIX.sub("", base).strip()
    return ResolvedModel(api_id=api_id, canonical=_canonical(api_id), one_m=one_m)


def supports_1m(canonical: str) -> bool:
    """reference 5.3 ``modelSupports1M``."""
    return "claude-sonnet-4" in canonical or "opus-4-6" in canonical


def context_window(model: ResolvedModel) -> int:
    return ONE_M_CONTEXT_WINDOW if model.one_m else DEFAULT_CONTEXT_WINDOW


def output_limits(canonical: str) -> tuple[int, int]:
    """(default max output tokens, upper limit) of a model (reference 5.3)."""
    lowered = canonical.lower()
    for needle, default, limit in _OUTPUT_LIMITS:
        if needle in lowered:
            return default, limit
    return _FALLBACK_LIMITS


def is_haiku(canonical: str) -> bool:
    return "haiku" in canonical.lower()


def is_claude_3(canonical: str) -> bool:
    return "claude-3-" in canonical.lower()


def is_claude_4_plus(canonical: str) -> bool:
    """Claude 4 and later: every Claude model that is not a Claude 3 (or 2)."""
    lowered = canonical.lower()
    return "claude" in lowered and not re.search(r"claude-(instant|2|3)\b|claude-[23]-", lowered)
