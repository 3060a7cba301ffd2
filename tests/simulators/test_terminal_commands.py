"""TerminalConnection answers the server's commands (§6.7) over real sockets, TCP and WebSocket,
while its own requests wait, and its device outlives the connection. The server's end is
tests/simulators/server_end.py, until the gateway sends commands itself."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
import zlib

import pytest

from lmg.protocol import (
    Ack,
    ConfigGet,
    ConfigKey,
    ConfigReply,
    DeviceStatus,
    FaceChunk,
    Heartbeat,
    MessageType,
    Nack,
    ResultCode,
    RosterAdd,
    RosterRemove,
    RosterUpdate,
    RosterVersionQuery,
    RosterVersionReply,
    SetTime,
)
from lmg.simulators.terminal import DeviceCredentials, TerminalConnection, TerminalError, worker_id_for

from tests.server.conftest import HOST, WAIT_S
from tests.simulators.server_end import ServerEnd, accept_terminal, listener

CREDENTIALS = DeviceCredentials("GS-SIM-000001", bytes(32))
PHOTO = (b"\xff\xd8\xff\xe0" + hashlib.sha256(b"face").digest() * 1200)[:38_000]
SHA = hashlib.sha256(PHOTO).digest()
CHUNK = 16384


def add(version: int, n: int, photo: bytes | None = None) -> RosterAdd:
    sha = hashlib.sha256(photo).digest() if photo else bytes(32)
    return RosterAdd(version, worker_id_for(n), f"worker {n}", "", 1, len(photo or b""), sha)


def chunks(photo: bytes = PHOTO) -> list[FaceChunk]:
    sha = hashlib.sha256(photo).digest()
    return [FaceChunk(sha, len(photo), at, photo[at : at + CHUNK]) for at in range(0, len(photo), CHUNK)]


async def connect(port: int, accepted: asyncio.Queue[ServerEnd], transport: str = "tcp",
                  **kw) -> tuple[TerminalConnection, ServerEnd]:
    connection = TerminalConnection(CREDENTIALS, HOST, port, transport=transport, timeout_s=WAIT_S, **kw)
    await connection.open()
    authenticating = asyncio.ensure_future(connection.authenticate())
    end = await asyncio.wait_for(accepted.get(), WAIT_S)
    await accept_terminal(end)
    await asyncio.wait_for(authenticating, WAIT_S)
    return connection, end


async def command(end: ServerEnd, message):
    """Send one command; return the terminal's answer, which must name it."""
    seq = await end.send(message)
    answer = await end.receive()
    assert answer is not None and answer.ref_seq == seq, answer
    return answer


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_commands_are_answered_while_a_request_waits(transport):
    async with listener(transport) as (port, accepted):
        connection, end = await connect(port, accepted, transport)
        heartbeat = asyncio.ensure_future(connection.heartbeat())
        beat = await end.expect(Heartbeat)
        script = [add(1, 1), add(2, 2, PHOTO), *chunks(), RosterVersionQuery(), ConfigGet((ConfigKey("volume"),))]
        sent = [await end.send(message) for message in script]
        answers = [await end.receive() for _ in script]
        assert [a.ref_seq for a in answers] == sent
        assert [type(a) for a in answers] == [Ack] * 5 + [RosterVersionReply, ConfigReply]
        assert answers[-2].roster_version == 2 and answers[-2].worker_count == 2
        own = [beat.seq] + [a.seq for a in answers]
        assert own == sorted(own) and len(set(own)) == len(own)  # one sequence, the terminal's
        assert not heartbeat.done()  # the request still waits for its own answer
        await end.send(Ack(beat.seq, MessageType.HEARTBEAT, time.time_ns() // 1_000_000, ()))
        reply = await asyncio.wait_for(heartbeat, WAIT_S)
        assert isinstance(reply, Ack) and reply.ref_seq == beat.seq
        assert connection.device.face_of(worker_id_for(2)) == PHOTO
        await connection.close()


async def test_waiting_for_a_roster_version_returns_when_the_face_is_verified():
    async with listener() as (port, accepted):
        connection, end = await connect(port, accepted)
        waiting = asyncio.ensure_future(connection.wait_for_roster_version(2))
        assert isinstance(await command(end, add(1, 1)), Ack)
        assert isinstance(await command(end, add(2, 2, PHOTO)), Ack)
        *first, last = chunks()
        for chunk in first:
            assert isinstance(await command(end, chunk), Ack)
        assert not waiting.done() and connection.device.roster_version == 1
        assert isinstance(await command(end, last), Ack)
        assert await asyncio.wait_for(waiting, WAIT_S) == 2
        assert await connection.wait_for_roster_version(2, exact=True) == 2  # holds already
        with pytest.raises(TimeoutError, match="roster version 3"):
            await connection.wait_for_roster_version(3, timeout_s=0.05)
        # a full resync lowers the version: exact waits see it
        lowered = asyncio.ensure_future(connection.wait_for_roster_version(0, exact=True))
        assert isinstance(await command(end, RosterRemove(0, "0" * 18)), Ack)
        assert await asyncio.wait_for(lowered, WAIT_S) == 0 and connection.device.worker_count == 0
        await connection.close()


async def test_a_wait_fails_at_once_when_the_connection_ends():
    async with listener() as (port, accepted):
        connection, end = await connect(port, accepted)
        waiting = asyncio.ensure_future(connection.wait_for_roster_version(9, timeout_s=120))
        await end.close()
        with pytest.raises(TerminalError):
            await asyncio.wait_for(waiting, WAIT_S)
        with pytest.raises(TerminalError):
            await connection.wait_for_roster_version(9)
        await connection.close()


async def test_the_roster_and_a_partial_face_survive_a_reconnect():
    async with listener() as (port, accepted):
        first, end = await connect(port, accepted)
        assert isinstance(await command(end, add(4, 1)), Ack)
        assert isinstance(await command(end, add(5, 2, PHOTO)), Ack)
        assert isinstance(await command(end, chunks()[0]), Ack)
        await first.close()  # mid-face

        second, end = await connect(port, accepted, device=first.device)
        answer = await command(end, RosterVersionQuery())
        assert (answer.roster_version, answer.worker_count) == (4, 2)  # the version before the face
        status = asyncio.ensure_future(second.report_status())
        reported = await end.expect(DeviceStatus)
        assert (reported.roster_version, reported.roster_count) == (4, 2)
        await end.send(Ack(reported.seq, MessageType.DEVICE_STATUS, 0, ()))
        await asyncio.wait_for(status, WAIT_S)
        # the gateway resends the worker and resumes where the ACKs got to
        assert isinstance(await command(end, RosterUpdate(*add(5, 2, PHOTO)[:-1])), Ack)
        for chunk in chunks()[1:]:
            assert isinstance(await command(end, chunk), Ack)
        assert await second.wait_for_roster_version(5) == 5
        assert second.device.face_of(worker_id_for(2)) == PHOTO
        await second.close()


async def test_faults_and_undecodable_frames_are_answered_over_the_wire():
    async with listener() as (port, accepted):
        connection, end = await connect(port, accepted)
        connection.device.faults.nack_unknown_workers = True
        answer = await command(end, RosterRemove(3, worker_id_for(7)))
        assert isinstance(answer, Nack) and answer.result == ResultCode.UNKNOWN_WORKER
        connection.device.fail(MessageType.SET_TIME, times=1)
        assert (await command(end, SetTime(0))).result == ResultCode.COMMAND_FAILED
        assert isinstance(await command(end, SetTime(time.time_ns() // 1_000_000)), Ack)
        # a message type this protocol version does not have (section 8): NACK, and carry on
        header = struct.pack(">2sBBHII", b"LM", 1, 0, 0x0777, 4242, 3)
        frame = header + b"new" + struct.pack(">I", zlib.crc32(header + b"new"))
        await end.send_bytes(frame)
        answer = await end.receive()
        assert answer == Nack(4242, 0x0777, ResultCode.UNSUPPORTED_MESSAGE, answer.seq)
        assert isinstance(await command(end, RosterVersionQuery()), RosterVersionReply)
        await connection.close()
