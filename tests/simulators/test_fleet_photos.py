"""The load fleet's photo uploads (docs/protocol.md 6.5) and its count of undecodable frames.

Against a real `lmg serve` (SQLite): every announced photo arrives whole, its bytes in the
store. Against tests/simulators/server_end.py, frame by frame: an upload cut by a lost
connection resumes with PHOTO_QUERY from where the server says; a frame the WebSocket client
cannot decode is counted and answered, as on TCP. Counts only; no timing is asserted."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
import zlib

import pytest

from lmg.bench.load import provision, start_gateway
from lmg.protocol import (
    Ack,
    Heartbeat,
    MessageType,
    Nack,
    PhotoChunk,
    PhotoQuery,
    PhotoStatus,
    ProtocolError,
    Punch,
    RecordResult,
    ResultCode,
    decode_frame,
    encode,
)
from lmg.simulators.fleet import FleetSpec, run_fleet, synthetic_photo
from lmg.simulators.photo_upload import PhotoUpload, Step, chunk_limit
from lmg.storage import open_store

from tests.server.conftest import HOST, WAIT_S
from tests.simulators.server_end import ServerEnd, accept_terminal, listener

pytestmark = pytest.mark.timeout(60)
DEVICES, PUNCHES, PHOTO, CHUNK = 4, 6, 40_000, 16_000  # a photo in three chunks: 16,000 + 16,000 + 8,000


def test_chunk_size_follows_the_frame_limit_and_the_upload_reads_each_result():
    assert chunk_limit(65536) == 65536 - 18 - 46 and chunk_limit(1 << 20) == 65535
    with pytest.raises(ValueError, match="no room"):
        chunk_limit(64)
    photo = bytes(range(256)) * 100
    up = PhotoUpload(1, hashlib.sha256(photo).digest(), len(photo), 10_000)
    first = up.next_frame(photo)
    assert isinstance(first, PhotoChunk) and (first.offset, len(first.data)) == (0, 10_000)
    assert up.on_status(PhotoStatus(up.sha256, ResultCode.OK, 10_000)) is Step.SEND and up.confirmed == 10_000
    assert up.on_status(PhotoStatus(up.sha256, ResultCode.PHOTO_UPLOADS_BUSY, 10_000)) is Step.RETRY_LATER
    assert up.on_status(PhotoStatus(up.sha256, ResultCode.PHOTO_OFFSET_MISMATCH, 20_000)) is Step.SEND
    assert up.next_frame(photo).offset == 20_000 and up.confirmed == 10_000  # a mismatch confirms nothing
    up.restart()
    assert isinstance(up.next_frame(photo), PhotoQuery)
    for _ in range(2):
        assert up.on_status(PhotoStatus(up.sha256, ResultCode.PHOTO_HASH_MISMATCH, 0)) is Step.SEND and up.offset == 0
    assert up.on_status(PhotoStatus(up.sha256, ResultCode.PHOTO_HASH_MISMATCH, 0)) is Step.GIVE_UP
    done = PhotoUpload(2, up.sha256, len(photo))
    assert done.on_status(PhotoStatus(up.sha256, ResultCode.OK, len(photo))) is Step.DONE and done.done
    assert PhotoUpload(3, up.sha256, 5).on_status(PhotoStatus(up.sha256, ResultCode.PHOTO_NOT_ANNOUNCED, 0)) \
        is Step.GIVE_UP
    with pytest.raises(ValueError, match="photo share"):
        FleetSpec(host=HOST, port=1, devices=[], photo_share=1.5)
    with pytest.raises(ValueError, match="lmg dialect"):
        FleetSpec(host=HOST, port=1, devices=[], photo_share=0.5, dialect="bare")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-photos")
    devices = asyncio.run(provision(None, str(work), "PH", DEVICES))
    with start_gateway(str(work)) as server:
        yield server, devices, work


async def test_every_announced_photo_reaches_the_gateway_store_whole(gateway):
    server, devices, work = gateway
    summary = await run_fleet(FleetSpec(host=HOST, port=server.port, devices=devices, scenario="rush",
                                        punches_per_device=PUNCHES, duration_s=30, photo_share=0.5,
                                        photo_bytes=PHOTO, photo_chunk_bytes=CHUNK, first_record=1))
    photos = summary["photos"]
    assert summary["acked"] == DEVICES * PUNCHES and summary["counters"].get("drain_timeouts", 0) == 0
    assert photos["announced"] > 0
    assert photos["started"] == photos["confirmed"] == photos["announced"] and photos["refused"] == 0
    assert photos["bytes_confirmed"] == photos["bytes_sent"] == PHOTO * photos["confirmed"]
    assert photos["chunks_sent"] == 3 * photos["confirmed"] and photos["queries"] == 0
    store = await open_store(None, data_dir=str(work))
    try:
        held = [(serial, n) for serial, _ in devices for n in range(1, PUNCHES + 1)
                if (punch := await store.get_punch(serial, n)) is not None and punch.photo_size]
        assert len(held) == photos["announced"]
        for serial, n in held:
            assert await store.get_punch_photo(serial, n) == synthetic_photo(serial, n, PHOTO)
    finally:
        await store.close()


async def resume_after_cut(accepted: asyncio.Queue[ServerEnd]) -> list:
    """First session: ACK the punch, take one chunk, then close while the second is unanswered.
    Second session: answer the PHOTO_QUERY with the first chunk held, take the rest."""
    seen: list = []
    end = await accepted.get()
    await accept_terminal(end)
    punch = await end.expect(Punch)
    record = punch.record
    await end.send(Ack(punch.seq, MessageType.PUNCH, 0, (RecordResult(record.record_no, ResultCode.OK),)))
    first = await end.expect(PhotoChunk)
    seen.append(first)
    await end.send(PhotoStatus(record.photo_sha256, ResultCode.OK, len(first.data)))
    seen.append(await end.expect(PhotoChunk))  # never answered: the connection is cut
    await end.close()
    end = await accepted.get()
    await accept_terminal(end)
    query = await end.expect(PhotoQuery)
    seen.append(query)
    await end.send(PhotoStatus(record.photo_sha256, ResultCode.OK, len(first.data)))
    held = len(first.data)
    while held < record.photo_size:
        chunk = await end.expect(PhotoChunk)
        seen.append(chunk)
        held = chunk.offset + len(chunk.data)
        await end.send(PhotoStatus(record.photo_sha256, ResultCode.OK, held))
    seen.append(record)
    return seen


async def test_an_upload_cut_by_a_lost_connection_resumes_with_photo_query():
    serial = "GS-PHOTO-000001"
    async with listener() as (port, accepted):
        served = asyncio.ensure_future(resume_after_cut(accepted))
        summary = await run_fleet(FleetSpec(host=HOST, port=port, devices=[[serial, "00" * 32]], scenario="rush",
                                            punches_per_device=1, duration_s=3 * WAIT_S, heartbeat_s=-1,
                                            photo_share=1.0, photo_bytes=PHOTO, photo_chunk_bytes=CHUNK,
                                            connect_phase_s=WAIT_S, reconnect_base_s=0.05))
        seen = await asyncio.wait_for(served, WAIT_S)
    record = seen[-1]
    assert record.photo_sha256 == hashlib.sha256(synthetic_photo(serial, record.record_no, PHOTO)).digest()
    kinds = [(type(f).__name__, getattr(f, "offset", None)) for f in seen[:-1]]
    assert kinds == [("PhotoChunk", 0), ("PhotoChunk", CHUNK), ("PhotoQuery", None), ("PhotoChunk", CHUNK),
                     ("PhotoChunk", 2 * CHUNK)]
    assert (seen[2].record_no, seen[2].total_size) == (record.record_no, PHOTO)
    photos = summary["photos"]
    assert (photos["started"], photos["confirmed"], photos["queries"], photos["refused"]) == (1, 1, 1, 0)
    assert photos["bytes_confirmed"] == PHOTO and photos["bytes_sent"] == PHOTO + CHUNK  # one chunk sent twice
    assert summary["reconnects"] == 1 and summary["acked"] == 1


def unknown_message_frame(seq: int) -> bytes:
    """A well-formed frame of a message type no version defines (0x7FFF): decodable up to its type."""
    frame = bytearray(encode(Heartbeat(0, 0, 0, seq)))
    frame[4:6] = struct.pack(">H", 0x7FFF)
    frame[-4:] = struct.pack(">I", zlib.crc32(bytes(frame[:-4])))
    return bytes(frame)


async def serve_one_bad_frame(accepted: asyncio.Queue[ServerEnd]) -> Nack:
    end = await accepted.get()
    await accept_terminal(end)
    punch = await end.expect(Punch)
    await end.send_bytes(unknown_message_frame(4242))
    nack = await end.expect(Nack)  # the fleet read it as a frame it cannot handle, not as nothing
    await end.send(Ack(punch.seq, MessageType.PUNCH, time.time_ns() // 1_000_000,
                       (RecordResult(punch.record.record_no, ResultCode.OK),)))
    return nack


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_an_undecodable_frame_is_counted_and_answered_on_either_transport(transport):
    with pytest.raises(ProtocolError):
        decode_frame(unknown_message_frame(1))
    async with listener(transport) as (port, accepted):
        served = asyncio.ensure_future(serve_one_bad_frame(accepted))
        summary = await run_fleet(FleetSpec(host=HOST, port=port, devices=[["GS-BAD-000001", "00" * 32]],
                                            scenario="rush", transport=transport, punches_per_device=1,
                                            duration_s=3 * WAIT_S, heartbeat_s=-1, connect_phase_s=WAIT_S))
        nack = await asyncio.wait_for(served, WAIT_S)
    assert (nack.ref_seq, nack.result) == (4242, ResultCode.UNSUPPORTED_MESSAGE)
    assert summary["bad_frames"] == 1 and summary["acked"] == 1


@pytest.mark.parametrize(("extra", "says"), [
    (["--scenario", "rush", "--photo-share", "1.5"], "photo share must be between 0 and 1"),
    (["--scenario", "rush", "--photo-share", "0.3", "--photo-kb", "4096"], "the server's default limit"),
    (["--photo-share", "0.3"], "--photo-share needs --scenario"),
])
def test_sim_terminals_refuses_bad_photo_flags_before_connecting(tmp_path, capsys, extra, says):
    from lmg.server.cli import main

    devices = tmp_path / "devices.csv"
    devices.write_text(f"serial,secret,project\nGS-PHOTO-000001,{'00' * 32},P-SIM\n", encoding="utf-8")
    code = main(["sim", "terminals", "--target", "127.0.0.1:1", "--devices", str(devices), *extra])
    assert code != 0 and says in capsys.readouterr().err


async def refuse_then_store(accepted: asyncio.Queue[ServerEnd]) -> list:
    """NACK STORE_UNAVAILABLE the punch three times, then ACK it; refuse its photo once, then take it."""
    end = await accepted.get()
    await accept_terminal(end)
    for _ in range(3):
        punch = await end.expect(Punch)
        await end.send(Nack(punch.seq, MessageType.PUNCH, ResultCode.STORE_UNAVAILABLE))
    punch = await end.expect(Punch)
    record = punch.record
    await end.send(Ack(punch.seq, MessageType.PUNCH, 0, (RecordResult(record.record_no, ResultCode.OK),)))
    chunk = await end.expect(PhotoChunk)
    await end.send(PhotoStatus(record.photo_sha256, ResultCode.STORE_UNAVAILABLE, 0))
    chunk = await end.expect(PhotoChunk)
    await end.send(PhotoStatus(record.photo_sha256, ResultCode.OK, len(chunk.data)))
    return [record, chunk]


async def test_try_later_answers_back_off_doubling_and_a_stored_answer_resets_it(monkeypatch):
    """§6.2/6.8: each "try later" in a row waits the next step of the back-off; an answer that
    stored something starts it again. A fixed pause made 10,000 terminals hammer a gateway
    that was behind (issue 17)."""
    steps: list[int] = []

    def backoff(policy, failures, u):
        steps.append(failures)
        return 0.01  # the schedule itself is simulators/reconnect.py's, tested there

    monkeypatch.setattr("lmg.simulators.fleet.backoff_s", backoff)
    async with listener() as (port, accepted):
        served = asyncio.ensure_future(refuse_then_store(accepted))
        summary = await run_fleet(FleetSpec(host=HOST, port=port, devices=[["GS-PHOTO-000002", "00" * 32]],
                                            scenario="rush", punches_per_device=1, duration_s=3 * WAIT_S,
                                            heartbeat_s=-1, photo_share=1.0, photo_bytes=2000,
                                            connect_phase_s=WAIT_S))
        record, chunk = await asyncio.wait_for(served, WAIT_S)
    assert steps == [1, 2, 3, 1]
    assert (summary["nacks"], summary["acked"], summary["photos"]["confirmed"]) == (3, 1, 1)
    assert len(chunk.data) == record.photo_size == 2000


async def refuse_and_watch(accepted: asyncio.Queue[ServerEnd]) -> list[str]:
    """NACK STORE_UNAVAILABLE the punch; return the kinds of what the terminal sends after
    it, until the fleet's run ends and closes the connection."""
    end = await accepted.get()
    await accept_terminal(end)
    punch = await end.expect(Punch)
    await end.send(Nack(punch.seq, MessageType.PUNCH, ResultCode.STORE_UNAVAILABLE))
    following = []
    while (frame := await end.receive()) is not None:
        following.append(type(frame).__name__)
    await end.close()
    return following


async def test_a_refused_punch_waits_out_its_back_off_before_it_is_resent(monkeypatch):
    """The answer's own pump() used to resend at once, whatever the back-off said: a gateway
    behind saw each record again within milliseconds. With an hour's back-off, the punch is
    not sent again before the run ends."""
    monkeypatch.setattr("lmg.simulators.fleet.backoff_s", lambda policy, failures, u: 3600.0)
    async with listener() as (port, accepted):
        served = asyncio.ensure_future(refuse_and_watch(accepted))
        summary = await run_fleet(FleetSpec(host=HOST, port=port, devices=[["GS-PHOTO-000003", "00" * 32]],
                                            scenario="rush", punches_per_device=1, duration_s=1.0,
                                            heartbeat_s=0.2, connect_phase_s=WAIT_S))
        following = await asyncio.wait_for(served, WAIT_S)
    assert "Punch" not in following and "PunchBatch" not in following
    assert (summary["nacks"], summary["acked"]) == (1, 0)
