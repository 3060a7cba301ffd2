"""Punches over real sockets: ACK only after commit, store faults, duplicates, per-record results."""

from __future__ import annotations

import asyncio
import time

from lmg.protocol import Ack, Heartbeat, Nack, Punch, PunchBatch, ResultCode, encode
from lmg.protocol.identity import check_digit
from lmg.server.settings import Settings
from lmg.simulators.terminal import make_punch, worker_id_for
from lmg.storage import StoreUnavailable

from tests.server.conftest import WAIT_S, GatedStore, StoreProxy, wait_for


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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


class RecordingGate(StoreProxy):
    """Records the size of every `store_punches` call; calls wait for `release` while it is clear."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls: list[int] = []
        self.release = asyncio.Event()
        self.release.set()

    async def store_punches(self, records):
        self.calls.append(len(records))
        await self.release.wait()
        return await self.inner.store_punches(records)


def punch_window(client, count: int) -> tuple[bytes, list[int]]:
    """`count` PUNCH frames (records 1..count) with the client's next seqs, as one write."""
    t = now_ms()
    frames, seqs = b"", []
    for n in range(1, count + 1):
        client.seq += 1
        seqs.append(client.seq)
        frames += encode(Punch.of(make_punch(n, n, t), client.seq))
    return frames, seqs


async def gated_punches_in_separate_reads(gw, count: int) -> tuple[RecordingGate, list[int]]:
    """Close the store's gate, then send `count` PUNCH frames far enough apart that each is
    its own read (each may start a group); returns the gate and the frames' seqs."""
    gate = gw.gateway.store
    client = gw.clients[-1]
    gate.release.clear()
    t = now_ms()
    sent = []
    for n in range(1, count + 1):
        sent.append(client.send(Punch.of(make_punch(n, n, t))))
        await asyncio.sleep(0.05)
    return gate, sent


