"""WebSocket framing of server-to-client text messages (RFC 6455 section 5.2), pure.

The FrontDoor writes many small event frames; building their wire bytes here and sending a
batch of them in one socket write (actors/doors/ws_batch.py) is what keeps the per-event cost of
the hot path low. A server's frames are unmasked; each message is one final frame (FIN set,
opcode 1 = text), with the 7-bit, 16-bit or 64-bit payload length form.
"""

from __future__ import annotations

from typing import Final

_FIN_TEXT: Final = 0x81


def text_frame(payload: bytes) -> bytes:
    """The frame bytes of one complete text message. ``payload`` must be UTF-8 (JSON is)."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 1 << 16:
        return bytes((_FIN_TEXT, 126)) + size.to_bytes(2, "big") + payload
    return bytes((_FIN_TEXT, 127)) + size.to_bytes(8, "big") + payload
