"""Crash-consistency probe: kill a writing process with SIGKILL, check every ack survived.

    python -m lmg.storage.crash_probe write --store URL --data-dir DIR --cycle N
        writes punches forever from a few concurrent producers and prints
        "<serial> <record_no>" for each record, flushed, only AFTER store_punches
        reported it STORED or DUPLICATE (that is, after the commit).

`run_cycles` (used by tests/storage and bench/soak_storage.py) starts that writer, kills
it at a random moment, reopens the store and checks that every acknowledged record is
present, equal in every field to what was sent, and stored once (one outbox row per
punch), before starting the next cycle. Record fields are a pure function of
(serial, record_no), so the checker knows what each record must contain, and resends
of earlier records (possibly committed but never acknowledged) are byte-identical.

Killing a process does not lose what the kernel already holds, so this proves the
commit protocol (no ack before commit, no torn batch, no double outbox entry), not the
disk's fsync; synchronous=FULL covers power loss.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lmg.storage.api import PunchIn

RECORDS_PER_CYCLE = 1_000_000  # record_no = cycle * this + n: cycles never collide
PRODUCERS = 8


def probe_record(serial: str, record_no: int) -> PunchIn:
    """The one valid record the probe ever sends for (serial, record_no)."""
    digest = hashlib.sha256(f"{serial}/{record_no}".encode()).digest()
    with_photo = digest[0] & 1
    return PunchIn(
        device_serial=serial,
        record_no=record_no,
        worker_id=f"62010219{int.from_bytes(digest[1:5], 'big') % 10**10:010d}",
        punch_time_ms=1_700_000_000_000 + record_no * 1000 + digest[5],
        direction=1 + (digest[6] & 1),
        verify_mode=1 + digest[7] % 4,
        temperature_dc=355 + digest[8] % 20,
        photo_sha256=digest if with_photo else None,
        photo_size=20_000 + digest[9] * 100 if with_photo else 0,
    )


def probe_serial(producer: int) -> str:
    return f"CRASH{producer:03d}"


async def _write_forever(url: str, data_dir: str, cycle: int, seed: int) -> None:
    from lmg.storage.url import open_store

    store = await open_store(url, data_dir=data_dir)
    rng = random.Random(seed)
    out = sys.stdout

    async def producer(index: int) -> None:
        serial = probe_serial(index)
        next_no = cycle * RECORDS_PER_CYCLE
        while True:
            records = []
            for _ in range(rng.randint(1, 4)):
                if cycle and rng.random() < 0.15:  # resend something from the last cycle
                    old = (cycle - 1) * RECORDS_PER_CYCLE + rng.randrange(0, 400)
                    records.append(probe_record(serial, old))
                elif rng.random() < 0.1 and next_no > cycle * RECORDS_PER_CYCLE:
                    records.append(probe_record(serial, next_no - 1))  # resend the latest
                else:
                    records.append(probe_record(serial, next_no))
                    next_no += 1
            outcomes = await store.store_punches(records)
            lines = [f"{r.device_serial} {r.record_no}\n"
                     for r, o in zip(records, outcomes) if o.acknowledged]
            out.write("".join(lines))
            out.flush()

    await asyncio.gather(*(producer(i) for i in range(PRODUCERS)))


@dataclass
class CycleReport:
    cycles: int = 0
    acknowledged: int = 0  # distinct records acknowledged over all cycles
    stored: int = 0  # punches in the database at the end
    failures: list[str] = field(default_factory=list)


async def _verify(url: str, data_dir: str, acked: set[tuple[str, int]], fresh: set[tuple[str, int]],
                  sample: int, rng: random.Random, full: bool) -> list[str]:
    """Check the acknowledged records; return what is wrong (empty if all is well)."""
    from lmg.storage.url import open_store, parse_store_url

    problems: list[str] = []
    store = await open_store(url, data_dir=data_dir)
    try:
        if full:
            found = {}
            async for stored in store.iter_punches():
                found[(stored.device_serial, stored.record_no)] = stored
            to_check = [(key, found.get(key)) for key in acked]
        else:
            keys = list(fresh) + rng.sample(sorted(acked - fresh), min(sample, len(acked - fresh)))
            to_check = [(key, await store.get_punch(*key)) for key in keys]
        for (serial, record_no), punch in to_check:
            if punch is None:
                problems.append(f"acknowledged record {serial}/{record_no} is missing")
            elif not punch.same_record(probe_record(serial, record_no)):
                problems.append(f"record {serial}/{record_no} differs from what was sent: {punch}")
        count = await store.count_punches()
        status = await store.outbox_status(0)
        if status.pending != count:
            problems.append(f"{count} punches but {status.pending} outbox items: not one each")
    finally:
        await store.close()
    location = parse_store_url(url, data_dir)
    if full and location.dialect == "sqlite":
        assert location.sqlite_path is not None  # parse_store_url sets it for every sqlite URL
        conn = sqlite3.connect(location.sqlite_path)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        if verdict != "ok":
            problems.append(f"SQLite integrity_check: {verdict}")
    return problems


def run_cycles(url: str, data_dir: str, *, cycles: int, max_run_s: float = 0.4, seed: int = 0,
               deadline_s: float | None = None, log: Callable[[str], None] | None = None) -> CycleReport:
    """Kill-and-verify `cycles` times (or until `deadline_s` of wall time has passed).

    Each cycle waits for the writer's first acknowledgement, lets it run a random
    0..max_run_s more, SIGKILLs it, and checks this cycle's acknowledged records and a
    sample of older ones; after the last cycle every acknowledged record is checked.
    """
    rng = random.Random(seed)
    report = CycleReport()
    acked: set[tuple[str, int]] = set()
    started = time.monotonic()
    for cycle in range(cycles):
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            break
        fresh = _one_cycle(url, data_dir, cycle, rng.randrange(2**32), rng.uniform(0, max_run_s))
        acked |= fresh
        problems = asyncio.run(_verify(url, data_dir, acked, fresh, 50, rng, full=False))
        report.cycles += 1
        if log:
            log(f"cycle {cycle}: {len(fresh)} acknowledged, {len(problems)} problems")
        if problems:
            report.failures.extend(f"cycle {cycle}: {p}" for p in problems[:20])
            break
    report.acknowledged = len(acked)
    if not report.failures:
        report.failures.extend(asyncio.run(_verify(url, data_dir, acked, set(), 0, rng, full=True)))
    return report


def _one_cycle(url: str, data_dir: str, cycle: int, seed: int, run_s: float) -> set[tuple[str, int]]:
    """Run the writer, kill it `run_s` after its first ack; return the acknowledged keys."""
    command = [sys.executable, "-m", "lmg.storage.crash_probe", "write", "--store", url,
               "--data-dir", data_dir, "--cycle", str(cycle), "--seed", str(seed)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    chunks: list[bytes] = []
    first_ack = threading.Event()

    def drain() -> None:
        assert isinstance(child.stdout, io.BufferedReader)  # a pipe with default buffering: it has read1
        while True:
            data = child.stdout.read1(65536)
            if not data:
                return
            chunks.append(data)
            first_ack.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    # A writer that cannot start (bad URL, import error) must fail the run, not hang it:
    # 20 s is far above the ~0.3 s it takes to start and commit on this class of machine.
    if not first_ack.wait(20):
        child.kill()
        _, err = child.communicate()
        raise RuntimeError(f"crash probe writer produced no ack in 20 s: {err.decode(errors='replace')[-2000:]}")
    time.sleep(run_s)
    child.send_signal(signal.SIGKILL)
    child.wait()
    reader.join()
    if child.stderr is not None:
        child.stderr.close()
    text = b"".join(chunks).decode()
    complete = text[: text.rfind("\n") + 1]  # a line cut by the kill was never fully printed
    keys = set()
    for line in complete.splitlines():
        serial, record_no = line.split()
        keys.add((serial, int(record_no)))
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmg.storage.crash_probe")
    sub = parser.add_subparsers(dest="mode", required=True)
    write = sub.add_parser("write", help="write and acknowledge punches until killed")
    write.add_argument("--store", required=True)
    write.add_argument("--data-dir", required=True)
    write.add_argument("--cycle", type=int, required=True)
    write.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(_write_forever(args.store, args.data_dir, args.cycle, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
