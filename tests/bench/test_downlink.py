"""Smoke test of `lmg bench downlink`: the phases end to end at tiny sizes, every headline figure
present beside its same-run baseline, the report written. No timing is asserted."""

from __future__ import annotations

import json

import pytest
import uvloop

from lmg.bench import downlink, load

pytestmark = pytest.mark.timeout(120)

TINY = dict(devices=2, workers=6, face_bytes=5_000, rate=20.0, rounds=2, cap_s=30.0)


def test_tiny_run_pushes_the_roster_and_reports_every_figure():
    result = uvloop.run(downlink.bench(TINY, log=lambda msg: None))
    head = result["headline"]
    for key in ("p50_ms_push", "p99_ms_push", "p99_ms_quiet", "p99_ratio", "faces_per_s", "face_mb_per_s",
                "in_sync_s", "acks_per_server_cpu_s_push", "acks_per_server_cpu_s_quiet"):
        assert key in head
    assert [p["kind"] for p in result["phases"]] == ["push", "quiet", "quiet", "push"]  # ABBA
    for phase in result["phases"]:
        assert phase["measured_acks"] > 0 and phase["unexpected_disconnects"] == 0
        if phase["kind"] == "push":
            assert phase["roster"]["version_min"] == 6 and phase["roster"]["workers_min"] == 6
            assert phase["face_chunks"] == 2 * 6  # one 5 KB chunk per face per terminal
    assert head["faces_per_s"] > 0 and head["errors"] == 0
    report = {"date": "today", "quick": True, "machine": load.machine(), "elapsed_s": 0, "sizes": TINY,
              "result": result}
    json.dumps(report, ensure_ascii=False)
    table = downlink.markdown(report)
    assert "| punch ACK p50 / p99 / p99.9" in table and "same run, no push" in table and "faces/s" in table
