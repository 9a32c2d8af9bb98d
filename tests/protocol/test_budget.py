"""Reservation and settlement, exact to the picodollar (protocol/budget.py)."""

from __future__ import annotations

import datetime

from hypothesis import given
from hypothesis import strategies as st

from protocol.budget import (
    DOCUMENT_TOKENS,
    IMAGE_TOKENS,
    Account,
    Limits,
    Refusal,
    format_usd,
    period_key,
    renews_at,
    reserve,
    settle,
    top_up,
    usd_to_pico,
    worst_case_pico,
)
from protocol.pricing import PICO_PER_USD

NOW = datetime.datetime(2026, 12, 31, 23, 59, 30, tzinfo=datetime.UTC)
amounts = st.integers(min_value=0, max_value=10**15)


def test_worst_case_is_the_stated_formula() -> None:
    request = {"model": "claude-sonnet-4-6", "max_tokens": 1000, "messages": []}
    # 3000 bytes -> 1000 input tokens at the 1-hour cache write price ($6/Mtok), 1000
    # output tokens at $15/Mtok: $0.006 + $0.015.
    assert worst_case_pico(request, 3000, on="2026-12-07") == 21_000_000_000
    searching = {**request, "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}
    assert worst_case_pico(searching, 3000, on="2026-12-07") == 21_000_000_000 + 3 * 10_000_000_000


def test_images_and_pdfs_reserve_their_fixed_bound_beyond_their_bytes() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    pdf = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}}
    in_tool_result = {"type": "tool_result", "tool_use_id": "t", "content": [image]}
    content = [image, pdf, text_doc, in_tool_result, {"type": "text", "text": "look"}]
    request = {"model": "claude-sonnet-4-6", "max_tokens": 0, "messages": [{"role": "user", "content": content}]}
    plain = {**request, "messages": [{"role": "user", "content": "look"}]}
    # Two images and one PDF, each at the 1-hour cache write price ($6/Mtok); the text
    # document counts by its bytes only (the 3 bytes: 1 token).
    tokens = 2 * IMAGE_TOKENS + DOCUMENT_TOKENS
    assert worst_case_pico(plain, 3, on="2026-12-07") == 6_000_000
    assert worst_case_pico(request, 3, on="2026-12-07") == (1 + tokens) * 6_000_000
    only_images = {**request, "messages": [{"role": "user", "content": [image, in_tool_result]}]}
    assert worst_case_pico(only_images, 3, on="2026-12-07") == (1 + 2 * IMAGE_TOKENS) * 6_000_000


def test_periods_renew_at_utc_midnight() -> None:
    assert period_key("day", NOW) == "2026-12-31"
    assert period_key("month", NOW) == "2026-12-01"
    assert period_key("total", NOW) == ""
    assert renews_at("day", NOW) == datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
    assert renews_at("month", NOW) == datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
    assert renews_at("month", NOW.replace(month=2, day=3)) == datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)
    assert renews_at("total", NOW) is None


@given(budget=amounts, spent=amounts, reserved=amounts, amount=amounts)
def test_a_reservation_is_granted_exactly_when_it_fits(budget: int, spent: int, reserved: int, amount: int) -> None:
    limits = Limits(budget_pico=budget, period="day")
    account = Account(period_key="2026-12-31", spent_pico=spent, reserved_pico=reserved)
    result = reserve(account, limits, amount, model="m", name="ci", now=NOW)
    if spent + reserved + amount <= budget:
        assert isinstance(result, Account)
        assert result.reserved_pico == reserved + amount and result.spent_pico == spent
        assert result.in_flight == 1
    else:
        assert isinstance(result, Refusal) and result.kind == "budget"
        assert result.retry_after_s == 30  # to midnight UTC
        assert "renews at 2027-01-01T00:00:00+00:00" in result.message


@given(budget=amounts, spent=amounts, reserved=amounts, amount=amounts)
def test_a_top_up_is_granted_exactly_when_it_fits_and_counts_no_new_query(
    budget: int, spent: int, reserved: int, amount: int
) -> None:
    limits = Limits(budget_pico=budget, period="day", max_concurrent=1, rpm=1)
    account = Account(period_key="2026-12-31", spent_pico=spent, reserved_pico=reserved, in_flight=1, rpm_count=1)
    result = top_up(account, limits, amount, name="ci", now=NOW)
    if spent + reserved + amount <= budget:
        # Neither concurrency nor rpm refuse it: the query already counts once.
        assert result == Account(
            period_key="2026-12-31", spent_pico=spent, reserved_pico=reserved + amount, in_flight=1, rpm_count=1
        )
    else:
        assert isinstance(result, Refusal) and result.kind == "budget" and "before a retry" in result.message


@given(reservations=st.lists(st.tuples(amounts, amounts), max_size=20), budget=amounts)
def test_settling_every_reservation_leaves_the_exact_spend(reservations: list[tuple[int, int]], budget: int) -> None:
    limits = Limits(budget_pico=budget, period="total")
    account = Account()
    granted: list[tuple[int, int]] = []
    for amount, actual in reservations:
        result = reserve(account, limits, amount, model="m", name="ci", now=NOW)
        if isinstance(result, Account):
            account = result
            granted.append((amount, min(actual, amount)))
        assert account.spent_pico + account.reserved_pico <= budget
    for amount, actual in granted:
        account = settle(account, limits, amount, actual, NOW)
    assert account.reserved_pico == 0 and account.in_flight == 0
    assert account.spent_pico == sum(actual for _, actual in granted) <= budget


def test_a_new_period_starts_with_nothing_spent() -> None:
    limits = Limits(budget_pico=10, period="day")
    account = Account(period_key="2026-12-30", spent_pico=10, reserved_pico=2)
    result = reserve(account, limits, 8, model="m", name="ci", now=NOW)
    assert isinstance(result, Account)
    assert (result.period_key, result.spent_pico, result.reserved_pico) == ("2026-12-31", 0, 10)


def test_rpm_concurrency_and_models_are_checked() -> None:
    limits = Limits(rpm=2, max_concurrent=3, models=("claude-haiku-4-5",))
    account = Account()
    refused = reserve(account, limits, 0, model="claude-opus-4-6", name="ci", now=NOW)
    assert isinstance(refused, Refusal) and refused.kind == "model" and refused.retry_after_s is None
    for _ in range(2):
        result = reserve(account, limits, 0, model="claude-haiku-4-5", name="ci", now=NOW)
        assert isinstance(result, Account)
        account = result
    refused = reserve(account, limits, 0, model="claude-haiku-4-5", name="ci", now=NOW)
    assert isinstance(refused, Refusal) and refused.kind == "rpm" and refused.retry_after_s == 30
    later = NOW + datetime.timedelta(seconds=31)
    result = reserve(account, limits, 0, model="claude-haiku-4-5", name="ci", now=later)
    assert isinstance(result, Account) and result.in_flight == 3 and result.rpm_count == 1
    refused = reserve(result, limits, 0, model="claude-haiku-4-5", name="ci", now=later)
    assert isinstance(refused, Refusal) and refused.kind == "concurrency"


@given(pico=amounts)
def test_usd_amounts_round_trip(pico: int) -> None:
    micros = -(-pico // 1_000_000)
    assert usd_to_pico(format_usd(pico)) == micros * 1_000_000
    assert usd_to_pico("12.5") == 12 * PICO_PER_USD + PICO_PER_USD // 2
