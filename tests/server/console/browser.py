"""The console's browser harness: a real gateway, a seeded pair of counties, Debian's Chromium.

Test files import the fixtures from here (`from tests.server.console.browser import browser,
console  # noqa: F401`), so conftest.py stays the other console tests' own.

- `browser`: headless Chromium from Debian's package (/usr/bin/chromium, or LMG_CHROMIUM)
  driven by Playwright's async API; never a downloaded browser. Without it the test skips
  saying `.ci/run` installs chromium and fonts-noto-cjk, or fails when
  LMG_REQUIRE_BROWSER=1 (CI). Each test gets a fresh browser context per visitor.
- `console`: a `Console` world. A real `Gateway` on loopback ports (TCP, WebSocket, admin)
  over SQLite, its clock injected (`Clock`: the wall clock plus an offset the test moves,
  so a lockout expires without sleeping), seeded with two counties of 兰州市, 城关区
  620102 and 七里河区 620103: a project in each with a bid award, a roster whose technical
  lead is not the awarded one (the 中标通知书 ↔ 现场 mismatch), a month of punches (the
  previous month of the clock), warnings evaluated by the real supervision service, a
  device per project, a punch with a photo, and a dead letter in the outbox. Accounts are
  made as `lmg account create` makes them (the console's argon2id hash, the store's call),
  one per role and place (`ACCOUNTS`), all with the password `PASSWORD`.
- Every page a test opens goes through `Console.page(...)`, which records console errors
  and page errors; at teardown the fixture screenshots every page still open (full page,
  under the test's tmp_path) and fails the test if any error was recorded. A test that
  expects an error status (403) says so with `Console.expect_status`, which allows the
  one resource error Chromium logs for it.
- `LMG_UPDATE_SCREENSHOTS=1` copies the overview and project screenshots to docs/console/.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from lmg.protocol.identity import check_digit
from lmg.simulators.terminal import DeviceCredentials
from lmg.storage import BidAward, KeyPerson, PunchIn, WorkerIn

REPO = Path(__file__).resolve().parents[3]
DOCS_IMAGES = REPO / "docs" / "console"
CHROMIUM = os.environ.get("LMG_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1366, "height": 900}  # a bureau's usual laptop screen
PAGE_TIMEOUT_MS = 15_000  # one navigation or wait on a loaded 2-core box; a hang fails with the reason
CHINA = timezone(timedelta(hours=8))
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# Two counties of 兰州市 (GB/T 2260): A is the signed-in county, B the one it must not see.
CITY, A, B = "620100", "620102", "620103"
P_A, P_B = "P-CG-001", "P-QLH-001"
D_A, D_B = "D-CG-001", "D-QLH-001"
PASSWORD = "长城-Lanzhou-2026!"  # one for every seeded account; the lockout test types others


def person(region: str, n: int) -> str:
    """A valid resident ID number (GB 11643) registered in `region`, born in 1980."""
    first17 = f"{region}1980{1 + n % 12:02d}{1 + n:02d}{100 + n:03d}"
    return first17 + check_digit(first17)


# Each county's people: the awarded project manager (present), the awarded technical lead
# (absent: someone else holds the post on the roster), that substitute, and a safety officer
# on site one day in three (low presence).
PEOPLE = {
    region: {
        "manager": (person(region, 1 + k), "张建国" if region == A else "赵志强"),
        "lead": (person(region, 2 + k), "李明" if region == A else "孙立"),
        "substitute": (person(region, 3 + k), "王磊" if region == A else "周涛"),
        "safety": (person(region, 4 + k), "陈静" if region == A else "吴芳"),
    }
    for k, region in ((0, A), (10, B))
}

# Accounts: name -> (department, region, role, pii)
ACCOUNTS = {
    "county-a": ("住建", A, "supervisor", True),
    "county-b": ("住建", B, "supervisor", False),
    "city": ("住建", CITY, "supervisor", False),
    "province": ("住建", "620000", "supervisor", True),
    "labour": ("人社", A, "supervisor", False),
    "operator": ("住建", "620000", "operator", False),
}


class Clock:
    """The gateway's clock: unix ms of the wall clock plus `offset_ms`, which a test moves
    forward instead of sleeping (lockout windows, command timeouts)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def advance(self, ms: int) -> None:
        self.offset_ms += ms


