"""End to end under faults: terminals -> `lmg serve` -> `lmg forward` -> province simulator.

The province answers 20% of requests with 500, hangs 5% past the forwarder's timeout,
drops the connection of 5% (half of those after storing: the answer is lost), and is down (connection refused) for 10 s; the gateway and its forwarder are
SIGKILLed mid-stream and restarted on the same data directory, and the terminals resend
what was not acknowledged, as firmware does. After the faults stop, the province must
hold every punch the terminals saw acknowledged exactly once after its dedup, nothing
else, within a bounded drain time; the only dead letters are the records that really
are invalid (three punches with a wrong ID check digit, put straight into the store as
an older gateway might have let them through).

The gateway and forwarder run as two processes on one SQLite data directory (a
supported deployment: `lmg forward` alone); "the gateway" killed is both of them, as it
would be once `lmg serve` runs the forwarder itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from lmg.protocol import Ack, Punch, PunchBatch, ResultCode
from lmg.protocol.credentials import parse_credentials
from lmg.simulators.province import held_records, report
from lmg.simulators.terminal import DeviceCredentials, TerminalConnection, TerminalError, make_punch
from lmg.storage import PunchIn, open_store

from tests.server import log_scan
from tests.server.forwarding.conftest import APP_KEY, APP_SECRET, LMG, REPO, province_command

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
DEVICES = 12
PUNCH_GAP_S = 0.08  # per terminal: ~12 punches/s each, ~150/s in all, far above a real site
PUNCHING_S = 22.0  # terminals punch this long; the outage and the kill fall inside it
OUTAGE_AFTER_S, OUTAGE_S = 3.0, 10.0  # the province refuses connections from 3 s to 13 s
KILL_AT_S = 15.0  # while the forwarder works off the outage's backlog through the 500s and hangs
CALM_AT_S = 25.0  # the faults stop: the province restarts without them ...
FAULTS_SEEN_BOUND_S = 30.0  # ... once every kind of fault has happened at least once
DRAIN_BOUND_S = 45.0  # retry cap 30 s + lease 6 s + the backlog itself at a few hundred records/s
START_S = 30.0
INVALID_RECORDS = (1_000_001, 1_000_002, 1_000_003)
ACKNOWLEDGED = (ResultCode.OK, ResultCode.DUPLICATE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Process:
    """A subprocess whose output goes to a log file; `ready` waits for its --ready-file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, ready_file: Path | None = None):
        self.name, self.argv, self.ready_file = name, argv, ready_file
        self.log_path = log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        if name.startswith(("gateway", "forward")):
            log_scan.watch_file(self.log_path)  # the node's output must hold no full ID number or secret

    async def start(self) -> "Process":
        if self.ready_file and self.ready_file.exists():
            self.ready_file.unlink()
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=log, stderr=log, cwd=REPO,
                env={**{k: v for k, v in os.environ.items() if not k.startswith("LMG_")}, "PYTHONUNBUFFERED": "1"})
        if self.ready_file:
            end = time.monotonic() + START_S
            while not self.ready_file.exists():
                assert self.proc.returncode is None, f"{self.name} exited:\n{self.log()}"
                assert time.monotonic() < end, f"{self.name} not ready within {START_S} s:\n{self.log()}"
                await asyncio.sleep(0.05)
        return self

    def info(self) -> dict:
        return json.loads(self.ready_file.read_text())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(self.proc.wait(), 10)

    async def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 20)


