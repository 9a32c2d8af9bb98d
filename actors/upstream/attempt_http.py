"""One relay attempt's HTTP exchange around the relaying (actors/upstream/relay_attempt.py).

The request shaped for the lease's provider (``prepare``), the response's headers left for the
HTTP door (``note_heads``), an error response's ``Failure`` as its provider means it
(``upstream_failure``), the attempt's DEBUG line (``log_attempt``), the provider label of the
metrics (``provider_label``), and the body's event decoder with one face for SSE and AWS
event-stream (``Decoder``, ``SSEEvents``).
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

import httpx
import trio

from actors.messages.pool import Lease
from actors.messages.relay import RunAttempt
from actors.upstream.client import failure_from_response
from actors.upstream.endpoints import Prepared
from protocol.http_api import client_headers
from protocol.retry import Failure
from protocol.sse import SSEDecoder
from protocol.wire import JSON, JsonObject

# One DEBUG line per upstream attempt (``--debug``; README "Configuration").
upstream_log = logging.getLogger("switchboard.upstream")

# The provider label of the first party's metrics (a cloud lease's endpoint has its own).
PROVIDER: Final = "anthropic"


class Decoder(Protocol):
    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]: ...

    def close(self) -> None: ...


class SSEEvents:
    """The SSE decoder with the event-stream decoder's face: (name, data) pairs."""

    __slots__ = ("_sse",)

    def __init__(self) -> None:
        self._sse = SSEDecoder()

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        return [(event.event, event.data) for event in self._sse.feed(chunk)]

    def close(self) -> None:
        self._sse.close()


def prepare(
    lease: Lease,
    body: JsonObject,
    headers: dict[str, str],
    *,
    streaming: bool,
    raw: bytes | None = None,
    beta_query: bool = False,
) -> Prepared:
    """issue 6: the request for the lease's provider (the first party: ``/v1/messages``,
    with the client's own bytes ``raw`` when given, and ``?beta=true`` when the client posted
    so)."""
    if lease.endpoint is None:
        content = raw if raw is not None else JSON.encode(body)
        path = "/v1/messages?beta=true" if beta_query else "/v1/messages"
        return Prepared(url=lease.base_url + path, headers=headers, content=content)
    return lease.endpoint.messages(body, headers, streaming=streaming)


def note_heads(msg: RunAttempt, response: httpx.Response) -> None:
    """Leave the response's headers, as a client may get them, for the HTTP door; tell the
    overload gate of a 200."""
    if msg.heads is not None:
        msg.heads.record(msg.attempt, client_headers(response.headers.multi_items()))
    if response.status_code == 200 and msg.on_accepted is not None:
        msg.on_accepted()


def upstream_failure(lease: Lease, response: httpx.Response, body: bytes) -> Failure:
    """The ``Failure`` of an error response, as the lease's provider means it."""
    failure = failure_from_response(response, body)
    return failure if lease.endpoint is None else lease.endpoint.adjust(failure, body)


def provider_label(lease: Lease) -> str:
    return PROVIDER if lease.endpoint is None else lease.endpoint.label


def log_attempt(
    msg: RunAttempt, prepared: Prepared, outcome: object, headers: httpx.Headers | None, sent_at: float
) -> None:
    """The attempt's DEBUG line on ``switchboard.upstream``: the URL without credentials or
    query, the betas sent, the status (or the exception), the request-id (Bedrock's and
    Vertex's own header for theirs) and the time to the response headers."""
    if not upstream_log.isEnabledFor(logging.DEBUG):
        return
    url = httpx.URL(prepared.url)
    request_id = None
    if headers is not None:
        request_id = headers.get("request-id") or headers.get("x-amzn-requestid") or headers.get("x-request-id")
    upstream_log.debug(
        "upstream attempt=%d POST %s model=%s betas=%s status=%s request_id=%s duration_ms=%.1f",
        msg.attempt, url.copy_with(username=None, password=None, query=None), msg.model,
        prepared.headers.get("anthropic-beta") or "-", outcome, request_id or "-",
        (trio.current_time() - sent_at) * 1000,
    )
