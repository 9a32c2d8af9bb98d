"""Which fault (and which reply options) a request gets (pure state, no I/O).

Sources, first match wins:

1. the programmatic queue (``Emulator.script``, ``POST /_emulator/faults``): FIFO, one
   fault per Messages or count_tokens request; then an outage (``Emulator.outage``): one
   fault for every request until a point in (trio) time;
2. the ``x-emulator-fault: SPEC`` request header: applied to every request carrying it;
3. a ``<<emulator:SPEC>>`` directive in the last user message (Messages requests only; the
   first directive counts): applied to every request carrying it, like the header, or with
   ``times=N`` to the first N requests carrying that exact directive text (counted per
   text since the last reset), so a retried request eventually goes through.

Reply options: ``deltas`` and ``pace_ms`` come from the first of the applied fault, the
header fault, the ``x-emulator-deltas`` / ``x-emulator-pace-ms`` headers and the directive
(whose options keep applying after its fault is used up).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import final

from .faults import Fault, FaultSpecError, find_directives, parse_fault


@dataclass(frozen=True, slots=True)
class Directions:
    """What one request gets: the applied fault (None: none) and the reply options."""

    fault: Fault | None = None
    deltas: int | None = None
    pace_ms: int = 0


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        number = -1
    if number < 0:
        raise FaultSpecError(f"{name} must be an integer >= 0, not {value!r}")
    return number


@final
class FaultScript:
    """The fault queue and the per-directive use counts of one emulator."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._directive_uses: Counter[str] = Counter()
        self._outage: tuple[Fault, float] | None = None

    def outage(self, fault: Fault | str, until: float) -> None:
        """Give every request ``fault`` until the clock reaches ``until`` (after the queue)."""
        self._outage = (fault if isinstance(fault, Fault) else parse_fault(fault), until)

    @property
    def pending(self) -> tuple[Fault, ...]:
        """The queued faults, next first."""
        return tuple(self._queue)

    def extend(self, faults: Iterable[Fault | str]) -> list[Fault]:
        """Queue ``faults`` (specs are parsed first: all or nothing); return them parsed.

        Raises FaultSpecError when any spec is malformed.
        """
        parsed = [fault if isinstance(fault, Fault) else parse_fault(fault) for fault in faults]
        self._queue.extend(parsed)
        return parsed

    def clear(self) -> None:
        """Forget the queue and the directive counts."""
        self._queue.clear()
        self._directive_uses.clear()
        self._outage = None

    def select(self, headers: Mapping[str, str], user_text: str | None, now: float = 0.0) -> Directions:
        """Decide the fault and options of one request, consuming what it uses.

        ``user_text`` is the last user message's text, or None where directives do not
        apply. Raises FaultSpecError on a malformed header or directive (nothing consumed).
        """
        header_spec = headers.get("x-emulator-fault", "").strip()
        header_fault = parse_fault(header_spec) if header_spec else None
        header_deltas = _header_int(headers, "x-emulator-deltas")
        header_pace = _header_int(headers, "x-emulator-pace-ms")
        directive_spec = next(find_directives(user_text), None) if user_text else None
        directive = parse_fault(directive_spec) if directive_spec is not None else None

        applied = self._queue.popleft() if self._queue else None
        if applied is None and self._outage is not None and now < self._outage[1]:
            applied = self._outage[0]
        applied = applied or header_fault
        if applied is None and directive is not None and directive_spec is not None:
            times = directive.times
            if times is None:
                applied = directive
            elif self._directive_uses[directive_spec] < times:
                self._directive_uses[directive_spec] += 1
                applied = directive
        # Tuple order is the precedence order of the option sources.
        deltas_sources = (applied, header_fault, header_deltas, directive)
        pace_sources = (applied, header_fault, header_pace, directive)
        return Directions(
            fault=applied,
            deltas=_first_option(deltas_sources, "deltas"),
            pace_ms=_first_option(pace_sources, "pace_ms") or 0,
        )


def _first_option(sources: Iterable[Fault | int | None], name: str) -> int | None:
    """The first value of option ``name`` among faults and plain header values."""
    for source in sources:
        if isinstance(source, Fault):
            if name in source.options:
                return source.int_option(name, 0)
        elif source is not None:
            return source
    return None
