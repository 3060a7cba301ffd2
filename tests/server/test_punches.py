"""Punches over real sockets: ACK only after commit, store faults, duplicates, per-record results."""

from __future__ import annotations

import asyncio
import time

from protocol import Ack, Heartbeat, Nack, Punch, PunchBatch, ResultCode
from protocol.identity import check_digit
from simulators.terminal import make_punch, worker_id_for
from storage import StoreUnavailable

from .conftest import WAIT_S, StoreProxy


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class GatedStore(StoreProxy):
    """`store_punches` waits for `release` before it reaches the real store."""

    def __init__(self, inner):
        super().__init__(inner)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def store_punches(self, records):
        self.entered.set()
        await self.release.wait()
        return await self.inner.store_punches(records)


class UnavailableStore(StoreProxy):
    """Every punch commit fails as a full disk would."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls = 0

    async def store_punches(self, records):
        self.calls += 1
        raise StoreUnavailable("injected: database or disk is full")


async def test_no_ack_before_the_commit_returns(start_gateway):
    gw = await start_gateway(wrap=GatedStore)
    gated = gw.gateway.store
    client = await gw.raw_authenticated()
    punch_seq = client.send(Punch.of(make_punch(1, 1, now_ms())))
    heartbeat_seq = client.send(Heartbeat(0, 0, 0))
    await asyncio.wait_for(gated.entered.wait(), WAIT_S)
    await client.nothing_within(0.5)  # neither the ACK nor the later heartbeat's answer overtakes the commit
    assert await gw.store.count_punches() == 0
    gated.release.set()
    ack = await client.expect(Ack)
    assert ack.ref_seq == punch_seq and [(r.record_no, r.result) for r in ack.results] == [(1, ResultCode.OK)]
    assert await gw.store.count_punches() == 1
    assert (await client.expect(Ack)).ref_seq == heartbeat_seq  # answers in the order the frames came


async def test_store_unavailable_is_nacked_and_nothing_acked(start_gateway):
    gw = await start_gateway(wrap=UnavailableStore)
    client = await gw.raw_authenticated()
    seq = client.send(Punch.of(make_punch(1, 1, now_ms())))
    nack = await client.expect(Nack)
    assert (nack.ref_seq, nack.ref_type, nack.result) == (seq, Punch.msg_type, ResultCode.STORE_UNAVAILABLE)
    seq = client.send(PunchBatch(tuple(make_punch(n, n, now_ms()) for n in (2, 3))))
    nack = await client.expect(Nack)
    assert (nack.ref_seq, nack.result) == (seq, ResultCode.STORE_UNAVAILABLE)
    assert gw.gateway.store.calls == 2
    assert await gw.store.count_punches() == 0
    # the session survives a store fault: the terminal resends later
    client.send(Heartbeat(0, 0, 0))
    assert isinstance(await client.receive(), Ack)


async def test_resent_record_is_duplicate_and_stored_once(gw):
    client = await gw.raw_authenticated()
    record = make_punch(42, 7, now_ms())
    results = []
    for _ in range(3):
        client.send(Punch.of(record))
        results.append([r.result for r in (await client.expect(Ack)).results])
    assert results == [[ResultCode.OK], [ResultCode.DUPLICATE], [ResultCode.DUPLICATE]]
    # and across connections, inside a batch
    await client.close()
    again = await gw.raw_authenticated()
    again.send(PunchBatch((record, make_punch(43, 7, now_ms()))))
    ack = await again.expect(Ack)
    assert [(r.record_no, r.result) for r in ack.results] == [(42, ResultCode.DUPLICATE), (43, ResultCode.OK)]
    assert await gw.store.count_punches(gw.device.serial) == 2
    stored = await gw.store.get_punch(gw.device.serial, 42)
    assert stored.worker_id == record.worker_id and stored.punch_time_ms == record.punch_time_ms


async def test_batch_answers_every_record_on_its_own(gw):
    now = now_ms()
    good = make_punch(1, 1, now - 60_000)
    bad_digit = worker_id_for(2)
    bad_digit = bad_digit[:17] + ("0" if bad_digit[17] != "0" else "1")
    assert check_digit(bad_digit[:17]) != bad_digit[17]
    bad_id = make_punch(2, 2, now)._replace(worker_id=bad_digit)
    future = make_punch(3, 3, now + 3_600_000)
    bad_direction = make_punch(4, 4, now)._replace(direction=3)
    also_good = make_punch(5, 5, now)
    client = await gw.raw_authenticated()
    seq = client.send(PunchBatch((good, bad_id, future, bad_direction, also_good)))
    ack = await client.expect(Ack)
    assert ack.ref_seq == seq and ack.ref_type == PunchBatch.msg_type
    assert [(r.record_no, r.result) for r in ack.results] == [
        (1, ResultCode.OK),
        (2, ResultCode.INVALID_WORKER_ID),
        (3, ResultCode.TIME_IN_FUTURE),
        (4, ResultCode.INVALID_DIRECTION),
        (5, ResultCode.OK),
    ]
    assert await gw.store.count_punches() == 2
    assert await gw.store.get_punch(gw.device.serial, 2) is None
    rejected = {(r.record_no, r.reject_reason) for r in await gw.store.list_rejected_punches()}
    assert rejected == {(2, ResultCode.INVALID_WORKER_ID), (3, ResultCode.TIME_IN_FUTURE), (4, ResultCode.INVALID_DIRECTION)}
    # a rejection is final: the same record gets the same answer, and the session goes on
    client.send(Punch.of(future))
    assert [r.result for r in (await client.expect(Ack)).results] == [ResultCode.TIME_IN_FUTURE]


async def test_batch_above_the_limit_is_refused_whole(start_gateway):
    gw = await start_gateway(max_batch_records=10)
    client = await gw.raw_authenticated()
    seq = client.send(PunchBatch(tuple(make_punch(n, n, now_ms()) for n in range(1, 12))))
    nack = await client.expect(Nack)
    assert (nack.ref_seq, nack.ref_type, nack.result) == (seq, PunchBatch.msg_type, ResultCode.BATCH_TOO_LARGE)
    assert await gw.store.count_punches() == 0
    client.send(PunchBatch(tuple(make_punch(n, n, now_ms()) for n in range(1, 11))))
    assert [r.result for r in (await client.expect(Ack)).results] == [ResultCode.OK] * 10
