"""`lmg serve --workers 2` on PostgreSQL: every worker's GET /metrics shows the node's totals,
and the supervisor's PROMETHEUS_MULTIPROC_DIR is gone after it exits."""

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
from prometheus_client.parser import text_string_to_metric_families

from lmg.bench.load import provision
from lmg.protocol import Ack, Punch
from lmg.simulators.terminal import DeviceCredentials, TerminalConnection, make_punch

from tests.server import log_scan
from tests.server.conftest import WAIT_S, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

DSN = os.environ.get("LMG_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")
DEVICES, PUNCHES = 24, 5


async def http_get(address, path: str) -> bytes:
    host, port = address
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), WAIT_S)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    response = await asyncio.wait_for(reader.read(), WAIT_S)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


async def scrape(address) -> dict:
    page = (await http_get(address, "/metrics")).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


async def test_every_workers_metrics_show_the_totals_of_all_workers(tmp_path):
    store = f"{DSN}?schema=test_workers_metrics_{secrets.token_hex(4)}"
    try:
        devices = await provision(store, str(tmp_path), "WM", DEVICES)
    except Exception as exc:  # noqa: BLE001 - no PostgreSQL here
        message = f"PostgreSQL not reachable at {DSN} ({exc}); start it with " \
                  "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        if os.environ.get("LMG_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LMG_REQUIRE_POSTGRES=1 and {message}", pytrace=False)
        pytest.skip(message)
    ready, log_path = tmp_path / "ready.json", tmp_path / "workers.log"
    log_scan.watch_file(log_path)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lmg.server.cli", "serve", "--workers", "2", "--store", store,
                                 "--data-dir", str(tmp_path), "--tcp", "127.0.0.1:0", "--ws", "",
                                 "--admin", "127.0.0.1:0", "--ready-file", str(ready), "--log-level", "debug"],
                                stdout=log, stderr=log)
    connections: list[TerminalConnection] = []
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            await asyncio.sleep(0.05)
        info = json.loads(ready.read_text())
        admins = [tuple(worker["admin"]) for worker in info["workers"]]
        with open(f"/proc/{info['workers'][0]['pid']}/environ", "rb") as fh:
            environ = dict(item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item)
        metrics_dir = environ[b"PROMETHEUS_MULTIPROC_DIR"].decode()
        assert os.path.isdir(metrics_dir)

        for serial, secret in devices:
            connection = TerminalConnection(DeviceCredentials(serial, bytes.fromhex(secret)), "127.0.0.1",
                                            info["tcp"][1], timeout_s=WAIT_S)
            connections.append(connection)
            await connection.open()
            await connection.authenticate()
        now = time.time_ns() // 1_000_000
        for connection in connections:
            for n in range(1, PUNCHES + 1):
                assert isinstance(await connection.request(Punch.of(make_punch(n, n, now))), Ack)
        # the kernel spread the terminals over both workers: each holds some of them
        held = [json.loads(await http_get(admin, "/readyz"))["connections"] for admin in admins]
        assert sum(held) == DEVICES and all(held), held

        async def totals_everywhere() -> bool:
            for admin in admins:
                m = await scrape(admin)
                if (m.get(("lmg_punches_stored_total", ())) != DEVICES * PUNCHES
                        or m.get(("lmg_frames_in_total", (("type", "punch"),))) != DEVICES * PUNCHES
                        or m.get(("lmg_authentications_total", (("result", "ok"),))) != DEVICES
                        or m.get(("lmg_connections", (("state", "authenticated"), ("transport", "tcp")))) != DEVICES
                        or m.get(("lmg_ack_latency_seconds_count", ())) != DEVICES * PUNCHES):
                    return False
            return True

        await wait_for(totals_everywhere, what="every worker's /metrics to show the totals")
        for connection in connections:
            await connection.close()
        connections.clear()

        async def all_closed() -> bool:
            for admin in admins:
                m = await scrape(admin)
                if (m.get(("lmg_connections", (("state", "authenticated"), ("transport", "tcp")))) != 0
                        or m.get(("lmg_connections_closed_total", (("reason", "peer_closed"),))) != DEVICES):
                    return False
            return True

        await wait_for(all_closed, what="every worker's /metrics to show the connections closed")
    finally:
        for connection in connections:
            await connection.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not os.path.exists(metrics_dir)  # removed by the supervisor at exit
