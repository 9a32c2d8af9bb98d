"""The gateway's side of access tokens with limits: who a ledger token is, reserve before a
query, settle after it (docs/protocol.md "Access tokens and budgets"; the arithmetic is
protocol/budget.py, the atomic store calls actors/store/tokens.py).

Not an actor with an inbox: the doors and ``Gateway.start_query`` call it. Every write
(reserve, settle) runs on a worker thread (``trio.to_thread``), one at a time (``_limiter``:
a store's connection serves one thread at a time), so the event loop never waits on the
database; so do PostgreSQL's reads. SQLite's reads (a token's lookup at each request) run
in place on a read connection of their own: in WAL mode a reader never waits for a writer.
Settlements go through a queue to one task (``run``): a query's end never waits for them,
and each is retried (with backoff) until the store takes it, so a reservation is never
left behind while the process lives. Each reservation is also a row of this instance
(``instance_id``) in the store: a process that dies with queries in flight leaves rows,
which are released (settled to what the ledger recorded for their queries) at the next
start on SQLite (one process holds the file), and on PostgreSQL by any live instance once
the dead one has been silent for ``actors.store.tokens.SILENT_AFTER`` (every instance
refreshes ``instances.last_seen_at`` every ``INSTANCE_HEARTBEAT``; docs/protocol.md).

A store failure while authenticating or reserving refuses the query (fail closed: a budget
that cannot be checked is not spent); it is logged, and the query ends with
``ledger_unavailable`` (503).
"""

from __future__ import annotations

import datetime
import hmac
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, TypeVar, final

import msgspec
import trio

from actors.config.instance import new_instance_id
from actors.config.settings import Secret
from actors.observe.metrics import Metrics
from actors.store.rows import STORE_ERRORS
from actors.store.token_rows import TOKEN_PREFIX, Claim, TokenInfo
from actors.store.tokens import TokenStore
from protocol.budget import Limits, Refusal, format_usd, renews_at, roll, worst_case_pico
from protocol.errors import ActorUnavailable
from protocol.frames import TokenBudget
from protocol.identity import Principal
from protocol.pricing import usd

log = logging.getLogger("switchboard.budgets")

T = TypeVar("T")

# Whether the store holds any token is asked again after this long (trio seconds): a
# gateway without ledger tokens asks at most this often, and a token just added is
# required within it.
ACTIVE_CHECK_INTERVAL: Final = 2.0
# How often an instance on a shared (PostgreSQL) ledger says it is alive, in trio seconds;
# one silent for ``actors.store.tokens.SILENT_AFTER`` (six of these) is taken for dead.
INSTANCE_HEARTBEAT: Final = 10.0
# A reservation's id: 16 random bytes, unique across instances.
RESERVATION_ID_BYTES: Final = 16
# Settlements waiting for the store at most: each is a few dozen bytes; past it (a store
# down for long under load) the oldest are kept and new ones logged as lost.
MAX_PENDING_SETTLEMENTS: Final = 100_000
# The settlement retry's backoff: doubling from the first to the last.
SETTLE_RETRY_FIRST: Final = 0.5
SETTLE_RETRY_LAST: Final = 15.0


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    """A query's reservation against the token ``name``; ``claim``: its row in the store."""

    name: str
    reserved_pico: int
    claim: Claim | None = None


@final
class HeldReservation:
    """A running query's reservation: it grows with each top-up (``Budgets.top_up``) and is
    settled once, for all of it, when the query ends (``settle``)."""

    __slots__ = ("_budgets", "claim", "name", "reserved_pico")

    def __init__(self, budgets: Budgets, reservation: Reservation) -> None:
        self._budgets = budgets
        self.name = reservation.name
        self.reserved_pico = reservation.reserved_pico
        self.claim = reservation.claim

    def settle(self, actual_pico: int) -> None:
        """Settle everything reserved to ``actual_pico`` (queued). Not a checkpoint."""
        self._budgets.settle_soon(
            Reservation(name=self.name, reserved_pico=self.reserved_pico, claim=self.claim), actual_pico
        )


