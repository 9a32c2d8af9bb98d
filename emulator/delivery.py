"""Writing one response, with the transport faults applied on the way (trio shell).

An ``Answer`` is a response decided in advance: status, headers, and its body as a list of
pieces (the SSE events of a stream; one body, or its two halves, otherwise). ``deliver``
writes it and applies the answer's transport fault at piece ``after``:

- ``slow_first_byte``: sleep ``seconds`` before the status line;
- ``drop``: close the connection there (piece 0: before the status line);
- ``stall``: sleep ``seconds`` (default forever) there, then go on;
- mid-stream error: write the ``error`` event there and end the body cleanly.

All sleeps are on the trio clock. With ``pace`` > 0 each piece is its own write, ``pace``
seconds apart; with no pace and ``per_event`` (``Emulator.write_per_event``), each piece is
its own write too, back to back (the API writes each SSE event as it is generated, so a
relay reads them one or a few at a time; trio's sockets set TCP_NODELAY, so each write
leaves as its own segment); with neither, everything before the fault point is one write
(a whole answer at once), the rest another. ``record`` sees the status once the head is written, ``events_sent`` grow as
events are written (streams only), and ``completed`` once the body end is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from .connection import Headers, HttpConnection
from .faults import Fault

# slow_first_byte's default delay when the spec gives none (seconds).
DEFAULT_FIRST_BYTE_DELAY: Final = 5.0
# Events written before a mid-stream fault (drop, stall, error) when the spec gives none.
DEFAULT_AFTER: Final = 3


class Record(Protocol):
    """What delivery reports into (RecordedRequest has these fields)."""

    status: int | None
    events_sent: int
    completed: bool


@dataclass(slots=True)
class Answer:
    """A response decided in advance. ``streaming``: ``pieces`` are SSE events."""

    status: int
    headers: Headers
    pieces: list[bytes]
    streaming: bool = False
    pace: float = 0.0
    fault: Fault | None = None
    # The mid-stream error event to end with at the fault point, if any.
    error_event: bytes | None = None
    keep_alive: bool = True


_POINT_FAULTS: Final = frozenset({"drop", "stall", "overloaded_midstream", "error_midstream"})


def _split(answer: Answer) -> tuple[list[bytes], int | None]:
    """The pieces to write and where the transport fault strikes (None: no such fault).

    A non-streaming body is cut in two halves when the fault strikes after ``after`` >= 1
    pieces, so the client sees the headers and a partial body first.
    """
    fault = answer.fault
    if fault is None or fault.kind not in _POINT_FAULTS:
        return answer.pieces, None
    after = fault.int_option("after", DEFAULT_AFTER)
    if answer.streaming or after == 0:
        return answer.pieces, min(after, len(answer.pieces))
    body = b"".join(answer.pieces)
    return [body[: len(body) // 2], body[len(body) // 2 :]], 1


async def deliver(http: HttpConnection, answer: Answer, record: Record, *, per_event: bool = False) -> bool:
    """Write ``answer`` with its fault; True if the connection may be reused. ``per_event``:
    one write per piece even without pace (see the module docstring).

    Raises trio.BrokenResourceError when the peer goes away. A checkpoint; may sleep.
    """
    fault = answer.fault
    if fault is not None and fault.kind == "slow_first_byte":
        await trio.sleep(fault.float_option("seconds", DEFAULT_FIRST_BYTE_DELAY) or 0.0)
    pieces, point = _split(answer)
    if fault is not None and point == 0:
        if fault.kind == "drop":
            return False
        if fault.kind == "stall":
            await _stall(fault)
            point = None
    head = http.head(answer.status, answer.headers)
    record.status = answer.status
    if fault is None or point is None:
        await _write(http, head, pieces, answer, record, end=True, per_event=per_event)
        record.completed = True
        return answer.keep_alive
    await _write(http, head, pieces[:point], answer, record, end=False, per_event=per_event)
    if fault.kind == "drop":
        return False
    if answer.error_event is not None:
        await http.send(http.chunk(answer.error_event) + http.end())
        record.events_sent += 1
    else:
        await _stall(fault)
        await _write(http, b"", pieces[point:], answer, record, end=True, per_event=per_event)
    record.completed = True
    return answer.keep_alive


async def _stall(fault: Fault) -> None:
    seconds = fault.float_option("seconds", None)
    if seconds is None or math.isinf(seconds):
        await trio.sleep_forever()
    await trio.sleep(seconds)


async def _write(
    http: HttpConnection,
    prefix: bytes,
    pieces: list[bytes],
    answer: Answer,
    record: Record,
    *,
    end: bool,
    per_event: bool,
) -> None:
    """Write ``prefix``, ``pieces`` and (if ``end``) the body end.

    Without pace nor ``per_event`` that is one write; otherwise one write per piece,
    ``answer.pace`` seconds apart (none before the first; back to back without pace), the
    prefix riding with the first piece and the end with the last.
    """
    counted = 1 if answer.streaming else 0
    if (answer.pace <= 0 and not per_event) or not pieces:
        # h11 must see the data before the end of message, so encode in that order.
        data = http.chunk(b"".join(pieces)) if pieces else b""
        await http.send(prefix + data + (http.end() if end else b""))
        record.events_sent += counted * len(pieces)
        return
    last = len(pieces) - 1
    for index, piece in enumerate(pieces):
        if index > 0 and answer.pace > 0:
            await trio.sleep(answer.pace)
        data = http.chunk(piece) + (http.end() if end and index == last else b"")
        await http.send((prefix if index == 0 else b"") + data)
        record.events_sent += counted
