"""Pricing: exact costs in picodollars, hand-computed, plus properties of the rules.

Hand computation: a price of ``$X / Mtok`` is ``X * 1_000_000`` picodollars per token, so a
part is ``tokens * X * 1e6``; web search is 10_000_000_000 picodollars ($0.01) per request.
"""

from __future__ import annotations

import re
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.pricing import (
    DEFAULT_PRICE,
    PRICE_TABLE,
    Cost,
    canonical_model,
    cost_of,
    format_cost,
    format_number,
    known_models,
    price_for,
    usd,
)
from protocol.usage import Usage, UsageIteration

LATE = "2026-12-01"  # after every entry in the table

# One usage exercising every part: 1234 in, 567 out, 2000 cache writes of which 500 are 1h,
# 10_000 cache reads, 3 web searches.
FULL = Usage(
    input_tokens=1234,
    output_tokens=567,
    cache_creation_input_tokens=2000,
    cache_creation_1h_input_tokens=500,
    cache_read_input_tokens=10_000,
    web_search_requests=3,
)
WEB_3 = 3 * 10_000_000_000


def parts(cost: Cost) -> tuple[int, int, int, int, int, int, int]:
    return (
        cost.input_pico,
        cost.output_pico,
        cost.cache_write_5m_pico,
        cost.cache_write_1h_pico,
        cost.cache_read_pico,
        cost.web_search_pico,
        cost.advisor_pico,
    )


# --- every family, every part ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected_parts", "total"),
    [
        # Opus 4.6: 5 / 6.25 / 10 / 0.50 / 25
        (
            "claude-opus-4-6",
            (1234 * 5_000_000, 567 * 25_000_000, 1500 * 6_250_000, 500 * 10_000_000,
             10_000 * 500_000, WEB_3, 0),
            69_720_000_000,
        ),
        # Opus 4.1: 15 / 18.75 / 30 / 1.50 / 75
        (
            "claude-opus-4-1-20250805",
            (18_510_000_000, 42_525_000_000, 28_125_000_000, 15_000_000_000,
             15_000_000_000, WEB_3, 0),
            149_160_000_000,
        ),
        # Sonnet 4.5: 3 / 3.75 / 6 / 0.30 / 15
        (
            "claude-sonnet-4-5-20250929",
            (3_702_000_000, 8_505_000_000, 5_625_000_000, 3_000_000_000,
             3_000_000_000, WEB_3, 0),
            53_832_000_000,
        ),
        # Sonnet 5: 2 / 2.50 / 4 / 0.20 / 10 (the API's price, docs/reference/wire.md 10.2)
        (
            "claude-sonnet-5",
            (2_468_000_000, 5_670_000_000, 3_750_000_000, 2_000_000_000,
             2_000_000_000, WEB_3, 0),
            45_888_000_000,
        ),
        # Haiku 4.5: 1 / 1.25 / 2 / 0.10 / 5
        (
            "claude-haiku-4-5",
            (1_234_000_000, 2_835_000_000, 1_875_000_000, 1_000_000_000,
             1_000_000_000, WEB_3, 0),
            37_944_000_000,
        ),
        # Haiku 3.5: 0.80 / 1 / 1.60 / 0.08 / 4
        (
            "claude-3-5-haiku-20241022",
            (987_200_000, 2_268_000_000, 1_500_000_000, 800_000_000,
             800_000_000, WEB_3, 0),
            36_355_200_000,
        ),
        # Fable 5.1: 10 / 12.50 / 20 / 0.25 / 50
        (
            "claude-fable-5-1",
            (12_340_000_000, 28_350_000_000, 18_750_000_000, 10_000_000_000,
             2_500_000_000, WEB_3, 0),
            101_940_000_000,
        ),
    ],
)  # fmt: skip
def test_exact_cost_per_family(model: str, expected_parts: tuple[int, ...], total: int) -> None:
    cost = cost_of(FULL, model, on=LATE)
    assert parts(cost) == expected_parts
    assert cost.total_pico == total
    assert not cost.unknown_model


def test_small_request_in_dollars() -> None:
    cost = cost_of(Usage(input_tokens=1000, output_tokens=500), "claude-opus-4-6", on=LATE)
    assert cost.total_pico == 17_500_000_000
    assert cost.total_usd == pytest.approx(0.0175)
    assert format_cost(cost.total_usd) == "$0.0175"


