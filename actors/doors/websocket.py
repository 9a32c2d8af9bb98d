"""FrontDoor: the WebSocket door of docs/protocol.md section 1 (trio-websocket).

Role:
    Accepts WebSocket connections on ``/v1/sessions[/{id}]``, checks the session id, the
    access token and the session's owner before any state is touched, attaches the
    connection to its session (a second connection takes over: the old one gets its queries
    aborted, then close code 4409), and hands it to its ``Connection``
    (``actors.doors.ws_connection``: the reader, the writer, close codes and timers), which
    translates frames: client commands in, gateway frames out.
Inbox:
    None of its own: it calls the ``Gateway`` handle (RetrySupervisor, CostLedger).
Lifecycle:
    ``run`` binds the listener and calls ``task_status.started(port)``; it serves until
    cancelled, or until a graceful shutdown (``Gateway.shutdown``) has ended every query
    and its connections have closed: then it closes the listener and returns.
Shutdown (``actors.supervisor.drain``):
    Once the shutdown begins, a new handshake is rejected with HTTP 503, a ``query`` frame
    gets ``rejected`` ``shutting_down``, and a connection closes with 1001 ("going away")
    as soon as it has no query in flight: an idle one at once, a busy one after the
    terminal frame of its last query (``done``, or ``error`` ``shutting_down`` when the
    grace ran out) is written. ``run`` holds the drain until its connections are closed.
Failure policy:
    A frame over the size limit closes the connection with 1009 (trio-websocket does it), a
    text frame that is not UTF-8 with 1007 (``actors.doors.ws_server``); a binary frame is
    read like a text one. A disconnect, an oversize frame or a takeover aborts the
    connection's queries; their usage is recorded. With a PostgreSQL ledger a takeover
    reaches across instances: each accepted connection claims its session through
    ``actors.store.pg_fleet`` before its ready frame. One connection's failure never reaches
    another (docs/supervision.md): a failure in the handshake or the teardown is logged once
    and counted in ``switchboard_internal_errors_total{where="ws_connection"}``; the
    connection's own (``ws_reader``, ``ws_writer``) are in ``actors.doors.ws_connection``.
"""

from __future__ import annotations

import functools
import logging
import secrets
from typing import TYPE_CHECKING, Final, final

import trio
from trio_websocket import WebSocketRequest

from actors._util import CLEANUP_TIMEOUT, report_internal
from actors.access.budgets import Access
from actors.config.settings import Config
from actors.doors.ws_connection import Connection
from actors.doors.ws_server import serve_websocket
from actors.gateway import Gateway
from actors.store.ledger_sessions import owner_digest
from protocol.errors import ActorUnavailable
from protocol.frames import SESSION_ID, Ready

if TYPE_CHECKING:
    from actors.store.fleet_link import FleetLink

log = logging.getLogger("switchboard.frontdoor")

SESSIONS_PATH: Final = "/v1/sessions"
# Bigger reads than trio-websocket's 4 KiB default: request frames carry whole conversations.
RECEIVE_BUFFER: Final = 64 * 1024


def parse_session_path(path: str) -> tuple[int, str | None]:
    """``(status, session_id)``: 200 with the id (a fresh one for ``/v1/sessions``), or the
    HTTP status to reject the handshake with (404 unknown path, 400 bad session id)."""
    route = path.split("?", 1)[0]
    if route in (SESSIONS_PATH, SESSIONS_PATH + "/"):
        return 200, secrets.token_urlsafe(16)
    prefix = SESSIONS_PATH + "/"
    if not route.startswith(prefix):
        return 404, None
    session_id = route[len(prefix) :]
    if not SESSION_ID.fullmatch(session_id):
        return 400, None
    return 200, session_id


