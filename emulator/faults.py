"""Fault specs: the small language for scripting an outage (pure; no I/O).

A spec is ``KIND`` or ``KIND:key=value,key=value``. The kinds:

- ``ok``: no fault; a queue slot or directive that only carries options.
- ``429`` (alias ``rate_limit``), ``529`` (alias ``overloaded``), ``400``, ``401``,
  ``403``, ``408``, ``409``, ``500``, ``502``, ``503``, ``504``: that status with the
  API's error envelope (``errors`` has the type and text of each); ``message=`` overrides
  the text.
- ``status``: any status, ``status=NNN`` (required), ``type=``, ``message=``.
- ``context_overflow``: 400 ``input length and `max_tokens` exceed context limit: I + M >
  L, ...``; ``input=`` (default: the request's input tokens), ``max_tokens=`` (default:
  the request's), ``limit=`` (default 200000).
- ``prompt_too_long``: 400 ``prompt is too long: T tokens > L maximum``; ``tokens=``,
  ``limit=``.
- ``overloaded_midstream``: a 200 stream that sends ``event: error`` (overloaded) after
  ``after=N`` events (default 3), then ends the body cleanly.
- ``error_midstream``: the same with ``type=`` / ``message=`` (default ``api_error``).
- ``drop``: close the TCP connection after ``after=N`` events (default 3; 0: before the
  status line), with no chunked terminator.
- ``stall``: after ``after=N`` events (default 3) sleep ``seconds=S`` (default: forever),
  then finish normally.
- ``slow_first_byte``: sleep ``seconds=S`` (default 5) before the status line.
- ``bad_stream``: 200 ``application/json`` with a body that is neither SSE nor a message.
- ``invalid_bootstrap``: the bootstrap endpoint answers 200 with a body that breaks its
  schema (elsewhere it is ``ok``).

On a non-streaming response ``after=0`` still means "before the status line" and any other
``after`` means "after the headers and half the body"; the two mid-stream errors become the
matching error status instead (overloaded -> 529).

Every status kind (the numeric ones, ``status``, ``context_overflow``, ``prompt_too_long``)
also takes the header options ``retry_after=S``, ``retry_after_ms=MS``,
``retry_after_date=S`` (an HTTP-date S seconds from now), ``should_retry=true|false``,
``reset=EPOCH`` and ``overage_disabled_reason=R``. Every kind takes ``times=N|all`` (a body
directive applies to the first N requests carrying that exact directive text; default
``all``: every request carrying it) and the reply options ``deltas=N`` and ``pace_ms=N``.

Values are percent-decoded, so a message may carry ``%2C`` for a comma; ``Fault.spec``
percent-encodes what needs it, and ``parse_fault(f.spec) == f`` for every fault.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Final, Literal, final
from urllib.parse import quote, unquote

OptionValue = int | float | bool | str
_OptionType = Literal["int", "float", "bool", "str", "times"]

# Kinds that answer with an HTTP error status instead of a message.
STATUS_KINDS: Final = frozenset(
    {
        "400", "401", "403", "408", "409", "429", "500", "502", "503", "504", "529",
        "status", "context_overflow", "prompt_too_long",
    }
)  # fmt: skip

# Options every kind accepts: directive counting and the shape of the (eventual) reply.
_COMMON: Final[Mapping[str, _OptionType]] = {"times": "times", "deltas": "int", "pace_ms": "int"}

# Header options of the status kinds (docs/reference/wire.md 4 and 4.1).
_HEADERS: Final[Mapping[str, _OptionType]] = {
    "retry_after": "int",
    "retry_after_ms": "int",
    "retry_after_date": "int",
    "should_retry": "bool",
    "reset": "int",
    "overage_disabled_reason": "str",
    "message": "str",
}

_KIND_OPTIONS: Final[Mapping[str, Mapping[str, _OptionType]]] = {
    "ok": {},
    **{kind: _HEADERS for kind in STATUS_KINDS},
    "status": {**_HEADERS, "status": "int", "type": "str"},
    "context_overflow": {**_HEADERS, "input": "int", "max_tokens": "int", "limit": "int"},
    "prompt_too_long": {**_HEADERS, "tokens": "int", "limit": "int"},
    "overloaded_midstream": {"after": "int"},
    "error_midstream": {"after": "int", "type": "str", "message": "str"},
    "drop": {"after": "int"},
    "stall": {"after": "int", "seconds": "float"},
    "slow_first_byte": {"seconds": "float"},
    "bad_stream": {},
    # A normal answer cut off after ``limit`` output tokens (stop_reason max_tokens), as if
    # the request had asked for that few: exercises output-limit recovery at any max_tokens.
    "max_tokens": {"limit": "int"},
    "invalid_bootstrap": {},
}

# Friendlier names people reach for first.
_ALIASES: Final[Mapping[str, str]] = {"rate_limit": "429", "overloaded": "529"}

KINDS: Final[frozenset[str]] = frozenset(_KIND_OPTIONS)

# The in-text directive; ``<`` and ``>`` cannot appear inside (percent-encode them).
DIRECTIVE_RE: Final = re.compile(r"<<emulator:([^<>]*)>>")


class FaultSpecError(ValueError):
    """A fault spec that does not parse or names an unknown kind or option."""


def _coerce(kind: str, name: str, kind_of: _OptionType, value: object) -> OptionValue:
    """Return ``value`` converted to the option's type, or raise FaultSpecError."""
    where = f"{kind}: option {name}"
    if kind_of == "str":
        if not isinstance(value, str):
            raise FaultSpecError(f"{where} must be a string")
        return value
    if kind_of == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise FaultSpecError(f"{where} must be true or false, not {value!r}")
    if kind_of == "times" and value == "all":
        return "all"
    if kind_of == "float":
        try:
            number = float(value) if isinstance(value, (int, float, str)) else math.nan
        except ValueError:
            number = math.nan
        if isinstance(value, bool) or math.isnan(number) or number < 0:
            raise FaultSpecError(f"{where} must be a number >= 0, not {value!r}")
        return number
    try:
        integer = int(value) if isinstance(value, (int, str)) else -1
    except ValueError:
        integer = -1
    if isinstance(value, bool) or integer < 0 or (kind_of == "times" and integer < 1):
        allowed = "an integer >= 1 or all" if kind_of == "times" else "an integer >= 0"
        raise FaultSpecError(f"{where} must be {allowed}, not {value!r}")
    return integer


