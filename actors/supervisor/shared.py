"""State the RetrySupervisor shares across queries: overload gates and fast-mode cooldowns.

Owned by the RetrySupervisor's task tree alone (its query tasks run in its nursery), so no
lock is needed: every change happens between checkpoints.

- One ``protocol.overload.Gate`` per model: a query waits at ``wait_turn`` while the model's
  gate is open and another query holds the probe; each gate change wakes the waiters. A
  query whose client retries on its own takes ``client_turn`` instead: it waits only for the
  verdict of a probe in flight, and is ``Refused`` when that probe failed (or before the
  upstream's own ``retry-after``). A probe's ``200`` closes the gate at once (``accepted``),
  not at the end of its stream.
- With a PostgreSQL ledger (``fleet``, ``actors.store.pg_fleet``) the gates are shared by every
  instance on it (README.md "Deployment"): one probe per model for the whole fleet. The
  local gate still decides alone while it is closed (the healthy path costs nothing);
  when it says a probe may go, the fleet's gate is asked (``Fleet.take_probe``: one
  conditional statement) and may hold the query back while another instance probes or
  until its next probe is due. This instance's gate changes are written to the fleet's
  (in the background), and another instance's (its gate closed, its probe failed or was
  released) arrive as notifications and wake the waiters here at once.
- Fast mode: a cooldown per model (docs/reference/reference-client.md 1.6: "shared by every session for
  that model"; with a fleet, announced to the other instances by notification), and a gateway-wide off switch once the API refused fast mode for good.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import msgspec
import trio

from actors.messages.relay import AttemptOutcome
from actors.observe.metrics import Metrics
from protocol import overload
from protocol.overload import CLOSED, Gate
from protocol.retry import GiveUp, Retry, SwitchModel, is_overloaded, retry_after_seconds

if TYPE_CHECKING:
    from actors.store.fleet_link import FleetLink, GateNews

# The least a query waits before asking the fleet's gate again (a due probe that another
# instance just took): no busy loop on the database.
MIN_FLEET_WAIT: Final = 0.1


class Refused(msgspec.Struct, frozen=True, kw_only=True):
    """The gate answers for the upstream: a 529 now. ``retry_after``: seconds until the
    upstream's own ``retry-after`` ends, or None (the client's own backoff applies)."""

    retry_after: float | None


class SharedRetryState:
    """Per-model gates and fast-mode state, shared by a supervisor's queries."""

    def __init__(
        self, *, fast_mode_disabled: bool = False, metrics: Metrics | None = None, fleet: FleetLink | None = None
    ) -> None:
        self._metrics = metrics
        self._fleet = fleet
        if fleet is not None:
            fleet.on_gate = self._gate_news
        self._gates: dict[str, Gate] = {}
        self._changed: dict[str, trio.Event] = {}
        self._fast_cooldown: dict[str, float] = {}
        self.fast_mode_disabled = fast_mode_disabled
        # Wall-clock time derived from trio's clock, so that a MockClock drives cooldowns
        # and rate-limit resets in tests exactly as it drives sleeps.
        self._epoch_at_start = time.time() - trio.current_time()

    def wall_now(self) -> float:
        """Epoch seconds, advancing with trio's clock."""
        return self._epoch_at_start + trio.current_time()

    # --- overload gates -------------------------------------------------------------------

    def gate(self, model: str) -> Gate:
        return self._gates.get(model, CLOSED)

    def _set(self, model: str, gate: Gate) -> None:
        if self._metrics is not None and gate.open != self.gate(model).open:
            self._metrics.overloaded(model, gate.open)
        if gate == CLOSED:
            self._gates.pop(model, None)
        else:
            self._gates[model] = gate
        event = self._changed.pop(model, None)
        if event is not None:
            event.set()

    async def client_turn(self, model: str, max_wait: float) -> bool | Refused:
        """The turn of an attempt whose client retries on its own (docs/protocol.md 2): True
        when it goes as the gate's probe (report how it went), False when the gate is closed,
        ``Refused`` when the gate answers for the upstream. Waits only while a probe is in
        flight, for its verdict, at most ``max_wait`` seconds (then ``Refused``). A
        checkpoint only when it waits."""
        deadline = trio.current_time() + max_wait
        seen: int | None = None  # the gate's failures when this began waiting on a probe
        while True:
            gate = self.gate(model)
            now = trio.current_time()
            if seen is not None and gate.open and not gate.probe_in_flight and gate.failures > seen:
                # The probe it waited for failed: the upstream's answer is this one's too.
                return Refused(retry_after=gate.next_probe_at - now if gate.server_told else None)
            if overload.client_may_enter(gate, now):
                if gate.open:
                    self._set(model, overload.enter(gate))
                    if self._fleet is not None and not await self._fleet_probe(model):
                        return Refused(retry_after=None)
                return gate.open
            if not gate.probe_in_flight:
                return Refused(retry_after=gate.next_probe_at - now)
            if now >= deadline:
                return Refused(retry_after=0.0)
            seen = gate.failures if seen is None else seen
            event = self._changed.setdefault(model, trio.Event())
            with trio.move_on_at(deadline):
                await event.wait()

    def accepted(self, model: str) -> None:
        """A probe got its ``200``: the model is healthy again, everyone may go. Not a
        checkpoint (the StreamRelay calls it as the response begins)."""
        if self.gate(model).open:
            self._set(model, overload.succeeded(self.gate(model)))
            if self._fleet is not None:
                self._fleet.tell_closed(model)

    async def wait_turn(
        self,
        model: str,
        on_wait: Callable[[float], Awaitable[None]],
        beat_interval: float,
        deadline: float = math.inf,
    ) -> bool | None:
        """Wait until an attempt on ``model`` may go upstream, then take the turn. Returns
        True when the caller is the gate's probe (and must report how it went), None when
        ``deadline`` (trio time) came first: no turn was taken.

        ``on_wait(remaining)`` is awaited every ``beat_interval`` of waiting (the caller sends
        a heartbeat). A checkpoint only when the gate holds the caller back.
        """
        next_beat = trio.current_time() + beat_interval
        while True:
            gate = self.gate(model)
            now = trio.current_time()
            if overload.may_enter(gate, now):
                if gate.open:
                    self._set(model, overload.enter(gate))
                    if self._fleet is not None and not await self._fleet_probe(model):
                        continue
                return gate.open
            if now >= deadline:
                return None
            wake_at = math.inf if gate.probe_in_flight else gate.next_probe_at
            event = self._changed.setdefault(model, trio.Event())
            with trio.move_on_at(min(wake_at, next_beat, deadline)):
                await event.wait()
            now = trio.current_time()
            # Compared with the same expression that set the deadline: no float drift, so a
            # deadline that fired always counts as the beat it was for.
            if now >= next_beat:
                next_beat = now + beat_interval
                await on_wait(0.0 if math.isinf(wake_at) else max(wake_at - now, 0.0))

    async def _fleet_probe(self, model: str) -> bool:
        """This instance holds the local probe of ``model``: ask the fleet's gate for its
        probe. False: another instance probes, or the next probe is not due; the local
        probe slot is freed and the local gate waits as long as the fleet's says."""
        assert self._fleet is not None
        try:
            wait = await self._fleet.take_probe(model)
        except BaseException:
            # Cancelled while asking: the probe may be ours in the fleet; give it back.
            self._set(model, overload.released(self.gate(model)))
            self._fleet.tell_released(model)
            raise
        if wait is None:
            return True
        gate = self.gate(model)
        if gate.open:
            next_at = max(gate.next_probe_at, trio.current_time() + max(wait, MIN_FLEET_WAIT))
            self._set(model, msgspec.structs.replace(gate, probe_in_flight=False, next_probe_at=next_at))
        return False

    def _gate_news(self, news: GateNews) -> None:
        """Another instance's gate change (``Fleet.on_gate``): its probe got an answer (the
        gate closes here too), failed or was released (the next probe is due in
        ``news.delay`` s). Only an open local gate listens; a local probe in flight decides
        for itself. Or its fast mode cools down: here too, as if this instance had seen it."""
        if news.state == "cooling":
            self._fast_cooldown[news.model] = max(
                self.wall_now() + news.delay, self._fast_cooldown.get(news.model, 0.0)
            )
            return
        gate = self.gate(news.model)
        if not gate.open:
            return
        if news.state == "closed":
            self._set(news.model, overload.succeeded(gate))
        elif not gate.probe_in_flight:
            next_at = trio.current_time() + max(news.delay, 0.0)
            self._set(news.model, msgspec.structs.replace(gate, next_probe_at=next_at))

    def report(
        self,
        model: str,
        *,
        probe: bool,
        outcome: AttemptOutcome | None,
        decision: Retry | SwitchModel | GiveUp | None,
    ) -> None:
        """Tell the model's gate how an attempt ended. ``outcome`` None: it was cancelled."""
        gate = self.gate(model)
        fleet = self._fleet
        if outcome is not None and outcome.failure is None and outcome.message is not None:
            self._set(model, overload.succeeded(gate))
            if fleet is not None and gate.open:
                fleet.tell_closed(model)
        elif outcome is not None and outcome.failure is not None and is_overloaded(outcome.failure):
            told_delay = retry_after_seconds(outcome.failure, self.wall_now())
            told = told_delay is not None
            # A query that does not retry (it gave up, or its client retries on its own): the
            # server's wait, or the gate's own backoff, spaces the next probe.
            delay = decision.delay if isinstance(decision, Retry) else (told_delay or 0.0)
            now = trio.current_time()
            opened = overload.overloaded(gate, now, delay, was_probe=probe, server_delay=told)
            self._set(model, opened)
            if fleet is not None:
                fleet.tell_overloaded(model, max(opened.next_probe_at - now, 0.0), probe=probe)
        elif probe and gate.probe_in_flight:
            self._set(model, overload.released(gate))
            if fleet is not None:
                fleet.tell_released(model)

    # --- fast mode ------------------------------------------------------------------------

    def fast_cooldown_until(self, model: str) -> float | None:
        """The epoch time the model's fast-mode cooldown ends, or None when not cooling."""
        until = self._fast_cooldown.get(model)
        if until is None:
            return None
        if self.wall_now() >= until:
            # The reference expires cooldowns lazily, on the next check.
            del self._fast_cooldown[model]
            return None
        return until

    def start_fast_cooldown(self, model: str, until: float) -> None:
        self._fast_cooldown[model] = max(until, self._fast_cooldown.get(model, 0.0))
        if self._fleet is not None:
            self._fleet.tell_fast_cooldown(model, max(until - self.wall_now(), 0.0))