# --- cache writes and reads ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("writes", "one_hour", "five_min_pico", "one_hour_pico"),
    [
        (2000, 0, 2000 * 3_750_000, 0),  # 5m only
        (2000, 2000, 0, 2000 * 6_000_000),  # 1h only
        (2000, 500, 1500 * 3_750_000, 500 * 6_000_000),  # mixed
        (2000, 9999, 0, 2000 * 6_000_000),  # a split larger than the total is capped
    ],
)
def test_cache_write_split(
    writes: int, one_hour: int, five_min_pico: int, one_hour_pico: int
) -> None:
    usage = Usage(cache_creation_input_tokens=writes, cache_creation_1h_input_tokens=one_hour)
    cost = cost_of(usage, "claude-sonnet-4-5", on=LATE)
    assert cost.cache_write_5m_pico == five_min_pico
    assert cost.cache_write_1h_pico == one_hour_pico
    assert cost.total_pico == five_min_pico + one_hour_pico


def test_cache_reads_at_read_price() -> None:
    cost = cost_of(Usage(cache_read_input_tokens=10_000), "claude-sonnet-4-5", on=LATE)
    assert cost.cache_read_pico == cost.total_pico == 3_000_000_000


def test_web_search_per_request_and_web_fetch_free() -> None:
    usage = Usage(web_search_requests=7, web_fetch_requests=50)
    cost = cost_of(usage, "claude-haiku-4-5", on=LATE)
    assert cost.web_search_pico == cost.total_pico == 70_000_000_000  # 7 x $0.01


# --- long context ----------------------------------------------------------------------------


def sonnet_request(uncached: int) -> Usage:
    # 30_000 cache writes (10_000 of them 1h) + 20_000 reads + ``uncached``; 1000 out.
    return Usage(
        input_tokens=uncached,
        output_tokens=1000,
        cache_creation_input_tokens=30_000,
        cache_creation_1h_input_tokens=10_000,
        cache_read_input_tokens=20_000,
    )


def test_long_context_boundary_sonnet_4_5() -> None:
    at_limit = cost_of(sonnet_request(150_000), "claude-sonnet-4-5", on=LATE, long_context=True)
    # 150_000 x 3 + 20_000 x 3.75 + 10_000 x 6 + 20_000 x 0.30 + 1000 x 15 ($/Mtok)
    assert at_limit.total_pico == 606_000_000_000

    over = cost_of(sonnet_request(150_001), "claude-sonnet-4-5", on=LATE, long_context=True)
    # every part at 6 / 7.50 / 12 / 0.60 / 22.50, output included
    assert parts(over) == (
        150_001 * 6_000_000,
        1000 * 22_500_000,
        20_000 * 7_500_000,
        10_000 * 12_000_000,
        20_000 * 600_000,
        0,
        0,
    )
    assert over.total_pico == 1_204_506_000_000


def test_long_context_needs_the_beta() -> None:
    cost = cost_of(sonnet_request(150_001), "claude-sonnet-4-5", on=LATE, long_context=False)
    assert cost.total_pico == 606_003_000_000


def test_long_context_opus_4_6_and_its_end() -> None:
    def opus(uncached: int, on: str) -> int:
        usage = Usage(input_tokens=uncached, output_tokens=1000)
        return cost_of(usage, "claude-opus-4-6", on=on, long_context=True).total_pico

    assert opus(200_000, "2026-03-01") == 200_000 * 5_000_000 + 1000 * 25_000_000
    assert opus(200_001, "2026-03-01") == 200_001 * 10_000_000 + 1000 * 37_500_000
    # 1M context GA at standard pricing from 2026-03-13
    assert opus(200_001, "2026-03-13") == 200_001 * 5_000_000 + 1000 * 25_000_000


def test_long_context_sonnet_4_only_from_the_beta_date() -> None:
    usage = Usage(input_tokens=200_001)
    before = cost_of(usage, "claude-sonnet-4-20250514", on="2025-08-06", long_context=True)
    after = cost_of(usage, "claude-sonnet-4-20250514", on="2025-08-07", long_context=True)
    assert before.total_pico == 200_001 * 3_000_000
    assert after.total_pico == 200_001 * 6_000_000


