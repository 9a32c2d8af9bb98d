"""Budget rules at their edges: each test pins a rule a mutant of protocol/budget.py changed
without any test failing (docs/testing.md "Mutation testing")."""

from __future__ import annotations

import datetime

import pytest

from protocol.budget import (
    DOCUMENT_TOKENS,
    IMAGE_TOKENS,
    Account,
    Limits,
    Refusal,
    format_usd,
    media_tokens,
    reserve,
    settle,
    usd_to_pico,
    worst_case_pico,
)

ON = "2026-12-07"
REQUEST = {"model": "claude-sonnet-4-6", "max_tokens": 1000, "messages": []}
BASE = 21_000_000_000  # 3000 bytes and 1000 output tokens (tests/protocol/test_budget.py)
SEARCH = 10_000_000_000  # one web search: $10 per 1000


def test_the_reserved_media_bounds_are_the_documented_ones() -> None:
    """docs/protocol.md "Access tokens and budgets": 4,800 tokens per image, 200,000 per PDF."""
    assert (IMAGE_TOKENS, DOCUMENT_TOKENS) == (4_800, 200_000)


def test_media_blocks_are_looked_for_eight_levels_deep_and_no_deeper() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    assert media_tokens(image, depth=8) == IMAGE_TOKENS
    assert media_tokens(image, depth=9) == 0
    in_lists: object = image
    for _ in range(8):
        in_lists = [in_lists]
    assert media_tokens(in_lists) == IMAGE_TOKENS and media_tokens([in_lists]) == 0
    in_results: object = image
    for _ in range(4):  # each tool_result is two levels: the block and its content list
        in_results = {"type": "tool_result", "tool_use_id": "t", "content": [in_results]}
    assert media_tokens(in_results) == IMAGE_TOKENS and media_tokens([in_results]) == 0


def test_a_web_search_tool_without_a_usable_max_uses_reserves_ten_searches() -> None:
    for tool in ({}, {"max_uses": 0}, {"max_uses": "3"}):
        searching = {**REQUEST, "tools": [{"type": "web_search_20250305", "name": "web_search", **tool}]}
        assert worst_case_pico(searching, 3000, on=ON) == BASE + 10 * SEARCH


def test_a_max_tokens_that_is_not_a_positive_integer_reserves_no_output() -> None:
    input_only = BASE - 15_000_000_000  # 1000 input tokens at $6/Mtok
    for max_tokens in (0, -5, "1000", None):
        assert worst_case_pico({**REQUEST, "max_tokens": max_tokens}, 3000, on=ON) == input_only
    assert worst_case_pico({**REQUEST, "max_tokens": 0}, 0, on=ON) == 0  # no bytes, no tokens


def test_a_fast_request_reserves_at_the_fast_price() -> None:
    fast = {**REQUEST, "model": "claude-opus-4-6", "speed": "fast"}
    normal = {**fast, "speed": "standard"}
    assert worst_case_pico(fast, 3000, on=ON) > worst_case_pico(normal, 3000, on=ON)


def test_a_refusal_waits_at_least_a_second() -> None:
    """Half a second before the minute ends, the rpm refusal says 1 s (never 0)."""
    now = datetime.datetime(2026, 12, 31, 23, 59, 59, 500_000, tzinfo=datetime.UTC)
    limits = Limits(rpm=1)
    first = reserve(Account(), limits, 0, model="m", name="ci", now=now)
    assert isinstance(first, Account)
    refused = reserve(first, limits, 0, model="m", name="ci", now=now)
    assert isinstance(refused, Refusal) and refused.kind == "rpm" and refused.retry_after_s == 1


def test_settling_one_of_two_queries_leaves_one_in_flight() -> None:
    now = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
    limits = Limits(max_concurrent=2)
    account: Account | Refusal = Account()
    for _ in range(2):
        assert isinstance(account, Account)
        account = reserve(account, limits, 5, model="m", name="ci", now=now)
    assert isinstance(account, Account) and account.in_flight == 2
    full = reserve(account, limits, 5, model="m", name="ci", now=now)
    assert isinstance(full, Refusal) and full.kind == "concurrency" and full.retry_after_s == 1
    settled = settle(account, limits, 5, 3, now)
    assert (settled.in_flight, settled.reserved_pico, settled.spent_pico) == (1, 5, 3)


def test_usd_amounts_have_six_decimals_and_twelve_at_most_on_input() -> None:
    assert format_usd(usd_to_pico("12.5")) == "12.500000"
    assert format_usd(usd_to_pico("1234567.000001")) == "1234567.000001"
    assert usd_to_pico("0.000000000001") == 1
    with pytest.raises(ValueError, match="not an amount"):
        usd_to_pico("0.0000000000001")


def test_only_a_pdf_by_url_file_or_base64_reserves_the_document_bound() -> None:
    def request(source: dict[str, str]) -> dict[str, object]:
        block = {"type": "document", "source": source}
        return {**REQUEST, "max_tokens": 0, "messages": [{"role": "user", "content": [block]}]}

    pdf = request({"type": "url", "url": "https://example.com/a.pdf"})
    text = request({"type": "text", "media_type": "text/plain", "data": "hi"})
    assert worst_case_pico(pdf, 3, on=ON) == (1 + DOCUMENT_TOKENS) * 6_000_000
    assert worst_case_pico(text, 3, on=ON) == 6_000_000


def test_web_search_max_uses_of_one_is_one_search_and_odd_tools_are_ignored() -> None:
    one = {**REQUEST, "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]}
    assert worst_case_pico(one, 3000, on=ON) == BASE + SEARCH
    odd = {**REQUEST, "tools": ["web_search", {"type": "custom", "name": "web_search_like"}]}
    assert worst_case_pico(odd, 3000, on=ON) == BASE


def test_rpm_counts_whole_minutes_and_an_empty_model_list_allows_none() -> None:
    at = datetime.datetime(2026, 12, 7, 12, 0, 5, tzinfo=datetime.UTC)
    limits = Limits(rpm=1)
    first = reserve(Account(), limits, 0, model="m", name="ci", now=at)
    assert isinstance(first, Account)
    later = reserve(first, limits, 0, model="m", name="ci", now=at + datetime.timedelta(seconds=10))
    assert isinstance(later, Refusal) and later.kind == "rpm"
    nothing = reserve(Account(), Limits(models=()), 0, model="m", name="ci", now=at)
    assert isinstance(nothing, Refusal) and nothing.message.endswith("(allowed: none)")


def test_a_fresh_account_has_the_whole_budget() -> None:
    at = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
    granted = reserve(Account(), Limits(budget_pico=100), 100, model="m", name="ci", now=at)
    assert isinstance(granted, Account) and granted.reserved_pico == 100
