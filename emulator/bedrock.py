"""Bedrock's wire format on the emulator (docs/reference/wire.md 7): ``/model/{id}/invoke``,
``/invoke-with-response-stream`` (AWS event-stream framing) and ``/count-tokens``.

A Bedrock request is checked the way Bedrock would (SigV4 re-derived with the secrets the
emulator knows, or a bearer API key; the InvokeModel body: ``anthropic_version``, no
``model``, no ``stream``), turned into the first-party body, answered by the same code as
``/v1/messages`` (so scripted faults apply), and the answer turned back into Bedrock's:
events as ``chunk`` frames, a mid-stream error as an exception frame, an error status as a
rest-json body with ``x-amzn-ErrorType``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote

import msgspec

from protocol.eventstream import encode_chunk, encode_exception

from .connection import Headers
from .delivery import Answer
from .sigv4 import parse_authorization, verify

ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"
EVENTSTREAM: Final = b"application/vnd.amazon.eventstream"
ACTIONS: Final = ("invoke", "invoke-with-response-stream", "count-tokens")
# Bedrock's answer to a model id it does not serve (ValidationException, docs/reference/wire.md 7.5).
INVALID_MODEL: Final = "The provided model identifier is invalid."
INVALID_TOKEN: Final = "The security token included in the request is invalid."
BAD_SIGNATURE: Final = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
# docs/reference/wire.md 7.5: the rest-json exception name of each status.
_EXCEPTION_FOR_STATUS: Final = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
# A mid-stream Anthropic error as the exception frame Bedrock sends (docs/reference/wire.md 7.6).
_STREAM_EXCEPTION: Final = {
    "overloaded_error": "serviceUnavailableException",
    "rate_limit_error": "throttlingException",
    "invalid_request_error": "validationException",
    "timeout_error": "modelTimeoutException",
}


def route(path: str) -> tuple[str, str] | None:
    """``(model id, action)`` of a Bedrock path (the id percent-decoded), or None."""
    rest = path.removeprefix("/model/")
    model, _, action = rest.rpartition("/")
    if rest == path or not model or action not in ACTIONS:
        return None
    return unquote(model), action


def rest_error(status: int, message: str, request_id: str, exception: str | None = None) -> Answer:
    body = msgspec.json.encode({"message": message})
    name = exception or _EXCEPTION_FOR_STATUS.get(status, "InternalServerException")
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"x-amzn-requestid", request_id.encode()),
        (b"x-amzn-errortype", f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/".encode()),
    ]
    return Answer(status, headers, [body])


def check_auth(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    aws_keys: Mapping[str, str] | None,
    bearer_tokens: frozenset[str] | None,
    request_id: str,
) -> Answer | None:
    """The 403 Bedrock answers a request it cannot authenticate with, or None. With neither
    ``aws_keys`` nor ``bearer_tokens`` any request passes (a signing proxy in front)."""
    if aws_keys is None and bearer_tokens is None:
        return None
    value = headers.get("authorization", "")
    if value.lower().startswith("bearer "):
        if bearer_tokens is not None and value[7:].strip() in bearer_tokens:
            return None
        return rest_error(403, "Authentication failed: invalid API key", request_id, "AccessDeniedException")
    auth = parse_authorization(value)
    if auth is None:
        return rest_error(403, "Missing Authentication Token", request_id, "MissingAuthenticationTokenException")
    secret = None if aws_keys is None else aws_keys.get(auth.access_key)
    if secret is None:
        return rest_error(403, INVALID_TOKEN, request_id, "UnrecognizedClientException")
    if auth.service != "bedrock" or not verify(method, target, headers, body, secret, auth):
        return rest_error(403, BAD_SIGNATURE, request_id, "InvalidSignatureException")
    return None


def first_party_body(raw: bytes, model: str, action: str) -> dict[str, object] | str:
    """The first-party body an InvokeModel (or CountTokens) body stands for, or the
    ValidationException message Bedrock would answer."""
    try:
        body = msgspec.json.decode(raw)
        if action == "count-tokens":
            inner = body["input"]["invokeModel"]["body"]
            body = msgspec.json.decode(base64.b64decode(inner, validate=True))
    except (msgspec.DecodeError, KeyError, TypeError, binascii.Error):
        return "Malformed input request, please reformat your input and try again."
    if not isinstance(body, dict):
        return "Malformed input request: expected an object"
    for key in ("model", "stream"):
        if key in body:
            return f"Malformed input request: #: extraneous key [{key}] is not permitted, please reformat your input and try again."
    version = body.get("anthropic_version")
    if version is None:
        return "Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again."
    if version != ANTHROPIC_VERSION:
        return f"Malformed input request: #/anthropic_version: {version} is not a valid enum value, please reformat your input and try again."
    out = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
    out["model"] = model
    if action == "invoke-with-response-stream":
        out["stream"] = True
    return out


def body_error(message: str) -> str:
    """A first-party body error (``field: Extra inputs are not permitted``) in Bedrock's
    JSON-schema wording; other messages as they are."""
    field, _, problem = message.partition(": ")
    if problem == "Extra inputs are not permitted":
        return f"Malformed input request: #: extraneous key [{field}] is not permitted, please reformat your input and try again."
    return message


def _sse_data(piece: bytes) -> bytes:
    """The ``data:`` JSON of one SSE event as the emulator writes it."""
    start = piece.index(b"\ndata: ") + len(b"\ndata: ")
    return piece[start : piece.index(b"\n", start)]


def _headers(answer: Answer, request_id: str, content_type: bytes | None = None) -> Headers:
    kept: Headers = [
        (name, value)
        for name, value in answer.headers
        if not name.startswith(b"anthropic-ratelimit-") and name not in (b"request-id", b"content-length", b"content-type")
    ]
    kept.append((b"x-amzn-requestid", request_id.encode()))
    if content_type is not None:
        kept.insert(0, (b"content-type", content_type))
    return kept


def bedrock_answer(answer: Answer, request_id: str, *, counting: bool) -> Answer:
    """A first-party answer in Bedrock's wire format."""
    if answer.status != 200:
        try:
            error = msgspec.json.decode(b"".join(answer.pieces))["error"]
            message = str(error["message"])
        except (msgspec.DecodeError, KeyError, TypeError):
            message = f"Error {answer.status}"
        converted = rest_error(answer.status, message, request_id)
        converted.headers += _headers(answer, request_id)[:-1]
        converted.fault = answer.fault
        converted.keep_alive = answer.keep_alive
        return converted
    if counting:
        tokens = msgspec.json.decode(b"".join(answer.pieces))["input_tokens"]
        body = b'{"inputTokens":%d}' % tokens
        answer.pieces = [body]
        answer.headers = [*_headers(answer, request_id, b"application/json"), (b"content-length", b"%d" % len(body))]
        return answer
    if not answer.streaming:
        is_json = any(name == b"content-type" and b"json" in value for name, value in answer.headers)
        if is_json:
            answer.headers = [
                *_headers(answer, request_id, b"application/json"),
                (b"content-length", b"%d" % sum(map(len, answer.pieces))),
            ]
        return answer
    answer.pieces = [encode_chunk(_sse_data(piece)) for piece in answer.pieces]
    answer.headers = _headers(answer, request_id, EVENTSTREAM)
    if answer.error_event is not None:
        error = msgspec.json.decode(_sse_data(answer.error_event))["error"]
        exception = _STREAM_EXCEPTION.get(str(error["type"]), "internalServerException")
        answer.error_event = encode_exception(exception, str(error["message"]))
    return answer
