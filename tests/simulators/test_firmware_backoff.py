"""The reconnect schedule (simulators/reconnect.py) as a pure function: docs/protocol.md §5.2 and
§6.8 read off tables, the jitter pinned by `u`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmg.protocol import ResultCode
from lmg.simulators.reconnect import (
    AFTER_REFUSAL,
    LOST,
    BackoffPolicy,
    Ending,
    Rule,
    backoff_s,
    reconnect_wait_s,
)

DOC = BackoffPolicy()  # 1 s doubling, cap 60 s, ±50 %


@pytest.mark.parametrize("failures, base", [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 32), (7, 60), (8, 60),
                                             (1000, 60)])
def test_the_base_doubles_and_the_cap_comes_before_the_jitter(failures, base):
    assert backoff_s(DOC, failures, 0.5) == base  # u = 0.5: no jitter
    assert backoff_s(DOC, failures, 0.0) == base * 0.5
    assert backoff_s(DOC, failures, 0.999999) == pytest.approx(base * 1.5, rel=1e-5)
    # the cap applied before the jitter: after 7 failures at most 90 s, never 60 s x 1.5 x 2
    assert backoff_s(DOC, failures, 0.999999) < 90.0 + 1e-6


def test_a_lost_connection_takes_the_own_back_off():
    assert reconnect_wait_s(DOC, 3, 0.5, LOST) == 4
    assert reconnect_wait_s(DOC, 3, 0.5, Ending(ResultCode.HEARTBEAT_TIMEOUT, 0)) == 4
    assert reconnect_wait_s(DOC, 3, 0.5, Ending(0x7777, 0)) == 4  # an unknown reason: "try later" (§8)


@pytest.mark.parametrize("ending, least, most", [
    (Ending(ResultCode.SHUTTING_DOWN, 5), 5.0, 7.5),  # GOODBYE reconnect_after_s: in full, plus up to 50 %
    (Ending(ResultCode.SERVER_BUSY, 10), 10.0, 15.0),
    (Ending(ResultCode.RATE_LIMITED, 10), 10.0, 15.0),
    (Ending(ResultCode.LOCKED_OUT, 60), 60.0, 90.0),  # AUTH_RESULT retry_after_s
    (Ending(ResultCode.LOCKED_OUT, 3600), 3600.0, 5400.0),
    (Ending(ResultCode.UNKNOWN_DEVICE, 0), 60.0, 90.0),  # §5.2: the maximum interval
    (Ending(ResultCode.BAD_SIGNATURE, 0), 60.0, 90.0),
    (Ending(ResultCode.BAD_SIGNATURE, 120), 120.0, 180.0),  # a longer wait named by the server wins
    (Ending(ResultCode.TAKEOVER, 0), 60.0, 90.0),  # §6.8: back off to the maximum interval
    (Ending(ResultCode.DEVICE_DISABLED, 0), 600.0, 900.0),  # at most every 10 minutes
    (Ending(ResultCode.UNSUPPORTED_VERSION, 0), 3600.0, 5400.0),  # at most hourly
    (Ending(ResultCode.CLOSED_BY_OPERATOR, 0), 0.5, 1.5),  # may reconnect at once: the first step
])
@pytest.mark.parametrize("u", [0.0, 0.25, 0.5, 0.999])
def test_refusals_and_goodbyes_wait_what_the_document_says(ending, least, most, u):
    wait = reconnect_wait_s(DOC, 5, u, ending)  # 5 failures: the own back-off would be 8-24 s
    assert least <= wait <= most


def test_a_server_wait_of_zero_means_the_own_back_off():
    assert reconnect_wait_s(DOC, 2, 0.5, Ending(ResultCode.SERVER_BUSY, 0)) == 2
    assert reconnect_wait_s(DOC, 2, 0.5, Ending(ResultCode.LOCKED_OUT, 0)) == 2


def test_a_named_wait_replaces_the_own_back_off_but_not_a_refusal_s_interval():
    assert reconnect_wait_s(DOC, 7, 0.0, Ending(ResultCode.SHUTTING_DOWN, 5)) == 5  # "instead" (§6.8)
    assert reconnect_wait_s(DOC, 7, 0.0, Ending(ResultCode.BAD_SIGNATURE, 5)) == 60


def test_every_rule_is_reachable_from_the_table():
    assert set(AFTER_REFUSAL.values()) | {Rule.BACKOFF} == set(Rule)


@given(failures=st.integers(1, 10_000), u=st.floats(0.0, 1.0, exclude_max=True),
       code=st.sampled_from([None, *AFTER_REFUSAL, 0x7777]), server_wait=st.integers(0, 0xFFFF),
       base=st.floats(0.01, 10.0), cap_factor=st.floats(1.0, 100.0))
def test_no_draw_waits_less_than_asked_or_more_than_the_ceiling(failures, u, code, server_wait, base, cap_factor):
    policy = BackoffPolicy(base_s=base, cap_s=base * cap_factor)
    ending = LOST if code is None else Ending(code, server_wait)
    wait = reconnect_wait_s(policy, failures, u, ending)
    if code is not None and server_wait:
        assert wait >= server_wait  # a wait the server names is kept in full
    else:
        assert wait >= 0.5 * policy.base_s  # never at once
    ceiling = max(policy.cap_s, policy.disabled_s, policy.unsupported_s, server_wait if code is not None else 0)
    assert wait <= 1.5 * ceiling + 1e-9


@pytest.mark.parametrize("kwargs", [dict(base_s=0), dict(base_s=2, cap_s=1), dict(jitter=1.0), dict(jitter=-0.1),
                                    dict(disabled_s=-1)])
def test_a_policy_that_is_no_back_off_is_refused(kwargs):
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_bad_draws_and_counts_are_refused():
    with pytest.raises(ValueError, match="u must be drawn"):
        backoff_s(DOC, 1, 1.0)
    with pytest.raises(ValueError, match="failures must be at least 1"):
        backoff_s(DOC, 0, 0.5)
