"""Retry policy, circuit breaker and the per-record verdict: pure, time and dice as inputs."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmg.server.forwarding.policy import (
    TRANSITIONS,
    BreakerEvent,
    BreakerState,
    CircuitBreaker,
    Health,
    RetryPolicy,
    judge_answer,
    judge_warnings_answer,
)


def fixed(value: float):
    return lambda: value


# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_with_half_of_it_jittered_and_stops_at_the_cap():
    policy = RetryPolicy(base_ms=1_000, cap_ms=30_000)
    lows = [policy.delay_ms(n, fixed(0.0)) for n in range(1, 10)]
    highs = [policy.delay_ms(n, fixed(0.999999)) for n in range(1, 10)]
    assert lows == [500, 1_000, 2_000, 4_000, 8_000, 15_000, 15_000, 15_000, 15_000]
    assert highs == [999, 1_999, 3_999, 7_999, 15_999, 29_999, 29_999, 29_999, 29_999]


@given(attempt=st.integers(min_value=-5, max_value=10_000), r=st.floats(min_value=0, max_value=0.999999))
def test_backoff_is_always_within_half_the_ceiling_and_the_ceiling(attempt, r):
    policy = RetryPolicy(base_ms=1_000, cap_ms=30_000)
    delay = policy.delay_ms(attempt, fixed(r))
    ceiling = min(30_000, 1_000 * 2 ** (max(attempt, 1) - 1))
    assert ceiling // 2 <= delay <= ceiling


def test_retry_after_wins_when_it_is_later_than_the_backoff():
    policy = RetryPolicy(base_ms=1_000, cap_ms=30_000)
    assert policy.next_attempt_at_ms(1, 10_000, fixed(0.0), retry_after_ms=5_000) == 15_000
    assert policy.next_attempt_at_ms(1, 10_000, fixed(0.0), retry_after_ms=100) == 10_500
    assert policy.next_attempt_at_ms(3, 10_000, fixed(0.5)) == 13_000


def test_the_jitter_comes_from_the_random_source_given():
    policy = RetryPolicy()
    draws = iter([0.1, 0.9])
    first, second = (policy.delay_ms(4, lambda: next(draws)) for _ in range(2))
    assert first != second


def test_nonsense_policies_are_refused():
    with pytest.raises(ValueError):
        RetryPolicy(base_ms=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_ms=5_000, cap_ms=1_000)


# --------------------------------------------------------------------------- breaker


def test_breaker_opens_after_the_threshold_and_lets_one_probe_through_at_the_probe_time():
    breaker = CircuitBreaker(failure_threshold=3, open_ms=1_000, max_open_ms=4_000)
    for t in range(2):
        breaker.record_failure(t)
        assert breaker.allow(t)
    breaker.record_failure(10)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(500) and breaker.next_allowed_at_ms(500) == 1_010
    assert breaker.allow(1_010)  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(1_011)  # only one
    breaker.record_failure(1_100)  # the probe failed: twice as long
    assert breaker.state is BreakerState.OPEN and breaker.probe_at_ms == 3_100
    assert breaker.allow(3_100)
    breaker.record_failure(3_200)
    assert breaker.probe_at_ms == 7_200  # 4 s: the cap
    assert breaker.allow(7_200)
    breaker.record_failure(7_300)
    assert breaker.probe_at_ms == 11_300  # stays at the cap
    assert breaker.allow(11_300)
    breaker.record_success(11_400)
    assert breaker.state is BreakerState.CLOSED and breaker.allow(11_401)
    for t in range(2):  # the streak starts again from zero
        breaker.record_failure(12_000 + t)
    assert breaker.state is BreakerState.CLOSED


def test_a_success_between_failures_resets_the_count():
    breaker = CircuitBreaker(failure_threshold=3)
    for outcome in "FFSFF":
        (breaker.record_failure if outcome == "F" else breaker.record_success)(0)
    assert breaker.state is BreakerState.CLOSED


def test_a_neutral_answer_releases_the_probe():
    breaker = CircuitBreaker(failure_threshold=1, open_ms=100)
    breaker.record_failure(0)
    assert breaker.allow(100) and not breaker.allow(101)
    breaker.record_neutral(150)  # a 429: says nothing about health
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow(151)


def test_every_table_entry_is_a_state_and_every_pair_is_handled():
    for state, event in itertools.product(BreakerState, BreakerEvent):
        if (state, event) in TRANSITIONS:
            assert isinstance(TRANSITIONS[(state, event)], BreakerState)
    assert (BreakerState.CLOSED, BreakerEvent.TIMER) not in TRANSITIONS  # no timer runs while closed


@given(st.lists(st.tuples(st.sampled_from(["allow", "success", "failure", "neutral"]),
                          st.integers(min_value=0, max_value=3_000)), max_size=60))
def test_breaker_invariants_over_any_sequence(steps):
    breaker = CircuitBreaker(failure_threshold=3, open_ms=500, max_open_ms=4_000)
    now = 0
    probes_granted = 0
    for action, advance in steps:
        now += advance
        if action == "allow":
            was_open_early = breaker.state is BreakerState.OPEN and now < breaker.probe_at_ms
            granted = breaker.allow(now)
            if was_open_early:
                assert not granted  # never sends while open before the probe time
            if granted and breaker.state is BreakerState.HALF_OPEN:
                probes_granted += 1
                assert not breaker.allow(now)  # one probe at a time
        elif action == "success":
            breaker.record_success(now)
            assert breaker.state is BreakerState.CLOSED
        elif action == "failure":
            breaker.record_failure(now)
        else:
            breaker.record_neutral(now)
        assert breaker.current_open_ms <= 4_000
        if breaker.state is BreakerState.OPEN:
            assert breaker.probe_at_ms <= now + 4_000


# --------------------------------------------------------------------------- verdicts

IDS = ("A:1", "A:2", "B:1")


def results(*rows) -> bytes:
    return orjson.dumps({"code": 0, "message": "ok", "results": [
        {"record_id": rid, "result": result, "code": code, "reason": reason} for rid, result, code, reason in rows]})


def test_per_record_results_decide_ack_dead_letter_or_retry():
    body = results(("A:1", "stored", 0, ""), ("A:2", "invalid", 2002, "check digit"))
    verdict = judge_answer(200, body, None, IDS, 0)
    assert verdict.accepted == ("A:1",)
    assert verdict.rejected == {"A:2": "province 2002: check digit"}
    assert verdict.retry == ("B:1",) and "left 1 record" in verdict.error  # missing from the results
    assert verdict.health is Health.UP


def test_duplicates_are_accepted():
    body = results(("A:1", "stored", 0, ""), ("A:2", "duplicate", 1, ""), ("B:1", "duplicate", 1, ""))
    verdict = judge_answer(200, body, None, IDS, 0)
    assert verdict.accepted == IDS and verdict.duplicates == 2


@pytest.mark.parametrize("status, retry_after, health, after_ms", [
    (500, None, Health.DOWN, None),
    (503, "7", Health.DOWN, 7_000),
    (429, "2", Health.NEUTRAL, 2_000),
    (429, None, Health.NEUTRAL, 1_000),  # no header: a second, not a hammering
    (401, None, Health.DOWN, None),
    (403, None, Health.DOWN, None),
    (400, None, Health.DOWN, None),
    (200, None, Health.DOWN, None),  # 200 without the documented shape
])
def test_request_level_answers_retry_every_record_and_never_dead_letter(status, retry_after, health, after_ms):
    body = b'{"code": 1001, "message": "signature does not match"}' if status == 401 else b"<html>oops</html>"
    verdict = judge_answer(status, body, retry_after, IDS, 0)
    assert verdict.retry == IDS and verdict.accepted == () and verdict.rejected == {}
    assert verdict.health is health and verdict.retry_after_ms == after_ms
    if status == 401:
        assert "forward-app-secret" in verdict.error  # says what to do


def test_a_warnings_answer_is_judged_per_version():
    body = orjson.dumps({"code": 0, "results": [
        {"warning_id": 1, "version": 2, "result": "stored", "code": 0},
        {"warning_id": 2, "version": 1, "result": "duplicate", "code": 1, "reason": "a later version is held"},
        {"warning_id": 3, "version": 5, "result": "invalid", "code": 2001, "reason": "history: ..."},
        {"warning_id": 4, "version": 9, "result": "stored", "code": 0}]})  # a version not asked about
    verdict = judge_warnings_answer(200, body, None, [(1, 2), (2, 1), (3, 5), (4, 1)], 0)
    assert verdict.accepted == ("1@2", "2@1") and verdict.duplicates == 1
    assert verdict.rejected == {"3@5": "province 2001: history: ..."}
    assert verdict.retry == ("4@1",) and verdict.health is Health.UP


@pytest.mark.parametrize("status, code, health", [
    (403, 1101, Health.NEUTRAL),  # no `warnings` permission: about this endpoint only, punches go on
    (403, 1102, Health.DOWN),  # the address: nothing gets through
    (401, 1001, Health.DOWN),
    (500, 5000, Health.DOWN),
    (429, 1201, Health.NEUTRAL),
])
def test_a_refused_warnings_request_retries_everything(status, code, health):
    body = orjson.dumps({"code": code, "message": "no"})
    verdict = judge_warnings_answer(status, body, "2" if status == 429 else None, [(1, 1), (2, 3)], 0)
    assert verdict.retry == ("1@1", "2@3") and not verdict.accepted and verdict.health is health
    assert verdict.retry_after_ms == (2000 if status == 429 else None)
