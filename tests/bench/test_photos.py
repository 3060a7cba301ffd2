"""Smoke test of `lmg bench photos`: every phase runs on both blob stores and every key is
reported; the schemas it made are gone afterwards. No timing is asserted (see
bench/results/photos-full.md for the figures)."""

from __future__ import annotations

import argparse
import json

import asyncpg
import pytest

from lmg.bench import photos
from tests.storage.conftest import PG_DSN, require_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


async def test_every_phase_runs_on_both_stores_and_leaves_no_schema(tmp_path):
    require_postgres()
    args = argparse.Namespace(json=True, count=6, size=2_000, concurrency=2, rounds=2, quick=False, dir=str(tmp_path))
    result = await photos.bench(args)
    json.dumps(result)  # the --json output is this object
    for phase in ("file_put", "file_get", "postgres_put", "postgres_get", "sqlite_store_upload",
                  "postgres_store_upload"):
        assert result[phase]["per_s"] > 0 and result[phase]["median_ms"] > 0, phase
    assert set(result["layouts"]) == {"bytea", "bytea_external", "large_object"}
    assert result["postgres_to_file_put_ratio"] > 0 and result["postgres_to_sqlite_upload_ratio"] > 0
    conn = await asyncpg.connect(PG_DSN)
    try:
        left = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_photos_%' "
                                "OR nspname LIKE 'bench_layouts_%'")
    finally:
        await conn.close()
    assert left == []
