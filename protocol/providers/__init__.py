"""Provider request shaping (pure): from the first-party body and headers to what one
provider expects on the wire (docs/reference/wire.md 7 to 9). One module per provider; ``ProviderRequest``
is what each returns. Auth headers are not shaped here: the actors add (or sign) them.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

FIRST_PARTY: Final = "firstParty"
BEDROCK: Final = "bedrock"
VERTEX: Final = "vertex"
FOUNDRY: Final = "foundry"
PROVIDERS: Final = (FIRST_PARTY, BEDROCK, VERTEX, FOUNDRY)

DecoderKind = Literal["sse", "eventstream"]


class ProviderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One upstream request: ``path`` is appended to the provider's base URL; ``headers``
    carry everything but the credential; ``decoder`` says how a streaming body is framed."""

    method: str = "POST"
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    decoder: DecoderKind = "sse"


def split_betas(value: str) -> list[str]:
    """An ``anthropic-beta`` header's values, trimmed, empty ones dropped."""
    return [beta.strip() for beta in value.split(",") if beta.strip()]


def metrics_label(provider: str) -> str:
    """The ``provider`` label of the metrics: ``anthropic`` for the first party, else the name."""
    return "anthropic" if provider == FIRST_PARTY else provider


def route_provider(model: str, routes: tuple[tuple[str, str], ...]) -> str | None:
    """The provider of the longest route prefix ``model`` starts with, or None."""
    best: tuple[str, str] | None = None
    for prefix, provider in routes:
        if model.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, provider)
    return None if best is None else best[1]


def parse_routes(raw: str) -> tuple[tuple[str, str], ...]:
    """``SWITCHBOARD_PROVIDER_ROUTES``: ``prefix=provider`` pairs, comma-separated.

    Raises:
        ValueError: a pair without ``=`` or an unknown provider.
    """
    routes: list[tuple[str, str]] = []
    for pair in raw.split(","):
        if not pair.strip():
            continue
        prefix, sep, provider = pair.partition("=")
        if not sep or provider.strip() not in PROVIDERS:
            raise ValueError(f"bad route {pair.strip()!r}: want prefix=provider, provider one of {', '.join(PROVIDERS)}")
        routes.append((prefix.strip(), provider.strip()))
    return tuple(routes)
