"""`lmg bench supervision`: evaluate a generated province's month, against one SQL aggregate.

A province is generated (deterministic, seed 15): `projects` projects over Gansu's counties,
each with one terminal, started on the month's first day, and a bid award naming 6 key
people (项目经理, 技术负责人, 质量员, 安全员, 施工员, 总监理工程师). Each person punches the
month (March 2026) after a profile:

- 85% regular: on site 95% of the days, 2 punches (sometimes 3) about 8-9 h apart;
- 5% short days: on site every day, but a third of the days under 4 h (not valid days);
- 4% patchy: on site 60% of the days (below 80%: `low-presence`, runs of absence);
- 5% absent: never (`committed-absent`, `low-presence`, `consecutive-absence`);
- 1% elsewhere: the project manager of the project before, punching there too
  (`double-post` on both).

It is loaded through the store's own APIs (projects, devices and awards a call each, many
in flight; punches in `store_punches` calls of 5,000), then:

- **evaluate_s**: `server/supervision/service.find` for the month in full, as the gateway
  runs it: the store's per-person masks of punched and valid days over two months (the
  month and its look-back; `Store.iter_attendance_masks`) read on the event loop while
  chunks of 250 projects are evaluated in the one-process pool (`evaluation_pool`). `evaluate_inline_s` is the same with every chunk
  evaluated on the loop (the CLI). The findings are then applied (`apply_s`, one
  transaction; reported apart, it is writes, not the evaluation).
- **baseline_s**: ONE SQL statement over the same punches, run raw on the same database:
  the valid days (2 punches 4 h apart on a China day) counted per project and person for
  the month, every row fetched. It only counts; the evaluation also builds calendars,
  checks leave, runs, commitments and writes nothing. Target: evaluate_s within 3x.

Timings on a shared 2-core VM are noisy; read the ratio. The 1-minute load average before
the evaluation and before the baseline is reported beside them (`load_average`): the two
are comparable only when it is alike. Results go to
bench/results/supervision-{quick,full}-{sqlite,postgres}.{md,json}.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from lmg.bench.cli import UsageError
from lmg.bench.pg_schema import drop_schemas, scratch_store

NAME = "supervision"
HELP = "evaluate a generated province's month of key-personnel attendance, against one SQL aggregate of valid days"
RESULTS = Path(__file__).resolve().parent / "results"
QUICK_PROJECTS = 1_000
FULL_PROJECTS = 20_000
POSTS = ("project-manager", "technical-lead", "quality-officer", "safety-officer", "construction-officer",
         "chief-supervisor")
YEAR, MONTH = 2026, 3
PUNCH_BATCH = 5_000  # store_punches records per call: ten group-commit batches
IN_FLIGHT = 64  # project, device and award calls at once
USCC = "91620000224330386X"
CHINA_OFFSET_MS = 8 * 3_600_000
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
PG_DSN = os.environ.get("LMG_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")




def add_arguments(parser: Any) -> None:
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PROJECTS:,} projects (default {FULL_PROJECTS:,})")
    parser.add_argument("--projects", type=int, help="projects to generate (overrides --quick)")
    parser.add_argument("--store", help="store URL: sqlite (default: a fresh file in a temporary directory) or "
                                        "postgresql://HOST/DB (a fresh schema is made and dropped)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")
    parser.add_argument("--out", default=str(RESULTS), help="directory for the markdown table and JSON")
    parser.add_argument("--no-write", action="store_true", help="write no result files")


# --- the province --------------------------------------------------------------------------------------------

def _check_digit(first17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, weights)) % 11]


def id_number(n: int) -> str:
    """The n-th generated person's resident ID number (unique up to 36 million)."""
    born = date(1960, 1, 1) + timedelta(days=n // 1000)
    first17 = f"620102{born:%Y%m%d}{n % 1000:03d}"
    return first17 + _check_digit(first17)


def counties() -> list[str]:
    from lmg.protocol.regions import Level, all_regions

    return sorted(r.code for r in all_regions() if r.level is Level.COUNTY)


def month_days() -> list[date]:
    first = date(YEAR, MONTH, 1)
    return [first + timedelta(days=n) for n in range(31)]


def day_ms(day: date) -> int:
    return (day.toordinal() - date(1970, 1, 1).toordinal()) * DAY_MS - CHINA_OFFSET_MS


def province(projects: int, seed: int = 15) -> dict[str, Any]:
    """The generated province: projects (code, region), the awards' people and each person's
    punch times on their project (a list per project of (id_number, [ms...]))."""
    rng = random.Random(seed)
    regions = counties()
    days = month_days()
    out_projects: list[tuple[str, str]] = []
    people: dict[str, list[tuple[str, str, str]]] = {}
    punches: dict[str, list[tuple[str, list[int]]]] = {}
    profiles: Counter[str] = Counter()
    for p in range(projects):
        code = f"SV{p:05d}"
        out_projects.append((code, regions[p % len(regions)]))
        staff = []
        for k, post in enumerate(POSTS):
            who = id_number(p * len(POSTS) + k)
            roll = rng.random()
            profile = ("regular" if roll < 0.85 else "short" if roll < 0.90 else "patchy" if roll < 0.94
                       else "absent" if roll < 0.99 else "elsewhere")
            if profile == "elsewhere" and (post != "project-manager" or p == 0):
                profile = "regular"
            profiles[profile] += 1
            if profile == "elsewhere":  # the previous project's manager, also committed here
                who = people[out_projects[p - 1][0]][0][1]
            staff.append((post, who, profile))
        people[code] = staff
        rows: list[tuple[str, list[int]]] = []
        for post, who, profile in staff:
            times: list[int] = []
            for day in days:
                if profile == "absent" or (profile == "regular" and rng.random() > 0.95) or (
                        profile == "patchy" and rng.random() > 0.60):
                    continue
                start = day_ms(day) + 7 * HOUR_MS + rng.randrange(0, 2 * HOUR_MS)
                span = (rng.randrange(1 * HOUR_MS, 3 * HOUR_MS) if profile == "short" and rng.random() < 1 / 3
                        else rng.randrange(8 * HOUR_MS, 9 * HOUR_MS))
                times.append(start)
                if rng.random() < 0.2:
                    times.append(start + span // 2)  # back from lunch
                times.append(start + span)
            rows.append((who, times))
        punches[code] = rows
    return {"projects": out_projects, "people": people, "punches": punches, "profiles": dict(profiles)}


# --- loading -------------------------------------------------------------------------------------------------

async def load(store: Any, generated: dict[str, Any]) -> dict[str, Any]:
    from lmg.storage import BidAward, KeyPerson, PunchIn

    started = time.perf_counter()
    semaphore = asyncio.Semaphore(IN_FLIGHT)

    async def one(code: str, region: str) -> None:
        async with semaphore:
            await store.add_project(code, name=f"工程 {code}", region_code=region, start_date=date(YEAR, MONTH, 1))
            await store.add_device(f"D{code}", project_code=code, region_code=region)
            people = tuple(KeyPerson(post, who, f"人员{who[-6:]}") for post, who, _ in generated["people"][code])
            await store.import_bid_award(BidAward(f"ZB-{code}", code, "甘肃建工集团", USCC, date(YEAR, 1, 15), people))

    await asyncio.gather(*(one(code, region) for code, region in generated["projects"]))
    setup_s = time.perf_counter() - started
    started = time.perf_counter()
    batch: list[Any] = []
    total = 0
    pending: set[asyncio.Task[Any]] = set()
    for code, _ in generated["projects"]:
        serial = f"D{code}"
        record = 1
        for who, times in generated["punches"][code]:
            for t in times:
                batch.append(PunchIn(serial, record, who, t, 1, 1, 365, None, 0))
                record += 1
            if len(batch) >= PUNCH_BATCH:
                total += len(batch)
                pending.add(asyncio.ensure_future(store.store_punches(batch)))
                batch = []
                if len(pending) >= 4:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if batch:
        total += len(batch)
        pending.add(asyncio.ensure_future(store.store_punches(batch)))
    if pending:
        await asyncio.gather(*pending)
    return {"setup_s": round(setup_s, 2), "punches": total, "punch_load_s": round(time.perf_counter() - started, 2)}


# --- the baseline --------------------------------------------------------------------------------------------

_DAY = f"(punch_time_ms + {CHINA_OFFSET_MS}) / {DAY_MS}"
BASELINE_SQL = (
    "SELECT d.project_code, v.worker_id, count(*) AS valid_days FROM ("
    f"SELECT device_serial, worker_id, {_DAY} AS day FROM punches "
    "WHERE punch_time_ms >= {since} AND punch_time_ms < {until} "
    "GROUP BY device_serial, worker_id, day "
    "HAVING count(*) >= 2 AND max(punch_time_ms) - min(punch_time_ms) >= 14400000"
    ") v JOIN devices d ON d.serial = v.device_serial GROUP BY d.project_code, v.worker_id")


async def baseline(url: str, data_dir: str) -> tuple[float, int]:
    """(seconds, rows) of the one aggregate, raw on the store's database."""
    since, until = day_ms(date(YEAR, MONTH, 1)), day_ms(date(YEAR, MONTH + 1, 1))
    if url.startswith("sqlite"):
        import sqlite3

        path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else os.path.join(data_dir, "lmg.db")
        conn = sqlite3.connect(path)
        try:
            started = time.perf_counter()
            rows = conn.execute(BASELINE_SQL.format(since="?", until="?"), (since, until)).fetchall()
            return time.perf_counter() - started, len(rows)
        finally:
            conn.close()
    import asyncpg

    dsn, _, schema = url.partition("?schema=")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        started = time.perf_counter()
        rows = await conn.fetch(BASELINE_SQL.format(since="$1", until="$2"), since, until, timeout=1800)
        return time.perf_counter() - started, len(rows)
    finally:
        await conn.close()


# --- the run -------------------------------------------------------------------------------------------------

async def bench(projects: int, url: str | None, *, log: Any = print) -> dict[str, Any]:
    """Generate, load, evaluate, measure the baseline; the figures as a dict. `url` None: a
    fresh SQLite file; a postgresql:// URL gets a fresh schema, dropped afterwards."""
    from lmg.server.supervision import Month, default_rules, evaluation_pool, find, to_finding
    from lmg.storage import StoreConfig, open_store

    temp = tempfile.mkdtemp(prefix="lmg-bench-supervision-")
    backend, url, schema = scratch_store(url, temp, "bench_sv")
    month = Month(YEAR, MONTH)
    now_ms = day_ms(date(YEAR, MONTH + 1, 1)) + 10 * HOUR_MS
    try:
        log(f"generating {projects:,} projects ...")
        started = time.perf_counter()
        generated = province(projects)
        generate_s = time.perf_counter() - started
        # Loading is not measured against anything: synchronous=NORMAL spares the bench an
        # fsync per batch (the evaluation only reads).
        store = await open_store(url, data_dir=temp, config=StoreConfig(sqlite_synchronous="NORMAL"),
                                 clock_ms=lambda: now_ms)
        try:
            log("loading ...")
            loaded = await load(store, generated)
            log(f"loaded {loaded['punches']:,} punches in {loaded['punch_load_s']} s; evaluating ...")
            rules = default_rules()
            pool = evaluation_pool()
            try:
                await asyncio.get_running_loop().run_in_executor(pool, abs, 0)  # started before the clock runs
                load_evaluate = os.getloadavg()[0]
                started = time.perf_counter()
                found = await find(store, rules, month, as_of=None, executor=pool)
                evaluate_s = time.perf_counter() - started
            finally:
                pool.shutdown()
            log(f"evaluated in {evaluate_s:.2f} s with the pool; again on the loop ...")
            started = time.perf_counter()
            inline = await find(store, rules, month, as_of=None)
            inline_s = time.perf_counter() - started
            assert found.scope is not None and inline.findings == found.findings
            started = time.perf_counter()
            applied = await store.apply_warnings(found.scope, [to_finding(f) for f in found.findings], now_ms)
            apply_s = time.perf_counter() - started
            log(f"evaluated on the loop in {inline_s:.2f} s, applied in {apply_s:.2f} s; baseline ...")
        finally:
            await store.close()
        load_baseline = os.getloadavg()[0]
        baseline_s, baseline_rows = await baseline(url, temp)
        by_rule = Counter(str(f.rule) for f in found.findings)
        return {
            "backend": backend, "projects": projects, "people": projects * len(POSTS), "punches": loaded["punches"],
            "evaluate_s": round(evaluate_s, 3), "baseline_s": round(baseline_s, 3),
            "ratio": round(evaluate_s / baseline_s, 2) if baseline_s else None,
            "evaluate_inline_s": round(inline_s, 3),
            "inline_ratio": round(inline_s / baseline_s, 2) if baseline_s else None,
            "apply_s": round(apply_s, 3), "baseline_rows": baseline_rows,
            "load_average": {"evaluate": round(load_evaluate, 1), "baseline": round(load_baseline, 1)},
            "warnings": dict(sorted(by_rule.items())), "opened": applied.opened,
            "generate_s": round(generate_s, 2), "setup_s": loaded["setup_s"], "punch_load_s": loaded["punch_load_s"],
            "profiles": generated["profiles"],
        }
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        if schema is not None:
            await drop_schemas(url.split("?", 1)[0], schema)


def markdown(report: dict[str, Any]) -> str:
    r, m = report["result"], report["machine"]
    target = "met" if r["ratio"] is not None and r["ratio"] <= 3 else "missed"
    return "\n".join([
        f"Run {report['date']} ({'quick' if report['quick'] else 'full'}, {r['backend']}) on {m['cpus']} CPUs "
        f"({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']} (a shared 2-core VM: read the ratio).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| projects × key posts | {r['projects']:,} × 6 = {r['people']:,} people |",
        f"| punches (one month) | {r['punches']:,} |",
        f"| **evaluate_s** (two months of per-person day masks read, chunks evaluated in the one-process pool, as "
        f"the gateway does) | {r['evaluate_s']} s |",
        f"| **baseline_s** (one SQL aggregate counting valid days per person, raw) | {r['baseline_s']} s "
        f"({r['baseline_rows']:,} rows) |",
        f"| evaluate / baseline (target ≤ 3x: {target}) | {r['ratio']}x |",
        f"| evaluate_inline_s (the same on the event loop, as `lmg supervision evaluate` does) | "
        f"{r['evaluate_inline_s']} s ({r['inline_ratio']}x) |",
        f"| apply_s (the findings written, one transaction) | {r['apply_s']} s |",
        f"| warnings by rule | {', '.join(f'{k} {v:,}' for k, v in r['warnings'].items())} |",
        f"| loading (not measured against anything) | setup {r['setup_s']} s, punches {r['punch_load_s']} s |",
        *([f"| 1-minute load average before the evaluation / the baseline | {r['load_average']['evaluate']} / "
           f"{r['load_average']['baseline']} |"] if "load_average" in r else []),
        "",
    ])


def run(args: Any) -> int:
    from lmg.bench.load import machine

    projects = args.projects or (QUICK_PROJECTS if args.quick else FULL_PROJECTS)
    if projects < 2:
        raise UsageError("--projects: at least 2")
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    started = time.perf_counter()
    result = asyncio.run(bench(projects, args.store, log=log))
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "quick": projects < FULL_PROJECTS,
              "machine": machine(), "elapsed_s": round(time.perf_counter() - started, 1), "result": result}
    stem = f"supervision-{'quick' if report['quick'] else 'full'}-{result['backend']}"
    if not args.no_write:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    if args.json:
        print(json.dumps({k: result[k] for k in ("backend", "projects", "evaluate_s", "baseline_s", "ratio",
                                                 "warnings")}, ensure_ascii=False))
    else:
        print(markdown(report))
    return 0
