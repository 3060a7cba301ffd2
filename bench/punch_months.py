"""`lmg bench punch-months`: PostgreSQL's punches by month (migration 9) at a realistic size.

Two figures, each beside its same-run baseline:
- Write cost of exact dedup across months. The punch insert of version 9 (claim the key in
  `punch_keys`, store the row in its month's partition, queue it) against the version-8
  insert (one unpartitioned table, ON CONFLICT on its unique key), the same rows, 500 per
  transaction as a group-commit batch, phases alternating (`--rounds`) on two fresh
  schemas of one server. The version-8 statement is kept here as the baseline.
- The plans of the queries the operations and supervision features run on punches,
  taken from the store itself: its calls run once on a connection that records every
  statement and its arguments, and each recorded statement is then run under EXPLAIN
  (ANALYZE, BUFFERS) (writes inside a transaction rolled back). `--rows` punches
  (default 300,000) of `--devices` terminals over `--months` months, 2% still in the
  outbox. docs/deployment.md shows them.

PostgreSQL comes from LMG_TEST_PG_DSN (default postgresql://127.0.0.1:5432/test); the
schemas are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson

from lmg.bench.pg_schema import drop_schemas

NAME = "punch-months"
HELP = "PostgreSQL punches by month: insert cost of exact dedup vs version 8, and the key queries' plans"

DEFAULT_PG_DSN = "postgresql://127.0.0.1:5432/test"
BATCH = 500  # rows per transaction: group_commit_max_records
CHINA = timezone(timedelta(hours=8))

# The punch insert of version 8 (storage/postgres.py before migration 9): the baseline.
V8_INSERT = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::integer[],
                         $6::integer[], $7::integer[], $8::bytea[], $9::bigint[])
        AS t(device_serial, record_no, worker_id, punch_time_ms, direction, verify_mode,
             temperature_dc, photo_sha256, photo_size)
), added AS (
    INSERT INTO punches (device_serial, record_no, worker_id, punch_time_ms, direction, verify_mode,
                         temperature_dc, photo_sha256, photo_size, received_at_ms)
    SELECT device_serial, record_no, worker_id, punch_time_ms, direction, verify_mode,
           temperature_dc, photo_sha256, photo_size, $10
    FROM input ORDER BY device_serial, record_no
    ON CONFLICT (device_serial, record_no) DO NOTHING
    RETURNING id, device_serial, record_no
), queued AS (
    INSERT INTO outbox (punch_id, device_serial, next_attempt_at_ms, created_at_ms)
    SELECT id, device_serial, $10, $10 FROM added ORDER BY id
)
SELECT device_serial, record_no FROM added
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rows", type=int, default=300_000, help="punches in the dataset (default 300000)")
    parser.add_argument("--devices", type=int, default=600, help="terminals, 20 per project (default 600)")
    parser.add_argument("--months", type=int, default=6, help="months the punches span, to now (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="v8/v9 insert alternations (default 3)")
    parser.add_argument("--plans", action="store_true", help="print each query's whole plan, not only its summary")


def _dataset(rows: int, devices: int, months: int, now_ms: int) -> list[list[tuple]]:
    """Batches of punch tuples in time order (a site's day: 07:00-19:00 China time)."""
    rng = random.Random(17)
    span_ms = months * 30 * 86_400_000
    times = sorted(now_ms - rng.randrange(span_ms) for _ in range(rows))
    next_no = [0] * devices
    out: list[tuple] = []
    for t in times:
        device = rng.randrange(devices)
        next_no[device] += 1
        day = t - (t + 8 * 3_600_000) % 86_400_000
        t = day + 7 * 3_600_000 + (t % (12 * 3_600_000))  # into the working day, 07:00-19:00
        out.append((f"GS-BENCH-{device:05d}", next_no[device], _worker(device, rng.randrange(40)), t,
                    1 + rng.randrange(2), 1, 365, None, 0))
    return [out[i:i + BATCH] for i in range(0, len(out), BATCH)]


def _worker(device: int, n: int) -> str:
    from lmg.simulators.terminal import worker_id_for

    return worker_id_for((device // 20) * 40 + n)


def _columns(batch: list[tuple]) -> list[list]:
    return [list(column) for column in zip(*batch)]


async def _insert_phase(conn: Any, sql: str, batches: list[list[tuple]]) -> float:
    """Rows per second of `sql` over `batches`, one transaction per batch."""
    start = time.perf_counter()
    for batch in batches:
        async with conn.transaction():
            await conn.fetch(sql, *_columns(batch), max(row[3] for row in batch) + 60_000)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


class Recorder:
    """An asyncpg connection that notes every statement (and its arguments) it runs."""

    def __init__(self, conn: Any, seen: list[tuple[str, tuple]]) -> None:
        self._conn, self._seen = conn, seen

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def _note(self, sql: str, args: tuple) -> None:
        self._seen.append((sql, args))

    async def fetch(self, sql: str, *args: Any, **kw: Any) -> Any:
        self._note(sql, args)
        return await self._conn.fetch(sql, *args, **kw)

    async def fetchrow(self, sql: str, *args: Any, **kw: Any) -> Any:
        self._note(sql, args)
        return await self._conn.fetchrow(sql, *args, **kw)

    async def fetchval(self, sql: str, *args: Any, **kw: Any) -> Any:
        self._note(sql, args)
        return await self._conn.fetchval(sql, *args, **kw)

    async def execute(self, sql: str, *args: Any, **kw: Any) -> Any:
        self._note(sql, args)
        return await self._conn.execute(sql, *args, **kw)

    def cursor(self, sql: str, *args: Any, **kw: Any) -> Any:
        self._note(sql, args)
        return self._conn.cursor(sql, *args, **kw)


async def _explain(conn: Any, sql: str, args: tuple) -> tuple[float, list[str]]:
    """(execution ms, plan lines) of one statement under EXPLAIN ANALYZE; writes roll back."""
    tr = conn.transaction()
    await tr.start()
    try:
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *args)
    finally:
        await tr.rollback()
    lines = [r[0] for r in rows]
    ms = next(float(line.split(":")[1].split()[0]) for line in lines if line.startswith("Execution Time"))
    return ms, lines


def _summary(lines: list[str]) -> list[str]:
    """The plan's node lines (no buffers, no timing footer), for the docs."""
    keep = []
    for line in lines:
        text = line.strip()
        if text.startswith(("Buffers", "Planning", "Execution", "I/O Timings")):
            continue
        keep.append(line)
    return keep


async def _measure(args: argparse.Namespace) -> dict:
    import asyncpg

    from lmg.storage.migrations import load_migrations
    from lmg.storage.postgres import _STORE_PUNCHES, PostgresStore
    from lmg.storage.url import parse_store_url

    dsn = os.environ.get("LMG_TEST_PG_DSN", DEFAULT_PG_DSN)
    now_ms = time.time_ns() // 1_000_000
    batches = _dataset(args.rows, args.devices, args.months, now_ms)
    schemas = {v: f"bench_pm_{v}_{uuid.uuid4().hex[:8]}" for v in ("v8", "v9")}
    stores: dict[str, Any] = {}
    data_dir = tempfile.mkdtemp(prefix="lmg-bench-pm-")
    try:
        for version, schema in schemas.items():
            migrations = load_migrations("postgres")
            stores[version] = await PostgresStore.open(
                parse_store_url(f"{dsn}?schema={schema}"), data_dir=data_dir,
                migrations=migrations[:8] if version == "v8" else migrations)
        conns = {v: await asyncpg.connect(dsn) for v in schemas}
        for version, conn in conns.items():
            await conn.execute(f'SET search_path TO "{schemas[version]}"')
            for serial in sorted({row[0] for batch in batches for row in batch}):
                await conn.execute("INSERT INTO devices (serial, secret, project_code, region_code, created_at_ms) "
                                   "VALUES ($1, $2, $3, '620102', 0)", serial, b"\0" * 32,
                                   f"P-620102-{int(serial[-5:]) // 20:04d}")
        await conns["v9"].execute("SELECT lmg_punch_partitions($1, $2)",
                                  now_ms - args.months * 31 * 86_400_000, args.months + 3)
        # Alternate the two inserts over slices of the dataset, so that noise hits both.
        rates: dict[str, list[float]] = {"v8": [], "v9": []}
        slices = [batches[i::args.rounds] for i in range(args.rounds)]
        for part in slices:
            rates["v8"].append(await _insert_phase(conns["v8"], V8_INSERT, part))
            rates["v9"].append(await _insert_phase(conns["v9"], _STORE_PUNCHES, part))
        v9 = conns["v9"]
        await v9.execute("DELETE FROM outbox WHERE id % 50 <> 0")  # 2% not yet confirmed by the province
        await v9.execute("VACUUM ANALYZE punches")
        await v9.execute("VACUUM ANALYZE punch_keys")
        await v9.execute("VACUUM ANALYZE outbox")
        sizes = dict(await v9.fetch(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c WHERE c.relnamespace = "
            "(SELECT oid FROM pg_namespace WHERE nspname = $1) AND c.relname IN ('punch_keys', 'outbox')",
            schemas["v9"]))
        sizes["punches"] = await v9.fetchval(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'punches'::regclass")
        plans = await _plans(stores["v9"], v9, now_ms, args.devices)
        return {
            "rows": args.rows, "devices": args.devices, "months": args.months, "batch": BATCH,
            "v8_insert_rows_per_s": statistics.median(rates["v8"]),
            "v9_insert_rows_per_s": statistics.median(rates["v9"]),
            "v9_to_v8": statistics.median(b / a for a, b in zip(rates["v8"], rates["v9"])),
            "bytes": {k: int(v) for k, v in sizes.items()},
            "queries": plans,
        }
    finally:
        for store in stores.values():
            await store.close()
        await drop_schemas(dsn, *schemas.values())


async def _plans(store: Any, conn: Any, now_ms: int, devices: int) -> list[dict]:
    """Run each store call once, recording its statements; EXPLAIN ANALYZE the ones that
    read or write punches."""
    seen: list[tuple[str, tuple]] = []
    real = store._connection

    @asynccontextmanager
    async def recording() -> AsyncIterator[Recorder]:
        async with real() as c:
            yield Recorder(c, seen)

    store._connection = recording
    today = datetime.fromtimestamp(now_ms / 1000, CHINA).date()
    month = date(today.year, today.month, 1) - timedelta(days=1)
    first = date(month.year, month.month, 1)
    since = int(datetime(first.year, first.month, 1, tzinfo=CHINA).timestamp() * 1000)
    until = int(datetime(today.year, today.month, 1, tzinfo=CHINA).timestamp() * 1000)
    projects = max(1, devices // 20)  # 20 terminals a project (_dataset, the devices rows)
    picked = sorted({projects // 10, projects // 4, projects // 3} | {0})[-3:]
    codes = [f"P-620102-{n:04d}" for n in picked]
    worker = _worker(picked[0] * 20, 5)
    calls = {
        "supervision: attendance days of 3 projects, last month": lambda: _drain(
            store.iter_attendance_days(codes, first, month)),
        "supervision: project days with punches received in the last hour": lambda:
            store.days_with_punches_received(now_ms - 3_600_000),
        "operations: punches of one project, last month (first page)": lambda:
            store.list_punches(project_code=codes[0], since_ms=since, until_ms=until, limit=100),
        "operations: punches of one worker, last month": lambda:
            store.list_punches(worker_id=worker, since_ms=since, until_ms=until, limit=100),
        "operations: one punch by device and record": lambda: store.get_punch(f"GS-BENCH-{picked[0] * 20:05d}", 10),
        # lease 0: the items stay due, so the plans are of the claim as it ran
        "forwarder: claim 500 due outbox items": lambda: store.claim_outbox(500, now_ms + 3_600_000, 0),
    }
    out = []
    for name, call in calls.items():
        seen.clear()
        await call()
        # The call's main statement is its longest (the attendance aggregate follows a
        # dozen probes of its id search); the claim's two longest are the lease-and-read
        # update and the candidates query (its SKIP LOCKED re-check is shorter).
        statements = sorted({s: a for s, a in seen if "punches" in s or "outbox" in s}.items(),
                            key=lambda item: -len(item[0]))
        parts = (" (lease and read)", " (candidates)") if name.startswith("forwarder") else ("",)
        for (sql, args), part in zip(statements, parts):
            ms, lines = await _explain(conn, sql, args)
            out.append({"query": name + part, "sql": " ".join(sql.split()), "execution_ms": ms,
                        "plan": _summary(lines)})
    store._connection = real
    return out


async def _drain(iterator: Any) -> int:
    n = 0
    async for page in iterator:
        n += len(page)
    return n


def run(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(_measure(args))
    except OSError as exc:
        print(f"lmg bench punch-months: PostgreSQL unreachable ({exc}); set LMG_TEST_PG_DSN", file=sys.stderr)
        return 2
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"{result['rows']:,} punches of {result['devices']} terminals over {result['months']} months, "
          f"{BATCH} per transaction")
    print(f"insert, version 8 (baseline): {result['v8_insert_rows_per_s']:,.0f} rows/s")
    print(f"insert, version 9 (keys + months): {result['v9_insert_rows_per_s']:,.0f} rows/s "
          f"({result['v9_to_v8']:.2f}x the baseline, median of rounds)")
    print("sizes: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in result["bytes"].items()))
    for q in result["queries"]:
        print(f"\n## {q['query']}: {q['execution_ms']:.2f} ms\n{q['sql']}")
        for line in q["plan"] if args.plans else q["plan"][:12]:
            print("    " + line)
    return 0
