"""Ledger arithmetic: usage records and a session's totals (pure).

A **usage record** is one upstream message's usage, priced. It is split into **parts**, one
per model (``record_parts``): the message itself, then each advisor sub-message at its own
model (docs/reference/reference-client.md 3.2). A record may be *provisional* (the input side, known at
``message_start``) and later replaced by its *final* version: ``SessionTotals.remove`` the
old parts, ``add`` the new ones, and the session counts the message exactly once.

A session's totals are what the reference client keeps (3.2, 3.3): the total cost, the API
duration with and without retries, per-model usage keyed by the model id *as sent upstream*
(input, output, cache read, cache creation, web search requests, cost) and the
unknown-model flag; and how much of it rests on estimated output counts (records of streams
cut short, ``protocol.estimate``): their output tokens and their cost, per model. Everything is integer: costs in picodollars, so adding and removing
parts in any order gives exactly the totals of the records that remain.
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocol.frames import CostSummary, ModelUsageSummary
from protocol.pricing import canonical_model, cost_by_model, usd
from protocol.usage import Usage

# The largest cost one part may record, in picodollars ($100,000). The dearest honest message
# (a million input tokens and 128k output on the dearest model in fast mode, a thousand web
# searches) costs about $60, and one count at ``protocol.usage.MAX_TOKEN_COUNT`` (10**9
# output tokens) about $75,000; but several such counts (10**9 web searches alone: $10**7)
# would price one part past what a ledger's integer column holds (2**63 - 1 picodollars,
# about $9.2 million). A part priced above this is recorded at it and marked unknown-cost,
# like any usage whose true cost is not known (docs/protocol.md, the cost summary). Sums of
# many such parts are the stores' to keep in range (``actors.store.sqlite``).
MAX_PART_COST_PICO: Final = 10**17


class RecordPart(msgspec.Struct, frozen=True, kw_only=True):
    """One model's share of a usage record: its counts and its exact cost.

    ``canonical`` is the canonical model name, or the id itself for an unknown model.
    ``estimated``: its ``output_tokens`` is the gateway's estimate (only the message's own
    part: an advisor sub-message's counts are the upstream's).
    """

    model: str
    canonical: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    cost_pico: int = 0
    unknown_model: bool = False
    estimated: bool = False


def record_parts(
    usage: Usage, model: str, *, on: str, long_context: bool = False
) -> tuple[RecordPart, ...]:
    """Price one message's usage (``model`` as sent upstream), split per model.

    The parts' ``cost_pico`` add up to ``cost_of(usage, model, on=on, ...).total_pico``, but a
    part priced above ``MAX_PART_COST_PICO`` costs that and is marked ``unknown_model``.
    A ``malformed`` usage (counts repaired, ``protocol.usage``) marks every part
    ``unknown_model``: its cost is not known, and the session's summary says so. An
    ``estimated`` usage marks the message's own part (the first) ``estimated``.
    Raises ``ValueError`` only for a malformed ``on`` (an ISO date).
    """
    return tuple(
        RecordPart(
            model=part_model,
            canonical=cost.canonical,
            input_tokens=part.input_tokens,
            output_tokens=part.output_tokens,
            cache_creation_input_tokens=part.cache_creation_input_tokens,
            cache_creation_1h_input_tokens=part.cache_creation_1h_input_tokens,
            cache_read_input_tokens=part.cache_read_input_tokens,
            web_search_requests=part.web_search_requests,
            web_fetch_requests=part.web_fetch_requests,
            cost_pico=min(cost.total_pico, MAX_PART_COST_PICO),
            unknown_model=cost.unknown_model or usage.malformed or cost.total_pico > MAX_PART_COST_PICO,
            estimated=usage.estimated and index == 0,
        )
        for index, (part_model, part, cost) in enumerate(
            cost_by_model(usage, model, on=on, long_context=long_context)
        )
    )


class ModelTotals(msgspec.Struct, kw_only=True):
    """One model's running totals within a session (mutable; owned by its SessionTotals).

    ``estimated_output_tokens`` / ``estimated_cost_pico``: the part of ``output_tokens`` /
    ``cost_pico`` from records whose output count is an estimate (the whole cost of those
    records, their input side included).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    cost_pico: int = 0
    estimated_output_tokens: int = 0
    estimated_cost_pico: int = 0

    def add(self, part: RecordPart, sign: int) -> None:
        """Add (``sign`` 1) or take away (``sign`` -1) one part's counts and cost."""
        self.input_tokens += sign * part.input_tokens
        self.output_tokens += sign * part.output_tokens
        self.cache_creation_input_tokens += sign * part.cache_creation_input_tokens
        self.cache_creation_1h_input_tokens += sign * part.cache_creation_1h_input_tokens
        self.cache_read_input_tokens += sign * part.cache_read_input_tokens
        self.web_search_requests += sign * part.web_search_requests
        self.web_fetch_requests += sign * part.web_fetch_requests
        self.cost_pico += sign * part.cost_pico
        if part.estimated:
            self.estimated_output_tokens += sign * part.output_tokens
            self.estimated_cost_pico += sign * part.cost_pico

    def merged(self, other: ModelTotals) -> ModelTotals:
        """A new total: this one plus ``other``."""
        return ModelTotals(
            **{f: getattr(self, f) + getattr(other, f) for f in self.__struct_fields__}
        )


