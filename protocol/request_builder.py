"""Builds each upstream request the way the reference client does (docs/reference/reference-client.md 5.3,
6, 7, 8) (pure).

Input: the client's request body, the query's source and options, the session's latched
state (``SessionLatch``) and ``BuildSettings`` (made once from the environment by
actors/config/from_env.py). Output: a ``BuiltRequest`` (the model to send, the body, the betas,
notes for log lines, the prompt snapshot for cache-break detection) and the session's new
latch. Every ``BuiltRequest`` owns its body: nothing in it is shared with the client's
request, the settings (``CLAUDE_CODE_EXTRA_BODY``) or another request.

The output is first-party shaped: the provider only picks model ids and betas here;
turning the request into a provider's wire format (Bedrock's body betas, URLs, auth) is
the provider layer's job (issue 6).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from protocol import betas as B
from protocol.caching import PromptSnapshot, add_breakpoints, snapshot
from protocol.message_repair import limit_media, repair_tool_pairing
from protocol.models.aliases import (
    FIRST_PARTY,
    FOUNDRY,
    ModelSettings,
    ResolvedModel,
    default_opus,
    default_sonnet,
    resolve_model,
    small_fast_model,
)
from protocol.models.catalog import ADVISOR, EFFORT, XHIGH
from protocol.wire import JsonObject

# reference 7.4 and issue 5: betas that stay on for the rest of a session once sent, so that a
# feature toggled off later does not change the cache key.
LATCHED_BETAS: Final = frozenset(
    {B.FAST_MODE, B.TOOL_SEARCH_1P, B.TOOL_SEARCH_3P, B.STRUCTURED_OUTPUTS, B.TASK_BUDGETS, B.ADVISOR}
)
_ADVISOR_TOOL_TYPE: Final = "advisor_20260301"
_encode: Final = msgspec.json.Encoder()
_decode: Final = msgspec.json.Decoder()


def _deep_copy(value: Any) -> Any:
    """A deep copy of a JSON value: a msgspec round trip, several times faster than
    ``copy.deepcopy`` on a long conversation."""
    return _decode.decode(_encode.encode(value))


# The smallest thinking budget the API accepts (docs/reference/wire.md 1.2: ``budget_tokens`` >= 1024).
MIN_THINKING_BUDGET: Final = 1024


class BuildSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything request construction reads from the environment, read once."""

    provider: str = FIRST_PARTY
    models: ModelSettings = ModelSettings()
    extra_betas: tuple[str, ...] = ()  # ANTHROPIC_BETAS
    disable_experimental_betas: bool = False  # CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS
    disable_interleaved_thinking: bool = False  # DISABLE_INTERLEAVED_THINKING
    extra_body: JsonObject = msgspec.field(default_factory=dict)  # CLAUDE_CODE_EXTRA_BODY
    disable_prompt_caching: bool = False  # DISABLE_PROMPT_CACHING
    disable_prompt_caching_haiku: bool = False
    disable_prompt_caching_sonnet: bool = False
    disable_prompt_caching_opus: bool = False
    prompt_caching_1h: bool = False  # ENABLE_PROMPT_CACHING_1H (or _BEDROCK on Bedrock)
    force_prompt_caching_5m: bool = False  # FORCE_PROMPT_CACHING_5M
    max_output_tokens: int | None = None  # CLAUDE_CODE_MAX_OUTPUT_TOKENS
    disable_thinking: bool = False  # CLAUDE_CODE_DISABLE_THINKING
    advisor_model: str | None = None  # SWITCHBOARD_ADVISOR_MODEL, off by CLAUDE_CODE_DISABLE_ADVISOR_TOOL
    # ENABLE_TOOL_SEARCH (reference 8): off with false/auto:100, and by default behind a
    # non-Anthropic ANTHROPIC_BASE_URL; off, deferred tools are sent as ordinary ones.
    tool_search: bool = True


