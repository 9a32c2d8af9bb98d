"""Metrics: each method's effect on the exposition, bounded labels, separate registries."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from actors.observe.metrics import MAX_LABEL_VALUES, Metrics
from protocol.usage import Usage


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, frozenset(labels.items())), 0.0)


def test_a_query_life_is_counted() -> None:
    metrics = Metrics()
    metrics.query_started()
    assert value(metrics, "switchboard_active_queries") == 1
    metrics.retried("overloaded_error")
    metrics.upstream_latency("anthropic", 0.3)
    metrics.first_token("claude-sonnet-4-6", 1.5)
    metrics.fallback("claude-opus-4-6", "claude-sonnet-4-6")
    metrics.overloaded("claude-opus-4-6", True)
    metrics.query_finished(
        "claude-sonnet-4-6", "anthropic", "error", 2.0, error_type="overloaded_error"
    )
    assert value(metrics, "switchboard_active_queries") == 0
    labels = {"model": "claude-sonnet-4-6", "provider": "anthropic"}
    assert value(metrics, "switchboard_queries_total", outcome="error", **labels) == 1
    assert (
        value(metrics, "switchboard_query_errors_total", error_type="overloaded_error", **labels)
        == 1
    )
    assert value(metrics, "switchboard_query_duration_seconds_sum", **labels) == 2.0
    assert value(metrics, "switchboard_query_duration_seconds_bucket", le="2.5", **labels) == 1
    assert value(metrics, "switchboard_retries_total", cause="overloaded_error") == 1
    assert value(metrics, "switchboard_upstream_latency_seconds_count", provider="anthropic") == 1
    assert (
        value(metrics, "switchboard_time_to_first_token_seconds_sum", model="claude-sonnet-4-6")
        == 1.5
    )
    assert (
        value(
            metrics,
            "switchboard_fallbacks_total",
            from_model="claude-opus-4-6",
            to_model="claude-sonnet-4-6",
        )
        == 1
    )
    assert value(metrics, "switchboard_overloaded", model="claude-opus-4-6") == 1
    metrics.overloaded("claude-opus-4-6", False)
    assert value(metrics, "switchboard_overloaded", model="claude-opus-4-6") == 0


def test_usage_is_split_by_token_type_and_priced() -> None:
    metrics = Metrics()
    usage = Usage(
        input_tokens=10,
        output_tokens=20,
        cache_read_input_tokens=30,
        cache_creation_input_tokens=40,
        cache_creation_1h_input_tokens=15,
    )
    metrics.usage("m", usage, 0.25)
    metrics.usage("m", Usage(input_tokens=1), 0.0)
    by_type = {
        kind: value(metrics, "switchboard_tokens_total", model="m", type=kind)
        for kind in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
    }
    assert by_type == {
        "input": 11,
        "output": 20,
        "cache_read": 30,
        "cache_write_5m": 25,
        "cache_write_1h": 15,
    }
    assert value(metrics, "switchboard_cost_usd_total", model="m") == 0.25


def test_made_up_label_values_are_bounded() -> None:
    metrics = Metrics()
    for n in range(MAX_LABEL_VALUES + 10):
        metrics.retried(f"cause-{n}")
    causes = {
        dict(labels)["cause"]
        for name, labels in samples(metrics)
        if name == "switchboard_retries_total"
    }
    assert len(causes) == MAX_LABEL_VALUES + 1 and "other" in causes
    assert value(metrics, "switchboard_retries_total", cause="other") == 10


def test_sessions_and_http_and_registries_are_per_instance() -> None:
    one, two = Metrics(), Metrics()
    one.session_opened()
    one.session_opened()
    one.session_closed()
    one.http_request("messages", 200)
    assert value(one, "switchboard_active_sessions") == 1
    assert value(one, "switchboard_http_requests_total", route="messages", status="200") == 1
    assert value(two, "switchboard_active_sessions") == 0
    assert value(two, "switchboard_http_requests_total", route="messages", status="200") == 0
