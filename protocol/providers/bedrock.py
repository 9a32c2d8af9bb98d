"""Bedrock request shaping (docs/reference/wire.md 7.1, 7.2, 7.8; docs/reference/reference-client.md 6).

- ``model`` leaves the body for the path (``quote(model, safe=":")``: an ARN's ``/`` is
  ``%2F``); ``stream`` leaves it and selects ``invoke-with-response-stream`` or ``invoke``.
- ``anthropic_version`` is ``bedrock-2023-05-31`` unless the body names one.
- Betas travel in the body as ``anthropic_beta`` (merged with one already there, deduplicated,
  in order). The reference client's ``BEDROCK_EXTRA_PARAMS_HEADERS`` are body-only; the
  other betas also stay in the header, as the Python SDK keeps it.
- No ``anthropic-version`` header (the Bedrock client does not send one).
- Count tokens: ``/model/{id}/count-tokens`` with the InvokeModel body base64-wrapped.
"""

from __future__ import annotations

import base64
from typing import Annotated, Final
from urllib.parse import quote

import msgspec

from protocol.bounded_json import BoundedDecoder
from protocol.providers import ProviderRequest, split_betas
from protocol.usage import MAX_TOKEN_COUNT
from protocol.wire import JsonObject

ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"
# docs/reference/reference-client.md 6: BEDROCK_EXTRA_PARAMS_HEADERS go in the body only.
BODY_ONLY_BETAS: Final = frozenset(
    {"interleaved-thinking-2025-05-14", "context-1m-2025-08-07", "tool-search-tool-2025-10-19"}
)
EVENTSTREAM_CONTENT_TYPE: Final = "application/vnd.amazon.eventstream"
_ENCODER: Final = msgspec.json.Encoder()
_DROPPED_HEADERS: Final = frozenset({"anthropic-version", "anthropic-beta", "x-api-key"})


def model_path(model: str) -> str:
    return "/model/" + quote(model, safe=":")


def _shape(body: JsonObject, headers: tuple[tuple[str, str], ...]) -> tuple[str, JsonObject, list[tuple[str, str]]]:
    out = {key: value for key, value in body.items() if key not in ("model", "stream")}
    model = str(body.get("model", ""))
    betas: list[str] = []
    existing = out.get("anthropic_beta")
    if isinstance(existing, list):
        betas.extend(str(beta) for beta in existing)
    kept: list[tuple[str, str]] = []
    header_betas: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == "anthropic-beta":
            header_betas.extend(split_betas(value))
        elif lowered not in _DROPPED_HEADERS:
            kept.append((name, value))
    for beta in header_betas:
        if beta not in betas:
            betas.append(beta)
    staying = [beta for beta in dict.fromkeys(header_betas) if beta not in BODY_ONLY_BETAS]
    if staying:
        kept.append(("anthropic-beta", ",".join(staying)))
    if betas:
        out["anthropic_beta"] = betas
    out.setdefault("anthropic_version", ANTHROPIC_VERSION)
    return model, out, kept


def messages_request(body: JsonObject, headers: tuple[tuple[str, str], ...], *, streaming: bool) -> ProviderRequest:
    """The InvokeModel request for a first-party Messages body (``model`` in it)."""
    model, out, kept = _shape(body, headers)
    if streaming:
        return ProviderRequest(
            path=model_path(model) + "/invoke-with-response-stream",
            headers=(*kept, ("x-amzn-bedrock-accept", "application/json")),
            body=_ENCODER.encode(out),
            decoder="eventstream",
        )
    return ProviderRequest(path=model_path(model) + "/invoke", headers=tuple(kept), body=_ENCODER.encode(out))


def count_tokens_request(body: JsonObject, headers: tuple[tuple[str, str], ...]) -> ProviderRequest:
    """CountTokens: the InvokeModel body, base64, under ``input.invokeModel.body``."""
    model, out, kept = _shape(body, headers)
    out.setdefault("max_tokens", 1)
    wrapped = {"input": {"invokeModel": {"body": base64.b64encode(_ENCODER.encode(out)).decode("ascii")}}}
    return ProviderRequest(path=model_path(model) + "/count-tokens", headers=tuple(kept), body=_ENCODER.encode(wrapped))


class _CountAnswer(msgspec.Struct):
    # Out of range is another shape (protocol.usage.MAX_TOKEN_COUNT says why).
    inputTokens: Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKEN_COUNT)]


_COUNT_ANSWER: Final = BoundedDecoder(_CountAnswer)


def count_tokens_result(raw: bytes) -> int:
    """``{"inputTokens": N}``.

    Raises:
        msgspec.DecodeError: another shape.
    """
    return _COUNT_ANSWER.decode(raw).inputTokens


class _ErrorBody(msgspec.Struct):
    message: str = ""
    Message: str = ""


_ERROR_BODY: Final = BoundedDecoder(_ErrorBody)


def error_message(raw: bytes) -> str | None:
    """The ``message`` of a rest-json error body (docs/reference/wire.md 7.5), if that is what it is."""
    try:
        body = _ERROR_BODY.decode(raw)
    except msgspec.DecodeError:
        return None
    return body.message or body.Message or None