class SessionLatch(msgspec.Struct, frozen=True, kw_only=True):
    """A session's request-construction latches (reference 7.3, 7.4)."""

    betas: tuple[str, ...] = ()
    ttl_1h: bool | None = None


class BuiltRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One upstream request: ``model`` as sent, ``body`` (its own), ``betas`` for the
    ``anthropic-beta`` header, ``notes`` for log lines, ``snapshot`` for cache-break checks."""

    model: str
    resolved: ResolvedModel
    body: JsonObject
    betas: list[str]
    notes: list[str]
    snapshot: PromptSnapshot


def _caching_enabled(model: str, settings: BuildSettings) -> bool:
    """reference 7.1."""
    if settings.disable_prompt_caching:
        return False
    provider, models = settings.provider, settings.models
    if settings.disable_prompt_caching_haiku and model == small_fast_model(models, provider):
        return False
    if settings.disable_prompt_caching_sonnet and model == default_sonnet(models, provider):
        return False
    return not (settings.disable_prompt_caching_opus and model == default_opus(models, provider))


def _thinking_on(body: JsonObject) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _structured_output(body: JsonObject) -> bool:
    output_config = body.get("output_config")
    if isinstance(output_config, dict) and output_config.get("format") is not None:
        return True
    if body.get("output_format") is not None:
        return True
    return any(isinstance(t, dict) and t.get("strict") is True for t in body.get("tools") or [])


def _task_budget(body: JsonObject) -> bool:
    output_config = body.get("output_config")
    return isinstance(output_config, dict) and output_config.get("task_budget") is not None


def _advisor_on(model: ResolvedModel, settings: BuildSettings) -> bool:
    """reference 8 (advisor): both models must have the catalog's ``advisor`` capability."""
    advisor = settings.advisor_model
    if advisor is None or settings.provider not in (FIRST_PARTY, FOUNDRY):
        return False
    advisor_spec = settings.models.catalog.model(advisor)
    return (
        model.spec is not None
        and model.spec.has(ADVISOR)
        and advisor_spec is not None
        and advisor_spec.has(ADVISOR)
    )


def _lower_effort(body: JsonObject, model: ResolvedModel, notes: list[str]) -> None:
    """docs/reference/reference-client-now.md 5: ``xhigh`` is lowered to ``high`` on a model the catalog
    knows to take effort but not ``xhigh``. An unknown model gets what the client sent."""
    output_config = body.get("output_config")
    spec = model.spec
    if (
        isinstance(output_config, dict)
        and output_config.get("effort") == XHIGH
        and spec is not None
        and spec.has(EFFORT)
        and not spec.has(XHIGH)
    ):
        body["output_config"] = {**output_config, "effort": "high"}
        notes.append(f"effort xhigh lowered to high ({model.api_id} has no xhigh)")


