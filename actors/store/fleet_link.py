"""What the doors and the retry state ask of a fleet of gateway processes sharing one ledger
(README.md "Deployment"), whichever carries it: ``actors.store.pg_fleet.Fleet`` (PostgreSQL
LISTEN/NOTIFY) or ``actors.store.sqlite_fleet.SqliteFleet`` (the SQLite file of ``serve
--workers N``, polled). Also the pieces both share: the claim's ``Holder``, the payloads,
and how a claim or gate change seen from another instance is applied (``deliver_claim``).

Pure data and one rule: no I/O, no psycopg (an optional extra), so the SQLite fleet runs
without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec

log = logging.getLogger("switchboard.fleet")


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    """A claim notification's payload."""

    session_id: str
    instance_id: str
    epoch: int


class GateNews(msgspec.Struct, frozen=True, kw_only=True):
    """A gate notification's payload: another instance's gate ``closed`` (its probe got
    its answer), its probe ``failed`` (the next probe is due in ``delay`` seconds) or was
    ``released`` (ended otherwise); or the model's fast mode ``cooling`` for ``delay``
    seconds (a cooldown is shared by every session: ``actors.supervisor.shared``)."""

    model: str
    instance_id: str
    state: Literal["closed", "failed", "released", "cooling"]
    delay: float


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


def deliver_claim(holders: dict[str, set[Holder]], claimed: Claimed) -> None:
    """Another instance claimed ``claimed.session_id``: supersede the local holders of an
    older epoch; one whose own claim is still under way remembers the newest epoch seen
    (the claim compares it once its epoch is known)."""
    for holder in list(holders.get(claimed.session_id, ())):
        if holder.epoch is None:
            holder.newest_seen = max(holder.newest_seen, claimed.epoch)
        elif holder.epoch < claimed.epoch:
            log.info("session %s taken over by instance %s", claimed.session_id, claimed.instance_id)
            holder.take()


def forget_holder(holders: dict[str, set[Holder]], holder: Holder) -> None:
    """``holder``'s connection has ended: it no longer hears of claims on its session."""
    same = holders.get(holder.session_id)
    if same is not None:
        same.discard(holder)
        if not same:
            del holders[holder.session_id]


class FleetLink(Protocol):
    """Session takeover and shared overload gates across the processes on one ledger."""

    instance_id: str
    on_gate: Callable[[GateNews], None] | None

    async def claim(self, session_id: str, on_taken: Callable[[], None]) -> Holder:
        """Claim a session for a local connection (``on_taken``: a newer claim elsewhere)."""
        ...

    def release(self, holder: Holder) -> None:
        """The connection of ``holder`` ended."""

    async def take_probe(self, model: str) -> float | None:
        """None: this instance holds the fleet's probe of ``model``; else seconds to wait."""
        ...

    def tell_overloaded(self, model: str, delay: float, *, probe: bool) -> None:
        """An attempt on ``model`` got an overload; the next probe is due in ``delay`` s."""

    def tell_closed(self, model: str) -> None:
        """The model answered again: close the fleet's gate."""

    def tell_released(self, model: str) -> None:
        """This instance's probe ended without a verdict."""

    def tell_fast_cooldown(self, model: str, seconds: float) -> None:
        """The model's fast mode cools down for ``seconds`` from now."""
