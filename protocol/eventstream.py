"""An incremental, sans-IO decoder (and encoder) for the AWS event-stream framing that
Bedrock's ``invoke-with-response-stream`` answers with (docs/reference/wire.md 7.6).

Two layers:

- ``EventStreamDecoder.feed(chunk)`` returns the complete ``EventStreamMessage``\\ s (headers
  and payload) a chunk finishes; both CRC-32s are checked, and a mismatch, a length out of
  bounds, an unknown header type or a duplicate header raise ``RemoteProtocolError``.
- ``BedrockStreamDecoder.feed(chunk)`` turns those into Anthropic events: a ``chunk`` event's
  ``bytes`` (base64) is exactly the JSON the first party sends as one SSE ``data:``; its
  event name is the JSON's ``type``. The ``amazon-bedrock-invocationMetrics`` Bedrock appends
  to ``message_stop`` is stripped (the client asked for the Anthropic stream). An exception
  frame raises ``BedrockStreamException`` with the HTTP status the retry rules expect
  (docs/reference/wire.md 12 item 4).

``encode_message`` builds a frame (the emulator and the tests use it).
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from typing import Final

import msgspec

from protocol.bounded_json import BoundedDecoder
from protocol.errors import RemoteProtocolError

_PRELUDE: Final = struct.Struct(">III")
_PRELUDE_LEN: Final = 12
_CRC_LEN: Final = 4
# docs/reference/wire.md 7.6: headers at most 128 KiB, payload at most 24 MiB.
MAX_HEADERS_BYTES: Final = 128 * 1024
MAX_PAYLOAD_BYTES: Final = 24 * 1024 * 1024
_MIN_MESSAGE: Final = _PRELUDE_LEN + _CRC_LEN
_MAX_MESSAGE: Final = _MIN_MESSAGE + MAX_HEADERS_BYTES + MAX_PAYLOAD_BYTES

HeaderValue = bool | int | bytes | str


class EventStreamMessage(msgspec.Struct, frozen=True, kw_only=True):
    headers: dict[str, HeaderValue]
    payload: bytes


def _crc(data: bytes | memoryview, seed: int = 0) -> int:
    return zlib.crc32(data, seed) & 0xFFFFFFFF


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"event-stream: {message}", error_type="api_error")


def _parse_headers(raw: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos = 0
    end = len(raw)
    try:
        while pos < end:
            name_len = raw[pos]
            name = raw[pos + 1 : pos + 1 + name_len].decode("utf-8")
            pos += 1 + name_len
            kind = raw[pos]
            pos += 1
            value: HeaderValue
            if kind == 0:
                value = True
            elif kind == 1:
                value = False
            elif kind in (2, 3, 4, 5, 8):
                size = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8}[kind]
                if pos + size > end:
                    raise _bad("truncated header value")
                value = int.from_bytes(raw[pos : pos + size], "big", signed=True)
                pos += size
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", raw, pos)
                pos += 2
                if pos + length > end:
                    raise _bad("truncated header value")
                chunk = raw[pos : pos + length]
                pos += length
                value = chunk.decode("utf-8") if kind == 7 else bytes(chunk)
            elif kind == 9:
                if pos + 16 > end:
                    raise _bad("truncated header value")
                value = bytes(raw[pos : pos + 16])
                pos += 16
            else:
                raise _bad(f"unknown header value type {kind}")
            if name in headers:
                raise _bad(f"duplicate header {name!r}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise _bad("malformed headers") from exc
    return headers


class EventStreamDecoder:
    """Incremental event-stream message decoder. One per stream."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[EventStreamMessage]:
        """Take the next bytes; return the messages they complete.

        Raises:
            RemoteProtocolError: a CRC mismatch, a bad length, or malformed headers.
        """
        self._buf += chunk
        out: list[EventStreamMessage] = []
        while len(self._buf) >= _PRELUDE_LEN:
            total, headers_len, prelude_crc = _PRELUDE.unpack_from(self._buf, 0)
            if _crc(bytes(self._buf[:8])) != prelude_crc:
                raise _bad("prelude CRC mismatch")
            if not _MIN_MESSAGE <= total <= _MAX_MESSAGE or headers_len > min(MAX_HEADERS_BYTES, total - _MIN_MESSAGE):
                raise _bad(f"message length {total} (headers {headers_len}) out of bounds")
            if len(self._buf) < total:
                break
            message = bytes(self._buf[:total])
            del self._buf[:total]
            (message_crc,) = struct.unpack_from(">I", message, total - _CRC_LEN)
            if _crc(message[: total - _CRC_LEN]) != message_crc:
                raise _bad("message CRC mismatch")
            headers = _parse_headers(message[_PRELUDE_LEN : _PRELUDE_LEN + headers_len])
            out.append(EventStreamMessage(headers=headers, payload=message[_PRELUDE_LEN + headers_len : total - _CRC_LEN]))
        return out

    def close(self) -> None:
        """End of stream.

        Raises:
            RemoteProtocolError: the stream ended inside a message.
        """
        if self._buf:
            raise _bad(f"stream ended inside a message ({len(self._buf)} bytes left)")


