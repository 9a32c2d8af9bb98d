"""The admission rules (protocol/admission.py): FIFO slots with no barging, no leak, and the
retry-after estimate, over any sequence of arrivals, finishes and departures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.admission import (
    DEFAULT_HOLD,
    MAX_RETRY_AFTER,
    MIN_RETRY_AFTER,
    SlotQueue,
    mean_hold,
    retry_after,
)


def test_a_query_over_the_bound_waits_and_gets_the_first_freed_slot() -> None:
    queue: SlotQueue[str] = SlotQueue(2)
    assert queue.arrive("a") == 0
    assert queue.arrive("b") == 0
    assert queue.arrive("c") == 1
    assert queue.arrive("d") == 2
    assert (queue.in_use, queue.waiting) == (2, 2)
    assert queue.finish() == "c"  # the slot passes on: still 2 in use
    assert (queue.in_use, queue.waiting) == (2, 1)
    assert queue.leave("d") and not queue.leave("d")
    assert queue.finish() is None and queue.finish() is None
    assert (queue.in_use, queue.waiting) == (0, 0)
    with pytest.raises(ValueError, match="no slot"):
        queue.finish()


def test_a_newcomer_never_overtakes_a_waiter() -> None:
    queue: SlotQueue[str] = SlotQueue(1)
    assert queue.arrive("a") == 0
    assert queue.arrive("b") == 1
    # While "b" waits, a slot that frees goes to it, never to a later arrival.
    assert queue.finish() == "b"
    assert queue.arrive("c") == 1


def test_no_bound_never_waits() -> None:
    queue: SlotQueue[int] = SlotQueue(0)
    assert all(queue.arrive(key) == 0 for key in range(1000))
    assert (queue.in_use, queue.waiting) == (1000, 0)


# One step: a new query arrives, the n-th holder finishes, or the n-th waiter leaves.
_STEPS = st.lists(
    st.tuples(st.sampled_from(["arrive", "finish", "leave"]), st.integers(min_value=0, max_value=50)),
    max_size=120,
)


@given(limit=st.integers(min_value=0, max_value=5), steps=_STEPS)
def test_slots_stay_within_the_bound_are_granted_in_order_and_never_leak(
    limit: int, steps: list[tuple[str, int]]
) -> None:
    queue: SlotQueue[int] = SlotQueue(limit)
    holders: list[int] = []
    waiters: list[int] = []  # the model of the line: arrival order
    next_key = 0
    for op, n in steps:
        if op == "arrive":
            position = queue.arrive(next_key)
            if position == 0:
                holders.append(next_key)
            else:
                waiters.append(next_key)
                assert position == len(waiters)
            next_key += 1
        elif op == "finish" and holders:
            holders.pop(n % len(holders))
            granted = queue.finish()
            if waiters:
                assert granted == waiters.pop(0)  # FIFO: the longest waiter, always
                holders.append(granted)
            else:
                assert granted is None
        elif op == "leave" and waiters:
            assert queue.leave(waiters.pop(n % len(waiters)))
        assert queue.in_use == len(holders)
        assert queue.waiting == len(waiters)
        if limit:
            assert queue.in_use <= limit
            # Nobody waits while a slot is free.
            assert not waiters or queue.in_use == limit
        else:
            assert not waiters
    # Whatever happened, everything given back leaves nothing in use and nobody waiting.
    assert queue.drop_waiting() == waiters
    for _ in holders:
        assert queue.finish() is None
    assert (queue.in_use, queue.waiting) == (0, 0)


@given(
    position=st.integers(min_value=0, max_value=10_000),
    limit=st.integers(min_value=0, max_value=1000),
    hold=st.none() | st.floats(min_value=0, max_value=1e6),
)
def test_retry_after_is_whole_seconds_within_bounds_and_grows_with_the_position(
    position: int, limit: int, hold: float | None
) -> None:
    seconds = retry_after(position, limit, hold)
    assert MIN_RETRY_AFTER <= seconds <= MAX_RETRY_AFTER
    assert retry_after(position + 1, limit, hold) >= seconds


def test_retry_after_estimates_the_wait_for_the_slots_ahead() -> None:
    # 256 slots each held 10 s free one every ~0.04 s: 100 waiters ahead wait ~4 s.
    assert retry_after(100, 256, 10.0) == 4
    assert retry_after(1, 2, None) == DEFAULT_HOLD / 2
    assert retry_after(10_000, 1, 30.0) == MAX_RETRY_AFTER


def test_mean_hold_starts_at_the_first_sample_and_follows_later_ones() -> None:
    mean = mean_hold(None, 4.0)
    assert mean == 4.0
    for _ in range(200):
        mean = mean_hold(mean, 2.0)
    assert mean == pytest.approx(2.0, abs=1e-3)
    assert mean_hold(None, -1.0) == 0.0