def previous_month(today: date) -> date:
    """The first day of the month before `today`'s."""
    return (today.replace(day=1) - timedelta(days=1)).replace(day=1)


def china_ms(day: date, hour: int, minute: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=CHINA).timestamp()) * 1000


def browser_or_skip() -> str:
    """The Chromium executable, or skip (fail under LMG_REQUIRE_BROWSER=1) saying what is missing."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as exc:
        missing = f"Playwright for Python is not installed ({exc}): `.venv/bin/pip install -e '.[test]'`"
    else:
        if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
            return CHROMIUM
        missing = (f"no Chromium at {CHROMIUM}: `.ci/run` installs Debian's chromium and fonts-noto-cjk "
                   "(apt-get install chromium fonts-noto-cjk); LMG_CHROMIUM names another path")
    if os.environ.get("LMG_REQUIRE_BROWSER") == "1":  # CI: never a silent skip
        pytest.fail(f"LMG_REQUIRE_BROWSER=1 and {missing}", pytrace=False)
    pytest.skip(missing)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Debian Chromium under Playwright, closed after the test."""
    path = browser_or_skip()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, headless=True, args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Visit:
    """One visitor's tab: the page and what went wrong in it."""

    page: Any
    who: str
    errors: list[str] = field(default_factory=list)
    # URLs the test expects an error status from: Chromium logs "Failed to load resource"
    # for them, which is not a fault of the page
    allowed: set[str] = field(default_factory=set)


@dataclass
class Console:
    """The seeded world of one browser test (see the module docstring)."""

    gw: Any  # tests.server.conftest.RunningGateway
    browser: Any
    clock: Clock
    tmp_path: Path
    test_name: str
    month: date  # the evaluated month's first day
    devices: dict[str, DeviceCredentials]
    visits: list[Visit] = field(default_factory=list)
    shots: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gw.admin_port}"

    @property
    def store(self) -> Any:
        return self.gw.store

    @property
    def month_text(self) -> str:
        return f"{self.month:%Y-%m}"

    def url(self, path: str) -> str:
        return self.base + path

    async def page(self, who: str = "anonymous") -> Visit:
        """A new tab in a fresh browser context (no cookies), its errors recorded."""
        context = await self.browser.new_context(viewport=VIEWPORT, locale="zh-CN", timezone_id="Asia/Shanghai",
                                                 accept_downloads=True)
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        page = await context.new_page()
        visit = Visit(page, who)

        def on_console(message: Any) -> None:
            if message.type != "error":
                return
            where = (message.location or {}).get("url", "")
            if "Failed to load resource" in message.text and where in visit.allowed:
                return
            visit.errors.append(f"[{who}] console error at {where or page.url}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: visit.errors.append(f"[{who}] page error at {page.url}: {exc}"))
        self.visits.append(visit)
        return visit

    async def signed_in(self, who: str, password: str = PASSWORD) -> Visit:
        """A tab signed in as account `who` (ACCOUNTS), on the overview."""
        visit = await self.page(who)
        await login(visit.page, self.base, who, password)
        await visit.page.wait_for_url(self.url("/console/"))
        return visit

    async def goto(self, visit: Visit, path: str, *, status: int = 200) -> Any:
        """Open `path` in `visit`'s tab and check the answer's status."""
        if status >= 400:
            self.expect_status(visit, path)
        if path.startswith("/console/punches/"):
            # A photo alone in a tab is an image document with no <link rel=icon>: Chromium
            # asks the origin's /favicon.ico, which is the admin listener's (404), not a page's.
            self.expect_status(visit, "/favicon.ico")
        response = await visit.page.goto(self.url(path))
        assert response is not None, f"no response for {path}"
        assert response.status == status, f"{path}: expected {status}, got {response.status} at {visit.page.url}"
        return response

    def expect_status(self, visit: Visit, path: str) -> None:
        """The test expects an error status from `path` (a 403 or 404 page)."""
        visit.allowed.add(self.url(path))

    async def screenshot(self, visit: Visit, name: str) -> Path:
        """A full-page screenshot of `visit` under the test's tmp_path; the overview and the
        project page are also copied to docs/console/ when LMG_UPDATE_SCREENSHOTS=1."""
        self.shots += 1
        path = self.tmp_path / "screenshots" / f"{self.shots:02d}-{name}.png"
        path.parent.mkdir(exist_ok=True)
        await visit.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("LMG_UPDATE_SCREENSHOTS") == "1" and name in ("overview", "project"):
            DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_IMAGES / f"{name}.png")
        return path

    def errors(self) -> list[str]:
        return [e for visit in self.visits for e in visit.errors]

    async def finish(self) -> None:
        """Screenshot every tab still open, close them, fail on any recorded error."""
        for n, visit in enumerate(self.visits):
            if not visit.page.is_closed():
                try:
                    await self.screenshot(visit, f"final-{n}-{visit.who}")
                except Exception:  # noqa: BLE001 - a tab that cannot be drawn still closes
                    pass
            await visit.page.context.close()
        errors = self.errors()
        if errors:
            pytest.fail("the browser reported errors:\n" + "\n".join(errors[:20]), pytrace=False)


