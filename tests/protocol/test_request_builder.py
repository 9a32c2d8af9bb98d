"""Request construction (protocol/request_builder.py): golden bodies and betas (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import betas as B
from protocol.message_repair import repair_tool_pairing
from protocol.models.aliases import ModelSettings, output_limits, resolve_model
from protocol.request_builder import (
    BuildSettings,
    BuiltRequest,
    SessionLatch,
    build_request,
    count_tokens_request,
)

FIRST = BuildSettings()
NO_CACHE = BuildSettings(disable_prompt_caching=True)
EPHEMERAL = {"type": "ephemeral"}
# The betas every plain first-party Sonnet/Opus 4.6 request carries (reference 6).
SONNET_BETAS = [B.CLAUDE_CODE, B.INTERLEAVED_THINKING, B.CONTEXT_MANAGEMENT, B.PROMPT_CACHING_SCOPE, B.EFFORT]


def chat(text: str = "Hello", model: str = "claude-sonnet-4-6", **fields: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 1024, "messages": [{"role": "user", "content": text}], **fields}


def build(
    request: dict[str, Any], settings: BuildSettings = FIRST, latch: SessionLatch | None = None, **kw: Any
) -> tuple[BuiltRequest, SessionLatch]:
    return build_request(request, settings=settings, latch=latch or SessionLatch(), **kw)


def test_plain_chat_golden() -> None:
    request = chat(system="You are terse.", temperature=0.5)
    built, latch = build(request)
    assert built.model == "claude-sonnet-4-6"
    assert built.betas == SONNET_BETAS
    assert built.body == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello", "cache_control": EPHEMERAL}]}],
        "system": [{"type": "text", "text": "You are terse.", "cache_control": EPHEMERAL}],
        "temperature": 0.5,
        "stream": True,
    }
    assert latch == SessionLatch(betas=(), ttl_1h=False)
    # The client's request is untouched.
    assert request == chat(system="You are terse.", temperature=0.5)


@pytest.mark.parametrize(
    ("requested", "api_id", "one_m"),
    [
        # docs/reference/reference-client-now.md 1: the first party's aliases.
        ("sonnet", "claude-sonnet-5", False),
        ("opus", "claude-opus-4-8", False),
        ("best", "claude-fable-5", False),
        ("fable", "claude-fable-5", False),
        ("haiku", "claude-haiku-4-5-20251001", False),
        ("opusplan", "claude-sonnet-5", False),
        ("default", "claude-opus-4-8", True),
        ("sonnet[1m]", "claude-sonnet-5", True),
        ("opus[1M]", "claude-opus-4-8", True),
        ("claude-opus-4-1-20250805", "claude-opus-4-8", False),
        ("claude-opus-4-0", "claude-opus-4-8", False),
        ("My-Custom-Deployment", "My-Custom-Deployment", False),
    ],
)
def test_first_party_aliases(requested: str, api_id: str, one_m: bool) -> None:
    resolved = resolve_model(requested, ModelSettings())
    assert (resolved.api_id, resolved.one_m) == (api_id, one_m)


def test_env_model_overrides_and_opt_outs() -> None:
    models = ModelSettings(
        default_sonnet="claude-sonnet-4-5-20250929",
        default_opus="claude-opus-4-5-20251101",
        main_model="opus[1m]",
        disable_legacy_remap=True,
    )
    assert resolve_model("sonnet", models).api_id == "claude-sonnet-4-5-20250929"
    assert resolve_model("opus", models).api_id == "claude-opus-4-5-20251101"
    assert resolve_model("claude-opus-4-1-20250805", models).api_id == "claude-opus-4-1-20250805"
    main = resolve_model("default", models)
    assert (main.api_id, main.one_m) == ("claude-opus-4-5-20251101", True)
    assert not resolve_model("sonnet[1m]", ModelSettings(disable_1m=True)).one_m
    small = BuildSettings(models=ModelSettings(small_fast="claude-3-5-haiku-20241022"))
    assert resolve_model("haiku", small.models).api_id == "claude-haiku-4-5-20251001"


@pytest.mark.parametrize(
    ("provider", "alias", "api_id", "betas"),
    [
        ("bedrock", "sonnet", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", [B.CLAUDE_CODE, B.INTERLEAVED_THINKING]),
        ("bedrock", "opus[1m]", "us.anthropic.claude-opus-4-6-v1", [B.CLAUDE_CODE, B.CONTEXT_1M, B.INTERLEAVED_THINKING, B.EFFORT]),
        ("vertex", "sonnet", "claude-sonnet-4-5@20250929", [B.CLAUDE_CODE, B.INTERLEAVED_THINKING, B.WEB_SEARCH]),
        ("vertex", "haiku", "claude-haiku-4-5@20251001", [B.CLAUDE_CODE, B.WEB_SEARCH]),
        (
            "foundry",
            "sonnet",
            "claude-sonnet-4-5",
            [B.CLAUDE_CODE, B.INTERLEAVED_THINKING, B.CONTEXT_MANAGEMENT, B.WEB_SEARCH, B.PROMPT_CACHING_SCOPE],
        ),
        # Legacy ids are remapped on the first party only.
        ("vertex", "claude-opus-4-1-20250805", "claude-opus-4-1@20250805", [B.CLAUDE_CODE, B.INTERLEAVED_THINKING, B.WEB_SEARCH]),
    ],
)
def test_each_provider_shapes_model_id_and_betas(provider: str, alias: str, api_id: str, betas: list[str]) -> None:
    built, _ = build(chat(model=alias), BuildSettings(provider=provider))
    assert built.model == built.body["model"] == api_id
    assert built.betas == betas


def test_one_m_suffix_is_stripped_and_adds_the_beta() -> None:
    built, _ = build(chat(model="claude-sonnet-4-6[1m]"), NO_CACHE)
    assert built.body["model"] == "claude-sonnet-4-6"
    assert B.CONTEXT_1M in built.betas and built.resolved.one_m
    off, _ = build(chat(model="sonnet[1m]"), BuildSettings(models=ModelSettings(disable_1m=True)))
    assert B.CONTEXT_1M not in off.betas


def test_max_tokens_above_the_limit_is_clamped_with_a_note() -> None:
    assert output_limits("claude-opus-4-1-20250805") == (32_000, 32_000)
    built, _ = build(chat(model="claude-opus-4-1-20250805", max_tokens=100_000), BuildSettings(
        models=ModelSettings(disable_legacy_remap=True)
    ))
    assert built.body["max_tokens"] == 32_000
    assert any("clamped to 32000" in note for note in built.notes)
    capped, _ = build(chat(max_tokens=50_000), BuildSettings(max_output_tokens=8_000))
    assert capped.body["max_tokens"] == 8_000
    # A context-overflow retry's override wins.
    override, _ = build(chat(), max_tokens=333)
    assert override.body["max_tokens"] == 333


def test_thinking_drops_temperature_and_keeps_the_budget_under_max_tokens() -> None:
    request = chat(max_tokens=2000, temperature=0.2, thinking={"type": "enabled", "budget_tokens": 4000})
    built, _ = build(request, NO_CACHE)
    assert "temperature" not in built.body
    assert built.body["thinking"] == {"type": "enabled", "budget_tokens": 1999}
    off, _ = build(request, BuildSettings(disable_thinking=True, disable_prompt_caching=True))
    assert "thinking" not in off.body and off.body["temperature"] == 0.2


def test_thinking_budget_is_never_clamped_below_the_api_minimum() -> None:
    # max_tokens 500 leaves no valid budget (>= 1024): the request goes as sent, so the API
    # (or, with interleaved thinking, its acceptance) answers, not a budget of 499 it refuses.
    request = chat(max_tokens=500, thinking={"type": "enabled", "budget_tokens": 2048})
    built, _ = build(request, NO_CACHE)
    assert built.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    edge, _ = build(chat(max_tokens=1025, thinking={"type": "enabled", "budget_tokens": 2048}), NO_CACHE)
    assert edge.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_structured_outputs_effort_and_task_budget_betas() -> None:
    request = chat(output_config={"effort": "high", "format": {"type": "json_schema", "schema": {}}, "task_budget": 5})
    built, _ = build(request, NO_CACHE)
    assert built.betas == [*SONNET_BETAS[:3], B.STRUCTURED_OUTPUTS, B.PROMPT_CACHING_SCOPE, B.EFFORT, B.TASK_BUDGETS]
    strict, _ = build(chat(tools=[{"name": "t", "input_schema": {"type": "object"}, "strict": True}]), NO_CACHE)
    assert B.STRUCTURED_OUTPUTS in strict.betas


def test_fast_mode_beta_is_latched_for_the_session_and_speed_follows_the_attempt() -> None:
    first, latch = build(chat(model="opus"), NO_CACHE, fast=True, fast_requested=True)
    assert first.body["speed"] == "fast" and B.FAST_MODE in first.betas
    assert latch.betas == (B.FAST_MODE,)
    # The next request of the session does not ask for fast mode: the beta stays.
    second, latch = build(chat(model="opus", speed="fast"), NO_CACHE, latch=latch)
    assert "speed" not in second.body and B.FAST_MODE in second.betas
    assert latch.betas == (B.FAST_MODE,)


def test_feature_betas_are_latched_once_sent() -> None:
    deferred = chat(tools=[{"name": "t", "input_schema": {"type": "object"}, "defer_loading": True}])
    first, latch = build(deferred, NO_CACHE)
    assert B.TOOL_SEARCH_1P in first.betas
    second, _ = build(chat(), NO_CACHE, latch=latch)
    assert second.betas == [*SONNET_BETAS, B.TOOL_SEARCH_1P]


def test_env_betas_and_client_betas_are_merged_without_duplicates() -> None:
    settings = BuildSettings(extra_betas=("files-api-2025-04-14", B.CLAUDE_CODE), disable_prompt_caching=True)
    built, _ = build(chat(), settings, client_betas=("pdfs-2024-09-25", "files-api-2025-04-14"))
    assert built.betas == [*SONNET_BETAS, "files-api-2025-04-14", "pdfs-2024-09-25"]


def test_disable_experimental_betas_keeps_only_the_basic_ones() -> None:
    settings = BuildSettings(disable_experimental_betas=True, disable_prompt_caching=True)
    request = chat(
        tools=[{"name": "t", "input_schema": {"type": "object"}, "defer_loading": True}],
        context_management={"edits": []},
    )
    built, _ = build(request, settings)
    assert built.betas == [B.CLAUDE_CODE, B.INTERLEAVED_THINKING]
    # Tool search off: the tools go as ordinary ones; context_management needs its beta.
    assert built.body["tools"] == [{"name": "t", "input_schema": {"type": "object"}}]
    assert "context_management" not in built.body


@pytest.mark.parametrize(("provider", "beta"), [("firstParty", B.TOOL_SEARCH_1P), ("foundry", B.TOOL_SEARCH_1P),
                                                 ("vertex", B.TOOL_SEARCH_3P), ("bedrock", B.TOOL_SEARCH_3P)])
def test_deferred_tools_get_the_tool_search_beta_of_the_provider(provider: str, beta: str) -> None:
    tools = [{"name": "a", "input_schema": {"type": "object"}}, {"name": "b", "input_schema": {}, "defer_loading": True}]
    built, _ = build(chat(tools=tools), BuildSettings(provider=provider))
    assert beta in built.betas
    assert built.body["tools"] == tools
    haiku, _ = build(chat(model="haiku", tools=tools), BuildSettings(provider=provider))
    assert beta not in haiku.betas and "defer_loading" not in haiku.body["tools"][1]


def test_extra_body_overrides_and_each_request_gets_its_own_copy() -> None:
    settings = BuildSettings(extra_body={"metadata": {"user_id": "env"}, "top_k": 5}, disable_prompt_caching=True)
    first, _ = build(chat(metadata={"user_id": "client"}), settings)
    assert first.body["metadata"] == {"user_id": "env"} and first.body["top_k"] == 5
    first.body["metadata"]["user_id"] = "mutated"
    second, _ = build(chat(), settings)
    assert second.body["metadata"] == {"user_id": "env"}
    assert settings.extra_body == {"metadata": {"user_id": "env"}, "top_k": 5}


def test_breakpoints_respect_client_marks_and_the_limit_of_four() -> None:
    marked = {"type": "ephemeral", "ttl": "1h"}
    system = [{"type": "text", "text": f"s{i}", "cache_control": marked} for i in range(3)]
    request = chat(system=system)
    built, _ = build(request)
    # Three client marks: only the message marker fits.
    assert built.body["system"] == system
    assert built.body["messages"][-1]["content"] == [{"type": "text", "text": "Hello", "cache_control": EPHEMERAL}]
    full = chat(system=[*system, {"type": "text", "text": "s3", "cache_control": marked}])
    built, _ = build(full)
    assert built.body["messages"][-1]["content"] == "Hello"


def test_message_breakpoint_skips_thinking_blocks() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "thinking", "thinking": "t", "signature": "s"}]},
    ]
    built, _ = build({"model": "sonnet", "max_tokens": 10, "messages": messages})
    assert built.body["messages"][-1]["content"] == [
        {"type": "text", "text": "a", "cache_control": EPHEMERAL},
        {"type": "thinking", "thinking": "t", "signature": "s"},
    ]


def test_one_hour_ttl_is_latched_per_session() -> None:
    built, latch = build(chat(), BuildSettings(prompt_caching_1h=True))
    assert built.body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert latch.ttl_1h is True
    # Settings can no longer flip a session's TTL.
    again, _ = build(chat(), FIRST, latch=latch)
    assert again.body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


@pytest.mark.parametrize(
    ("settings", "model", "cached"),
    [
        (BuildSettings(disable_prompt_caching=True), "sonnet", False),
        (BuildSettings(disable_prompt_caching_sonnet=True), "sonnet", False),
        (BuildSettings(disable_prompt_caching_sonnet=True), "opus", True),
        (BuildSettings(disable_prompt_caching_opus=True), "opus", False),
        (BuildSettings(disable_prompt_caching_haiku=True), "haiku", False),
    ],
)
def test_prompt_caching_switches(settings: BuildSettings, model: str, cached: bool) -> None:
    built, _ = build(chat(model=model), settings)
    assert (built.body["messages"][0]["content"] != "Hello") is cached


def test_orphans_are_repaired_before_sending() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "x", "input": {}},
                                          {"type": "tool_use", "id": "t2", "name": "x", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                                     {"type": "tool_result", "tool_use_id": "zz", "content": "orphan"},
                                     {"type": "text", "text": "next"}]},
    ]
    original = copy.deepcopy(messages)
    built, _ = build({"model": "sonnet", "max_tokens": 10, "messages": messages}, NO_CACHE)
    assert built.body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
        {"type": "tool_result", "tool_use_id": "t2", "content": "[Tool result missing due to internal error]", "is_error": True},
        {"type": "text", "text": "next"},
    ]
    assert any("1 synthetic tool_result(s) added, 1 orphan(s) dropped" in n for n in built.notes)
    assert messages == original


def test_only_the_newest_hundred_media_blocks_are_sent() -> None:
    image: dict[str, Any] = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    content = [{**image, "source": {**image["source"], "data": str(i)}} for i in range(102)]
    built, _ = build({"model": "sonnet", "max_tokens": 10, "messages": [{"role": "user", "content": content}]}, NO_CACHE)
    sent = built.body["messages"][0]["content"]
    assert len(sent) == 100 and sent[0]["source"]["data"] == "2"
    assert any("2 oldest media" in n for n in built.notes)


def test_advisor_tool_is_added_for_agentic_queries_on_supported_models() -> None:
    settings = BuildSettings(advisor_model="claude-opus-4-6", disable_prompt_caching=True)
    built, _ = build(chat(tools=[{"name": "t", "input_schema": {}}]), settings, source="repl_main_thread")
    assert built.body["tools"][-1] == {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-6"}
    assert B.ADVISOR in built.betas
    old, _ = build(chat(model="claude-sonnet-4-5-20250929"), settings, source="repl_main_thread")
    assert B.ADVISOR not in old.betas and "tools" not in old.body


def test_count_tokens_goes_through_the_same_construction() -> None:
    built = count_tokens_request(chat(model="sonnet[1m]"), settings=FIRST)
    assert built.body == {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "Hello"}]}
    assert B.CONTEXT_1M in built.betas
    vertex = count_tokens_request(
        chat(model="opus"), settings=BuildSettings(provider="vertex"), client_betas=("files-api-2025-04-14",)
    )
    assert vertex.betas == [B.CLAUDE_CODE, B.INTERLEAVED_THINKING]


_ids = st.sampled_from(["a", "b", "c"])
_block = st.one_of(
    st.builds(lambda i: {"type": "tool_use", "id": i, "name": "x", "input": {}}, _ids),
    st.builds(lambda i: {"type": "tool_result", "tool_use_id": i, "content": "r"}, _ids),
    st.just({"type": "text", "text": "t"}),
)
_message = st.builds(
    lambda role, blocks: {"role": role, "content": blocks},
    st.sampled_from(["user", "assistant"]),
    st.lists(_block, min_size=1, max_size=4),
)


@given(st.lists(_message, min_size=1, max_size=8))
def test_repaired_messages_are_always_paired(messages: list[dict[str, Any]]) -> None:
    repaired, _, _ = repair_tool_pairing(messages)
    previous_uses: list[str] = []
    for index, message in enumerate(repaired):
        blocks = message["content"]
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        if message["role"] == "user":
            assert set(results) == set(previous_uses)
            assert len(results) == len(set(results))
        uses = [b["id"] for b in blocks if b.get("type") == "tool_use"] if message["role"] == "assistant" else []
        if previous_uses:
            assert message["role"] == "user", index
        previous_uses = uses
    assert not previous_uses
    # Repairing twice changes nothing more.
    assert repair_tool_pairing(repaired)[0] == repaired
