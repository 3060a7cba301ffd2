"""The lockout core of console accounts (server/console/lockout.py): pure, time as input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmg.server.console.lockout import CLEAR, LockoutPolicy, LockoutState, failed, succeeded

POLICY = LockoutPolicy(threshold=5, base_ms=60_000, max_ms=3_600_000)


def fail_times(state: LockoutState, times: int, now_ms: int) -> LockoutState:
    for _ in range(times):
        assert not state.locked(now_ms)
        state = failed(state, POLICY, now_ms)
    return state


def test_four_failures_do_not_lock_the_fifth_locks_for_a_minute():
    state = fail_times(CLEAR, 4, 1_000)
    assert state == LockoutState(4, None, 0) and not state.locked(1_000)
    state = failed(state, POLICY, 2_000)
    assert state == LockoutState(0, 62_000, 1)
    assert state.locked(61_999) and not state.locked(62_000)


def test_each_further_lock_doubles_up_to_the_hour():
    state, now, windows = CLEAR, 0, []
    for _ in range(9):
        state = fail_times(state, 5, now)
        windows.append(state.locked_until_ms - now)
        now = state.locked_until_ms  # the lock has run out: the person tries again
    assert windows == [60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000, 3_600_000]


def test_a_success_resets_the_count_and_the_doubling():
    state = fail_times(CLEAR, 5, 0)
    state = fail_times(state, 3, state.locked_until_ms)
    assert (state.failed, state.level) == (3, 1)
    state = succeeded(state)
    assert state == CLEAR
    again = fail_times(state, 5, 10_000_000)
    assert again.locked_until_ms - 10_000_000 == 60_000  # back to the first window


def test_a_bad_policy_is_refused():
    with pytest.raises(ValueError):
        LockoutPolicy(threshold=0, base_ms=60_000, max_ms=3_600_000)
    with pytest.raises(ValueError):
        LockoutPolicy(threshold=5, base_ms=60_000, max_ms=1_000)


@given(st.lists(st.sampled_from(["fail", "ok"]), max_size=60))
def test_never_locked_longer_than_the_maximum_and_never_below_zero(events):
    state, now = CLEAR, 0
    for event in events:
        now += 1_000
        if state.locked(now):
            now = state.locked_until_ms
        state = failed(state, POLICY, now) if event == "fail" else succeeded(state)
        assert 0 <= state.failed < POLICY.threshold
        if state.locked_until_ms is not None and state.locked(now):
            assert 0 < state.locked_until_ms - now <= POLICY.max_ms