def test_no_long_context_tier_means_standard() -> None:
    usage = Usage(input_tokens=500_000)
    cost = cost_of(usage, "claude-opus-4-7", on=LATE, long_context=True)
    assert cost.total_pico == 500_000 * 5_000_000


def test_haiku_5_5_prompt_tier_applies_without_the_beta() -> None:
    def haiku(uncached: int) -> int:
        usage = Usage(input_tokens=uncached, output_tokens=1000)
        return cost_of(usage, "claude-haiku-5-5", on=LATE).total_pico

    assert haiku(100_000) == 100_000 * 100_000 + 1000 * 500_000
    assert haiku(100_001) == 100_001 * 500_000 + 1000 * 2_500_000


# --- fast mode -------------------------------------------------------------------------------


def test_fast_mode_opus_4_6() -> None:
    usage = Usage(
        input_tokens=1000,
        output_tokens=1000,
        cache_creation_input_tokens=1000,
        cache_read_input_tokens=1000,
        speed="fast",
    )
    cost = cost_of(usage, "claude-opus-4-6", on="2026-03-01")
    # 30 / 37.50 / 3 / 150 $/Mtok (6x)
    assert parts(cost) == (30_000_000_000, 150_000_000_000, 37_500_000_000, 0, 3_000_000_000, 0, 0)
    assert cost.total_pico == 220_500_000_000


def test_fast_mode_opus_4_6_over_200k() -> None:
    usage = Usage(input_tokens=200_001, output_tokens=1000, speed="fast")
    cost = cost_of(usage, "claude-opus-4-6", on="2026-03-01", long_context=True)
    assert cost.total_pico == 200_001 * 60_000_000 + 1000 * 225_000_000


def test_fast_mode_opus_5() -> None:
    fast = Usage(input_tokens=1000, output_tokens=1000, speed="fast")
    standard = Usage(input_tokens=1000, output_tokens=1000, speed="standard")
    assert cost_of(fast, "claude-opus-5", on=LATE).total_pico == 60_000_000_000  # 10 / 50
    assert cost_of(standard, "claude-opus-5", on=LATE).total_pico == 30_000_000_000  # 5 / 25


def test_fast_on_a_model_without_fast_prices_is_standard() -> None:
    usage = Usage(input_tokens=1000, speed="fast")
    assert cost_of(usage, "claude-sonnet-4-5", on=LATE).total_pico == 3_000_000_000


# --- price versions --------------------------------------------------------------------------


def test_sonnet_5_5_cache_read_cut() -> None:
    usage = Usage(cache_read_input_tokens=1_000_000)
    assert cost_of(usage, "claude-sonnet-5-5", on="2026-10-06").total_pico == 200_000_000_000
    assert cost_of(usage, "claude-sonnet-5-5", on="2026-10-07").total_pico == 100_000_000_000


def test_price_for_picks_latest_effective_entry() -> None:
    before = price_for("claude-sonnet-5-5", "2026-10-06")
    after = price_for("claude-sonnet-5-5", "2026-10-07T09:30:00Z")
    assert before is not None
    assert after is not None
    assert (before.effective, before.standard.cache_read) == ("2026-09-28", 200_000)
    assert (after.effective, after.standard.cache_read) == ("2026-10-07", 100_000)


def test_price_for_unknown_or_too_early() -> None:
    assert price_for("claude-sonnet-5-5", "2026-09-27") is None
    assert price_for("gpt-4o", LATE) is None


@pytest.mark.parametrize("bad", ["", "yesterday", "10/07/2026", "2026-1-7"])
def test_malformed_date_raises(bad: str) -> None:
    with pytest.raises(ValueError, match="ISO date"):
        price_for("claude-opus-4-6", bad)
    with pytest.raises(ValueError, match="ISO date"):
        cost_of(Usage(), "gpt-4o", on=bad)


def test_known_model_before_its_first_entry_uses_its_earliest_price() -> None:
    cost = cost_of(Usage(input_tokens=1000), "claude-opus-4-6", on="2020-01-01")
    assert cost.total_pico == 5_000_000_000
    assert not cost.unknown_model


# --- unknown models --------------------------------------------------------------------------


