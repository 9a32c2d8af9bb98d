"""How long the OTLP export decoding (protocol/otlp.py) holds the event loop on hostile
exports of the largest size the HTTP door takes: ``./.venv/bin/python scripts/otlp_decode_timing.py``.

Each case is an 8 MiB protobuf body shaped to make the walk as long as it can be; the walk
stops past ``MAX_FIELDS`` fields, so each should take a few tens of milliseconds at most.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.otlp import MAX_EXPORT_BYTES, OtlpError, count_items


def _length_delimited(number: int, value: bytes) -> bytes:
    out = bytearray([number << 3 | 2])
    size = len(value)
    while True:
        low = size & 0x7F
        size >>= 7
        out.append(low | (0x80 if size else 0))
        if not size:
            return bytes(out) + value


def main() -> None:
    half = MAX_EXPORT_BYTES // 2
    cases = {
        "8 MiB of empty resources": b"\x0a\x00" * half,
        "one resource of empty scopes": _length_delimited(1, b"\x12\x00" * (half - 4)),
        "8 MiB of skipped varint fields": b"\x18\x01" * half,
    }
    for name, body in cases.items():
        started = time.perf_counter()
        try:
            outcome = f"{count_items(body, 'logs', 'protobuf')} items"
        except OtlpError as exc:
            outcome = f"refused ({exc})"
        print(f"{name}: {outcome}, {1000 * (time.perf_counter() - started):.1f} ms")


if __name__ == "__main__":
    main()
