"""Metrics: the gateway's Prometheus metrics, one registry per gateway (no global state).

Role:
    Counts what the actors report through small typed methods, and renders the Prometheus
    text format for ``GET /metrics``. It is not an actor: every method is synchronous, never
    blocks and never fails, so any task may call it (prometheus-client locks internally).
Who calls what:
    ``internal_error``: whichever supervision boundary contained an unexpected exception.
    ``session_opened``/``session_closed``: the Gateway, when a session gains its first user
    (a WebSocket connection, an HTTP request) or loses its last. ``http_request``: the
    HttpDoor, once per response. Query outcomes, retries, fallbacks and overload state: the
    RetrySupervisor. Upstream latency and time to first token: the StreamRelay. Tokens and
    cost: the CostLedger, once per recorded upstream message; its health too. Queries refused
    for the ledger: the Gateway. The admission queue's length: the Admission; its rejections:
    the Gateway.
Metrics:
    Every name, type and label: actors/observe/metric_families.py (README has the same
    table), where each group of families is created.
The last hour (``recent``, for the dashboard's live panel, actors/doors/dashboard.py):
    Beside the counters, retries (by cause), fallbacks (``from -> to``), overload cooldowns
    entered (by model) and finished queries (by outcome) are counted in minute slots over
    the last hour (``protocol.dashboard.EventWindow``, on the ``clock`` given, monotonic),
    and the models in an overload cooldown now are kept (``overloaded_now``).
Bounded labels:
    Model names and error types come from clients and the upstream: each label keeps at most
    ``MAX_LABEL_VALUES`` distinct values, later ones are counted as ``other``, so a client
    sending made-up model names cannot grow the registry without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, Literal, final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
)

from actors.observe.metric_families import (
    AttemptFamilies,
    DoorFamilies,
    LedgerFamilies,
    OtlpFamilies,
    QueryFamilies,
    UsageFamilies,
)
from protocol.dashboard import EventWindow
from protocol.usage import Usage

# Enough for every model and provider id in use at once, small enough that a scrape of a
# registry flooded with made-up names stays a few hundred lines.
MAX_LABEL_VALUES: Final = 64
OTHER: Final = "other"
Outcome = Literal["done", "error", "aborted"]
TokenType = Literal["input", "output", "cache_read", "cache_write_5m", "cache_write_1h"]
# The supervision boundaries (docs/supervision.md): the label set of
# switchboard_internal_errors_total, fixed here so that it stays bounded.
Where = Literal[
    "query",
    "relay",
    "ws_reader",
    "ws_writer",
    "ws_connection",
    "http_request",
    "actor:RetrySupervisor",
    "actor:StreamRelay",
    "actor:ClientPool",
    "actor:CostLedger",
    "actor:BootstrapFetcher",
]


@final
class Metrics:
    """The gateway's metrics (see the module docstring). ``render()`` is the scrape body."""

    content_type: Final = CONTENT_TYPE_LATEST

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._seen: dict[str, set[str]] = {}
        self._clock = clock
        self._recent = EventWindow()
        self._overloaded_now: set[str] = set()
        self._door = DoorFamilies(registry)
        self._query = QueryFamilies(registry)
        self._attempt = AttemptFamilies(registry)
        self._usage = UsageFamilies(registry)
        self._ledger = LedgerFamilies(registry)
        self._otlp = OtlpFamilies(registry)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (``content_type`` names the format)."""
        return generate_latest(self.registry)

    def recent(self) -> dict[str, dict[str, int]]:
        """The last hour's events: ``{"retries"|"fallbacks"|"overloads"|"queries": {label: n}}``
        (kinds with no event are absent)."""
        return self._recent.counts(self._clock())

    def overloaded_now(self) -> list[str]:
        """The models in an overload cooldown now, sorted."""
        return sorted(self._overloaded_now)

    def active(self) -> tuple[int, int]:
        """``(queries in flight, sessions in use)``: the two gauges' values now."""
        queries = self.registry.get_sample_value("switchboard_active_queries") or 0.0
        sessions = self.registry.get_sample_value("switchboard_active_sessions") or 0.0
        return int(queries), int(sessions)

    def _label(self, kind: str, value: str) -> str:
        seen = self._seen.setdefault(kind, set())
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES:
            return OTHER
        seen.add(value)
        return value

    # --- sessions and the doors -----------------------------------------------------------

    def queued_queries(self, n: int) -> None:
        """The admission queue's length now."""
        self._door.queued.set(n)

    def admission_rejected(self) -> None:
        """A query's wait for a slot ran out (``Overloaded``)."""
        self._door.admission_rejections.inc()

    def session_opened(self) -> None:
        self._door.active_sessions.inc()

    def session_closed(self) -> None:
        self._door.active_sessions.dec()

    def http_request(self, route: str, status: int) -> None:
        """One HTTP door response. ``route`` is one of the door's fixed route names."""
        self._door.http.labels(route=route, status=str(status)).inc()

    def internal_error(self, where: Where) -> None:
        """A supervision boundary contained an unexpected exception (counted once, where it
        was caught first)."""
        self._door.internal.labels(where=where).inc()

    # --- queries (RetrySupervisor) --------------------------------------------------------

    def query_started(self) -> None:
        """A query began (before its first attempt). Pair with exactly one ``query_finished``."""
        self._query.active_queries.inc()

    def query_finished(
        self,
        model: str,
        provider: str,
        outcome: Outcome,
        duration: float,
        *,
        error_type: str | None = None,
    ) -> None:
        """A query ended with its terminal frame. ``model`` is the model it asked for (a switch
        to a fallback is counted by ``fallback``); ``error_type`` for ``outcome="error"``."""
        model = self._label("model", model)
        provider = self._label("provider", provider)
        self._query.active_queries.dec()
        self._query.queries.labels(model=model, provider=provider, outcome=outcome).inc()
        self._recent.add("queries", outcome, self._clock())
        self._query.duration.labels(model=model, provider=provider).observe(duration)
        if outcome == "error" and error_type is not None:
            error_type = self._label("error_type", error_type)
            self._query.errors.labels(model=model, provider=provider, error_type=error_type).inc()

    def retried(self, cause: str) -> None:
        """A retry was announced; ``cause`` is the failed attempt's error type."""
        cause = self._label("cause", cause)
        self._query.retries.labels(cause=cause).inc()
        self._recent.add("retries", cause, self._clock())

    def fallback(self, from_model: str, to_model: str) -> None:
        from_model, to_model = self._label("model", from_model), self._label("model", to_model)
        self._query.fallbacks.labels(from_model=from_model, to_model=to_model).inc()
        self._recent.add("fallbacks", f"{from_model} -> {to_model}", self._clock())

    def gate_answered(self, model: str) -> None:
        """An overload gate answered a request for the upstream (docs/protocol.md 2)."""
        self._query.gate_answers.labels(model=self._label("model", model)).inc()

    def overloaded(self, model: str, active: bool) -> None:
        """The model entered (True) or left (False) an overload cooldown."""
        model = self._label("model", model)
        self._query.overloaded.labels(model=model).set(1 if active else 0)
        if active:
            self._overloaded_now.add(model)
            self._recent.add("overloads", model, self._clock())
        else:
            self._overloaded_now.discard(model)

    # --- attempts (StreamRelay) -----------------------------------------------------------

    def upstream_latency(self, provider: str, seconds: float) -> None:
        """An attempt's response headers arrived ``seconds`` after it was sent."""
        self._attempt.latency.labels(provider=self._label("provider", provider)).observe(seconds)

    def first_token(self, model: str, seconds: float) -> None:
        """A query's first content was relayed ``seconds`` after the query started."""
        self._attempt.first_token.labels(model=self._label("model", model)).observe(seconds)

    # --- usage and cost (CostLedger) ------------------------------------------------------

    def tokens(self, model: str, kind: TokenType, n: int) -> None:
        if n > 0:
            self._usage.tokens.labels(model=self._label("model", model), type=kind).inc(n)

    def cost(self, model: str, usd: float) -> None:
        if usd > 0:
            self._usage.cost.labels(model=self._label("model", model)).inc(usd)

    def token_spend(self, name: str, usd: float) -> None:
        """A query's real cost settled to a ledger token's budget (bounded as models are)."""
        if usd > 0:
            self._usage.token_spend.labels(token=self._label("token", name)).inc(usd)

    def usage(self, model: str, usage: Usage, usd: float) -> None:
        """One recorded upstream message: its tokens by type and its cost."""
        five_minute = usage.cache_creation_input_tokens - usage.cache_creation_1h_input_tokens
        self.tokens(model, "input", usage.input_tokens)
        self.tokens(model, "output", usage.output_tokens)
        self.tokens(model, "cache_read", usage.cache_read_input_tokens)
        self.tokens(model, "cache_write_5m", five_minute)
        self.tokens(model, "cache_write_1h", usage.cache_creation_1h_input_tokens)
        self.cost(model, usd)

    # --- the cost ledger's health (CostLedger, Gateway) -----------------------------------

    def ledger_health(self, *, healthy: bool, pending_records: int) -> None:
        self._ledger.ledger_healthy.set(1 if healthy else 0)
        self._ledger.ledger_pending.set(pending_records)

    def ledger_commit_failed(self) -> None:
        self._ledger.ledger_commit_failures.inc()

    def ledger_read_failed(self) -> None:
        self._ledger.ledger_read_failures.inc()

    def otlp_export(self, signal: str, encoding: str, items: int | None) -> None:
        """An OTLP export received: its item count, or None when it did not decode."""
        outcome = "undecodable" if items is None else "accepted"
        self._otlp.otlp_exports.labels(signal=signal, encoding=encoding, outcome=outcome).inc()
        if items:
            self._otlp.otlp_items.labels(signal=signal).inc(items)

    def otlp_forward(self, destination: str, outcome: str) -> None:
        """One export's fate at a configured collector (a few, from the configuration)."""
        self._otlp.otlp_forwards.labels(destination=destination, outcome=outcome).inc()

    def ledger_refused(self) -> None:
        """A query was refused with ``ledger_unavailable``."""
        self._ledger.ledger_refused.inc()