def test_unknown_model_priced_at_default_and_flagged() -> None:
    assert DEFAULT_PRICE.model == "claude-sonnet-4-6"
    usage = Usage(input_tokens=1000, output_tokens=1000, cache_read_input_tokens=1000)
    cost = cost_of(usage, "my-foundry-deployment", on=LATE)
    assert cost.unknown_model
    assert cost.canonical == "my-foundry-deployment"
    assert cost.total_pico == 3_000_000_000 + 15_000_000_000 + 300_000_000  # 3 / 15 / 0.30


def test_unknown_model_has_no_long_context_or_fast_tier() -> None:
    usage = Usage(input_tokens=300_000, speed="fast")
    cost = cost_of(usage, "gpt-4o", on=LATE, long_context=True)
    assert cost.total_pico == 300_000 * 3_000_000


# --- advisor ---------------------------------------------------------------------------------


def test_advisor_iterations_priced_at_their_own_model() -> None:
    usage = Usage(
        input_tokens=1000,
        output_tokens=100,
        iterations=(
            UsageIteration(
                type="advisor_message",
                model="claude-opus-4-6",
                input_tokens=2000,
                output_tokens=300,
                cache_creation_input_tokens=1000,
                cache_read_input_tokens=4000,
            ),
            # not an advisor: already in the top-level counts
            UsageIteration(type="message", model="claude-sonnet-4-6", input_tokens=99_999),
            # an advisor without a model cannot be priced
            UsageIteration(type="advisor_message", input_tokens=99_999),
        ),
    )
    cost = cost_of(usage, "claude-sonnet-4-6", on=LATE)
    # Opus 4.6: 2000 x 5 + 300 x 25 + 1000 x 6.25 (5m) + 4000 x 0.50
    assert cost.advisor_pico == 25_750_000_000
    assert cost.input_pico == 3_000_000_000
    assert cost.output_pico == 1_500_000_000
    assert cost.total_pico == 30_250_000_000
    assert not cost.unknown_model


def test_unknown_advisor_model_flags_the_cost() -> None:
    usage = Usage(
        iterations=(UsageIteration(type="advisor_message", model="claude-x-1", input_tokens=1000),)
    )
    cost = cost_of(usage, "claude-opus-4-6", on=LATE)
    assert cost.unknown_model
    assert cost.canonical == "claude-opus-4-6"
    assert cost.advisor_pico == cost.total_pico == 3_000_000_000


