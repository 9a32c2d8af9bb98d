"""Fleet: what several gateway processes on one PostgreSQL ledger coordinate beyond the
ledger's rows (README.md "Deployment"): which connection holds a WebSocket session, and each
model's overload gate.

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
Overload gates (``actors.supervisor.shared`` uses them; the rules stay in ``protocol/overload.py``):
    the table ``switchboard.gates`` holds each model's gate as the fleet sees it. An
    instance whose local gate lets a probe go asks ``take_probe``: one conditional
    ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` grants the probe (the gate closed, or
    open, due, and no live probe elsewhere: none, its own, or one older than
    ``PROBE_STALE``), else says how long to wait. Changes (``tell_overloaded``,
    ``tell_closed``, ``tell_released``) are written in order in the background (at most
    ``GATE_OUTBOX`` waiting) and notify ``GATES_CHANNEL`` (a probe's failure, a gate closed,
    a probe released); another instance's notification goes to ``on_gate``.
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
from typing import Final, final

import msgspec
import psycopg
import trio
from psycopg.rows import TupleRow

from actors.config.settings import redact_url
from actors.store.fleet_link import Claimed, GateNews, Holder, deliver_claim, forget_holder
from actors.store.health import backoff
from actors.store.pg_connect import STATEMENT_TIMEOUT, conninfo, message
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
# The notification channel of overload gates: a gate closed, a probe failed or was released.
GATES_CHANNEL: Final = "switchboard_gates"
# A fleet probe older than this is taken to be lost (its instance was killed mid-probe):
# another instance may probe. Well above an overloaded answer's time to its status line.
PROBE_STALE: Final = 60.0
# While another instance's probe is in flight, how often a waiting instance asks the gate
# again (a safety net: the probe's verdict normally arrives as a notification at once).
REMOTE_RECHECK: Final = 2.0
# Gate changes waiting to be written at most; past it one is dropped (logged): the local
# gate stays right, only the fleet's view lags.
GATE_OUTBOX: Final = 256
_TAKE_PROBE: Final = (
    "INSERT INTO switchboard.gates AS g (model, open, failures, probe_instance, probe_started_at, next_probe_at) "
    "VALUES (%(model)s, true, 1, %(me)s, now(), now()) ON CONFLICT (model) DO UPDATE SET "
    "open = true, probe_instance = %(me)s, probe_started_at = now() "
    "WHERE NOT g.open OR (g.next_probe_at <= now() AND (g.probe_instance IS NULL OR g.probe_instance = %(me)s "
    "OR g.probe_started_at < now() - make_interval(secs => %(stale)s))) RETURNING true"
)
_GATE_WAIT: Final = (
    "SELECT probe_instance IS NOT NULL AND probe_started_at >= now() - make_interval(secs => %(stale)s), "
    "GREATEST(EXTRACT(EPOCH FROM next_probe_at - now()), 0)::float8 FROM switchboard.gates WHERE model = %(model)s"
)
_GATE_OVERLOADED: Final = (
    "WITH g AS (INSERT INTO switchboard.gates AS g (model, open, failures, probe_instance, probe_started_at, "
    "next_probe_at) VALUES (%(model)s, true, 1, NULL, NULL, now() + make_interval(secs => %(delay)s)) "
    "ON CONFLICT (model) DO UPDATE SET open = true, failures = g.failures + 1, "
    "next_probe_at = GREATEST(g.next_probe_at, now() + make_interval(secs => %(delay)s)), "
    "probe_instance = CASE WHEN %(probe)s AND g.probe_instance = %(me)s THEN NULL ELSE g.probe_instance END, "
    "probe_started_at = CASE WHEN %(probe)s AND g.probe_instance = %(me)s THEN NULL ELSE g.probe_started_at END "
    "RETURNING EXTRACT(EPOCH FROM next_probe_at - now())::float8 AS delay) "
    "SELECT pg_notify(%(channel)s, json_build_object('model', %(model)s::text, 'instance_id', %(me)s::text, "
    "'state', 'failed', 'delay', delay)::text) FROM g WHERE %(probe)s"
)
_GATE_CLOSED: Final = (
    "WITH g AS (UPDATE switchboard.gates SET open = false, failures = 0, probe_instance = NULL, "
    "probe_started_at = NULL WHERE model = %(model)s AND open RETURNING model) "
    "SELECT pg_notify(%(channel)s, json_build_object('model', %(model)s::text, 'instance_id', %(me)s::text, "
    "'state', 'closed', 'delay', 0)::text) FROM g"
)
_GATE_RELEASED: Final = (
    "WITH g AS (UPDATE switchboard.gates SET probe_instance = NULL, probe_started_at = NULL "
    "WHERE model = %(model)s AND probe_instance = %(me)s RETURNING GREATEST(EXTRACT(EPOCH FROM next_probe_at - now()), 0)::float8 AS delay) "
    "SELECT pg_notify(%(channel)s, json_build_object('model', %(model)s::text, 'instance_id', %(me)s::text, "
    "'state', 'released', 'delay', delay)::text) FROM g"
)
_FAST_COOLDOWN: Final = (
    "SELECT pg_notify(%(channel)s, json_build_object('model', %(model)s::text, 'instance_id', %(me)s::text, "
    "'state', 'cooling', 'delay', %(delay)s::float8)::text)"
)
_CLAIM: Final = (
    "WITH c AS (SELECT nextval('switchboard.session_claims') AS epoch) "
    "SELECT epoch, pg_notify(%s, json_build_object('session_id', %s::text, 'instance_id', %s::text, "
    "'epoch', epoch)::text) FROM c"
)


_DECODER: Final = msgspec.json.Decoder(Claimed)
_GATE_DECODER: Final = msgspec.json.Decoder(GateNews)


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
        # Where gate news goes (``actors.supervisor.shared``); gate changes waiting to be written.
        self.on_gate: Callable[[GateNews], None] | None = None
        self._gate_send, self._gate_receive = trio.open_memory_channel[tuple[str, dict[str, object]]](GATE_OUTBOX)

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
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_gates)
                await self._listen(conn)
        finally:
            claims, self._claims = self._claims, None
            if claims is not None:
                claims.close()

    async def _listen(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Listen on ``conn``, and on a new connection whenever it breaks. Until cancelled."""
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

    def _listening_connection(self) -> psycopg.Connection[TupleRow]:
        conn = psycopg.connect(self._info, autocommit=True)
        conn.execute(f"LISTEN {SESSIONS_CHANNEL}")
        conn.execute(f"LISTEN {GATES_CHANNEL}")
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
                            trio.from_thread.run_sync(self._deliver, note.channel, note.payload, trio_token=token)
                        except trio.RunFinishedError:
                            return
            finally:
                conn.close()

        try:
            await trio.to_thread.run_sync(listen, abandon_on_cancel=True)
        finally:
            stop.set()

    def _deliver(self, channel: str, payload: str) -> None:
        """One notification, on the trio side: supersede the older local holders, or tell the
        local gates."""
        if channel == GATES_CHANNEL:
            try:
                news = _GATE_DECODER.decode(payload)
            except msgspec.DecodeError:
                log.warning("a malformed notification on %s ignored", GATES_CHANNEL)
                return
            if news.instance_id != self.instance_id and self.on_gate is not None:
                self.on_gate(news)
            return
        try:
            claimed = _DECODER.decode(payload)
        except msgspec.DecodeError:
            log.warning("a malformed notification on %s ignored", SESSIONS_CHANNEL)
            return
        if claimed.instance_id == self.instance_id:
            return
        self.notifications += 1
        deliver_claim(self._holders, claimed)

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
        forget_holder(self._holders, holder)

    def _claim(self, session_id: str) -> int:
        """On a worker thread: one statement, the epoch and the notification (committed at
        once: autocommit)."""
        conn = self._connection()
        try:
            row = conn.execute(_CLAIM, (SESSIONS_CHANNEL, session_id, self.instance_id)).fetchone()
        except psycopg.Error:
            conn.close()
            raise
        assert row is not None
        return int(row[0])

    # --- overload gates (README.md "No retry storms", "Deployment") -------------------------

    async def take_probe(self, model: str) -> float | None:
        """Ask the fleet's gate of ``model`` for its probe: None when this instance holds it
        now (go upstream), else how many seconds to wait before asking again (another
        instance's probe is in flight, or the next probe is not due yet). A server that
        does not answer (``CLAIM_TIMEOUT``) or fails counts as None: the local gate alone
        decides then."""
        params = {"model": model, "me": self.instance_id, "stale": PROBE_STALE}
        try:
            with trio.move_on_after(CLAIM_TIMEOUT):
                return await trio.to_thread.run_sync(
                    self._take_probe, params, limiter=self._claim_limiter, abandon_on_cancel=True
                )
        except psycopg.Error as exc:
            log.warning("the fleet's gate of %s cannot be read (%s); the local gate decides", model, message(exc))
        return None

    def _take_probe(self, params: dict[str, object]) -> float | None:
        conn = self._connection()
        try:
            if conn.execute(_TAKE_PROBE, params).fetchone() is not None:
                return None
            row = conn.execute(_GATE_WAIT, params).fetchone()
        except psycopg.Error:
            conn.close()
            raise
        if row is None:
            return None
        remote_probe, delay = bool(row[0]), float(row[1])
        return max(delay, REMOTE_RECHECK if remote_probe else 0.0)

    def tell_overloaded(self, model: str, delay: float, *, probe: bool) -> None:
        """An attempt on ``model`` got an overload; the next probe is due in ``delay`` s."""
        self._tell(_GATE_OVERLOADED, {"model": model, "delay": delay, "probe": probe})

    def tell_closed(self, model: str) -> None:
        """The model answered again: close the fleet's gate, release every instance's waiters."""
        self._tell(_GATE_CLOSED, {"model": model})

    def tell_released(self, model: str) -> None:
        """This instance's probe ended without a verdict: free the fleet's probe."""
        self._tell(_GATE_RELEASED, {"model": model})

    def tell_fast_cooldown(self, model: str, seconds: float) -> None:
        """The model's fast mode cools down for ``seconds`` from now: tell the others (a
        notification only: an instance started meanwhile learns of it from its own answer)."""
        self._tell(_FAST_COOLDOWN, {"model": model, "delay": seconds})

    def _tell(self, statement: str, params: dict[str, object]) -> None:
        params = {**params, "me": self.instance_id, "channel": GATES_CHANNEL}
        try:
            self._gate_send.send_nowait((statement, params))
        except trio.WouldBlock:
            log.warning("the fleet's gate of %s lags: a change was dropped", params["model"])

    async def _write_gates(self) -> None:
        """Write the gate changes in order, each on a worker thread; a failure is logged."""
        async for statement, params in self._gate_receive:
            try:
                await trio.to_thread.run_sync(
                    self._execute, statement, params, limiter=self._claim_limiter, abandon_on_cancel=True
                )
            except psycopg.Error as exc:
                log.warning("the fleet's gate of %s was not updated: %s", params["model"], message(exc))

    def _execute(self, statement: str, params: dict[str, object]) -> None:
        conn = self._connection()
        try:
            conn.execute(statement.encode(), params)
        except psycopg.Error:
            conn.close()
            raise

    def _connection(self) -> psycopg.Connection[TupleRow]:
        """The statements' connection (claims, gates), opened anew after a failure."""
        conn = self._claims
        if conn is None or conn.closed:
            conn = self._claims = psycopg.connect(self._info, autocommit=True)
            conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        return conn
