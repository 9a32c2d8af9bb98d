"""The dashboard's arithmetic (pure): query bounds, spend series, cache savings, event windows.

What the ``/v1/switchboard/...`` endpoints answer (docs/protocol.md, "Dashboard and its JSON
endpoints") is computed here from rows a ledger store returns (``SpendRow``,
``SessionSpend``, ``OwnerSpend``: every store, SQLite or another, returns these same
shapes), so the numbers are the same whichever store holds them, and the endpoints stay
thin. Time is a parameter: ``now`` is handed in, never read.

Buckets:
    A usage record belongs to the UTC day (``YYYY-MM-DD``) or hour (``YYYY-MM-DDTHH``) of its
    ``recorded_at``: the bucket key is that timestamp's prefix (10 or 13 characters), so a
    store groups by a prefix of the column and no time-zone arithmetic is needed.
Bounds (a query never makes a store scan or an answer grow without limit):
    ``MAX_HOUR_BUCKETS`` / ``MAX_DAY_BUCKETS`` bound a time range, ``MAX_TOP`` a top list,
    ``MAX_SERIES`` the series of a chart (the rest is summed as ``other``).
Cache savings:
    What cache reads saved against paying the full input price for the same tokens:
    ``cache_read_input_tokens * (input - cache_read)``, at the standard rates of the record's
    canonical model on its day (the catalog's, ``protocol.pricing.price_for``; an unknown
    model at the documented default price). Long-context and fast-mode rates keep the same
    ratio, so the standard rates give a lower bound there. Cache hit rate: cache read tokens
    over all input tokens (uncached input + cache reads + cache writes).
"""

from __future__ import annotations

import datetime
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Final, Literal, TypeAlias

import msgspec

from protocol.errors import RemoteProtocolError
from protocol.pricing import DEFAULT_PRICE, price_for, usd

Bucket: TypeAlias = Literal["day", "hour"]
By: TypeAlias = Literal["model", "token"]

# A week of hours, a year of days: enough to see a trend, small enough that one answer is a
# few kilobytes and one store query reads a bounded range of records.
MAX_HOUR_BUCKETS: Final = 7 * 24
MAX_DAY_BUCKETS: Final = 366
# What a chart shows with no ``since``: the last day by hours, the last month by days.
DEFAULT_HOUR_BUCKETS: Final = 24
DEFAULT_DAY_BUCKETS: Final = 30
# A top list longer than a screen is a report, not a dashboard (``switchboard cost`` is).
MAX_TOP: Final = 100
DEFAULT_TOP: Final = 10
# Stacked series beyond this are unreadable; the smallest are summed into ``OTHER``.
MAX_SERIES: Final = 12
OTHER: Final = "other"
# A query string with more parameters than any endpoint takes is refused, not parsed.
MAX_QUERY_PARAMETERS: Final = 8
# Characters of an owner digest shown as a token's label: enough to tell tokens apart,
# nothing about the token (it is a prefix of a SHA-256 of it, actors/store/ledger_sessions.py).
TOKEN_LABEL_CHARS: Final = 8
NO_TOKEN: Final = "no token"
# The live panel's window: retries, fallbacks and overloads of the last hour, by minute.
WINDOW_MINUTES: Final = 60

_BUCKET_CHARS: Final[dict[str, int]] = {"day": 10, "hour": 13}


class Scope(msgspec.Struct, frozen=True, kw_only=True):
    """Whose usage a query sees: ``everyone``, or the sessions whose owner is ``owner`` (an
    owner digest; None: the sessions created with no token)."""

    everyone: bool
    owner: str | None = None


EVERYONE: Final = Scope(everyone=True)


class SpendRow(msgspec.Struct, frozen=True, kw_only=True):
    """A store's answer to a spend query: one (bucket, canonical model, owner) group."""

    bucket: str
    canonical: str
    owner: str | None
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cost_pico: int
    messages: int


class SessionSpend(msgspec.Struct, frozen=True, kw_only=True):
    """One session's usage since the window's start (a top-sessions row)."""

    session_id: str
    owner: str | None
    first_at: str
    last_at: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cost_pico: int
    messages: int


class OwnerSpend(msgspec.Struct, frozen=True, kw_only=True):
    """One owner's (token's) usage since the window's start (a top-tokens row)."""

    owner: str | None
    sessions: int
    cost_pico: int
    messages: int


class SpendQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A validated ``GET /v1/switchboard/spend``: ``since`` is a bucket key (inclusive)."""

    by: By
    bucket: Bucket
    since: str
    buckets: tuple[str, ...]


class TopQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A validated ``GET /v1/switchboard/sessions``."""

    top: int
    since: str


def bucket_key(moment: datetime.datetime, bucket: Bucket) -> str:
    """The bucket of a UTC moment: ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH``."""
    return moment.astimezone(datetime.UTC).isoformat()[: _BUCKET_CHARS[bucket]]