# --- canonical names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "canonical"),
    [
        # first party, snapshots and aliases
        ("claude-opus-4-6", "claude-opus-4-6"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-3-opus-20240229", "claude-3-opus"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        # Bedrock: geo prefixes, versions, ARNs
        ("us.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("apac.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("jp.anthropic.claude-sonnet-4-6", "claude-sonnet-4-6"),
        ("au.anthropic.claude-opus-4-5-20251101-v1:0", "claude-opus-4-5"),
        ("us-gov.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet"),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),
        ("anthropic.claude-3-sonnet-20240229-v1:0:28k", None),  # Claude 3 Sonnet: not priced
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-opus-4-6-v1",
            "claude-opus-4-6",
        ),
        (
            "arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-3-5-sonnet-20241022-v2:0",
            "claude-3-5-sonnet",
        ),
        ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3", None),
        # Vertex
        ("claude-opus-4-6@default", "claude-opus-4-6"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("claude-3-7-sonnet@20250219", "claude-3-7-sonnet"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4"),
        ("claude-opus-4@20250514", "claude-opus-4"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("claude-haiku-4-5@20251001", "claude-haiku-4-5"),
        ("claude-3-haiku@20240307", "claude-3-haiku"),
        # Foundry: plain names
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-haiku-4-5", "claude-haiku-4-5"),
        # the client-side 1M marker, any case; upper case ids
        ("claude-opus-4-6[1m]", "claude-opus-4-6"),
        ("claude-sonnet-4-5-20250929[1M]", "claude-sonnet-4-5"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0[1m]", "claude-sonnet-4-5"),
        ("CLAUDE-OPUS-4-6", "claude-opus-4-6"),
        ("US.ANTHROPIC.CLAUDE-OPUS-4-6-V1", "claude-opus-4-6"),
        ("  claude-opus-4-6\n", "claude-opus-4-6"),
        # unknown
        ("gpt-4o", None),
        ("", None),
        ("claude", None),
        ("claude-opus-9", None),
        ("sonnet[1m]", None),
        ("my-foundry-deployment", None),
    ],
)
def test_canonical_model(model_id: str, canonical: str | None) -> None:
    assert canonical_model(model_id) == canonical


# docs/reference/wire.md 10.1: the SDK's model ids and the later docs' ids.
SDK_MODEL_IDS = [
    "claude-sonnet-5",
    "claude-fable-5",
    "claude-mythos-5",
    "claude-opus-5",
    "claude-opus-4-8",
    "claude-opus-4-7",
    "claude-mythos-preview",
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "claude-haiku-4-5-20251001",
    "claude-opus-4-5",
    "claude-opus-4-5-20251101",
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-0",
    "claude-opus-4-20250514",
    "claude-sonnet-4-0",
    "claude-sonnet-4-20250514",
    "claude-3-7-sonnet-20250219",
    "claude-3-5-haiku-20241022",
    "claude-3-opus-20240229",
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "claude-fable-5-1",
    "claude-fable-5-2",
    "claude-mythos-5-1",
    "claude-3-haiku-20240307",
]


@pytest.mark.parametrize("model_id", SDK_MODEL_IDS)
def test_every_listed_model_is_priced(model_id: str) -> None:
    canonical = canonical_model(model_id)
    assert canonical is not None
    assert price_for(canonical, LATE) is not None


# --- the table itself ------------------------------------------------------------------------


def test_table_is_well_formed() -> None:
    seen: set[tuple[str, str]] = set()
    for entry in PRICE_TABLE:
        assert canonical_model(entry.model) == entry.model
        key = (entry.model, entry.effective)
        assert key not in seen, key
        seen.add(key)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry.effective), entry
        # fast and long context both known means the combination is known too
        if entry.fast is not None and entry.long_context is not None:
            assert entry.fast_long_context is not None
    assert known_models() == {e.model for e in PRICE_TABLE}


def test_table_multipliers() -> None:
    # docs/reference/wire.md 10.2: 1h write = 2x input everywhere; 5m write = 1.25x input except Haiku 3.
    for entry in PRICE_TABLE:
        for rates in (entry.standard, entry.long_context, entry.fast, entry.fast_long_context):
            if rates is None:
                continue
            assert rates.cache_write_1h == 2 * rates.input, entry.model
            if entry.model != "claude-3-haiku":
                assert Decimal(rates.cache_write_5m) == Decimal("1.25") * rates.input, entry.model
            assert rates.cache_read < rates.input < rates.output


# --- display ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "$0.0000"),
        (0.0048, "$0.0048"),
        (0.5, "$0.5000"),
        (0.51, "$0.51"),
        (0.509, "$0.51"),
        (12.3456, "$12.35"),
        (1234.5, "$1234.50"),
    ],
)
def test_format_cost(value: float, text: str) -> None:
    assert format_cost(value) == text


def test_format_cost_max_decimals() -> None:
    assert format_cost(0.0048, max_decimals=2) == "$0.00"
    assert format_cost(0.123456, max_decimals=6) == "$0.123456"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (12, "12"),
        (999, "999"),
        (1000, "1.0k"),
        (1249, "1.2k"),
        (1250, "1.3k"),
        (12_345, "12.3k"),
        (999_949, "999.9k"),
        (999_950, "1.0m"),
        (2_500_000, "2.5m"),
        (1_000_000_000, "1.0b"),
        (-1500, "-1.5k"),
        # The largest unit is "t": past it the number grows, the unit does not.
        (999_950_000_000, "1.0t"),
        (10**12, "1.0t"),
        (10**15, "1000.0t"),
        (999_999_999_999_999, "1000.0t"),
    ],
)
def test_format_number(n: int, text: str) -> None:
    assert format_number(n) == text


def test_usd() -> None:
    assert usd(3_000_000) == pytest.approx(3e-6)
    assert usd(10**12) == 1.0


# --- properties ------------------------------------------------------------------------------

