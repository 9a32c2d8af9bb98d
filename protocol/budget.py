"""Budgets by reservation: a query's worst-case cost, budget periods, reserve and settle (pure).

An access token from the ledger (``switchboard tokens``, docs/protocol.md "Access tokens
and budgets") may carry limits: a budget in USD per period, a bound on its concurrent
queries, a bound on its requests per minute. Before a query starts, the gateway RESERVES
the query's worst-case cost against the budget, atomically in the ledger's store
(``actors.store.tokens``: the row is locked, ``reserve`` decides, the row is written back,
in one transaction); at the query's end it SETTLES the reservation to the query's real
cost (``settle``). So ``spent + reserved <= budget`` holds at every commit, whatever the
number of gateway processes on one store, and the spend stays within the budget as long
as each query costs no more than its reservation.

Worst case (``worst_case_pico``), stated so a refusal can be checked::

    input  = ceil(request_bytes / BYTES_PER_TOKEN) tokens, priced as 1-hour cache writes
             (the dearest way to bill an input token: 2x the input price)
    output = max_tokens at the output price
    search = the web search tool's max_uses (else DEFAULT_WEB_SEARCHES) at its price
    priced with the model's fast prices when the request asks ``speed: fast``, and the
    long-context prices when the input could reach the tier (``cost_of``).

``BYTES_PER_TOKEN`` is 3: the densest content measured for protocol/estimate.py runs at
2.85 bytes per token, and the request's JSON syntax adds bytes that are not tokens, so the
bound holds for text. Images and PDFs are billed by their pixels and pages, not their
bytes: each image block adds ``IMAGE_TOKENS`` and each PDF document block (URL, file id or
base64) ``DOCUMENT_TOKENS`` input tokens (``media_tokens``; why those numbers: at the
constants). It does not bound: a PDF in a request of the 1M-context tier (it may pass
``DOCUMENT_TOKENS``), the advisor tool's sub-messages, a system prompt the gateway adds:
such a query settles to its real cost, which may pass its reservation.

Each attempt is billed, so before each attempt after the first (a retry, a fallback, the
non-streaming fallback, an output-limit recovery) the query TOPS UP its reservation by
that attempt's worst case, by the same formula (``top_up``, atomically in the store); a
top-up that does not fit ends the query with the budget's refusal, and it settles to
what its attempts so far cost.

Near the limit a query is REFUSED, not given a smaller ``max_tokens``: the answer the
client asked for is never silently cut short, and the rule is the same on every door.

Periods: ``day`` and ``month`` are UTC calendar periods; ``total`` never renews. A period's
key is its first day (``YYYY-MM-DD``; ``total``: ``""``); when the key changes, ``spent``
starts again at 0 (reservations in flight stay reserved and settle in the new period).
All money is integer picodollars (``protocol.prices``), so reserve and settle are exact.
"""

from __future__ import annotations

import datetime
import math
from typing import Final, Literal, get_args

import msgspec

from protocol.pricing import PICO_PER_USD, cost_of
from protocol.usage import Usage
from protocol.wire import JsonObject

Period = Literal["day", "month", "total"]
PERIODS: Final[tuple[str, ...]] = get_args(Period)
# The densest content measured runs at 2.85 bytes per token (protocol/estimate.py).
BYTES_PER_TOKEN: Final = 3
# Input tokens reserved per image block, whatever its source: an image is billed by its
# pixels, not its bytes (a URL or a file id is a few bytes; a compressed PNG of a large plain
# image is a few kilobytes). The API scales a large image down to about 1,600 tokens on most
# models and to at most 4,784 on the high-resolution ones (docs/protocol.md "Access tokens
# and budgets"): 4,800 bounds both.
IMAGE_TOKENS: Final = 4_800
# Input tokens reserved per PDF document block (URL, file id or base64): its pages' text and
# images are not bounded by its bytes. 200,000 is the context window of a request without
# the 1M-context tier, which bounds its whole input (docs/protocol.md says what it does not
# bound).
DOCUMENT_TOKENS: Final = 200_000
# The depth the walk for image and document blocks goes to (a tool_result's content is two
# levels below a message's): deeper blocks are not looked for.
MAX_BLOCK_DEPTH: Final = 8
# Web searches reserved for a web search tool without max_uses (the API bounds it by the
# model's turn; this is a guess, said in docs/protocol.md).
DEFAULT_WEB_SEARCHES: Final = 10
# The per-minute window of ``rpm``: fixed windows, keyed by the minute (``YYYY-MM-DDTHH:MM``).
RPM_KEY_CHARS: Final = 16


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """A subject's limits; None: no such limit."""

    budget_pico: int | None = None
    period: Period = "total"
    max_concurrent: int | None = None
    rpm: int | None = None
    models: tuple[str, ...] | None = None


