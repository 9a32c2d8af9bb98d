"""The gateway's Prometheus metric families, created on a registry in groups by what they watch.

``Metrics`` (actors/observe/metrics.py) makes one of each group on its registry and counts
through them; nothing else touches them.

Metrics (every name, type and label; README has the same table):
    switchboard_queries_total{model,provider,outcome}    counter: finished queries;
        outcome is done, error or aborted
    switchboard_query_errors_total{model,provider,error_type}  counter: queries that
        failed for good, by the error type the client saw
    switchboard_query_duration_seconds{model,provider}   histogram: whole query, retries
        included
    switchboard_active_queries                           gauge: queries in flight
    switchboard_active_sessions                          gauge: sessions in use
    switchboard_retries_total{cause}                     counter: retries, by error type
    switchboard_fallbacks_total{from_model,to_model}     counter: switches to a fallback model
    switchboard_gate_answers_total{model}                counter: requests of clients that retry
        on their own answered by a model's overload gate, without an upstream attempt
    switchboard_upstream_latency_seconds{provider}       histogram: attempt sent to response
        headers
    switchboard_time_to_first_token_seconds{model}      histogram: query start to the first
        content relayed, retries included
    switchboard_tokens_total{model,type}                 counter: tokens by type: input,
        output, cache_read, cache_write_5m, cache_write_1h
    switchboard_cost_usd_total{model}                    counter: dollars, as priced by the
        ledger
    switchboard_token_spend_usd_total{token}             counter: dollars settled to the
        budgets of the ledger's access tokens (actors/access/budgets.py), by token NAME
    switchboard_overloaded{model}                        gauge: 1 while the model is in an
        overload cooldown
    switchboard_http_requests_total{route,status}        counter: HTTP door responses
    switchboard_internal_errors_total{where}             counter: unexpected exceptions
        contained at a supervision boundary (docs/supervision.md), by boundary: ``Where``
    switchboard_queued_queries                           gauge: queries waiting for one of
        the ``Config.max_queries`` slots (actors/supervisor/admission.py)
    switchboard_admission_rejections_total               counter: queries whose wait for a
        slot ran out (the HTTP door's 529s)
    switchboard_ledger_healthy                           gauge: 1 while the cost ledger commits
        and reads, 0 while it is degraded (``/healthz`` answers 503 then)
    switchboard_ledger_pending_records                   gauge: usage record versions
        waiting in memory for a commit (0 while healthy)
    switchboard_ledger_commit_failures_total             counter: failed ledger commits
        (retries included)
    switchboard_ledger_read_failures_total               counter: sessions whose stored
        state could not be read
    switchboard_ledger_refused_queries_total             counter: queries refused because
        the ledger could not commit (``ledger_unavailable``)
"""

from __future__ import annotations

