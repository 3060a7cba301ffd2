"""`lmg bench downlink`: punch answers while a roster with faces is pushed, against the same punches without.

One gateway (`lmg serve` on its SQLite store, fsync'd group commit, metrics on) and one fleet
of simulated terminals (simulators/fleet.py, each with the device side of
simulators/device.py: it carries out roster changes, assembles faces and answers commands)
in this process. Two sets of `devices` terminals, each in a project of its own:

- **push**: project DL-PUSH holds `workers` workers, each with a face of `face_bytes`
  (distinct photos). A terminal of this set starts at roster version 0, so its session gets
  the whole roster: `workers` ROSTER_ADDs, each followed by its FACE_CHUNKs.
- **quiet** (the same-run baseline): project DL-QUIET exists with an empty roster; its
  terminals are asked their version and are in sync. Nothing else differs.

Both sets send the same open-loop punch load (`rate` punches/s over the set, one punch a
frame, each terminal's window of 8). Phases alternate, push first (its length sets the
quiet phases' length): push, quiet, quiet, push, push, quiet, ... (`rounds` pairs, ABBA
order so drift of the box hits both alike). A push phase ends when every terminal holds
the project's version (or at `cap_s`); the punch latency of a phase is measured from the
moment all its terminals are connected to its end, so it covers the push.

Figures, each beside its same-run baseline: punch ACK latency p50/p99/p99.9 (push / quiet
and their ratio), acks per gateway CPU-second, and the push itself: faces per second
delivered to the fleet (and MB/s), from the phase's start to the last terminal in sync.
Timings on a shared 2-core box are noisy: read the ratios.

Results go to bench/results/downlink-quick.{md,json} or downlink-full.{md,json}.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from lmg.bench.load import BenchError, Server, box_share, box_times, machine, start_gateway

NAME = "downlink"
HELP = "punch ack latency while a roster of 500 workers with 30 KB faces is pushed, against no push"
RESULTS = Path(__file__).resolve().parent / "results"

# `min_measured_s`: a phase measures punches at least this long, should a (small) push end
# before every terminal is even connected.
QUICK = dict(devices=20, workers=500, face_bytes=30_000, rate=200.0, rounds=1, cap_s=120.0, min_measured_s=1.0)
FULL = dict(devices=20, workers=500, face_bytes=30_000, rate=200.0, rounds=3, cap_s=300.0, min_measured_s=1.0)
PROJECTS = {"push": "DL-PUSH", "quiet": "DL-QUIET"}
PREFIXES = {"push": "DP", "quiet": "DQ"}
POLL_S = 0.05  # how often a phase looks whether the push is done (the fleet's own devices)


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="one pair of phases (push, quiet)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")
    parser.add_argument("--rate", type=float, help="punches/s over the terminals of a phase (default 200)")
    parser.add_argument("--workers", type=int, help="workers on the pushed roster (default 500)")
    parser.add_argument("--face-bytes", type=int, help="bytes of each worker's face (default 30000)")
    parser.add_argument("--devices", type=int, help="terminals per phase (default 20)")
    parser.add_argument("--downlink-bytes-per-s", type=int,
                        help="the gateway's downlink_bytes_per_s (default: the setting's default; 0: no limit)")
    parser.add_argument("--out", default=str(RESULTS), help="directory for the markdown table and JSON")


def photo(n: int, size: int) -> bytes:
    """A distinct JPEG-looking photo of `size` bytes (the store checks the magic bytes only)."""
    head = b"\xff\xd8\xff\xe0" + n.to_bytes(4, "big")
    return (head + os.urandom(size))[:size]


async def provision(data_dir: str, sizes: dict, log) -> dict[str, list[list[str]]]:
    """The two device sets, their projects and the pushed roster, in the SQLite store at data_dir."""
    from datetime import date

    from lmg.simulators.fleet import fleet_secret
    from lmg.simulators.terminal import worker_id_for
    from lmg.storage import WorkerIn, open_store

    store = await open_store(None, data_dir=data_dir)
    try:
        devices: dict[str, list[list[str]]] = {}
        for name, project in PROJECTS.items():
            await store.add_project(project, name=f"bench {name}", region_code="620100")
            devices[name] = []
            for i in range(1, sizes["devices"] + 1):
                serial = f"{PREFIXES[name]}{i:06d}"
                secret = fleet_secret(serial)
                await store.add_device(serial, project_code=project, region_code="620100", secret=secret)
                devices[name].append([serial, secret.hex()])
        log(f"storing {sizes['workers']} faces of {sizes['face_bytes']:,} bytes")
        rows = []
        for n in range(1, sizes["workers"] + 1):
            sha = await store.put_face(photo(n, sizes["face_bytes"]))
            rows.append(WorkerIn(worker_id_for(n), f"工人{n}", card_no=f"C{n:06d}", entry_date=date(2020, 1, 1),
                                 face_sha256=sha))
        result = await store.import_workers(PROJECTS["push"], rows, today=date.today())
        if result.roster_version != sizes["workers"]:
            raise BenchError(f"the pushed roster has version {result.roster_version}, not {sizes['workers']}")
        return devices
    finally:
        await store.close()


async def phase(server: Server, devices: list, *, kind: str, rate: float, length_s: float | None, cap_s: float,
                target_version: int, first_record: int, min_measured_s: float = 1.0) -> dict:
    """One fleet phase. A push phase ends once every terminal holds `target_version` (or at
    `cap_s`); a quiet one after `length_s`. Latency is measured from all-connected to the end."""
    from lmg.simulators.fleet import Fleet, FleetSpec

    spec = FleetSpec(host="127.0.0.1", port=server.port, devices=devices, scenario="rush", rate=rate,
                     duration_s=cap_s, warmup_s=0.0, first_record=first_record, progress_s=3600.0)
    fleet = Fleet(spec)
    cpu_before, box_before = server.cpu_s(), box_times()
    started = time.monotonic()
    run = asyncio.get_running_loop().create_task(fleet.run())
    in_sync_s = None
    while not run.done():
        await asyncio.sleep(POLL_S)
        elapsed = time.monotonic() - started
        measured = time.monotonic() - fleet.measure_started if fleet.measuring else 0.0
        if kind == "push" and in_sync_s is None and fleet.roster_spread()["version_min"] >= target_version:
            in_sync_s = elapsed
        done = in_sync_s is not None if kind == "push" else length_s is not None and elapsed >= length_s
        if done and measured >= min_measured_s:
            break
        if elapsed > cap_s + 30:
            raise BenchError(f"the {kind} phase did not end within {cap_s + 30:.0f} s")
    measured_s = time.monotonic() - fleet.measure_started if fleet.measuring else 0.0
    run.cancel()
    try:
        await run
    except asyncio.CancelledError:
        pass
    server_cpu_s = server.cpu_s() - cpu_before
    stats = fleet.stats
    latency = fleet.latency.summary()
    out = {"kind": kind, "seconds": round(time.monotonic() - started, 2), "measured_s": round(measured_s, 2),
           "acked": stats["acked"], "measured_acks": stats["measured_records"],
           "acks_per_s": round(stats["measured_records"] / measured_s, 1) if measured_s else None,
           "latency_ms": latency, "server_cpu_s": round(server_cpu_s, 2),
           "acks_per_server_cpu_s": round(stats["acked"] / server_cpu_s, 1) if server_cpu_s else None,
           "commands": stats["commands"], "command_nacks": stats["command_nacks"],
           "nacks": stats["nacks"], "answer_timeouts": stats["answer_timeouts"],
           "unexpected_disconnects": stats["unexpected_disconnects"], **box_share(box_before, box_times())}
    if kind == "push":
        spread = fleet.roster_spread()
        out["roster"] = spread
        out["in_sync_s"] = round(in_sync_s, 2) if in_sync_s is not None else None
        out["face_chunks"] = stats["command_face_chunk"]
    return out


async def bench(sizes: dict, log) -> dict:
    work = tempfile.mkdtemp(prefix="lmg-bench-downlink-")
    try:
        return await _bench(os.path.join(work, "gateway"), sizes, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _bench(data_dir: str, sizes: dict, log) -> dict:
    devices = await provision(data_dir, sizes, log)
    workers, face_bytes, count = sizes["workers"], sizes["face_bytes"], sizes["devices"]
    order = [kind for n in range(sizes["rounds"]) for kind in (("push", "quiet") if n % 2 == 0 else ("quiet", "push"))]
    phases: list[dict] = []
    extra = () if sizes.get("downlink_bytes_per_s") is None else (
        "--downlink-bytes-per-s", str(sizes["downlink_bytes_per_s"]))
    with start_gateway(data_dir, admin=True, extra=extra) as server:
        push_lengths: list[float] = []
        for n, kind in enumerate(order):
            length = sum(push_lengths) / len(push_lengths) if push_lengths else None
            if kind == "quiet" and length is None:
                raise BenchError("a quiet phase needs a push phase before it for its length")
            log(f"phase {n + 1} of {len(order)}: {kind}" + (f" for {length:.1f} s" if kind == "quiet" else
                                                          f", {workers} workers x {face_bytes:,} B to {count} terminals"))
            result = await phase(server, devices[kind], kind=kind, rate=sizes["rate"], length_s=length,
                                 cap_s=sizes["cap_s"], target_version=workers, first_record=1 + n * 10_000_000,
                                 min_measured_s=sizes.get("min_measured_s", 1.0))
            if kind == "push":
                if result["in_sync_s"] is None:
                    raise BenchError(f"the push did not finish within {sizes['cap_s']} s: {result['roster']}")
                push_lengths.append(result["in_sync_s"])
                faces = count * workers
                result["faces_per_s"] = round(faces / result["in_sync_s"], 1)
                result["face_mb_per_s"] = round(faces * face_bytes / result["in_sync_s"] / 1e6, 2)
                log(f"  all {count} in sync after {result['in_sync_s']} s: {result['faces_per_s']:,} faces/s; "
                    f"punch p99 {result['latency_ms']['p99_ms']} ms")
            else:
                log(f"  punch p99 {result['latency_ms']['p99_ms']} ms")
            phases.append(result)
    return summarize(phases, sizes)


def _pooled(phases: list[dict], key: str) -> float | None:
    values = [p["latency_ms"][key] for p in phases if p["latency_ms"][key] is not None]
    return round(sum(values) / len(values), 3) if values else None


def summarize(phases: list[dict], sizes: dict) -> dict:
    push = [p for p in phases if p["kind"] == "push"]
    quiet = [p for p in phases if p["kind"] == "quiet"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    def per_cpu(group: list[dict]) -> float | None:
        cpu = sum(p["server_cpu_s"] for p in group)
        return round(sum(p["acked"] for p in group) / cpu, 1) if cpu else None

    head = {
        "devices": sizes["devices"], "workers": sizes["workers"], "face_bytes": sizes["face_bytes"],
        "rate": sizes["rate"], "pairs": sizes["rounds"],
        **{f"{q}_ms_push": _pooled(push, f"{q}_ms") for q in ("p50", "p99", "p999")},
        **{f"{q}_ms_quiet": _pooled(quiet, f"{q}_ms") for q in ("p50", "p99", "p999")},
        "faces_per_s": round(sum(p["faces_per_s"] for p in push) / len(push), 1),
        "face_mb_per_s": round(sum(p["face_mb_per_s"] for p in push) / len(push), 2),
        "in_sync_s": round(sum(p["in_sync_s"] for p in push) / len(push), 2),
        "acks_per_server_cpu_s_push": per_cpu(push), "acks_per_server_cpu_s_quiet": per_cpu(quiet),
        "errors": sum(p["nacks"] + p["answer_timeouts"] + p["unexpected_disconnects"] for p in phases),
    }
    for q in ("p50", "p99", "p999"):
        head[f"{q}_ratio"] = ratio(head[f"{q}_ms_push"], head[f"{q}_ms_quiet"])
    head["acks_per_server_cpu_s_ratio"] = ratio(head["acks_per_server_cpu_s_push"],
                                                head["acks_per_server_cpu_s_quiet"])
    return {"headline": head, "phases": phases}


def markdown(report: dict) -> str:
    h, m = report["result"]["headline"], report["machine"]

    def cell(value, unit=""):
        return "–" if value is None else f"{value:,}{unit}"

    rows = [
        (f"punch ACK p50 / p99 / p99.9, {h['rate']:g} punches/s over {h['devices']} terminals",
         f"{cell(h['p50_ms_push'])} / {cell(h['p99_ms_push'])} / {cell(h['p999_ms_push'])} ms",
         f"{cell(h['p50_ms_quiet'])} / {cell(h['p99_ms_quiet'])} / {cell(h['p999_ms_quiet'])} ms",
         f"{cell(h['p50_ratio'])}x / {cell(h['p99_ratio'])}x / {cell(h['p999_ratio'])}x"),
        ("punches acked per gateway CPU-second (the push's CPU counted against the punches)",
         cell(h["acks_per_server_cpu_s_push"]), cell(h["acks_per_server_cpu_s_quiet"]),
         f"{cell(h['acks_per_server_cpu_s_ratio'])}x"),
        (f"faces delivered ({h['workers']} workers x {h['face_bytes']:,} B to {h['devices']} terminals)",
         f"{cell(h['faces_per_s'])} faces/s ({cell(h['face_mb_per_s'])} MB/s), all in sync in "
         f"{cell(h['in_sync_s'])} s", "–", "–"),
    ]
    lines = [f"Run {report['date']} ({'quick' if report['quick'] else 'full'}, {h['pairs']} pair(s) of phases, "
             f"ABBA) on {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}; the fleet and "
             "the gateway share the box (a shared 2-core VM: read the ratios).",
             "", "| figure | with the push | same run, no push | push / no push |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "Phases:", "", "| phase | seconds | punch p50 / p99 / p99.9 ms | acks/s | gateway CPU s | "
              "steal % | push |", "|---|---|---|---|---|---|---|"]
    for n, p in enumerate(report["result"]["phases"], 1):
        lat = p["latency_ms"]
        push = f"{p['faces_per_s']:,} faces/s, in sync {p['in_sync_s']} s" if p["kind"] == "push" else "–"
        lines.append(f"| {n} {p['kind']} | {p['measured_s']} | {cell(lat['p50_ms'])} / {cell(lat['p99_ms'])} / "
                     f"{cell(lat['p999_ms'])} | {cell(p['acks_per_s'])} | {p['server_cpu_s']} | "
                     f"{p['box_steal_pct']} | {push} |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    import uvloop

    from lmg.server.gateway import tune_collector

    tune_collector()  # the fleet runs in this process: the same settings as the gateway
    sizes = dict(QUICK if args.quick else FULL)
    for key, value in (("rate", args.rate), ("workers", args.workers), ("face_bytes", args.face_bytes),
                       ("devices", args.devices), ("downlink_bytes_per_s", args.downlink_bytes_per_s)):
        if value is not None:
            sizes[key] = value
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    started = time.monotonic()
    result = uvloop.run(bench(sizes, log))
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick,
              "machine": machine(), "elapsed_s": round(time.monotonic() - started, 1), "sizes": sizes,
              "result": result}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "downlink-quick" if args.quick else "downlink-full"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    if args.json:
        print(json.dumps({**result["headline"], "elapsed_s": report["elapsed_s"], "results": str(out / f"{stem}.json")}))
    else:
        print(markdown(report))
    return 0