class Account(msgspec.Struct, frozen=True, kw_only=True):
    """A subject's counters as stored: the current period's key and spend, the reserved
    sum of its queries in flight, how many are in flight, the current minute's requests."""

    period_key: str = ""
    spent_pico: int = 0
    reserved_pico: int = 0
    in_flight: int = 0
    rpm_key: str = ""
    rpm_count: int = 0


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """Why a query may not start: ``kind`` ``budget``, ``concurrency``, ``rpm`` or ``model``;
    ``retry_after_s``: seconds until it may (None: not by waiting)."""

    kind: str
    message: str
    retry_after_s: int | None


def period_key(period: Period, now: datetime.datetime) -> str:
    """The key of the period ``now`` (UTC) falls in."""
    if period == "day":
        return now.date().isoformat()
    if period == "month":
        return now.date().replace(day=1).isoformat()
    return ""


def renews_at(period: Period, now: datetime.datetime) -> datetime.datetime | None:
    """When the period ``now`` falls in ends (UTC midnight); None for ``total``."""
    midnight = datetime.datetime.combine(now.date(), datetime.time(), tzinfo=datetime.UTC)
    if period == "day":
        return midnight + datetime.timedelta(days=1)
    if period == "month":
        first = midnight.replace(day=1)
        return first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return None


