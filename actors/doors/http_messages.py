"""The HTTP door's ``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` (docs/protocol.md 2).

``MessagesPost.post`` reads the body (at most ``Config.max_frame_bytes``: 413 beyond; 408
when it stops arriving for ``BODY_IDLE_TIMEOUT``; 411 for a chunked one without
``Content-Length``), decides how the request is served, runs it
through the ``Gateway`` and answers (``actors.doors.http_answer``), with a watcher cancelling it
when the client disconnects (``actors.doors.asgi.watch_disconnect``):

- what goes upstream: by default the client's body and betas as sent (transparent); the
  reference construction when ``x-switchboard-construct: reference`` says so, or the request
  presents a token of ``Config.construct_tokens`` (``x-switchboard-construct: transparent``
  overrides that);
- who retries: the client, when it says it retries on its own (``x-stainless-retry-count``)
  or ``x-switchboard-retries: client`` / ``Config.http_retries`` say so
  (``protocol.passthrough.client_retries``); else the gateway, giving up shortly before the
  client's own timeout (``x-stainless-timeout``, less ``CLIENT_TIMEOUT_MARGIN``).
- the user's model allow-list (protocol/policy.py): a request whose token names a user
  (``Access.principal``) for a model their policy does not allow gets 400
  ``invalid_request_error`` saying so, before anything goes upstream;
- admission: while the gateway runs ``Config.max_queries`` queries, a message waits in line
  at most ``Config.admission_wait`` (``Gateway.query``'s ``admission_timeout``), then gets 529
  ``overloaded_error`` with ``retry-after`` (and ``retry-after-ms``) and ``x-should-retry: true`` (docs/protocol.md
  "Admission").

The HttpDoor authenticates and routes first (``actors.access.budgets``: ``presented``, ``authenticate``).
"""

from __future__ import annotations

from typing import Final, final

import trio
from hypercorn.typing import ASGIReceiveCallable

from actors.access.budgets import Access, among, presented
from actors.config.settings import Config
from actors.doors.asgi import (
    BodyStalled,
    BodyTooLarge,
    Exchange,
    RequestHead,
    read_body,
    watch_disconnect,
)
from actors.doors.http_answer import (
    Reply,
    adopt,
    answer_json,
    answer_stream,
    send_error,
    shutting_down,
)
from actors.gateway import Gateway
from actors.messages.relay import CountResult
from actors.store.ledger_sessions import owner_digest
from actors.supervisor.options import QueryOptions
from protocol.errors import ActorUnavailable, ClientGone, Overloaded, RemoteProtocolError
from protocol.frames import SESSION_ID, TokenBudget
from protocol.http_api import JSON_CONTENT_TYPE, default_session, http_error, parse_body
from protocol.passthrough import client_timeout
from protocol.policy import refusal as model_refusal
from protocol.wire import JSON, JsonObject

# Of the client's headers, only these reach the upstream (docs/protocol.md 2): its API version and
# betas. Its credential never does.
FORWARDED_HEADERS: Final = ("anthropic-version", "anthropic-beta")
SESSION_HEADER: Final = "x-switchboard-session"
# The model to continue on after repeated overload (docs/protocol.md 1 ``query.fallback_model``):
# an HTTP request has no other place to say it.
FALLBACK_HEADER: Final = "x-switchboard-fallback-model"
# ``reference``: this request gets the reference construction (``transparent``: it does not,
# whatever its token); docs/protocol.md 2.
CONSTRUCT_HEADER: Final = "x-switchboard-construct"
# In gateway-retry mode a query gives up this long before the client's own timeout
# (``x-stainless-timeout``), or a tenth of it when shorter, so its answer arrives in time.
CLIENT_TIMEOUT_MARGIN: Final = 1.0
# Idle keep-alive connections: longer than hypercorn's 5 s default, so an SDK's pooled
# connection between two turns of a conversation is usually still open.
KEEP_ALIVE_TIMEOUT: Final = 75.0
# A request body that stops arriving for this long is answered 408 and its connection closed:
# hypercorn's keep-alive timer runs only between requests, so without it a client could hold
# a connection (a file descriptor) for good by never finishing a body. As long as the
# keep-alive timeout: idle within a request is allowed what idle between requests is.
BODY_IDLE_TIMEOUT: Final = KEEP_ALIVE_TIMEOUT


