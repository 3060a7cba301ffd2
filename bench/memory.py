"""`lmg bench memory`: server RSS per idle authenticated terminal, against a bare baseline.

In one run: (a) a bare uvloop TCP server whose protocol does nothing, and (b) `lmg serve`
on a temporary SQLite store, each in its own process; N clients connect (and, for the
gateway, authenticate) and stay idle. The figure is the growth of the server's resident
set (VmRSS) divided by N, after the connections settle; the bare server shows what the
kernel socket and uvloop transport cost by themselves.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

NAME = "memory"
HELP = "server memory per idle authenticated connection, with a bare-server baseline"

BARE_SERVER = """
import asyncio, sys, uvloop
class Idle(asyncio.Protocol):
    def data_received(self, data): pass
async def main():
    server = await asyncio.get_running_loop().create_server(Idle, '127.0.0.1', 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)
uvloop.run(main())
"""


def add_arguments(parser) -> None:
    parser.add_argument("--connections", type=int, default=2000, help="idle connections to hold (default 2000)")
    parser.add_argument("--json", action="store_true")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _hold_raw(port: int, n: int) -> list:
    streams = []
    for _ in range(n):
        streams.append(await asyncio.open_connection("127.0.0.1", port))
    return streams


async def _hold_terminals(port: int, devices, concurrency: int = 200) -> list:
    from lmg.simulators.terminal import DeviceCredentials, TerminalConnection

    gate = asyncio.Semaphore(concurrency)
    connections = []

    async def one(serial, secret):
        async with gate:
            connection = TerminalConnection(DeviceCredentials(serial, secret), "127.0.0.1", port, timeout_s=60)
            await connection.open()
            await connection.authenticate()
            connections.append(connection)

    await asyncio.gather(*(one(s, k) for s, k in devices))
    return connections


async def _settled_rss(pid: int, seconds: float = 2.0) -> int:
    await asyncio.sleep(seconds)
    return rss_kib(pid)


async def _provision(data_dir: str, n: int) -> list[tuple[str, bytes]]:
    from lmg.storage import open_store

    store = await open_store(None, data_dir=data_dir)
    try:
        devices = []
        for i in range(n):
            device = await store.add_device(f"MEM{i:06d}", project_code="BENCH", region_code="620000")
            devices.append((device.serial, device.secret))
        return devices
    finally:
        await store.close()


def measure(connections: int = 2000) -> dict:
    _raise_fd_limit()
    # baseline: bare server
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER], stdout=subprocess.PIPE, text=True)
    assert bare.stdout is not None  # a pipe, as asked
    try:
        port = int(bare.stdout.readline())
        before = rss_kib(bare.pid)

        async def bare_run():
            held = await _hold_raw(port, connections)
            after = await _settled_rss(bare.pid)
            for _, writer in held:
                writer.close()
            return after

        bare_after = asyncio.run(bare_run())
    finally:
        bare.kill()
        bare.wait()
    bare_per_conn = (bare_after - before) / connections

    with tempfile.TemporaryDirectory(prefix="lmg-bench-memory-") as data_dir:
        devices = asyncio.run(_provision(data_dir, connections))
        ready = os.path.join(data_dir, "ready.json")
        server = subprocess.Popen(
            [sys.executable, "-m", "lmg.server.cli", "serve", "--data-dir", data_dir, "--tcp", "127.0.0.1:0", "--ws", "",
             "--admin", "", "--ready-file", ready, "--log-level", "warning",
             "--max-connections-per-address", str(connections + 10)],
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(ready):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("lmg serve did not start")
                time.sleep(0.05)
            with open(ready, encoding="utf-8") as fh:
                port = json.load(fh)["tcp"][1]
            time.sleep(0.5)
            before = rss_kib(server.pid)

            async def gateway_run():
                held = await _hold_terminals(port, devices)
                after = await _settled_rss(server.pid)
                for connection in held:
                    await connection.close()
                return after

            gateway_after = asyncio.run(gateway_run())
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    gateway_per_conn = (gateway_after - before) / connections
    return {
        "connections": connections,
        "rss_per_conn_kib": round(gateway_per_conn, 2),
        "bare_rss_per_conn_kib": round(bare_per_conn, 2),
        "gateway_overhead_per_conn_kib": round(gateway_per_conn - bare_per_conn, 2),
        "ratio_to_bare": round(gateway_per_conn / bare_per_conn, 2) if bare_per_conn > 0 else None,
        "target_rss_per_conn_kib": 5.0,
    }


def run(args) -> int:
    result = measure(args.connections)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"idle connections held: {result['connections']}")
        print(f"  bare uvloop server     {result['bare_rss_per_conn_kib']:>8} KiB/connection")
        print(f"  gateway (authenticated){result['rss_per_conn_kib']:>8} KiB/connection "
              f"(+{result['gateway_overhead_per_conn_kib']} KiB over bare)")
    return 0
