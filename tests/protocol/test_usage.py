"""Usage merging (one message's cumulative frames) and summing (across messages)."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from protocol.assembly import MessageAssembler
from protocol.ledger import record_parts
from protocol.usage import (
    EMPTY_USAGE,
    MAX_TOKEN_COUNT,
    Usage,
    UsageIteration,
    WireCacheCreation,
    WireServerToolUse,
    WireUsage,
    WireUsageIteration,
    add_usage,
    merge_usage,
)


def wire(json: str) -> WireUsage:
    return msgspec.json.decode(json.encode(), type=WireUsage)


def merge_all(*parts: WireUsage, start: Usage = EMPTY_USAGE) -> Usage:
    acc = start
    for part in parts:
        acc = merge_usage(acc, part)
    return acc


MESSAGE_START = wire(
    '{"input_tokens": 1200, "output_tokens": 1, "cache_creation_input_tokens": 3000,'
    ' "cache_read_input_tokens": 5000,'
    ' "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 1000},'
    ' "server_tool_use": {"web_search_requests": 0}, "service_tier": "standard"}'
)


def counts(u: Usage) -> tuple[int, ...]:
    return (
        u.input_tokens,
        u.output_tokens,
        u.cache_creation_input_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_1h_input_tokens,
        u.web_search_requests,
        u.web_fetch_requests,
    )


# --- merge: one message ----------------------------------------------------------------------


def test_message_start_is_read_in_full() -> None:
    usage = merge_usage(EMPTY_USAGE, MESSAGE_START)
    assert counts(usage) == (1200, 1, 3000, 5000, 1000, 0, 0)
    assert usage.service_tier == "standard"
    assert usage.total_input_tokens == 9200


def test_delta_explicit_zeros_keep_the_start_counts() -> None:
    delta = wire(
        '{"input_tokens": 0, "output_tokens": 350, "cache_creation_input_tokens": 0,'
        ' "cache_read_input_tokens": 0}'
    )
    usage = merge_all(MESSAGE_START, delta)
    assert counts(usage) == (1200, 350, 3000, 5000, 1000, 0, 0)


def test_delta_nulls_keep_the_start_counts() -> None:
    delta = wire(
        '{"input_tokens": null, "output_tokens": 12, "cache_creation_input_tokens": null,'
        ' "cache_read_input_tokens": null, "cache_creation": null, "server_tool_use": null}'
    )
    assert counts(merge_all(MESSAGE_START, delta)) == (1200, 12, 3000, 5000, 1000, 0, 0)


def test_one_hour_split_kept_through_deltas() -> None:
    without_split = wire('{"output_tokens": 40}')
    # An echoed all-zero split must not drop the 1h part while its total is kept.
    zero_split = wire(
        '{"output_tokens": 80, "cache_creation_input_tokens": 0,'
        ' "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}}'
    )
    usage = merge_all(MESSAGE_START, without_split, zero_split)
    assert usage.cache_creation_input_tokens == 3000
    assert usage.cache_creation_1h_input_tokens == 1000
    assert usage.output_tokens == 80


def test_one_hour_split_never_exceeds_the_writes() -> None:
    part = WireUsage(
        cache_creation_input_tokens=100,
        cache_creation=WireCacheCreation(ephemeral_1h_input_tokens=500),
    )
    assert merge_usage(EMPTY_USAGE, part).cache_creation_1h_input_tokens == 100


def test_several_cumulative_deltas_give_the_last_value_not_a_sum() -> None:
    deltas = [wire(f'{{"output_tokens": {n}}}') for n in (10, 50, 120)]
    assert merge_all(MESSAGE_START, *deltas).output_tokens == 120


def test_server_tool_use_counters_are_cumulative() -> None:
    usage = merge_all(
        MESSAGE_START,
        wire('{"output_tokens": 5, "server_tool_use": {"web_search_requests": 1}}'),
        wire(
            '{"output_tokens": 9,'
            ' "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 4}}'
        ),
        wire('{"output_tokens": 11}'),
    )
    assert (usage.web_search_requests, usage.web_fetch_requests) == (2, 4)


def test_service_tier_from_the_start_speed_and_iterations_from_the_latest() -> None:
    advisor = WireUsageIteration(type="advisor_message", model="claude-opus-4-6", input_tokens=7)
    usage = merge_all(
        MESSAGE_START,
        WireUsage(output_tokens=3, service_tier="priority", speed="fast", iterations=[advisor]),
        WireUsage(output_tokens=4),
    )
    assert usage.service_tier == "standard"
    assert usage.speed == "fast"
    assert usage.iterations == (UsageIteration(type="advisor_message", model="claude-opus-4-6", input_tokens=7),)
    assert not usage.malformed


def test_unknown_wire_fields_are_ignored() -> None:
    part = wire('{"output_tokens": 3, "inference_geo": "us", "output_tokens_details": {}}')
    assert merge_usage(EMPTY_USAGE, part).output_tokens == 3


def test_negative_wire_counts_never_go_negative() -> None:
    part = WireUsage(
        input_tokens=-1,
        output_tokens=-2,
        cache_creation_input_tokens=-3,
        cache_read_input_tokens=-4,
        cache_creation=WireCacheCreation(ephemeral_1h_input_tokens=-5),
        server_tool_use=WireServerToolUse(web_search_requests=-6, web_fetch_requests=-7),
    )
    assert counts(merge_usage(EMPTY_USAGE, part)) == (0, 0, 0, 0, 0, 0, 0)


# --- add: across messages --------------------------------------------------------------------


def test_add_usage_sums_every_count() -> None:
    a = Usage(
        input_tokens=1,
        output_tokens=2,
        cache_creation_input_tokens=30,
        cache_read_input_tokens=4,
        cache_creation_1h_input_tokens=10,
        web_search_requests=5,
        web_fetch_requests=6,
        service_tier="standard",
    )
    b = Usage(
        input_tokens=10,
        output_tokens=20,
        cache_creation_input_tokens=300,
        cache_read_input_tokens=40,
        cache_creation_1h_input_tokens=100,
        web_search_requests=50,
        web_fetch_requests=60,
        speed="fast",
        iterations=(UsageIteration(type="advisor_message"),),
    )
    total = add_usage(a, b)
    assert counts(total) == (11, 22, 330, 44, 110, 55, 66)
    assert total.service_tier == "standard"
    assert total.speed == "fast"
    assert total.iterations == ()  # only meaningful on a single message


def test_empty_usage() -> None:
    assert EMPTY_USAGE.is_empty
    assert not Usage(web_fetch_requests=1).is_empty
    assert counts(add_usage(EMPTY_USAGE, Usage(output_tokens=3))) == (0, 3, 0, 0, 0, 0, 0)


# --- properties ------------------------------------------------------------------------------

MAYBE_INT = st.none() | st.integers(min_value=-1000, max_value=10**9)
COUNT = st.integers(min_value=0, max_value=10**9)

wire_usages = st.builds(
    WireUsage,
    input_tokens=MAYBE_INT,
    output_tokens=MAYBE_INT,
    cache_creation_input_tokens=MAYBE_INT,
    cache_read_input_tokens=MAYBE_INT,
    cache_creation=st.none()
    | st.builds(
        WireCacheCreation, ephemeral_5m_input_tokens=MAYBE_INT, ephemeral_1h_input_tokens=MAYBE_INT
    ),
    server_tool_use=st.none()
    | st.builds(WireServerToolUse, web_search_requests=MAYBE_INT, web_fetch_requests=MAYBE_INT),
    service_tier=st.none() | st.sampled_from(["standard", "priority", "batch"]),
    speed=st.none() | st.sampled_from(["standard", "fast"]),
)

usages = st.builds(
    Usage,
    input_tokens=COUNT,
    output_tokens=COUNT,
    cache_creation_input_tokens=COUNT,
    cache_read_input_tokens=COUNT,
    cache_creation_1h_input_tokens=COUNT,
    web_search_requests=COUNT,
    web_fetch_requests=COUNT,
)


@given(st.lists(wire_usages, max_size=8))
def test_merge_never_negative_and_split_within_total(parts: list[WireUsage]) -> None:
    usage = merge_all(*parts)
    assert all(n >= 0 for n in counts(usage))
    assert usage.cache_creation_1h_input_tokens <= usage.cache_creation_input_tokens


FIELDS = ("input", "output", "writes", "one_hour", "reads", "search", "fetch")


def snapshot(values: dict[str, int], present: set[str], speed: str | None) -> WireUsage:
    def get(name: str) -> int | None:
        return values[name] if name in present else None

    return WireUsage(
        input_tokens=get("input"),
        output_tokens=get("output"),
        cache_creation_input_tokens=get("writes"),
        cache_read_input_tokens=get("reads"),
        cache_creation=WireCacheCreation(ephemeral_1h_input_tokens=get("one_hour")),
        server_tool_use=WireServerToolUse(
            web_search_requests=get("search"), web_fetch_requests=get("fetch")
        ),
        speed=speed,
    )


@st.composite
def cumulative_streams(draw: st.DrawFn) -> tuple[WireUsage, list[WireUsage]]:
    """A message_start and message_deltas whose counts never decrease; every delta may omit
    fields, except the last, which repeats the running totals (as the API does)."""
    values = {name: draw(st.integers(0, 10_000)) for name in FIELDS}
    start = snapshot(values, set(FIELDS), None)
    start = msgspec.structs.replace(start, service_tier=draw(st.sampled_from(["standard", None])))
    deltas = []
    n = draw(st.integers(1, 6))
    for i in range(n):
        values = {name: v + draw(st.integers(0, 10_000)) for name, v in values.items()}
        last = i == n - 1
        present = set(FIELDS) if last else set(draw(st.sets(st.sampled_from(FIELDS))))
        speed = draw(st.sampled_from(["fast", "standard"] if last else ["fast", "standard", None]))
        deltas.append(snapshot(values, present, speed))
    return start, deltas


@given(cumulative_streams())
def test_merging_cumulative_snapshots_equals_merging_the_last(
    stream: tuple[WireUsage, list[WireUsage]],
) -> None:
    start, deltas = stream
    assert merge_all(start, *deltas) == merge_all(start, deltas[-1])


@given(usages, usages, usages)
def test_add_usage_is_associative_on_counts(a: Usage, b: Usage, c: Usage) -> None:
    assert counts(add_usage(add_usage(a, b), c)) == counts(add_usage(a, add_usage(b, c)))


@given(usages, usages)
def test_add_usage_is_commutative_on_counts(a: Usage, b: Usage) -> None:
    assert counts(add_usage(a, b)) == counts(add_usage(b, a))


@given(st.lists(st.lists(wire_usages, max_size=4), max_size=5))
def test_session_totals_never_negative(messages: list[list[WireUsage]]) -> None:
    total = EMPTY_USAGE
    for frames in messages:
        total = add_usage(total, merge_all(*frames))
    assert all(n >= 0 for n in counts(total))


# --- validity: any JSON value in a count field ----------------------------------------------

ANY_VALUE = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 5, max_value=2**70)
    | st.floats()
    | st.text(max_size=5)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


def valid(value: object) -> bool:
    return value is None or (
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT
    )


@given(st.lists(st.tuples(*[ANY_VALUE] * 8), min_size=1, max_size=4))
def test_any_value_in_any_count_merges_bounded_and_flags_the_invalid(parts: list[tuple[object, ...]]) -> None:
    usage = EMPTY_USAGE
    for values in parts:
        usage = merge_usage(
            usage,
            WireUsage(
                input_tokens=values[0],
                output_tokens=values[1],
                cache_creation_input_tokens=values[2],
                cache_read_input_tokens=values[3],
                cache_creation=WireCacheCreation(ephemeral_5m_input_tokens=values[4], ephemeral_1h_input_tokens=values[5]),
                server_tool_use=WireServerToolUse(web_search_requests=values[6], web_fetch_requests=values[7]),
                iterations=[WireUsageIteration(type="advisor_message", model="m", input_tokens=values[0], output_tokens=values[7])],
            ),
        )
    assert all(0 <= n <= MAX_TOKEN_COUNT for n in counts(usage))
    for iteration in usage.iterations:
        assert all(
            n is None or 0 <= n <= MAX_TOKEN_COUNT
            for n in (iteration.input_tokens, iteration.output_tokens)
        )
    assert usage.malformed == (not all(valid(v) for values in parts for v in values))


def test_each_kind_of_bad_count_is_repaired_and_flagged() -> None:
    start = wire('{"input_tokens": 100, "output_tokens": 1, "cache_read_input_tokens": 50}')
    cases = [
        ('{"output_tokens": 18446744073709551616}', {"output_tokens": MAX_TOKEN_COUNT}),
        ('{"input_tokens": 1e30}', {"input_tokens": MAX_TOKEN_COUNT}),
        ('{"output_tokens": -7}', {"output_tokens": 0}),
        ('{"input_tokens": -7}', {"input_tokens": 100}),
        ('{"output_tokens": 12.9}', {"output_tokens": 12}),
        ('{"output_tokens": "12"}', {"output_tokens": 1}),
        ('{"cache_read_input_tokens": true}', {"cache_read_input_tokens": 50}),
        ('{"output_tokens": [5]}', {"output_tokens": 1}),
        ('{"server_tool_use": {"web_search_requests": 1e400}}', None),
    ]
    for text, expected in cases:
        try:
            part = wire(text)
        except msgspec.DecodeError:
            assert expected is None  # not JSON msgspec accepts: a malformed event, elsewhere
            continue
        usage = merge_all(start, part)
        assert usage.malformed, text
        assert expected is not None
        for name, value in expected.items():
            assert getattr(usage, name) == value, text
    assert not merge_all(start, wire('{"output_tokens": 1000000000}')).malformed


def test_malformed_survives_later_merges_and_sums() -> None:
    bad = merge_all(wire('{"input_tokens": -1}'), wire('{"output_tokens": 5}'))
    assert bad.malformed and bad.output_tokens == 5
    assert add_usage(EMPTY_USAGE, bad).malformed and add_usage(bad, EMPTY_USAGE).malformed
    assert not add_usage(EMPTY_USAGE, EMPTY_USAGE).malformed


def test_a_malformed_usage_is_priced_as_repaired_and_marked_unknown_cost() -> None:
    usage = merge_all(wire('{"input_tokens": 5, "output_tokens": 99999999999999999999999}'))
    parts = record_parts(usage, "claude-sonnet-4-6", on="2026-12-01")
    assert all(part.unknown_model for part in parts)
    # 10**9 output tokens at $15/Mtok: priced, never free; and within an SQLite integer.
    assert parts[0].output_tokens == MAX_TOKEN_COUNT
    assert parts[0].cost_pico == 5 * 3_000_000 + MAX_TOKEN_COUNT * 15_000_000 < 2**63
    sound = record_parts(merge_all(wire('{"input_tokens": 5}')), "claude-sonnet-4-6", on="2026-12-01")
    assert not any(part.unknown_model for part in sound)


def test_bad_counts_in_a_stream_never_break_the_assembler() -> None:
    assembler = MessageAssembler()
    assembler.feed(
        "message_start",
        b'{"type":"message_start","message":{"id":"m","model":"claude-sonnet-4-6",'
        b'"usage":{"input_tokens":"many","cache_read_input_tokens":-3,"output_tokens":1.5,'
        b'"iterations":[{"type":"advisor_message","model":"claude-opus-4-6","input_tokens":1e300}]}}}',
    )
    assembler.feed(
        "message_delta",
        b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9223372036854775808}}',
    )
    usage = assembler.usage
    assert usage.malformed and usage.output_tokens == MAX_TOKEN_COUNT and usage.input_tokens == 0
    assert usage.iterations[0].input_tokens == MAX_TOKEN_COUNT
    assert assembler.message()["usage"]["output_tokens"] == MAX_TOKEN_COUNT
