"""Vertex AI request shaping (docs/reference/wire.md 8; docs/reference/reference-client.md 5.2, 6).

- URL: ``{base}/projects/{project}/locations/{region}/publishers/anthropic/models/{model}``
  with ``:streamRawPredict`` (SSE, as the first party) or ``:rawPredict``; count tokens at
  ``.../models/count-tokens:rawPredict`` with ``model`` kept in the body.
- Base: ``global`` -> ``https://aiplatform.googleapis.com/v1``; the multi-regions ``us`` and
  ``eu`` -> ``https://aiplatform.{us,eu}.rep.googleapis.com/v1``; any other region ->
  ``https://{region}-aiplatform.googleapis.com/v1``.
- Region: the most specific ``VERTEX_REGION_CLAUDE_*`` prefix matching the model, else
  ``CLOUD_ML_REGION``, else ``us-east5`` (the caller passes the overrides, longest first).
- Body: ``model`` popped, ``stream`` kept, ``anthropic_version`` ``vertex-2023-10-16`` unless
  given. Betas stay in the ``anthropic-beta`` header; count tokens accepts only three.
- Errors Vertex itself raises are Google RPC shaped (``{"error":{"code","message","status"}}``,
  sometimes inside a list): ``rpc_error`` reads them.
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocol.bounded_json import BoundedDecoder
from protocol.providers import ProviderRequest, split_betas
from protocol.wire import JsonObject

ANTHROPIC_VERSION: Final = "vertex-2023-10-16"
DEFAULT_REGION: Final = "us-east5"
# docs/reference/reference-client.md 6: Vertex countTokens takes only these betas; others give a 400.
COUNT_TOKENS_BETAS: Final = frozenset(
    {"claude-code-20250219", "interleaved-thinking-2025-05-14", "context-management-2025-06-27"}
)
_ENCODER: Final = msgspec.json.Encoder()


def region_for(model: str, default: str, overrides: tuple[tuple[str, str], ...]) -> str:
    """The region of ``model``: the longest matching override prefix, else ``default``."""
    best = max((prefix for prefix, _ in overrides if model.startswith(prefix)), key=len, default=None)
    if best is None:
        return default
    return next(region for prefix, region in overrides if prefix == best)


def base_url(region: str) -> str:
    if region == "global":
        return "https://aiplatform.googleapis.com/v1"
    if region in ("us", "eu"):
        return f"https://aiplatform.{region}.rep.googleapis.com/v1"
    return f"https://{region}-aiplatform.googleapis.com/v1"


def _models_path(project: str, region: str) -> str:
    return f"/projects/{project}/locations/{region}/publishers/anthropic/models/"


def _headers(headers: tuple[tuple[str, str], ...], allowed_betas: frozenset[str] | None) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in ("anthropic-version", "x-api-key"):
            continue
        if lowered == "anthropic-beta" and allowed_betas is not None:
            kept = [beta for beta in split_betas(value) if beta in allowed_betas]
            if kept:
                out.append((name, ",".join(kept)))
            continue
        out.append((name, value))
    return tuple(out)


def messages_request(
    body: JsonObject, headers: tuple[tuple[str, str], ...], *, project: str, region: str, streaming: bool
) -> ProviderRequest:
    """The rawPredict / streamRawPredict request for a first-party Messages body."""
    out = {key: value for key, value in body.items() if key != "model"}
    out.setdefault("anthropic_version", ANTHROPIC_VERSION)
    method = "streamRawPredict" if streaming else "rawPredict"
    return ProviderRequest(
        path=_models_path(project, region) + f"{body.get('model', '')}:{method}",
        headers=_headers(headers, None),
        body=_ENCODER.encode(out),
    )


def count_tokens_request(
    body: JsonObject, headers: tuple[tuple[str, str], ...], *, project: str, region: str
) -> ProviderRequest:
    out = dict(body)
    out.setdefault("anthropic_version", ANTHROPIC_VERSION)
    return ProviderRequest(
        path=_models_path(project, region) + "count-tokens:rawPredict",
        headers=_headers(headers, COUNT_TOKENS_BETAS),
        body=_ENCODER.encode(out),
    )


class _RpcError(msgspec.Struct):
    message: str = ""
    status: str = ""
    type: str = ""


class _RpcEnvelope(msgspec.Struct):
    error: _RpcError


_ENVELOPE: Final = BoundedDecoder(_RpcEnvelope | list[_RpcEnvelope])
# Google RPC status -> the API error type a client of the gateway sees.
_TYPE_FOR_RPC_STATUS: Final = {
    "RESOURCE_EXHAUSTED": "rate_limit_error",
    "UNAUTHENTICATED": "authentication_error",
    "PERMISSION_DENIED": "permission_error",
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "NOT_FOUND": "not_found_error",
    "DEADLINE_EXCEEDED": "timeout_error",
}


def rpc_error(raw: bytes) -> tuple[str, str] | None:
    """``(error type, message)`` of a Google RPC error body (maybe inside a list), or None
    for any other body (an Anthropic envelope is read by the first-party code)."""
    try:
        decoded = _ENVELOPE.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    envelope = decoded[0] if isinstance(decoded, list) and decoded else decoded
    if not isinstance(envelope, _RpcEnvelope) or envelope.error.type or not envelope.error.status:
        return None
    return _TYPE_FOR_RPC_STATUS.get(envelope.error.status, "api_error"), envelope.error.message