async def login(page: Any, base: str, name: str, password: str) -> None:
    """Fill and submit form#login (the answer is the test's to check)."""
    await page.goto(f"{base}/console/login")
    form = page.locator("form#login")
    await form.locator("input[name=name]").fill(name)
    await form.locator("input[name=password]").fill(password)
    await form.locator("button[type=submit]").click()
    await page.wait_for_load_state("load")


async def create_account(store: Any, name: str, *, department: str, region: str, role: str, pii: bool,
                         password: str) -> None:
    """An account as `lmg account create` makes it: the argon2id hash of the console's
    accounts module, stored by the store's own call."""
    from lmg.server.console.accounts import hash_password

    await store.create_console_account(name, hash_password(password), department=department, region_code=region,
                                       role=role, pii=pii, created_by="test")


async def _jpeg(browser: Any) -> bytes:
    """A real JPEG (a site photo stand-in) drawn by the browser itself: the store takes JPEG
    or PNG only, and the photo page must show an image that decodes."""
    page = await browser.new_page(viewport={"width": 96, "height": 128})
    try:
        await page.set_content("<body style='margin:0;background:#8ab'><div style='font:40px sans-serif;"
                               "padding:30px 20px'>照</div></body>")
        return await page.screenshot(type="jpeg", quality=70)
    finally:
        await page.close()