# A chunked request body without Content-Length (HTTP/1.1) is answered 411 with this.
LENGTH_REQUIRED: Final = "a request body needs a Content-Length header"
# The token's budget left (docs/protocol.md "Access tokens and budgets").
BUDGET_HEADER: Final = b"x-switchboard-budget-remaining-usd"


@final
class MessagesPost:
    """The POST routes of the HTTP door (see the module docstring)."""

    def __init__(self, gateway: Gateway, config: Config) -> None:
        self._gateway = gateway
        self._config = config

    def construct(self, head: RequestHead) -> bool:
        """Whether the request gets the reference construction: ``x-switchboard-construct``
        when it says ``reference`` or ``transparent``, else whether its token is one of
        ``Config.construct_tokens``."""
        asked = head.headers.get(CONSTRUCT_HEADER, "").strip().lower()
        if asked in ("reference", "transparent"):
            return asked == "reference"
        tokens = self._config.construct_tokens
        return bool(tokens) and any(among(candidate, tokens) for candidate in presented(head.headers))

    async def post(
        self,
        route: str,
        head: RequestHead,
        receive: ASGIReceiveCallable,
        exchange: Exchange,
        reply: Reply,
        access: Access,
        arrived: float,
    ) -> None:
        request_id = reply.request_id
        read = await self._read_request(head, receive, exchange, request_id, access)
        if read is None:
            return
        raw, request = read
        forwarded = tuple(
            (name, head.headers[name]) for name in FORWARDED_HEADERS if head.headers.get(name)
        )
        transparent = not self.construct(head)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, receive, exchange, nursery.cancel_scope)
            try:
                if route == "count_tokens":
                    result = await self._gateway.count_tokens(
                        request, query_id=request_id, headers=forwarded, transparent=transparent
                    )
                    await _count_answer(result, exchange, request_id)
                else:
                    timeout = client_timeout(head.headers)
                    options = QueryOptions(
                        transparent=transparent,
                        raw_body=raw,
                        client_retries=reply.client_retries,
                        deadline=None
                        if timeout is None
                        else arrived + timeout - min(CLIENT_TIMEOUT_MARGIN, timeout / 10),
                        heads=reply.heads,
                        beta_query="beta=true" in head.query.split("&"),
                    )
                    await self._messages(request, head, forwarded, exchange, reply, access, options)
            except RemoteProtocolError as exc:
                await send_error(exchange, 400, "invalid_request_error", str(exc), request_id)
            except ActorUnavailable:
                await shutting_down(exchange, request_id)
            except Overloaded as exc:
                await _overloaded(exchange, request_id, exc)
            nursery.cancel_scope.cancel()

    async def _read_request(
        self,
        head: RequestHead,
        receive: ASGIReceiveCallable,
        exchange: Exchange,
        request_id: str,
        access: Access,
    ) -> tuple[bytes, JsonObject] | None:
        """The request's body, raw and parsed, once its size, syntax and models pass; None:
        it was refused (answered here) or the client left."""
        if "content-length" not in head.headers and "chunked" in head.headers.get("transfer-encoding", "").lower():
            # The gateway protocol lets a gateway refuse a chunked body (Claude Code always
            # sends Content-Length): its size is known before a byte of it is read.
            await send_error(exchange, 411, "invalid_request_error", LENGTH_REQUIRED, request_id, retry=False)
            return None
        try:
            raw = await read_body(
                receive, head, self._config.max_frame_bytes, idle_timeout=BODY_IDLE_TIMEOUT
            )
            request = parse_body(raw)
        except BodyTooLarge as exc:
            await send_error(exchange, 413, "request_too_large", str(exc), request_id)
            return None
        except BodyStalled as exc:
            await send_error(exchange, 408, "timeout_error", str(exc), request_id)
            return None
        except ClientGone:
            return None
        except RemoteProtocolError as exc:
            await send_error(exchange, 400, "invalid_request_error", str(exc), request_id)
            return None
        if access.principal is not None:
            patterns = self._gateway.policy.patterns(access)
            user = access.principal.user
            # The fallback model too: a way round the list otherwise.
            refused = model_refusal(patterns, request.get("model"), user) or model_refusal(
                patterns, head.headers.get(FALLBACK_HEADER) or None, user
            )
            if refused is not None:
                await send_error(exchange, 400, "invalid_request_error", refused, request_id, retry=False)
                return None
        return raw, request

    async def _messages(
        self,
        request: JsonObject,
        head: RequestHead,
        forwarded: tuple[tuple[str, str], ...],
        exchange: Exchange,
        reply: Reply,
        access: Access,
        options: QueryOptions,
    ) -> None:
        request_id = reply.request_id
        owner = owner_digest(access.token)
        session_id = head.headers.get(SESSION_HEADER) or default_session(owner)
        if not SESSION_ID.fullmatch(session_id):
            message = f"{SESSION_HEADER}: must be 1 to 128 characters of [A-Za-z0-9._-]"
            await send_error(exchange, 400, "invalid_request_error", message, request_id)
            return
        user = None if access.principal is None else access.principal.user
        opened = await self._gateway.open_session(session_id, owner=owner, user=user)
        if not opened.owner_ok:
            message = f"session {session_id} belongs to another access token"
            await send_error(exchange, 403, "permission_error", message, request_id)
            return
        exchange.base_headers.append((SESSION_HEADER.encode(), session_id.encode()))
        budget = await self._gateway.budget(access.budget)
        if isinstance(budget, TokenBudget):
            # What was left when the request arrived (before its own reservation).
            exchange.base_headers.append((BUDGET_HEADER, f"{budget.remaining_usd:.6f}".encode()))
        with self._gateway.session_in_use(session_id):
            async with self._gateway.query(
                request,
                session_id=session_id,
                query_id=request_id,
                fallback_model=head.headers.get(FALLBACK_HEADER) or None,
                headers=forwarded,
                options=options,
                admission_timeout=self._config.admission_wait,
                budget=access.budget,
                subjects=self._gateway.policy.subjects(access),
            ) as frames:
                if request.get("stream") is True:
                    await answer_stream(frames, exchange, reply)
                else:
                    await answer_json(frames, exchange, reply)


async def _overloaded(exchange: Exchange, request_id: str, exc: Overloaded) -> None:
    """529 ``overloaded_error``: every query slot stayed taken for ``Config.admission_wait``
    (docs/protocol.md "Admission"). Worth a retry, after ``retry-after`` seconds."""
    adopt(
        exchange,
        [
            ("retry-after", str(exc.retry_after)),
            ("retry-after-ms", str(exc.retry_after * 1000)),
            ("x-should-retry", "true"),
        ],
    )
    await send_error(exchange, 529, "overloaded_error", str(exc), request_id)


async def _count_answer(result: CountResult, exchange: Exchange, request_id: str) -> None:
    """The count_tokens answer, with the upstream's response headers (``x-should-retry`` as
    the upstream said: the gateway makes one attempt of a count)."""
    adopt(exchange, result.headers)
    if result.failure is not None:
        info = result.failure.info()
        status, error_type = http_error(info)
        await send_error(
            exchange, status, error_type, info.message, info.request_id or request_id
        )
        return
    await exchange.respond(
        200, JSON.encode({"input_tokens": result.input_tokens or 0}), JSON_CONTENT_TYPE
    )
