"""`lmg serve --workers 2` on PostgreSQL: a command or roster change made in another process (the
CLI, the store) reaches the terminal on whichever worker holds its session, by LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import date

import pytest

from lmg.bench.load import provision
from lmg.server.cli import main
from lmg.simulators.device import TerminalDevice
from lmg.simulators.terminal import DeviceCredentials, TerminalConnection, worker_id_for
from lmg.storage import CommandState, StoreUnavailable, WorkerIn, open_store
from tests.server.conftest import HOST, WAIT_S, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

DSN = os.environ.get("LMG_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")
PROJECT = "BENCH"  # the project bench.load.provision gives its devices


async def _provision_or_skip(store: str, data_dir: str, count: int) -> list:
    try:
        return await provision(store, data_dir, "DL", count)
    except (OSError, StoreUnavailable) as exc:  # no PostgreSQL here; any other error is the test's
        message = f"PostgreSQL not reachable at {DSN} ({exc})"
        if os.environ.get("LMG_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LMG_REQUIRE_POSTGRES=1 and {message}", pytrace=False)
        pytest.skip(message)


def _sockets(pid: int) -> int:
    return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd"))


async def test_commands_and_roster_changes_reach_terminals_on_either_worker(tmp_path):
    url = f"{DSN}?schema=test_downlink_{secrets.token_hex(4)}"
    devices = await _provision_or_skip(url, str(tmp_path), 16)  # both workers get some: 1 - 2**-15
    ready = tmp_path / "ready.json"
    # a poll far longer than the test: only the notification can deliver in time
    proc = subprocess.Popen([sys.executable, "-m", "lmg.server.cli", "serve", "--workers", "2", "--store", url,
                             "--data-dir", str(tmp_path), "--tcp", f"{HOST}:0", "--ws", "", "--admin", f"{HOST}:0",
                             "--ready-file", str(ready), "--log-level", "warning", "--signal-poll-s", "3600"])
    store = await open_store(url, data_dir=str(tmp_path))
    terminals: list[TerminalConnection] = []
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "supervisor did not get ready"
            await asyncio.sleep(0.05)
        info = json.loads(ready.read_text())
        pids = [worker["pid"] for worker in info["workers"]]
        before = [_sockets(pid) for pid in pids]
        await store.add_project(PROJECT, name="两个进程", region_code="620000")
        for serial, secret in devices:
            terminal = TerminalConnection(DeviceCredentials(serial, bytes.fromhex(secret)), HOST, info["tcp"][1],
                                          timeout_s=WAIT_S, device=TerminalDevice())
            await terminal.open()
            await terminal.authenticate()
            terminals.append(terminal)
        grown = [_sockets(pid) - b for pid, b in zip(pids, before)]
        assert len(pids) == 2 and all(n > 0 for n in grown), grown  # sessions on both workers
        # a roster change in this process: every terminal, on whichever worker, gets it
        face = await store.put_face(b"\xff\xd8\xff\xe0" + b"face" * 5000)
        await store.import_workers(PROJECT, [WorkerIn(worker_id_for(n), f"工人{n}", entry_date=date(2025, 1, 1),
                                                      face_sha256=face) for n in range(1, 4)],
                                   today=date(2025, 11, 24))
        for terminal in terminals:
            await terminal.wait_for_roster_version(3)
            assert len(terminal.device.workers) == 3
        # a command through the CLI (another process) for the first, through the store for every other
        assert await asyncio.to_thread(main, ["command", "send", devices[0][0], "door-open", "door=2", "--store", url,
                                              "--data-dir", str(tmp_path)]) == 0
        ids = [await store.enqueue_command(serial, 0x020C, b'{"door": 4, "duration_s": 9}',
                                           expires_at_ms=time.time_ns() // 1_000_000 + 600_000)
               for serial, _ in devices[1:]]
        await terminals[0].wait_until(lambda d: d.door_opens == [(2, 5)], what="the CLI's door-open")
        for terminal in terminals[1:]:
            await terminal.wait_until(lambda d: d.door_opens == [(4, 9)], what="the store's door-open")
        for command_id in ids:
            await wait_for(lambda: _acked(store, command_id), what="the outcome written by the worker holding it")
    finally:
        for terminal in terminals:
            await terminal.close()
        await store.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


async def _acked(store, command_id: int) -> bool:
    return (await store.get_command(command_id)).state is CommandState.ACKED
