"""What one attempt of a query sends upstream: its body, bytes and headers.

Two ways (docs/protocol.md 2), chosen per query by ``QueryOptions.transparent``:

- the reference construction (``protocol.request_builder``: betas by the reference's rules,
  cache breakpoints, clamps, repairs, the session's latches), the WebSocket door's and
  embedding's, and the HTTP door's on request;
- transparent (the HTTP door's default, ``protocol.passthrough``): the client's body and
  headers as sent, the model id in the provider's form, and the client's own bytes when
  nothing changed.

Used by ``actors.supervisor.run``; reads and updates the session's latch only in the first way.
``run_attempt`` sends one attempt to the StreamRelay and collects its outcome and usage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec
import trio

from actors._util import CLEANUP_TIMEOUT, receive_reply
from actors.messages.relay import AttemptOutcome, RunAttempt, StreamRelayAddress
from actors.messages.supervisor import RunQuery
from actors.supervisor.builder_settings import ProviderBuilds
from actors.supervisor.channel import QueryTotals
from actors.supervisor.options import QueryOptions
from actors.supervisor.session_state import SessionRequestState
from protocol.betas import split_beta_header, with_beta_header
from protocol.caching import PromptSnapshot
from protocol.errors import InternalError
from protocol.passthrough import passthrough_body, passthrough_model
from protocol.recovery import Recovery
from protocol.request_builder import build_request
from protocol.retry import RetryState
from protocol.wire import JsonObject

Headers = tuple[tuple[str, str], ...]
_NO_NOTES: Final[tuple[str, ...]] = ()


class AttemptRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt's upstream request: ``raw`` is the client's bytes when the body is its own
    unchanged (None: encode ``body``); ``snapshot`` None: no cache-break check (transparent)."""

    body: JsonObject
    raw: bytes | None
    headers: Headers
    notes: tuple[str, ...]
    snapshot: PromptSnapshot | None


def upstream_model(builds: ProviderBuilds, requested: str, options: QueryOptions) -> str:
    """The id a model a client names is sent upstream as: resolved (aliases, ``[1m]``) by the
    reference construction, only put in the provider's form when transparent."""
    if options.transparent:
        settings = builds.settings(requested)
        return passthrough_model(requested, settings.models, settings.provider)
    return builds.api_model(requested)


def attempt_request(
    request: JsonObject,
    *,
    original: JsonObject,
    options: QueryOptions,
    headers: Headers,
    state: RetryState,
    client_model: str,
    source: str,
    session: SessionRequestState,
    builds: ProviderBuilds,
    fast_active: bool,
    fast_requested: bool,
) -> AttemptRequest:
    """The request of the attempt ``state`` describes. ``request`` is the query's request as
    it stands (``original`` as the client sent it: only then are its bytes reusable);
    ``headers`` the client's forwarded ones; ``client_model`` what the client named the
    attempt's model as."""
    if options.transparent:
        raw = options.raw_body if request is original else None
        body, kept = passthrough_body(request, raw, model=state.model, max_tokens=state.max_tokens_override)
        return AttemptRequest(body=body, raw=kept, headers=headers, notes=_NO_NOTES, snapshot=None)
    base_headers, client_betas = split_beta_header(headers)
    built, session.latch = build_request(
        request,
        settings=builds.settings(client_model),
        latch=session.latch,
        source=source,
        model=client_model,
        max_tokens=state.max_tokens_override,
        fast=fast_active,
        fast_requested=fast_requested,
        client_betas=client_betas,
    )
    return AttemptRequest(
        body=built.body,
        raw=None,
        headers=with_beta_header(base_headers, built.betas),
        notes=tuple(built.notes),
        snapshot=built.snapshot,
    )


async def run_attempt(
    to_relay: StreamRelayAddress,
    msg: RunQuery,
    totals: QueryTotals,
    state: RetryState,
    built: AttemptRequest,
    *,
    withhold: bool,
    recovery: Recovery,
    started: float,
    on_accepted: Callable[[], None] | None = None,
) -> AttemptOutcome:
    """Run one attempt of the query in the relay and add its usage to ``totals``; on cancel,
    cancel it and still collect its usage (shielded, with a deadline), then re-raise.
    ``on_accepted``: called when the upstream answers ``200`` (``RunAttempt``)."""
    scope = trio.CancelScope()
    if msg.options.heads is not None:
        # Until this attempt's response comes, the latest headers are none (not the last one's).
        msg.options.heads.record(state.attempt, ())
    send, receive = trio.open_memory_channel[AttemptOutcome](1)
    with receive:
        await to_relay.send(
            RunAttempt(
                session_id=msg.session_id,
                query_id=msg.query.id,
                attempt=state.attempt,
                model=state.model,
                body=built.body,
                raw_body=built.raw,
                heads=msg.options.heads,
                beta_query=msg.options.beta_query,
                headers=built.headers,
                streaming=state.streaming,
                withhold_output_limit=withhold,
                index_offset=recovery.index_offset,
                continuation=bool(recovery.content),
                query_started=started,
                measure_first_token=not totals.content_seen,
                on_accepted=on_accepted,
                outbound=msg.outbound,
                scope=scope,
                reply=send,
            )
        )
        try:
            outcome = await receive_reply(receive)
        except trio.EndOfChannel:
            return AttemptOutcome(model=state.model, aborted=True)
        except trio.Cancelled:
            scope.cancel(reason="query aborted")
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                try:
                    totals.add(await receive_reply(receive))
                except (trio.EndOfChannel, InternalError):
                    pass
            raise
        totals.add(outcome)
        return outcome
