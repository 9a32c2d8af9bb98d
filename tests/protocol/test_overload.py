"""The overload gate: one probe at a time while open, reference timing for one session."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol.overload import (
    CLOSED,
    client_may_enter,
    enter,
    gate_backoff,
    may_enter,
    overloaded,
    released,
    succeeded,
)
from protocol.retry import backoff


def test_closed_gate_lets_everyone_through() -> None:
    assert may_enter(CLOSED, 0.0)
    assert enter(CLOSED) == CLOSED


def test_open_gate_admits_one_probe_after_the_spacing() -> None:
    gate = overloaded(CLOSED, now=100.0, retry_delay=0.55, was_probe=False)
    assert gate.open and gate.next_probe_at == 100.55
    assert not may_enter(gate, 100.5)
    assert may_enter(gate, 100.55)
    probing = enter(gate)
    assert not may_enter(probing, 200.0)
    assert may_enter(released(probing), 200.0)
    assert succeeded(probing) == CLOSED


def test_probe_spacing_grows_with_failures_even_when_the_probes_delays_are_short() -> None:
    gate = CLOSED
    now = 0.0
    for failures in range(1, 9):
        gate = overloaded(enter(gate), now, retry_delay=0.5, was_probe=gate.open)
        assert gate.next_probe_at - now == max(0.5, gate_backoff(failures))
        now = gate.next_probe_at
    assert gate_backoff(8) == 32.0


@given(rands=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=12))
def test_a_single_query_is_never_held_back(rands: list[float]) -> None:
    """One query alone: its attempt n+1 is due at its own backoff, and the gate agrees."""
    gate = CLOSED
    now = 0.0
    for attempt, rand in enumerate(rands, start=1):
        assert may_enter(gate, now)
        probe = gate.open
        gate = enter(gate)
        delay = backoff(attempt, rand)
        gate = overloaded(gate, now, delay, was_probe=probe)
        now += delay
    assert may_enter(gate, now)


def test_a_late_failure_of_a_non_probe_attempt_keeps_the_probe_slot_taken() -> None:
    gate = enter(overloaded(CLOSED, now=0.0, retry_delay=1.0, was_probe=False))
    assert gate.probe_in_flight
    gate = overloaded(gate, now=0.1, retry_delay=1.0, was_probe=False)
    assert gate.probe_in_flight and gate.failures == 2


def test_a_server_given_retry_after_is_the_next_probe_time_exactly() -> None:
    gate = overloaded(CLOSED, now=10.0, retry_delay=0.0, was_probe=False, server_delay=True)
    assert gate.next_probe_at == 10.0 and may_enter(gate, 10.0)
    spaced = overloaded(CLOSED, now=10.0, retry_delay=0.0, was_probe=False)
    assert spaced.next_probe_at == 10.5


@given(
    failures=st.lists(
        st.tuples(
            st.floats(0, 30),  # how long after the previous failure this one comes
            st.floats(0, 60),  # that attempt's own retry delay
            st.booleans(),  # it was the probe
            st.booleans(),  # the upstream said when to come back
        ),
        min_size=1,
        max_size=10,
    )
)
def test_a_late_failure_never_moves_the_next_probe_earlier(
    failures: list[tuple[float, float, bool, bool]],
) -> None:
    """Failures land in any order with any delay (a probe's failure late, after a long
    ``retry-after`` of another attempt): the next probe never comes sooner than already set."""
    gate = CLOSED
    now = 0.0
    for later, delay, was_probe, told in failures:
        now += later
        before = gate.next_probe_at
        gate = overloaded(gate, now, delay, was_probe=was_probe, server_delay=told)
        assert gate.next_probe_at >= before
        assert gate.next_probe_at >= now + (delay if told else max(delay, gate_backoff(gate.failures)))


def test_a_late_probe_failure_with_a_short_retry_after_keeps_the_later_probe_time() -> None:
    gate = overloaded(CLOSED, now=0.0, retry_delay=30.0, was_probe=False, server_delay=True)
    probing = enter(gate)
    late = overloaded(probing, now=1.0, retry_delay=0.5, was_probe=True, server_delay=True)
    assert late.next_probe_at == 30.0
    assert not may_enter(late, 29.9) and may_enter(late, 30.0)


def test_the_gates_own_spacing_doubles_from_half_a_second_up_to_32() -> None:
    assert [gate_backoff(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0]


def test_a_client_that_retries_on_its_own_waits_only_for_the_servers_retry_after() -> None:
    assert client_may_enter(CLOSED, 0.0)
    spaced = overloaded(CLOSED, now=10.0, retry_delay=5.0, was_probe=False)
    assert not spaced.server_told and client_may_enter(spaced, 10.0)  # its own backoff spaces it
    assert not client_may_enter(enter(spaced), 20.0)  # a probe is in flight
    told = overloaded(CLOSED, now=10.0, retry_delay=5.0, was_probe=False, server_delay=True)
    assert told.server_told
    assert not client_may_enter(told, 14.9) and client_may_enter(told, 15.0)


def test_the_server_told_time_stays_told_only_while_it_is_the_latest() -> None:
    told = overloaded(CLOSED, now=10.0, retry_delay=5.0, was_probe=False, server_delay=True)
    again = overloaded(told, now=12.0, retry_delay=3.0, was_probe=False, server_delay=True)
    assert again.server_told and again.next_probe_at == 15.0  # the same time, told again
    shorter = overloaded(told, now=12.0, retry_delay=1.0, was_probe=False, server_delay=True)
    assert not shorter.server_told and shorter.next_probe_at == 15.0
