"""Fleet: what several gateway processes on one PostgreSQL ledger coordinate beyond the
ledger's rows (README.md "Deployment"): which connection holds a WebSocket session.

Role:
    A session is served by one WebSocket connection at a time (docs/protocol.md 1: a second
    connection takes over, the first gets its queries aborted and charged, then close code
    4409). Within one process the FrontDoor does it alone; across processes it goes through
    PostgreSQL LISTEN/NOTIFY on the ledger's database. Each accepted connection *claims* its
    session: one statement takes the next value of the sequence
    ``switchboard.session_claims`` (the claim's epoch) and notifies the channel
    ``SESSIONS_CHANNEL`` with ``{session_id, instance_id, epoch}`` (``claim``). Every instance
    listens; one that holds a connection to that session with an older epoch supersedes it
    (the callback the FrontDoor gave, ``Connection.supersede``). The epoch orders claims made
    at once on two instances: the newest wins on both, whatever order the notifications
    arrive in, and a notification that arrives while a claim is still under way is compared
    once the claim's epoch is known.
Why notifications and not a lease row polled: a takeover must reach the old connection at
    once (the measured latency is in README.md "Deployment"), a poll would cost every
    instance a query per interval whether or not anything happens, and nothing must survive
    a crash: a killed instance's connections are gone with it, so there is no lease to expire.
Threads:
    psycopg's async API runs only on asyncio, so the listening connection lives in a worker
    thread (``_listen``): ``Connection.notifies`` with a timeout (``POLL``) in a loop that
    checks a stop flag, delivering each notification to the trio side with
    ``trio.from_thread.run_sync`` (the TrioToken of ``run``'s trio run). Claims go through a
    second connection, from a worker thread, one at a time.
Failure policy:
    The fleet never stops a door: a claim that fails (the server down) or takes longer than
    ``CLAIM_TIMEOUT`` is logged and the connection is served without cross-instance takeover; a listening connection that
    breaks is reopened with backoff (notifications sent meanwhile are missed: a connection
    on another instance may then live on until its client leaves). A notification payload
    that does not decode (anyone with access to the database may notify the channel) is
    ignored, bounded by PostgreSQL's 8000-byte payload limit.
Lifecycle:
    ``run`` connects the listening connection and calls ``task_status.started(self)``; it
    listens until cancelled, then stops the thread (within ``POLL``) and closes both
    connections. A server that cannot be reached at start fails ``run`` with ``ConfigError``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, final

import msgspec
import psycopg
import trio
from psycopg.rows import TupleRow

from actors.config import redact_url
from actors.ledger_health import backoff
from actors.pg_store import STATEMENT_TIMEOUT, conninfo, message
from protocol.errors import ConfigError

log = logging.getLogger("switchboard.fleet")

# The notification channel of session claims (NOTIFY is per database: one ledger, one channel).
SESSIONS_CHANNEL: Final = "switchboard_sessions"
# How long the listening thread waits for a notification before it looks at its stop flag:
# bounds how long stopping the fleet takes, costs nothing while waiting.
POLL: Final = 0.5
# How long a handshake waits for its claim at most: with the server slow or down (a new
# connection to it takes up to its connect_timeout), the connection is served without the
# claim rather than held; the claim's thread finishes on its own.
CLAIM_TIMEOUT: Final = 2.0
_CLAIM: Final = (
    "WITH c AS (SELECT nextval('switchboard.session_claims') AS epoch) "
    "SELECT epoch, pg_notify(%s, json_build_object('session_id', %s::text, 'instance_id', %s::text, "
    "'epoch', epoch)::text) FROM c"
)


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    """A claim notification's payload."""

    session_id: str
    instance_id: str
    epoch: int


_DECODER: Final = msgspec.json.Decoder(Claimed)


@dataclass(eq=False)
class Holder:
    """One local connection holding a session: its claim's epoch (None while the claim is
    under way) and the newest other instance's epoch seen meanwhile."""

    session_id: str
    on_taken: Callable[[], None]
    epoch: int | None = None
    newest_seen: int = 0
    taken: bool = field(default=False)

    def take(self) -> None:
        if not self.taken:
            self.taken = True
            self.on_taken()


