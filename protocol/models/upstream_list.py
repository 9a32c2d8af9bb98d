"""An upstream ``GET /v1/models`` answer (anthropic-sdk-python ``types/model_info.py``), read
into typed Structs, bounded, and turned into catalog entries for the models the catalog does
not know (``Catalog.merged`` in protocol/models/catalog.py) (pure)."""

from __future__ import annotations

import re
from typing import Final

import msgspec

from protocol.errors import RemoteProtocolError
from protocol.models.spec import ADAPTIVE_THINKING, EFFORT, FAMILIES, THINKING_OFF, XHIGH, ModelSpec

_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


# A model id longer than this is not an id: such an entry is skipped.
MAX_MODEL_ID: Final = 256


class _Support(msgspec.Struct, frozen=True):
    supported: bool = False


class _Effort(msgspec.Struct, frozen=True):
    supported: bool = False
    xhigh: _Support | None = None


class _ThinkingTypes(msgspec.Struct, frozen=True):
    adaptive: _Support | None = None
    disabled: _Support | None = None


class _Thinking(msgspec.Struct, frozen=True):
    supported: bool = False
    types: _ThinkingTypes | None = None


class _Capabilities(msgspec.Struct, frozen=True):
    effort: _Effort | None = None
    thinking: _Thinking | None = None


class UpstreamModel(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the upstream's ``GET /v1/models`` (unknown fields ignored)."""

    id: str
    display_name: str | None = None
    created_at: str | None = None
    max_input_tokens: int | None = None
    max_tokens: int | None = None
    line: str | None = None
    capabilities: _Capabilities | None = None

    def released(self) -> str | None:
        day = (self.created_at or "")[:10]
        return day if _ISO_DATE.fullmatch(day) and not day.startswith("1970") else None

    def spec(self, assumed: frozenset[str]) -> ModelSpec:
        """A catalog entry for a model the catalog does not know."""
        capabilities = set(assumed) | {THINKING_OFF}
        caps = self.capabilities
        if caps is not None and caps.effort is not None and caps.effort.supported:
            capabilities.add(EFFORT)
            if caps.effort.xhigh is not None and caps.effort.xhigh.supported:
                capabilities.add(XHIGH)
        types = caps.thinking.types if caps is not None and caps.thinking is not None else None
        if types is not None:
            if types.adaptive is not None and types.adaptive.supported:
                capabilities.add(ADAPTIVE_THINKING)
            if types.disabled is not None and not types.disabled.supported:
                capabilities.discard(THINKING_OFF)
        positive = [n for n in (self.max_input_tokens, self.max_tokens) if n is not None and n > 0]
        return ModelSpec(
            key=self.id.strip().lower(),
            display_name=self.display_name or self.id,
            family=self.line if self.line in FAMILIES else None,
            released=self.released(),
            first_party=self.id.strip(),
            context_window=self.max_input_tokens if self.max_input_tokens in positive else None,
            max_output=self.max_tokens if self.max_tokens in positive else None,
            capabilities=frozenset(capabilities),
            origin="upstream",
        )


class UpstreamPage(msgspec.Struct, frozen=True, kw_only=True):
    data: tuple[UpstreamModel, ...] = ()
    has_more: bool = False
    last_id: str | None = None


_PAGE: Final = msgspec.json.Decoder(UpstreamPage)


def decode_models_page(raw: bytes) -> UpstreamPage:
    """An upstream ``GET /v1/models`` body (the caller bounds its size); entries with an
    implausible id are dropped.

    Raises:
        RemoteProtocolError: not the API's list shape.
    """
    try:
        page = _PAGE.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(f"GET /v1/models answer: {exc}") from exc
    kept = tuple(m for m in page.data if 0 < len(m.id.strip()) <= MAX_MODEL_ID)
    return msgspec.structs.replace(page, data=kept)

