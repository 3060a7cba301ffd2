"""Fixtures for the storage tests: the same contract suite on SQLite and PostgreSQL.

PostgreSQL comes from LMG_TEST_PG_DSN (default postgresql://127.0.0.1:5432/test). Each
PostgreSQL test gets a fresh schema `t_<random>` through the URL's `schema` parameter and
drops it afterwards, so tests and developers can share one server. If the server cannot
be reached, PostgreSQL tests skip with the reason and the command that starts it, or,
when LMG_REQUIRE_POSTGRES=1 (CI), fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from lmg.storage import Store, StoreConfig, open_store

PG_DSN = os.environ.get("LMG_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")
START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
_pg_problem: list[str | None] = []  # probed once per session


def _probe_postgres() -> str | None:
    if not _pg_problem:
        async def probe() -> str | None:
            import asyncpg

            try:
                conn = await asyncpg.connect(PG_DSN, timeout=3)
            except Exception as exc:  # anything: refused, auth, missing database
                return f"{type(exc).__name__}: {exc}"
            await conn.close()
            return None

        _pg_problem.append(asyncio.run(probe()) if not _loop_running() else None)
    return _pg_problem[0]


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def require_postgres() -> None:
    """Skip (or, with LMG_REQUIRE_POSTGRES=1, fail) if PostgreSQL is unreachable."""
    problem = _probe_postgres()
    if problem is None:
        return
    message = (
        f"PostgreSQL at {PG_DSN} is unreachable ({problem}). "
        f"Start it with `{START_HINT}` (or set LMG_TEST_PG_DSN to a server you may use)"
    )
    if os.environ.get("LMG_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"LMG_REQUIRE_POSTGRES=1 and {message}", pytrace=False)
    pytest.skip(f"SKIPPING POSTGRESQL STORAGE TESTS: {message}")


def pytest_sessionstart(session: pytest.Session) -> None:
    _probe_postgres()  # before any event loop exists


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class Backend:
    """Where a test's database lives; `open()` may be called again to simulate a restart."""

    def __init__(self, name: str, url: str, data_dir: Path) -> None:
        self.name = name
        self.url = url
        self.data_dir = data_dir
        self.opened: list[Store] = []

    async def open(self, config: StoreConfig | None = None, **kwargs) -> Store:
        store = await open_store(self.url, data_dir=self.data_dir, config=config, **kwargs)
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


async def _make_backend(name: str, tmp_path: Path) -> Backend:
    if name == "sqlite":
        return Backend(name, f"sqlite:///{tmp_path / 'lmg.db'}", tmp_path)
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    return Backend(name, f"{PG_DSN}?schema={schema}", tmp_path)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = await _make_backend(request.param, tmp_path)
    try:
        yield made
    finally:
        await made.close_all()
        if made.name == "postgres":
            await drop_schema(made.url.rsplit("schema=", 1)[1])


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()


@pytest.fixture
async def pg_urls() -> AsyncIterator[Callable[[], str]]:
    """For PostgreSQL-only tests: make fresh schema URLs; all are dropped at teardown."""
    require_postgres()
    made: list[str] = []

    def make() -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        made.append(schema)
        return f"{PG_DSN}?schema={schema}"

    yield make
    for schema in made:
        await drop_schema(schema)
