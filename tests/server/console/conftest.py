"""Fixtures of the console's tests: a console on each store backend, with an injected clock.

`console` is an aiohttp test client of the admin app (server/admin/app.py `build_app`, the
console mounted at /console/) over a `Gateway` that is built but not started (no terminal
listeners are needed), on the store of the backend under test (SQLite, and PostgreSQL in a
fresh schema, which fails instead of skipping when LMG_REQUIRE_POSTGRES=1). Time is the
`Clock` the store and the gateway share: lockouts and session ends are tested by moving it.

`world` adds two counties of 兰州市 with a project, a device, a key person, punches (B's
with a photo), warnings and accounts of every kind. Password hashes are made once per run
(argon2id costs ~0.3 s each here).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lmg.protocol.identity import check_digit
from lmg.protocol.roster_file import china_date
from lmg.server.admin.app import build_app
from lmg.server.console import accounts
from lmg.server.gateway.gateway import Gateway
from lmg.server.settings import Settings
from lmg.storage import BidAward, EvaluationScope, KeyPerson, PunchIn, WarningFinding, WorkerIn

from tests.server.supervision.conftest import Clock
from tests.storage.conftest import BACKENDS, _make_backend, _probe_postgres, drop_schema

A, B, CITY, PROVINCE = "620102", "620103", "620100", "620000"
P_A, P_B = "P-CG-001", "P-QLH-001"
D_A, D_B = "D-CG-001", "D-QLH-001"
PASSWORD = "correct horse battery staple"
PHOTO = b"\xff\xd8\xff\xe0" + os.urandom(1500)
DAY_MS = 86_400_000
NOW_MS = 1_790_000_000_000  # 2026-09-22 China time: a fixed "now" for the clock
_HASHES: dict[str, str] = {}

# name: (department, region, role, pii)
ACCOUNTS = {
    "county-a": ("住建", A, "supervisor", True),
    "county-b": ("住建", B, "supervisor", False),
    "city": ("住建", CITY, "supervisor", False),
    "labour-a": ("人社", A, "supervisor", False),
    "ops": ("住建", PROVINCE, "operator", True),
    "ops-a": ("住建", A, "operator", False),
}


def person(prefix: str, n: int) -> str:
    first17 = f"{prefix}1980010{n:04d}"
    return first17 + check_digit(first17)


W_A, W_B, W_STRANGER = person(A, 1), person(B, 2), person(A, 9)


def password_hash(password: str = PASSWORD) -> str:
    if password not in _HASHES:
        _HASHES[password] = accounts.hash_password(password)
    return _HASHES[password]


@pytest.fixture(scope="session", autouse=True)
def _postgres_probed() -> None:
    _probe_postgres()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW_MS)


@pytest.fixture(params=BACKENDS)
async def console_store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> AsyncIterator:
    backend = await _make_backend(request.param, tmp_path)
    try:
        store = await backend.open(clock_ms=clock)
        store.backend_url = backend.url
        store.backend_name = backend.name
        yield store
    finally:
        await backend.close_all()
        if backend.name == "postgres":
            await drop_schema(backend.url.rsplit("schema=", 1)[1])


@dataclass
class Console:
    """The test client and what it runs on."""

    client: TestClient
    store: object
    clock: Clock
    gateway: Gateway
    warnings: dict[str, int] = field(default_factory=dict)
    punches: dict[str, int] = field(default_factory=dict)
    today: date = date(2026, 1, 1)

    async def get(self, path: str, **kwargs):
        return await self.client.get(path, allow_redirects=False, **kwargs)

    async def page(self, path: str, **kwargs) -> tuple[int, str]:
        response = await self.get(path, **kwargs)
        return response.status, await response.text()

    async def csrf_of(self, path: str) -> str:
        status, text = await self.page(path)
        assert status == 200, (path, status, text[:500])
        return csrf_in(text)

    async def post(self, path: str, data: dict | None = None, *, csrf: str | None = "page", page: str = "/console/",
                   **kwargs):
        form = dict(data or {})
        if csrf == "page":
            form["csrf"] = await self.csrf_of(page)
        elif csrf is not None:
            form["csrf"] = csrf
        return await self.client.post(path, data=form, allow_redirects=False, **kwargs)

    async def login(self, name: str, password: str = PASSWORD, next_path: str | None = None):
        path = "/console/login" + (f"?next={next_path}" if next_path else "")
        status, text = await self.page(path)
        assert status == 200
        return await self.client.post(path, data={"name": name, "password": password, "csrf": csrf_in(text)},
                                      allow_redirects=False)

    async def logout(self) -> None:
        response = await self.post("/console/logout")
        assert response.status == 303

    async def audit(self, event: str) -> list:
        return await self.store.list_audit(event=event, limit=100)  # type: ignore[attr-defined]


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:800]
    return found.group(1)


@pytest.fixture
async def start_console(console_store, clock, tmp_path):
    """Factory: `await start_console(**settings)` -> Console (TLS with ssl=context)."""
    made: list[TestClient] = []

    async def start(*, ssl=None, **overrides) -> Console:
        settings = Settings.from_keys({"data_dir": str(tmp_path / "data"), "admin": "127.0.0.1:0",
                                       "supervision": False, **overrides})
        gateway = Gateway(settings, console_store, clock_ms=clock)
        server = TestServer(build_app(gateway))
        await server.start_server(ssl=ssl)
        client = TestClient(server)
        made.append(client)
        return Console(client, console_store, clock, gateway)

    yield start
    for client in made:
        await client.close()


@pytest.fixture
async def console(start_console) -> Console:
    return await start_console()


async def add_accounts(store) -> None:
    for name, (department, region, role, pii) in ACCOUNTS.items():
        await store.create_console_account(name, password_hash(), department=department, region_code=region,
                                           role=role, pii=pii, created_by="test")


async def _warning(store, project: str, worker: str, rule: str, first: date, at_ms: int) -> int:
    last = first + timedelta(days=27)
    finding = WarningFinding(rule, project, worker, "project-manager", first, last,
                             {"valid_days": 3, "construction_days": 20, "rate": 0.15})
    await store.apply_warnings(EvaluationScope(frozenset({rule}), first, last, frozenset({project})), [finding],
                               at_ms)
    return (await store.list_warnings(project_code=project, rule=rule))[0].id


@pytest.fixture
async def world(console) -> Console:
    store = console.store
    await add_accounts(store)
    now = console.clock.now_ms
    today = china_date(now)
    first = today.replace(day=1)
    console.today = today
    for code, serial, region, worker in ((P_A, D_A, A, W_A), (P_B, D_B, B, W_B)):
        await store.add_project(code, name=f"项目{region}", region_code=region, start_date=first - timedelta(days=40))
        await store.add_device(serial, project_code=code, region_code=region)
        await store.import_workers(code, [WorkerIn(worker_id=worker, name="张三", post="project-manager",
                                                   entry_date=first - timedelta(days=30))], today=today)
        await store.import_bid_award(BidAward(f"ZB-{code}", code, "甘肃某建工集团", "91620100MA7XXXXX0A",
                                              first - timedelta(days=35),
                                              (KeyPerson("project-manager", worker, "张三", "甘162000001"),)))
    # someone else is on A's roster as its technical lead, who the bid award does not name
    await store.import_workers(P_A, [WorkerIn(worker_id=W_STRANGER, name="王五", post="technical-lead",
                                              entry_date=first - timedelta(days=30))], today=today)
    sha = hashlib.sha256(PHOTO).digest()
    await store.store_punches([
        PunchIn(D_A, 1, W_A, now - 3_600_000, 1, 1, 365, sha, len(PHOTO)),
        PunchIn(D_A, 2, W_STRANGER, now - 3_000_000, 1, 1, 365, None, 0),
        PunchIn(D_B, 1, W_B, now - 3_600_000, 1, 1, 365, sha, len(PHOTO)),
    ])
    await store.photo_append(D_A, sha, len(PHOTO), 0, PHOTO)
    for listing in await store.list_punches(limit=10):
        console.punches[f"{listing.punch.device_serial}/{listing.punch.record_no}"] = listing.id
    console.warnings["b"] = await _warning(store, P_B, W_B, "low-presence", first, now)
    console.warnings["a"] = await _warning(store, P_A, W_A, "low-presence", first, now)
    console.warnings["a2"] = await _warning(store, P_A, W_A, "consecutive-absence", first, now)
    return console
