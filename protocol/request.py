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


def streaming_body(request: JsonObject, *, model: str) -> JsonObject:
    """The upstream body of one streamed attempt: a fresh copy, so no attempt alters another."""
    body = dict(request)
    body["model"] = model
    body["stream"] = True
    return body


def count_tokens_body(request: JsonObject) -> JsonObject:
    """The upstream count_tokens body: the request without the fields count_tokens refuses."""
    return {k: v for k, v in request.items() if k not in ("max_tokens", "stream")}
