"""The per-model overload gate: how many sessions' retries share one overloaded model.

Without it, N sessions hitting a 529 on the same model each follow their own backoff, so an
outage draws up to N x 11 attempts, most of them doomed (a retry storm; docs/reference/reference-client.md
1.5 calls each retry "3-10x gateway amplification" in a capacity cascade). The gate is a
circuit breaker with one probe:

- closed (healthy): every attempt goes;
- a 529 (or in-stream overload) on the model opens it;
- open: one attempt at a time goes upstream (the probe), no sooner than ``next_probe_at``;
  every other query that wants the model waits at the gate without spending an attempt;
- the probe succeeds: the gate closes and everyone goes; it fails with overload: the next
  probe is allowed after ``max(the failed query's own retry delay, backoff(failures))``.

A client of the HTTP door that retries on its own (docs/protocol.md 2, "Retries") never waits
for ``next_probe_at`` unless the upstream itself said when to come back (``server_told``):
its own backoff spaces its arrivals, and each arrival while no probe is in flight is the next
probe, so a recovered upstream is seen at the client's next retry.

A single session sees exactly the reference behaviour: its next attempt is due at its own
retry delay, which is either the server's ``retry-after`` (then the gate uses it as is) or
the backoff, never shorter than the gate's backoff for the same count of failures (both
follow ``protocol.retry.backoff``), so the gate never holds it back. Pure: the actor
keeps one ``Gate`` per model and passes the time in.
"""

from __future__ import annotations

import msgspec

from protocol.retry import BASE_DELAY, MAX_DELAY


class Gate(msgspec.Struct, frozen=True, kw_only=True):
    open: bool = False
    failures: int = 0
    probe_in_flight: bool = False
    next_probe_at: float = 0.0
    # ``next_probe_at`` is the upstream's own ``retry-after``, not the gate's backoff.
    server_told: bool = False


CLOSED = Gate()


def gate_backoff(failures: int) -> float:
    """The gate's own spacing between probes, without jitter."""
    return min(BASE_DELAY * 2.0 ** max(failures - 1, 0), MAX_DELAY)


def may_enter(gate: Gate, now: float) -> bool:
    """Whether an attempt may go upstream now."""
    return not gate.open or (not gate.probe_in_flight and now >= gate.next_probe_at)


def enter(gate: Gate) -> Gate:
    """An attempt goes upstream; while the gate is open it is the probe (the caller knows
    it is by ``gate.open``)."""
    return msgspec.structs.replace(gate, probe_in_flight=True) if gate.open else gate


def overloaded(
    gate: Gate, now: float, retry_delay: float, *, was_probe: bool, server_delay: bool = False
) -> Gate:
    """An attempt on the model failed with overload; ``retry_delay`` is its own next wait.

    ``was_probe``: that attempt was the gate's probe (else a probe may still be in flight).
    ``server_delay``: the upstream said when to come back (``retry-after``): that time is
    the next probe's, exactly, as it is the failed query's own.
    """
    failures = gate.failures + 1
    spacing = retry_delay if server_delay else max(retry_delay, gate_backoff(failures))
    return Gate(
        open=True,
        failures=failures,
        probe_in_flight=gate.probe_in_flight and not was_probe,
        next_probe_at=max(gate.next_probe_at, now + spacing),
        server_told=server_delay and now + spacing >= gate.next_probe_at,
    )


def succeeded(gate: Gate) -> Gate:
    """An attempt on the model got an answer: the model is healthy again."""
    return CLOSED


def released(gate: Gate) -> Gate:
    """The probe ended some other way (another error, an abort): free the probe slot."""
    return msgspec.structs.replace(gate, probe_in_flight=False) if gate.open else gate


def client_may_enter(gate: Gate, now: float) -> bool:
    """Whether an attempt of a client that retries on its own may go upstream now: the gate
    is closed, or no probe is in flight and the upstream's own ``retry-after`` (if it gave
    one) has passed."""
    if not gate.open:
        return True
    return not gate.probe_in_flight and (not gate.server_told or now >= gate.next_probe_at)
