"""Crash consistency: a writer killed with SIGKILL at random moments never loses an
acknowledged punch, never stores one twice, never tears punch from outbox entry.

50 kill cycles on SQLite (about 30 s), 10 on PostgreSQL; `bench/soak_storage.py` runs
the same probe for longer.
"""

from __future__ import annotations

import pytest

from lmg.storage.crash_probe import run_cycles

pytestmark = pytest.mark.slow


def test_sqlite_survives_50_random_kills(tmp_path):
    report = run_cycles(f"sqlite:///{tmp_path / 'lmg.db'}", str(tmp_path), cycles=50, seed=3)
    assert report.failures == []
    assert report.cycles == 50
    assert report.acknowledged > 0


@pytest.mark.postgres
async def test_postgres_survives_10_random_kills(pg_urls, tmp_path):
    import asyncio

    url = pg_urls()
    report = await asyncio.to_thread(run_cycles, url, str(tmp_path), cycles=10, seed=5)
    assert report.failures == []
    assert report.cycles == 10 and report.acknowledged > 0