def build_request(
    request: JsonObject,
    *,
    settings: BuildSettings,
    latch: SessionLatch,
    source: str = "sdk",
    model: str | None = None,
    max_tokens: int | None = None,
    fast: bool = False,
    fast_requested: bool = False,
    client_betas: tuple[str, ...] = (),
    stream: bool = True,
    count_only: bool = False,
) -> tuple[BuiltRequest, SessionLatch]:
    """Build one upstream request and the session's new latch.

    ``model``: the model of this attempt (a fallback's), else the request's; ``max_tokens``
    overrides the request's (a context-overflow retry); ``fast``: fast mode is on for this
    attempt (``speed: "fast"``), and its absence removes a ``speed`` the client sent;
    ``fast_requested``: the query asked for fast mode (its beta is latched even when a
    cooldown keeps ``speed`` off); ``client_betas``: the client's own ``anthropic-beta``;
    ``count_only``: a count_tokens body (no ``max_tokens``, ``stream`` or caching marks).
    """
    provider = settings.provider
    notes: list[str] = []
    resolved = resolve_model(model if model is not None else str(request.get("model", "default")), settings.models, provider)
    # Deep copies: the body shares nothing with the client's request or the settings.
    body: JsonObject = _deep_copy(request)
    body["model"] = resolved.api_id
    if resolved.api_id != request.get("model"):
        notes.append(f"model {request.get('model')!r} sent as {resolved.api_id!r}")
    _repair_messages(body, notes)
    tool_search, advisor = _shape_tools(body, resolved, settings, source=source, count_only=count_only, notes=notes)

    if settings.disable_thinking and "thinking" in body:
        del body["thinking"]
    if _thinking_on(body):
        # reference 6: temperature is sent only when thinking is off.
        body.pop("temperature", None)

    _lower_effort(body, resolved, notes)

    _send_fields(body, resolved, settings, count_only=count_only, max_tokens=max_tokens, stream=stream, fast=fast, notes=notes)
    betas, new_latched = _betas(
        body, resolved, settings, latch, source=source, tool_search=tool_search, advisor=advisor,
        fast_requested=fast_requested, client_betas=client_betas, notes=notes,
    )

    ttl_1h = latch.ttl_1h
    if ttl_1h is None:
        ttl_1h = settings.prompt_caching_1h and not settings.force_prompt_caching_5m
    if not count_only and _caching_enabled(resolved.api_id, settings):
        add_breakpoints(body, ttl_1h=ttl_1h)

    # reference 6: CLAUDE_CODE_EXTRA_BODY is spread over the body last.
    extra: JsonObject = _deep_copy(settings.extra_body)
    body.update(extra)

    new_latch = SessionLatch(betas=tuple(new_latched), ttl_1h=ttl_1h)
    built = BuiltRequest(
        model=resolved.api_id,
        resolved=resolved,
        body=body,
        betas=betas,
        notes=notes,
        snapshot=snapshot(body, betas, fast_mode=B.FAST_MODE in new_latched, extra_body=settings.extra_body),
    )
    return built, new_latch


