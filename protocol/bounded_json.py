"""Bounded JSON decoding: the one way the gateway decodes JSON that came from outside.

Every byte string a client, the upstream, a file or a cloud answer hands the gateway is
decoded by a ``BoundedDecoder`` (a drop-in for ``msgspec.json.Decoder``), which adds three
limits to msgspec's own checks:

- **Nesting depth** (``MAX_DEPTH``): msgspec raises ``RecursionError`` (not a decode error)
  near depth 1000, and shallower values still break Python code that walks them
  recursively (encoding, request building, message repairs, cache breakpoints). A value
  deeper than the limit is refused.
- **Size** (``MAX_BYTES``): no single JSON text the gateway reads may be larger.
- **Numbers**: msgspec itself refuses an integer of more than 4300 digits (Python's
  ``int`` string limit) and a float outside the double range; fields that must fit
  somewhere narrower (token counts, which end in SQLite integers) carry their own bound
  where they are read (``protocol.usage.MAX_TOKEN_COUNT``).

Every refusal raises ``JsonLimitError``, a subclass of ``msgspec.DecodeError``, so each
call site's existing decode-error path (``rejected`` ``bad_frame`` for a client frame, a
400 ``invalid_request_error`` at the HTTP door, a malformed-stream ``api_error`` attempt
for the upstream) handles it unchanged. A ``RecursionError`` raised inside msgspec becomes
the same error. Nothing else escapes but msgspec's own ``DecodeError``/``ValidationError``.

Cost: the depth check runs only when the text holds more opening brackets than the limit
(every small event and frame skips it) and then at C speed: escaped backslashes and quotes
removed (``bytes.replace``), everything but quotes and brackets deleted
(``bytes.translate``), strings cut out, and the running depth summed by
``itertools.accumulate`` over the remaining bracket bytes. It runs after msgspec accepted
the text, so it only ever sees valid JSON, where quotes pair up.
"""

from __future__ import annotations

import itertools
from array import array
from typing import Any, Final, Generic, TypeVar, overload

import msgspec

T = TypeVar("T")

# Real requests nest far less: a Claude Code request with its tools' JSON schemas is 10 to
# 20 levels deep, an MCP tool's schema a few more. 128 leaves room for any honest schema or
# tool input, and keeps every recursive walk of a decoded value (128 levels, a few frames
# each) well inside Python's default recursion limit of 1000, wherever it is called from.
MAX_DEPTH: Final = 128

# Twice the API's 32 MiB request limit (docs/protocol.md, README "The HTTP door"): any body
# the API accepts fits, with its front-door envelope and JSON re-escaping. The doors'
# transport limits (WebSocket frame size, HTTP body size) are tighter; this bounds every
# other source (upstream answers, files) that has no transport limit of its own.
MAX_BYTES: Final = 64 * 1024 * 1024

_STRUCTURE: Final = b'"[]{}'
_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in _STRUCTURE)
# "{" and "[" become +1, "}" and "]" become -1 (0xFF read as a signed byte).
_TO_STEP: Final = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


class JsonLimitError(msgspec.DecodeError):
    """Outside JSON over a limit of this module: too deep, too large, or recursing."""


def json_depth(raw: bytes) -> int:
    """The nesting depth of a valid JSON text: 0 for a scalar, 1 for ``[]`` or ``{}``.

    Linear time at C speed (see the module docstring); on invalid JSON the answer is some
    number, never an exception or a slow path.
    """
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = text.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in kept:
        # Strings that held brackets: every other piece between quotes is inside a string.
        kept = b"".join(kept.split(b'"')[::2])
    steps = array("b")
    steps.frombytes(kept.translate(_TO_STEP))
    return max(itertools.accumulate(steps, initial=0))


def check_bounds(
    raw: bytes | str | memoryview, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES
) -> None:
    """Raise ``JsonLimitError`` when ``raw`` is larger than ``max_bytes`` or nests deeper
    than ``max_depth``. Cheap unless ``raw`` holds more than ``max_depth`` opening brackets."""
    if len(raw) > max_bytes:
        raise JsonLimitError(f"JSON text larger than {max_bytes} bytes")
    if isinstance(raw, str):
        if raw.count("[") + raw.count("{") <= max_depth:
            return
        data = raw.encode("utf-8", "surrogatepass")
    else:
        data = raw if isinstance(raw, bytes) else bytes(raw)
        if data.count(b"[") + data.count(b"{") <= max_depth:
            return
    if json_depth(data) > max_depth:
        raise JsonLimitError(f"JSON nested deeper than {max_depth} levels")


class BoundedDecoder(Generic[T]):
    """``msgspec.json.Decoder`` with this module's limits; build once, share freely."""

    __slots__ = ("_decoder", "max_bytes", "max_depth")

    @overload
    def __init__(
        self: BoundedDecoder[Any], *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES
    ) -> None: ...

    @overload
    def __init__(
        self: BoundedDecoder[T],
        type: type[T],
        *,
        max_depth: int = MAX_DEPTH,
        max_bytes: int = MAX_BYTES,
    ) -> None: ...

    @overload
    def __init__(
        self: BoundedDecoder[Any],
        type: Any,
        *,
        max_depth: int = MAX_DEPTH,
        max_bytes: int = MAX_BYTES,
    ) -> None: ...

    def __init__(
        self, type: Any = Any, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES
    ) -> None:
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(type)
        self.max_depth = max_depth
        self.max_bytes = max_bytes

    def decode(self, raw: bytes | str | memoryview) -> T:
        """Decode ``raw``.

        Raises:
            JsonLimitError: over a limit (a ``msgspec.DecodeError``).
            msgspec.DecodeError: not JSON; ``msgspec.ValidationError``: not the type.
        """
        if len(raw) > self.max_bytes:
            raise JsonLimitError(f"JSON text larger than {self.max_bytes} bytes")
        try:
            value: T = self._decoder.decode(raw)
        except RecursionError as exc:
            raise JsonLimitError(f"JSON nested deeper than {self.max_depth} levels") from exc
        check_bounds(raw, max_depth=self.max_depth, max_bytes=self.max_bytes)
        return value


_ANY: Final = BoundedDecoder()


def decode(raw: bytes | str | memoryview) -> Any:
    """Decode any outside JSON value within the default limits (see ``BoundedDecoder.decode``)."""
    return _ANY.decode(raw)
