"""`lmg bench writer`: SQLite commit latency while the event loop is busy, writer process
against a writer thread in the same run.

Why it exists: the gateway's event loop is busy most of the time under load, in short
callbacks (one per terminal read), and a writer thread must win the GIL back from it
after every SQLite call. CPython hands the GIL over only when the holder has not let go
of it for a whole switch interval, so a loop that lets go and takes it again between
callbacks can starve the thread for a long time. The store's writer is a process
(storage/sqlite_writer.py) for that reason; this benchmark shows what that buys.

Both sides write the same transaction (`_write_punches`: 100 punch rows, the outbox
rows, COMMIT with synchronous=FULL) into the same database, one batch every 5 ms with at
most two in flight, like the group commit at a few thousand punches a second:

- baseline: the transaction run in a one-thread executor of the caller's process, as
  the store did before (the same connection settings);
- store: the store's own writer process (`store._writer.write`).

The event loop meanwhile runs Python in slices of 200 µs, sleeping between them so that
it is busy `--busy` of the time (0.0, 0.5 and 0.8 by default; uvloop rounds short
sleeps up, so the measured fraction is reported too). Figures: commit latency p50/p99 as
the caller sees it, and batches done; the phases alternate over `--rounds`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NAME = "writer"
HELP = "SQLite commit latency with a busy event loop: writer process vs writer thread (same run)"

ROWS_PER_BATCH = 100
BATCH_EVERY_S = 0.005
IN_FLIGHT = 2
SLICE_S = 0.0002  # one "terminal read" of Python on the loop


def add_arguments(parser) -> None:
    parser.add_argument("--busy", type=float, nargs="+", default=[0.0, 0.5, 0.8],
                        help="fractions of time the event loop runs Python (default: 0 0.5 0.8)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per phase (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two sides (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _rows(first: int) -> list[tuple]:
    return [(f"SN{i % 256:06d}", first + i, "W12345678901234567", 1_700_000_000_000 + i, 1, 1, 365, None, 0, None)
            for i in range(ROWS_PER_BATCH)]


async def _busy_loop(busy: float, stop: asyncio.Event, burned: list[float]) -> None:
    """Run Python on the loop in SLICE_S slices, sleeping between them so that `busy` of
    the time is Python (nominal: uvloop's timers round up, so `burned` tells the truth)."""
    pause = SLICE_S * (1 - busy) / busy
    while not stop.is_set():
        started = time.perf_counter()
        while time.perf_counter() - started < SLICE_S:
            sum(range(50))
        burned[0] += time.perf_counter() - started
        await asyncio.sleep(pause)


async def _phase(write, seconds: float, first: int) -> dict:
    latencies: list[float] = []
    in_flight: set[asyncio.Future] = set()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        first += ROWS_PER_BATCH
        started = time.perf_counter()
        future = asyncio.ensure_future(write(_rows(first)))
        future.add_done_callback(lambda _, t=started: latencies.append(time.perf_counter() - t))
        in_flight.add(future)
        future.add_done_callback(in_flight.discard)
        while len(in_flight) >= IN_FLIGHT:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(BATCH_EVERY_S)
    if in_flight:
        await asyncio.gather(*in_flight)
    return {"latencies": latencies, "next": first}


def _summary(latencies: list[float], seconds: float) -> dict:
    ordered = sorted(latencies)
    return {"batches": len(ordered), "batches_per_s": round(len(ordered) / seconds, 1),
            "p50_ms": round(statistics.median(ordered) * 1e3, 2) if ordered else None,
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 2) if ordered else None}


async def measure(busy_levels: list[float], seconds: float, rounds: int) -> dict:
    from lmg.storage import open_store
    from lmg.storage.sqlite import SqliteStore, _write_punches
    from lmg.storage.sqlite_writer import STATEMENT_CACHE

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="lmg-bench-writer-") as work:
        store = await open_store(f"sqlite:///{work}/lmg.db", data_dir=work)
        assert isinstance(store, SqliteStore)  # a sqlite URL: its config and writer process are used below
        conn = sqlite3.connect(Path(work) / "lmg.db", isolation_level=None, check_same_thread=False,
                               cached_statements=STATEMENT_CACHE)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={store.config.sqlite_synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(store.config.sqlite_busy_timeout_ms)}")
        thread = ThreadPoolExecutor(1, thread_name_prefix="bench-writer-thread")
        loop = asyncio.get_running_loop()

        def transaction(records: list[tuple]) -> list:
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = _write_punches(conn, records, 0)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return outcomes

        async def via_thread(records: list[tuple]) -> list:
            return await loop.run_in_executor(thread, transaction, records)

        async def via_process(records: list[tuple]) -> list:
            return await store._writer.write(_write_punches, records, 0)

        first = 0
        try:
            for busy in busy_levels:
                stop = asyncio.Event()
                burned = [0.0]
                began = time.perf_counter()
                burner = asyncio.ensure_future(_busy_loop(busy, stop, burned)) if busy > 0 else None
                collected: dict[str, list[float]] = {"thread": [], "process": []}
                for _ in range(rounds):
                    for side, write in (("thread", via_thread), ("process", via_process)):
                        phase = await _phase(write, seconds, first)
                        first = phase["next"]
                        collected[side] += phase["latencies"]
                stop.set()
                if burner is not None:
                    await burner
                measured_busy = round(burned[0] / (time.perf_counter() - began), 2)
                thread_s = _summary(collected["thread"], seconds * rounds)
                process_s = _summary(collected["process"], seconds * rounds)
                ratio = (round(thread_s["p99_ms"] / process_s["p99_ms"], 2)
                         if thread_s["p99_ms"] and process_s["p99_ms"] else None)
                results[str(busy)] = {"loop_busy_measured": measured_busy, "baseline_thread": thread_s,
                                      "store_process": process_s, "p99_thread_over_process": ratio}
        finally:
            thread.shutdown(wait=True)
            conn.close()
            await store.close()
    return results


def run(args) -> int:
    import uvloop

    results = uvloop.run(measure(args.busy, args.seconds, args.rounds))
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"commit latency, {ROWS_PER_BATCH} rows per batch every {BATCH_EVERY_S * 1e3:.0f} ms, "
          f"{IN_FLIGHT} in flight, event loop busy in {SLICE_S * 1e6:.0f} µs slices")
    print("| loop busy (measured) | writer thread (baseline) p50 / p99 ms, batches | writer process p50 / p99 ms, batches | p99 thread / process |")
    print("|---|---|---|---|")
    for busy, row in results.items():
        t, p = row["baseline_thread"], row["store_process"]
        print(f"| {float(busy):.0%} ({row['loop_busy_measured']:.0%}) | {t['p50_ms']} / {t['p99_ms']}, {t['batches']} | "
              f"{p['p50_ms']} / {p['p99_ms']}, {p['batches']} | {row['p99_thread_over_process']} |")
    return 0
