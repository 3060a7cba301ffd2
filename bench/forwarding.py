"""`lmg bench forwarding`: records/s forwarded to a healthy province, and a 1-hour backlog's drain.

The province simulator runs in its own process (`python -m lmg.simulators.province_cli
serve`, no faults), as the real province would be another machine; everything else
runs in this process on uvloop, as `lmg forward` does.

1. Baseline (same run, same simulator): a client posting pre-built, pre-encrypted,
   valid batches of `--batch-records` new records with `--concurrency` requests in
   flight, signing each request. It does no gateway work at all, so its records/s is
   what the simulator and HTTP on this machine can absorb: the ceiling.
2. Throughput: `--records` punches stored in a fresh SQLite store (not timed), then the
   forwarder (same batch size and concurrency) until the outbox is empty. Figure:
   records/s, and its ratio to the baseline. The forwarder does more per record than
   the baseline (claim, encrypt, encode, ack: two SQLite writes per batch).
3. Backlog drain at the design load: `--terminals` devices (10,000) punching
   `--punches-per-minute` each (1: a busy morning shift everywhere at once) = 167/s;
   a `--backlog-minutes` (60) outage leaves 600,000 punches. They are stored first
   (not timed); then the forwarder starts while new punches keep arriving at the design
   load. Figure: seconds until the backlog is gone (pending below 2 s of live load),
   and the backlog duration divided by that (how many times faster than real time the
   gateway catches up).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Protocol

import orjson

NAME = "forwarding"
HELP = "records/s forwarded to a healthy province simulator vs its raw ingest rate; 1-hour backlog drain"

APP_KEY = "bench-app-key"
APP_SECRET = "bench-app-secret-0123456789"


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--records", type=int, default=50_000, help="records in the throughput phases (default 50000)")
    parser.add_argument("--batch-records", type=int, default=500, help="records per request (default 500)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    parser.add_argument("--terminals", type=int, default=10_000, help="design fleet (default 10000)")
    parser.add_argument("--punches-per-minute", type=float, default=1.0, help="per terminal at the design load (default 1)")
    parser.add_argument("--backlog-minutes", type=float, default=60.0,
                        help="outage length whose backlog is drained (default 60; 0 skips the drain phase)")
    parser.add_argument("--dir", default=None, help="where the temporary databases go (default: $TMPDIR)")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Province:
    """The simulator subprocess."""

    def __init__(self, directory: Path):
        ready = directory / "province.json"
        self.log = open(directory / "province.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmg.simulators.province_cli", "serve", "--listen", "127.0.0.1:0", "--data-dir",
             str(directory / "province"), "--app-key", APP_KEY, "--app-secret", APP_SECRET, "--ready-file", str(ready)],
            stdout=self.log, stderr=self.log, cwd=Path(__file__).resolve().parents[1])  # the repository: `-m simulators...` resolves there
        end = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"the province simulator did not start; see {directory / 'province.log'}")
            time.sleep(0.05)
        host, port = json.loads(ready.read_text())["listen"]
        self.url = f"http://{host}:{port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


async def baseline(url: str, records: int, batch: int, concurrency: int) -> float:
    """records/s of pre-built valid batches posted straight to the simulator."""
    import aiohttp

    from lmg.protocol import province as api
    from lmg.simulators.terminal import worker_id_for
    from lmg.storage.api import Punch

    cipher = api.WorkerIdCipher.for_app(APP_SECRET, APP_KEY)
    now = _now_ms()
    bodies = []
    for start in range(0, records, batch):
        encoded = [api.encode_record(api.attendance_record(
            Punch(f"BASE-{n % 1000:05d}", n, worker_id_for(n), now - 60_000, 1, 1, 365, None, 0, now),
            "P-BENCH", cipher, os.urandom(12))) for n in range(start, min(records, start + batch))]
        bodies.append(api.attendance_batch_body(f"base-{start}", encoded))
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker():
            while queue:
                body = queue.pop()
                headers = api.signed_headers(APP_KEY, APP_SECRET, "POST", api.PATH_ATTENDANCE, body,
                                             timestamp_ms=_now_ms(), nonce=os.urandom(16).hex())
                headers["Content-Type"] = "application/json"
                async with session.post(url + api.PATH_ATTENDANCE, data=body, headers=headers) as response:
                    assert response.status == 200, await response.text()
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return records / (time.perf_counter() - started)


async def fill(store, devices: int, records: int, first_record: int = 1) -> None:
    """Provision devices (if new) and store `records` punches spread evenly over them."""
    from lmg.simulators.terminal import worker_id_for
    from lmg.storage import PunchIn

    for d in range(devices):
        serial = f"GS-BENCH-{d:06d}"
        if await store.get_device(serial) is None:
            await store.add_device(serial, project_code="P-620100-BENCH", region_code="620100")
    now = _now_ms()
    chunk = []
    for i in range(records):
        n = first_record + i // devices
        chunk.append(PunchIn(f"GS-BENCH-{i % devices:06d}", n, worker_id_for(i), now - 60_000, 1 + n % 2, 1, 365,
                             None, 0))
        if len(chunk) == 500:
            await store.store_punches(chunk)
            chunk = []
    if chunk:
        await store.store_punches(chunk)


class ForwarderCounts(Protocol):
    """What this benchmark reads of the forwarder's `stats`."""

    acked: int  # records the province holds
    requests: int  # HTTP requests sent


