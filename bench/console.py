"""`lmg bench console`: every console page of a generated province, against the JSON API call behind it.

The province is bench/supervision.py's (deterministic, seed 15): `projects` projects over
Gansu's counties, each with one terminal, a bid award naming 6 key people who are also on
its roster (so 20,000 projects are 120,000 workers, 6 key posts each), and March 2026 of
punches after the supervision bench's profiles. The month is evaluated by the supervision
service (`evaluate_month`: the warnings opened at the run's wall clock, so the overview's
trend of recent months counts them), one outbox record is dead-lettered, and accounts are
made with `lmg account create` (the CLI, a process each): the province, the city and the
county holding the most projects (住建 supervisors), and an operator. Beside each account
an API token (`lmg token create`) with the same department, region and scopes.

Then `lmg serve` runs on that store (a process of its own, so the client's work here does
not share the server's event loop) and, for each page, `requests` GETs of the page with the
signed-in session cookie alternate with `requests` GETs of the bare JSON API call behind it
with the token (after 2 warm-up calls each), one at a time. Reported per page: the median
and p90 of each (ms), `ratio` = page / API median, and whether the page's median is within
the issue's 300 ms. The pairs (the API calls are what the page's handler could do at best):

| page | as | API call |
|---|---|---|
| overview | province, city, county | GET /api/v1/warnings?state=open (a page: the API has no counts) |
| warnings, page 1 | province | GET /api/v1/warnings?limit=PAGE |
| warnings, filtered | city | GET /api/v1/warnings?level=1&rule=low-presence&state=open&region=COUNTY |
| warning detail | county | GET /api/v1/warnings/{id} |
| project (month) | county | GET /api/v1/projects/{code}/attendance?month=2026-03 |
| devices | operator | GET /api/v1/devices?limit=PAGE |
| forwarding | operator | GET /api/v1/forwarding/status |
| monthly CSV | county | GET /api/v1/warnings?region=COUNTY&period_from..to (the month's, limit 1000) |

Timings on a shared 2-core VM are noisy; read the ratio. Results go to
bench/results/console-<date>-{quick,full}.json.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from lmg.bench import supervision as generator
from lmg.bench.cli import UsageError
from lmg.bench.pg_schema import drop_schemas, scratch_store

NAME = "console"
HELP = "time every console page of a generated province against the bare JSON API call behind it"
RESULTS = Path(__file__).resolve().parent / "results"
QUICK_PROJECTS = 1_000
FULL_PROJECTS = 20_000
REQUESTS = 30  # timed requests per page and per API call: a median and a p90 from 30 samples
WARMUP = 2  # untimed calls first: templates compiled, the store's caches and pages warm
MIN_SAMPLES = 5
# A pair of calls that takes seconds (the forwarding status over millions of outbox rows)
# stops after this long, with at least MIN_SAMPLES: the full run stays within 20 minutes.
PAGE_BUDGET_S = 60.0
TARGET_MS = 300  # issue 16: every page within 300 ms on this machine
PAGE_SIZE = 50  # the API's page size in the list pairs: the console's own page of rows
PASSWORD = "bench-Console-2026!"
READY_S = 120  # `lmg serve` opening (and checking) a 20,000-project store
IN_FLIGHT = 64
MONTH = f"{generator.YEAR}-{generator.MONTH:02d}"




def add_arguments(parser: Any) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_PROJECTS:,} projects (default {FULL_PROJECTS:,}); 6 key people each")
    parser.add_argument("--projects", type=int, help="projects to generate (overrides --quick)")
    parser.add_argument("--requests", type=int, default=REQUESTS, help=f"timed requests per page (default {REQUESTS})")
    parser.add_argument("--store", help="store URL: sqlite (default: a fresh file in a temporary directory) or "
                                        "postgresql://HOST/DB (a fresh schema is made and dropped)")
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument("--out", default=str(RESULTS), help="directory for console-<date>-{quick,full}.json")
    parser.add_argument("--no-write", action="store_true", help="write no result file")


# --- the province ---------------------------------------------------------------------------------------------

async def load_rosters(store: Any, generated: dict[str, Any]) -> int:
    """Each project's 6 key people on its roster under their posts (the site side of the
    project page's 中标通知书 ↔ 现场 check); the number of workers imported."""
    from lmg.storage import WorkerIn

    first = date(generator.YEAR, generator.MONTH, 1)
    semaphore = asyncio.Semaphore(IN_FLIGHT)
    total = 0

    async def one(code: str) -> None:
        nonlocal total
        rows, seen = [], set()
        for post, who, _ in generated["people"][code]:
            if who not in seen:  # the 1% "elsewhere" manager is the previous project's: once here
                seen.add(who)
                rows.append(WorkerIn(who, f"人员{who[-6:]}", post=post, entry_date=first))
        async with semaphore:
            await store.import_workers(code, rows, today=first)
        total += len(rows)

    await asyncio.gather(*(one(code) for code, _ in generated["projects"]))
    return total


