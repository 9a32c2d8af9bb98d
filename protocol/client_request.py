"""Checks and shapes a client's Messages API request body (pure).

The body stays a generic JSON object so that every field the gateway does not need passes
through untouched. ``validate_request`` refuses what the upstream would refuse anyway only
where the gateway itself needs the field (``model``, ``messages``, ``max_tokens``), so a
client learns early and clearly; everything else is the upstream's to judge.
"""

from __future__ import annotations

from protocol.errors import RemoteProtocolError
from protocol.wire import JsonObject


def validate_request(request: JsonObject, *, count_only: bool = False, frame_id: str | None = None) -> None:
    """Raise ``RemoteProtocolError`` (``bad_frame``) when the body cannot be sent.

    ``count_only``: a count_tokens body, which has no ``max_tokens``.
    """
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise RemoteProtocolError("request.model must be a non-empty string", frame_id=frame_id)
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RemoteProtocolError("request.messages must be a non-empty list", frame_id=frame_id)
    if count_only:
        return
    max_tokens = request.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RemoteProtocolError("request.max_tokens must be a positive integer", frame_id=frame_id)


def attempt_body(
    request: JsonObject,
    *,
    model: str,
    max_tokens: int | None = None,
    fast: bool = False,
) -> JsonObject:
    """The upstream body of one streamed attempt: a fresh copy, so no attempt alters another.

    ``max_tokens`` overrides the request's (a context-overflow retry); ``fast`` asks for
    fast mode (``speed: "fast"``), and its absence removes a ``speed`` the client sent.
    """
    body = dict(request)
    body["model"] = model
    body["stream"] = True
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if fast:
        body["speed"] = "fast"
    else:
        body.pop("speed", None)
    return body


def count_tokens_body(request: JsonObject) -> JsonObject:
    """The upstream count_tokens body: the request without the fields count_tokens refuses."""
    return {k: v for k, v in request.items() if k not in ("max_tokens", "stream")}


def strip_thinking(request: JsonObject) -> JsonObject:
    """The request without thinking blocks in its assistant turns: their signatures are bound
    to the model that wrote them, so they must not reach a fallback model (reference 2.5)."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        return request
    cleaned: list[object] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(message, dict) and message.get("role") == "assistant" and isinstance(content, list):
            kept = [b for b in content if not (isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking"))]
            message = {**message, "content": kept or [{"type": "text", "text": ""}]}
        cleaned.append(message)
    return {**request, "messages": cleaned}


def thinking_budget(request: JsonObject) -> int:
    """The request's thinking budget when thinking is enabled, else 0."""
    thinking = request.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int):
            return budget
    return 0


def merge_headers(
    base: tuple[tuple[str, str], ...], extra: tuple[tuple[str, str], ...]
) -> dict[str, str]:
    """Upstream headers: ``extra`` overrides ``base`` by (lower-case) name, except
    ``anthropic-beta``, whose comma-separated values are joined without duplicates."""
    merged: dict[str, str] = {}
    betas: list[str] = []
    for name, value in (*base, *extra):
        key = name.lower()
        if key == "anthropic-beta":
            for beta in value.split(","):
                beta = beta.strip()
                if beta and beta not in betas:
                    betas.append(beta)
        else:
            merged[key] = value
    if betas:
        merged["anthropic-beta"] = ",".join(betas)
    return merged
