"""Fault spec parsing (pure): kinds, aliases, typed options, errors, round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator import Fault, FaultSpecError, parse_fault
from emulator.faults import _COMMON, _KIND_OPTIONS, KINDS, find_directives, strip_directives


def test_bare_kind() -> None:
    assert parse_fault("529") == Fault("529")
    assert parse_fault(" drop ").kind == "drop"
    assert parse_fault("drop").options == {}


def test_aliases_resolve_to_the_status() -> None:
    assert parse_fault("rate_limit") == Fault("429")
    assert parse_fault("overloaded:retry_after=2").kind == "529"


def test_options_are_typed() -> None:
    fault = parse_fault("stall:after=2,seconds=1.5")
    assert fault.options == {"after": 2, "seconds": 1.5}
    assert fault.int_option("after", 3) == 2
    assert fault.float_option("seconds", None) == 1.5
    assert parse_fault("429:should_retry=False").bool_option("should_retry") is False
    assert parse_fault("stall").float_option("seconds", None) is None


def test_values_are_percent_decoded_and_spaces_ignored() -> None:
    fault = parse_fault("400: message=no%2C thanks , retry_after = 3")
    assert fault.options == {"message": "no, thanks", "retry_after": 3}


def test_times() -> None:
    assert parse_fault("500").times is None
    assert parse_fault("500:times=3").times == 3
    assert parse_fault("500:times=all").times is None


def test_constructor_converts_and_validates() -> None:
    assert Fault("stall", seconds="2", after=1) == parse_fault("stall:after=1,seconds=2")
    assert Fault("rate_limit", retry_after=3).spec == "429:retry_after=3"
    assert repr(Fault("drop", after=0)) == "Fault('drop', after=0)"
    with pytest.raises(AttributeError):
        Fault("drop").kind = "stall"


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("teapot", "unknown fault kind"),
        ("drop:seconds=1", "unknown option"),
        ("drop:after=-1", "integer >= 0"),
        ("drop:after=x", "integer >= 0"),
        ("stall:seconds=nan", "number >= 0"),
        ("429:should_retry=maybe", "true or false"),
        ("500:times=0", "integer >= 1 or all"),
        ("status", "status=NNN"),
        ("status:status=999", "status=NNN"),
        ("drop:after", "bad option"),
        ("drop:after=1,after=2", "given twice"),
    ],
)
def test_bad_specs_raise(spec: str, complaint: str) -> None:
    with pytest.raises(FaultSpecError, match=complaint):
        parse_fault(spec)


def test_fault_spec_error_is_a_value_error() -> None:
    assert issubclass(FaultSpecError, ValueError)


# Lone surrogates cannot be percent-encoded (nor sent as UTF-8), so leave them out.
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_VALUES = {
    "int": st.integers(0, 10**9),
    "float": st.floats(0, 1e6, allow_nan=False),
    "bool": st.booleans(),
    "str": _TEXT,
    "times": st.one_of(st.integers(1, 100), st.just("all")),
}


@st.composite
def faults(draw: st.DrawFn) -> Fault:
    kind = draw(st.sampled_from(sorted(KINDS)))
    schema = {**_KIND_OPTIONS[kind], **_COMMON}
    names = draw(st.lists(st.sampled_from(sorted(schema)), unique=True))
    options: dict[str, object] = {name: draw(_VALUES[schema[name]]) for name in names}
    if kind == "status":
        options["status"] = draw(st.integers(100, 599))
    return Fault(kind, **options)


@given(faults())
def test_spec_round_trip(fault: Fault) -> None:
    assert parse_fault(fault.spec) == fault
    assert hash(parse_fault(fault.spec)) == hash(fault)


@given(faults())
def test_spec_survives_a_directive(fault: Fault) -> None:
    text = f"please <<emulator:{fault.spec}>> thanks"
    assert [parse_fault(spec) for spec in find_directives(text)] == [fault]
    assert strip_directives(text) == "please  thanks"


def test_directives_in_text() -> None:
    text = "a <<emulator:429:times=2>> b <<emulator:ok:deltas=5>>"
    assert list(find_directives(text)) == ["429:times=2", "ok:deltas=5"]
    assert list(find_directives("no directive <<emulator>>")) == []