def principals(generated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The accounts measured: the county with the most projects, its city, the province, an operator."""
    by_county = Counter(region for _, region in generated["projects"])
    county = max(sorted(by_county), key=lambda code: by_county[code])
    city = county[:4] + "00"
    return {
        "province": {"department": "住建", "region": "620000", "role": "supervisor", "scopes": "read"},
        "city": {"department": "住建", "region": city, "role": "supervisor", "scopes": "read"},
        "county": {"department": "住建", "region": county, "role": "supervisor", "scopes": "read"},
        "operator": {"department": "住建", "region": "620000", "role": "operator", "scopes": "read"},
    }


def lmg_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmg.server.cli", *args]


def create_accounts(url: str, data_dir: str, who: dict[str, dict[str, Any]]) -> None:
    """`lmg account create` for each principal, the password on stdin, as an administrator would."""
    for name, p in who.items():
        done = subprocess.run(
            lmg_command("account", "create", f"bench-{name}", "--department", p["department"], "--region",
                        p["region"], "--role", p["role"], "--password-stdin", "--store", url, "--data-dir", data_dir),
            input=PASSWORD + "\n", capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"lmg account create bench-{name} exited {done.returncode}: {done.stderr.strip()}")


def create_tokens(url: str, data_dir: str, who: dict[str, dict[str, Any]]) -> dict[str, str]:
    """`lmg token create` for each principal, with the account's region and department (none
    for the operator: an operator's token has neither); the tokens printed once, by name."""
    made = {}
    for name, p in who.items():
        supervisor = p["role"] == "supervisor"
        limits = ["--department", p["department"], "--region", p["region"]] if supervisor else []
        done = subprocess.run(
            lmg_command("token", "create", "--name", f"bench-{name}", "--scope", p["scopes"], *limits, "--store", url,
                        "--data-dir", data_dir, "--json"),
            capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"lmg token create bench-{name} exited {done.returncode}: {done.stderr.strip()}")
        made[name] = json.loads(done.stdout)["token"]
    return made


# --- the server -----------------------------------------------------------------------------------------------

class Server:
    """`lmg serve` on the generated store: no terminal listeners in use, the admin on loopback."""

    def __init__(self, url: str, data_dir: str):
        self.url, self.data_dir = url, data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin = ""

    def start(self) -> None:
        ready = Path(self.data_dir) / "ready.json"
        ready.unlink(missing_ok=True)
        self.log = open(Path(self.data_dir) / "serve.log", "ab")
        self.proc = subprocess.Popen(
            lmg_command("serve", "--store", self.url, "--data-dir", self.data_dir, "--tcp", "127.0.0.1:0", "--ws", "",
                        "--admin", "127.0.0.1:0", "--ready-file", str(ready), "--log-level", "warning",
                        "--supervision", "false"),
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + READY_S
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lmg serve did not get ready (exit {self.proc.poll()}); its log:\n"
                                   + (Path(self.data_dir) / "serve.log").read_text(errors="replace")[-3000:])
            time.sleep(0.1)
        host, port = json.loads(ready.read_text())["admin"]
        self.admin = f"http://{host}:{port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()


CSRF = re.compile(r'name="csrf"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf"')


async def sign_in(base: str, name: str) -> Any:
    """An aiohttp session holding the console's session cookie of account `name`."""
    import aiohttp

    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # unsafe: a cookie for 127.0.0.1
    async with session.get(f"{base}/console/login") as response:
        found = CSRF.search(await response.text())
    if found is None:
        await session.close()
        raise RuntimeError("the login page holds no csrf field (form#login input[name=csrf])")
    async with session.post(f"{base}/console/login", allow_redirects=False,
                            data={"name": name, "password": PASSWORD, "csrf": found.group(1) or found.group(2)}
                            ) as response:
        if response.status != 303:
            await session.close()
            raise RuntimeError(f"signing in as {name} answered {response.status}, not 303")
    return session


async def timed(session: Any, url: str, headers: dict[str, str] | None = None) -> tuple[float, int]:
    """(ms to the last byte, bytes) of one GET, which must answer 200."""
    started = time.perf_counter()
    async with session.get(url, headers=headers, allow_redirects=False) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url} answered {response.status}: {body[:300]!r}")
    return (time.perf_counter() - started) * 1000, len(body)


