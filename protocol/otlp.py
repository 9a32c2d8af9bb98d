"""OTLP/HTTP exports a client sends the gateway: which signal, and how many items (pure).

Claude Code sends its OpenTelemetry to the gateway (README.md "Claude Code for a whole
organisation"): ``POST /v1/metrics``, ``/v1/logs``, ``/v1/traces``, each an OTLP export
request, protobuf (``application/x-protobuf``) or JSON (``application/json``). The gateway
answers 200 whatever it does with it; it counts what came (``count_items``) and may forward
the bytes unchanged (``actors.observe.otlp``).

The three export requests share one shape (opentelemetry-proto, collector/*/v1)::

    Export*ServiceRequest { repeated Resource* resource_* = 1; }
    Resource*            { Resource resource = 1; repeated Scope* scope_* = 2; }
    Scope*               { InstrumentationScope scope = 1; repeated <Item> items = 2; }

so the items (metrics, log records, spans) are the field-2 entries of the field-2 entries of
the field-1 entries. JSON uses the camelCase names (``resourceMetrics``, ``scopeMetrics``,
``metrics``; ``resourceLogs``, ``scopeLogs``, ``logRecords``; ``resourceSpans``,
``scopeSpans``, ``spans``).

Decoding is bounded: the body is at most ``MAX_EXPORT_BYTES`` (the door refuses more), the
protobuf walk reads each byte at most once per level (three levels) and stops past
``MAX_FIELDS`` fields, and JSON goes through ``protocol.bounded_json``. A body that does not decode raises ``OtlpError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, Literal

import msgspec

from protocol.bounded_json import BoundedDecoder
from protocol.errors import SwitchboardError

Signal = Literal["metrics", "logs", "traces"]
Encoding = Literal["protobuf", "json"]

# The paths of the three exports, and their signal.
SIGNALS: Final[dict[str, Signal]] = {"/v1/metrics": "metrics", "/v1/logs": "logs", "/v1/traces": "traces"}
# An export larger than this is refused (413): the OpenTelemetry SDKs batch far less (512
# items by default), and a collector's own default limit is in this range.
MAX_EXPORT_BYTES: Final = 8 * 1024 * 1024
# Fields walked in one protobuf export at most, over its three levels (resources, scopes,
# items, and the fields beside them; about 2 µs each, on the event loop): an SDK batch holds
# hundreds of items (512 by default), so this is ample, and it keeps a hostile export of
# millions of tiny fields to a few tens of milliseconds.
MAX_FIELDS: Final = 10_000
# JSON field names per signal: (resource list, scope list, item list).
_JSON_NAMES: Final[dict[Signal, tuple[str, str, str]]] = {
    "metrics": ("resourceMetrics", "scopeMetrics", "metrics"),
    "logs": ("resourceLogs", "scopeLogs", "logRecords"),
    "traces": ("resourceSpans", "scopeSpans", "spans"),
}
_DECODER: Final = BoundedDecoder[Any]()
# Protobuf wire types.
_VARINT: Final = 0
_I64: Final = 1
_LEN: Final = 2
_I32: Final = 5


class OtlpError(SwitchboardError):
    """The body is not an OTLP export of the declared encoding."""


def encoding_of(content_type: str | None) -> Encoding:
    """The encoding a ``content-type`` names (OTLP/HTTP: protobuf unless it says JSON)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return "json" if media == "application/json" else "protobuf"


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise OtlpError("a truncated or over-long varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


class _Budget:
    """Fields left to walk in one export, shared by its levels."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def fields(data: memoryview, number: int, budget: _Budget | None = None) -> Iterator[memoryview]:
    """The length-delimited values of field ``number`` in the protobuf message ``data``, one
    at a time (the other fields are skipped; nothing is copied or collected, so a hostile
    export of millions of tiny fields costs time in proportion, not memory).

    Raises:
        OtlpError: the message is malformed.
    """
    budget = budget if budget is not None else _Budget(MAX_FIELDS)
    at = 0
    while at < len(data):
        budget.left -= 1
        if budget.left < 0:
            raise OtlpError(f"more than {MAX_FIELDS} fields")
        key, at = _varint(data, at)
        wire, field = key & 7, key >> 3
        if wire == _VARINT:
            _, at = _varint(data, at)
        elif wire == _I64:
            at += 8
        elif wire == _I32:
            at += 4
        elif wire == _LEN:
            size, at = _varint(data, at)
            if at + size > len(data):
                raise OtlpError("a field runs past the end of its message")
            if field == number:
                yield data[at : at + size]
            at += size
        else:
            raise OtlpError(f"unsupported wire type {wire}")
        if at > len(data):
            raise OtlpError("a field runs past the end of its message")


def _count_protobuf(body: bytes) -> int:
    budget = _Budget(MAX_FIELDS)
    count = 0
    for resource in fields(memoryview(body), 1, budget):
        for scope in fields(resource, 2, budget):
            count += sum(1 for _ in fields(scope, 2, budget))
    return count


def _list(value: object, name: str) -> list[Any]:
    if not isinstance(value, dict):
        raise OtlpError("an OTLP JSON element must be an object")
    found = value.get(name, [])
    if not isinstance(found, list):
        raise OtlpError(f"{name} must be a list")
    return found


def _count_json(body: bytes, signal: Signal) -> int:
    try:
        export = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise OtlpError(f"not JSON: {exc}") from exc
    resources, scopes, items = _JSON_NAMES[signal]
    return sum(
        len(_list(scope, items)) for resource in _list(export, resources) for scope in _list(resource, scopes)
    )


def count_items(body: bytes, signal: Signal, encoding: Encoding) -> int:
    """How many items (metrics, log records, spans) the export ``body`` holds.

    Raises:
        OtlpError: the body is not an export of that encoding.
    """
    if encoding == "json":
        return _count_json(body, signal)
    return _count_protobuf(body)


# A collector that failed this many exports in a row is not tried for ``BREAKER_OPEN_S``.
BREAKER_FAILURES: Final = 3
BREAKER_OPEN_S: Final = 30.0


class Breaker(msgspec.Struct, kw_only=True):
    """A circuit breaker for one collector: open after ``BREAKER_FAILURES`` failures in a
    row, for ``BREAKER_OPEN_S`` seconds; then one export is tried (half open), and its
    outcome closes the circuit or opens it again. Times are the caller's clock."""

    failures: int = 0
    open_until: float = 0.0

    def allows(self, now: float) -> bool:
        """Whether an export may be sent now."""
        return now >= self.open_until

    def succeeded(self) -> None:
        self.failures = 0
        self.open_until = 0.0

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.failures >= BREAKER_FAILURES:
            self.open_until = now + BREAKER_OPEN_S