def _encode_header(name: str, value: str | bytes) -> bytes:
    raw_name = name.encode("utf-8")
    raw = value.encode("utf-8") if isinstance(value, str) else value
    kind = 7 if isinstance(value, str) else 6
    return bytes([len(raw_name)]) + raw_name + bytes([kind]) + struct.pack(">H", len(raw)) + raw


def encode_message(headers: list[tuple[str, str | bytes]], payload: bytes) -> bytes:
    """One event-stream message (string and bytes header values)."""
    raw_headers = b"".join(_encode_header(name, value) for name, value in headers)
    total = _MIN_MESSAGE + len(raw_headers) + len(payload)
    first8 = struct.pack(">II", total, len(raw_headers))
    body = first8 + struct.pack(">I", _crc(first8)) + raw_headers + payload
    return body + struct.pack(">I", _crc(body))


# --- Bedrock's use of it -----------------------------------------------------------------

# docs/reference/wire.md 7.5 / 12 item 4: the HTTP status and API error type each exception stands for.
EXCEPTION_STATUS: Final[dict[str, tuple[int, str]]] = {
    "throttlingException": (429, "rate_limit_error"),
    "serviceUnavailableException": (503, "api_error"),
    "modelStreamErrorException": (424, "api_error"),
    "validationException": (400, "invalid_request_error"),
    "internalServerException": (500, "api_error"),
    "modelTimeoutException": (408, "timeout_error"),
}
_METRICS_KEY: Final = "amazon-bedrock-invocationMetrics"


class BedrockStreamException(RemoteProtocolError):
    """An exception frame: ``status`` and ``error_type`` as the retry rules read them."""

    def __init__(self, exception_type: str, message: str) -> None:
        status, error_type = EXCEPTION_STATUS.get(exception_type, (500, "api_error"))
        super().__init__(f"{exception_type}: {message}", error_type=error_type)
        self.status = status
        self.exception_type = exception_type


class _Chunk(msgspec.Struct):
    bytes: str


class _Type(msgspec.Struct):
    type: str = "completion"


class _ExceptionBody(msgspec.Struct):
    message: str = ""


_CHUNK: Final = BoundedDecoder(_Chunk)
_TYPE: Final = BoundedDecoder(_Type)
_EXCEPTION: Final = BoundedDecoder(_ExceptionBody)
_OBJECT: Final = BoundedDecoder(dict[str, object])
_ENCODER: Final = msgspec.json.Encoder()


def _without_metrics(data: bytes) -> bytes:
    event = _OBJECT.decode(data)
    event.pop(_METRICS_KEY, None)
    return _ENCODER.encode(event)


class BedrockStreamDecoder:
    """Event-stream bytes in, ``(event name, data JSON)`` Anthropic events out."""

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        self._frames = EventStreamDecoder()

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """Raises:
            BedrockStreamException: an exception or error frame.
            RemoteProtocolError: bad framing or a chunk that is not base64 JSON.
        """
        events: list[tuple[str, bytes]] = []
        for message in self._frames.feed(chunk):
            kind = message.headers.get(":message-type")
            if kind == "exception":
                exception_type = str(message.headers.get(":exception-type", "internalServerException"))
                try:
                    text = _EXCEPTION.decode(message.payload).message
                except msgspec.DecodeError:
                    text = message.payload[:500].decode("utf-8", "replace")
                raise BedrockStreamException(exception_type, text)
            if kind == "error":
                raise BedrockStreamException(
                    str(message.headers.get(":error-code", "internalServerException")),
                    str(message.headers.get(":error-message", "")),
                )
            if message.headers.get(":event-type") != "chunk":
                continue
            try:
                data = base64.b64decode(_CHUNK.decode(message.payload).bytes, validate=True)
                name = _TYPE.decode(data).type
            except (msgspec.DecodeError, binascii.Error) as exc:
                raise _bad("chunk is not base64 JSON") from exc
            if name == "message_stop" and _METRICS_KEY.encode() in data:
                data = _without_metrics(data)
            events.append((name, data))
        return events

    def close(self) -> None:
        self._frames.close()


def encode_chunk(data: bytes, padding: str = "abcdefgh") -> bytes:
    """A Bedrock ``chunk`` frame carrying one Anthropic event's JSON."""
    payload = _ENCODER.encode({"bytes": base64.b64encode(data).decode("ascii"), "p": padding})
    return encode_message(
        [(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")], payload
    )


def encode_exception(exception_type: str, message: str) -> bytes:
    """A Bedrock exception frame."""
    return encode_message(
        [(":exception-type", exception_type), (":content-type", "application/json"), (":message-type", "exception")],
        _ENCODER.encode({"message": message}),
    )