def p90(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


async def measure(name: str, page_session: Any, page_url: str, api_session: Any, api_url: str, token: str,
                  requests: int) -> dict[str, Any]:
    """The page and its API call, alternating, `requests` times each after the warm-up."""
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(WARMUP):
        await timed(page_session, page_url)
        await timed(api_session, api_url, auth)
    page, api = [], []
    size = api_size = 0
    started = time.perf_counter()
    for n in range(requests):
        if n >= MIN_SAMPLES and time.perf_counter() - started > PAGE_BUDGET_S:
            break
        ms, size = await timed(page_session, page_url)
        page.append(ms)
        ms, api_size = await timed(api_session, api_url, auth)
        api.append(ms)
    page_ms, api_ms = statistics.median(page), statistics.median(api)
    return {"page": name, "page_path": page_url.split("/", 3)[3], "api_path": api_url.split("/", 3)[3],
            "page_ms": round(page_ms, 1), "page_p90_ms": round(p90(page), 1), "api_ms": round(api_ms, 1),
            "api_p90_ms": round(p90(api), 1), "ratio": round(page_ms / api_ms, 2) if api_ms else None,
            "within_300ms": page_ms <= TARGET_MS, "samples": len(page), "page_bytes": size, "api_bytes": api_size}


async def first_warning(api: Any, base: str, token: str, region: str) -> int:
    async with api.get(f"{base}/api/v1/warnings", params={"region": region, "limit": "1"},
                       headers={"Authorization": f"Bearer {token}"}) as response:
        items = (await response.json())["items"]
    if not items:
        raise RuntimeError(f"no warning in {region}: the generated month should have opened some")
    return int(items[0]["id"])


async def pages(base: str, who: dict[str, dict[str, Any]], made: dict[str, str], generated: dict[str, Any],
                requests: int, log: Any) -> list[dict[str, Any]]:
    import aiohttp

    county, city = who["county"]["region"], who["city"]["region"]
    project = next(code for code, region in generated["projects"] if region == county)
    sessions = {name: await sign_in(base, f"bench-{name}") for name in who}
    api = aiohttp.ClientSession()
    try:
        warning = await first_warning(api, base, made["county"], county)
        first, last = f"{MONTH}-01", f"{MONTH}-31"
        plan = [
            ("overview (province)", "province", "/console/", "/api/v1/warnings?state=open"),
            ("overview (city)", "city", "/console/", "/api/v1/warnings?state=open"),
            ("overview (county)", "county", "/console/", "/api/v1/warnings?state=open"),
            ("warnings, page 1", "province", "/console/warnings", f"/api/v1/warnings?limit={PAGE_SIZE}"),
            ("warnings, filtered", "city",
             f"/console/warnings?level=1&rule=low-presence&state=open&region={county}",
             f"/api/v1/warnings?level=1&rule=low-presence&state=open&region={county}&limit={PAGE_SIZE}"),
            ("warning detail", "county", f"/console/warnings/{warning}", f"/api/v1/warnings/{warning}"),
            ("project", "county", f"/console/projects/{project}?month={MONTH}",
             f"/api/v1/projects/{project}/attendance?month={MONTH}"),
            ("devices", "operator", "/console/devices", f"/api/v1/devices?limit={PAGE_SIZE}"),
            ("forwarding", "operator", "/console/forwarding", "/api/v1/forwarding/status"),
            ("monthly CSV (county)", "county", f"/console/reports/monthly.csv?month={MONTH}",
             f"/api/v1/warnings?region={county}&period_from={first}&period_to={last}&limit=1000"),
        ]
        out = []
        for name, principal, page_path, api_path in plan:
            row = await measure(name, sessions[principal], base + page_path, api, base + api_path, made[principal],
                                requests)
            row["as"] = principal
            log(f"{name:24} page {row['page_ms']:7.1f} ms (p90 {row['page_p90_ms']:7.1f})  "
                f"api {row['api_ms']:7.1f} ms  ratio {row['ratio']}")
            out.append(row)
        return out
    finally:
        await api.close()
        for session in sessions.values():
            await session.close()


# --- the run --------------------------------------------------------------------------------------------------

async def prepare(projects: int, url: str, data_dir: str, log: Any) -> dict[str, Any]:
    """Generate, load and evaluate the province. Returns it, the principals and the figures of the set-up."""
    from lmg.server.supervision import Month, default_rules, evaluate_month, evaluation_pool
    from lmg.storage import StoreConfig, open_store

    log(f"generating {projects:,} projects ...")
    generated = generator.province(projects)
    now_ms = time.time_ns() // 1_000_000
    store = await open_store(url, data_dir=data_dir, config=StoreConfig(sqlite_synchronous="NORMAL"))
    try:
        log("loading projects, devices, awards and punches ...")
        loaded = await generator.load(store, generated)
        started = time.perf_counter()
        workers = await load_rosters(store, generated)
        roster_s = time.perf_counter() - started
        log(f"{loaded['punches']:,} punches, {workers:,} roster workers; evaluating {MONTH} ...")
        pool = evaluation_pool()
        try:
            started = time.perf_counter()
            applied = await evaluate_month(store, default_rules(), Month(generator.YEAR, generator.MONTH),
                                           as_of=None, now_ms=now_ms, executor=pool)
            evaluate_s = time.perf_counter() - started
        finally:
            pool.shutdown()
        claimed = await store.claim_outbox(1, now_ms, 60_000)
        if claimed:
            await store.dead_letter([claimed[0].id], "bench: a record the province refused")
    finally:
        await store.close()
    return {"generated": generated, "who": principals(generated), "workers": workers, "opened": applied.opened,
            "punches": loaded["punches"], "setup_s": loaded["setup_s"], "punch_load_s": loaded["punch_load_s"],
            "roster_s": round(roster_s, 2), "evaluate_s": round(evaluate_s, 2)}


async def bench(projects: int, url: str | None, *, requests: int = REQUESTS, log: Any = print) -> dict[str, Any]:
    """Generate, serve, measure; the figures as a dict. `url` None: a fresh SQLite file; a
    postgresql:// URL gets a fresh schema, dropped afterwards."""
    temp = tempfile.mkdtemp(prefix="lmg-bench-console-")
    backend, url, schema = scratch_store(url, temp, "bench_console")
    server = Server(url, temp)
    try:
        ready = await prepare(projects, url, temp, log)
        log("creating the accounts and tokens (lmg account create, lmg token create) ...")
        await asyncio.to_thread(create_accounts, url, temp, ready["who"])
        made = await asyncio.to_thread(create_tokens, url, temp, ready["who"])
        log("starting lmg serve ...")
        await asyncio.to_thread(server.start)
        rows = await pages(server.admin, ready["who"], made, ready["generated"], requests, log)
        return {
            "backend": backend, "projects": projects, "workers": ready["workers"], "punches": ready["punches"],
            "warnings": ready["opened"], "requests": requests, "target_ms": TARGET_MS,
            "principals": {name: p["region"] for name, p in ready["who"].items()},
            "pages": rows, "all_within_target": all(r["within_300ms"] for r in rows),
            "setup": {"setup_s": ready["setup_s"], "punch_load_s": ready["punch_load_s"],
                      "roster_s": ready["roster_s"], "evaluate_s": ready["evaluate_s"]},
        }
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(temp, ignore_errors=True)
        if schema is not None:
            await drop_schemas(url.split("?", 1)[0], schema)


def markdown(report: dict[str, Any]) -> str:
    """The figures as the table docs/console.md shows."""
    r, m = report["result"], report["machine"]
    lines = [
        f"Run {report['date']} ({'quick' if report['quick'] else 'full'}, {r['backend']}): {r['projects']:,} projects, "
        f"{r['workers']:,} workers, {r['punches']:,} punches, {r['warnings']:,} warnings; {m['cpus']} CPUs "
        f"({m['cpu']}), Python {m['python']}; median of {r['requests']} requests each (fewer where `n` says so: a "
        f"page's pairs stop after {PAGE_BUDGET_S:.0f} s).",
        "",
        "| page | as | page ms (p90) | API ms (p90) | page / API | ≤ 300 ms | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["pages"]:
        lines.append(f"| {row['page']} | {row['as']} | {row['page_ms']} ({row['page_p90_ms']}) | {row['api_ms']} "
                     f"({row['api_p90_ms']}) | {row['ratio']}x | {'yes' if row['within_300ms'] else '**no**'} | "
                     f"{row.get('samples', r['requests'])} |")
    return "\n".join(lines) + "\n"


def run(args: Any) -> int:
    from lmg.bench.load import machine

    projects = args.projects or (QUICK_PROJECTS if args.quick else FULL_PROJECTS)
    if projects < 2:
        raise UsageError("--projects: at least 2")
    if args.requests < 1:
        raise UsageError("--requests: at least 1")
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    started = time.perf_counter()
    result = asyncio.run(bench(projects, args.store, requests=args.requests, log=log))
    now = datetime.now(timezone.utc)
    report = {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "quick": projects < FULL_PROJECTS, "machine": machine(),
              "elapsed_s": round(time.perf_counter() - started, 1), "result": result}
    if not args.no_write:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        name = f"console-{now:%Y-%m-%d}-{'quick' if report['quick'] else 'full'}"
        if result["backend"] != "sqlite":
            name += f"-{result['backend']}"
        (out / f"{name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(markdown(report))
    return 0

