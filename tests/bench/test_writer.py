"""Smoke test of the writer benchmark: both sides commit, with and without a busy loop,
and every key is reported. No timing is asserted (see bench/writer.py for the figures)."""

from __future__ import annotations

import json

import pytest

from lmg.bench import writer

pytestmark = pytest.mark.timeout(120)


async def test_both_writers_commit_and_every_key_is_reported():
    result = await writer.measure([0.0, 0.5], seconds=0.3, rounds=1)
    json.dumps(result)  # the --json output is this object
    assert set(result) == {"0.0", "0.5"}
    for row in result.values():
        assert set(row) == {"loop_busy_measured", "baseline_thread", "store_process", "p99_thread_over_process"}
        for side in ("baseline_thread", "store_process"):
            assert row[side]["batches"] > 0 and row[side]["p99_ms"] >= row[side]["p50_ms"] > 0
    assert result["0.0"]["loop_busy_measured"] == 0.0
    assert result["0.5"]["loop_busy_measured"] > 0