async def seed(gw: Any, browser: Any, clock: Clock) -> dict[str, Any]:
    """Projects, awards, rosters, devices, a month of punches, warnings, a photo, a dead
    letter and the accounts (see the module docstring). Returns what the tests refer to."""
    import hashlib

    from lmg.server.supervision import Month, default_rules, evaluate_month

    store = gw.store
    now = clock()
    today = datetime.fromtimestamp(now / 1000, CHINA).date()
    month = previous_month(today)
    start = month - timedelta(days=40)
    devices: dict[str, DeviceCredentials] = {}
    for code, serial, region, county in ((P_A, D_A, A, "城关区"), (P_B, D_B, B, "七里河区")):
        people = PEOPLE[region]
        await store.add_project(code, name=f"{county}第一中学教学楼", region_code=region, enterprise="甘肃建工集团",
                                enterprise_uscc="91620000224330386X", start_date=start)
        device = await store.add_device(serial, project_code=code, region_code=region, firmware="sim-1.0")
        devices[serial] = DeviceCredentials(device.serial, device.secret, code)
        await store.import_bid_award(BidAward(
            f"ZB-{code}", code, "甘肃建工集团", "91620000224330386X", start - timedelta(days=5),
            (KeyPerson("project-manager", *people["manager"], "甘162000001"),
             KeyPerson("technical-lead", *people["lead"]),
             KeyPerson("safety-officer", *people["safety"]))))
        await store.import_workers(code, [
            WorkerIn(people["manager"][0], people["manager"][1], post="project-manager", entry_date=start),
            WorkerIn(people["substitute"][0], people["substitute"][1], post="technical-lead", entry_date=start),
            WorkerIn(people["safety"][0], people["safety"][1], post="safety-officer", entry_date=start),
        ], today=today)
    # A month of punches: the manager and the substitute every day 08:00-18:00, the
    # safety officer one day in three; the awarded technical lead never.
    records: list[PunchIn] = []
    days = [month + timedelta(days=n) for n in range(40) if (month + timedelta(days=n)).month == month.month]
    photo = await _jpeg(browser)
    sha = hashlib.sha256(photo).digest()
    for serial, region in ((D_A, A), (D_B, B)):
        people = PEOPLE[region]
        record_no = 0
        for n, day in enumerate(days):
            present = [people["manager"][0], people["substitute"][0]] + ([people["safety"][0]] if n % 3 == 0 else [])
            for who in present:
                for hour in (8, 18):
                    record_no += 1
                    first = record_no == 1  # the month's first punch carries the site photo
                    records.append(PunchIn(serial, record_no, who, china_ms(day, hour), 1 if hour == 8 else 2, 1, 365,
                                           sha if first else None, len(photo) if first else 0))
    await store.store_punches(records)
    for serial in (D_A, D_B):
        await store.photo_append(serial, sha, len(photo), 0, photo)
    # County B's warnings opened 8 days ago and rose to the city (level 2); county A's open now.
    rules, evaluated = default_rules(), Month(month.year, month.month)
    await evaluate_month(store, rules, evaluated, as_of=None, now_ms=now - 8 * DAY_MS, projects=[P_B], escalate=False)
    await evaluate_month(store, rules, evaluated, as_of=None, now_ms=now, projects=[P_A], escalate=False)
    await store.escalate_warnings(now, level2_after_ms=7 * DAY_MS, level3_after_ms=30 * DAY_MS)
    # One record the province refused: a dead letter for the forwarding page.
    # (claimed a minute ahead: the outbox rows are due at the store's own clock, after `now`)
    claimed = await store.claim_outbox(1, clock() + 60_000, 60_000)
    assert claimed, "the punches put nothing in the outbox"
    await store.dead_letter([claimed[0].id], "province answered 400: worker not registered (测试)")
    for name, (department, region, role, pii) in ACCOUNTS.items():
        await create_account(store, name, department=department, region=region, role=role, pii=pii,
                             password=PASSWORD)
    return {"month": month, "devices": devices}


@pytest.fixture
async def console(start_gateway, browser, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Console]:
    """The seeded world; at teardown every open tab is screenshotted and any browser error fails the test."""
    clock = Clock()
    # no scheduled evaluation: the seed evaluates once, at the clock's time, and the tests
    # then see exactly those warnings
    gw = await start_gateway(clock_ms=clock, supervision=False, signal_poll_s=0.05, presence_flush_s=0.1)
    seeded = await seed(gw, browser, clock)
    world = Console(gw, browser, clock, tmp_path, request.node.name, seeded["month"], seeded["devices"])
    try:
        yield world
    finally:
        await world.finish()


async def poll(check: Any, *, attempts: int, what: str, interval_s: float = 0.2) -> Any:
    """Call `check()` (async) until it returns something true, at most `attempts` times:
    a bounded wait for an outcome another party produces (the terminal's ACK)."""
    for _ in range(attempts):
        result = await check()
        if result:
            return result
        await asyncio.sleep(interval_s)
    raise AssertionError(f"{what}: not seen after {attempts} attempts")


async def warning_ids(store: Any, project: str, *, state: str | None = None) -> list[int]:
    """The ids of a project's warnings (in id order)."""
    return [w.id for w in await store.list_warnings(project_code=project, state=state)]


async def audit_rows(store: Any, account: str, event: str | None = None) -> list[Any]:
    """The audit rows of console account `account` (the actor `account:NAME`, or the name
    as the subject of a login row), newest first; only `event`'s when given."""
    rows = await store.list_audit(limit=1000, event=event)
    return [r for r in rows if r.subject in (account, f"account:{account}")
            or f"account:{account}" in (str(v) for v in (r.detail or {}).values())]
