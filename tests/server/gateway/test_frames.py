"""Hostile byte streams: garbage, oversize and malformed frames, unknown types, a peer that never reads.

Each bad peer shares the gateway with a well-behaved terminal that keeps uploading; it
must keep getting its ACKs whatever the other connection does.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import zlib

from lmg.protocol import Ack, Goodbye, Heartbeat, Nack, Punch, ResultCode, encode
from lmg.simulators.terminal import make_punch

from tests.server.conftest import WAIT_S, RawClient

UNKNOWN_TYPE = 0x0777


def raw_frame(msg_type: int, seq: int, body: bytes, *, version: int = 1, body_len: int | None = None) -> bytes:
    """A frame built by hand: any type, any version, any declared length; a correct CRC."""
    header = struct.pack(">2sBBHII", b"LM", version, 0, msg_type, seq, len(body) if body_len is None else body_len)
    return header + body + struct.pack(">I", zlib.crc32(header + body))


class SteadyTerminal:
    """A good terminal uploading one punch at a time for as long as the test runs."""

    def __init__(self, client: RawClient):
        self.client = client
        self.results: list = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        record_no = 0
        while True:
            record_no += 1
            seq = self.client.send(Punch.of(make_punch(record_no, record_no, time.time_ns() // 1_000_000)))
            reply = await self.client.receive()
            assert isinstance(reply, Ack) and reply.ref_seq == seq, reply
            self.results.append(reply.results[0].result)
            await asyncio.sleep(0.02)

    async def stop(self, more: int = 3) -> list:
        """After `more` further ACKs (the disturbance is over by now), stop; all results so far."""
        target = len(self.results) + more
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while len(self.results) < target and not self.task.done():
            assert asyncio.get_running_loop().time() < deadline, f"steady terminal stalled at {self.results}"
            await asyncio.sleep(0.02)
        assert not self.task.done(), self.task  # it failed: show why
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return self.results


async def steady(gw) -> SteadyTerminal:
    return SteadyTerminal(await gw.raw_authenticated(await gw.add_device("GS-TEST-STEADY")))


async def test_garbage_is_skipped_and_the_next_frame_answered(gw):
    good = await steady(gw)
    client = await gw.raw_authenticated()
    client.send_bytes(b"\x00\x01 this is no frame \xfe\xff L" * 20)  # ends in a lone first magic byte
    seq = client.send(Heartbeat(0, 0, 0))
    ack = await client.expect(Ack)
    assert ack.ref_seq == seq
    # a frame split into single bytes is reassembled
    client.seq += 1
    for byte in encode(Heartbeat(0, 0, 0, client.seq)):
        client.send_bytes(bytes([byte]))
        await client.writer.drain()
    assert (await client.expect(Ack)).ref_seq == client.seq
    assert set(await good.stop()) == {ResultCode.OK}


async def test_oversize_frame_is_nacked_and_the_connection_closed(start_gateway):
    # 50 records and a 4,036-byte face chunk fit a 4 KiB frame
    gw = await start_gateway(max_frame_size=4096, max_batch_records=50, face_chunk_bytes=4036)
    good = await steady(gw)
    client = await gw.raw_authenticated()
    client.send_bytes(raw_frame(Punch.msg_type, 77, b"", body_len=1_000_000)[:14])  # the header alone suffices
    received = await client.closed_after()
    assert len(received) == 1 and isinstance(received[0], Nack), received
    assert (received[0].ref_seq, received[0].ref_type, received[0].result) == (77, Punch.msg_type, ResultCode.FRAME_TOO_LARGE)
    results = await good.stop()
    assert results and set(results) == {ResultCode.OK}


async def test_unknown_message_type_is_nacked_and_never_closes(start_gateway):
    gw = await start_gateway(malformed_limit=3)
    client = await gw.raw_authenticated()
    for seq in range(100, 110):  # far above the malformed limit: extensions are not errors
        client.send_bytes(raw_frame(UNKNOWN_TYPE, seq, b"future fields"))
    for seq in range(100, 110):
        nack = await client.expect(Nack)
        assert (nack.ref_seq, nack.ref_type, nack.result) == (seq, UNKNOWN_TYPE, ResultCode.UNSUPPORTED_MESSAGE)
    seq = client.send(Punch.of(make_punch(1, 1, time.time_ns() // 1_000_000)))
    ack = await client.expect(Ack)
    assert ack.ref_seq == seq and ack.results[0].result == ResultCode.OK


async def test_unsupported_frame_version_is_nacked(gw):
    client = await gw.raw_authenticated()
    client.send_bytes(raw_frame(Heartbeat.msg_type, 5, bytes(16), version=2))
    nack = await client.expect(Nack)
    assert (nack.ref_seq, nack.result) == (5, ResultCode.UNSUPPORTED_VERSION)
    client.send(Heartbeat(0, 0, 0))
    assert isinstance(await client.receive(), Ack)


async def test_too_many_malformed_frames_end_the_session(start_gateway):
    gw = await start_gateway(malformed_limit=3)
    good = await steady(gw)
    client = await gw.raw_authenticated()
    short_heartbeat = raw_frame(Heartbeat.msg_type, 1, b"\x00\x01\x02")  # 3 of its 16 body bytes
    bad_crc = bytearray(encode(Heartbeat(0, 0, 0, 2)))
    bad_crc[-1] ^= 0xFF
    client.send_bytes(short_heartbeat + bytes(bad_crc))
    assert (await client.expect(Nack)).result == ResultCode.MALFORMED_BODY
    assert (await client.expect(Nack)).result == ResultCode.BAD_CHECKSUM
    client.send_bytes(short_heartbeat)  # the limit (3) is reached, not exceeded: still open
    assert (await client.expect(Nack)).result == ResultCode.MALFORMED_BODY
    client.send(Heartbeat(0, 0, 0))
    assert isinstance(await client.receive(), Ack)
    client.send_bytes(short_heartbeat)
    received = await client.closed_after()
    assert [type(m) for m in received] == [Nack, Goodbye], received
    assert received[1].reason == ResultCode.TOO_MANY_ERRORS
    results = await good.stop()
    assert results and set(results) == {ResultCode.OK}


async def test_peer_that_never_reads_is_closed_and_others_unaffected(start_gateway):
    gw = await start_gateway(max_unsent_bytes=16 * 1024)
    good = await steady(gw)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small receive window
    sock.setblocking(False)
    client = await RawClient.connect(gw.host, gw.tcp_port, sock=sock)
    gw.clients.append(client)
    assert (await client.authenticate(gw.device)).result == ResultCode.OK
    burst = encode(Heartbeat(0, 0, 0, 9)) * 2000  # 68 KB of heartbeats; seq need not change (spec 2)
    sent = 0
    limit = 64 * 1024 * 1024  # kernel buffers on both sides hold a few MB at most
    try:
        while sent < limit and not client.writer.is_closing():
            client.writer.write(burst)
            await asyncio.wait_for(client.writer.drain(), WAIT_S)
            sent += len(burst)
            if gw.gateway.counters["slow_reader_closed"]:
                break
    except (ConnectionError, OSError):
        pass
    assert gw.gateway.counters["slow_reader_closed"] == 1, f"still open after {sent} bytes"
    assert gw.device.serial not in gw.gateway.sessions
    results = await good.stop()
    assert results and set(results) == {ResultCode.OK}
    assert len(gw.gateway.links) == 1
