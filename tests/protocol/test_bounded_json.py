"""Bounded JSON decoding: the depth scan agrees with a reference walk on any JSON, and any
text over a limit is refused with a decode error, never a RecursionError."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.bounded_json import (
    MAX_DEPTH,
    BoundedDecoder,
    JsonLimitError,
    check_bounds,
    decode,
    json_depth,
)

# Strings full of the characters the scan must see through: quotes, backslashes, brackets.
_TEXT: st.SearchStrategy[str] = st.text(
    alphabet=st.sampled_from('ab"\\[]{}:,\n\u00e9\U0001f600'), max_size=12
)
_SCALARS: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_JSON: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=40,
)


def reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


def nest(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {'k\\"[': value}
    return value


@given(_JSON, st.booleans())
def test_depth_scan_agrees_with_a_reference_walk(value: Any, pretty: bool) -> None:
    raw = msgspec.json.encode(value)
    if pretty:
        raw = msgspec.json.format(raw, indent=2)
    assert json_depth(raw) == reference_depth(value)


@given(_JSON)
def test_within_the_limit_decodes_exactly_as_msgspec_does(value: Any) -> None:
    raw = msgspec.json.encode(value)
    assert decode(raw) == msgspec.json.decode(raw)
    assert decode(raw.decode()) == msgspec.json.decode(raw)


@given(
    st.integers(min_value=MAX_DEPTH + 1, max_value=5000),
    st.sampled_from(["list", "mixed", "padded"]),
)
def test_any_nesting_over_the_limit_is_refused_cleanly(depth: int, shape: str) -> None:
    if shape == "list":
        raw = b"[" * depth + b"]" * depth
    elif shape == "mixed":
        opens = b"".join(b"[" if level % 2 else b'{"k\\\\\\"[":' for level in range(depth))
        raw = (
            opens + b"1" + b"".join(b"]" if level % 2 else b"}" for level in reversed(range(depth)))
        )
    else:
        # Deep inside an otherwise ordinary object, after strings that look like closers.
        raw = b'{"a":"]]]}}}","b":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    for decoder in (BoundedDecoder(), BoundedDecoder(dict[str, Any]), BoundedDecoder(list[Any])):
        with pytest.raises(msgspec.DecodeError):
            decoder.decode(raw)
    with pytest.raises(JsonLimitError):
        decode(raw)
    with pytest.raises(JsonLimitError):
        decode(raw.decode())


def test_exactly_the_limit_is_accepted_and_one_more_is_not() -> None:
    assert decode(msgspec.json.encode(nest(MAX_DEPTH))) == nest(MAX_DEPTH)
    with pytest.raises(JsonLimitError, match="deeper than 128"):
        decode(msgspec.json.encode(nest(MAX_DEPTH + 1)))


def test_brackets_inside_strings_do_not_count() -> None:
    raw = msgspec.json.encode({"text": "[" * 5000 + '\\"' + "{" * 5000})
    assert decode(raw) == {"text": "[" * 5000 + '\\"' + "{" * 5000}


def test_a_million_levels_is_a_decode_error_not_a_recursion_error() -> None:
    with pytest.raises(JsonLimitError):
        decode(b"[" * 1_000_000 + b"]" * 1_000_000)
    with pytest.raises(msgspec.DecodeError):
        # Unbalanced: msgspec gives up (recursion) before it sees the missing closers.
        decode(b"[" * 1_000_000)


def test_size_limit() -> None:
    small = BoundedDecoder(max_bytes=10)
    assert small.decode(b"[1,2,3,4]") == [1, 2, 3, 4]
    with pytest.raises(JsonLimitError, match="larger than 10"):
        small.decode(b"[1,2,3,4,5]")
    with pytest.raises(JsonLimitError):
        check_bounds(b" " * 11, max_bytes=10)


def test_typed_decoding_keeps_msgspec_errors() -> None:
    class Point(msgspec.Struct):
        x: int

    decoder = BoundedDecoder(Point)
    assert decoder.decode(b'{"x": 1}') == Point(x=1)
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(b'{"x": "1"}')
    with pytest.raises(msgspec.DecodeError):
        decoder.decode(b"{")
    # Deep content in a field the type ignores still counts.
    with pytest.raises(JsonLimitError):
        decoder.decode(b'{"x": 1, "junk": ' + b"[" * 200 + b"]" * 200 + b"}")


def test_memoryview_input() -> None:
    raw = b'{"a": [1]}'
    assert decode(memoryview(raw)) == {"a": [1]}
    with pytest.raises(JsonLimitError):
        decode(memoryview(b"[" * 200 + b"]" * 200))


def test_numbers_msgspec_already_bounds() -> None:
    # Integers past Python's 4300-digit string limit and floats past the double range.
    with pytest.raises(msgspec.DecodeError):
        decode(b"1" * 4301)
    with pytest.raises(msgspec.DecodeError):
        decode(b"1e400")