DATES = st.sampled_from(
    ["2020-01-01", "2025-08-07", "2026-03-01", "2026-03-13", "2026-10-06", "2026-10-07", LATE]
)
MODELS = st.sampled_from([*sorted(known_models()), "gpt-4o", "claude-opus-4-6[1m]"])
COUNT = st.integers(min_value=0, max_value=2_000_000)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    writes = draw(COUNT)
    advisor = draw(
        st.lists(
            st.builds(
                UsageIteration,
                type=st.just("advisor_message"),
                model=MODELS,
                input_tokens=st.none() | COUNT,
                output_tokens=st.none() | COUNT,
                cache_creation_input_tokens=st.none() | COUNT,
                cache_read_input_tokens=st.none() | COUNT,
            ),
            max_size=2,
        )
    )
    return Usage(
        input_tokens=draw(COUNT),
        output_tokens=draw(COUNT),
        cache_creation_input_tokens=writes,
        cache_creation_1h_input_tokens=draw(st.integers(0, writes)),
        cache_read_input_tokens=draw(COUNT),
        web_search_requests=draw(st.integers(0, 1000)),
        web_fetch_requests=draw(st.integers(0, 1000)),
        speed=draw(st.sampled_from([None, "standard", "fast"])),
        iterations=tuple(advisor),
    )


@given(usage=usages(), model=MODELS, on=DATES, long_context=st.booleans())
def test_cost_never_negative_and_total_is_sum_of_parts(
    usage: Usage, model: str, on: str, long_context: bool
) -> None:
    cost = cost_of(usage, model, on=on, long_context=long_context)
    assert all(part >= 0 for part in parts(cost))
    assert cost.total_pico == sum(parts(cost))


@given(usage=usages(), model=MODELS, on=DATES, long_context=st.booleans())
def test_cost_of_corrupt_negative_counts_is_never_negative(
    usage: Usage, model: str, on: str, long_context: bool
) -> None:
    negative = msgspec.structs.replace(usage, input_tokens=-5, output_tokens=-7)
    cost = cost_of(negative, model, on=on, long_context=long_context)
    assert all(part >= 0 for part in parts(cost))


COUNT_FIELDS = [
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_creation_1h_input_tokens",
    "cache_read_input_tokens",
    "web_search_requests",
]


@given(
    usage=usages(),
    model=MODELS,
    on=DATES,
    long_context=st.booleans(),
    field=st.sampled_from(COUNT_FIELDS),
    more=st.integers(min_value=0, max_value=500_000),
)
def test_cost_is_monotone_in_each_count(
    usage: Usage, model: str, on: str, long_context: bool, field: str, more: int
) -> None:
    bigger = msgspec.structs.replace(usage, **{field: getattr(usage, field) + more})
    small = cost_of(usage, model, on=on, long_context=long_context)
    large = cost_of(bigger, model, on=on, long_context=long_context)
    assert large.total_pico >= small.total_pico


@given(usage=usages(), model=MODELS, on=DATES)
def test_long_context_never_cheaper(usage: Usage, model: str, on: str) -> None:
    with_beta = cost_of(usage, model, on=on, long_context=True)
    without = cost_of(usage, model, on=on, long_context=False)
    assert with_beta.total_pico >= without.total_pico


@given(st.text() | st.sampled_from(SDK_MODEL_IDS))
def test_canonical_model_is_idempotent(model_id: str) -> None:
    canonical = canonical_model(model_id)
    if canonical is not None:
        assert canonical_model(canonical) == canonical


def test_every_canonical_name_is_its_own_canonical() -> None:
    for name in known_models():
        assert canonical_model(name) == name


GEOS = st.sampled_from(["", "us.", "eu.", "apac.", "jp.", "au.", "us-gov.", "global."])


@st.composite
def provider_forms(draw: st.DrawFn) -> tuple[str, str]:
    canonical = draw(st.sampled_from(sorted(known_models())))
    bedrock = f"{draw(GEOS)}anthropic.{canonical}{draw(st.sampled_from(['', '-v1', '-v1:0']))}"
    form = draw(
        st.sampled_from(
            [
                bedrock,
                f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{bedrock}",
                f"{canonical}@20250101",
                f"{canonical}[1m]",
                canonical.upper(),
            ]
        )
    )
    return canonical, form


@given(form=provider_forms(), usage=usages(), on=DATES, long_context=st.booleans())
def test_provider_forms_price_like_first_party(
    form: tuple[str, str], usage: Usage, on: str, long_context: bool
) -> None:
    canonical, model_id = form
    assert cost_of(usage, model_id, on=on, long_context=long_context) == cost_of(
        usage, canonical, on=on, long_context=long_context
    )