def _repair_messages(body: JsonObject, notes: list[str]) -> None:
    """Tool pairing repaired and the oldest media dropped past the API's limit (reference 8)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    messages, added, dropped = repair_tool_pairing(messages)
    if added or dropped:
        notes.append(f"tool pairing repaired: {added} synthetic tool_result(s) added, {dropped} orphan(s) dropped")
    messages, media_dropped = limit_media(messages)
    if media_dropped:
        notes.append(f"{media_dropped} oldest media block(s) dropped (limit 100 per request)")
    body["messages"] = messages


def _shape_tools(
    body: JsonObject, resolved: ResolvedModel, settings: BuildSettings, *, source: str, count_only: bool, notes: list[str]
) -> tuple[bool, bool]:
    """Deferred tools and the advisor tool; returns (tool search on, advisor on).

    Deferred tools need tool search; without it (kill switch, Haiku) they are sent as
    ordinary tools (reference 8)."""
    tools = body.get("tools")
    deferred = isinstance(tools, list) and any(isinstance(t, dict) and t.get("defer_loading") for t in tools)
    tool_search = (
        deferred
        and settings.tool_search
        and not settings.disable_experimental_betas
        and not settings.models.catalog.is_small_fast(resolved.spec)
    )
    if deferred and not tool_search and isinstance(tools, list):
        body["tools"] = [{k: v for k, v in t.items() if k != "defer_loading"} if isinstance(t, dict) else t for t in tools]
        notes.append("tool search off: defer_loading removed from tools")
    advisor = _advisor_on(resolved, settings)
    if advisor and B.is_agentic(source) and not count_only:
        tool_list = list(body.get("tools") or [])
        tool_list.append({"type": _ADVISOR_TOOL_TYPE, "name": "advisor", "model": settings.advisor_model})
        body["tools"] = tool_list
    return tool_search, advisor


def _send_fields(
    body: JsonObject, resolved: ResolvedModel, settings: BuildSettings, *,
    count_only: bool, max_tokens: int | None, stream: bool, fast: bool, notes: list[str],
) -> None:
    """``max_tokens``, ``stream`` and ``speed`` as this attempt sends them (none of them in a
    count_tokens body)."""
    if count_only:
        for field in ("max_tokens", "stream", "speed"):
            body.pop(field, None)
    else:
        _limit_output(body, resolved, settings, max_tokens=max_tokens, notes=notes)
        body["stream"] = stream
        if fast:
            body["speed"] = "fast"
        else:
            body.pop("speed", None)


def _betas(
    body: JsonObject, resolved: ResolvedModel, settings: BuildSettings, latch: SessionLatch, *,
    source: str, tool_search: bool, advisor: bool, fast_requested: bool, client_betas: tuple[str, ...],
    notes: list[str],
) -> tuple[list[str], list[str]]:
    """The betas to send and the session's latched betas after this request (reference 7.4);
    ``context_management`` leaves the body when its beta is not sent."""
    rule_betas = B.request_betas(
        model=resolved,
        provider=settings.provider,
        source=source,
        disable_experimental=settings.disable_experimental_betas,
        disable_interleaved_thinking=settings.disable_interleaved_thinking,
        tool_search=tool_search,
        structured_output=_structured_output(body),
        task_budget=_task_budget(body),
        advisor=advisor,
        catalog=settings.models.catalog,
    )
    if fast_requested:
        rule_betas.append(B.FAST_MODE)
    new_latched = B.dedupe(latch.betas, (b for b in rule_betas if b in LATCHED_BETAS))
    betas = B.dedupe(rule_betas, new_latched, settings.extra_betas, client_betas)
    if B.CONTEXT_MANAGEMENT not in betas and "context_management" in body:
        # reference 6: the body field only goes with its beta.
        del body["context_management"]
        notes.append("context_management dropped: its beta is not sent")
    return betas, new_latched


def _limit_output(
    body: JsonObject, resolved: ResolvedModel, settings: BuildSettings, *, max_tokens: int | None, notes: list[str]
) -> None:
    """``max_tokens`` clamped to what is known for certain, then overridden by ``max_tokens``
    (a context-overflow retry); a thinking budget kept below it.

    Only a limit the gateway knows for certain clamps: the catalog's (or the upstream's
    /v1/models) and CLAUDE_CODE_MAX_OUTPUT_TOKENS. An unknown model is never clamped."""
    limit = resolved.spec.max_output if resolved.spec is not None else None
    caps = [n for n in (limit, settings.max_output_tokens) if n]
    asked = body.get("max_tokens")
    if caps and isinstance(asked, int) and asked > min(caps):
        cap = min(caps)
        body["max_tokens"] = cap
        why = "CLAUDE_CODE_MAX_OUTPUT_TOKENS" if cap == settings.max_output_tokens else f"{resolved.api_id} limit"
        notes.append(f"max_tokens {asked} clamped to {cap} ({why})")
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    thinking = body.get("thinking")
    final_max = body.get("max_tokens")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled" and isinstance(final_max, int):
        budget = thinking.get("budget_tokens")
        # Never below the API's minimum budget (1024; a smaller one is a 400 of its own):
        # then the budget goes as sent, which the API takes with interleaved thinking and
        # otherwise refuses naming the real problem.
        if isinstance(budget, int) and budget >= final_max and final_max - 1 >= MIN_THINKING_BUDGET:
            body["thinking"] = {**thinking, "budget_tokens": final_max - 1}


def count_tokens_request(
    request: JsonObject,
    *,
    settings: BuildSettings,
    latch: SessionLatch | None = None,
    client_betas: tuple[str, ...] = (),
) -> BuiltRequest:
    """A count_tokens request through the same construction; Vertex keeps only its
    allow-list of betas (reference 6). The latch is read, never changed."""
    built, _ = build_request(
        request,
        settings=settings,
        latch=latch if latch is not None else SessionLatch(),
        client_betas=client_betas,
        count_only=True,
        stream=False,
    )
    return msgspec.structs.replace(built, betas=B.count_tokens_betas(built.betas, settings.provider))