@final
class Fault:
    """One scripted fault: a canonical kind and its validated, typed options.

    ``Fault("stall", after=2, seconds=1.5)`` or ``Fault("429", retry_after="3")``: string
    values are converted, aliases resolved, unknown kinds or options raise
    ``FaultSpecError``. Instances are immutable, hashable and compare by value.
    """

    __slots__ = ("_key", "kind", "options")

    kind: str
    options: Mapping[str, OptionValue]
    _key: tuple[str, frozenset[tuple[str, OptionValue]]]

    def __init__(self, kind: str, /, **options: object) -> None:
        canonical = _ALIASES.get(kind.strip().lower(), kind.strip().lower())
        schema = _KIND_OPTIONS.get(canonical)
        if schema is None:
            raise FaultSpecError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        typed: dict[str, OptionValue] = {}
        for name, value in options.items():
            kind_of = schema.get(name) or _COMMON.get(name)
            if kind_of is None:
                allowed = ", ".join(sorted({*schema, *_COMMON}))
                raise FaultSpecError(f"{canonical}: unknown option {name!r}; allowed: {allowed}")
            typed[name] = _coerce(canonical, name, kind_of, value)
        if canonical == "status" and not 100 <= int(typed.get("status", 0)) <= 599:
            raise FaultSpecError("status: option status=NNN (100-599) is required")
        object.__setattr__(self, "kind", canonical)
        object.__setattr__(self, "options", typed)
        object.__setattr__(self, "_key", (canonical, frozenset(typed.items())))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Fault is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fault) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        args = "".join(f", {name}={value!r}" for name, value in self.options.items())
        return f"Fault({self.kind!r}{args})"

    @property
    def spec(self) -> str:
        """The canonical spec string; ``parse_fault(self.spec) == self``."""
        if not self.options:
            return self.kind
        return f"{self.kind}:" + ",".join(f"{k}={_format(v)}" for k, v in self.options.items())

    @property
    def is_status(self) -> bool:
        """True when this fault answers with an HTTP error status."""
        return self.kind in STATUS_KINDS

    def int_option(self, name: str, default: int) -> int:
        """The integer option ``name``, or ``default`` when absent."""
        value = self.options.get(name, default)
        assert isinstance(value, int)
        return value

    def float_option(self, name: str, default: float | None) -> float | None:
        """The number option ``name``, or ``default`` when absent."""
        value = self.options.get(name, default)
        assert value is None or isinstance(value, float)
        return value

    def str_option(self, name: str, default: str | None) -> str | None:
        """The string option ``name``, or ``default`` when absent."""
        value = self.options.get(name, default)
        assert value is None or isinstance(value, str)
        return value

    def bool_option(self, name: str) -> bool | None:
        """The boolean option ``name``, or None when absent."""
        value = self.options.get(name)
        assert value is None or isinstance(value, bool)
        return value

    @property
    def times(self) -> int | None:
        """How many requests carrying a directive it applies to; None (the default, and
        ``times=all``) means every one."""
        value = self.options.get("times", "all")
        return None if value == "all" else int(value)


def _format(value: OptionValue) -> str:
    """Render an option value so that parsing it gives the same value back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    return quote(value, safe="")


def parse_fault(spec: str) -> Fault:
    """Parse ``KIND`` or ``KIND:key=value,...`` into a Fault.

    Whitespace around kind, keys and values is ignored and values are percent-decoded.
    Raises FaultSpecError (a ValueError) on anything malformed.
    """
    kind, _, rest = spec.strip().partition(":")
    options: dict[str, object] = {}
    for item in rest.split(",") if rest.strip() else ():
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise FaultSpecError(f"bad option {item.strip()!r} in fault spec {spec!r}")
        if name.strip() in options:
            raise FaultSpecError(f"option {name.strip()!r} given twice in {spec!r}")
        options[name.strip()] = unquote(value.strip())
    return Fault(kind, **options)


def find_directives(text: str) -> Iterator[str]:
    """Yield the spec of every ``<<emulator:SPEC>>`` directive in ``text``, in order."""
    for match in DIRECTIVE_RE.finditer(text):
        yield match.group(1).strip()


def strip_directives(text: str) -> str:
    """``text`` with every directive removed (what the echo reply repeats)."""
    return DIRECTIVE_RE.sub("", text)
