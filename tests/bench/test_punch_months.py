"""`lmg bench punch-months` on a small dataset: both inserts run, every store call's plan
is taken, and the plans keep the two properties docs/deployment.md relies on: the
supervision aggregate reads only the month it names, and the forwarder's claim reads one
month per item (never a join over every month). No timing is asserted."""

from __future__ import annotations

import argparse
import json
import re

import asyncpg
import pytest

from lmg.bench import punch_months
from tests.storage.conftest import PG_DSN, require_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

MONTH = re.compile(r"punches_y\d{4}m\d{2}")


async def test_the_plans_read_only_the_months_they_need_and_no_schema_is_left():
    require_postgres()
    args = argparse.Namespace(json=True, rows=6_000, devices=60, months=3, rounds=1, plans=True)
    result = await punch_months._measure(args)
    json.dumps(result)  # the --json output is this object
    assert result["v8_insert_rows_per_s"] > 0 and result["v9_insert_rows_per_s"] > 0 and result["v9_to_v8"] > 0
    assert result["bytes"]["punches"] > 0 and result["bytes"]["punch_keys"] > 0
    plans = {q["query"]: "\n".join(q["plan"]) for q in result["queries"]}
    assert len(plans) == len(result["queries"]) == 7, list(plans)
    aggregate = plans["supervision: attendance days of 3 projects, last month"]
    assert len(set(MONTH.findall(aggregate))) == 1, aggregate
    lease = plans["forwarder: claim 500 due outbox items (lease and read)"]
    assert "Hash Join" not in lease and "never executed" in lease, lease
    assert "on outbox" in plans["forwarder: claim 500 due outbox items (candidates)"]
    worker = plans["operations: punches of one worker, last month"]
    assert "worker_id_id_idx" in worker and len(set(MONTH.findall(worker))) == 1, worker
    conn = await asyncpg.connect(PG_DSN)
    try:
        left = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_pm_%'")
    finally:
        await conn.close()
    assert left == []
