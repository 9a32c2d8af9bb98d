"""A query's budgets: reserving its worst case against its ledger token and the signed-in
user's and groups' subjects before it starts, topping the reservations up before each
further billed attempt, settling them to its cost when it ends, and the error a refusal
ends it with (docs/protocol.md "Access tokens and budgets"; the Gateway's ``start_query``).
"""

from __future__ import annotations

import logging
from typing import Final

import msgspec

from actors.access.budgets import Budgets, HeldReservation, Reservation
from actors.observe.metrics import Metrics
from actors.store.rows import STORE_ERRORS
from actors.store.token_rows import SUBJECT_PREFIXES
from actors.supervisor.options import QueryOptions
from protocol.budget import Refusal
from protocol.frames import ErrorInfo, Query
from protocol.wire import JsonObject

log = logging.getLogger("switchboard.gateway")

# A token's refusal that waiting does not end (protocol/budget.py ``Refusal.kind``): not a
# 429. The budget, rpm and concurrency refusals are ``rate_limit_error`` 429.
_REFUSALS: Final = {"model": ("permission_error", 403), "revoked": ("authentication_error", 401)}


async def reserve_all(
    budgets: Budgets, metrics: Metrics, names: tuple[str, ...], session_id: str, query: Query, options: QueryOptions
) -> list[HeldReservation] | ErrorInfo:
    """Reserve the query's worst case against each subject of ``names`` in turn (its
    token, its user, their groups), or the first refusal (the ones already made are
    then settled to 0)."""
    holds: list[HeldReservation] = []
    for name in names:
        reserved = await _reserve(budgets, metrics, name, session_id, query, options)
        if isinstance(reserved, ErrorInfo):
            settle_all(holds, 0)
            return reserved
        holds.append(HeldReservation(budgets, reserved))
    return holds


async def top_up_all(
    budgets: Budgets, metrics: Metrics, holds: list[HeldReservation], query_id: str, request: JsonObject
) -> ErrorInfo | None:
    """``_top_up`` each of the query's reservations (``reserve_all``'s); the first refusal ends the query
    (what was grown meanwhile is settled with the rest when it ends)."""
    for held in holds:
        refused = await _top_up(budgets, metrics, held, query_id, request)
        if refused is not None:
            return refused
    return None


async def _reserve(
    budgets: Budgets, metrics: Metrics, name: str, session_id: str, query: Query, options: QueryOptions
) -> Reservation | ErrorInfo:
    """Reserve the query's worst case for token ``name``, or the error that ends it."""
    size = len(options.raw_body) if options.raw_body is not None else len(msgspec.json.encode(query.request))
    try:
        result = await budgets.reserve(name, query.request, size, session_id=session_id, query_id=query.id)
    except STORE_ERRORS as exc:
        log.error("query %s: the budget of token %s cannot be checked: %s", query.id, name, exc)
        metrics.ledger_refused()
        return ErrorInfo(
            type="ledger_unavailable", message="the budget cannot be checked now", status=503, request_id=None
        )
    if isinstance(result, Refusal):
        log.info("query %s refused: %s", query.id, result.message)
        return _refused(name, result)
    return result


async def _top_up(
    budgets: Budgets, metrics: Metrics, held: HeldReservation, query_id: str, request: JsonObject
) -> ErrorInfo | None:
    """Before another billed attempt of a query under a budget: grow its reservation by
    that attempt's worst case, or the error that ends the query (docs/protocol.md
    "Access tokens and budgets")."""
    try:
        refusal = await budgets.top_up(held, request, len(msgspec.json.encode(request)))
    except STORE_ERRORS as exc:
        log.error("query %s: the budget of token %s cannot be checked: %s", query_id, held.name, exc)
        metrics.ledger_refused()
        return ErrorInfo(
            type="ledger_unavailable", message="the budget cannot be checked now", status=503, request_id=None
        )
    if refusal is None:
        return None
    log.info("query %s: retry refused: %s", query_id, refusal.message)
    return _refused(held.name, refusal)


def _refused(name: str, refusal: Refusal) -> ErrorInfo:
    """The error a budget refusal ends a query with: 429 ``rate_limit_error`` (with when to
    try again), but 403/401 for a model or a revoked token, and 429 ``billing_error`` for a
    user's or a group's spend cap (the gateway protocol's word for it: Claude Code then shows
    the message and does not retry into the block; README.md "Claude Code for a whole
    organisation")."""
    error_type, status = _REFUSALS.get(refusal.kind, ("rate_limit_error", 429))
    if refusal.kind == "budget" and name.startswith(SUBJECT_PREFIXES):
        error_type = "billing_error"
    return ErrorInfo(
        type=error_type, message=refusal.message, status=status, request_id=None, retry_after_s=refusal.retry_after_s
    )


def settle_all(holds: list[HeldReservation], actual_pico: int) -> None:
    """Settle every reservation of a query to its real cost (each subject spent it all)."""
    for held in holds:
        held.settle(actual_pico)
