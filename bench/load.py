"""`lmg bench load`: the gateway under a simulated fleet, against same-run references.

One command runs the matrix, each server in its own process and driven by the same fleet
(simulators/fleet.py) from this one:

- **bare baseline**: a minimal uvloop server that reads fixed-size frames (the size of a
  PUNCH frame) and writes a canned ACK for each: no parsing, no storage. The ceiling the
  machine and the client allow.
- **gateway**: `lmg serve` on the embedded SQLite store (WAL, fsync'd group commit), the
  ACK sent only after the commit.
- **mosquitto** (when the binary is on PATH): QoS 1 PUBLISH of the same punch frames,
  PUBACK awaited, persistence off. A mature broker on the same box, for scale.

Figures: acked punches/s (closed loop, every terminal's window of 8 kept full), ack latency
p50/p99/p99.9 at half the baseline's rate (open loop), server CPU seconds, server RSS per
idle authenticated connection (bare server beside it), storm (every idle terminal drops and
reconnects; time until all are authenticated again), backlog ingest (terminals come back
with stored punches and upload them in batches), and the cost of the metrics: acks per
server CPU-second of two gateways, metrics on (scraped every second) and metrics off,
driven in alternating closed-loop phases (on, off, off, on, ...) so drift of the box hits
both alike. Timings on a shared 2-core box are noisy: the figures to read are the ratios
to the baseline measured in the same run.

Efficiency, which the load generator sharing the cores cannot move: acks per CPU-second
of the server's own processes (utime + stime from /proc/<pid>/stat of every process of the
server: the gateway's supervisor, workers and SQLite writer; the bare server; Mosquitto) in
the closed-loop phase, and the gateway's ratio to the bare server and to Mosquitto.

Two more phases: the store comparison (closed loop on SQLite, on PostgreSQL, on PostgreSQL
with `--workers 2`, one run) and outage recovery (bench/load_outage.py: terminals come back
at once with hours of punches and photos, against the disk's fsync'd rate). `--phase
outage` runs that phase alone (results load-{quick,full}-outage.{md,json}).

Results go to bench/results/load-quick.{md,json} or load-full.{md,json}; `--json` prints
the summary object (baseline_acks_per_s, gateway_acks_per_s, p99_ms, rss_per_conn_kib,
gateway_acks_per_cpu_s, outage_acked_s, disk_photo_mb_per_s, ...).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

NAME = "load"
HELP = "throughput, latency, memory, storm and backlog of the gateway against a bare server (and Mosquitto)"
RESULTS = Path(__file__).resolve().parent / "results"

# Sizes: --quick's matrix must finish within 3 minutes on a 2-core box, servers' start-up
# included; its store comparison and outage phase add about 2 minutes more on an idle box.
# The open-loop latency phases run the fleet in `latency_fleet_processes` processes: one
# process cannot offer half the baseline's rate to 256 terminals one frame at a time (the
# bare server, driven so, showed p99 137 ms at 24.8k of 27.5k/s asked; with two, 19 ms).
# `metrics_rounds`: pairs of closed-loop phases (metrics on, metrics off) for the metrics cost,
# run in ABBA order; `metrics_load_s` each.
# `stores_s`: each closed-loop phase of the store comparison (SQLite, PostgreSQL on 1 and 2
# workers). `outage_*`: the outage-recovery phase (bench/load_outage.py); `disk_files`: the
# fsync'd 30 KB files written beside it for the disk's rate (3,000 = 92 MB, ~10 s on a disk
# of 10 MB/s; 500 = 15 MB for --quick).
QUICK = dict(load_devices=64, load_s=6.0, warmup_s=1.0, idle_devices=2000, storm_devices=2000,
             backlog_devices=20, backlog_records=5000, backlog_batch=100, fleet_processes=1,
             latency_fleet_processes=2, workers_devices=0, metrics_rounds=6, metrics_load_s=5.0,
             stores_s=5.0, outage_devices=200, outage_hours=2.0, outage_photo_share=0.3, outage_batch=60,
             outage_workers=2, outage_store="auto", outage_fleet_processes=1, outage_cap_s=300.0, disk_files=500)
FULL = dict(load_devices=256, load_s=20.0, warmup_s=2.0, idle_devices=15000, storm_devices=15000,
            backlog_devices=100, backlog_records=10000, backlog_batch=250, fleet_processes=2,
            latency_fleet_processes=2, metrics_rounds=6, metrics_load_s=10.0,
            workers_devices=100_000, workers=6, hold_s=600.0, workers_storm_devices=20_000,
            stores_s=10.0, outage_devices=10_000, outage_hours=2.0, outage_photo_share=0.3, outage_batch=60,
            outage_workers=2, outage_store="postgres", outage_fleet_processes=2, outage_cap_s=1500.0,
            disk_files=3000)
PHASES = ("all", "outage")  # --phase: the whole run, or the outage-recovery phase alone
DEFAULT_PG_DSN = "postgresql://127.0.0.1:5432/test"  # LMG_TEST_PG_DSN overrides it
# The many-connection phase (full run): `--workers` gateway processes on PostgreSQL, the fleet
# spread so that no process holds 20,000 descriptors and no (source, destination) address
# pair needs more than ~28,000 ephemeral ports.
TERMINALS_PER_FLEET_PROCESS = 15_000
TERMINALS_PER_SOURCE_ADDRESS = 14_000
TARGETS = {"gateway_to_baseline": 0.6, "p99_ms": 25.0, "rss_per_conn_kib": 5.0, "storm_s": 10.0,
           "backlog_records_per_s": 100_000.0, "metrics_cost_ratio": 0.95}
METRICS_SCRAPE_S = 1.0  # Prometheus scrapes every 15-60 s; every second is the expensive end

BARE_SERVER = """
import asyncio, sys, uvloop
FRAME, ACK = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
class Acker(asyncio.Protocol):
    pending = 0
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data):
        total = self.pending + len(data)
        self.pending = total % FRAME
        if total >= FRAME:
            self.transport.write(ACK * (total // FRAME))
async def main():
    server = await asyncio.get_running_loop().create_server(Acker, '127.0.0.1', 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)
uvloop.run(main())
"""


class BenchError(RuntimeError):
    """A phase of the benchmark could not run (a server did not start, a fleet failed)."""


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes, within 3 minutes")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")
    parser.add_argument("--no-mosquitto", action="store_true", help="skip the Mosquitto reference")
    parser.add_argument("--out", default=str(RESULTS), help="directory for the markdown table and JSON")
    parser.add_argument("--connections", type=int, help="full run: terminals held on --workers (default 100000)")
    parser.add_argument("--hold-s", type=float, help="full run: how long to hold them (default 600)")
    parser.add_argument("--workers", type=int, help="full run: gateway processes for the held terminals (default 6)")
    parser.add_argument("--phase", choices=PHASES, default="all",
                        help="all (default), or only the outage-recovery phase (results go to load-*-outage.*)")
    parser.add_argument("--outage-devices", type=int,
                        help="terminals that come back after the outage (default 10000; --quick 200)")
    parser.add_argument("--outage-hours", type=float, help="hours of punches each brings back (default 2)")
    parser.add_argument("--outage-cap-s", type=float,
                        help="cap on the outage phase: upload and forwarding (default 1500; --quick 300)")
    parser.add_argument("--outage-store", choices=("auto", "postgres", "sqlite"),
                        help="store of the outage phase (full run: postgres; --quick: auto, PostgreSQL if it answers)")


# --- servers ------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """`pid` and its living descendants: a server's cost includes its helper processes
    (the gateway's SQLite writer process, for one)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # exited while we looked
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def _sum_living(pids: list[int], measure) -> float:
    total = 0
    for pid in pids:
        try:
            total += measure(pid)
        except (OSError, BenchError):
            pass  # a helper that exited between listing and reading
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server subprocess: its pid(s) and port, stopped on exit."""

    def __init__(self, name: str, proc: subprocess.Popen, port: int, pids: list[int] | None = None,
                 admin_port: int | None = None):
        self.name, self.proc, self.port = name, proc, port
        self.pids = pids or [proc.pid]
        self.admin_port = admin_port

    def members(self) -> list[int]:
        """The server's processes: the one started, its workers, and their living helpers
        (the `--workers` supervisor, each worker's SQLite writer process), each once."""
        return sorted({p for pid in (self.proc.pid, *self.pids) for p in family(pid)})

    def rss_kib(self) -> int:
        """Resident memory of the server's processes and their helpers."""
        return int(_sum_living(self.members(), rss_kib))

    def cpu_s(self) -> float:
        """CPU seconds (utime + stime in /proc/<pid>/stat) of the server's processes and their
        living helpers so far: the load generator's own CPU is not in it."""
        return _sum_living(self.members(), cpu_s)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def punch_frame_sizes() -> tuple[int, bytes]:
    from lmg.protocol import Ack, MessageType, Punch, RecordResult, ResultCode, encode
    from lmg.simulators.terminal import make_punch

    frame = encode(Punch.of(make_punch(1, 1, int(time.time() * 1000)), 1))
    ack = encode(Ack(0, MessageType.PUNCH, 0, (RecordResult(1, ResultCode.OK),), 0))
    return len(frame), ack


def start_bare() -> Server:
    size, ack = punch_frame_sizes()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(size), ack.hex()], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None  # a pipe, as asked
    return Server("bare", proc, int(proc.stdout.readline()))


def start_mosquitto(work: str) -> Server | None:
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if not binary:
        return None
    port = free_port()
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w", encoding="utf-8") as fh:
        fh.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\n"
                 "max_queued_messages 100000\nlog_type error\n")
    proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port, proc, "mosquitto")
    return Server("mosquitto", proc, port)


def _wait_port(port: int, proc: subprocess.Popen, name: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{name} did not listen on {port} within {timeout_s} s")


async def provision(store_url: str | None, data_dir: str, prefix: str, count: int) -> list[list[str]]:
    """Devices `prefix`000001.. with derived secrets (simulators.fleet.fleet_secret)."""
    from lmg.simulators.fleet import fleet_secret
    from lmg.storage import open_store

    store = await open_store(store_url, data_dir=data_dir)
    try:
        devices = [[f"{prefix}{i:06d}", fleet_secret(f"{prefix}{i:06d}").hex()] for i in range(1, count + 1)]
        gate = asyncio.Semaphore(64)

        async def add(serial: str, secret: str) -> None:
            async with gate:
                await store.add_device(serial, project_code="BENCH", region_code="620000", secret=bytes.fromhex(secret))

        for start in range(0, count, 5000):
            await asyncio.gather(*(add(s, k) for s, k in devices[start:start + 5000]))
        return devices
    finally:
        await store.close()


def start_gateway(data_dir: str, *, store: str = "", workers: int = 1, extra: tuple = (), admin: bool = False) -> Server:
    ready = os.path.join(data_dir, "ready.json")
    if os.path.exists(ready):  # left by an earlier server on this data directory
        os.unlink(ready)
    command = [sys.executable, "-m", "lmg.server.cli", "serve", "--data-dir", data_dir, "--tcp", "127.0.0.1:0",
               "--ws", "", "--admin", "127.0.0.1:0" if admin else "", "--ready-file", ready, "--log-level", "warning",
               "--max-connections-per-address", "100000", "--accept-rate", "20000", "--accept-burst", "20000", *extra]
    if store:
        command += ["--store", store]
    if workers > 1:
        port = free_port()
        command[command.index("127.0.0.1:0")] = f"127.0.0.1:{port}"
        command += ["--workers", str(workers)]
    proc = subprocess.Popen(command)
    deadline = time.monotonic() + 60
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise BenchError("lmg serve did not start (see its log above)")
        time.sleep(0.05)
    with open(ready, encoding="utf-8") as fh:
        info = json.load(fh)
    pids = [w["pid"] for w in info.get("workers", [])] or [info["pid"]]
    return Server("gateway", proc, info["tcp"][1], pids, admin_port=info["admin"][1] if "admin" in info else None)


# --- phases -------------------------------------------------------------------------------------


def box_times() -> list[int]:
    """The machine's CPU time counters (/proc/stat, all CPUs): user nice system idle iowait irq softirq steal."""
    with open("/proc/stat", encoding="ascii") as fh:
        return [int(x) for x in fh.readline().split()[1:9]]


def box_share(before: list[int], after: list[int]) -> dict:
    """How the box's CPU time went between two `box_times`: idle, and stolen by the hypervisor
    (a shared VM's neighbours; figures from a phase with much steal are not comparable)."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent) or 1
    return {"box_idle_pct": round(100 * (spent[3] + spent[4]) / total, 1), "box_steal_pct": round(100 * spent[7] / total, 1)}


async def fleet_run(server: Server, devices: list, **spec) -> dict:
    from lmg.simulators.fleet import FleetSpec, run_fleet

    processes = spec.pop("processes", 1)
    on_progress = spec.pop("on_progress", None)
    fleet = FleetSpec(host="127.0.0.1", port=server.port, devices=devices, **spec)
    cpu_before = server.cpu_s()
    box_before = box_times()
    summary = await run_fleet(fleet, processes, on_progress=on_progress)
    summary["server_cpu_s"] = round(server.cpu_s() - cpu_before, 2)
    summary.update(box_share(box_before, box_times()))
    return summary


def open_loop(summary: dict, rate: float) -> dict:
    """What an open-loop latency phase reports."""
    return {"rate": round(rate), "acks_per_s": summary["acks_per_s"], "latency_ms": summary["latency_ms"],
            "server_cpu_s": summary["server_cpu_s"], "sent": summary["sent"], "acked": summary["acked"],
            "box_idle_pct": summary["box_idle_pct"], "box_steal_pct": summary["box_steal_pct"]}


def throughput(summary: dict) -> dict:
    return {"acks_per_s": summary["acks_per_s"], "latency_ms": summary["latency_ms"],
            "server_cpu_s": summary["server_cpu_s"],
            "acks_per_server_cpu_s": round(summary["acked"] / summary["server_cpu_s"], 1) if summary["server_cpu_s"] else None,
            "errors": summary["nacks"] + summary["answer_timeouts"] + summary["unexpected_disconnects"]}


async def idle_rss(server: Server, devices: list, dialect: str, processes: int = 1) -> dict:
    """Server RSS growth per idle connection (authenticated, for the gateway) once all are up."""
    from lmg.simulators.fleet import FleetSpec, run_fleet

    await asyncio.sleep(0.5)
    before = server.rss_kib()
    sample: dict = {}

    def on_progress(snap: dict) -> None:
        if snap.get("online", 0) >= len(devices) and "at" not in sample:
            sample["at"] = time.monotonic()

    async def watch() -> None:
        while "at" not in sample or time.monotonic() - sample["at"] < 2.0:
            await asyncio.sleep(0.1)
        sample["rss"] = server.rss_kib()

    spec = FleetSpec(host="127.0.0.1", port=server.port, devices=devices, scenario="idle", dialect=dialect,
                     duration_s=3.0, heartbeat_s=-1 if dialect != "lmg" else 0, progress_s=0.25)
    watcher = asyncio.create_task(watch())
    summary = await run_fleet(spec, processes, on_progress=on_progress)
    try:
        await asyncio.wait_for(watcher, 1.0)
    except asyncio.TimeoutError:
        watcher.cancel()
        raise BenchError(f"{len(devices)} idle connections were not all up ({summary['peak_online']} were)") from None
    return {"connections": len(devices), "rss_per_conn_kib": round((sample["rss"] - before) / len(devices), 2),
            "connect_s": summary["connect_s"], "unexpected_disconnects": summary["unexpected_disconnects"]}


async def matrix(sizes: dict, *, mosquitto: bool, log) -> dict:
    from lmg.simulators.fleet import raise_fd_limit

    raise_fd_limit()
    result: dict = {"sizes": sizes}
    load = dict(scenario="rush", duration_s=sizes["load_s"], warmup_s=sizes["warmup_s"], window=8, batch_size=1)
    raw = [[f"RAW{i:06d}", "00"] for i in range(1, max(sizes["load_devices"], sizes["idle_devices"]) + 1)]

    log("bare baseline: closed-loop load")
    with start_bare() as bare:
        base = await fleet_run(bare, raw[:sizes["load_devices"]], dialect="bare", heartbeat_s=-1, **load)
        result["baseline"] = throughput(base)
        log(f"  {result['baseline']['acks_per_s']} acks/s")
        baseline_rate = result["baseline"]["acks_per_s"] or 0
        rate = max(1.0, baseline_rate / 2)
        log(f"bare baseline: open-loop latency at half its rate ({rate:.0f}/s), the floor of client and box")
        half = await fleet_run(bare, raw[:sizes["load_devices"]], dialect="bare", heartbeat_s=-1,
                               **{**load, "rate": rate}, processes=sizes["latency_fleet_processes"])
        result["baseline"]["latency_at_half"] = open_loop(half, rate)
        log(f"  p99 {half['latency_ms']['p99_ms']} ms")
        result["baseline"]["idle"] = await idle_rss(bare, raw[:sizes["idle_devices"]], "bare")

    with tempfile.TemporaryDirectory(prefix="lmg-bench-load-") as work:
        if mosquitto:
            broker = start_mosquitto(work)
            if broker is None:
                result["mosquitto"] = None
                log("mosquitto: binary not found, skipped")
            else:
                log("mosquitto: closed-loop QoS 1 load")
                with broker:
                    result["mosquitto"] = throughput(await fleet_run(broker, raw[:sizes["load_devices"]], dialect="mqtt",
                                                                     heartbeat_s=-1, **load))
                    log(f"  {result['mosquitto']['acks_per_s']} pubacks/s")

        data_dir = os.path.join(work, "gateway")
        count = max(sizes["load_devices"], sizes["idle_devices"], sizes["storm_devices"], sizes["backlog_devices"])
        devices = await provision(None, data_dir, "LD", count)
        with start_gateway(data_dir) as gateway:
            log("gateway: closed-loop load (SQLite, fsync'd group commit)")
            summary = await fleet_run(gateway, devices[:sizes["load_devices"]], **load)
            result["gateway"] = throughput(summary)
            result["gateway"]["rejected"] = summary["rejected"]
            log(f"  {result['gateway']['acks_per_s']} acks/s")
            rate = max(1.0, baseline_rate / 2)
            log(f"gateway: open-loop latency at half the baseline rate ({rate:.0f}/s)")
            half = await fleet_run(gateway, devices[:sizes["load_devices"]], **{**load, "rate": rate},
                                   first_record=10_000_000, processes=sizes["latency_fleet_processes"])
            result["latency_at_half_baseline"] = open_loop(half, rate)
            log(f"  p99 {half['latency_ms']['p99_ms']} ms")
            own = max(1.0, (result["gateway"]["acks_per_s"] or 0) / 2)
            log(f"gateway: open-loop latency at half its own closed-loop rate ({own:.0f}/s)")
            half_own = await fleet_run(gateway, devices[:sizes["load_devices"]], **{**load, "rate": own},
                                       first_record=30_000_000, processes=sizes["latency_fleet_processes"])
            result["latency_at_half_gateway"] = open_loop(half_own, own)
            log(f"  p99 {half_own['latency_ms']['p99_ms']} ms")
            log("gateway: backlog upload")
            backlog = await fleet_run(gateway, devices[:sizes["backlog_devices"]], scenario="backlog",
                                      backlog_records=sizes["backlog_records"], batch_size=sizes["backlog_batch"],
                                      window=8, duration_s=120.0, first_record=20_000_000)
            result["backlog"] = {k: backlog.get(k) for k in ("backlog_records", "backlog_s", "backlog_records_per_s",
                                                             "acked", "duplicates", "rejected", "nacks", "server_cpu_s")}
            log(f"  {result['backlog']['backlog_records_per_s']} records/s")
            # last on this gateway, so the phases before it run as they did before it existed
            result["latency_ladder"] = await latency_ladder(
                gateway, devices[:sizes["load_devices"]], load, baseline_rate, half, sizes, log)
        result["metrics_cost"] = await metrics_cost(work, sizes, load, log)
        with start_gateway(data_dir) as gateway:  # fresh process: RSS growth is the idle connections only
            log(f"gateway: {sizes['idle_devices']} idle authenticated connections")
            result["idle"] = await idle_rss(gateway, devices[:sizes["idle_devices"]], "lmg",
                                            processes=sizes["fleet_processes"])
            log(f"  {result['idle']['rss_per_conn_kib']} KiB/connection")
            log(f"gateway: storm of {sizes['storm_devices']} reconnects")
            storm = await fleet_run(gateway, devices[:sizes["storm_devices"]], scenario="storm", duration_s=60.0,
                                    processes=sizes["fleet_processes"])
            result["storm"] = {"devices": sizes["storm_devices"], "storm_s": storm.get("storm_s"),
                               "complete": storm.get("storm_complete"), "connect_failures": storm["connect_failures"],
                               "reconnects": storm["reconnects"], "auth_latency_ms": storm["auth_latency_ms"],
                               "server_cpu_s": storm["server_cpu_s"]}
            log(f"  all back in {result['storm']['storm_s']} s")
    return result


async def scrape_metrics(server: Server, tally: dict) -> None:
    """GET /metrics on `server`'s admin port every METRICS_SCRAPE_S until cancelled, as a
    Prometheus would (more often); counts the scrapes, the failures and the page size."""
    while True:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.admin_port), 5.0)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            response = await asyncio.wait_for(reader.read(), 5.0)
            writer.close()
            ok = response.startswith(b"HTTP/1.1 200")
            tally["scrapes" if ok else "scrape_failures"] += 1
            if ok:
                tally["page_bytes"] = len(response.partition(b"\r\n\r\n")[2])
        except (OSError, asyncio.TimeoutError):
            tally["scrape_failures"] += 1
        await asyncio.sleep(METRICS_SCRAPE_S)


async def metrics_cost(work: str, sizes: dict, load: dict, log) -> dict:
    """Acks per server CPU-second with metrics on and off, in one run: two gateways (each its
    own SQLite store and devices), both with the admin listener and both scraped every
    METRICS_SCRAPE_S (the one with metrics off answers a one-line page), driven in turn by
    the same closed-loop fleet in ABBA order (`metrics_rounds` pairs). Each variant's figure
    is its acks over its CPU seconds summed over its phases; `metrics_cost_ratio` is on/off."""
    count = sizes["load_devices"]
    rounds = sizes.get("metrics_rounds", 2)
    phase = {**load, "duration_s": sizes.get("metrics_load_s", load["duration_s"])}
    variants = {"on": ("--metrics", "true"), "off": ("--metrics", "false")}
    dirs = {name: os.path.join(work, f"metrics-{name}") for name in variants}
    devices = {name: await provision(None, dirs[name], "MC", count) for name in variants}
    acked = dict.fromkeys(variants, 0)
    cpu = dict.fromkeys(variants, 0.0)
    phases: dict[str, list[dict]] = {name: [] for name in variants}
    with start_gateway(dirs["on"], extra=variants["on"], admin=True) as on, \
            start_gateway(dirs["off"], extra=variants["off"], admin=True) as off:
        servers = {"on": on, "off": off}
        scrapes = {name: {"scrapes": 0, "scrape_failures": 0, "page_bytes": 0} for name in variants}
        order = [name for n in range(rounds) for name in (("on", "off") if n % 2 == 0 else ("off", "on"))]
        for n, name in enumerate(order):
            log(f"metrics {name}: closed-loop load, phase {n + 1} of {len(order)}")
            scraper = asyncio.create_task(scrape_metrics(servers[name], scrapes[name]))
            try:
                summary = await fleet_run(servers[name], devices[name], **phase, first_record=50_000_000 + n * 1_000_000)
            finally:
                scraper.cancel()
            acked[name] += summary["acked"]
            cpu[name] += summary["server_cpu_s"]
            phases[name].append({"acks_per_s": summary["acks_per_s"], "server_cpu_s": summary["server_cpu_s"],
                                 "acks_per_server_cpu_s": round(summary["acked"] / summary["server_cpu_s"], 1)
                                 if summary["server_cpu_s"] else None, "box_steal_pct": summary["box_steal_pct"]})
            log(f"  {phases[name][-1]['acks_per_server_cpu_s']} acks per server CPU-second")
    out: dict = {"rounds": rounds, "phase_s": phase["duration_s"], "scrape_interval_s": METRICS_SCRAPE_S}
    for name in variants:
        out[name] = {"acks_per_server_cpu_s": round(acked[name] / cpu[name], 1) if cpu[name] else None,
                     "acked": acked[name], "server_cpu_s": round(cpu[name], 2), "phases": phases[name],
                     **scrapes[name]}
    on_rate, off_rate = out["on"]["acks_per_server_cpu_s"], out["off"]["acks_per_server_cpu_s"]
    out["ratio"] = round(on_rate / off_rate, 3) if on_rate and off_rate else None
    log(f"  metrics on / off: {out['ratio']} (acks per server CPU-second)")
    return out


# Where p99 at half the baseline misses, lower rates in turn (fractions of the baseline's
# rate) until one meets the target: the rate an operator can plan for at that latency.
LADDER = (1 / 3, 1 / 4, 1 / 6, 1 / 8)


async def latency_ladder(gateway: Server, devices: list, load: dict, baseline_rate: float, half: dict,
                         sizes: dict, log) -> dict:
    """Open-loop phases at LADDER fractions of the baseline's rate, stopping at the first whose
    p99 meets the target; `met_up_to_rate` is the highest tested rate that met it (None: none)."""
    steps: list[dict] = []
    p99 = half["latency_ms"]["p99_ms"]
    if p99 is not None and p99 <= TARGETS["p99_ms"]:
        return {"steps": steps, "met_up_to_rate": round(baseline_rate / 2)}
    for n, fraction in enumerate(LADDER):
        rate = max(1.0, baseline_rate * fraction)
        log(f"gateway: open-loop latency at {rate:.0f}/s ({fraction:.2f} of the baseline rate)")
        summary = await fleet_run(gateway, devices, **{**load, "rate": rate}, first_record=40_000_000 + n * 5_000_000,
                                  processes=sizes["latency_fleet_processes"])
        steps.append(open_loop(summary, rate))
        log(f"  p99 {summary['latency_ms']['p99_ms']} ms")
        p99 = summary["latency_ms"]["p99_ms"]
        if p99 is not None and p99 <= TARGETS["p99_ms"]:
            return {"steps": steps, "met_up_to_rate": round(rate)}
    return {"steps": steps, "met_up_to_rate": None}


def headline(result: dict) -> dict:
    """The flat figures `--json` promises, with the targets beside them: those of the phases
    that ran (`--phase outage` runs only the outage-recovery phase)."""
    out: dict = {}
    if "gateway" in result:
        out.update(_matrix_headline(result))
    if "stores" in result:
        out.update(_stores_headline(result["stores"]))
    if "outage" in result:
        outage = result["outage"]
        out.update({key: outage.get(name) for key, name in OUTAGE_HEADLINE.items()})
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _matrix_headline(result: dict) -> dict:
    base = result["baseline"]["acks_per_s"] or 0
    gw = result["gateway"]["acks_per_s"] or 0
    mq = (result.get("mosquitto") or {}).get("acks_per_s")
    # efficiency: acks per CPU-second of the server's processes only, whatever the load generator cost
    gw_cpu, base_cpu = result["gateway"]["acks_per_server_cpu_s"], result["baseline"]["acks_per_server_cpu_s"]
    efficiency = {"gateway_acks_per_cpu_s": gw_cpu, "baseline_acks_per_cpu_s": base_cpu,
                  "gateway_to_baseline_per_cpu": _ratio(gw_cpu, base_cpu)}
    if result.get("mosquitto"):  # it ran
        mq_cpu = result["mosquitto"]["acks_per_server_cpu_s"]
        efficiency.update({"mosquitto_acks_per_cpu_s": mq_cpu, "gateway_to_mosquitto_per_cpu": _ratio(gw_cpu, mq_cpu)})
    return {
        "baseline_acks_per_s": base,
        "gateway_acks_per_s": gw,
        "gateway_to_baseline": round(gw / base, 3) if base else None,
        "mosquitto_acks_per_s": mq,
        "p50_ms": result["latency_at_half_baseline"]["latency_ms"]["p50_ms"],
        "p99_ms": result["latency_at_half_baseline"]["latency_ms"]["p99_ms"],
        "p999_ms": result["latency_at_half_baseline"]["latency_ms"]["p999_ms"],
        "p99_ms_at_half_gateway_rate": (result.get("latency_at_half_gateway") or {}).get("latency_ms", {}).get("p99_ms"),
        "bare_p99_ms_at_half_baseline": result["baseline"]["latency_at_half"]["latency_ms"]["p99_ms"],
        "p99_target_met_up_to_rate": (result.get("latency_ladder") or {}).get("met_up_to_rate"),
        "box_steal_pct_at_half_baseline": result["latency_at_half_baseline"]["box_steal_pct"],
        "rss_per_conn_kib": result["idle"]["rss_per_conn_kib"],
        "bare_rss_per_conn_kib": result["baseline"]["idle"]["rss_per_conn_kib"],
        "storm_devices": result["storm"]["devices"],
        "storm_s": result["storm"]["storm_s"],
        "backlog_records_per_s": result["backlog"]["backlog_records_per_s"],
        "metrics_on_acks_per_server_cpu_s": (result.get("metrics_cost") or {}).get("on", {}).get("acks_per_server_cpu_s"),
        "metrics_off_acks_per_server_cpu_s": (result.get("metrics_cost") or {}).get("off", {}).get("acks_per_server_cpu_s"),
        "metrics_cost_ratio": (result.get("metrics_cost") or {}).get("ratio"),
        **efficiency,
    }


# headline key -> key of the outage phase's result (bench/load_outage.py)
OUTAGE_HEADLINE = {"outage_devices": "devices", "outage_store": "store", "outage_workers": "workers",
                   "outage_acked_s": "acked_s", "outage_photos_s": "photos_s", "outage_forwarded_s": "forwarded_s",
                   "outage_photo_mb_per_s": "photo_mb_per_s", "disk_photo_mb_per_s": "disk_photo_mb_per_s",
                   "outage_peak_rss_mib": "peak_rss_mib", "outage_wal_mb": "wal_mb", "outage_error": "error"}


def _stores_headline(stores: dict) -> dict:
    out = {}
    for name, _, _ in STORE_VARIANTS:
        out[f"{name}_acks_per_s"] = stores.get(name, {}).get("acks_per_s")
        out[f"{name}_acks_per_cpu_s"] = stores.get(name, {}).get("acks_per_server_cpu_s")
    return out


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def markdown(report: dict) -> str:
    h, r, m = report["headline"], report["result"], report["machine"]
    mq = r.get("mosquitto")

    def cell(value, unit=""):
        return "–" if value is None else f"{value:,}{unit}" if isinstance(value, (int, float)) else str(value)

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("met" if ok else "missed")

    rows: list[tuple[str, str, str, str]] = []
    if "gateway" in r:
        lat = r["latency_at_half_baseline"]["latency_ms"]
        bare_lat = r["baseline"]["latency_at_half"]["latency_ms"]
        rows += [
            ("acked punches/s, bare baseline", cell(h["baseline_acks_per_s"]), "reference", "–"),
            ("acked punches/s, gateway (SQLite, fsync)", cell(h["gateway_acks_per_s"]),
             f">= 0.6x baseline (is {cell(h['gateway_to_baseline'])}x)",
             verdict(h["gateway_to_baseline"] >= TARGETS["gateway_to_baseline"] if h["gateway_to_baseline"] else None)),
            ("PUBACKs/s, Mosquitto QoS 1", cell(mq and mq["acks_per_s"]), "reference", "–"),
            (f"ack latency p50 / p99 / p99.9 at {r['latency_at_half_baseline']['rate']:,}/s, bare server (open loop)",
             f"{cell(bare_lat['p50_ms'])} / {cell(bare_lat['p99_ms'])} / {cell(bare_lat['p999_ms'])} ms",
             "reference: client and box", "–"),
            (f"ack latency p50 / p99 / p99.9 at {r['latency_at_half_baseline']['rate']:,}/s, gateway "
             f"(CPU steal {r['latency_at_half_baseline']['box_steal_pct']}%)",
             f"{cell(lat['p50_ms'])} / {cell(lat['p99_ms'])} / {cell(lat['p999_ms'])} ms", "p99 <= 25 ms",
             verdict(lat["p99_ms"] <= TARGETS["p99_ms"] if lat["p99_ms"] is not None else None)),
            *([(f"ack latency p50 / p99 / p99.9 at {r['latency_at_half_gateway']['rate']:,}/s (half the gateway's own rate)",
                "{} / {} / {} ms".format(*(cell(r["latency_at_half_gateway"]["latency_ms"][k])
                                           for k in ("p50_ms", "p99_ms", "p999_ms"))), "information", "–")]
              if r.get("latency_at_half_gateway") else []),
            *[(f"ack latency p50 / p99 / p99.9 at {step['rate']:,}/s (lower rates until p99 meets its target)",
               "{} / {} / {} ms".format(*(cell(step["latency_ms"][k]) for k in ("p50_ms", "p99_ms", "p999_ms"))),
               "information", "–") for step in (r.get("latency_ladder") or {}).get("steps", [])],
            ("server CPU s per 1,000 acks (gateway / bare)",
             f"{cell(_per_k(r['gateway']))} / {cell(_per_k(r['baseline']))}", "–", "–"),
            (f"RSS per idle authenticated connection ({r['idle']['connections']:,})",
             f"{cell(h['rss_per_conn_kib'])} KiB (bare {cell(h['bare_rss_per_conn_kib'])})", "<= 5 KiB",
             verdict(h["rss_per_conn_kib"] <= TARGETS["rss_per_conn_kib"])),
            (f"storm: {h['storm_devices']:,} drop and reconnect", f"{cell(h['storm_s'])} s until all authenticated",
             "20,000 within 10 s", verdict(h["storm_s"] is not None and h["storm_s"] <= TARGETS["storm_s"])
             if h["storm_devices"] >= 20000 else "smaller N"),
            (f"backlog: {r['backlog']['backlog_records']:,} records", f"{cell(h['backlog_records_per_s'])} records/s",
             ">= 100,000/s", verdict((h["backlog_records_per_s"] or 0) >= TARGETS["backlog_records_per_s"])),
            *([("acks per server CPU-second, metrics on (scraped every "
                f"{r['metrics_cost']['scrape_interval_s']:g} s) / off, {r['metrics_cost']['rounds']} alternating pairs",
                f"{cell(h['metrics_on_acks_per_server_cpu_s'])} / {cell(h['metrics_off_acks_per_server_cpu_s'])} "
                f"({cell(h['metrics_cost_ratio'])}x)", ">= 0.95x",
                verdict(h["metrics_cost_ratio"] >= TARGETS["metrics_cost_ratio"] if h["metrics_cost_ratio"] else None))]
              if r.get("metrics_cost") else []),
        ]
    rows += _efficiency_rows(h) + _stores_rows(r.get("stores")) + _outage_rows(r.get("outage"))
    w = r.get("workers")
    if w and "error" in w:
        rows.append(("many connections on --workers", f"failed: {w['error']}", "100,000 for 10 min", "missed"))
    elif w:
        # all up once, then none lost and none reconnected: every terminal was held throughout
        held = w["peak_online"] == w["devices"] and w["unexpected_disconnects"] == 0 and w["reconnects"] == 0
        rows.append((f"storm on --workers {w['workers']} (PostgreSQL): {w['storm']['devices']:,} reconnects",
                     f"{cell(w['storm']['storm_s'])} s until all authenticated", "20,000 within 10 s",
                     verdict(w["storm"]["storm_s"] is not None and w["storm"]["storm_s"] <= 10
                             and w["storm"]["devices"] >= 20000)))
        rows.append((f"held on --workers {w['workers']} (PostgreSQL), 30-s heartbeats",
                     f"{w['peak_online']:,} authenticated, held {w['held_s']:.0f} s; "
                     f"{w['unexpected_disconnects']} unexpected disconnects",
                     "100,000 for 10 min, none lost",
                     verdict(held and w["devices"] >= 100_000 and w["held_s"] >= 600)))
    lines = [f"Run {report['date']} ({'quick' if report['quick'] else 'full'}) on {m['cpus']} CPUs ({m['cpu']}), "
             f"{m['memory_gib']} GiB, Python {m['python']}, Linux {m['kernel']}; client and servers share the box.",
             "", "| figure | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def _cell(value, unit: str = "") -> str:
    return "–" if value is None else f"{value:,}{unit}" if isinstance(value, (int, float)) else str(value)


def _efficiency_rows(h: dict) -> list[tuple[str, str, str, str]]:
    if "gateway_acks_per_cpu_s" not in h:
        return []
    mq = "mosquitto_acks_per_cpu_s" in h
    measured = (f"{_cell(h['gateway_acks_per_cpu_s'])} / {_cell(h['baseline_acks_per_cpu_s'])}"
                + (f" / {_cell(h['mosquitto_acks_per_cpu_s'])}" if mq else "")
                + f" (gateway {_cell(h['gateway_to_baseline_per_cpu'])}x bare"
                + (f", {_cell(h['gateway_to_mosquitto_per_cpu'])}x Mosquitto)" if mq else ")"))
    return [("acks per server CPU-second, closed loop: gateway / bare" + (" / Mosquitto" if mq else ""),
             measured, "information: the servers' CPU only", "–")]


def _stores_rows(stores: dict | None) -> list[tuple[str, str, str, str]]:
    if not stores:
        return []
    cells = []
    for name, kind, workers in STORE_VARIANTS:
        part = stores.get(name) or {}
        label = f"{'PostgreSQL' if kind == 'postgres' else 'SQLite'} x{workers}"
        if "skipped" in part or "error" in part:
            cells.append(f"{label}: {part.get('skipped') or part.get('error')}")
        else:
            cells.append(f"{label} {_cell(part.get('acks_per_s'))}/s ({_cell(part.get('acks_per_server_cpu_s'))} per "
                         f"CPU-s, {_cell(part.get('to_sqlite'))}x SQLite)")
    return [(f"acked punches/s by store, closed loop {stores['devices']} terminals, same run (CPU: the gateway's "
             "processes, not PostgreSQL's)", "; ".join(cells),
             "information", "–")]


def _outage_rows(o: dict | None) -> list[tuple[str, str, str, str]]:
    if not o:
        return []
    if "error" in o:
        return [("outage recovery", f"failed: {o['error']}", "–", "–")]
    what = (f"outage recovery: {o['devices']:,} terminals x {o['punches_per_device']} punches "
            f"({o['hours']:g} h), {o['photo_share']:.0%} with {o['photo_bytes'] // 1024} KB photos, "
            f"{o['store']} x{o['workers']}")
    photos = o["photos"]
    cut = "" if o.get("complete", True) else (
        f" (cut at the {o['cap_s']:g}-s cap: {o['acked'] + o['duplicates']:,} of {o['records']:,} punches answered, "
        f"{photos['confirmed']:,} of {photos['announced']:,} photos stored, {o['province_records']:,} records and "
        f"{o['province_photos']:,} photos at the province)")
    return [
        (what, f"all acked {_cell(o['acked_s'])} s; photos stored {_cell(o['photos_s'])} s; "
               f"at the province {_cell(o['forwarded_s'])} s{cut}", "information", "–"),
        (f"outage photos: {photos['confirmed']:,} stored ({_cell(o['photo_mb'])} MB)",
         f"{_cell(o['photo_mb_per_s'])} MB/s, disk fsync'd 30 KB files {_cell(o['disk_photo_mb_per_s'])} MB/s "
         f"({_cell(o['photo_to_disk'])}x)" + (f"; the server's WAL (all databases) {_cell(o['wal_mb'])} MB" if o.get("wal_mb") is not None else ""),
         "the disk's rate is the limit", "–"),
        ("outage: gateway peak RSS (all its processes)", f"{_cell(o['peak_rss_mib'])} MiB", "information", "–"),
    ]


def _per_k(section: dict) -> float | None:
    rate = section.get("acks_per_server_cpu_s")
    return round(1000 / rate, 3) if rate else None


def run(args) -> int:
    import uvloop

    from lmg.server.gateway import tune_collector

    tune_collector()  # the fleet runs in this process for most phases: same settings as the gateway
    sizes: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for key, value in (("workers_devices", args.connections), ("hold_s", args.hold_s), ("workers", args.workers),
                       ("outage_devices", args.outage_devices), ("outage_hours", args.outage_hours),
                       ("outage_store", args.outage_store), ("outage_cap_s", args.outage_cap_s)):
        if value is not None:
            sizes[key] = value
    if sizes["outage_devices"] < 1 or sizes["outage_hours"] <= 0 or sizes["outage_cap_s"] <= 0:
        raise SystemExit("--outage-devices must be at least 1, --outage-hours and --outage-cap-s above 0")
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    started = time.monotonic()
    everything = args.phase == "all"
    result = uvloop.run(matrix(sizes, mosquitto=not args.no_mosquitto, log=log)) if everything else {"sizes": sizes}
    if everything:
        result["stores"] = uvloop.run(stores_compare(sizes, log=log))
    from lmg.bench.load_outage import outage_run

    try:
        result["outage"] = uvloop.run(outage_run(sizes, log=log))
    except Exception as exc:  # noqa: BLE001 - the rest of the run is still worth writing
        result["outage"] = {"error": f"{type(exc).__name__}: {exc}"}
    if everything and not args.quick and sizes.get("workers_devices"):
        try:
            result["workers"] = uvloop.run(workers_run(sizes, log=log))
        except Exception as exc:  # noqa: BLE001 - the rest of the matrix is still worth writing
            result["workers"] = {"error": f"{type(exc).__name__}: {exc}"}
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick,
              "machine": machine(), "elapsed_s": round(time.monotonic() - started, 1),
              "headline": headline(result), "result": result}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("load-quick" if args.quick else "load-full") + ("" if everything else f"-{args.phase}")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    if args.json:
        print(json.dumps({**report["headline"], "elapsed_s": report["elapsed_s"], "results": str(out / f"{stem}.json")}))
    else:
        print(markdown(report))
    return 0


# The store comparison: (name, store, gateway processes).
STORE_VARIANTS = (("sqlite_1", "sqlite", 1), ("postgres_1", "postgres", 1), ("postgres_2", "postgres", 2))


async def stores_compare(sizes: dict, *, log) -> dict:
    """Closed-loop acks/s and acks per server CPU-second of the gateway on SQLite (one
    process), on PostgreSQL in one process and on `--workers 2`, one after the other in this
    run, driven by the same fleet (`load_devices` terminals, `stores_s` each). A PostgreSQL
    variant is skipped, with the reason, when PostgreSQL does not answer."""
    from lmg.bench.load_outage import drop_schema, pg_reachable

    dsn = os.environ.get("LMG_TEST_PG_DSN", DEFAULT_PG_DSN)
    why_not = await pg_reachable(dsn)
    load = dict(scenario="rush", duration_s=sizes["stores_s"], warmup_s=sizes["warmup_s"], window=8, batch_size=1)
    out: dict = {"devices": sizes["load_devices"], "phase_s": sizes["stores_s"],
                 "cpu_note": "the gateway's processes only: PostgreSQL's own backends are not counted"}
    for name, kind, workers in STORE_VARIANTS:
        if kind == "postgres" and why_not:
            out[name] = {"skipped": why_not}
            continue
        schema = f"bench_stores_{os.urandom(4).hex()}"
        store = f"{dsn}?schema={schema}" if kind == "postgres" else ""
        with tempfile.TemporaryDirectory(prefix="lmg-bench-stores-") as work:
            try:
                devices = await provision(store or None, work, "ST", sizes["load_devices"])
                with start_gateway(work, store=store, workers=workers) as gateway:
                    log(f"gateway on {kind}, {workers} process(es): closed-loop load")
                    summary = await fleet_run(gateway, devices, **load, processes=sizes["fleet_processes"])
                out[name] = {**throughput(summary), "store": kind, "workers": workers}
                log(f"  {out[name]['acks_per_s']} acks/s, {out[name]['acks_per_server_cpu_s']} per server CPU-second")
            finally:
                if kind == "postgres":
                    await drop_schema(dsn, schema)
    base = out["sqlite_1"]["acks_per_s"]
    for name, _, _ in STORE_VARIANTS:
        out[name]["to_sqlite"] = _ratio(out[name].get("acks_per_s"), base) if "skipped" not in out[name] else None
    return out


async def workers_run(sizes: dict, *, log) -> dict:
    """On `lmg serve --workers` over PostgreSQL: a storm of `workers_storm_devices`, then
    `workers_devices` authenticated terminals with the server's heartbeat held for `hold_s`."""
    import secrets as _secrets

    count, workers, hold_s = sizes["workers_devices"], sizes["workers"], sizes["hold_s"]
    storm_n = min(sizes.get("workers_storm_devices", count), count)
    dsn = os.environ.get("LMG_TEST_PG_DSN", DEFAULT_PG_DSN)
    store = f"{dsn}?schema=bench_load_{_secrets.token_hex(4)}"
    processes = max(1, -(-count // TERMINALS_PER_FLEET_PROCESS))
    sources = [f"127.0.0.{i}" for i in range(1, max(2, -(-count // TERMINALS_PER_SOURCE_ADDRESS)) + 1)]
    with tempfile.TemporaryDirectory(prefix="lmg-bench-workers-") as work:
        log(f"provisioning {count} devices on PostgreSQL")
        devices = await provision(store, work, "WK", count)
        with start_gateway(work, store=store, workers=workers) as gateway:
            log(f"gateway --workers {workers}: storm of {storm_n} reconnects")
            storm = await fleet_run(gateway, devices[:storm_n], scenario="storm", duration_s=60.0,
                                    processes=max(1, -(-storm_n // TERMINALS_PER_FLEET_PROCESS)),
                                    source_addresses=sources[:2], connect_concurrency=512, connect_phase_s=120.0)
            log(f"  all back in {storm.get('storm_s')} s")
            await asyncio.sleep(2.0)
            before = gateway.rss_kib()
            log(f"gateway --workers {workers}: {count} authenticated terminals, server heartbeat, for {hold_s:.0f} s "
                f"({processes} fleet processes, {len(sources)} source addresses)")
            peak_rss = {"kib": before}

            def on_progress(snap: dict) -> None:
                peak_rss["kib"] = max(peak_rss["kib"], gateway.rss_kib())

            from lmg.simulators.fleet import FleetSpec, run_fleet

            cpu_before = gateway.cpu_s()
            spec = FleetSpec(host="127.0.0.1", port=gateway.port, devices=devices, scenario="idle", duration_s=hold_s,
                             source_addresses=sources, connect_concurrency=256, connect_phase_s=300.0, progress_s=5.0)
            summary = await run_fleet(spec, processes, on_progress=on_progress)
            cpu = gateway.cpu_s() - cpu_before
    return {"workers": workers, "devices": count, "store": "postgresql", "fleet_processes": processes,
            "source_addresses": len(sources), "connect_s": summary["connect_s"], "held_s": hold_s,
            "peak_online": summary["peak_online"], "online_at_end": summary["online_at_end"],
            "unexpected_disconnects": summary["unexpected_disconnects"], "reconnects": summary["reconnects"],
            "connect_failures": summary["connect_failures"], "heartbeats_sent": summary["heartbeats_sent"],
            "heartbeats_acked": summary["heartbeats_acked"], "server_cpu_s": round(cpu, 1),
            "server_rss_kib": peak_rss["kib"],
            "storm": {"devices": storm_n, "storm_s": storm.get("storm_s"), "complete": storm.get("storm_complete"),
                      "connect_failures": storm["connect_failures"], "auth_latency_ms": storm["auth_latency_ms"]}}
