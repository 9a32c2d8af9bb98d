"""Answers of the ``/v1`` endpoints (Messages, count_tokens, models) and of the bootstrap
endpoint (decisions, no I/O).

Each function turns a checked request and its ``Directions`` into an ``Answer`` that
``delivery.deliver`` writes. Headers follow docs/reference/wire.md 4: ``request-id`` everywhere, the
``anthropic-ratelimit-*`` family on the Messages endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from .connection import Headers
from .delivery import Answer
from .errors import ErrorResponse, api_error, fault_error, status_for_type
from .faults import Fault
from .responses import error_event, message_body, plan_reply, stream_events
from .script import Directions
from .tokens import PromptCache, total_input_tokens

_JSON: Final = (b"content-type", b"application/json")
# The exact value is unverified for first-party (docs/reference/wire.md 2.1); SDKs only check the prefix.
_SSE: Final = (b"content-type", b"text/event-stream; charset=utf-8")
# A body that is neither SSE nor a message: what a misbehaving proxy returns.
BAD_STREAM_BODY: Final = (
    b"<html><body><h1>502 Bad Gateway</h1>upstream returned garbage</body></html>\n"
)

# Static rate-limit figures: (bucket, limit, remaining), plausible for a tier-4 account.
_RATE_LIMITS: Final = (
    (b"requests", b"4000", b"3999"),
    (b"tokens", b"2000000", b"1998000"),
    (b"input-tokens", b"2000000", b"1998000"),
    (b"output-tokens", b"400000", b"400000"),
)


def ratelimit_headers(now: float | None = None) -> Headers:
    """The ``anthropic-ratelimit-*`` headers, resetting a minute after ``now`` (wall clock)."""
    when = time.time() if now is None else now
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when + 60)).encode()
    headers: Headers = []
    for bucket, limit, remaining in _RATE_LIMITS:
        prefix = b"anthropic-ratelimit-" + bucket
        headers += [
            (prefix + b"-limit", limit),
            (prefix + b"-remaining", remaining),
            (prefix + b"-reset", reset),
        ]
    return headers


def json_answer(status: int, body: bytes, headers: Headers) -> Answer:
    """A complete JSON response with a content-length."""
    return Answer(status, [_JSON, (b"content-length", b"%d" % len(body)), *headers], [body])


def error_answer(
    error: ErrorResponse, request_id: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> Answer:
    """The API error envelope for ``error`` plus its own and the given headers."""
    body = error.body(request_id)
    return json_answer(
        error.status, body, [(b"request-id", request_id.encode()), *error.headers, *headers]
    )


def _fault_answer(
    fault: Fault | None,
    body: Mapping[str, object],
    *,
    streaming: bool,
    request_id: str,
    headers: Headers,
) -> Answer | None:
    """The answer a fault replaces the content with, or None when content is produced."""
    if fault is None:
        return None
    if fault.is_status:
        max_tokens = body.get("max_tokens")
        error = fault_error(
            fault,
            input_tokens=total_input_tokens(body),
            max_tokens=max_tokens if isinstance(max_tokens, int) else 0,
        )
        return error_answer(error, request_id, headers)
    if fault.kind == "bad_stream":
        return json_answer(200, BAD_STREAM_BODY, [(b"request-id", request_id.encode()), *headers])
    if fault.kind in ("overloaded_midstream", "error_midstream") and not streaming:
        # A non-streaming request cannot fail "mid-stream": it gets the error as a status.
        error_type, message = _midstream_error(fault)
        return error_answer(
            api_error(status_for_type(error_type), message, error_type), request_id, headers
        )
    return None


def _midstream_error(fault: Fault) -> tuple[str, str]:
    """The (error.type, message) of a mid-stream error fault."""
    if fault.kind == "overloaded_midstream":
        return "overloaded_error", "Overloaded"
    error_type = fault.str_option("type", "api_error") or "api_error"
    default = api_error(status_for_type(error_type), None, error_type).message
    return error_type, fault.str_option("message", None) or default


# docs/reference/reference-client.md 4: what ``GET /api/claude_cli/bootstrap`` answers by default; one
# additional model option, new to the gateway's default list.
DEFAULT_BOOTSTRAP: Final[Mapping[str, Any]] = {
    "client_data": {"coral_reef_sonnet": "true"},
    "additional_model_options": [
        {
            "model": "claude-opus-4-5-20251101",
            "name": "Opus 4.5",
            "description": "Previous Opus, for work that was tuned on it",
        }
    ],
}
# The ``invalid_bootstrap`` fault's body: JSON, but ``name`` must be a string.
INVALID_BOOTSTRAP_BODY: Final = (
    b'{"client_data":{},"additional_model_options":[{"model":"claude-x","name":42}]}'
)


def bootstrap_answer(body: Mapping[str, Any], fault: Fault | None, *, request_id: str) -> Answer:
    """The answer to an authenticated ``GET /api/claude_cli/bootstrap``.

    Status faults answer with their error; ``bad_stream`` with garbage; ``invalid_bootstrap``
    with a body that fails the schema; transport faults (``slow_first_byte``, ``drop``,
    ``stall``) apply to the normal JSON answer ``body``.
    """
    id_header = [(b"request-id", request_id.encode())]
    replaced = _fault_answer(fault, {}, streaming=False, request_id=request_id, headers=[])
    if replaced is not None:
        return replaced
    if fault is not None and fault.kind == "invalid_bootstrap":
        return json_answer(200, INVALID_BOOTSTRAP_BODY, id_header)
    answer = json_answer(200, msgspec.json.encode(body), id_header)
    answer.fault = fault
    return answer


def messages_answer(
    body: Mapping[str, object],
    directions: Directions,
    *,
    cache: PromptCache,
    sequence: int,
    request_id: str,
    cache_minimum: int = 0,
) -> Answer:
    """The answer to a checked ``POST /v1/messages`` (its cache writes happen here).

    ``cache_minimum``: the model's minimum cacheable prompt length (``emulator/models.py``).
    """
    streaming = body.get("stream") is True
    headers = ratelimit_headers()
    replaced = _fault_answer(
        directions.fault, body, streaming=streaming, request_id=request_id, headers=headers
    )
    if replaced is not None:
        return replaced
    usage = cache.usage(body, str(body["model"]), minimum=cache_minimum)
    plan_body = body
    if directions.fault is not None and directions.fault.kind == "max_tokens":
        limit = directions.fault.int_option("limit", 3)
        plan_body = {**body, "max_tokens": min(limit, int(str(body["max_tokens"])))}
    reply = plan_reply(plan_body, sequence=sequence, input_usage=usage, deltas=directions.deltas)
    headers.append((b"request-id", request_id.encode()))
    if streaming:
        answer = Answer(
            200,
            [_SSE, (b"cache-control", b"no-cache"), *headers],
            stream_events(reply),
            streaming=True,
        )
        fault = directions.fault
        if fault is not None and fault.kind in ("overloaded_midstream", "error_midstream"):
            answer.error_event = error_event(*_midstream_error(fault))
    else:
        answer = json_answer(200, message_body(reply), headers)
    answer.pace = directions.pace_ms / 1000
    answer.fault = directions.fault
    return answer


def count_tokens_answer(
    body: Mapping[str, object], directions: Directions, *, request_id: str
) -> Answer:
    """The answer to a checked ``POST /v1/messages/count_tokens``."""
    headers = ratelimit_headers()
    replaced = _fault_answer(
        directions.fault, body, streaming=False, request_id=request_id, headers=headers
    )
    if replaced is not None:
        return replaced
    headers.append((b"request-id", request_id.encode()))
    answer = json_answer(200, b'{"input_tokens":%d}' % total_input_tokens(body), headers)
    answer.fault = directions.fault
    return answer