def _seconds_until(moment: datetime.datetime, now: datetime.datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def worst_case_pico(request: JsonObject, request_bytes: int, *, on: str) -> int:
    """The most the request can cost (the module docstring's formula), in picodollars."""
    model = request.get("model")
    max_tokens = request.get("max_tokens")
    output = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0
    tokens = math.ceil(max(0, request_bytes) / BYTES_PER_TOKEN) + media_tokens(request.get("messages"))
    usage = Usage(
        cache_creation_input_tokens=tokens,
        cache_creation_1h_input_tokens=tokens,
        output_tokens=output,
        web_search_requests=_web_searches(request),
        speed="fast" if request.get("speed") == "fast" else None,
    )
    return cost_of(usage, model if isinstance(model, str) else "", on=on, long_context=True).total_pico


def media_tokens(value: object, depth: int = 0) -> int:
    """The input tokens reserved for the image and PDF blocks in ``value`` beyond their
    bytes: ``IMAGE_TOKENS`` per image, ``DOCUMENT_TOKENS`` per document whose source is a
    URL, a file or base64 data (a text document's tokens are its bytes')."""
    if depth > MAX_BLOCK_DEPTH:
        return 0
    if isinstance(value, list):
        return sum(media_tokens(item, depth + 1) for item in value)
    if not isinstance(value, dict):
        return 0
    kind = value.get("type")
    source = value.get("source")
    source_type = source.get("type") if isinstance(source, dict) else None
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "document" and source_type in ("url", "file", "base64"):
        return DOCUMENT_TOKENS
    return sum(media_tokens(item, depth + 1) for key, item in value.items() if key in ("content", "source"))


def _web_searches(request: JsonObject) -> int:
    tools = request.get("tools")
    if not isinstance(tools, list):
        return 0
    total = 0
    for tool in tools:
        if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search"):
            uses = tool.get("max_uses")
            total += uses if isinstance(uses, int) and uses > 0 else DEFAULT_WEB_SEARCHES
    return total


def roll(account: Account, limits: Limits, now: datetime.datetime) -> Account:
    """The account as of ``now``: a new period starts with nothing spent."""
    key = period_key(limits.period, now)
    if account.period_key == key:
        return account
    return msgspec.structs.replace(account, period_key=key, spent_pico=0)


def reserve(
    account: Account, limits: Limits, amount_pico: int, *, model: str, name: str, now: datetime.datetime
) -> Account | Refusal:
    """Reserve ``amount_pico`` and count one request and one query in flight, or say why
    not. Checks, in order: the model, requests per minute, concurrency, the budget. A
    refused query counts nothing."""
    account = roll(account, limits, now)
    if limits.models is not None and model not in limits.models:
        allowed = ", ".join(limits.models) or "none"
        return Refusal(kind="model", message=f"{subject_label(name)} may not use model {model} (allowed: {allowed})", retry_after_s=None)
    minute = now.isoformat()[:RPM_KEY_CHARS]
    count = account.rpm_count if account.rpm_key == minute else 0
    if limits.rpm is not None and count >= limits.rpm:
        next_minute = now.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
        return Refusal(
            kind="rpm",
            message=f"{subject_label(name)}: {limits.rpm} requests per minute reached; renews at {next_minute.isoformat()}",
            retry_after_s=_seconds_until(next_minute, now),
        )
    if limits.max_concurrent is not None and account.in_flight >= limits.max_concurrent:
        return Refusal(
            kind="concurrency",
            message=f"{subject_label(name)}: {limits.max_concurrent} concurrent queries at most",
            retry_after_s=1,
        )
    if limits.budget_pico is not None and account.spent_pico + account.reserved_pico + amount_pico > limits.budget_pico:
        renewal = renews_at(limits.period, now)
        when = f"renews at {renewal.isoformat()}" if renewal is not None else "never renews"
        return Refusal(
            kind="budget",
            message=(
                f"{subject_label(name)}: budget of ${format_usd(limits.budget_pico)} per {limits.period} "
                f"reached (spent ${format_usd(account.spent_pico)}, reserved "
                f"${format_usd(account.reserved_pico)}, this request may cost up to "
                f"${format_usd(amount_pico)}); {when}"
            ),
            retry_after_s=None if renewal is None else _seconds_until(renewal, now),
        )
    return msgspec.structs.replace(
        account,
        reserved_pico=account.reserved_pico + amount_pico,
        in_flight=account.in_flight + 1,
        rpm_key=minute,
        rpm_count=count + 1,
    )


def top_up(
    account: Account, limits: Limits, amount_pico: int, *, name: str, now: datetime.datetime
) -> Account | Refusal:
    """Add ``amount_pico`` to a query's reservation before another billed attempt, or the
    budget's refusal: the same budget check as ``reserve``, but no request and no query
    more in flight (the query already counts)."""
    account = roll(account, limits, now)
    if limits.budget_pico is not None and account.spent_pico + account.reserved_pico + amount_pico > limits.budget_pico:
        return Refusal(
            kind="budget",
            message=(
                f"{subject_label(name)}: budget of ${format_usd(limits.budget_pico)} per {limits.period} "
                f"reached before a retry (spent ${format_usd(account.spent_pico)}, reserved "
                f"${format_usd(account.reserved_pico)}, the retry may cost up to "
                f"${format_usd(amount_pico)}); the query ends with what it used so far"
            ),
            retry_after_s=None,
        )
    return msgspec.structs.replace(account, reserved_pico=account.reserved_pico + amount_pico)


def settle(
    account: Account, limits: Limits, reserved_pico: int, actual_pico: int, now: datetime.datetime, *, ends_query: bool = True
) -> Account:
    """End a query that reserved ``reserved_pico``: release it, spend ``actual_pico`` (in
    the period ``now`` falls in), one query less in flight (``ends_query`` False: its
    reservation was already released, the query no longer counts)."""
    account = roll(account, limits, now)
    return msgspec.structs.replace(
        account,
        reserved_pico=max(0, account.reserved_pico - reserved_pico),
        spent_pico=account.spent_pico + max(0, actual_pico),
        in_flight=max(0, account.in_flight - 1) if ends_query else account.in_flight,
    )


def subject_label(key: str) -> str:
    """How a refusal names its subject: ``token NAME``, or ``user NAME`` / ``group NAME``
    for the organisation policy's subject keys (``user:NAME``, ``group:NAME``)."""
    kind, colon, name = key.partition(":")
    return f"{kind} {name}" if colon and kind in ("user", "group") else f"token {key}"


def format_usd(pico: int) -> str:
    """Picodollars as USD with six decimals (a micro-dollar), rounded up: what is left or
    owed is never shown as less."""
    micros = -(-pico // (PICO_PER_USD // 1_000_000))
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def usd_to_pico(text: str) -> int:
    """A USD amount (``"12.5"``) as picodollars, exactly; raises ValueError if not one."""
    whole, _, fraction = text.strip().partition(".")
    if not whole.isdigit() or (fraction and not fraction.isdigit()) or len(fraction) > 12:
        raise ValueError(f"not an amount in USD: {text!r}")
    return int(whole) * PICO_PER_USD + int(fraction.ljust(12, "0") or "0")
