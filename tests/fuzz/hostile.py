"""Hypothesis strategies for hostile input, as JSON *text* (never built through a JSON encoder:
no encoder writes a 100,000-deep array, a 400-digit integer or a lone surrogate escape, and
those are exactly what a hostile peer sends).

``value()``: any hostile JSON value (deep nesting 100..100,000, huge and non-finite numbers,
wrong types, odd strings). ``request()``: a Messages request with hostile parts (message
content, ``tools[].input_schema``, ``metadata``, ``system``, ``max_tokens``...), or a hostile
value instead of one. ``client_frame()``: a WebSocket door frame with hostile parts.
"""

from __future__ import annotations

import json
from typing import Final

from hypothesis import strategies as st

# Nesting depths: mostly within reach of a recursive walk (a few hundred), and far past it.
DEPTHS: Final = st.one_of(st.integers(100, 1_500), st.integers(1_500, 100_000))

NUMBERS: Final = st.sampled_from(
    [
        "1e400", "-1e400", "1e-400", "1" + "0" * 400, "-" + "9" * 40,
        "9223372036854775807", "9223372036854775808", "18446744073709551616",
        "-9223372036854775809", "1.5", "-1", "0", "1e308", "NaN", "Infinity", "-0.0",
    ]
)
ODD_STRINGS: Final = st.sampled_from(
    ['""', '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"' + "x" * 100_000 + '"', '"<<emulator:529>>"']
)


def deep(depth: int, kind: str) -> str:
    """JSON nested ``depth`` levels: arrays, objects, or both alternating."""
    if kind == "array":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    half = depth // 2
    return '[{"a":' * half + "0" + "}]" * half


DEEP: Final = st.builds(deep, DEPTHS, st.sampled_from(["array", "object", "mixed"]))
SCALARS: Final = st.one_of(
    NUMBERS,
    ODD_STRINGS,
    st.sampled_from(["null", "true", "false", "[]", "{}", '{"type":"text"}']),
    st.integers().map(str),
    st.text(max_size=30).map(json.dumps),
)


def value() -> st.SearchStrategy[str]:
    """Any hostile JSON value, as text."""
    return st.one_of(DEEP, SCALARS)


@st.composite
def request(draw: st.DrawFn) -> str:
    """A Messages request body with one or more hostile parts, or a hostile value."""
    if draw(st.integers(0, 5)) == 0:
        return draw(value())
    good_content = '"hello"'
    model = draw(st.one_of(st.just('"claude-sonnet-4-6"'), value()))
    max_tokens = draw(st.one_of(st.just("64"), value()))
    content = draw(
        st.one_of(
            st.just(good_content),
            value(),
            value().map(lambda v: '[{"type":"text","text":' + v + "}]"),
            value().map(lambda v: '[{"type":"tool_result","tool_use_id":"t","content":' + v + "}]"),
        )
    )
    parts = [f'"model":{model}', f'"max_tokens":{max_tokens}',
             f'"messages":[{{"role":"user","content":{content}}}]']
    extras = draw(
        st.lists(
            st.sampled_from(
                ["tools_schema", "metadata", "system", "stream", "thinking", "tool_choice", "messages_more", "unknown"]
            ),
            max_size=3,
            unique=True,
        )
    )
    for extra in extras:
        hostile = draw(value())
        match extra:
            case "tools_schema":
                parts.append(f'"tools":[{{"name":"t","description":"d","input_schema":{hostile}}}]')
            case "metadata":
                parts.append(f'"metadata":{hostile}')
            case "system":
                parts.append(f'"system":{hostile}')
            case "stream":
                parts.append(f'"stream":{hostile}')
            case "thinking":
                parts.append(f'"thinking":{hostile}')
            case "tool_choice":
                parts.append(f'"tool_choice":{hostile}')
            case "messages_more":
                parts[2] = f'"messages":[{{"role":"user","content":"a"}},{hostile}]'
            case _:
                parts.append(f'"x_unknown":{hostile}')
    return "{" + ",".join(parts) + "}"


class Frame:
    """A hostile client frame: its text, and what it is (``query``, ``count``, ``abort``
    with the id ``bad``, or ``other``: anything else, whose answer is ``rejected``). Not a
    dataclass: hypothesis would print a failing example's 600 kB text whole."""

    __slots__ = ("kind", "text")

    def __init__(self, text: str, kind: str) -> None:
        self.text = text
        self.kind = kind

    def __repr__(self) -> str:
        return f"Frame({self.kind}, {self.text[:120]!r}... {len(self.text)} chars)"


QUERY_OPTIONS: Final = ("source", "fallback_model", "fast_mode", "persistent", "max_retries", "recover", "surprise")


@st.composite
def client_frame(draw: st.DrawFn) -> Frame:
    shape = draw(st.sampled_from(["query", "query", "count", "abort", "bad_id", "unknown_type", "whole"]))
    if shape == "whole":
        return Frame(draw(st.one_of(value(), st.text(max_size=200))), "other")
    if shape == "unknown_type":
        kind = draw(st.one_of(value(), st.sampled_from(['"launch"', '"Query"', '"query "'])))
        return Frame(f'{{"type":{kind},"id":"bad","request":{draw(request())}}}', "other")
    if shape == "abort":
        return Frame('{"type":"abort","id":"bad"}', "abort")
    if shape == "bad_id":
        tag = draw(st.sampled_from(["query", "count_tokens", "abort"]))
        # Any JSON but a string: a string id is a good id, and its frame is answered as such.
        bad_id = draw(value().filter(lambda text: not text.lstrip().startswith('"')))
        return Frame(f'{{"type":"{tag}","id":{bad_id},"request":{draw(request())}}}', "other")
    body = draw(request())
    if shape == "count":
        return Frame(f'{{"type":"count_tokens","id":"bad","request":{body}}}', "count")
    options = draw(st.lists(st.sampled_from(QUERY_OPTIONS), max_size=2, unique=True))
    extra = "".join(f',"{name}":{draw(value())}' for name in options)
    return Frame(f'{{"type":"query","id":"bad","request":{body}{extra}}}', "query")