def budget_view(info: TokenInfo, now: datetime.datetime) -> TokenBudget | None:
    """``info``'s budget as of ``now``; None when it has none."""
    limits, account = info.limits, info.account
    if limits.budget_pico is None:
        return None
    account = roll(account, limits, now)
    remaining = max(0, limits.budget_pico - account.spent_pico - account.reserved_pico)
    renewal = renews_at(limits.period, now)
    return TokenBudget(
        name=info.name,
        limit_usd=float(format_usd(limits.budget_pico)),
        period=limits.period,
        spent_usd=float(format_usd(account.spent_pico)),
        reserved_usd=float(format_usd(account.reserved_pico)),
        remaining_usd=float(format_usd(remaining)),
        renews_at=None if renewal is None else renewal.isoformat(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@final
class Budgets:
    """Ledger tokens and their budgets for one gateway process."""

    def __init__(
        self, store: TokenStore, *, offload: bool = True, metrics: Metrics | None = None, instance_id: str = ""
    ) -> None:
        self._store = store
        self._instance_id = instance_id or new_instance_id()
        self._metrics = metrics
        # An in-memory store is called in place, as the CostLedger calls its own: nothing
        # to wait for, and a MockClock's autojump must not run while a thread works.
        self._offload = offload
        self._limiter = trio.CapacityLimiter(1)
        self._settle_send, self._settle_receive = trio.open_memory_channel[tuple[Reservation, int]](
            MAX_PENDING_SETTLEMENTS
        )
        # Settlements queued or running, and an event set whenever none is (``settled``).
        self._pending = 0
        self._idle = trio.Event()
        self._idle.set()
        self._active: bool | None = None
        self._active_at = -math.inf

    async def _read(self, fn: Callable[[], T]) -> T:
        """A read: in place when the store's reads never wait (SQLite), else as ``_call``."""
        if self._store.reads_in_place:
            await trio.lowlevel.checkpoint()
            return fn()
        return await self._call(fn)

    async def _call(self, fn: Callable[[], T]) -> T:
        if not self._offload:
            await trio.lowlevel.checkpoint()
            return fn()
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def lookup(self, token: str) -> TokenInfo | None:
        """The ledger token ``token`` is (only ``sb-`` tokens are looked up). A store failure
        counts as no token (logged)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        try:
            return await self._read(lambda: self._store.lookup(token))
        except STORE_ERRORS as exc:
            log.error("access tokens cannot be read from the ledger: %s", exc)
            return None

    async def required(self) -> bool:
        """Whether the ledger holds tokens, so that the doors require one (re-asked every
        ``ACTIVE_CHECK_INTERVAL``; a store failure: required, fail closed)."""
        now = trio.current_time()
        if self._active is None or now - self._active_at >= ACTIVE_CHECK_INTERVAL:
            try:
                self._active = await self._read(self._store.any_active)
            except STORE_ERRORS as exc:
                log.error("access tokens cannot be read from the ledger: %s", exc)
                return True
            self._active_at = now
        return self._active

    async def reserve(
        self, name: str, request: dict[str, object], request_bytes: int, *, session_id: str = "", query_id: str = ""
    ) -> Reservation | Refusal:
        """Reserve the request's worst case for token ``name``, or the refusal; the store
        keeps it as a row of this instance for the query ``query_id`` of ``session_id``.
        Raises one of ``STORE_ERRORS`` when the store cannot answer."""
        now = _now()
        amount = worst_case_pico(request, request_bytes, on=now.date().isoformat())
        model = request.get("model")
        claim = Claim(
            reservation_id=secrets.token_hex(RESERVATION_ID_BYTES),
            session_id=session_id,
            query_id=query_id,
            instance_id=self._instance_id,
        )
        result = await self._call(
            lambda: self._store.reserve(name, amount, model=model if isinstance(model, str) else "", now=now, claim=claim)
        )
        if result is None:
            return Refusal(kind="revoked", message=f"token {name} was revoked", retry_after_s=None)
        _, refusal = result
        if refusal is not None:
            return refusal
        return Reservation(name=name, reserved_pico=amount, claim=claim)

    async def top_up(self, held: HeldReservation, request: dict[str, object], request_bytes: int) -> Refusal | None:
        """Grow ``held`` by the worst case of another attempt of ``request`` (the same
        formula as ``reserve``), atomically, or the refusal (then ``held`` is unchanged).
        Raises one of ``STORE_ERRORS`` when the store cannot answer."""
        now = _now()
        amount = worst_case_pico(request, request_bytes, on=now.date().isoformat())
        refusal = await self._call(lambda: self._store.top_up(held.name, amount, now, held.claim))
        if refusal is None:
            held.reserved_pico += amount
        return refusal

    def settle_soon(self, reservation: Reservation, actual_pico: int) -> None:
        """Settle ``reservation`` to ``actual_pico`` (queued for ``run``). Not a checkpoint."""
        try:
            self._settle_send.send_nowait((reservation, actual_pico))
            self._pending += 1
            if self._idle.is_set():
                self._idle = trio.Event()
        except trio.WouldBlock:
            log.error("token %s: a settlement was lost (too many waiting)", reservation.name)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            log.error("token %s: a settlement came after the gateway stopped", reservation.name)

    async def sync_subjects(self, subjects: dict[str, Limits]) -> None:
        """Make the users' and groups' limits in the store those of the organisation policy
        (``TokenStore.sync_subjects``). Raises one of ``STORE_ERRORS`` when the store fails."""
        now = _now()
        await self._call(lambda: self._store.sync_subjects(subjects, now))

    async def tokens(self) -> list[TokenInfo]:
        """Every active token (the dashboard). Raises ActorUnavailable when the store fails."""
        try:
            return await self._read(self._store.list)
        except STORE_ERRORS as exc:
            log.error("access tokens cannot be read from the ledger: %s", exc)
            raise ActorUnavailable("the access tokens cannot be read now") from exc

    async def settled(self) -> None:
        """Return once every settlement asked for so far is in the store (tests, shutdown)."""
        while not self._idle.is_set():
            await self._idle.wait()

    @property
    def store(self) -> TokenStore:
        """The store (for ``switchboard``'s own reads; call it from a worker thread)."""
        return self._store

    async def view(self, name: str) -> TokenBudget | None:
        """The budget of the ledger token named ``name`` now, if it has one (a store
        failure: None, logged)."""
        try:
            info = await self._read(lambda: self._store.get(name))
        except STORE_ERRORS as exc:
            log.error("token %s: its budget cannot be read: %s", name, exc)
            return None
        return None if info is None else budget_view(info, _now())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply the settlements as they come, each retried until the store takes it; on
        cancellation, the ones queued are still applied (bounded by the caller's grace)."""
        await self._release_dead()
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                if self._store.shared:
                    nursery.start_soon(self._heartbeat)
                async for reservation, actual in self._settle_receive:
                    await self._settle(reservation, actual)
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()
                nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(SETTLE_RETRY_LAST, shield=True):
                self._settle_send.close()
                async for reservation, actual in self._settle_receive:
                    await self._settle(reservation, actual, retry=False)
            self._store.close()

    async def _release_dead(self) -> None:
        """Release the reservations dead instances left (``TokenStore.release_dead``); a
        store failure is logged (the next heartbeat, or the next start, tries again)."""
        try:
            released = await self._call(lambda: self._store.release_dead(self._instance_id, _now()))
        except STORE_ERRORS as exc:
            log.error("the reservations of stopped gateways cannot be released now: %s", exc)
            return
        if released:
            log.warning("released %d budget reservations of gateways that stopped with queries in flight", released)

    async def _heartbeat(self) -> None:
        """A store shared by instances (PostgreSQL): say this one is alive every
        ``INSTANCE_HEARTBEAT`` seconds, and release what silent ones left."""
        while True:
            await trio.sleep(INSTANCE_HEARTBEAT)
            try:
                await self._call(lambda: self._store.heartbeat(self._instance_id, _now()))
            except STORE_ERRORS as exc:
                log.warning("the gateway's heartbeat cannot be written to the ledger: %s", exc)
            await self._release_dead()

    async def _settle(self, reservation: Reservation, actual: int, *, retry: bool = True) -> None:
        delay = SETTLE_RETRY_FIRST
        while True:
            try:
                await self._call(
                    lambda: self._store.settle(reservation.name, reservation.reserved_pico, actual, _now(), reservation.claim)
                )
                if self._metrics is not None:
                    self._metrics.token_spend(reservation.name, usd(actual))
                return
            except STORE_ERRORS as exc:
                if not retry:
                    log.error("token %s: a settlement was lost: %s", reservation.name, exc)
                    return
                log.warning("token %s: settlement failed, retrying in %g s: %s", reservation.name, delay, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, SETTLE_RETRY_LAST)


class Access(msgspec.Struct, frozen=True, kw_only=True):
    """Who a request is: the token it presented (None: no token needed), and the ledger
    token's name when it is one (its limits apply)."""

    token: str | None
    budget: str | None
    # The signed-in user a gateway-issued bearer token names (issue 19), else None.
    principal: Principal | None = None


# Resolves a presented bearer token to the user it was issued to, or None (not one of ours).
ResolvePrincipal = Callable[[str], Awaitable[Principal | None]]


def presented(headers: Mapping[str, str]) -> list[str]:
    """The tokens a request presents: ``x-api-key``, and a bearer token (the HTTP door's and
    the dashboard's; lower-case header names)."""
    scheme, _, bearer = headers.get("authorization", "").partition(" ")
    found = [headers.get("x-api-key", "")]
    if scheme.lower() == "bearer":
        found.append(bearer.strip())
    return [candidate for candidate in found if candidate]


def among(candidate: str, tokens: tuple[Secret, ...]) -> bool:
    """Whether ``candidate`` is one of ``tokens``, compared in constant time: the one token
    comparison of the gateway."""
    return any(hmac.compare_digest(candidate.encode(), t.reveal().encode()) for t in tokens)


async def authenticate(
    budgets: Budgets | None,
    tokens: tuple[Secret, ...],
    candidates: Sequence[str],
    resolve: ResolvePrincipal | None = None,
) -> Access | None:
    """The access of a request presenting ``candidates``, or None (refused: 401).

    A token of ``SWITCHBOARD_ACCESS_TOKENS`` (``tokens``, no limits), a token ``resolve``
    names a user for, or an active ledger token is accepted; with none of these configured,
    everyone is (the gateway's default)."""
    for candidate in candidates:
        if among(candidate, tokens):
            return Access(token=candidate, budget=None)
    if resolve is not None:
        for candidate in candidates:
            principal = await resolve(candidate)
            if principal is not None:
                return Access(token=candidate, budget=None, principal=principal)
    if budgets is None:
        return None if tokens or resolve is not None else Access(token=None, budget=None)
    for candidate in candidates:
        info = await budgets.lookup(candidate)
        if info is not None:
            return Access(token=candidate, budget=info.name)
    if tokens or resolve is not None or await budgets.required():
        return None
    return Access(token=None, budget=None)