def _params(query: str, allowed: frozenset[str]) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(
            query, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_QUERY_PARAMETERS
        )
    except ValueError as exc:
        raise RemoteProtocolError(f"query string: {exc}", error_type="invalid_request_error") from exc
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise RemoteProtocolError(
                f"unknown parameter {name!r} (known: {', '.join(sorted(allowed))})",
                error_type="invalid_request_error",
            )
        params[name] = value
    return params


def _moment(text: str) -> datetime.datetime:
    """An ISO date or date-time; one without an offset is UTC."""
    try:
        moment = datetime.datetime.fromisoformat(text)
        # In UTC here: an offset that moves the moment out of years 1..9999 is refused.
        return (moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)).astimezone(
            datetime.UTC
        )
    except (ValueError, OverflowError):
        raise RemoteProtocolError(
            f"since: not an ISO 8601 date or date-time: {text[:40]!r}", error_type="invalid_request_error"
        ) from None


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = params.get(name, default)
    if value not in choices:
        raise RemoteProtocolError(
            f"{name} must be one of {', '.join(choices)}", error_type="invalid_request_error"
        )
    return value


def bucket_range(since: datetime.datetime, now: datetime.datetime, bucket: Bucket) -> tuple[str, ...]:
    """Every bucket key from ``since``'s to ``now``'s, both included, oldest first."""
    step = datetime.timedelta(days=1) if bucket == "day" else datetime.timedelta(hours=1)
    start = since.astimezone(datetime.UTC)
    start = (
        start.replace(hour=0, minute=0, second=0, microsecond=0)
        if bucket == "day"
        else start.replace(minute=0, second=0, microsecond=0)
    )
    last = bucket_key(now, bucket)
    keys: list[str] = []
    moment = start
    limit = MAX_DAY_BUCKETS if bucket == "day" else MAX_HOUR_BUCKETS
    while (key := bucket_key(moment, bucket)) <= last:
        keys.append(key)
        if len(keys) > limit:
            raise RemoteProtocolError(
                f"since: at most {limit} {bucket} buckets per query", error_type="invalid_request_error"
            )
        moment += step
    return tuple(keys)


def parse_spend_query(query: str, now: datetime.datetime) -> SpendQuery:
    """``by=model|token&bucket=day|hour&since=ISO`` (all optional). Raises
    ``RemoteProtocolError`` (a 400) for anything else, or a range past the bounds."""
    params = _params(query, frozenset({"by", "bucket", "since"}))
    by: By = "token" if _choice(params, "by", ("model", "token"), "model") == "token" else "model"
    bucket: Bucket = "hour" if _choice(params, "bucket", ("day", "hour"), "day") == "hour" else "day"
    since = _since(params, now, bucket)
    buckets = bucket_range(since, now, bucket)
    if not buckets:
        raise RemoteProtocolError("since: in the future", error_type="invalid_request_error")
    return SpendQuery(by=by, bucket=bucket, since=buckets[0], buckets=buckets)


def _since(params: Mapping[str, str], now: datetime.datetime, bucket: Bucket) -> datetime.datetime:
    if params.get("since"):
        return _moment(params["since"])
    if bucket == "day":
        return now - datetime.timedelta(days=DEFAULT_DAY_BUCKETS - 1)
    return now - datetime.timedelta(hours=DEFAULT_HOUR_BUCKETS - 1)


def parse_top_query(query: str, now: datetime.datetime) -> TopQuery:
    """``top=N&since=ISO`` (optional; ``top`` in 1..MAX_TOP, ``since`` at most
    ``MAX_DAY_BUCKETS`` days back, default ``DEFAULT_DAY_BUCKETS``)."""
    params = _params(query, frozenset({"top", "since"}))
    raw = params.get("top", str(DEFAULT_TOP))
    if not (raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_TOP):
        raise RemoteProtocolError(f"top must be an integer in 1..{MAX_TOP}", error_type="invalid_request_error")
    buckets = bucket_range(_since(params, now, "day"), now, "day")
    if not buckets:
        raise RemoteProtocolError("since: in the future", error_type="invalid_request_error")
    return TopQuery(top=int(raw), since=buckets[0])


def token_label(owner: str | None) -> str:
    """How a token is named on the dashboard: a prefix of its owner digest."""
    return NO_TOKEN if owner is None else "token " + owner[:TOKEN_LABEL_CHARS]


def savings_pico(canonical: str, bucket: str, cache_read_tokens: int) -> int:
    """What ``cache_read_tokens`` of ``canonical`` on ``bucket``'s day saved (module docstring)."""
    entry = price_for(canonical, bucket[:10]) or DEFAULT_PRICE
    rates = entry.standard
    return cache_read_tokens * max(rates.input - rates.cache_read, 0)


def hit_rate(input_tokens: int, cache_read: int, cache_write: int) -> float | None:
    """Cache read tokens over all input tokens; None with no input at all."""
    total = input_tokens + cache_read + cache_write
    return None if total == 0 else cache_read / total


