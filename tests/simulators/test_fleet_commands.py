"""The load fleet's devices answer the server's commands (§6.7) while they punch.

First over a fake wire, frame by frame (the punch path still matches its ACKs); then a whole
fleet run against tests/simulators/server_end.py, which pushes a roster with faces to every
device and holds the punch ACKs until the push is answered, so the run's end proves the push
arrived (no timing involved)."""

from __future__ import annotations

import asyncio
import hashlib
import time

from lmg.protocol import (
    Ack,
    FaceChunk,
    Heartbeat,
    MessageType,
    Nack,
    Punch,
    PunchBatch,
    RecordResult,
    ResultCode,
    RosterAdd,
    RosterRemove,
    RosterVersionQuery,
    RosterVersionReply,
    decode_frame,
)
from lmg.simulators.fleet import COMMAND_COUNTERS, Fleet, FleetSpec, run_fleet
from lmg.simulators.terminal import worker_id_for

from tests.server.conftest import HOST, WAIT_S
from tests.simulators.server_end import ServerEnd, accept_terminal, listener

CHUNK = 16384
WORKERS, FACE_BYTES = 6, 30_000


def photo(n: int) -> bytes:
    return (b"\xff\xd8\xff\xe0" + hashlib.sha256(str(n).encode()).digest() * (FACE_BYTES // 32 + 1))[:FACE_BYTES]


def roster_push() -> list:
    """ROSTER_ADD with a face and its chunks for each worker, one removal, a version query."""
    script: list = []
    for n in range(1, WORKERS + 1):
        face = photo(n)
        sha = hashlib.sha256(face).digest()
        script.append(RosterAdd(n, worker_id_for(n), f"worker {n}", "", 1, len(face), sha))
        script += [FaceChunk(sha, len(face), at, face[at : at + CHUNK]) for at in range(0, len(face), CHUNK)]
    script.append(RosterRemove(WORKERS + 1, worker_id_for(1)))
    script.append(RosterVersionQuery())
    return script


class FakeWire:
    def __init__(self) -> None:
        self.frames: list = []

    def write(self, data: bytes) -> None:
        self.frames.append(decode_frame(data))

    def close(self, abort: bool = False) -> None:
        pass


async def test_a_fleet_terminal_answers_commands_and_still_matches_its_punch_acks():
    fleet = Fleet(FleetSpec(host=HOST, port=1, devices=[["GS-FLEET-000001", "00" * 32]], scenario="idle"))
    terminal = fleet.terminals[0]
    wire = terminal.wire = FakeWire()
    terminal.state = "online"
    terminal.supply = 1
    terminal.pump()  # a punch in flight
    [punch] = wire.frames
    script = roster_push()
    for seq, message in enumerate(script, start=500):
        terminal.on_frame(message._replace(seq=seq))
    answers = wire.frames[1:]
    assert [a.ref_seq for a in answers] == list(range(500, 500 + len(script)))
    assert all(isinstance(a, Ack) for a in answers[:-1]) and isinstance(answers[-1], RosterVersionReply)
    assert (answers[-1].roster_version, answers[-1].worker_count) == (WORKERS + 1, WORKERS - 1)
    assert [f.seq for f in wire.frames] == list(range(punch.seq, punch.seq + len(script) + 1))  # its own sequence
    terminal.on_frame(Ack(punch.seq, MessageType.PUNCH, 0, (RecordResult(punch.record_no, ResultCode.OK),)))
    assert fleet.stats["acked"] == 1 and not terminal.inflight
    assert fleet.stats["commands"] == len(script) and fleet.stats["command_nacks"] == 0
    assert fleet.stats[COMMAND_COUNTERS[MessageType.FACE_CHUNK]] == 2 * WORKERS
    device = terminal.device
    assert device.keep_faces is False and device.face_of(worker_id_for(2)) is None
    assert device.workers[worker_id_for(2)].face_sha256 == hashlib.sha256(photo(2)).digest()
    terminal.on_frame(RosterRemove(0, "0" * 18, 900))  # remove-all
    assert device.roster_version == 0 and device.worker_count == 0
    device.faults.nack_unknown_workers = True
    terminal.on_frame(RosterRemove(1, worker_id_for(3), 901))
    assert wire.frames[-1] == Nack(901, MessageType.ROSTER_REMOVE, ResultCode.UNKNOWN_WORKER, wire.frames[-1].seq)
    assert fleet.stats["command_nacks"] == 1
    assert fleet.roster_spread() == {"version_min": 0, "version_max": 0, "workers_min": 0, "workers_max": 0}


async def serve_push(end: ServerEnd) -> list:
    """Authenticate, push the roster, hold punch ACKs until every command is answered."""
    await accept_terminal(end)
    pending = {}
    for message in roster_push():
        pending[await end.send(message)] = message
    held: list = []
    answers: list = []
    while (item := await end.receive()) is not None:
        if isinstance(item, (Punch, PunchBatch)):
            held.append(item)
        elif isinstance(item, Heartbeat):
            await end.send(Ack(item.seq, MessageType.HEARTBEAT, 0, ()))
        else:
            answers.append(item)
            assert pending.pop(item.ref_seq, None) is not None, item
        if not pending:
            for frame in held:
                records = [frame] if isinstance(frame, Punch) else frame.records
                rows = tuple(RecordResult(r.record_no, ResultCode.OK) for r in records)
                await end.send(Ack(frame.seq, frame.msg_type, time.time_ns() // 1_000_000, rows))
            held = []
    return answers


async def test_a_fleet_run_takes_a_roster_push_while_it_punches():
    devices = [[f"GS-FLEET-{i:06d}", "00" * 32] for i in range(3)]
    async with listener() as (port, accepted):
        served: list[asyncio.Task] = []

        async def accept_all() -> None:
            while True:
                served.append(asyncio.ensure_future(serve_push(await accepted.get())))

        acceptor = asyncio.ensure_future(accept_all())
        try:
            summary = await run_fleet(FleetSpec(host=HOST, port=port, devices=devices, scenario="rush",
                                                punches_per_device=4, duration_s=3 * WAIT_S, heartbeat_s=-1,
                                                connect_phase_s=WAIT_S))
        finally:
            acceptor.cancel()
        answers = await asyncio.wait_for(asyncio.gather(*served), WAIT_S)
    script = roster_push()
    assert len(answers) == len(devices)
    for device_answers in answers:
        assert len(device_answers) == len(script)
        assert all(isinstance(a, Ack) for a in device_answers[:-1])
        assert device_answers[-1].roster_version == WORKERS + 1
    assert (summary["acked"], summary["unexpected_disconnects"]) == (12, 0)
    assert summary["counters"].get("drain_timeouts", 0) == 0
    assert summary["commands"] == len(devices) * len(script) and summary["command_nacks"] == 0
    assert summary["roster"] == {"version_min": WORKERS + 1, "version_max": WORKERS + 1,
                                 "workers_min": WORKERS - 1, "workers_max": WORKERS - 1}
