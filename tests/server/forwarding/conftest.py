"""Fixtures for the forwarding tests: a province simulator in-process, a real SQLite store.

- `province(**faults)` starts `ProvinceSimulator` on an ephemeral loopback port over a
  fresh data directory and returns it (its `.url`, `.data_dir`); stopped afterwards.
- `store` is a fresh SQLite store with devices provisioned by `add_punches`.
- `forwarding(store, url, **overrides)` runs `run_forwarder` as a task and stops it.
- `LMG` / `province_command` run the real commands as subprocesses.

Every wait is bounded (`WAIT_S`); a stuck test fails saying what it waited for.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from lmg.server.forwarding.config import ForwarderConfig
from lmg.server.forwarding.forwarder import Forwarder
from lmg.simulators.province import Access, Faults, ProvinceSimulator
from lmg.simulators.terminal import worker_id_for
from lmg.storage import PunchIn, open_store

REPO = Path(__file__).resolve().parents[3]
LMG = str(Path(sys.executable).with_name("lmg"))
APP_KEY = "gs-test-0001"
APP_SECRET = "test-secret-5f1c0e7a"
WAIT_S = 20.0  # bound on a drain in these small tests; generous for a loaded 2-core box
PROJECT = "P-620100-TEST"


def province_command() -> list[str]:
    """The province simulator's command line (`lmg sim province`)."""
    return [LMG, "sim", "province"]


def fast_config(url: str, **overrides) -> ForwarderConfig:
    """Small batches and short waits so a test sees many requests and quick retries."""
    values = dict(url=url, app_key=APP_KEY, app_secret=APP_SECRET, batch_records=50, concurrency=2, timeout_s=1.0,
                  lease_s=5.0, idle_poll_s=0.05, retry_base_s=0.1, retry_cap_s=0.5, breaker_open_s=0.2,
                  breaker_max_open_s=1.0, status_interval_s=0)
    values.update(overrides)
    return ForwarderConfig(**values)


@pytest.fixture
async def province(tmp_path):
    started: list[ProvinceSimulator] = []

    async def start(*, seed: int = 7, access: Access | None = None, data_dir: Path | None = None,
                    **faults) -> ProvinceSimulator:
        directory = data_dir or tmp_path / f"province{len(started)}"
        simulator = ProvinceSimulator(directory, access or Access(APP_KEY, APP_SECRET), Faults(**faults), seed=seed)
        host, port = await simulator.start("127.0.0.1", 0)
        simulator.url = f"http://{host}:{port}"
        simulator.data_dir = directory
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        await simulator.stop()


@pytest.fixture
async def store(tmp_path):
    store = await open_store(None, data_dir=tmp_path / "gateway")
    yield store
    await store.close()


async def add_punches(store, devices: int, per_device: int, *, first_record: int = 1, serial_prefix: str = "GS-FWD-",
                      photo_sha=None) -> list[tuple[str, int]]:
    """Provision `devices` devices (if new) and store `per_device` punches each, interleaved by device."""
    serials = [f"{serial_prefix}{i:04d}" for i in range(devices)]
    for serial in serials:
        if await store.get_device(serial) is None:
            await store.add_device(serial, project_code=PROJECT, region_code="620100")
    now = time.time_ns() // 1_000_000
    records = [PunchIn(serial, n, worker_id_for(n), now - 60_000, 1 + n % 2, 1, 365, photo_sha,
                       1024 if photo_sha else 0)
               for n in range(first_record, first_record + per_device) for serial in serials]
    for i in range(0, len(records), 500):
        await store.store_punches(records[i:i + 500])
    return [(r.device_serial, r.record_no) for r in records]


class Running:
    def __init__(self, forwarder: Forwarder, task: asyncio.Task, stop: asyncio.Event):
        self.forwarder, self.task, self.stop_event = forwarder, task, stop

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, WAIT_S)


@pytest.fixture
async def forwarding():
    running: list[Running] = []

    def start(store, config: ForwarderConfig, **kw) -> Running:
        forwarder = Forwarder(store, config, **kw)
        stop = asyncio.Event()
        handle = Running(forwarder, asyncio.create_task(forwarder.run(stop)), stop)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if not handle.task.done():
            await handle.stop()


async def drained(store, timeout: float = WAIT_S, what: str = "the outbox to drain") -> None:
    """Wait until nothing is pending; fail naming the status after `timeout`."""
    end = time.monotonic() + timeout
    while True:
        status = await store.outbox_status(time.time_ns() // 1_000_000)
        if status.pending == 0:
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {status}")
        await asyncio.sleep(0.05)


def env_without_forward_vars() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("LMG_")}