def assert_consecutive(frames: list) -> None:
    seqs = [f.seq for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"server seq numbers out of order: {seqs}"


async def test_a_window_of_punches_is_stored_together_and_answered_in_order(start_gateway):
    gw = await start_gateway(wrap=RecordingGate)
    gate = gw.gateway.store
    client = await gw.raw_authenticated()
    frames, seqs = punch_window(client, 8)  # one write, as a terminal with a window of 8 sends after an outage
    client.seq += 1
    heartbeat_seq = client.seq
    client.send_bytes(frames + encode(Heartbeat(0, 0, 0, client.seq)))
    answers = [await client.expect(Ack) for _ in range(9)]
    assert [a.ref_seq for a in answers] == seqs + [heartbeat_seq]
    assert [a.results[0].record_no for a in answers[:8]] == list(range(1, 9))
    assert all(a.results[0].result == ResultCode.OK for a in answers[:8])
    assert_consecutive(answers)
    assert sum(gate.calls) == 8 and len(gate.calls) < 8  # gathered, not one commit per frame
    assert await gw.store.count_punches() == 8


async def test_groups_in_flight_are_bounded_and_a_heartbeat_waits_for_them(start_gateway):
    GROUPS_IN_FLIGHT = Settings().gateway.store_calls_per_connection

    gw = await start_gateway(wrap=RecordingGate)
    client = await gw.raw_authenticated()
    gate, sent = await gated_punches_in_separate_reads(gw, GROUPS_IN_FLIGHT + 2)
    heartbeat_seq = client.send(Heartbeat(0, 0, 0))
    sent.append(client.send(Punch.of(make_punch(99, 99, now_ms()))))
    await wait_for(lambda: len(gate.calls) == GROUPS_IN_FLIGHT, what="groups in flight")
    await client.nothing_within(0.3)
    assert len(gate.calls) == GROUPS_IN_FLIGHT  # the rest are held until a group is answered
    gate.release.set()
    answers = [await client.expect(Ack) for _ in range(len(sent) + 1)]
    assert [a.ref_seq for a in answers] == sent[:-1] + [heartbeat_seq, sent[-1]]
    assert_consecutive(answers)
    assert await gw.store.count_punches() == len(sent)


async def test_a_failed_group_nacks_every_frame_in_it_in_order(start_gateway):
    gw = await start_gateway(wrap=UnavailableStore)
    client = await gw.raw_authenticated()
    frames, seqs = punch_window(client, 5)
    client.send_bytes(frames)
    nacks = [await client.expect(Nack) for _ in seqs]
    assert [(n.ref_seq, n.result) for n in nacks] == [(s, ResultCode.STORE_UNAVAILABLE) for s in seqs]
    assert_consecutive(nacks)
    assert await gw.store.count_punches() == 0


async def test_big_batches_keep_one_groups_worth_of_records_at_the_store(start_gateway):
    # 100 terminals uploading offline backlogs at once must not overflow the store's shared
    # queue (max_queued_records) and be nacked: a connection holds at most one group-commit batch there.
    GROUP_RECORDS = Settings().store.group_commit_max_records

    gw = await start_gateway(wrap=RecordingGate)
    gate = gw.gateway.store
    client = await gw.raw_authenticated()
    gate.release.clear()
    t = now_ms()
    size = GROUP_RECORDS * 3 // 5
    sent = []
    for b in range(3):
        sent.append(client.send(PunchBatch(tuple(make_punch(b * size + n, n, t) for n in range(1, size + 1)))))
        await asyncio.sleep(0.05)
    await wait_for(lambda: gate.calls, what="the first store call")
    await client.nothing_within(0.3)
    assert gate.calls == [size]
    gate.release.set()
    answers = [await client.expect(Ack) for _ in sent]
    assert [a.ref_seq for a in answers] == sent
    assert all(len(a.results) == size for a in answers)
    assert gate.calls == [size] * 3
    assert await gw.store.count_punches() == 3 * size


async def test_store_failures_are_logged_once_per_interval_not_per_frame(start_gateway, caplog):
    # An overloaded or full disk fails every connection's commit at once; a warning per
    # frame flooded the log with thousands of lines a second.
    gw = await start_gateway(wrap=UnavailableStore)
    client = await gw.raw_authenticated()
    caplog.set_level("WARNING", logger="lmg.gateway")
    for n in range(1, 6):
        client.send(Punch.of(make_punch(n, n, now_ms())))
        await client.expect(Nack)
    warnings = [r for r in caplog.records if r.name == "lmg.gateway" and "store failed" in r.getMessage()]
    assert len(warnings) == 1 and "disk is full" in warnings[0].getMessage()
    assert gw.gateway.counters["store_failures"] == 5


async def test_wire_values_beyond_the_store_columns_are_rejected_records_not_a_dropped_session(gw):
    # temperature_dc is a u16 and punch_time_ms a u64 on the wire; PunchIn used to refuse
    # 32768+ and 2**63+ with ValueError, which closed the session as an internal error.
    client = await gw.raw_authenticated()
    t = now_ms()
    hot = make_punch(1, 1, t)._replace(temperature_dc=65535)
    far = make_punch(2, 2, t)._replace(punch_time_ms=2**64 - 1)
    seq = client.send(PunchBatch((hot, far, make_punch(3, 3, t))))
    ack = await client.expect(Ack)
    assert ack.ref_seq == seq
    assert [(r.record_no, r.result) for r in ack.results] == [
        (1, ResultCode.INVALID_TEMPERATURE), (2, ResultCode.TIME_IN_FUTURE), (3, ResultCode.OK)]
    client.send(Heartbeat(0, 0, 0))
    assert isinstance(await client.expect(Ack), Ack)  # the session goes on
    assert await gw.store.count_punches() == 1


async def test_shutdown_answers_every_frame_already_received_before_goodbye(start_gateway):
    # Frames held behind the groups in flight used to start new groups after shutdown had
    # looked at what was in flight: stored, but the GOODBYE overtook their ACKs.
    from lmg.protocol import Goodbye
    GROUPS_IN_FLIGHT = Settings().gateway.store_calls_per_connection

    gw = await start_gateway(wrap=RecordingGate)
    client = await gw.raw_authenticated()
    gate, sent = await gated_punches_in_separate_reads(gw, GROUPS_IN_FLIGHT + 2)
    await wait_for(lambda: len(gate.calls) == GROUPS_IN_FLIGHT, what="groups in flight")
    stopping = asyncio.ensure_future(gw.gateway.shutdown())
    await asyncio.sleep(0.1)
    gate.release.set()
    answers = [await client.expect(Ack) for _ in sent]
    assert [a.ref_seq for a in answers] == sent
    goodbye = await client.expect(Goodbye)
    assert goodbye.reason == ResultCode.SHUTTING_DOWN
    await asyncio.wait_for(stopping, WAIT_S)
    assert await gw.store.count_punches() == len(sent)


async def test_a_bug_in_the_store_call_closes_the_session_instead_of_wedging_it(start_gateway, caplog):
    class Broken(StoreProxy):
        def submit_punches(self, records):
            raise RuntimeError("injected bug")

    gw = await start_gateway(wrap=Broken)
    client = await gw.raw_authenticated()
    client.send(Punch.of(make_punch(1, 1, now_ms())))
    assert await client.closed_after() == []  # nothing acknowledged; the terminal resends elsewhere
    assert gw.gateway.counters["closed_server_busy"] == 1
    assert any("injected bug" in str(r.exc_info) for r in caplog.records if r.exc_info)
