"""The emulator's ``GET /v1/models`` answers: each model's object and the page (pure).

The models of ``emulator/models.py``, newest first like the API; those of
docs/reference/reference-client-now.md 1 carry the limits and the effort and thinking capabilities the
API's ``/v1/models`` objects have, the others are listed without.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from .models import CATALOG
from .responses import JSON


def _support(value: bool) -> JSON:
    return {"supported": value}


def _model(
    model_id: str, display_name: str, created_at: str, line: str, max_input: int, max_tokens: int,
    *, effort: bool, xhigh: bool = False, adaptive: bool = False, thinking_off: bool = True,
) -> JSON:
    """One model object with the fields of anthropic-sdk-python's ``ModelInfo`` the gateway
    reads: limits, line, and the effort and thinking parts of ``capabilities``."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name,
        "created_at": created_at,
        "max_input_tokens": max_input,
        "max_tokens": max_tokens,
        "line": line,
        "capabilities": {
            "effort": {
                "supported": effort,
                **{level: _support(effort) for level in ("low", "medium", "high", "max")},
                "xhigh": _support(xhigh),
            },
            "thinking": {
                "supported": True,
                "types": {
                    "enabled": _support(True),
                    "adaptive": _support(adaptive),
                    "disabled": _support(thinking_off),
                },
            },
        },
    }


# The limits and capabilities of the models that docs/reference/reference-client-now.md 1 describes, as the
# API's ``/v1/models`` objects carry them; the other catalog models are listed without.
_DETAILED: Final[tuple[JSON, ...]] = (
    _model("claude-sonnet-5", "Claude Sonnet 5", "2026-06-30T00:00:00Z", "sonnet", 1_000_000, 128_000,
           effort=True, xhigh=True, adaptive=True),
    _model("claude-fable-5", "Claude Fable 5", "2026-06-09T00:00:00Z", "fable", 1_000_000, 128_000,
           effort=True, xhigh=True, adaptive=True, thinking_off=False),
    _model("claude-opus-4-8", "Claude Opus 4.8", "2026-05-28T00:00:00Z", "opus", 1_000_000, 128_000,
           effort=True, xhigh=True, adaptive=True),
    _model("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z", "sonnet", 200_000, 128_000,
           effort=True, adaptive=True),
    _model("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z", "opus", 200_000, 128_000,
           effort=True, adaptive=True),
    _model("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z", "opus", 200_000, 64_000,
           effort=True),
    _model("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z", "haiku", 200_000, 64_000,
           effort=False),
    _model("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z", "sonnet", 200_000, 64_000,
           effort=False),
)


_DETAILS: Final[dict[str, JSON]] = {str(model["id"]): model for model in _DETAILED}

# The catalogue GET /v1/models serves (every model of ``emulator/models.py``, newest first like
# the API). The Router keeps a copy that tests may replace.
MODELS: Final[tuple[JSON, ...]] = tuple(_DETAILS.get(model.id, model.json()) for model in CATALOG)


def model_json(model_id: str, models: Sequence[JSON] = MODELS) -> JSON | None:
    """One ``/v1/models/{id}`` object, or None for an unknown id."""
    return next((model for model in models if model["id"] == model_id), None)


def models_page(models: Sequence[JSON] = MODELS) -> bytes:
    """The ``GET /v1/models`` body: every model on one page."""
    return msgspec.json.encode(
        {
            "data": list(models),
            "has_more": False,
            "first_id": models[0]["id"] if models else None,
            "last_id": models[-1]["id"] if models else None,
        }
    )