from typing import Final, final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds. Upstream answers take from tens of milliseconds (an error) to the API's own
# 10-minute timeout; a query with retries can take longer still.
LATENCY_BUCKETS: Final = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
FIRST_TOKEN_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
QUERY_BUCKETS: Final = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@final
class DoorFamilies:
    """Sessions, the doors and the supervision boundaries (the Gateway, the HttpDoor, the
    Admission, every boundary)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.active_sessions = Gauge(
            "switchboard_active_sessions",
            "Sessions in use: with a WebSocket connection or an HTTP request in flight.",
            registry=registry,
        )
        self.http = Counter(
            "switchboard_http_requests",
            "HTTP door responses, by route and status.",
            ["route", "status"],
            registry=registry,
        )
        self.queued = Gauge(
            "switchboard_queued_queries",
            "Queries waiting for a slot (Config.max_queries).",
            registry=registry,
        )
        self.admission_rejections = Counter(
            "switchboard_admission_rejections",
            "Queries whose wait for a slot ran out (HTTP 529 overloaded_error).",
            registry=registry,
        )
        self.internal = Counter(
            "switchboard_internal_errors",
            "Unexpected exceptions contained at a supervision boundary, by boundary.",
            ["where"],
            registry=registry,
        )


@final
class QueryFamilies:
    """Queries (the RetrySupervisor): outcomes, errors, durations, queries in flight, retries,
    fallbacks, overload gates and cooldowns."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter(
            "switchboard_queries",
            "Finished queries, by outcome (done, error, aborted).",
            ["model", "provider", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "switchboard_query_errors",
            "Queries that failed for good, by the error type the client saw.",
            ["model", "provider", "error_type"],
            registry=registry,
        )
        self.duration = Histogram(
            "switchboard_query_duration_seconds",
            "Whole-query time, retries and backoff included.",
            ["model", "provider"],
            buckets=QUERY_BUCKETS,
            registry=registry,
        )
        # Not split by model: a query may end on another model than it began (a fallback),
        # and a gauge must come down on the label it went up on.
        self.active_queries = Gauge(
            "switchboard_active_queries", "Queries in flight.", registry=registry
        )
        self.retries = Counter(
            "switchboard_retries",
            "Retries, by the error that caused them.",
            ["cause"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "switchboard_fallbacks",
            "Switches to a fallback model.",
            ["from_model", "to_model"],
            registry=registry,
        )
        self.gate_answers = Counter(
            "switchboard_gate_answers",
            "Requests of clients that retry on their own answered by an overload gate, without an attempt.",
            ["model"],
            registry=registry,
        )
        self.overloaded = Gauge(
            "switchboard_overloaded",
            "1 while the model is in an overload cooldown, else 0.",
            ["model"],
            registry=registry,
        )


@final
class AttemptFamilies:
    """Upstream attempts (the StreamRelay): latency and time to first token."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "switchboard_upstream_latency_seconds",
            "From sending an attempt upstream to its response headers.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_token = Histogram(
            "switchboard_time_to_first_token_seconds",
            "From the start of a query to the first content relayed, retries included.",
            ["model"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )


@final
class UsageFamilies:
    """Usage and cost (the CostLedger): tokens, dollars, and dollars settled to token budgets."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tokens = Counter(
            "switchboard_tokens",
            "Tokens billed, by type: input, output, cache_read, cache_write_5m, cache_write_1h.",
            ["model", "type"],
            registry=registry,
        )
        self.cost = Counter(
            "switchboard_cost_usd",
            "Cost in US dollars, as priced by the ledger.",
            ["model"],
            registry=registry,
        )
        self.token_spend = Counter(
            "switchboard_token_spend_usd",
            "Dollars settled to the budgets of the ledger's access tokens, by token name.",
            ["token"],
            registry=registry,
        )


@final
class LedgerFamilies:
    """The cost ledger's health (the CostLedger, the Gateway)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ledger_healthy = Gauge(
            "switchboard_ledger_healthy",
            "1 while the cost ledger commits and reads, 0 while it is degraded.",
            registry=registry,
        )
        self.ledger_healthy.set(1)
        self.ledger_pending = Gauge(
            "switchboard_ledger_pending_records",
            "Usage record versions waiting in memory for a ledger commit.",
            registry=registry,
        )
        self.ledger_commit_failures = Counter(
            "switchboard_ledger_commit_failures",
            "Failed cost ledger commits, retries included.",
            registry=registry,
        )
        self.ledger_read_failures = Counter(
            "switchboard_ledger_read_failures",
            "Sessions whose stored state the cost ledger could not read.",
            registry=registry,
        )
        self.ledger_refused = Counter(
            "switchboard_ledger_refused_queries",
            "Queries refused because the cost ledger could not commit (ledger_unavailable).",
            registry=registry,
        )


@final
class OtlpFamilies:
    """Telemetry clients send the gateway (actors/observe/otlp.py, protocol/otlp.py)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.otlp_exports = Counter(
            "switchboard_otlp_exports",
            "OTLP exports received, by signal, encoding and outcome (accepted, undecodable).",
            ["signal", "encoding", "outcome"],
            registry=registry,
        )
        self.otlp_items = Counter(
            "switchboard_otlp_items",
            "Items (metrics, log records, spans) in the OTLP exports received, by signal.",
            ["signal"],
            registry=registry,
        )
        self.otlp_forwards = Counter(
            "switchboard_otlp_forwards",
            "OTLP exports forwarded to a collector, by outcome (sent, failed, dropped, circuit_open).",
            ["destination", "outcome"],
            registry=registry,
        )
