"""Two gateway nodes behind HAProxy on one PostgreSQL; one node is SIGKILLed mid-stream
(issue 17 §3).

What runs, all on loopback and all real processes except the terminals and the province:
- two `lmg serve` nodes (`--workers 1` each) on one fresh PostgreSQL schema, each with
  its own data directory and a forwarder to the province simulator (in this process);
- HAProxy in TCP mode in front of them (generated config, health checks every 200 ms,
  `fall 2 rise 2`, `option redispatch`), started in the foreground (`-db`);
- 40 terminals punching through HAProxy, every fifth punch with a 30 KB photo uploaded in
  16 KiB chunks after its ACK, and 6 idle terminals that stay connected and never come back
  once their connection is cut (a site whose power failed with the node).

Node A is killed with SIGKILL once a third of the punches are acknowledged. The terminals
it served lose their connections; they reconnect through HAProxy (back-off with jitter,
0.1-0.6 s), resend every punch not answered (same record_no) and resume their photos.

Why the assertions catch a node that loses what it acknowledged: an ACK promises that the
record is stored and will reach the province. Node A dies with records it acknowledged
still in the outbox (checked at the kill: the province answers slowly on purpose, so the
outbox cannot be empty) and some of them leased by A's forwarder. Those records are in
PostgreSQL, not in A, so node B's forwarder must take them once A's lease runs out. If
they were lost (not committed before the ACK, kept in A's memory, or left leased for
ever), the check "every acknowledged punch is at the province" fails; if they were stored
or sent twice, the check "stored exactly once" fails (per (device, record_no), counted in
SQL rather than assumed from a key) and the province's held set differs from the store's.
Photos the terminals saw completed must be at the province too. The idle devices A
served stay flagged online in the store (A wrote that and died); the store's presence
view, read with a clock one heartbeat timeout later, must show none of them online.

Needs PostgreSQL (LMG_REQUIRE_POSTGRES=1 fails instead of skipping) and HAProxy
(LMG_REQUIRE_HAPROXY=1 likewise). Every wait is bounded; the whole test takes 10-30 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lmg.protocol import Nack, Punch, ResultCode
from lmg.simulators.fleet import fleet_secret
from lmg.simulators.province import DB_NAME, Access, Faults, ProvinceSimulator, held_records
from lmg.simulators.terminal import DeviceCredentials, TerminalConnection, TerminalError, make_punch
from lmg.storage import StoreConfig, open_store
from tests.waiting import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

PG_DSN = os.environ.get("LMG_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")
APP_KEY, APP_SECRET = "gs-failover-01", "failover-secret-7d2e"
PROJECT = "P-620100-HAPX"
TERMINALS = 40
IDLE_TERMINALS = 6
PUNCHES = 30  # per terminal: 1,200 in all, enough that the kill lands mid-stream
PHOTO_EVERY = 5  # every fifth punch carries a photo: 240 photos, 7 MB
PHOTO_BYTES = 30_000  # a face capture (issue 17: 30 KB against a 70-byte record)
KILL_AT = TERMINALS * PUNCHES // 3  # acknowledged punches before node A dies
START_S = 30.0  # a node's start: migrations are done, so ~1-2 s; generous for a loaded 2-core box
RUN_S = 45.0  # terminals done after the kill (~5-10 s here)
DRAIN_S = 30.0  # everything at the province (B alone, 30 ms a request, 2 at a time: a few s)


def haproxy_binary() -> str:
    """HAProxy's path; skips (or fails with LMG_REQUIRE_HAPROXY=1) when it is not installed."""
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
                                             if os.access(p, os.X_OK)), None)
    if found:
        return found
    message = "haproxy is not installed (apt-get install haproxy; .ci/run does it)"
    if os.environ.get("LMG_REQUIRE_HAPROXY") == "1":
        pytest.fail(f"LMG_REQUIRE_HAPROXY=1 and {message}", pytrace=False)
    pytest.skip(f"SKIPPING THE HAPROXY FAILOVER TEST: {message}")


async def require_postgres() -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:  # refused, auth, no database: not here
        message = (f"PostgreSQL at {PG_DSN} is unreachable ({type(exc).__name__}: {exc}); start it with "
                   "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`")
        if os.environ.get("LMG_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LMG_REQUIRE_POSTGRES=1 and {message}", pytrace=False)
        pytest.skip(message)
    await conn.close()


