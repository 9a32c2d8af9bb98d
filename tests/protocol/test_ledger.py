"""Ledger arithmetic: record parts, add/remove, summaries (pure, hypothesis)."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from protocol.ledger import MAX_PART_COST_PICO, RecordPart, SessionTotals, record_parts
from protocol.pricing import cost_of, usd
from protocol.usage import MAX_TOKEN_COUNT, Usage, UsageIteration

ON = "2026-11-26"
MODELS = ["claude-sonnet-4-6", "us.anthropic.claude-opus-4-6-v1", "claude-haiku-4-5", "mystery-model-1"]

counts = st.integers(0, 2_000_000)
iterations = st.lists(
    st.builds(
        UsageIteration,
        type=st.sampled_from(["advisor_message", "message"]),
        model=st.sampled_from([*MODELS, None]),
        input_tokens=st.one_of(st.none(), counts),
        output_tokens=st.one_of(st.none(), counts),
    ),
    max_size=3,
).map(tuple)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    writes = draw(counts)
    return Usage(
        input_tokens=draw(counts),
        output_tokens=draw(counts),
        cache_creation_input_tokens=writes,
        cache_creation_1h_input_tokens=draw(st.integers(0, writes)),
        cache_read_input_tokens=draw(counts),
        web_search_requests=draw(st.integers(0, 20)),
        speed=draw(st.sampled_from([None, "fast"])),
        iterations=draw(iterations),
    )


@given(usage=usages(), model=st.sampled_from(MODELS), long_context=st.booleans())
def test_the_parts_of_a_record_add_up_to_its_cost(usage: Usage, model: str, long_context: bool) -> None:
    parts = record_parts(usage, model, on=ON, long_context=long_context)
    whole = cost_of(usage, model, on=ON, long_context=long_context)
    assert sum(p.cost_pico for p in parts) == whole.total_pico
    assert parts[0].model == model and parts[0].input_tokens == usage.input_tokens
    assert any(p.unknown_model for p in parts) == whole.unknown_model
    assert all(p.cost_pico >= 0 for p in parts)


@given(
    records=st.lists(st.tuples(usages(), st.sampled_from(MODELS)), max_size=6),
    replaced=st.lists(st.tuples(usages(), st.sampled_from(MODELS)), max_size=6),
)
def test_removing_a_replaced_record_leaves_exactly_the_others(
    records: list[tuple[Usage, str]], replaced: list[tuple[Usage, str]]
) -> None:
    kept = [record_parts(u, m, on=ON) for u, m in records]
    gone = [record_parts(u, m, on=ON) for u, m in replaced]
    mixed = SessionTotals()
    for parts in gone + kept:
        mixed.add(parts)
    for parts in gone:
        mixed.remove(parts)
    clean = SessionTotals()
    for parts in kept:
        clean.add(parts)
    assert mixed.total_pico == clean.total_pico == sum(p.cost_pico for parts in kept for p in parts)
    for model, totals in clean.models.items():
        assert mixed.models[model] == totals
    assert all(t.cost_pico == 0 and t.input_tokens == 0 for m, t in mixed.models.items() if m not in clean.models)


def test_summary_is_keyed_by_the_model_as_sent_with_durations_and_the_unknown_flag() -> None:
    totals = SessionTotals()
    totals.add(record_parts(Usage(input_tokens=1000, output_tokens=100), "claude-sonnet-4-6", on=ON))
    totals.add(record_parts(Usage(input_tokens=1000), "mystery-model-1", on=ON))
    totals.add_duration(2500, 1000)
    summary = totals.summary("s")
    # Sonnet 4.6: $3 / $15 per Mtok; the unknown model at that documented default, flagged.
    assert summary.total_cost_usd == usd(1000 * 3_000_000 + 100 * 15_000_000 + 1000 * 3_000_000) == 0.0075
    assert list(summary.model_usage) == ["claude-sonnet-4-6", "mystery-model-1"]
    assert summary.unknown_model_cost and summary.api_duration_ms == 2500
    assert summary.api_duration_without_retries_ms == 1000


def test_merging_sessions_adds_every_counter() -> None:
    one, two = SessionTotals(), SessionTotals()
    part = RecordPart(model="m", canonical="m", input_tokens=5, web_search_requests=1, cost_pico=7)
    one.add((part,))
    two.add((part, part))
    two.add_duration(10, 4)
    merged = one.merged(two)
    assert merged.total_pico == 21 and merged.models["m"].input_tokens == 15
    assert merged.models["m"].web_search_requests == 3 and merged.api_duration_ms == 10
    assert one.total_pico == 7  # the inputs are unchanged


def test_an_estimated_usage_marks_only_the_messages_own_part() -> None:
    advisor = UsageIteration(type="advisor_message", model="claude-opus-4-6", input_tokens=50, output_tokens=20)
    usage = Usage(input_tokens=1000, output_tokens=300, iterations=(advisor,), estimated=True)
    own, advised = record_parts(usage, "claude-sonnet-4-6", on=ON)
    assert own.estimated and not advised.estimated
    totals = SessionTotals()
    totals.add((own, advised))
    totals.add(record_parts(Usage(input_tokens=10, output_tokens=5), "claude-sonnet-4-6", on=ON))
    summary = totals.summary("s")
    assert summary.model_usage["claude-sonnet-4-6"].output_tokens == 305
    assert summary.model_usage["claude-sonnet-4-6"].estimated_output_tokens == 300
    assert summary.model_usage["claude-opus-4-6"].estimated_output_tokens == 0
    assert summary.estimated_cost_usd == usd(own.cost_pico) < summary.total_cost_usd
    # Merging sessions (the `switchboard cost` sums) keeps the estimated parts apart.
    merged = totals.merged(totals)
    assert merged.estimated_pico == 2 * own.cost_pico
    totals.remove((own, advised))
    assert totals.estimated_pico == 0 and totals.models["claude-sonnet-4-6"].estimated_output_tokens == 0


def test_a_part_priced_past_the_bound_is_recorded_at_it_and_flagged_unknown() -> None:
    # 10**9 web searches (a count within MAX_TOKEN_COUNT) cost $10**7: past what an integer
    # column holds (2**63 - 1 picodollars); once an OverflowError that lost the record.
    usage = Usage(input_tokens=10, output_tokens=5, web_search_requests=MAX_TOKEN_COUNT)
    assert cost_of(usage, "claude-sonnet-4-6", on=ON).total_pico > 2**63
    advisor = UsageIteration(type="advisor_message", model="claude-opus-4-6", output_tokens=MAX_TOKEN_COUNT,
                             input_tokens=MAX_TOKEN_COUNT)
    parts = record_parts(msgspec.structs.replace(usage, iterations=(advisor,) * 3), "claude-sonnet-4-6", on=ON)
    # The message's own part is bounded and flagged; each advisor part is priced as it is.
    advisor_pico = MAX_TOKEN_COUNT * (5_000_000 + 25_000_000)
    assert [p.cost_pico for p in parts] == [MAX_PART_COST_PICO] + [advisor_pico] * 3
    assert [p.unknown_model for p in parts] == [True, False, False, False]
    # Below the bound: priced exactly, not flagged.
    (honest,) = record_parts(Usage(input_tokens=MAX_TOKEN_COUNT), "claude-sonnet-4-6", on=ON)
    assert honest.cost_pico == MAX_TOKEN_COUNT * 3_000_000 and not honest.unknown_model
