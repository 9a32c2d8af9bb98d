"""OTLP export decoding (protocol/otlp.py): item counts from protobuf and JSON, bounded and
total on hostile input, and the collectors' circuit breaker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.otlp import (
    BREAKER_FAILURES,
    BREAKER_OPEN_S,
    MAX_FIELDS,
    Breaker,
    OtlpError,
    count_items,
    encoding_of,
    fields,
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def export_protobuf(items_per_scope: list[list[int]]) -> bytes:
    """An Export*ServiceRequest: resources of scopes with that many items each; each
    message also carries a resource/scope (field 1) and a varint and fixed field to skip."""
    resources = b""
    for scopes in items_per_scope:
        body = _len_field(1, b"\x0a\x03svc")
        for n in scopes:
            scope = _len_field(1, b"\x0a\x04name") + b"".join(_len_field(2, b"\x08\x01") for _ in range(n))
            scope += b"\x18\x05" + b"\x21" + b"\x00" * 8  # field 3 varint, field 4 fixed64
            body += _len_field(2, scope)
        resources += _len_field(1, body)
    return resources


def test_protobuf_items_are_counted_across_resources_and_scopes() -> None:
    assert count_items(export_protobuf([[2, 3], [1]]), "metrics", "protobuf") == 6
    assert count_items(b"", "logs", "protobuf") == 0


def test_json_items_are_counted_with_each_signals_names() -> None:
    metrics: dict[str, Any] = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{}, {}]}, {"metrics": [{}]}]}]}
    logs: dict[str, Any] = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{}]}]}]}
    spans: dict[str, Any] = {"resourceSpans": [{"scopeSpans": [{"spans": [{}, {}, {}]}]}]}
    assert count_items(json.dumps(metrics).encode(), "metrics", "json") == 3
    assert count_items(json.dumps(logs).encode(), "logs", "json") == 1
    assert count_items(json.dumps(spans).encode(), "traces", "json") == 3


@pytest.mark.parametrize(
    "body",
    [b"\x0a\x05ab", b"\x0a", b"\x0b", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"],
)
def test_malformed_protobuf_raises_otlp_error(body: bytes) -> None:
    with pytest.raises(OtlpError):
        count_items(body, "traces", "protobuf")


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"resourceLogs": 1}', b'{"resourceLogs": [1]}'])
def test_malformed_json_raises_otlp_error(body: bytes) -> None:
    with pytest.raises(OtlpError):
        count_items(body, "logs", "json")


def test_the_content_type_chooses_json_only_when_it_says_json() -> None:
    assert encoding_of("application/json; charset=utf-8") == "json"
    assert encoding_of("application/x-protobuf") == "protobuf"
    assert encoding_of(None) == "protobuf"


@given(st.binary(max_size=256))
def test_any_bytes_count_or_raise_otlp_error(body: bytes) -> None:
    for encoding in ("protobuf", "json"):
        try:
            count = count_items(body, "metrics", encoding)
        except OtlpError:
            continue
        assert count >= 0


@given(st.lists(st.lists(st.integers(0, 5), max_size=4), max_size=4))
def test_built_exports_count_what_they_hold(shape: list[list[int]]) -> None:
    assert count_items(export_protobuf(shape), "logs", "protobuf") == sum(map(sum, shape))


def test_fields_skip_other_numbers() -> None:
    assert [bytes(v) for v in fields(memoryview(_len_field(2, b"x") + _len_field(1, b"y")), 1)] == [b"y"]


def test_the_breaker_opens_after_failures_in_a_row_and_half_opens_after_the_wait() -> None:
    breaker = Breaker()
    for _ in range(BREAKER_FAILURES - 1):
        breaker.failed(0.0)
    assert breaker.allows(0.0)
    breaker.failed(0.0)
    assert not breaker.allows(BREAKER_OPEN_S - 1)
    assert breaker.allows(BREAKER_OPEN_S)
    breaker.failed(BREAKER_OPEN_S)  # the trial failed: open again
    assert not breaker.allows(BREAKER_OPEN_S + 1)
    breaker.succeeded()
    assert breaker.allows(BREAKER_OPEN_S + 1)


def test_an_export_of_too_many_entries_is_refused_not_walked_to_its_end() -> None:
    # Each scope of export_protobuf walks its items, its scope field and two skipped fields.
    assert count_items(export_protobuf([[MAX_FIELDS // 2]]), "logs", "protobuf") == MAX_FIELDS // 2
    with pytest.raises(OtlpError, match="more than"):
        count_items(export_protobuf([[MAX_FIELDS]]), "logs", "protobuf")
    with pytest.raises(OtlpError, match="more than"):
        count_items(b"\x18\x01" * (MAX_FIELDS + 1), "logs", "protobuf")
