"""Deadline buckets and the authentication lockout guard (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lmg.server.gateway.deadlines import DeadlineWheel


def test_items_come_due_after_their_deadline_never_before():
    wheel = DeadlineWheel(resolution_ms=1000)
    wheel.add("a", 1500)
    wheel.add("b", 2000)
    wheel.add("c", 2001)
    assert wheel.due(1999) == []
    assert sorted(wheel.due(2000)) == ["a", "b"]
    assert wheel.due(2999) == []
    assert wheel.due(3000) == ["c"]
    assert len(wheel) == 0


@given(st.lists(st.integers(0, 100_000), max_size=50), st.lists(st.integers(0, 120_000), max_size=10))
def test_every_item_is_handed_out_exactly_once_and_not_early(deadlines, checks):
    wheel = DeadlineWheel(resolution_ms=1000)
    for i, deadline in enumerate(deadlines):
        wheel.add(i, deadline)
    seen = []
    for now in sorted(checks) + [200_000]:
        for item in wheel.due(now):
            assert deadlines[item] <= now
            seen.append(item)
    assert sorted(seen) == list(range(len(deadlines)))


def test_a_discarded_item_is_not_handed_out_and_not_held():
    wheel = DeadlineWheel(resolution_ms=1000)
    kept, dropped = object(), object()
    bucket = wheel.add(dropped, 5_000)
    wheel.add(kept, 5_000)
    wheel.discard(dropped, bucket)
    wheel.discard(dropped, bucket)  # twice, or after it came due: nothing happens
    assert len(wheel) == 1
    assert wheel.due(5_000) == [kept]
    wheel.discard(kept, bucket)
    assert len(wheel) == 0
