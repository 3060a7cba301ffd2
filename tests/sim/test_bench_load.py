"""Smoke test of `lmg bench load`: the --quick machinery end to end with tiny sizes, every
headline key present and the report written. No timing is asserted."""

from __future__ import annotations

import json

import pytest
import uvloop

from bench import load

pytestmark = pytest.mark.timeout(90)

TINY = dict(load_devices=4, load_s=0.5, warmup_s=0.0, idle_devices=20, storm_devices=20, backlog_devices=2,
            backlog_records=100, backlog_batch=20, fleet_processes=1, latency_fleet_processes=2,
            workers_devices=0)


def test_tiny_matrix_reports_every_figure(tmp_path):
    result = uvloop.run(load.matrix(TINY, mosquitto=True, log=lambda msg: None))
    headline = load.headline(result)
    for key in ("baseline_acks_per_s", "gateway_acks_per_s", "p99_ms", "rss_per_conn_kib", "storm_s",
                "backlog_records_per_s", "mosquitto_acks_per_s", "bare_p99_ms_at_half_baseline",
                "box_steal_pct_at_half_baseline"):
        assert key in headline
    assert headline["baseline_acks_per_s"] > 0 and headline["gateway_acks_per_s"] > 0
    assert result["storm"]["complete"] and result["backlog"]["acked"] == 200
    assert result["gateway"]["errors"] == 0 and result["gateway"]["rejected"] == 0
    report = {"date": "today", "quick": True, "machine": load.machine(), "elapsed_s": 0, "headline": headline,
              "result": result}
    json.dumps(report)
    table = load.markdown(report)
    assert "| acked punches/s, bare baseline |" in table and "storm" in table
    # the open-loop phases ran their fleet in two processes, and the bare server's floor is beside the gateway's
    assert result["baseline"]["latency_at_half"]["acked"] > 0 and result["latency_at_half_baseline"]["acked"] > 0
    assert "bare server (open loop)" in table


def test_box_share_counts_idle_and_steal():
    before = [100, 0, 50, 1000, 10, 0, 5, 20]
    after = [200, 0, 100, 1100, 20, 0, 10, 60]  # 100+50+100+10+5+40 = 305 ticks spent
    share = load.box_share(before, after)
    assert share == {"box_idle_pct": round(100 * 110 / 305, 1), "box_steal_pct": round(100 * 40 / 305, 1)}
