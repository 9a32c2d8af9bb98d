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

``data`` stays ``bytes``: the gateway relays event payloads without decoding them (DESIGN
principle 6). The only error this module raises is ``RemoteProtocolError``: for a line
longer than ``max_line_bytes`` (a runaway upstream must not eat the memory) or an event
name or id that is not UTF-8. Any other exception is a bug.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from protocol.errors import RemoteProtocolError

# The API's own request limit is 32 MiB; no single SSE line of a response comes near it.
DEFAULT_MAX_LINE_BYTES: Final = 32 * 1024 * 1024

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

    __slots__ = ("_buf", "_data", "_event", "_last_id", "_max_line", "_retry", "_started")

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event: bytes | None = None
        self._last_id: str | None = None
        self._retry: int | None = None
        self._max_line = max_line_bytes
        self._started = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Take the next bytes of the stream; return the events they complete (maybe none).

        Raises:
            RemoteProtocolError: a line grew past ``max_line_bytes``, or a name is not UTF-8.
        """
        if not chunk:
            return []
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf
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
        if len(tail) > self._max_line:
            raise RemoteProtocolError(
                f"SSE line longer than {self._max_line} bytes", error_type="api_error"
            )
        self._buf = tail
        events: list[ServerSentEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: finish a last line ended by a lone CR; drop an unterminated event."""
        events: list[ServerSentEvent] = []
        if self._buf.endswith(b"\r"):
            self._line(self._buf[:-1], events)
        self._buf = b""
        self._data = []
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
