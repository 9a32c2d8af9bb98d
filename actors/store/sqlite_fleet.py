"""SqliteFleet: session takeover and shared overload gates between the worker processes of
``switchboard serve --workers N`` on one SQLite ledger (README.md "Deployment"): what
``actors.store.pg_fleet.Fleet`` does on PostgreSQL, with a table polled instead of LISTEN/NOTIFY.

Events:
    ``fleet_events`` (actors/store/sqlite_shared.py) plays the notification channel: a claim or a
    gate change inserts a row (``channel``, JSON ``payload``); each worker reads the rows
    after the last it saw every ``POLL`` seconds and applies the others' as ``Fleet`` applies
    a notification (``actors.store.fleet_link``). A claim's epoch is its row's id
    (AUTOINCREMENT: never reused), so the newest claim wins on every worker whatever order
    they read in. Rows older than ``KEEP_EVENTS`` are deleted now and then.
Why a poll and not the parent as a relay over pipes: the file is already shared, a poll of
    it is one indexed read (microseconds, no write) per worker per ``POLL``, and nothing
    else has to run for it; a takeover reaches the other worker within ``POLL`` (measured
    in README.md "Deployment"). A relay would add a second channel to keep in step with
    the file, and the parent would become part of every takeover.
Gates:
    ``fleet_gates`` holds each model's gate as the workers share it; the statements are
    ``actors.store.pg_fleet``'s, in SQLite (times are wall-clock seconds passed in).
Threads:
    The poll reads on the event loop's thread, through a read-only connection that never
    waits (``busy_timeout`` 0; in WAL a reader never waits for the writer, and reading the
    few new rows by their index takes microseconds, less than a hop to a thread). The
    writes (claims, gate statements, pruning) go through a second connection on worker
    threads, one at a time (``_limiter``), each one short ``BEGIN IMMEDIATE`` transaction
    (``busy_timeout`` waits for a ledger commit of another worker).
Failure policy:
    As ``Fleet``: never stops a door. A claim or a gate read that fails or takes over
    ``CLAIM_TIMEOUT`` is logged (the connection is served without takeover; the local gate
    decides); a failed poll is logged and retried at the next ``POLL``; a payload that does
    not decode is ignored (bounded: the rows are ours, read ``MAX_EVENTS`` at a time).
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import sqlite3
import time
from collections.abc import Callable
from typing import Final, TypeVar, final

import msgspec
import trio

from actors.store.fleet_link import Claimed, GateNews, Holder, deliver_claim, forget_holder
from actors.store.sqlite import BUSY_TIMEOUT_MS, SYNCHRONOUS
from actors.store.sqlite_shared import FLEET_SCHEMA
from protocol.errors import ConfigError

log = logging.getLogger("switchboard.fleet")

T = TypeVar("T")

SESSIONS: Final = "sessions"
GATES: Final = "gates"
# How often each worker reads the events: bounds a takeover's latency across workers.
POLL: Final = 0.05
# Events read per poll at most (the rest at the next one).
MAX_EVENTS: Final = 1000
# Events are kept this long (seconds), then deleted; every KEEP_EVENTS/6 a worker prunes.
KEEP_EVENTS: Final = 60.0
CLAIM_TIMEOUT: Final = 2.0
PROBE_STALE: Final = 60.0
REMOTE_RECHECK: Final = 2.0
GATE_OUTBOX: Final = 256
_TAKE_PROBE: Final = (
    "INSERT INTO fleet_gates AS g (model, open, failures, probe_instance, probe_started_at, next_probe_at) "
    "VALUES (:model, 1, 1, :me, :now, :now) ON CONFLICT (model) DO UPDATE SET "
    "open = 1, probe_instance = :me, probe_started_at = :now "
    "WHERE NOT g.open OR (g.next_probe_at <= :now AND (g.probe_instance IS NULL OR g.probe_instance = :me "
    "OR g.probe_started_at < :now - :stale)) RETURNING 1"
)
_GATE_WAIT: Final = (
    "SELECT probe_instance IS NOT NULL AND probe_started_at >= :now - :stale, MAX(next_probe_at - :now, 0) "
    "FROM fleet_gates WHERE model = :model"
)
_GATE_OVERLOADED: Final = (
    "INSERT INTO fleet_gates AS g (model, open, failures, probe_instance, probe_started_at, next_probe_at) "
    "VALUES (:model, 1, 1, NULL, NULL, :now + :delay) ON CONFLICT (model) DO UPDATE SET open = 1, "
    "failures = g.failures + 1, next_probe_at = MAX(g.next_probe_at, :now + :delay), "
    "probe_instance = CASE WHEN :probe AND g.probe_instance = :me THEN NULL ELSE g.probe_instance END, "
    "probe_started_at = CASE WHEN :probe AND g.probe_instance = :me THEN NULL ELSE g.probe_started_at END "
    "RETURNING CASE WHEN :probe THEN next_probe_at - :now END"
)
_GATE_CLOSED: Final = (
    "UPDATE fleet_gates SET open = 0, failures = 0, probe_instance = NULL, probe_started_at = NULL "
    "WHERE model = :model AND open RETURNING 0.0"
)
_GATE_RELEASED: Final = (
    "UPDATE fleet_gates SET probe_instance = NULL, probe_started_at = NULL "
    "WHERE model = :model AND probe_instance = :me RETURNING MAX(next_probe_at - :now, 0)"
)
_FAST_COOLDOWN: Final = "SELECT :delay"
_PRUNE: Final = "DELETE FROM fleet_events WHERE at < ?"
_CLAIMED: Final = msgspec.json.Decoder(Claimed)
_GATE_NEWS: Final = msgspec.json.Decoder(GateNews)


@final
class SqliteFleet:
    """Takeover and gates across the workers on one SQLite file (module docstring)."""

    def __init__(self, path: str, instance_id: str) -> None:
        self._path = path
        self.instance_id = instance_id
        self._db: sqlite3.Connection | None = None
        self._read_db: sqlite3.Connection | None = None
        self._holders: dict[str, set[Holder]] = {}
        self._limiter = trio.CapacityLimiter(1)
        self._seen = 0
        self.notifications = 0
        self.on_gate: Callable[[GateNews], None] | None = None
        self._gate_send, self._gate_receive = trio.open_memory_channel[tuple[str, str, dict[str, object]]](GATE_OUTBOX)

    async def run(self, *, task_status: trio.TaskStatus[SqliteFleet] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled. Startable. Raises ``ConfigError`` when the file cannot be used."""
        try:
            await trio.to_thread.run_sync(self._open)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot share the cost ledger {self._path!r} among workers: {exc}") from exc
        log.info("instance %s: session takeover and overload gates shared through %s", self.instance_id, self._path)
        task_status.started(self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_gates)
                await self._poll_forever()
        finally:
            for db in (self._read_db, self._db):
                if db is not None:
                    db.close()

    def _open(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # The events are coordination: one lost to a power cut is harmless (its connections
        # are gone too), so no fsync per claim (the ledger's own setting: cost_store).
        db.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
        db.executescript(FLEET_SCHEMA)
        self._seen = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM fleet_events").fetchone()[0])
        self._db = db
        self._read_db = self._reader()

    async def _poll_forever(self) -> None:
        pruned = trio.current_time()
        assert self._read_db is not None
        while True:
            await trio.sleep(POLL)
            if trio.current_time() - pruned >= KEEP_EVENTS / 6:
                pruned = trio.current_time()
                with contextlib.suppress(trio.WouldBlock):
                    self._gate_send.send_nowait(("", _PRUNE, {}))
            try:
                rows = self._poll(self._read_db)
            except sqlite3.OperationalError as exc:
                # SQLITE_BUSY (a WAL recovery under way): the next poll reads it all.
                log.debug("the fleet's events cannot be read now: %s", exc)
                continue
            for event_id, channel, payload in rows:
                self._deliver(event_id, channel, payload)

    def _reader(self) -> sqlite3.Connection:
        """The poll's connection: read-only, never waiting (``busy_timeout`` 0), so the poll
        runs on the event loop's thread: in WAL a reader never waits for the writer, and an
        indexed read of the few new rows takes microseconds, less than a hop to a thread."""
        uri = pathlib.Path(self._path).resolve().as_uri() + "?mode=ro"
        reader = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        reader.execute("PRAGMA busy_timeout = 0")
        return reader

    def _poll(self, reader: sqlite3.Connection) -> list[tuple[int, str, str]]:
        rows = reader.execute(
            "SELECT id, channel, payload FROM fleet_events WHERE id > ? ORDER BY id LIMIT ?", (self._seen, MAX_EVENTS)
        ).fetchall()
        if rows:
            self._seen = int(rows[-1][0])
        return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]

    def _deliver(self, event_id: int, channel: str, payload: str) -> None:
        """One event of another worker: supersede older local holders, or tell the local gates."""
        try:
            if channel == GATES:
                news = _GATE_NEWS.decode(payload)
                if news.instance_id != self.instance_id and self.on_gate is not None:
                    self.on_gate(news)
                return
            claimed = msgspec.structs.replace(_CLAIMED.decode(payload), epoch=event_id)
        except msgspec.DecodeError:
            log.warning("a malformed fleet event on %s ignored", channel)
            return
        if claimed.instance_id == self.instance_id:
            return
        self.notifications += 1
        deliver_claim(self._holders, claimed)

    async def claim(self, session_id: str, on_taken: Callable[[], None]) -> Holder:
        """As ``Fleet.claim``: the claim is an event row; its id is the epoch."""
        holder = Holder(session_id, on_taken)
        self._holders.setdefault(session_id, set()).add(holder)
        payload = json.dumps({"session_id": session_id, "instance_id": self.instance_id, "epoch": 0})
        epoch: int | None = None
        try:
            with trio.move_on_after(CLAIM_TIMEOUT):
                epoch = await self._run(self._insert_event, SESSIONS, payload)
        except sqlite3.Error as exc:
            log.warning("session %s: the claim across workers failed (%s); served here alone", session_id, exc)
            return holder
        if epoch is None:
            log.warning("session %s: the claim across workers took over %.0f s; served here alone", session_id, CLAIM_TIMEOUT)
            return holder
        holder.epoch = epoch
        if holder.newest_seen > epoch:
            holder.take()
        return holder

    def release(self, holder: Holder) -> None:
        forget_holder(self._holders, holder)

    def _insert_event(self, channel: str, payload: str) -> int:
        db = self._connection()
        with db:
            db.execute("BEGIN IMMEDIATE")
            return self._event(db, channel, payload)

    @staticmethod
    def _event(db: sqlite3.Connection, channel: str, payload: str) -> int:
        row = db.execute(
            "INSERT INTO fleet_events (channel, payload, at) VALUES (?, ?, ?) RETURNING id", (channel, payload, time.time())
        ).fetchone()
        return int(row[0])

    async def take_probe(self, model: str) -> float | None:
        """As ``Fleet.take_probe``."""
        params: dict[str, object] = {"model": model, "me": self.instance_id, "stale": PROBE_STALE}
        try:
            with trio.move_on_after(CLAIM_TIMEOUT):
                return await self._run(self._take_probe, params)
        except sqlite3.Error as exc:
            log.warning("the fleet's gate of %s cannot be read (%s); the local gate decides", model, exc)
        return None

    def _take_probe(self, params: dict[str, object]) -> float | None:
        db = self._connection()
        params = {**params, "now": time.time()}
        with db:
            db.execute("BEGIN IMMEDIATE")
            if db.execute(_TAKE_PROBE, params).fetchone() is not None:
                return None
            row = db.execute(_GATE_WAIT, params).fetchone()
        if row is None:
            return None
        remote_probe, delay = bool(row[0]), float(row[1])
        return max(delay, REMOTE_RECHECK if remote_probe else 0.0)

    def tell_overloaded(self, model: str, delay: float, *, probe: bool) -> None:
        self._tell("failed", _GATE_OVERLOADED, {"model": model, "delay": delay, "probe": probe})

    def tell_closed(self, model: str) -> None:
        self._tell("closed", _GATE_CLOSED, {"model": model})

    def tell_released(self, model: str) -> None:
        self._tell("released", _GATE_RELEASED, {"model": model})

    def tell_fast_cooldown(self, model: str, seconds: float) -> None:
        self._tell("cooling", _FAST_COOLDOWN, {"model": model, "delay": seconds})

    def _tell(self, state: str, statement: str, params: dict[str, object]) -> None:
        try:
            self._gate_send.send_nowait((state, statement, {**params, "me": self.instance_id}))
        except trio.WouldBlock:
            log.warning("the fleet's gate of %s lags: a change was dropped", params["model"])

    async def _write_gates(self) -> None:
        """Write the gate changes in order; a failure is logged."""
        async for state, statement, params in self._gate_receive:
            try:
                await self._run(self._change_gate, state, statement, params)
            except sqlite3.Error as exc:
                log.warning("the fleet's gate of %s was not updated: %s", params.get("model", "(pruning)"), exc)

    def _change_gate(self, state: str, statement: str, params: dict[str, object]) -> None:
        """One gate change and, when it says so (a row with a delay), its event; or the
        old events deleted (``_PRUNE``)."""
        db = self._connection()
        if statement == _PRUNE:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(_PRUNE, (time.time() - KEEP_EVENTS,))
            return
        used = {key: value for key, value in {**params, "now": time.time()}.items() if f":{key}" in statement}
        with db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(statement, used).fetchone()
            if row is not None and row[0] is not None:
                news = {"model": params["model"], "instance_id": self.instance_id, "state": state, "delay": float(row[0])}
                self._event(db, GATES, json.dumps(news))

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.OperationalError("the fleet is not open")
        return self._db

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter, abandon_on_cancel=True)
