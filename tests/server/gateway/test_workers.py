"""`lmg serve --workers 2` on PostgreSQL: both workers bind the shared port and serve terminals;
SQLite is refused with a message saying why."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from lmg.bench.load import provision
from lmg.server.cli import main
from lmg.simulators.fleet import FleetSpec, run_fleet

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

DSN = os.environ.get("LMG_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")


def test_workers_refuse_the_sqlite_store(tmp_path, capsys):
    assert main(["serve", "--workers", "2", "--data-dir", str(tmp_path)]) == 2
    assert "needs a PostgreSQL store" in capsys.readouterr().err


async def test_two_workers_share_the_port_and_both_serve(tmp_path):
    store = f"{DSN}?schema=test_workers_{secrets.token_hex(4)}"
    try:
        devices = await provision(store, str(tmp_path), "WT", 40)
    except Exception as exc:  # noqa: BLE001 - no PostgreSQL here
        message = f"PostgreSQL not reachable at {DSN} ({exc}); start it with " \
                  "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        if os.environ.get("LMG_REQUIRE_POSTGRES") == "1":  # CI: never a silent skip
            pytest.fail(f"LMG_REQUIRE_POSTGRES=1 and {message}", pytrace=False)
        pytest.skip(message)
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "lmg.server.cli", "serve", "--workers", "2", "--store", store,
                             "--data-dir", str(tmp_path), "--tcp", "127.0.0.1:0", "--ws", "", "--admin", "127.0.0.1:0",
                             "--ready-file", str(ready), "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "supervisor did not get ready"
            await asyncio.sleep(0.05)
        info = json.loads(ready.read_text())
        pids = [w["pid"] for w in info["workers"]]
        assert len(set(pids)) == 2 and info["pid"] == proc.pid
        before = [_sockets(pid) for pid in pids]
        grown: list[int] = []

        def on_progress(snap: dict) -> None:
            if snap["online"] == len(devices) and not grown:
                grown.extend(_sockets(pid) - b for pid, b in zip(pids, before))

        spec = FleetSpec(host="127.0.0.1", port=info["tcp"][1], devices=devices, scenario="idle", duration_s=1.0,
                         connect_concurrency=8, progress_s=0.2)
        summary = await run_fleet(spec, 1, on_progress=on_progress)
        assert (summary["peak_online"], summary["unexpected_disconnects"]) == (40, 0)
        # the kernel spread the 40 connections over both workers (SO_REUSEPORT)
        assert len(grown) == 2 and all(n > 0 for n in grown) and sum(grown) >= 40, grown
        assert await _ready_per_worker(info) == [True, True]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def _sockets(pid: int) -> int:
    return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd"))


async def _ready_per_worker(info) -> list[bool]:
    """Every worker answers /readyz on its own admin port."""
    out = []
    for worker in info["workers"]:
        host, port = worker["admin"]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        out.append(b" 200 " in status)
    return out


async def test_disabling_a_device_ends_its_session_on_whichever_worker_holds_it(tmp_path):
    """Across `--workers` on PostgreSQL the store notifies every worker (LISTEN/NOTIFY)."""
    from lmg.protocol import Goodbye, ResultCode
    from lmg.simulators.terminal import DeviceCredentials

    from tests.server.conftest import RawClient

    store = f"{DSN}?schema=test_revoke_{secrets.token_hex(4)}"
    try:
        devices = await provision(store, str(tmp_path), "RV", 8)
    except Exception as exc:  # noqa: BLE001 - no PostgreSQL here
        message = f"PostgreSQL not reachable at {DSN} ({exc})"
        if os.environ.get("LMG_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LMG_REQUIRE_POSTGRES=1 and {message}", pytrace=False)
        pytest.skip(message)
    ready = tmp_path / "ready.json"
    # a poll far longer than the test: only the notification can end the sessions in time
    proc = subprocess.Popen([sys.executable, "-m", "lmg.server.cli", "serve", "--workers", "2", "--store", store,
                             "--data-dir", str(tmp_path), "--tcp", "127.0.0.1:0", "--ws", "", "--admin", "127.0.0.1:0",
                             "--ready-file", str(ready), "--log-level", "warning", "--signal-poll-s", "3600"])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "supervisor did not get ready"
            await asyncio.sleep(0.05)
        port = json.loads(ready.read_text())["tcp"][1]
        clients = []
        for serial, secret in devices:
            client = await RawClient.connect("127.0.0.1", port)
            assert (await client.authenticate(DeviceCredentials(serial, bytes.fromhex(secret)))).result == 0
            clients.append(client)
        for serial, _ in devices:
            assert await asyncio.to_thread(main, ["device", "disable", serial, "--store", store,
                                                  "--data-dir", str(tmp_path)]) == 0
        for client in clients:
            received = await client.closed_after()
            assert [(type(m), m.reason) for m in received] == [(Goodbye, ResultCode.DEVICE_DISABLED)]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