def haproxy_config(listen_port: int, nodes: list[int], *, send_proxy: bool = False) -> str:
    """TCP mode, round robin, health checks every 200 ms (down after 2 failures, ~0.4 s).
    A connection HAProxy sends to a node that just died is refused, retried and, with
    `option redispatch`, sent to the other node. Client and server timeouts outlast the
    terminals' 30 s heartbeat interval, or HAProxy would cut idle terminals itself.
    `send_proxy`: each connection starts with a PROXY v2 header (tcp_proxy_protocol)."""
    extra = " send-proxy-v2" if send_proxy else ""
    servers = "\n".join(f"    server node{i} 127.0.0.1:{port} check inter 200ms fall 2 rise 2{extra}"
                        for i, port in enumerate(nodes))
    return f"""global
    maxconn 1000

defaults
    mode tcp
    timeout connect 1s
    timeout client 120s
    timeout server 120s
    timeout check 500ms
    retries 3
    option redispatch

frontend terminals
    bind 127.0.0.1:{listen_port}
    default_backend gateways

backend gateways
    balance roundrobin
{servers}
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Ledger:
    """What the terminals were told: the ground truth the store and the province are held to."""
    acked: set[tuple[str, int]] = field(default_factory=set)  # answered OK or DUPLICATE
    photos_done: set[bytes] = field(default_factory=set)  # sha256 of photos the gateway confirmed whole
    reconnects: int = 0


async def punching_terminal(serial: str, port: int, ledger: Ledger, deadline: float) -> None:
    """Send PUNCHES punches one at a time, each photo right after its punch's ACK; after a
    lost connection reconnect through HAProxy and resend what was not answered, as
    firmware does (docs/protocol.md §6.3, §6.5)."""
    rng = random.Random(serial)
    now_ms = time.time_ns() // 1_000_000
    photos = {n: rng.randbytes(PHOTO_BYTES) for n in range(1, PUNCHES + 1) if n % PHOTO_EVERY == 0}
    unanswered = [make_punch(n, n, now_ms - 60_000 + n, photos.get(n)) for n in range(1, PUNCHES + 1)]
    unsent_photos: dict[int, bytes] = {}
    credentials = DeviceCredentials(serial, fleet_secret(serial), PROJECT)
    first = True
    while unanswered or unsent_photos:
        assert time.monotonic() < deadline, f"{serial}: still {len(unanswered)} punches unanswered"
        if not first:
            ledger.reconnects += 1
            await asyncio.sleep(rng.uniform(0.1, 0.6))  # back-off with jitter
        first = False
        connection = TerminalConnection(credentials, "127.0.0.1", port, timeout_s=5.0)
        try:
            await connection.open()
            await connection.authenticate()
            for record_no, photo in sorted(unsent_photos.items()):  # resumed where the gateway stands
                await connection.upload_photo(record_no, photo, chunk_size=16_384)
                ledger.photos_done.add(hashlib.sha256(photo).digest())
                del unsent_photos[record_no]
            while unanswered:
                record = unanswered[0]
                reply = await connection.request(Punch.of(record))
                if isinstance(reply, Nack):
                    raise TerminalError(f"punch nacked: {ResultCode(reply.result).name}")
                [row] = reply.results
                assert row.result in (ResultCode.OK, ResultCode.DUPLICATE), (serial, row)
                ledger.acked.add((serial, record.record_no))
                unanswered.pop(0)
                if record.record_no in photos:
                    unsent_photos[record.record_no] = photos[record.record_no]
                    await connection.upload_photo(record.record_no, photos[record.record_no], chunk_size=16_384)
                    ledger.photos_done.add(hashlib.sha256(photos[record.record_no]).digest())
                    del unsent_photos[record.record_no]
                await asyncio.sleep(0.01)  # a site's pace, so that the kill lands mid-stream
        except (TerminalError, OSError, asyncio.TimeoutError):
            continue  # the node died under us (or HAProxy had no node yet): reconnect
        finally:
            await connection.close()


def start_node(name: str, tmp_path: Path, store_url: str, province_url: str) -> tuple[subprocess.Popen, Path]:
    data_dir = tmp_path / name
    data_dir.mkdir()
    ready = data_dir / "ready.json"
    command = [
        sys.executable, "-m", "lmg.server.cli", "serve", "--workers", "1", "--store", store_url,
        "--data-dir", str(data_dir), "--tcp", "127.0.0.1:0", "--ws", "", "--admin", "",
        "--ready-file", str(ready), "--log-level", "warning",
        "--forward-url", province_url, "--forward-app-key", APP_KEY, "--forward-app-secret", APP_SECRET,
        # Two requests of 50 records at a time against a province answering in 30 ms (photos
        # go one PUT each): the outbox holds a backlog when A dies. Lease 3 s, the least
        # (2 + 1) x 1 s allows: what A had claimed is B's 3 s after the kill, not 60 s.
        "--forward-batch-records", "50", "--forward-concurrency", "2", "--forward-timeout-s", "1",
        "--forward-lease-s", "3", "--forward-idle-poll-s", "0.1", "--forward-late-photo-s", "0.5",
        "--forward-retry-base-s", "0.1", "--forward-retry-cap-s", "0.5", "--forward-status-interval-s", "0",
        "--presence-flush-s", "0.5",
    ]
    with open(data_dir / "node.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    return proc, ready


async def node_port(proc: subprocess.Popen, ready: Path, name: str) -> int:
    end = time.monotonic() + START_S
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"node {name} exited with {proc.returncode}: "
                                 f"{(ready.parent / 'node.log').read_text(errors='replace')[-2000:]}")
        assert time.monotonic() < end, f"node {name} not ready within {START_S} s"
        await asyncio.sleep(0.05)
    return int(json.loads(ready.read_text())["tcp"][1])


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def province_photos(data_dir: Path) -> set[bytes]:
    conn = sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True)
    try:
        return {bytes.fromhex(row[0]) for row in conn.execute("SELECT sha256 FROM photos")}
    finally:
        conn.close()


async def test_a_node_killed_behind_haproxy_loses_no_acknowledged_punch_or_photo(tmp_path):
    haproxy = haproxy_binary()
    await require_postgres()
    import asyncpg

    schema = f"t_hapx_{secrets.token_hex(4)}"
    store_url = f"{PG_DSN}?schema={schema}"
    serials = [f"GS-HAPX-{i:04d}" for i in range(TERMINALS)]
    idle_serials = [f"GS-HAPX-IDLE-{i:02d}" for i in range(IDLE_TERMINALS)]
    kill_ms = 0
    clock = [0]  # the presence view's clock, set below
    store = await open_store(store_url, data_dir=tmp_path / "test-store", config=StoreConfig(),
                             clock_ms=lambda: clock[0] or time.time_ns() // 1_000_000)
    province = ProvinceSimulator(tmp_path / "province", Access(APP_KEY, APP_SECRET), Faults(latency_ms=30), seed=3)
    procs: dict[str, subprocess.Popen] = {}
    balancer: subprocess.Popen | None = None
    idle: list[TerminalConnection] = []
    try:
        for serial in serials + idle_serials:
            await store.add_device(serial, project_code=PROJECT, region_code="620100", secret=fleet_secret(serial))
        host, port = await province.start("127.0.0.1", 0)
        starting = {name: start_node(name, tmp_path, store_url, f"http://{host}:{port}") for name in ("a", "b")}
        procs = {name: proc for name, (proc, _) in starting.items()}
        ports = {name: await node_port(proc, ready, name) for name, (proc, ready) in starting.items()}
        listen = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(listen, [ports["a"], ports["b"]]))
        with open(tmp_path / "haproxy.log", "wb") as log:  # the child keeps its own descriptor
            balancer = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log)

        async def balancer_up() -> bool:
            assert balancer is not None and balancer.poll() is None, (tmp_path / "haproxy.log").read_text()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", listen)
            except OSError:
                return False
            writer.close()
            return True

        await wait_for(balancer_up, START_S, "HAProxy to listen")

        # The idle terminals: round robin puts about half on each node.
        for serial in idle_serials:
            connection = TerminalConnection(DeviceCredentials(serial, fleet_secret(serial), PROJECT), "127.0.0.1",
                                            listen, timeout_s=5.0)
            await connection.open()
            await connection.authenticate()
            idle.append(connection)

        async def idle_shown_online() -> bool:
            return all(d.online for d in (await store.get_devices(idle_serials)).values())

        await wait_for(idle_shown_online, START_S, "the idle terminals' presence flushed by their nodes")

        ledger = Ledger()
        deadline = time.monotonic() + RUN_S
        terminals = asyncio.gather(*(punching_terminal(s, listen, ledger, deadline) for s in serials))
        try:
            await wait_for(lambda: len(ledger.acked) >= KILL_AT or terminals.done(), RUN_S,
                           f"{KILL_AT} punches acknowledged")
            assert not terminals.done(), "the terminals finished before the kill: nothing was mid-stream"
            procs["a"].send_signal(signal.SIGKILL)
            procs["a"].wait(timeout=10)
            kill_ms = time.time_ns() // 1_000_000
            acked_at_kill = len(ledger.acked)
            unforwarded_at_kill = (await store.outbox_status(kill_ms)).pending
            await asyncio.wait_for(asyncio.shield(terminals), RUN_S)
        finally:
            if not terminals.done():
                terminals.cancel()
                await asyncio.gather(terminals, return_exceptions=True)
        assert acked_at_kill < TERMINALS * PUNCHES and unforwarded_at_kill > 0, \
            "the kill left no acknowledged-but-unforwarded punch: the test proved nothing"
        assert ledger.reconnects > 0, "no terminal was on node A"
        expected = {(s, n) for s in serials for n in range(1, PUNCHES + 1)}
        assert ledger.acked == expected

        # Stored exactly once: counted per (device, record_no), not assumed from a key.
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            await conn.execute(f'SET search_path TO "{schema}"')
            counts = await conn.fetch("SELECT device_serial, record_no, count(*) FROM punches "
                                      "GROUP BY device_serial, record_no")
        finally:
            await conn.close()
        stored = {(r[0], r[1]): r[2] for r in counts}
        assert set(stored) == expected, "the store holds other punches than the acknowledged ones"
        assert all(n == 1 for n in stored.values()), {k: n for k, n in stored.items() if n != 1}

        async def all_at_province() -> bool:
            return ({(s, n) for s, n, _ in held_records(tmp_path / "province")} >= expected
                    and province_photos(tmp_path / "province") >= ledger.photos_done)

        try:
            await wait_for(all_at_province, DRAIN_S, "every acknowledged punch and confirmed photo at the province")
        except AssertionError as exc:  # say what is missing and where it stands
            held = {(s, n) for s, n, _ in held_records(tmp_path / "province")}
            photos_missing = ledger.photos_done - province_photos(tmp_path / "province")
            raise AssertionError(
                f"{exc}: {len(expected - held)} punches and {len(photos_missing)} photos missing; outbox "
                f"{await store.outbox_status(time.time_ns() // 1_000_000)}, photos unforwarded "
                f"{len(await store.unforwarded_photos(2**62, 10_000))}") from None
        assert {(s, n) for s, n, _ in held_records(tmp_path / "province")} == expected
        assert len(ledger.photos_done) == TERMINALS * (PUNCHES // PHOTO_EVERY)

        # Presence: the idle terminals node A served lost their connections with it and
        # never came back. A left them flagged online; past the heartbeat timeout
        # (presence_stale_ms, 90 s of heartbeats + 5 s of flush) the view must show them
        # offline, read with a clock moved there instead of waiting 95 s.
        cut = [c.credentials.serial for c in idle if c._reader_task is not None and c._reader_task.done()]
        assert cut, "no idle terminal was on node A"
        assert len(cut) < IDLE_TERMINALS, "HAProxy sent every idle terminal to node A"
        left_online = [s for s, d in (await store.get_devices(cut)).items() if d.online]
        assert sorted(left_online) == sorted(cut), "node A's devices should still be flagged as A left them"
        clock[0] = kill_ms + StoreConfig().presence_stale_ms + 1
        shown = await store.get_devices(cut)
        assert not [s for s, d in shown.items() if d.online], "a device of the dead node is shown online"
        assert not [d.serial for d in await store.list_devices(online=True) if d.serial in cut]
    finally:
        for connection in idle:
            await connection.close()
        stop(balancer)
        for proc in procs.values():
            stop(proc)
        await province.stop()
        await store.close()
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
