"""Token estimates and the emulated prompt cache (pure)."""

from __future__ import annotations

from typing import Any

import msgspec
from emulator_testkit import WEATHER_TOOL, body
from hypothesis import given
from hypothesis import strategies as st

from emulator.tokens import LOOKBACK_BLOCKS, PromptCache, tokens, total_input_tokens

LONG = "You are a careful assistant. " * 40


def _prompt_tokens(*items: object) -> int:
    """``tokens`` of the flat prompt list, as the module docstring defines it."""
    return tokens([*items, "assistant"])


def test_tokens_formula() -> None:
    assert tokens("") == 1
    assert tokens("a" * 400) == len(msgspec.json.encode("a" * 400)) // 4 == 100
    assert tokens({"k": [1, 2]}) == max(1, len(b'{"k":[1,2]}') // 4)


def test_total_follows_the_flat_prompt() -> None:
    request = body("hi", system="be brief", tools=[WEATHER_TOOL])
    assert total_input_tokens(request) == _prompt_tokens(WEATHER_TOOL, "be brief", "user", "hi")


def test_no_cache_control_means_all_plain_input() -> None:
    request = body("hi", system=LONG)
    usage = PromptCache().usage(request, "m")
    assert usage.input_tokens == total_input_tokens(request)
    assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0


def _cached_system(ttl: str | None = None) -> list[dict[str, Any]]:
    control: dict[str, Any] = {"type": "ephemeral"} | ({"ttl": ttl} if ttl else {})
    return [{"type": "text", "text": LONG, "cache_control": control}]


def test_first_request_writes_second_reads() -> None:
    cache = PromptCache()
    request = body("hi", system=_cached_system())
    prefix = tokens([{"type": "text", "text": LONG}])
    first = cache.usage(request, "m")
    assert first.cache_creation_input_tokens == first.ephemeral_5m_input_tokens == prefix
    assert first.cache_read_input_tokens == 0
    assert first.total == total_input_tokens(request)
    second = cache.usage(request, "m")
    assert second.cache_read_input_tokens == prefix
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens == first.input_tokens
    # The cache is per model.
    assert cache.usage(request, "other").cache_read_input_tokens == 0


def test_one_hour_ttl_is_split_out() -> None:
    usage = PromptCache().usage(body("hi", system=_cached_system("1h")), "m")
    assert usage.ephemeral_1h_input_tokens == usage.cache_creation_input_tokens > 0
    assert usage.ephemeral_5m_input_tokens == 0


def test_cache_control_is_not_part_of_the_cache_key() -> None:
    cache = PromptCache()
    cache.usage(body("hi", system=_cached_system("1h")), "m")
    assert cache.usage(body("other", system=_cached_system()), "m").cache_read_input_tokens > 0


def _turn(text: str, cached: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if cached:
        block["cache_control"] = {"type": "ephemeral"}
    return {"role": "user", "content": [block]}


def test_a_moved_breakpoint_reads_the_previous_turn() -> None:
    cache = PromptCache()
    turn1 = [_turn(LONG, True)]
    first = cache.usage({"model": "m", "messages": turn1}, "m")
    turn2 = [
        _turn(LONG, False),
        {"role": "assistant", "content": "ok"},
        _turn("more " * 50, True),
    ]
    second = cache.usage({"model": "m", "messages": turn2}, "m")
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    whole_prefix = tokens(["user", {"type": "text", "text": LONG}, "assistant", "ok", "user",
                           {"type": "text", "text": "more " * 50}])  # fmt: skip
    assert second.cache_creation_input_tokens == whole_prefix - second.cache_read_input_tokens


def test_lookback_is_limited() -> None:
    cache = PromptCache()
    cache.usage({"model": "m", "messages": [_turn(LONG, True)]}, "m")
    filler = [_turn(f"t{i}", False) for i in range(LOOKBACK_BLOCKS)]
    far = {"model": "m", "messages": [_turn(LONG, False), *filler, _turn("end", True)]}
    assert cache.usage(far, "m").cache_read_input_tokens == 0


def test_breakpoint_stretches_take_their_own_ttl() -> None:
    request = {
        "model": "m",
        "system": _cached_system("1h"),
        "messages": [_turn(LONG, True)],
    }
    usage = PromptCache().usage(request, "m")
    system_prefix = tokens([{"type": "text", "text": LONG}])
    assert usage.ephemeral_1h_input_tokens == system_prefix
    assert usage.ephemeral_5m_input_tokens == usage.cache_creation_input_tokens - system_prefix


def test_top_level_cache_control_marks_the_last_block() -> None:
    cache = PromptCache()
    request = body(LONG, cache_control={"type": "ephemeral", "ttl": "1h"})
    first = cache.usage(request, "m")
    assert first.ephemeral_1h_input_tokens == tokens(["user", LONG])
    assert cache.usage(request, "m").cache_read_input_tokens == tokens(["user", LONG])


def test_clear_forgets() -> None:
    cache = PromptCache()
    request = body("hi", system=_cached_system())
    cache.usage(request, "m")
    assert len(cache) == 1
    cache.clear()
    assert cache.usage(request, "m").cache_read_input_tokens == 0


_BLOCK = st.builds(
    lambda text, cached, ttl: (
        {"type": "text", "text": text}
        | ({"cache_control": {"type": "ephemeral", "ttl": ttl}} if cached else {})
    ),
    st.text(max_size=300),
    st.booleans(),
    st.sampled_from(["5m", "1h"]),
)


@given(
    st.lists(st.lists(_BLOCK, min_size=1, max_size=4), min_size=1, max_size=6),
    st.lists(_BLOCK, max_size=3),
    st.integers(1, 3),
)
def test_usage_always_adds_up_to_the_total(
    turns: list[list[dict[str, Any]]], system: list[dict[str, Any]], repeats: int
) -> None:
    request = {
        "model": "m",
        "system": system,
        "messages": [{"role": "user", "content": blocks} for blocks in turns],
    }
    cache = PromptCache()
    for _ in range(repeats):
        usage = cache.usage(request, "m")
        assert usage.total == total_input_tokens(request)
        assert usage.input_tokens >= 1
        assert min(usage.cache_creation_input_tokens, usage.cache_read_input_tokens) >= 0
        assert (
            usage.ephemeral_5m_input_tokens + usage.ephemeral_1h_input_tokens
            == usage.cache_creation_input_tokens
        )
    # Repeating a request never writes again.
    assert cache.usage(request, "m").cache_creation_input_tokens == 0
