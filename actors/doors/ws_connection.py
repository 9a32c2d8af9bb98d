"""One WebSocket connection of the FrontDoor (``actors.doors.websocket``) attached to one
session: its reader loop, its writer and the writer's slow-reader watchdog.

Close codes:
    1000 normal; 1001 the gateway is shutting down (``go_away``); 1007 a text frame that is
    not UTF-8 (1002 another protocol violation); 1009 a frame over the size limit; 1011 an
    internal error ended the connection (docs/supervision.md); 4408 a slow reader cut off (see
    Timers); 4409 superseded by a newer connection to the session; 1006 (no close frame: the
    TCP connection dropped) when a write was cut short, since half a frame may be on the wire.
Per connection:
    One nursery: a reader loop (``serve``'s task), one writer task and its watchdog for slow
    readers. Every frame for the client, from any query, goes through one bounded outbound
    channel to the writer, so a slow client pushes back on the upstream instead of growing
    a queue. Each query owns a clone of the outbound send end and an abort handle (a
    ``CancelScope``) kept in ``queries``.
Failure policy:
    A refused frame (bad JSON, unknown type, bad fields, duplicate or unknown id, too many
    queries) is answered with ``rejected`` and disturbs nothing else. One connection's
    failure never reaches another (docs/supervision.md): an unexpected exception in handling
    one frame answers that frame (a query: its terminal ``error`` frame of type
    ``internal_error``; anything else: ``rejected`` with that type), and the connection goes
    on; one in the reader loop or the writer ends the connection as a disconnect does (its
    queries aborted and charged) with close code 1011 when a close frame can still be sent.
    Each is logged once and counted in ``switchboard_internal_errors_total{where}``
    (``ws_reader``, ``ws_writer``).
Timers:
    ``CLEANUP_TIMEOUT`` bounds the teardown (aborted frames flushed, close frame sent). A
    write that the teardown deadline cuts may leave half a frame on the wire, so no close
    frame can follow: the connection is dropped (the client sees 1006).
    ``Config.slow_reader_timeout`` (60 s): when one write has been in progress that long
    (the client took no data), the watchdog cuts the reader off at that instant (it sleeps
    until the running write's deadline; while no write runs it waits, with no timer, for
    the writer to wake it when one begins): a warning is logged, the connection's queries are
    aborted (their usage is still recorded) and no further frame is sent. The write in
    flight is not cancelled: it gets the teardown's ``CLEANUP_TIMEOUT`` as a grace, and if
    it completes (the client resumed reading) the close frame 4408 follows everything
    written; if not, the connection is dropped.
"""

from __future__ import annotations

import logging
from typing import Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from actors._util import CLEANUP_TIMEOUT, internal_error_info, report_internal
from actors.access.budgets import Access
from actors.config.settings import Config
from actors.doors.ws_batch import abort, send_text_batch
from actors.gateway import Gateway
from actors.observe.metrics import Where
from protocol.errors import INTERNAL_ERROR, RemoteProtocolError, ShuttingDown
from protocol.frames import (
    TERMINAL_FRAMES,
    Abort,
    ClientCommand,
    CostFrame,
    CountTokens,
    ErrorFrame,
    ErrorInfo,
    GatewayFrame,
    GetCost,
    Query,
    Ready,
    Rejected,
    TokenCount,
    decode_command,
    encode_frame,
)
from protocol.policy import refusal as model_refusal

log = logging.getLogger("switchboard.frontdoor")