class Terminal:
    """One simulated turnstile: numbered punches, resends what was never acknowledged."""

    def __init__(self, credentials: DeviceCredentials):
        self.credentials = credentials
        self.records: dict[int, object] = {}  # record_no -> PunchRecord, everything ever sent
        self.acked: set[int] = set()
        self.next_no = 1

    async def _connect(self, port: int) -> TerminalConnection:
        connection = TerminalConnection(self.credentials, HOST, port, timeout_s=5.0)
        await connection.open()
        try:
            await connection.authenticate()
        except BaseException:
            await connection.close()
            raise
        return connection

    def _note(self, reply) -> None:
        if isinstance(reply, Ack):
            for row in reply.results:
                assert row.result in ACKNOWLEDGED, row
                self.acked.add(row.record_no)

    async def resend_unacknowledged(self, connection) -> None:
        missing = sorted(n for n in self.records if n not in self.acked)
        for i in range(0, len(missing), 50):
            chunk = tuple(self.records[n] for n in missing[i:i + 50])
            self._note(await connection.request(PunchBatch(chunk)))

    async def run(self, port: int, until: float) -> None:
        """Resend, then punch every PUNCH_GAP_S until `until` (monotonic) or the link dies."""
        try:
            connection = await self._connect(port)
        except (TerminalError, OSError, asyncio.TimeoutError):
            return
        try:
            await self.resend_unacknowledged(connection)
            while time.monotonic() < until:
                n = self.next_no
                self.next_no += 1
                self.records[n] = make_punch(n, n, time.time_ns() // 1_000_000)
                self._note(await connection.request(Punch.of(self.records[n])))
                await asyncio.sleep(PUNCH_GAP_S)
        except (TerminalError, OSError, asyncio.TimeoutError, ConnectionError):
            return  # the gateway went away: what was not acknowledged is resent next time
        finally:
            await connection.close()


async def lmg_json(*args: str) -> dict:
    proc = await asyncio.create_subprocess_exec(LMG, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, cwd=REPO)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return orjson.loads(out)


async def test_province_holds_every_acknowledged_punch_once_through_faults_kill_and_outage(tmp_path):
    data, province_dir = tmp_path / "gateway", tmp_path / "province"
    data.mkdir()
    devices_csv = tmp_path / "devices.csv"
    await (await Process("generate", [LMG, "device", "generate", "--count", str(DEVICES), "--prefix", "GS-CHAOS-",
                                      "--project", "P-620100-CHAOS", "--region", "620100", "--out", str(devices_csv),
                                      "--data-dir", str(data)], tmp_path).start()).proc.wait()
    terminals = [Terminal(DeviceCredentials(serial, secret, project))
                 for serial, secret, project in parse_credentials(devices_csv.read_text().splitlines(), str(devices_csv))]
    assert len(terminals) == DEVICES
    for terminal in terminals:
        log_scan.watch_secret(terminal.credentials.secret)
    store = await open_store(None, data_dir=data)
    invalid_serial = terminals[0].credentials.serial
    await store.store_punches([PunchIn(invalid_serial, n, "620102198503000010", time.time_ns() // 1_000_000,
                                       1, 1, 365, None, 0) for n in INVALID_RECORDS])
    await store.close()

    port = free_port()
    url = f"http://{HOST}:{port}"
    province_args = [*province_command(), "serve", "--listen", f"{HOST}:{port}", "--data-dir", str(province_dir),
                     "--app-key", APP_KEY, "--app-secret", APP_SECRET, "--ready-file", str(tmp_path / "province.json")]
    chaos = ["--error-rate", "0.2", "--timeout-rate", "0.05", "--drop-rate", "0.05", "--hang-s", "30", "--seed", "20260101",
             "--down-after", str(OUTAGE_AFTER_S), "--down-for", str(OUTAGE_S)]
    serve_args = [LMG, "serve", "--tcp", f"{HOST}:0", "--ws", "", "--admin", f"{HOST}:0", "--data-dir", str(data),
                  "--ready-file", str(tmp_path / "gateway.json"), "--shutdown-grace-s", "3", "--log-level", "debug"]
    forward_args = [LMG, "forward", "run", "--data-dir", str(data), "--forward-url", url,
                    "--forward-app-key", APP_KEY, "--forward-app-secret", APP_SECRET, "--forward-timeout-s", "1",
                    "--forward-lease-s", "6", "--forward-batch-records", "50", "--forward-idle-poll-s", "0.2",
                    "--forward-status-interval-s", "2", "--log-level", "debug"]
    processes: list[Process] = []

    def process(name, argv, ready=None) -> Process:
        p = Process(name, argv, tmp_path, ready)
        processes.append(p)
        return p

    try:
        province = await process("province-chaos", province_args + chaos, tmp_path / "province.json").start()
        gateway = await process("gateway-1", serve_args, tmp_path / "gateway.json").start()
        forwarder = await process("forward-1", forward_args).start()
        started = time.monotonic()
        end_of_punching = started + PUNCHING_S

        phase1 = [asyncio.create_task(t.run(gateway.info()["tcp"][1], end_of_punching)) for t in terminals]
        await asyncio.sleep(KILL_AT_S)
        assert sum(len(t.acked) for t in terminals) > 0, gateway.log()
        await asyncio.gather(gateway.kill(), forwarder.kill())  # mid-stream: frames and batches in flight
        await asyncio.gather(*phase1)
        gateway = await process("gateway-2", serve_args, tmp_path / "gateway.json").start()
        forwarder = await process("forward-2", forward_args).start()
        await asyncio.gather(*(t.run(gateway.info()["tcp"][1], end_of_punching) for t in terminals))
        for _ in range(5):  # firmware keeps resending until every punch is acknowledged
            if all(len(t.acked) == len(t.records) for t in terminals):
                break
            await asyncio.gather(*(t.run(gateway.info()["tcp"][1], 0) for t in terminals))
        for t in terminals:
            assert t.acked == set(t.records), f"{t.credentials.serial}: never acknowledged {set(t.records) - t.acked}"

        # The faults stop: the province comes back without them (same data, same address).
        # First make sure each kind really happened: the dice are seeded, so the 10th
        # request has met a drop, a 500 and a hang; the status snapshots (every 2 s) keep
        # requests coming even when the outbox is empty.
        while True:
            faults = report(province_dir)["faults"]
            if time.monotonic() - started >= CALM_AT_S and all(faults.get(k) for k in ("500", "timeout", "drop")):
                break
            assert time.monotonic() - started < CALM_AT_S + FAULTS_SEEN_BOUND_S, faults
            await asyncio.sleep(0.2)
        assert faults.get("down_periods") == 1, faults
        await province.kill()
        province = await process("province-calm", province_args, tmp_path / "province.json").start()
        calm_at = time.monotonic()
        while True:
            status = await lmg_json("forward", "status", "--json", "--data-dir", str(data))
            if status["pending"] == 0:
                break
            assert time.monotonic() - calm_at < DRAIN_BOUND_S, (status, forwarder.log())
            await asyncio.sleep(0.5)
        drain_s = time.monotonic() - calm_at

        acknowledged = {(t.credentials.serial, n) for t in terminals for n in t.acked}
        held = held_records(province_dir)
        held_set = {(serial, n) for serial, n, _ in held}
        assert len(held) == len(held_set)  # its dedup: one row per record id
        assert held_set - acknowledged == set(), "the province holds punches no terminal had acknowledged"
        assert acknowledged - held_set == set(), "acknowledged punches missing at the province"
        order = defaultdict(list)
        for serial, n, _ in held:
            order[serial].append(n)
        for serial, numbers in order.items():
            assert numbers == sorted(numbers), f"{serial} reached the province out of order"

        dead = await lmg_json("forward", "dead-letters", "--json", "--data-dir", str(data))
        assert sorted((d["device_serial"], d["record_no"]) for d in dead) == \
            [(invalid_serial, n) for n in INVALID_RECORDS]
        assert all(d["reason"].startswith("province 2002:") for d in dead)
        assert status["dead_letters"] == len(INVALID_RECORDS)

        summary = report(province_dir)
        assert summary["unique"] == len(acknowledged)
        print(f"\nchaos: {len(acknowledged)} punches from {DEVICES} terminals, province {summary}, "
              f"drain after the faults stopped {drain_s:.1f} s")
        assert await gateway.terminate() == 0, gateway.log()
        assert await forwarder.terminate() == 0, forwarder.log()
    finally:
        for p in processes:
            await p.kill()
