"""The types of the model catalog (protocol/models/catalog.py): providers, capability names, prices
and one model's entry (pure). ``protocol.models.catalog`` re-exports every name here."""

from __future__ import annotations

from typing import Final, Literal

import msgspec

PICO_PER_USD: Final = 10**12
# $/Mtok -> picodollars per token: USD * 1e12 / 1e6.
PICO_PER_TOKEN_PER_USD_MTOK: Final = 10**6
# The four providers (docs/reference/reference-client.md 5.2).
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
