"""Vertex AI's wire format on the emulator (docs/reference/wire.md 8), and a Google OAuth token endpoint.

- ``POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:streamRawPredict``
  (SSE, as the first party), ``:rawPredict``, and ``.../models/count-tokens:rawPredict``: the
  bearer must be a token this emulator issued and that has not expired (trio clock) or been
  revoked; the body needs ``anthropic_version: vertex-2023-10-16`` and no ``model`` (count
  tokens keeps it). Then the first-party code answers (scripted faults apply); a 429 and an
  auth failure come back in Google's RPC error shape, as Vertex's own errors do.
- ``POST /token``: the OAuth token endpoint a service account's ``token_uri`` names; it takes
  the JWT-bearer grant (the assertion's claims are checked, not its RSA signature) and
  answers ``{"access_token", "expires_in", "token_type"}``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final
from urllib.parse import parse_qs

import msgspec

from .connection import Headers
from .delivery import Answer

ANTHROPIC_VERSION: Final = "vertex-2023-10-16"
TOKEN_PATH: Final = "/token"
JWT_BEARER: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_PREDICT: Final = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/publishers/anthropic/models/"
    r"(?P<model>[^/:]+):(?P<method>rawPredict|streamRawPredict)$"
)
UNAUTHENTICATED: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
    "other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_RPC_STATUS: Final = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
}


class VertexRoute(msgspec.Struct, frozen=True):
    project: str
    region: str
    model: str
    method: str


def route(path: str) -> VertexRoute | None:
    match = _PREDICT.match(path)
    if match is None:
        return None
    return VertexRoute(match["project"], match["region"], match["model"], match["method"])


def rpc_error(status: int, message: str, request_id: str) -> Answer:
    body = msgspec.json.encode(
        {"error": {"code": status, "message": message, "status": _RPC_STATUS.get(status, "UNKNOWN")}}
    )
    headers: Headers = [
        (b"content-type", b"application/json; charset=UTF-8"),
        (b"content-length", b"%d" % len(body)),
        (b"x-request-id", request_id.encode()),
    ]
    return Answer(status, headers, [body])


def first_party_body(raw: bytes, found: VertexRoute) -> dict[str, object] | str:
    """The first-party body a rawPredict body stands for, or the 400 message."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "Invalid JSON payload received."
    if not isinstance(body, dict):
        return "Invalid JSON payload received: expected an object"
    if "anthropic_version" not in body:
        return "anthropic_version: Field required"
    if body["anthropic_version"] != ANTHROPIC_VERSION:
        return f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'"
    counting = found.model == "count-tokens"
    if not counting and "model" in body:
        return "model: Extra inputs are not permitted"
    out = {k: v for k, v in body.items() if k != "anthropic_version"}
    if not counting:
        out["model"] = found.model
        if (found.method == "streamRawPredict") != (out.get("stream") is True):
            return "stream must be true exactly for streamRawPredict"
    return out


def model_not_found(found: VertexRoute, model: str, request_id: str) -> Answer:
    """Vertex's 404 for a publisher model it does not serve (Google RPC shape, docs/reference/wire.md 8)."""
    name = f"projects/{found.project}/locations/{found.region}/publishers/anthropic/models/{model}"
    message = f"Publisher Model `{name}` not found."
    return rpc_error(404, message, request_id)


def vertex_answer(answer: Answer, request_id: str) -> Answer:
    """A 429 in Google's RPC shape (Vertex's quota errors); the rest as the first party."""
    if answer.status != 429:
        return answer
    converted = rpc_error(
        429,
        "Quota exceeded for aiplatform.googleapis.com/online_prediction_input_tokens_per_minute_per_base_model",
        request_id,
    )
    converted.headers += [
        (name, value) for name, value in answer.headers if name in (b"retry-after", b"retry-after-ms", b"x-should-retry")
    ]
    converted.fault = answer.fault
    return converted


def assertion_issuer(form: bytes) -> str | None:
    """The ``iss`` of a JWT-bearer grant's assertion, or None when the request is not one."""
    fields = parse_qs(form.decode("utf-8", "replace"))
    if fields.get("grant_type") != [JWT_BEARER] or len(fields.get("assertion", [])) != 1:
        return None
    parts = fields["assertion"][0].split(".")
    if len(parts) != 3:
        return None
    try:
        claims = msgspec.json.decode(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, msgspec.DecodeError, ValueError):
        return None
    if not isinstance(claims, dict) or "cloud-platform" not in str(claims.get("scope", "")):
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


def token_answer(token: str, lifetime: int) -> Answer:
    body = msgspec.json.encode({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"})
    return Answer(200, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))], [body])


def oauth_error(request_id: str) -> Answer:
    body = b'{"error":"invalid_grant","error_description":"Invalid JWT assertion."}'
    headers: Headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                        (b"x-request-id", request_id.encode())]
    return Answer(400, headers, [body])
