"""Deadline buckets and the authentication lockout guard (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lmg.server.gateway.deadlines import DeadlineWheel
from lmg.server.gateway.lockout import AuthGuard


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


def test_lockout_grows_and_success_clears_failures():
    guard = AuthGuard(threshold=3, base_ms=1000, max_ms=4000)
    for _ in range(2):
        assert guard.failed("1.2.3.4", "GS-1", 0) == []
    locked = guard.failed("1.2.3.4", "GS-1", 0)
    assert locked == [("addr:1.2.3.4", 1000), ("serial:GS-1", 1000)]
    assert guard.is_locked("1.2.3.4", "other", 999)
    assert guard.is_locked("5.6.7.8", "GS-1", 999)  # the serial is locked from anywhere
    assert not guard.is_locked("1.2.3.4", "GS-1", 1000)
    for _ in range(3):
        locked = guard.failed("1.2.3.4", "GS-1", 1000)
    assert locked[0][1] == 1000 + 2000  # the second lockout is twice as long
    for _ in range(6):
        locked = guard.failed("1.2.3.4", "GS-1", 10_000)
    assert locked[0][1] == 10_000 + 4000  # capped
    guard2 = AuthGuard(threshold=3)
    guard2.failed("a", "s", 0)
    guard2.failed("a", "s", 0)
    guard2.succeeded("a", "s")
    assert guard2.failed("a", "s", 0) == []  # the count started again


def test_lockout_memory_is_bounded():
    guard = AuthGuard(threshold=2, max_keys=100)
    for i in range(1000):
        guard.failed(f"10.0.{i // 256}.{i % 256}", "", 0)
    assert len(guard._records) == 100
