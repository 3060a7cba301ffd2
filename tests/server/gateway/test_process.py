"""`lmg serve` as a real process: SIGTERM drains in order, SIGKILL loses no acknowledged punch."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter

from lmg.protocol import Ack, Punch, ResultCode
from lmg.simulators.terminal import TerminalConnection, TerminalError, make_punch, upload_punches
from lmg.storage import open_store

from tests.server.conftest import HOST, WAIT_S, provision, wait_for

ACKNOWLEDGED = (ResultCode.OK, ResultCode.DUPLICATE)


class PunchStream:
    """One terminal sending punches with a window of 8 until its connection ends."""

    def __init__(self, credentials, port: int, window: int = 8):
        self.credentials = credentials
        self.port = port
        self.window = window
        self.acked: set[int] = set()  # record_nos an ACK row answered OK or DUPLICATE
        self.sent: set[int] = set()
        self.now = time.time_ns() // 1_000_000
        self.connection: TerminalConnection | None = None
        self.task: asyncio.Future | None = None

    async def start(self) -> "PunchStream":
        self.connection = TerminalConnection(self.credentials, HOST, self.port, timeout_s=WAIT_S)
        await self.connection.open()
        await self.connection.authenticate()
        numbers = itertools.count(1)
        self.task = asyncio.gather(*(self._worker(numbers) for _ in range(self.window)))
        return self

    def record(self, n: int):
        return make_punch(n, n, self.now)

    async def _worker(self, numbers) -> None:
        while True:
            n = next(numbers)
            self.sent.add(n)
            try:
                reply = await self.connection.request(Punch.of(self.record(n)))
            except (TerminalError, asyncio.TimeoutError, ConnectionError, OSError):
                return
            if not isinstance(reply, Ack):
                return  # NACK: nothing stored for that frame; stop like firmware backing off
            for row in reply.results:
                assert row.result in ACKNOWLEDGED, row
                self.acked.add(row.record_no)

    async def finished(self) -> None:
        await asyncio.wait_for(self.task, WAIT_S)
        await self.connection.close()


async def stored_records(data_dir) -> Counter:
    store = await open_store(None, data_dir=data_dir)
    try:
        return Counter([(p.device_serial, p.record_no) async for p in store.iter_punches()])
    finally:
        await store.close()


async def test_sigterm_acks_in_flight_punches_says_goodbye_and_exits_0(tmp_path, server_process):
    data = tmp_path / "data"
    grace = 3.0
    [device] = await provision(data, ["GS-PROC-000001"])
    server = await server_process(data, "--shutdown-grace-s", str(grace))
    stream = await PunchStream(device, server.ports["tcp"]).start()
    await wait_for(lambda: len(stream.acked) >= 100, what="100 acknowledged punches")
    server.send_signal(signal.SIGTERM)
    returncode = await server.wait(grace + 5)  # the grace bound, plus process start-up/exit slack
    assert returncode == 0, server.log()
    await stream.finished()
    assert stream.connection.closed_reason == ResultCode.SHUTTING_DOWN, server.log()
    stored = await stored_records(data)
    missing = sorted(n for n in stream.acked if (device.serial, n) not in stored)
    assert missing == [], f"acknowledged but not stored: {missing[:20]}"
    assert set(stored.values()) == {1}
    assert len(stored) <= len(stream.sent)


async def test_sigkill_loses_no_acknowledged_punch_and_stores_each_once(tmp_path, server_process):
    data = tmp_path / "data"
    devices = await provision(data, [f"GS-KILL-{i:06d}" for i in range(4)])
    server = await server_process(data)
    streams = [await PunchStream(d, server.ports["tcp"]).start() for d in devices]
    await wait_for(lambda: all(len(s.acked) >= 30 for s in streams), what="30 acknowledged punches per terminal")
    server.send_signal(signal.SIGKILL)
    assert await server.wait(WAIT_S) == -signal.SIGKILL
    for stream in streams:
        await stream.finished()
    acked_before = {d.serial: set(s.acked) for d, s in zip(devices, streams)}

    server = await server_process(data)  # the same data directory

    async def resend(device, stream):
        async def connect():
            connection = TerminalConnection(device, HOST, server.ports["tcp"], timeout_s=WAIT_S)
            await connection.open()
            await connection.authenticate()
            return connection

        records = [stream.record(n) for n in sorted(stream.sent)]
        return await upload_punches(connect, records, batch_size=20, window=4)

    tallies = await asyncio.gather(*(resend(d, s) for d, s in zip(devices, streams)))
    for device, stream, tally in zip(devices, streams, tallies):
        assert tally.errors == 0 and tally.rejected == 0, tally
        assert tally.acked + tally.duplicates == len(stream.sent)
        assert tally.duplicates >= len(acked_before[device.serial])  # every one acked before the kill was kept
    server.send_signal(signal.SIGTERM)
    assert await server.wait(WAIT_S) == 0, server.log()

    stored = await stored_records(data)
    assert set(stored.values()) == {1}, "a punch stored twice"
    for device, stream in zip(devices, streams):
        mine = {n for (serial, n) in stored if serial == device.serial}
        assert acked_before[device.serial] <= mine
        assert mine == stream.sent