@final
class FrontDoor:
    """The WebSocket server (see the module docstring)."""

    def __init__(self, gateway: Gateway, config: Config, fleet: FleetLink | None = None) -> None:
        self._gateway = gateway
        self._config = config
        # With a PostgreSQL ledger: takeover across instances (actors.store.pg_fleet).
        self._fleet = fleet
        self._live: dict[str, Connection] = {}
        # Every connection being served (``_live`` has only each session's newest), for the
        # shutdown, and an event set while there is none.
        self._connections: set[Connection] = set()
        self._no_connections = trio.Event()
        self._no_connections.set()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve WebSocket connections until cancelled. Startable: ``started()`` gets the port."""
        serve = functools.partial(
            serve_websocket,
            self.handle_request,
            self._config.host,
            self._config.port,
            max_message_size=self._config.max_frame_bytes,
            receive_buffer_size=RECEIVE_BUFFER,
            reuse_port=self._config.workers > 1,
        )
        drain = self._gateway.drain
        with drain.hold():
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve)
                task_status.started(server.port)
                await drain.begun.wait()
                for connection in list(self._connections):
                    connection.go_away()
                await drain.queries_ended.wait()
                # Each connection closes once its last terminal frame is written.
                with trio.move_on_after(CLEANUP_TIMEOUT):
                    await self._no_connections.wait()
                nursery.cancel_scope.cancel(reason="the gateway has shut down")

    async def _authenticate(self, request: WebSocketRequest) -> Access | None:
        """Who the handshake's bearer token is (``Gateway.authenticate``); None: refused."""
        presented: list[str] = []
        for name, value in request.headers:
            if name.lower() == b"authorization":
                scheme, _, credential = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    presented = [credential.strip()]
        return await self._gateway.authenticate(presented)

    async def handle_request(self, request: WebSocketRequest) -> None:
        """One connection, a supervision boundary: nothing it raises (but cancellation)
        reaches the listener, which serves every other connection. The listener's handler;
        public so that tests can hand it a connection over memory streams (tests/README.md)."""
        try:
            await self._handle(request)
        except Exception as exc:
            path = request.path.split("?", 1)[0]
            report_internal(log, self._gateway.metrics, "ws_connection", f"the connection to {path}", exc)

    async def _handle(self, request: WebSocketRequest) -> None:
        if self._gateway.drain.begun.is_set():
            await request.reject(503, body=b"the gateway is shutting down")
            return
        status, session_id = parse_session_path(request.path)
        if session_id is None:
            await request.reject(status)
            return
        access = await self._authenticate(request)
        if access is None:
            await request.reject(401)
            return
        try:
            user = None if access.principal is None else access.principal.user
            opened = await self._gateway.open_session(session_id, owner=owner_digest(access.token), user=user)
        except ActorUnavailable:
            # The ledger cannot read the session (or the gateway is shutting down): this
            # session fails, never the door.
            log.error("session %s cannot be opened now; handshake refused with 503", session_id)
            await request.reject(503)
            return
        except Exception:
            # The handshake is answered; the boundary (handle_request) reports the failure.
            await request.reject(500)
            raise
        if not opened.owner_ok:
            await request.reject(403)
            return
        ws = await request.accept()
        connection = Connection(self._gateway, self._config, session_id, ws, budget=access.budget, access=access)
        previous = self._live.get(session_id)
        self._live[session_id] = connection
        if previous is not None:
            log.info("session %s taken over by a new connection", session_id)
            previous.supersede()
        ready = Ready(
            session_id=session_id,
            resumed=opened.resumed,
            cost=opened.cost,
            models=list(self._gateway.models),
            budget=await self._gateway.budget(access.budget),
        )
        self._connection_opened(connection)
        holder = None
        try:
            if self._fleet is not None:
                # Before the ready frame: once the client has it, any connection to the
                # session on another instance is being superseded.
                holder = await self._fleet.claim(session_id, connection.supersede)
            with self._gateway.session_in_use(session_id):
                await connection.serve(ready)
        except ActorUnavailable:
            log.exception("session %s: the gateway is shutting down", session_id)
        finally:
            if holder is not None and self._fleet is not None:
                self._fleet.release(holder)
            if self._live.get(session_id) is connection:
                del self._live[session_id]
            self._connection_closed(connection)

    def _connection_opened(self, connection: Connection) -> None:
        if not self._connections:
            self._no_connections = trio.Event()
        self._connections.add(connection)
        if self._gateway.drain.begun.is_set():
            connection.go_away()  # accepted while the shutdown began

    def _connection_closed(self, connection: Connection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._no_connections.set()