async def forward_until(store, config, done) -> tuple[float, ForwarderCounts]:
    """Run the forwarder until `await done()` is true; (seconds, stats)."""
    from lmg.server.forwarding import Forwarder

    forwarder = Forwarder(store, config)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(forwarder.run(stop))
    while not await done():
        if task.done():
            task.result()
            raise SystemExit("the forwarder stopped early")
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return elapsed, forwarder.stats


async def throughput(store, url: str, args) -> dict:
    from lmg.server.forwarding import ForwarderConfig

    await fill(store, args.terminals, args.records)
    config = ForwarderConfig(url=url, app_key=APP_KEY, app_secret=APP_SECRET, batch_records=args.batch_records,
                             concurrency=args.concurrency, status_interval_s=0)

    async def empty():
        return (await store.outbox_status(_now_ms())).pending == 0

    elapsed, stats = await forward_until(store, config, empty)
    assert stats.acked == args.records, stats
    return {"records_per_s": round(args.records / elapsed), "requests": stats.requests}


async def drain(store, url: str, args) -> dict:
    from lmg.server.forwarding import ForwarderConfig

    rate = args.terminals * args.punches_per_minute / 60  # punches/s at the design load
    backlog = int(rate * args.backlog_minutes * 60)
    first_record = args.records // args.terminals + 2  # after the throughput phase's numbers
    fill_started = time.perf_counter()
    await fill(store, args.terminals, backlog, first_record)
    fill_s = time.perf_counter() - fill_started
    config = ForwarderConfig(url=url, app_key=APP_KEY, app_secret=APP_SECRET, batch_records=args.batch_records,
                             concurrency=args.concurrency, status_interval_s=0)
    live = {"next": first_record + backlog // args.terminals + 2, "stored": 0}

    async def live_load():
        """The design load keeps arriving while the backlog drains: one round of all terminals per round."""
        from lmg.simulators.terminal import worker_id_for
        from lmg.storage import PunchIn

        tick = 0.5
        owed = 0.0
        cursor = 0
        while True:
            owed += rate * tick
            records = []
            while owed >= 1:
                device = cursor % args.terminals
                n = live["next"] + cursor // args.terminals
                records.append(PunchIn(f"GS-BENCH-{device:06d}", n, worker_id_for(cursor), _now_ms(), 1, 1, 365,
                                       None, 0))
                cursor += 1
                owed -= 1
            if records:
                await store.store_punches(records)
                live["stored"] += len(records)
            await asyncio.sleep(tick)

    producer = asyncio.create_task(live_load())

    async def caught_up():
        return (await store.outbox_status(_now_ms())).pending <= 2 * rate

    try:
        elapsed, stats = await forward_until(store, config, caught_up)
    finally:
        producer.cancel()
    return {"design_load_per_s": round(rate, 1), "backlog_records": backlog, "fill_s": round(fill_s, 1),
            "drain_s": round(elapsed, 1), "live_records_during_drain": live["stored"],
            "catch_up_x_real_time": round(args.backlog_minutes * 60 / elapsed, 1), "requests": stats.requests}


def run(args) -> int:
    import uvloop

    directory = Path(tempfile.mkdtemp(prefix="lmg-bench-forwarding-", dir=args.dir))
    province = Province(directory)
    try:
        async def main() -> dict:
            from lmg.storage import open_store

            base = await baseline(province.url, args.records, args.batch_records, args.concurrency)
            store = await open_store(None, data_dir=directory / "gateway")
            try:
                return await phases(store, base)
            finally:
                await store.close()

        async def phases(store, base: float) -> dict:
            forwarded = await throughput(store, province.url, args)
            result = {"baseline_records_per_s": round(base), "forwarded_records_per_s": forwarded["records_per_s"],
                      "ratio": round(forwarded["records_per_s"] / base, 2), "records": args.records,
                      "batch_records": args.batch_records, "concurrency": args.concurrency,
                      "terminals": args.terminals}
            if args.backlog_minutes > 0:
                result["backlog"] = await drain(store, province.url, args)
            return result

        result = uvloop.run(main())
    finally:
        province.close()
        shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(f"baseline (pre-built batches straight to the simulator): {result['baseline_records_per_s']:>8} records/s")
        print(f"forwarder (SQLite outbox -> simulator):                 {result['forwarded_records_per_s']:>8} records/s"
              f"  ({result['ratio']}x baseline)")
        if "backlog" in result:
            b = result["backlog"]
            print(f"backlog: {b['backlog_records']} records ({args.backlog_minutes:g} min at {b['design_load_per_s']}/s) "
                  f"drained in {b['drain_s']} s with the live load still arriving: "
                  f"{b['catch_up_x_real_time']}x real time")
    return 0
