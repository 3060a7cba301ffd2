"""GroupCommit alone, with a fake backend that records every batch it is given."""

from __future__ import annotations

import asyncio

import pytest

from lmg.storage.errors import StoreClosed, StoreUnavailable
from lmg.storage.group_commit import GroupCommit


class FakeBackend:
    def __init__(self) -> None:
        self.batches: list[list] = []
        self.fail_next: list[BaseException] = []
        self.gate: asyncio.Event | None = None  # when set: commits wait for it

    async def commit(self, records: list) -> list:
        self.batches.append(list(records))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            raise self.fail_next.pop(0)
        return [f"ok:{r}" for r in records]


def make(backend: FakeBackend, **limits) -> GroupCommit:
    settings = dict(max_records=500, max_delay_ms=5, max_queued_records=10_000, enqueue_wait_ms=200)
    settings.update(limits)
    return GroupCommit(backend.commit, **settings)


async def test_concurrent_callers_share_one_batch_and_get_their_own_results():
    backend = FakeBackend()
    group = make(backend)
    results = await asyncio.gather(*(group.submit([f"r{n}a", f"r{n}b"]) for n in range(50)))
    assert results == [[f"ok:r{n}a", f"ok:r{n}b"] for n in range(50)]
    assert len(backend.batches) == 1 and len(backend.batches[0]) == 100
    await group.close()


async def test_a_full_batch_starts_without_waiting_for_the_window():
    backend = FakeBackend()
    group = make(backend, max_records=10, max_delay_ms=60_000)  # a window no test would sit out
    calls = [asyncio.ensure_future(group.submit([n])) for n in range(25)]
    # wait_for only keeps a broken implementation from hanging the suite for 60 s
    full = await asyncio.wait_for(asyncio.gather(*calls[:20]), 10)
    assert [r[0] for r in full] == [f"ok:{n}" for n in range(20)]
    assert [len(b) for b in backend.batches] == [10, 10]
    assert not any(call.done() for call in calls[20:])  # 5 records: still in their window
    await group.close()  # which commits them at once
    assert [(await call)[0] for call in calls[20:]] == [f"ok:{n}" for n in range(20, 25)]


async def test_while_one_batch_commits_the_next_one_fills():
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    group = make(backend, max_delay_ms=0)
    first = asyncio.ensure_future(group.submit(["a"]))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(group.submit([n])) for n in range(30)]
    await asyncio.sleep(0.01)
    assert backend.batches == [["a"]]  # one in flight; the others wait together
    backend.gate.set()
    await asyncio.gather(first, *later)
    assert backend.batches[1] == list(range(30))
    await group.close()


async def test_a_failed_batch_fails_exactly_its_callers_and_the_next_one_works():
    backend = FakeBackend()
    backend.fail_next.append(StoreUnavailable("disk full"))
    group = make(backend)
    outcomes = await asyncio.gather(group.submit([1]), group.submit([2]), return_exceptions=True)
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert await group.submit([3]) == ["ok:3"]
    await group.close()


async def test_a_caller_cancelled_before_its_batch_is_not_written():
    backend = FakeBackend()
    group = make(backend, max_delay_ms=50)
    doomed = asyncio.ensure_future(group.submit(["doomed"]))
    kept = asyncio.ensure_future(group.submit(["kept"]))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await kept == ["ok:kept"]
    assert backend.batches == [["kept"]]
    await group.close()


async def test_queue_bound_turns_into_store_unavailable_not_unbounded_memory():
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    group = make(backend, max_records=5, max_delay_ms=0, max_queued_records=10, enqueue_wait_ms=50)
    in_flight = [asyncio.ensure_future(group.submit([n])) for n in range(11)]  # 1 committing, 10 queued
    await asyncio.sleep(0.01)
    with pytest.raises(StoreUnavailable, match="max_queued_records"):
        await group.submit(["one too many"])
    backend.gate.set()
    await asyncio.gather(*in_flight)
    await group.close()


async def test_submit_after_close_is_refused():
    group = make(FakeBackend())
    await group.close()
    with pytest.raises(StoreClosed):
        await group.submit([1])


# --- enqueue: the same contract as submit, as a future --------------------------------------


async def test_enqueue_returns_a_future_sharing_the_batch_with_submit_callers():
    backend = FakeBackend()
    group = make(backend)
    future = group.enqueue(["f1", "f2"])
    assert isinstance(future, asyncio.Future) and not isinstance(future, asyncio.Task)  # no task made
    submitted = asyncio.ensure_future(group.submit(["s1"]))
    assert await future == ["ok:f1", "ok:f2"]
    assert await submitted == ["ok:s1"]
    assert backend.batches == [["f1", "f2", "s1"]]
    await group.close()


async def test_a_cancelled_enqueue_future_is_not_written():
    backend = FakeBackend()
    group = make(backend, max_delay_ms=50)
    doomed = group.enqueue(["doomed"])
    kept = group.enqueue(["kept"])
    doomed.cancel()
    assert await kept == ["ok:kept"]
    assert backend.batches == [["kept"]]
    await group.close()


async def test_enqueue_sets_errors_on_the_future_and_waits_for_room_like_submit():
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    group = make(backend, max_records=5, max_delay_ms=0, max_queued_records=10, enqueue_wait_ms=5_000)
    in_flight = [group.enqueue([n]) for n in range(11)]  # 1 committing, 10 queued: full
    waiting = group.enqueue(["after room"])  # not refused: waits for room (up to enqueue_wait_ms)
    await asyncio.sleep(0.01)
    assert not waiting.done()
    backend.gate.set()
    assert await waiting == ["ok:after room"]
    await asyncio.gather(*in_flight)
    assert await group.enqueue([]) == []
    await group.close()
    refused = group.enqueue([1])  # after close: a future holding StoreClosed, not a raise
    with pytest.raises(StoreClosed):
        await refused


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_queue_older_than_its_age_bound_refuses_new_records_at_once():
    """A record count is a poor bound when the disk slows down: while the oldest queued record
    has waited past max_queue_age_ms, new ones are refused at once (the terminal resends
    later), not queued behind a backlog that will answer them after they were resent."""
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    clock = Clock()
    group = make(backend, max_records=1, max_delay_ms=0, max_queue_age_ms=5_000, in_flight=1, clock=clock)
    committing = group.enqueue(["a"])  # taken by the one commit slot, which waits at the gate
    waiting = group.enqueue(["b"])  # queued behind it since t=1000
    clock.now += 5.0  # exactly the bound: still taken
    on_time = group.enqueue(["c"])
    clock.now += 0.001
    refused = group.enqueue(["d"])
    with pytest.raises(StoreUnavailable, match="max_queue_age_ms=5000"):
        await refused
    assert not on_time.done()
    backend.gate.set()
    assert [await f for f in (committing, waiting, on_time)] == [["ok:a"], ["ok:b"], ["ok:c"]]
    assert ["d"] not in backend.batches  # refused means never written
    clock.now += 60  # an empty queue has no age: taken again
    assert await group.submit(["e"]) == ["ok:e"]
    await group.close()


async def test_without_an_age_bound_an_old_queue_still_takes_records():
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    clock = Clock()
    group = make(backend, max_records=1, max_delay_ms=0, in_flight=1, clock=clock)
    first, second = group.enqueue(["a"]), group.enqueue(["b"])
    clock.now += 3600
    third = group.enqueue(["c"])
    backend.gate.set()
    assert [await f for f in (first, second, third)] == [["ok:a"], ["ok:b"], ["ok:c"]]
    await group.close()
