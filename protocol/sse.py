"""An incremental, sans-IO decoder for ``text/event-stream`` (Server-Sent Events).

Bytes in, events out: ``SSEDecoder.feed(chunk)`` returns the events completed by that chunk,
``close()`` ends the stream. It follows the WHATWG event-stream interpretation
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

- lines end with CR, LF or CRLF, all equivalent; a CR at the end of a chunk is held back
  because the next chunk may start with its LF;
- a blank line dispatches the event; an event with no ``data`` line is dropped;
- lines starting with ``:`` are comments; a field without a colon has an empty value; one
  space after the colon is stripped; several ``data`` lines are joined with LF;
- ``id`` containing NUL is ignored; ``retry`` is kept only when all digits; a leading BOM
  is skipped;
- at end of stream, an event without its closing blank line is discarded (the spec says so,
  and the Messages API always closes its events).

``data`` stays ``bytes``: the gateway relays event payloads without decoding them (docs/architecture.md
principle 6). The only error this module raises is ``RemoteProtocolError``: for an event
larger than ``max_event_bytes`` (its data lines and the line being read, counted as they
arrive: a runaway upstream must neither eat the memory nor the CPU, and the rest of such an
event is never buffered), a line longer than ``max_line_bytes``, or an event name or id that
is not UTF-8. Any other exception is a bug.

Cost: a chunk without a line break is only appended to a list (a long line fed in many
chunks is joined once, when its line ends, never copied chunk by chunk).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from protocol.errors import RemoteProtocolError

# The largest upstream event the gateway takes. The Messages API streams text and tool
# input as many small deltas; what it sends whole in one event is a block (a server tool's
# result in ``content_block_start``, a compaction summary) or a message_start, each well
# below this: the API's own request limit is 32 MiB, and whatever comes back whole must fit
# in the next request of the conversation, with room left for the rest of it. Half of it
# still leaves that room, and bounds what one attempt makes the gateway buffer and decode
# (docs/protocol.md, "Bounds on what the gateway decodes").
DEFAULT_MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
# A line is part of an event: the same bound.
DEFAULT_MAX_LINE_BYTES: Final = DEFAULT_MAX_EVENT_BYTES

_LINE_BREAK: Final = re.compile(rb"\r\n|\r|\n")
_BOM: Final = b"\xef\xbb\xbf"


class ServerSentEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One dispatched event: its name (``message`` when unnamed), data, last id and retry."""

    event: str
    data: bytes
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental SSE decoder. Not thread-safe; one per stream."""

    __slots__ = (
        "_buf", "_buf_len", "_data", "_data_len", "_event", "_last_id", "_max_event", "_max_line",
        "_retry", "_started",
    )

    def __init__(
        self,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        # The unfinished line, in the pieces it arrived in (joined once its line ends).
        self._buf: list[bytes] = []
        self._buf_len = 0
        self._data: list[bytes] = []
        # The bytes of the current event's data lines so far.
        self._data_len = 0
        self._event: bytes | None = None
        self._last_id: str | None = None
        self._retry: int | None = None
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        self._started = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Take the next bytes of the stream; return the events they complete (maybe none).

        Raises:
            RemoteProtocolError: an event grew past ``max_event_bytes`` or a line past
                ``max_line_bytes``, or a name is not UTF-8.
        """
        if not chunk:
            return []
        held = self._buf
        if self._started and not (held and held[-1].endswith(b"\r")) and b"\n" not in chunk and b"\r" not in chunk:
            # The line goes on (no CR held back either): keep the piece, joined once the line ends.
            self._buf.append(chunk)
            self._buf_len += len(chunk)
            self._check(self._buf_len)
            return []
        buf = b"".join((*self._buf, chunk)) if self._buf else chunk
        self._buf = []
        self._buf_len = 0
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = [buf]
                self._buf_len = len(buf)
                return []
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
        # Hold back a trailing CR: it may be the first half of a CRLF split across chunks.
        held_cr = buf.endswith(b"\r")
        work = buf[:-1] if held_cr else buf
        lines = _LINE_BREAK.split(work) if b"\r" in work else work.split(b"\n")
        tail = lines.pop()
        if held_cr:
            tail += b"\r"
        events: list[ServerSentEvent] = []
        for line in lines:
            self._line(line, events)
        self._check(len(tail))
        if tail:
            self._buf = [tail]
            self._buf_len = len(tail)
        return events

    def _check(self, line_len: int) -> None:
        """Refuse a line, or the event it belongs to, that grew past its bound."""
        if self._data_len + line_len > self._max_event:
            raise RemoteProtocolError(
                f"SSE event larger than {self._max_event} bytes", error_type="api_error"
            )
        if line_len > self._max_line:
            raise RemoteProtocolError(
                f"SSE line longer than {self._max_line} bytes", error_type="api_error"
            )

    def close(self) -> list[ServerSentEvent]:
        """End of stream: finish a last line ended by a lone CR; drop an unterminated event."""
        events: list[ServerSentEvent] = []
        buf = b"".join(self._buf)
        if buf.endswith(b"\r"):
            self._line(buf[:-1], events)
        self._buf = []
        self._buf_len = 0
        self._data = []
        self._data_len = 0
        self._event = None
        return events

    def _line(self, line: bytes, events: list[ServerSentEvent]) -> None:
        if not line:
            if self._data:
                events.append(
                    ServerSentEvent(
                        event=_text(self._event) if self._event else "message",
                        data=b"\n".join(self._data),
                        id=self._last_id,
                        retry=self._retry,
                    )
                )
            self._data = []
            self._data_len = 0
            self._event = None
            return
        if line[0] == 0x3A:  # ":" starts a comment
            return
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if field == b"data":
            self._data.append(value)
            # Each data line after the first adds its joining LF.
            self._data_len += len(value) + (len(self._data) > 1)
            self._check(0)
        elif field == b"event":
            self._event = value
        elif field == b"id":
            if b"\0" not in value:
                self._last_id = _text(value)
        elif field == b"retry":
            if value.isdigit():
                self._retry = int(value)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("SSE field is not UTF-8", error_type="api_error") from exc


def encode_event(name: str, data: bytes) -> bytes:
    """Encode one event the way the Messages API does: ``event:`` line, ``data:`` line, blank."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
