"""The model options every client sees in ``ready.models`` (docs/reference/reference-client.md 5.3), from the
catalog's ``model_options`` (protocol/models/catalog.toml)."""

from __future__ import annotations

from typing import Final

from protocol.frames import ModelOption
from protocol.models.catalog import BUILTIN

DEFAULT_MODEL_OPTIONS: Final = tuple(
    ModelOption(value=option.value, label=option.label, description=option.description or "")
    for option in BUILTIN.model_options
)