class SessionTotals(msgspec.Struct, kw_only=True):
    """A session's cost state (mutable; owned by the CostLedger, rebuilt from its store).

    ``models`` keeps the order in which the models were first used.
    """

    total_pico: int = 0
    api_duration_ms: int = 0
    api_duration_without_retries_ms: int = 0
    models: dict[str, ModelTotals] = msgspec.field(default_factory=dict)
    unknown_model_cost: bool = False

    def add(self, parts: tuple[RecordPart, ...]) -> None:
        """Count a record's parts."""
        self._apply(parts, 1)

    def remove(self, parts: tuple[RecordPart, ...]) -> None:
        """Stop counting a record's parts (it is being replaced by a newer version).

        The unknown-model flag stays: a replacement has the same model, so the same flag.
        """
        self._apply(parts, -1)

    def _apply(self, parts: tuple[RecordPart, ...], sign: int) -> None:
        for part in parts:
            totals = self.models.get(part.model)
            if totals is None:
                totals = self.models[part.model] = ModelTotals()
            totals.add(part, sign)
            self.total_pico += sign * part.cost_pico
            self.unknown_model_cost = self.unknown_model_cost or part.unknown_model

    def add_duration(self, duration_ms: int, without_retries_ms: int) -> None:
        """Count one query's API time (with and without its retries' waits)."""
        self.api_duration_ms += duration_ms
        self.api_duration_without_retries_ms += without_retries_ms

    def merged(self, other: SessionTotals) -> SessionTotals:
        """A new total: this one plus ``other`` (per model, in first-use order)."""
        models = dict(self.models)
        for model, totals in other.models.items():
            mine = models.get(model)
            models[model] = totals.merged(ModelTotals()) if mine is None else mine.merged(totals)
        return SessionTotals(
            total_pico=self.total_pico + other.total_pico,
            api_duration_ms=self.api_duration_ms + other.api_duration_ms,
            api_duration_without_retries_ms=(
                self.api_duration_without_retries_ms + other.api_duration_without_retries_ms
            ),
            models=models,
            unknown_model_cost=self.unknown_model_cost or other.unknown_model_cost,
        )

    @property
    def estimated_pico(self) -> int:
        """The part of ``total_pico`` from records whose output count is an estimate."""
        return sum(totals.estimated_cost_pico for totals in self.models.values())

    def summary(self, session_id: str) -> CostSummary:
        """The docs/protocol.md cost summary (dollars are for display: sums stay integers here)."""
        return CostSummary(
            session_id=session_id,
            total_cost_usd=usd(self.total_pico),
            api_duration_ms=self.api_duration_ms,
            api_duration_without_retries_ms=self.api_duration_without_retries_ms,
            model_usage={
                model: ModelUsageSummary(
                    input_tokens=t.input_tokens,
                    output_tokens=t.output_tokens,
                    cache_read_input_tokens=t.cache_read_input_tokens,
                    cache_creation_input_tokens=t.cache_creation_input_tokens,
                    web_search_requests=t.web_search_requests,
                    cost_usd=usd(t.cost_pico),
                    estimated_output_tokens=t.estimated_output_tokens,
                )
                for model, t in self.models.items()
            },
            unknown_model_cost=self.unknown_model_cost,
            estimated_cost_usd=usd(self.estimated_pico),
        )


def short_name(model: str) -> str:
    """The name the reference client's cost display groups a model under: canonical if known."""
    return canonical_model(model) or model
