"""The kit on real sockets (127.0.0.1:0) against `lmg sim device`'s firmware in the same test.

Waits are shrunk on both sides (retransmit 0.5 s, heartbeat 1 s, back-off base 0.05 s,
maximum interval 1 s), so a whole examination takes about 15 s; every run is bounded by
the kit's time limit. Grading is the virtual-time tests' business (test_virtual.py); these
check the glue: TCP and WebSocket, the `lmg conformance serve` command, the report files.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmg.server.conformance.catalogue import CATALOGUE, KitTimings, Level
from lmg.server.conformance.examiner import Examiner
from lmg.server.conformance.report import REPORT_SCHEMA, schema_errors
from lmg.server.conformance.server import KitServer
from lmg.simulators.firmware import FirmwareConfig, SimulatedDevice
from lmg.simulators.reconnect import BackoffPolicy

SECRET = bytes(range(1, 33))
SERIAL = "SIM-KIT-1"
TIME_LIMIT_S = 90.0
# The kit's waits and the device's, the same shrunk numbers; a slack of 0.5 s absorbs a busy
# event loop on a shared 2-core machine.
WAITS = {"retransmit_wait_s": 0.5, "heartbeat_interval_s": 1, "busy_wait_s": 1, "locked_out_wait_s": 1,
         "max_backoff_s": 1.0, "backoff_base_s": 0.05, "goodbye_wait_s": 1, "command_wait_s": 3.0,
         "reconnect_wait_s": 5.0, "slack_s": 0.5, "heartbeat_gaps": 2, "punch_idle_s": 15.0}


def device(host: str, port: int, transport: str = "tcp", misbehave: frozenset[str] = frozenset()) -> SimulatedDevice:
    config = FirmwareConfig(SERIAL, SECRET, ack_timeout_s=0.5, misbehave=misbehave,
                            backoff=BackoffPolicy(base_s=0.05, cap_s=1.0), boot_s=0.1)
    return SimulatedDevice(config, host, port, transport=transport, punch_every_s=0.3, photo_share=0.5,
                           photo_bytes=3000)


def must_not_passed(report: dict) -> dict[str, str]:
    must = {s.id for s in CATALOGUE if s.level is Level.MUST}
    return {i["id"]: f"{i['verdict']}: {i['detail']}" for i in report["items"]
            if i["id"] in must and i["verdict"] != "pass"}


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_the_well_behaved_device_passes_every_must_on_real_sockets(transport):
    lines: list[str] = []
    examiner = Examiner(KitTimings(**WAITS), secret=SECRET, serial=SERIAL,
                        wall_at_start_ms=time.time_ns() // 1_000_000)
    kit = KitServer(examiner, "127.0.0.1", 0, transport=transport, time_limit_s=TIME_LIMIT_S, say=lines.append)
    host, port = await kit.start()
    sim = device(host, port, transport)
    running = asyncio.get_running_loop().create_task(sim.run())
    try:
        report = await kit.wait()
    finally:
        await sim.stop()
        await asyncio.wait_for(running, 10)
    assert must_not_passed(report) == {}
    assert report["summary"]["verdict"] == "conforms"
    assert examiner.done and not any("time limit" in line for line in lines)
    assert any("Punch a card now" in line for line in lines)
    assert schema_errors(report, REPORT_SCHEMA) == []


async def test_the_command_writes_a_report_that_grades_a_misbehaviour(tmp_path):
    """`lmg conformance serve` in its own process, the device here with ignore_set_time."""
    report_dir, ready = tmp_path / "report", tmp_path / "ready"
    waits = [f"--wait={name}={value}" for name, value in WAITS.items()]
    command = [sys.executable, "-m", "lmg.server.cli", "conformance", "serve", "--listen", "127.0.0.1:0",
               "--report", str(report_dir), "--serial", SERIAL, "--secret", SECRET.hex(),
               "--time-limit", str(TIME_LIMIT_S), "--ready-file", str(ready), *waits]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() or not ready.read_text():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the kit did not start listening in 30 s"
            await asyncio.sleep(0.05)
        host, _, port = ready.read_text().rpartition(":")
        sim = device(host, int(port), misbehave=frozenset({"ignore_set_time"}))
        running = asyncio.get_running_loop().create_task(sim.run())
        try:
            while proc.poll() is None:
                await asyncio.sleep(0.1)
        finally:
            await sim.stop()
            await asyncio.wait_for(running, 10)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err  # 1: the device does not conform
    report = json.loads((report_dir / "report.json").read_text())
    assert schema_errors(report, REPORT_SCHEMA) == []
    assert [i["id"] for i in report["items"] if i["verdict"] == "fail"] == ["time.set_time"]
    assert "does not conform" in out and "time.set_time" in out
    page = (report_dir / "report.html").read_text()
    for spec in CATALOGUE:
        assert f'id="{spec.id}"' in page
    assert "<script" not in page


def test_bad_flags_are_usage_errors(tmp_path: Path):
    def lmg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lmg.server.cli", "conformance", "serve", *args],
                              capture_output=True, text=True, timeout=60)

    base = ("--listen", "127.0.0.1:0", "--report", str(tmp_path))
    for args, says in [(("--listen", "nowhere", "--report", str(tmp_path)), "HOST:PORT"),
                       ((*base, "--secret", "abcd"), "32"),
                       ((*base, "--wait", "retransmit_wait_s=-1"), "greater than 0"),
                       ((*base, "--wait", "no_such_wait=1"), "NAME=SECONDS"),
                       ((*base, "--wait", "heartbeat_interval_s=1.5"), "whole number")]:
        done = lmg(*args)
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr)
