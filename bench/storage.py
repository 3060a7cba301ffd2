"""`lmg bench storage`: the group-commit write path against raw sqlite3 in the same run.

Baseline: plain `sqlite3` executemany of the same punch rows into the same `punches`
table (schema from the store's own migrations), 500 rows per transaction, WAL and
synchronous=FULL, rows prebuilt as tuples: the fastest a single writer can go on this
disk with the same durability.

Store: `open_store()` on a fresh directory, fed by `--producers` asyncio tasks (default
1000, one per device), each awaiting `store_punches(records)` in a loop with `--batch`
records per call (default 10: a turnstile uploading what it buffered, the common shape
after any reconnect). The same run also measures 1 record per call, reported as
`single_record_*`: there the event loop's ~7 µs of Python per await (wake, resume,
build the next PunchIn) rather than SQLite is the limit. The store does more per row than the
baseline (duplicate detection, the outbox row, the await round trip per record) and
this figure includes all of it. Latency is time-to-durable as a producer sees it: from
the call to the return after COMMIT.

The phases alternate (`--rounds`) so disk and CPU noise hit both alike; figures are the
totals over rounds. With PostgreSQL reachable (LMG_TEST_PG_DSN, default
postgresql://127.0.0.1:5432/test) the same producers run against a throw-away schema.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid

import orjson

from lmg.bench.pg_schema import drop_schemas

NAME = "storage"
HELP = "punch write path: group commit vs raw sqlite3 executemany (same run)"

DEFAULT_PG_DSN = "postgresql://127.0.0.1:5432/test"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rows", type=int, default=60_000,
                        help="rows per phase per round (default 60000)")
    parser.add_argument("--rounds", type=int, default=2, help="baseline/store alternations (default 2)")
    parser.add_argument("--producers", type=int, default=1000,
                        help="concurrent producer tasks, one device each (default 1000)")
    parser.add_argument("--batch", type=int, default=10,
                        help="records per store_punches call of a producer (default 10); "
                             "single-record figures are measured beside it")
    parser.add_argument("--dir", default=None, help="where the temporary databases go (default: $TMPDIR)")
    parser.add_argument("--pg", choices=("auto", "off", "require"), default="auto",
                        help="PostgreSQL figures: when reachable (auto), never, or fail if unreachable")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop for the store phases (default uvloop, as the server)")


def _punch_rows(count: int, devices: int) -> list[tuple]:
    now = int(time.time() * 1000)
    sha = bytes(range(32))
    return [(f"LMG{i % devices:07d}", i // devices, "620102199001011234", now + i, 1 + i % 2, 1,
             365, sha, 48_000, now) for i in range(count)]


def run_baseline(directory: str, rows: list[tuple]) -> float:
    """Seconds to insert `rows` with raw sqlite3, 500 per transaction."""
    from lmg.storage.migrations import load_migrations
    from lmg.storage.sqlite import _migrate

    path = os.path.join(directory, f"baseline-{uuid.uuid4().hex}.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    _migrate(conn, load_migrations("sqlite"), path, 0)
    sql = ("INSERT INTO punches (device_serial, record_no, worker_id, punch_time_ms, direction, "
           "verify_mode, temperature_dc, photo_sha256, photo_size, received_at_ms) "
           "VALUES (?,?,?,?,?,?,?,?,?,?)")
    started = time.perf_counter()
    for start in range(0, len(rows), 500):
        conn.execute("BEGIN")
        conn.executemany(sql, rows[start:start + 500])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass
    return elapsed


async def run_producers(store, rows: int, producers: int, batch: int, first_record: int,
                        latencies: list[float]) -> float:
    """Seconds for `producers` tasks to store `rows` records through `store`."""
    from lmg.storage.api import PunchIn

    per_producer = max(1, rows // producers)
    now = int(time.time() * 1000)
    sha = bytes(range(32))

    async def producer(index: int) -> None:
        serial = f"LMG{index:07d}"
        record_no = first_record
        end = first_record + per_producer
        clock = time.perf_counter
        append = latencies.append
        while record_no < end:
            count = min(batch, end - record_no)
            records = [PunchIn(serial, record_no + k, "620102199001011234", now + record_no + k,
                               1, 1, 365, sha, 48_000) for k in range(count)]
            started = clock()
            await store.store_punches(records)
            append(clock() - started)
            record_no += count

    started = time.perf_counter()
    await asyncio.gather(*(producer(i) for i in range(producers)))
    return time.perf_counter() - started


async def _pg_reachable(dsn: str) -> str | None:
    try:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=3)
        await conn.close()
        return None
    except Exception as exc:  # any failure means "no PostgreSQL figures"
        return f"{type(exc).__name__}: {exc}"


async def _drop_schema(dsn: str, schema: str) -> None:
    await drop_schemas(dsn, schema)


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _measure(args: argparse.Namespace) -> dict:
    from lmg.storage import open_store

    directory = tempfile.mkdtemp(prefix="lmg-bench-", dir=args.dir)
    rows_per_phase = (args.rows // args.producers) * args.producers or args.producers
    baseline_rows = _punch_rows(rows_per_phase, args.producers)
    base_seconds = store_seconds = single_seconds = 0.0
    latencies: list[float] = []
    single_latencies: list[float] = []
    per_producer = rows_per_phase // args.producers
    try:
        store = await open_store(f"sqlite:///{os.path.abspath(directory)}/store.db",
                                 data_dir=directory)
        try:
            for round_no in range(args.rounds):
                base_seconds += await asyncio.to_thread(run_baseline, directory, baseline_rows)
                store_seconds += await run_producers(
                    store, rows_per_phase, args.producers, args.batch,
                    2 * round_no * per_producer, latencies)
                if args.batch != 1:
                    single_seconds += await run_producers(
                        store, rows_per_phase, args.producers, 1,
                        (2 * round_no + 1) * per_producer, single_latencies)
        finally:
            await store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    total = rows_per_phase * args.rounds
    baseline_rate = total / base_seconds
    result = {
        "rows": total,
        "producers": args.producers,
        "records_per_call": args.batch,
        "loop": args.loop,
        "baseline_rows_per_s": round(baseline_rate),
        "store_rows_per_s": round(total / store_seconds),
        "ratio": round((total / store_seconds) / baseline_rate, 3),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }
    if single_latencies:
        result.update({
            "single_record_rows_per_s": round(total / single_seconds),
            "single_record_ratio": round((total / single_seconds) / baseline_rate, 3),
            "single_record_p50_ms": round(_percentile(single_latencies, 0.50) * 1000, 2),
            "single_record_p99_ms": round(_percentile(single_latencies, 0.99) * 1000, 2),
        })
    if args.pg != "off":
        dsn = os.environ.get("LMG_TEST_PG_DSN", DEFAULT_PG_DSN)
        problem = await _pg_reachable(dsn)
        if problem is not None:
            if args.pg == "require":
                raise SystemExit(f"lmg bench storage: PostgreSQL at {dsn} is unreachable ({problem})")
            result["pg_skipped"] = f"PostgreSQL at {dsn} unreachable: {problem}"
        else:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            pg_latencies: list[float] = []
            pg_dir = tempfile.mkdtemp(prefix="lmg-bench-pg-", dir=args.dir)
            try:
                store = await open_store(f"{dsn}?schema={schema}", data_dir=pg_dir)
                try:
                    seconds = await run_producers(store, rows_per_phase, args.producers, args.batch,
                                                  0, pg_latencies)
                finally:
                    await store.close()
            finally:
                await _drop_schema(dsn, schema)
                shutil.rmtree(pg_dir, ignore_errors=True)
            result.update({
                "pg_rows": rows_per_phase,
                "pg_store_rows_per_s": round(rows_per_phase / seconds),
                "pg_ratio_vs_sqlite_baseline": round((rows_per_phase / seconds) / (total / base_seconds), 3),
                "pg_p50_ms": round(_percentile(pg_latencies, 0.50) * 1000, 2),
                "pg_p99_ms": round(_percentile(pg_latencies, 0.99) * 1000, 2),
            })
    return result


def run(args: argparse.Namespace) -> int:
    if args.loop == "uvloop":
        try:
            import uvloop
        except ModuleNotFoundError:
            print("lmg bench storage: uvloop is not installed; use --loop asyncio", file=sys.stderr)
            return 2
        result = uvloop.run(_measure(args))
    else:
        result = asyncio.run(_measure(args))
    if args.json:
        print(orjson.dumps(result).decode())
        return 0
    print(f"storage write path: {result['rows']} rows, {result['producers']} producers x "
          f"{result['records_per_call']} record(s) per call, {result['loop']}")
    print(f"  {'':28} {'rows/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"  {'raw sqlite3 (baseline)':28} {result['baseline_rows_per_s']:>10}")
    print(f"  {'SQLite store, group commit':28} {result['store_rows_per_s']:>10} "
          f"{result['p50_ms']:>8} {result['p99_ms']:>8}   ratio {result['ratio']} (target >= 0.7)")
    if "single_record_rows_per_s" in result:
        print(f"  {'  same, 1 record per call':28} {result['single_record_rows_per_s']:>10} "
              f"{result['single_record_p50_ms']:>8} {result['single_record_p99_ms']:>8}   "
              f"ratio {result['single_record_ratio']}")
    if "pg_store_rows_per_s" in result:
        print(f"  {'PostgreSQL store':28} {result['pg_store_rows_per_s']:>10} "
              f"{result['pg_p50_ms']:>8} {result['pg_p99_ms']:>8}")
    elif "pg_skipped" in result:
        print(f"  PostgreSQL: skipped ({result['pg_skipped']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmg.bench.storage", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