class _Sums:
    __slots__ = ("cache_read", "cache_write", "cost", "input", "messages", "output", "savings")

    def __init__(self) -> None:
        self.input = self.output = self.cache_read = self.cache_write = 0
        self.cost = self.savings = self.messages = 0

    def add(self, row: SpendRow) -> None:
        self.input += row.input_tokens
        self.output += row.output_tokens
        self.cache_read += row.cache_read_input_tokens
        self.cache_write += row.cache_creation_input_tokens
        self.cost += row.cost_pico
        self.messages += row.messages
        self.savings += savings_pico(row.canonical, row.bucket, row.cache_read_input_tokens)

    def json(self) -> dict[str, object]:
        return {
            "cost_usd": usd(self.cost),
            "cost_pico": self.cost,
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation_input_tokens": self.cache_write,
            "messages": self.messages,
            "cache_savings_usd": usd(self.savings),
            "cache_savings_pico": self.savings,
            "cache_hit_rate": hit_rate(self.input, self.cache_read, self.cache_write),
        }


def spend_answer(query: SpendQuery, rows: Iterable[SpendRow]) -> dict[str, object]:
    """The spend endpoint's JSON: per-bucket series (by model or token), totals, per-model
    totals with cache savings and hit rate. Rows outside ``query.buckets`` are ignored."""
    index = {key: i for i, key in enumerate(query.buckets)}
    per_series: dict[str, list[int]] = {}
    totals = _Sums()
    models: dict[str, _Sums] = {}
    for row in rows:
        slot = index.get(row.bucket)
        if slot is None:
            continue
        key = row.canonical if query.by == "model" else token_label(row.owner)
        per_series.setdefault(key, [0] * len(query.buckets))[slot] += row.cost_pico
        totals.add(row)
        models.setdefault(row.canonical, _Sums()).add(row)
    ranked = sorted(per_series.items(), key=lambda item: (-sum(item[1]), item[0]))
    if len(ranked) > MAX_SERIES:
        rest = [sum(column) for column in zip(*(values for _, values in ranked[MAX_SERIES - 1 :]), strict=True)]
        ranked = [*ranked[: MAX_SERIES - 1], (OTHER, rest)]
    return {
        "by": query.by,
        "bucket": query.bucket,
        "since": query.since,
        "buckets": list(query.buckets),
        "series": [
            {"key": key, "cost_usd": [usd(v) for v in values], "total_usd": usd(sum(values))}
            for key, values in ranked
        ],
        "totals": totals.json(),
        "models": [
            {"model": model, **sums.json()}
            for model, sums in sorted(models.items(), key=lambda item: (-item[1].cost, item[0]))
        ],
    }


def sessions_answer(
    sessions: Iterable[SessionSpend], owners: Iterable[OwnerSpend], live: frozenset[str], since: str
) -> dict[str, object]:
    """The sessions endpoint's JSON: the top sessions and tokens by spend."""
    return {
        "since": since,
        "sessions": [
            {
                "session_id": s.session_id,
                "token": token_label(s.owner),
                "live": s.session_id in live,
                "first_at": s.first_at,
                "last_at": s.last_at,
                "cost_usd": usd(s.cost_pico),
                "cost_pico": s.cost_pico,
                "input_tokens": s.input_tokens,
                "output_tokens": s.output_tokens,
                "cache_read_input_tokens": s.cache_read_input_tokens,
                "cache_creation_input_tokens": s.cache_creation_input_tokens,
                "messages": s.messages,
            }
            for s in sessions
        ],
        "tokens": [
            {
                "token": token_label(o.owner),
                "sessions": o.sessions,
                "messages": o.messages,
                "cost_usd": usd(o.cost_pico),
                "cost_pico": o.cost_pico,
            }
            for o in owners
        ],
    }


class EventWindow:
    """Counts of events by (kind, label) over the last ``WINDOW_MINUTES`` minutes, in
    minute slots; the caller hands in the time (seconds on any monotonic clock). Bounded:
    at most ``WINDOW_MINUTES`` slots, each with the labels its caller bounds."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[int, Counter[tuple[str, str]]] = {}

    def _prune(self, minute: int) -> None:
        for old in [m for m in self._slots if m <= minute - WINDOW_MINUTES]:
            del self._slots[old]

    def add(self, kind: str, label: str, now: float, n: int = 1) -> None:
        minute = int(now // 60)
        self._prune(minute)
        self._slots.setdefault(minute, Counter())[(kind, label)] += n

    def counts(self, now: float) -> dict[str, dict[str, int]]:
        """``{kind: {label: count}}`` over the window ending at ``now``."""
        self._prune(int(now // 60))
        merged: Counter[tuple[str, str]] = Counter()
        for slot in self._slots.values():
            merged.update(slot)
        result: dict[str, dict[str, int]] = {}
        for (kind, label), n in sorted(merged.items()):
            result.setdefault(kind, {})[label] = n
        return result