# docs/protocol.md 1: the close code a superseded connection receives.
SUPERSEDED: Final = 4409
# RFC 6455 "going away": the gateway is shutting down (docs/protocol.md 3); the client may
# reconnect, to another instance.
GOING_AWAY: Final = 1001
# The close code of a client cut off for reading nothing for ``Config.slow_reader_timeout``
# (408 Request Timeout, in the application range next to SUPERSEDED).
SLOW_READER: Final = 4408
# The standard close code of a connection ended by an unexpected failure on our side
# (RFC 6455 7.4.1 "internal error"; docs/supervision.md).
INTERNAL_ERROR_CLOSE: Final = 1011
# Frames queued for one connection's writer: enough to absorb a burst from several queries,
# small enough that a client that stops reading stalls its upstream streams quickly.
SESSION_BUFFER: Final = 64
# At most this many frames per socket write: all that is queued, bounded so one write
# stays small (64 event frames are a few KiB).
WRITE_BATCH: Final = SESSION_BUFFER


class Connection:
    """One WebSocket connection attached to one session."""

    def __init__(
        self,
        gateway: Gateway,
        config: Config,
        session_id: str,
        ws: WebSocketConnection,
        *,
        budget: str | None = None,
        access: Access | None = None,
    ) -> None:
        self._gateway = gateway
        # The ledger token the connection runs under (its limits apply to every query).
        self._budget = budget
        # Who it is: a signed-in user's allow-list and limits apply too (actors/access/policy.py).
        self._access = access
        self._config = config
        self._session_id = session_id
        self._ws = ws
        self._queries: dict[str, trio.CancelScope] = {}
        self._reader_scope = trio.CancelScope()
        self._close_code = 1000
        self._close_reason = "bye"
        # The gateway is shutting down: no new query; close with 1001 once none is in flight.
        self._going_away = False
        self._outbound: trio.MemorySendChannel[GatewayFrame] | None = None
        # The trio time the writer's current socket write began (None: no write running).
        # Left set by a cancelled write: the stream may then end in half a frame.
        self._writing_since: float | None = None
        # Where the watchdog waits while no write runs (no timer pending then).
        self._write_begun = trio.lowlevel.ParkingLot()

    def supersede(self) -> None:
        """Another connection took the session: abort our queries, then close with 4409."""
        self._close_code = SUPERSEDED
        self._close_reason = "superseded"
        self._reader_scope.cancel(reason="superseded")

    def go_away(self) -> None:
        """The gateway is shutting down: refuse new queries, and close with 1001 once none is
        in flight (at once when idle). The queries in flight run on."""
        self._going_away = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self._going_away and not self._queries and self._close_code == 1000:
            self._close_code = GOING_AWAY
            self._close_reason = "the gateway is shutting down"
            self._reader_scope.cancel(reason="the gateway is shutting down")

    async def serve(self, ready: Ready) -> None:
        """Run the connection until the client leaves, it is superseded or cut off, or the
        gateway shuts down (``go_away``). Aborts the queries still in flight."""
        send, receive = trio.open_memory_channel[GatewayFrame](SESSION_BUFFER)
        self._outbound = send
        watchdog = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer_contained, receive)
            nursery.start_soon(self._watch_writes, watchdog)
            with send:
                await self._emit(ready)
                with self._reader_scope:
                    try:
                        while True:
                            text = await self._ws.get_message()
                            await self._dispatch(text, nursery)
                    except ConnectionClosed:
                        pass
                    except Exception as exc:
                        self._failed("ws_reader", exc)
                # The teardown deadline below bounds every write from now on.
                watchdog.cancel()
                for scope in self._queries.values():
                    scope.cancel(reason="connection closed")
            # The writer ends once every query has sent its last frame (at once after a
            # slow-reader cut-off, once its write in flight completes); never wait forever.
            nursery.cancel_scope.deadline = trio.current_time() + CLEANUP_TIMEOUT
        with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            if self._writing_since is None:
                await self._ws.aclose(self._close_code, self._close_reason)
            else:
                log.warning(
                    "session %s: a write did not complete in time; dropping the connection",
                    self._session_id,
                )
                await abort(self._ws)

    def _failed(self, where: Where, exc: Exception) -> None:
        """The reader or the writer failed: end the connection as on a disconnect, with 1011."""
        report_internal(log, self._gateway.metrics, where, f"session {self._session_id}'s connection", exc)
        self._close_code = INTERNAL_ERROR_CLOSE
        self._close_reason = "internal error"
        self._reader_scope.cancel(reason="internal error")

    async def _writer_contained(self, receive: trio.MemoryReceiveChannel[GatewayFrame]) -> None:
        """The writer, a boundary: its failure ends the connection, not the process. Closing
        ``receive`` (the writer does, also on failure) stops every query's relaying."""
        try:
            await self._writer(receive)
        except Exception as exc:
            self._failed("ws_writer", exc)

    async def _writer(self, receive: trio.MemoryReceiveChannel[GatewayFrame]) -> None:
        """Send the connection's frames in order; whatever is queued goes in one write."""
        with receive:
            async for frame in receive:
                batch = [frame]
                while len(batch) < WRITE_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                payloads = []
                for queued in batch:
                    if isinstance(queued, TERMINAL_FRAMES):
                        self._queries.pop(queued.id, None)
                    payloads.append(encode_frame(queued))
                # Shutting down: the close frame follows this write once no query is left.
                self._close_if_idle()
                try:
                    # A write the socket takes at once is never timed: no task is woken.
                    await send_text_batch(self._ws, payloads, on_wait=self._write_waits)
                except ConnectionClosed:
                    # Closing ``receive`` now makes every sender see BrokenResourceError:
                    # their queries stop relaying, and their usage is still recorded.
                    self._writing_since = None
                    return
                self._writing_since = None
                if self._close_code == SLOW_READER:
                    # A slow reader's last write completed: nothing more is sent but the
                    # close frame (closing ``receive`` stops the senders, as above).
                    return

    def _write_waits(self) -> None:
        """A write waits (the client's socket buffer is full): the slow-reader watch starts
        timing it. Writes that complete at once wake nobody (one scheduler pass less per
        relayed event)."""
        if self._writing_since is None:
            self._writing_since = trio.current_time()
            if self._write_begun:
                self._write_begun.unpark_all()

    async def _watch_writes(self, scope: trio.CancelScope) -> None:
        """Cut the reader off once one write has been in progress for the slow-reader
        timeout. Runs until then, or until ``scope`` is cancelled."""
        timeout = self._config.slow_reader_timeout
        with scope:
            while True:
                since = self._writing_since
                if since is None:
                    await self._write_begun.park()
                elif trio.current_time() < since + timeout:
                    await trio.sleep_until(since + timeout)
                else:
                    self._cut_off_slow_reader()
                    return

    def _cut_off_slow_reader(self) -> None:
        """Abort the queries and close with 4408 once the write in flight completes. The
        write is not cancelled here: cut mid-frame, no close frame could follow it."""
        timeout = self._config.slow_reader_timeout
        log.warning(
            "session %s: client read nothing for %g s; aborting its queries", self._session_id, timeout
        )
        self._close_code = SLOW_READER
        self._close_reason = f"slow reader: read nothing for {timeout:g} s"
        self._reader_scope.cancel(reason="slow reader")

    async def _emit(self, frame: GatewayFrame) -> None:
        if self._outbound is None:
            return
        try:
            await self._outbound.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _reject(self, frame_id: str | None, error_type: str, message: str) -> None:
        await self._emit(Rejected(id=frame_id, error=ErrorInfo(type=error_type, message=message, status=None, request_id=None)))

    async def _dispatch(self, text: str | bytes, nursery: trio.Nursery) -> None:
        """Handle one client frame; a boundary: an unexpected failure answers that frame."""
        try:
            command = decode_command(text)
        except RemoteProtocolError as exc:
            await self._reject(exc.frame_id, exc.error_type, str(exc))
            return
        except Exception as exc:
            report_internal(log, self._gateway.metrics, "ws_reader", f"a frame of session {self._session_id}", exc)
            await self._reject(None, INTERNAL_ERROR, internal_error_info(exc).message)
            return
        try:
            await self._command(command, nursery)
        except Exception as exc:
            what = f"{type(command).__name__} {_command_id(command)} of session {self._session_id}"
            report_internal(log, self._gateway.metrics, "ws_reader", what, exc)
            info = internal_error_info(exc)
            if isinstance(command, Query) and self._queries.pop(command.id, None) is not None:
                # Registered, never started: the frame is the query's one terminal frame.
                await self._emit(ErrorFrame(id=command.id, error=info))
            else:
                await self._reject(_command_id(command), INTERNAL_ERROR, info.message)

    async def _command(self, command: ClientCommand, nursery: trio.Nursery) -> None:
        match command:
            case Query():
                await self._start_query(command)
            case Abort():
                scope = self._queries.get(command.id)
                if scope is None:
                    await self._reject(command.id, "unknown_query", f"no query {command.id!r} in flight")
                else:
                    scope.cancel(reason="client aborted")
            case CountTokens():
                nursery.start_soon(self._count_tokens, command)
            case GetCost():
                nursery.start_soon(self._send_cost)

    async def _start_query(self, query: Query) -> None:
        if self._going_away:
            await self._reject(query.id, "shutting_down", "the gateway is shutting down")
            return
        if query.id in self._queries:
            await self._reject(query.id, "duplicate_query", f"query {query.id!r} is already in flight")
            return
        if len(self._queries) >= self._config.max_queries_per_session:
            await self._reject(
                query.id,
                "too_many_queries",
                f"at most {self._config.max_queries_per_session} queries in flight per session",
            )
            return
        access, policy = self._access, self._gateway.policy
        if access is not None and access.principal is not None:
            patterns, user = policy.patterns(access), access.principal.user
            refused = model_refusal(patterns, query.request.get("model"), user) or model_refusal(
                patterns, query.fallback_model, user
            )
            if refused is not None:
                await self._reject(query.id, "invalid_request_error", refused)
                return
        assert self._outbound is not None
        # Registered before the query starts, so its terminal frame always finds it.
        scope = self._queries[query.id] = trio.CancelScope()
        try:
            await self._gateway.start_query(
                self._session_id, query, self._outbound.clone(), scope, budget=self._budget,
                subjects=() if access is None else policy.subjects(access),
            )
        except RemoteProtocolError as exc:
            del self._queries[query.id]
            await self._reject(query.id, exc.error_type, str(exc))
        except ShuttingDown as exc:
            # The shutdown began while this query was being handed over.
            del self._queries[query.id]
            await self._reject(query.id, "shutting_down", str(exc))
            self._close_if_idle()

    async def _count_tokens(self, command: CountTokens) -> None:
        try:
            result = await self._gateway.count_tokens(command.request, query_id=command.id)
        except RemoteProtocolError as exc:
            await self._reject(command.id, exc.error_type, str(exc))
            return
        except Exception as exc:
            report_internal(log, self._gateway.metrics, "ws_reader", f"count_tokens {command.id}", exc)
            await self._emit(ErrorFrame(id=command.id, error=internal_error_info(exc)))
            return
        if result.failure is not None:
            await self._emit(ErrorFrame(id=command.id, error=result.failure.info()))
        else:
            await self._emit(TokenCount(id=command.id, input_tokens=result.input_tokens or 0))

    async def _send_cost(self) -> None:
        try:
            cost = await self._gateway.cost(self._session_id)
        except Exception as exc:
            report_internal(log, self._gateway.metrics, "ws_reader", f"get_cost of session {self._session_id}", exc)
            await self._reject(None, INTERNAL_ERROR, internal_error_info(exc).message)
            return
        await self._emit(CostFrame(cost=cost, budget=await self._gateway.budget(self._budget)))


def _command_id(command: ClientCommand) -> str | None:
    return None if isinstance(command, GetCost) else command.id
