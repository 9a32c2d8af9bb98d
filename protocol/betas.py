"""Which ``anthropic-beta`` values a request carries (docs/reference/reference-client.md 6, 7.4) (pure).

``request_betas`` applies each beta's rule (model, provider, query source, request content);
the latched ones (fast mode) come from the session's state, and the caller merges the
client's own betas and ``ANTHROPIC_BETAS`` without duplicates (``dedupe``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from protocol.models import catalog as C
from protocol.models.aliases import BEDROCK, FIRST_PARTY, FOUNDRY, VERTEX, ResolvedModel
from protocol.models.catalog import BUILTIN, Catalog, ModelSpec

# docs/reference/reference-client.md 6: the beta values.
CLAUDE_CODE: Final = "claude-code-20250219"
OAUTH: Final = "oauth-2025-04-20"
CONTEXT_1M: Final = "context-1m-2025-08-07"
INTERLEAVED_THINKING: Final = "interleaved-thinking-2025-05-14"
REDACT_THINKING: Final = "redact-thinking-2026-02-12"
CONTEXT_MANAGEMENT: Final = "context-management-2025-06-27"
STRUCTURED_OUTPUTS: Final = "structured-outputs-2025-12-15"
WEB_SEARCH: Final = "web-search-2025-03-05"
PROMPT_CACHING_SCOPE: Final = "prompt-caching-scope-2026-01-05"
TOOL_SEARCH_1P: Final = "advanced-tool-use-2025-11-20"
TOOL_SEARCH_3P: Final = "tool-search-tool-2025-10-19"
EFFORT: Final = "effort-2025-11-24"
TASK_BUDGETS: Final = "task-budgets-2026-03-13"
FAST_MODE: Final = "fast-mode-2026-02-01"
ADVISOR: Final = "advisor-tool-2026-03-01"
# reference 6: Bedrock takes these in the body's ``anthropic_beta``, not the header.
BEDROCK_BODY_BETAS: Final = frozenset({INTERLEAVED_THINKING, CONTEXT_1M, TOOL_SEARCH_3P})
# reference 6: Vertex count_tokens accepts only these; any other gives a 400.
VERTEX_COUNT_TOKENS_BETAS: Final = frozenset({CLAUDE_CODE, INTERLEAVED_THINKING, CONTEXT_MANAGEMENT})
# reference 8 (advisor): the query sources that count as agentic.
_AGENTIC_PREFIXES: Final = ("repl_main_thread", "agent:", "sdk", "hook_agent", "verification_agent")


def is_agentic(source: str) -> bool:
    return source.startswith(_AGENTIC_PREFIXES)


def first_party_only_allowed(provider: str, disable_experimental: bool) -> bool:
    """reference 6 ``shouldIncludeFirstPartyOnlyBetas``: 1P or Foundry, no kill switch."""
    return provider in (FIRST_PARTY, FOUNDRY) and not disable_experimental


def is_claude_3(spec: ModelSpec | None) -> bool:
    """A Claude 3 model (the catalog's generation); an unknown model is a current one."""
    return spec is not None and spec.claude_3


def supports_interleaved_thinking(spec: ModelSpec | None, provider: str, unknown: frozenset[str] = frozenset()) -> bool:
    """docs/reference/reference-client-now.md 4: non-claude-3; on Bedrock and Vertex not Haiku 4.5 (the
    catalog's ``interleaved_thinking_3p``; ``unknown``: what an unknown model is assumed to
    support). Foundry: always (reference 6 ``modelSupportsISP``)."""
    if provider == FOUNDRY:
        return True
    if is_claude_3(spec):
        return False
    if provider == FIRST_PARTY:
        return True
    capabilities = spec.capabilities if spec is not None else unknown
    return C.INTERLEAVED_THINKING_3P in capabilities


def supports_effort(spec: ModelSpec | None) -> bool:
    """The model takes ``output_config.effort`` (the catalog's ``effort``); unknown: no."""
    return spec is not None and spec.has(C.EFFORT)


def tool_search_beta(provider: str) -> str:
    """reference 6: the 1P name on the first party and Foundry, the 3P name on the clouds."""
    return TOOL_SEARCH_3P if provider in (BEDROCK, VERTEX) else TOOL_SEARCH_1P


def request_betas(
    *,
    model: ResolvedModel,
    provider: str,
    source: str,
    disable_experimental: bool,
    disable_interleaved_thinking: bool,
    tool_search: bool,
    structured_output: bool,
    task_budget: bool,
    advisor: bool,
    catalog: Catalog = BUILTIN,
) -> list[str]:
    """The betas of reference 6 for one request, in the reference's order (no latches).

    Model rules come from the catalog entry (``model.spec``); an unknown model is a current
    one with the catalog's ``unknown_capabilities``."""
    spec = model.spec
    first_party_only = first_party_only_allowed(provider, disable_experimental)
    betas: list[str] = []
    if not catalog.is_small_fast(spec) or is_agentic(source):
        betas.append(CLAUDE_CODE)
    if model.one_m:
        betas.append(CONTEXT_1M)
    if supports_interleaved_thinking(spec, provider, catalog.unknown_capabilities) and not disable_interleaved_thinking:
        betas.append(INTERLEAVED_THINKING)
    if first_party_only and not is_claude_3(spec):
        betas.append(CONTEXT_MANAGEMENT)
    if structured_output and (provider in (FIRST_PARTY, FOUNDRY)):
        betas.append(STRUCTURED_OUTPUTS)
    if (provider == VERTEX and not is_claude_3(spec)) or provider == FOUNDRY:
        betas.append(WEB_SEARCH)
    if first_party_only:
        betas.append(PROMPT_CACHING_SCOPE)
    if tool_search:
        betas.append(tool_search_beta(provider))
    if supports_effort(spec) and not disable_experimental:
        betas.append(EFFORT)
    if task_budget and provider in (FIRST_PARTY, FOUNDRY):
        betas.append(TASK_BUDGETS)
    if advisor:
        betas.append(ADVISOR)
    return betas


def dedupe(*groups: Iterable[str]) -> list[str]:
    """The betas of every group, in order, each once; blanks dropped."""
    seen: list[str] = []
    for group in groups:
        for beta in group:
            beta = beta.strip()
            if beta and beta not in seen:
                seen.append(beta)
    return seen


def parse_betas(raw: str) -> list[str]:
    """A comma-separated list (``ANTHROPIC_BETAS``, an ``anthropic-beta`` header)."""
    return dedupe(raw.split(","))


def count_tokens_betas(betas: Iterable[str], provider: str) -> list[str]:
    """reference 6: Vertex count_tokens takes only its allow-list."""
    kept = list(betas)
    if provider == VERTEX:
        return [b for b in kept if b in VERTEX_COUNT_TOKENS_BETAS]
    return kept


def split_beta_header(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """A client's headers without ``anthropic-beta``, and the betas it carried."""
    betas: list[str] = []
    rest: list[tuple[str, str]] = []
    for name, value in headers:
        if name.lower() == "anthropic-beta":
            betas.extend(parse_betas(value))
        else:
            rest.append((name, value))
    return tuple(rest), tuple(betas)


def with_beta_header(headers: tuple[tuple[str, str], ...], betas: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """docs/reference/reference-client.md 6: the beta header is sent only when the list is non-empty."""
    return headers + ((("anthropic-beta", ",".join(betas)),) if betas else ())