@final
class Fleet:
    """Cross-instance session takeover on a PostgreSQL ledger (see the module docstring)."""

    def __init__(self, url: str, instance_id: str) -> None:
        self._info = conninfo(url)
        self._where = redact_url(url)
        self.instance_id = instance_id
        self._holders: dict[str, set[Holder]] = {}
        self._claims: psycopg.Connection[TupleRow] | None = None
        self._claim_limiter = trio.CapacityLimiter(1)
        self.notifications = 0

    async def run(self, *, task_status: trio.TaskStatus[Fleet] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled. Startable. Raises ``ConfigError`` when the server cannot be
        reached at start."""
        try:
            conn = await trio.to_thread.run_sync(self._listening_connection)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot listen on the cost ledger {self._where}: {message(exc)}") from exc
        log.info("instance %s: session takeover across instances on channel %s", self.instance_id, SESSIONS_CHANNEL)
        task_status.started(self)
        try:
            waits = backoff()
            while True:
                try:
                    await self._listen_until_broken(conn)
                except psycopg.Error as exc:
                    log.warning("the fleet's listening connection broke (%s); reconnecting", message(exc))
                while True:
                    await trio.sleep(next(waits))
                    try:
                        conn = await trio.to_thread.run_sync(self._listening_connection)
                        waits = backoff()
                        break
                    except psycopg.Error as exc:
                        log.warning("the fleet cannot listen yet: %s", message(exc))
        finally:
            claims, self._claims = self._claims, None
            if claims is not None:
                claims.close()

    def _listening_connection(self) -> psycopg.Connection[TupleRow]:
        conn = psycopg.connect(self._info, autocommit=True)
        conn.execute(f"LISTEN {SESSIONS_CHANNEL}")
        return conn

    async def _listen_until_broken(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Run the listening thread on ``conn`` until it fails (raises) or this is cancelled
        (the thread is told to stop and closes ``conn`` within ``POLL``)."""
        stop = threading.Event()
        token = trio.lowlevel.current_trio_token()

        def listen() -> None:
            try:
                while not stop.is_set():
                    for note in conn.notifies(timeout=POLL):
                        try:
                            trio.from_thread.run_sync(self._deliver, note.payload, trio_token=token)
                        except trio.RunFinishedError:
                            return
            finally:
                conn.close()

        try:
            await trio.to_thread.run_sync(listen, abandon_on_cancel=True)
        finally:
            stop.set()

    def _deliver(self, payload: str) -> None:
        """One notification, on the trio side: supersede the older local holders."""
        try:
            claimed = _DECODER.decode(payload)
        except msgspec.DecodeError:
            log.warning("a malformed notification on %s ignored", SESSIONS_CHANNEL)
            return
        if claimed.instance_id == self.instance_id:
            return
        self.notifications += 1
        for holder in list(self._holders.get(claimed.session_id, ())):
            if holder.epoch is None:
                holder.newest_seen = max(holder.newest_seen, claimed.epoch)
            elif holder.epoch < claimed.epoch:
                log.info("session %s taken over by instance %s", claimed.session_id, claimed.instance_id)
                holder.take()

    async def claim(self, session_id: str, on_taken: Callable[[], None]) -> Holder:
        """Claim ``session_id`` for a local connection: other instances' connections to it
        are superseded; ``on_taken`` is called when a newer claim elsewhere takes it. Call
        ``release`` with the result when the connection ends. Never raises for the server:
        a failed claim is logged (this connection then cannot be taken over from elsewhere
        nor take over)."""
        holder = Holder(session_id, on_taken)
        self._holders.setdefault(session_id, set()).add(holder)
        epoch: int | None = None
        try:
            with trio.move_on_after(CLAIM_TIMEOUT):
                epoch = await trio.to_thread.run_sync(
                    self._claim, session_id, limiter=self._claim_limiter, abandon_on_cancel=True
                )
        except psycopg.Error as exc:
            log.warning("session %s: the claim across instances failed (%s); served here alone", session_id, message(exc))
            return holder
        if epoch is None:
            log.warning("session %s: the claim across instances took over %.0f s; served here alone", session_id, CLAIM_TIMEOUT)
            return holder
        holder.epoch = epoch
        if holder.newest_seen > epoch:
            holder.take()
        return holder

    def release(self, holder: Holder) -> None:
        holders = self._holders.get(holder.session_id)
        if holders is not None:
            holders.discard(holder)
            if not holders:
                del self._holders[holder.session_id]

    def _claim(self, session_id: str) -> int:
        """On a worker thread: one statement, the epoch and the notification (committed at
        once: autocommit)."""
        conn = self._claims
        if conn is None or conn.closed:
            conn = self._claims = psycopg.connect(self._info, autocommit=True)
            conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        try:
            row = conn.execute(_CLAIM, (SESSIONS_CHANNEL, session_id, self.instance_id)).fetchone()
        except psycopg.Error:
            conn.close()
            raise
        assert row is not None
        return int(row[0])
