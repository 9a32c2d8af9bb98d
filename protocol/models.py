"""The model options every client sees in ``ready.models`` (reference-client.md 5.3)."""

from __future__ import annotations

from typing import Final

from protocol.frames import ModelOption

DEFAULT_MODEL_OPTIONS: Final = (
    ModelOption(value="claude-opus-4-6", label="Opus 4.6", description="Most capable for complex work"),
    ModelOption(value="claude-sonnet-4-6", label="Sonnet 4.6", description="Best for everyday tasks"),
    ModelOption(value="claude-haiku-4-5-20251001", label="Haiku 4.5", description="Fastest for quick answers"),
)
