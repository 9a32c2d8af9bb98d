"""Cache-break detection (docs/reference/reference-client.md 7.5): snapshots, the threshold, the causes."""

from __future__ import annotations

from typing import Any

from protocol.caching import (
    CacheBaseline,
    CacheBreak,
    PromptSnapshot,
    check_break,
    snapshot,
    tracking_key,
)


def body(system: str = "sys", model: str = "claude-sonnet-4-6", tools: list[Any] | None = None) -> dict[str, Any]:
    return {"model": model, "system": [{"type": "text", "text": system}], "tools": tools or [], "messages": []}


def snap(**kw: Any) -> PromptSnapshot:
    betas = kw.pop("betas", ["a"])
    fast = kw.pop("fast_mode", False)
    return snapshot(body(**kw), betas, fast_mode=fast, extra_body={})


def test_tracking_keys() -> None:
    assert tracking_key("compact") == "repl_main_thread"
    assert tracking_key("repl_main_thread:x") == "repl_main_thread:x"
    assert tracking_key("sdk") == "sdk"
    assert tracking_key("agent:custom", "agent-7") == "agent-7"
    assert tracking_key("title") is None


def test_threshold_is_five_percent_and_two_thousand_tokens() -> None:
    base = CacheBaseline(snapshot=snap(), cache_read=100_000, finished_at=0.0)
    assert check_break(base, snap(), cache_read=96_000, now=10.0) is None  # 4% drop
    assert check_break(CacheBaseline(snapshot=snap(), cache_read=3_000, finished_at=0.0), snap(), cache_read=1_500, now=1.0) is None
    assert check_break(base, snap(), cache_read=90_000, now=10.0) == CacheBreak(
        reason="likely server-side (prompt unchanged, <5min gap)", cache_read_before=100_000, cache_read_after=90_000
    )
    assert check_break(None, snap(), cache_read=0, now=0.0) is None
    haiku = snap(model="claude-haiku-4-5")
    assert check_break(CacheBaseline(snapshot=haiku, cache_read=100_000), haiku, cache_read=0, now=0.0) is None


def test_causes_are_named() -> None:
    tool = {"name": "t", "input_schema": {}}
    before = CacheBaseline(snapshot=snap(tools=[tool]), cache_read=50_000, finished_at=0.0)
    after = snap(system="sys longer", model="claude-opus-4-6", tools=[tool, {"name": "u"}], betas=["b"], fast_mode=True)
    found = check_break(before, after, cache_read=0, now=1.0)
    assert found is not None
    assert found.reason == (
        "model changed (claude-sonnet-4-6 → claude-opus-4-6), system prompt changed (+7 chars), "
        "tools changed (+1/-0 tools), fast mode toggled, betas changed (+b -a)"
    )
    assert check_break(before, snap(tools=[tool]), cache_read=0, now=400.0).reason == (  # type: ignore[union-attr]
        "possible 5min TTL expiry (prompt unchanged)"
    )
    assert check_break(before, snap(tools=[tool]), cache_read=0, now=4000.0).reason == (  # type: ignore[union-attr]
        "possible 1h TTL expiry (prompt unchanged)"
    )
