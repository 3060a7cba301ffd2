"""PhotoIntake (server/gateway/photo_intake.py): turns, a queue bounded in count and in time,
and turns given back whatever happens. Time is an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from lmg.server.gateway.photo_intake import PhotoIntake

from tests.server.conftest import wait_for


async def test_the_queue_is_bounded_in_count_and_in_time():
    now = [100.0]
    intake = PhotoIntake(1, 2, 5.0, clock=lambda: now[0])
    release = asyncio.Event()

    async def frame() -> None:
        async with intake.turn():
            await release.wait()

    holder = asyncio.create_task(frame())
    await wait_for(lambda: intake.in_store == 1, what="the first frame in the store")
    assert not intake.full()  # nobody waits yet
    first = asyncio.create_task(frame())
    await wait_for(lambda: intake.waiting == 1, what="a frame waiting")
    now[0] += 4.9
    assert not intake.full() and intake.oldest_wait_s() == pytest.approx(4.9)
    now[0] += 0.1  # the oldest has waited 5 s: an answer now would come late for the next
    assert intake.full()
    now[0] -= 3.0  # (back in time: the count bound alone)
    second = asyncio.create_task(frame())
    await wait_for(lambda: intake.waiting == 2, what="two frames waiting")
    assert intake.full()  # two wait: the count bound
    release.set()
    await asyncio.gather(holder, first, second)
    assert (intake.in_store, intake.waiting, intake.full(), intake.oldest_wait_s()) == (0, 0, False, 0.0)


async def test_a_cancelled_or_failing_frame_gives_its_place_and_turn_back():
    intake = PhotoIntake(1, 5, 5.0, clock=lambda: 0.0)
    release = asyncio.Event()

    async def frame(fail: bool = False) -> None:
        async with intake.turn():
            if fail:
                raise RuntimeError("the store failed")
            await release.wait()

    holder = asyncio.create_task(frame())
    await wait_for(lambda: intake.in_store == 1, what="a frame in the store")
    waiter = asyncio.create_task(frame())
    await wait_for(lambda: intake.waiting == 1, what="a frame waiting")
    waiter.cancel()  # the terminal went away while its chunk waited
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert intake.waiting == 0
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    with pytest.raises(RuntimeError):
        await frame(fail=True)
    assert (intake.in_store, intake.waiting) == (0, 0)
    release.set()
    await asyncio.wait_for(frame(), 5)  # the turn is free again


def test_bad_bounds_are_refused():
    for args in ((0, 1, 5.0), (1, -1, 5.0), (1, 1, 0.0)):
        with pytest.raises(ValueError, match="photo_store_concurrency"):
            PhotoIntake(*args)
