"""The models the emulator serves: their wire ids, aliases and prompt-cache minimums (pure).

A Messages or count_tokens request naming a model that is not here gets the API's 404
``not_found_error`` with the message ``model: <id>`` (the wording api.anthropic.com uses);
``[1m]`` is a client-side suffix (the 1M context is the ``context-1m-2025-08-07`` beta), so
an id carrying it is unknown like any other. ``Emulator(models=...)`` adds ids a test needs.

The catalog: the model ids of docs/reference/wire.md 10.1 (the SDK's list and the later model pages),
the ids of docs/reference/reference-client-now.md 1 that are not retired (the 4.0 models and Claude 3.5 /
3.7 reached end of life in 2026, docs/reference/wire.md 10.1, and now answer 404 as the real API does),
each listed model's undated alias, and Claude Haiku 3.

Minimum cacheable prompt length per model (tokens; a breakpoint whose prefix is shorter is
not cached: nothing written, nothing read, no error). The documentation and several
independent gateways agree on: 512 for Opus 5 / Fable 5 / Mythos 5 (and their .x
successors), 1024 for Opus 4.8, Sonnet 5, Sonnet 4.x and Opus 4.1, 4096 for Opus 4.7, 4.6,
4.5 and Haiku 4.5, 2048 for Haiku 3.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Model:
    """One model of the catalog: its ``GET /v1/models`` object and its cache minimum."""

    id: str
    display_name: str
    created_at: str
    cache_minimum: int
    aliases: tuple[str, ...] = ()

    def json(self) -> dict[str, object]:
        """The ``/v1/models/{id}`` object."""
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
        }


# Newest first, as ``GET /v1/models`` lists them. The ``created_at`` of the models newer than
# docs/reference/wire.md's snapshot are placeholders (only their order matters to a client).
CATALOG: Final[tuple[Model, ...]] = (
    Model("claude-opus-5-5", "Claude Opus 5.5", "2026-11-17T00:00:00Z", 512),
    Model("claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-11-17T00:00:00Z", 1024),
    Model("claude-haiku-5-5", "Claude Haiku 5.5", "2026-11-17T00:00:00Z", 1024),
    Model("claude-mythos-5-2", "Claude Mythos 5.2", "2026-10-27T00:00:00Z", 512),
    Model("claude-fable-5-2", "Claude Fable 5.2", "2026-10-27T00:00:00Z", 512),
    Model("claude-mythos-5-1", "Claude Mythos 5.1", "2026-09-15T00:00:00Z", 512),
    Model("claude-fable-5-1", "Claude Fable 5.1", "2026-09-15T00:00:00Z", 512),
    Model("claude-opus-5", "Claude Opus 5", "2026-08-04T00:00:00Z", 512),
    Model("claude-mythos-5", "Claude Mythos 5", "2026-06-02T00:00:00Z", 512),
    Model("claude-fable-5", "Claude Fable 5", "2026-06-02T00:00:00Z", 512),
    Model("claude-sonnet-5", "Claude Sonnet 5", "2026-05-19T00:00:00Z", 1024),
    Model("claude-opus-4-8", "Claude Opus 4.8", "2026-05-05T00:00:00Z", 1024),
    Model("claude-opus-4-7", "Claude Opus 4.7", "2026-04-16T00:00:00Z", 4096),
    Model("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z", 1024),
    Model("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z", 4096),
    Model("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z", 4096, ("claude-opus-4-5",)),
    Model("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z", 4096, ("claude-haiku-4-5",)),
    Model("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z", 1024, ("claude-sonnet-4-5",)),
    Model("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z", 1024, ("claude-opus-4-1",)),
    Model("claude-3-haiku-20240307", "Claude Haiku 3", "2024-03-07T00:00:00Z", 2048),
)  # fmt: skip

_BY_ID: Final[Mapping[str, Model]] = {
    name: model for model in CATALOG for name in (model.id, *model.aliases)
}
# docs/reference/wire.md 7.7: the cross-region inference profile prefixes, and the version suffix of a
# Bedrock model id (``-v1``, ``-v1:0``, ``-v2:0``).
_BEDROCK_GEOS: Final = frozenset({"us", "eu", "apac", "jp", "au", "us-gov", "global"})
_BEDROCK_VERSION: Final = re.compile(r"-v\d+(:\d+)?$")
# The cache minimum of a model added with ``Emulator(models=...)``: the most common one.
DEFAULT_CACHE_MINIMUM: Final = 1024


def find(model_id: str) -> Model | None:
    """The catalog model ``model_id`` names (its id or an alias), or None."""
    return _BY_ID.get(model_id)


def known(model_id: str, extra: Iterable[str] = ()) -> bool:
    """Whether a request may name ``model_id`` (the catalog or the ``extra`` ids)."""
    return model_id in _BY_ID or model_id in extra


def bedrock_base(model_id: str) -> str | None:
    """The first-party id a Bedrock model id stands for (``us.anthropic.claude-opus-4-6-v1``
    -> ``claude-opus-4-6``, docs/reference/wire.md 7.7), or None for an ARN (a profile the emulator cannot
    resolve, so accepted as it is)."""
    if model_id.startswith("arn:"):
        return None
    geo, dot, rest = model_id.partition(".")
    base = rest if dot and geo in _BEDROCK_GEOS else model_id
    return _BEDROCK_VERSION.sub("", base.removeprefix("anthropic."))


def vertex_base(model_id: str) -> str:
    """The first-party id a Vertex model id stands for (``claude-sonnet-4-5@20250929`` ->
    ``claude-sonnet-4-5-20250929``, docs/reference/wire.md 8)."""
    return model_id.replace("@", "-")


def cache_minimum(model_id: str) -> int:
    """The minimum cacheable prefix of ``model_id`` in tokens (see the module docstring)."""
    model = _BY_ID.get(model_id)
    return DEFAULT_CACHE_MINIMUM if model is None else model.cache_minimum
