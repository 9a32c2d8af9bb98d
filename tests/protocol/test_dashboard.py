"""protocol/dashboard.py: query bounds, buckets, series, savings, the last hour's window."""

from __future__ import annotations

import datetime
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.observe.metrics import Metrics
from protocol.dashboard import (
    MAX_HOUR_BUCKETS,
    MAX_SERIES,
    OTHER,
    EventWindow,
    SpendRow,
    bucket_range,
    hit_rate,
    parse_spend_query,
    parse_top_query,
    savings_pico,
    spend_answer,
    token_label,
)
from protocol.errors import RemoteProtocolError
from protocol.pricing import price_for

NOW = datetime.datetime(2026, 12, 7, 15, 2, 48, 123456, tzinfo=datetime.UTC)


def row(bucket: str, model: str, cost: int, *, owner: str | None = None, reads: int = 0) -> SpendRow:
    return SpendRow(
        bucket=bucket, canonical=model, owner=owner, input_tokens=10, output_tokens=5,
        cache_creation_input_tokens=0, cache_read_input_tokens=reads, cost_pico=cost, messages=1,
    )


def test_defaults_and_buckets() -> None:
    hourly = parse_spend_query("bucket=hour", NOW)
    assert hourly.by == "model" and len(hourly.buckets) == 24
    assert hourly.buckets[-1] == "2026-12-07T15" and hourly.since == "2026-12-06T16"
    daily = parse_spend_query("by=token&since=2026-12-01", NOW)
    assert daily.buckets == tuple(f"2026-12-0{d}" for d in range(1, 8))
    assert parse_spend_query("bucket=hour&since=2026-12-07T16:30:00%2B02:00", NOW).buckets == (
        "2026-12-07T14", "2026-12-07T15",
    )
    assert parse_top_query("", NOW).top == 10 and parse_top_query("top=100", NOW).top == 100


@pytest.mark.parametrize(
    "query",
    ["bucket=minute", "by=owner", "since=yesterday", "since=2027-01-01", "x=1",
     "bucket=hour&since=2026-11-01", "since=2020-01-01", "a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9"],
)
def test_bad_spend_queries(query: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_spend_query(query, NOW)


@given(st.text(max_size=60), st.sampled_from(["day", "hour"]))
def test_any_since_is_answered_or_refused_as_a_bad_request(since: str, bucket: str) -> None:
    try:
        query = parse_spend_query(urllib.parse.urlencode({"since": since, "bucket": bucket}), NOW)
    except RemoteProtocolError:
        return
    assert 1 <= len(query.buckets) <= (MAX_HOUR_BUCKETS if bucket == "hour" else 366)


@pytest.mark.parametrize("since", ["0001-01-01T00:00+01:00", "9999-12-31T23:59-23:59", "2026-13-01"])
def test_edge_dates_are_bad_requests(since: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_spend_query(urllib.parse.urlencode({"since": since}), NOW)


@given(st.integers(min_value=0, max_value=MAX_HOUR_BUCKETS - 1))
def test_hour_ranges_within_the_bound(hours: int) -> None:
    keys = bucket_range(NOW - datetime.timedelta(hours=hours), NOW, "hour")
    assert len(keys) == hours + 1 and list(keys) == sorted(set(keys))


def test_series_are_ranked_capped_and_filled() -> None:
    query = parse_spend_query("bucket=hour&since=2026-12-07T13:00", NOW)
    rows = [row("2026-12-07T13", f"m{i:02}", 100 + i) for i in range(MAX_SERIES + 3)]
    rows.append(row("2026-12-07T15", "m00", 50))
    rows.append(row("2026-12-06T01", "m00", 10**9))  # outside the range: ignored
    answer = spend_answer(query, rows)
    series = answer["series"]
    assert isinstance(series, list)
    keys = [s["key"] for s in series]
    assert len(keys) == MAX_SERIES and keys[-1] == OTHER and keys[0] == "m00"
    assert answer["totals"]["cost_pico"] == sum(100 + i for i in range(MAX_SERIES + 3)) + 50  # type: ignore[index]
    first = answer["series"][0]  # type: ignore[index]
    assert first["cost_usd"] == [100e-12, 0.0, 50e-12]


def test_cache_savings_and_hit_rate() -> None:
    entry = price_for("claude-sonnet-4-6", "2026-12-07")
    assert entry is not None
    per_token = entry.standard.input - entry.standard.cache_read
    assert per_token > 0
    assert savings_pico("claude-sonnet-4-6", "2026-12-07T15", 1000) == 1000 * per_token
    assert hit_rate(0, 0, 0) is None and hit_rate(10, 30, 60) == 0.3
    assert token_label(None) == "no token" and token_label("ab" * 32) == "token abababab"


def test_event_window_forgets_after_an_hour() -> None:
    window = EventWindow()
    window.add("retries", "overloaded_error", 0.0)
    window.add("retries", "overloaded_error", 59.0)
    window.add("fallbacks", "a -> b", 3000.0)
    assert window.counts(3000.0) == {"retries": {"overloaded_error": 2}, "fallbacks": {"a -> b": 1}}
    assert window.counts(3600.0) == {"fallbacks": {"a -> b": 1}}
    assert window.counts(3000.0 + 3600.0) == {}


def test_metrics_keep_the_last_hour_and_the_overloaded_models() -> None:
    now = [1000.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.retried("overloaded_error")
    metrics.fallback("claude-opus-4-6", "claude-sonnet-4-6")
    metrics.overloaded("claude-opus-4-6", True)
    metrics.query_started()
    assert metrics.active() == (1, 0)
    metrics.query_finished("claude-opus-4-6", "firstParty", "done", 1.0)
    assert metrics.overloaded_now() == ["claude-opus-4-6"]
    assert metrics.recent() == {
        "fallbacks": {"claude-opus-4-6 -> claude-sonnet-4-6": 1},
        "overloads": {"claude-opus-4-6": 1},
        "queries": {"done": 1},
        "retries": {"overloaded_error": 1},
    }
    metrics.overloaded("claude-opus-4-6", False)
    now[0] += 3600.0
    assert metrics.overloaded_now() == [] and metrics.recent() == {} and metrics.active() == (0, 0)
