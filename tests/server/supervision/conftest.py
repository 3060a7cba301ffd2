"""Fixtures for the supervision glue's tests: a store on each backend with an injected clock.

The backends are tests/storage's (SQLite, and PostgreSQL in a fresh schema per test, which
fails instead of skipping when LMG_REQUIRE_POSTGRES=1). The store and the code under test
share one `Clock`, so punches are received at the time the test says and the schedule
runs at it: no sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.storage.conftest import BACKENDS, _make_backend, _probe_postgres, drop_schema


class Clock:
    """Unix ms, moved by the test."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture(scope="session", autouse=True)
def _postgres_probed() -> None:
    _probe_postgres()  # outside any event loop: the probe runs its own


@pytest.fixture
def clock() -> Clock:
    return Clock(0)


@pytest.fixture(params=BACKENDS)
async def sv_store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> AsyncIterator:
    backend = await _make_backend(request.param, tmp_path)
    try:
        store = await backend.open(clock_ms=clock)
        store.backend_url = backend.url  # for the CLI tests, which open it again
        store.backend_name = backend.name
        yield store
    finally:
        await backend.close_all()
        if backend.name == "postgres":
            await drop_schema(backend.url.rsplit("schema=", 1)[1])
