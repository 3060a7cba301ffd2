"""Smoke test of `lmg bench load`: the --quick machinery end to end with tiny sizes, every
headline key present and the report written; the store comparison and the outage-recovery
phase the same way. No timing is asserted."""

from __future__ import annotations

import json
import os

import pytest
import uvloop

from lmg.bench import load, load_outage

pytestmark = pytest.mark.timeout(90)

TINY = dict(load_devices=4, load_s=0.5, warmup_s=0.0, idle_devices=20, storm_devices=20, backlog_devices=2,
            backlog_records=100, backlog_batch=20, fleet_processes=1, latency_fleet_processes=2,
            workers_devices=0, metrics_rounds=1, metrics_load_s=0.5)


def test_tiny_matrix_reports_every_figure(tmp_path):
    result = uvloop.run(load.matrix(TINY, mosquitto=True, log=lambda msg: None))
    headline = load.headline(result)
    for key in ("baseline_acks_per_s", "gateway_acks_per_s", "p99_ms", "rss_per_conn_kib", "storm_s",
                "backlog_records_per_s", "mosquitto_acks_per_s", "bare_p99_ms_at_half_baseline",
                "box_steal_pct_at_half_baseline"):
        assert key in headline
    assert headline["baseline_acks_per_s"] > 0 and headline["gateway_acks_per_s"] > 0
    # efficiency: acks per CPU-second of the servers' own processes
    assert headline["gateway_acks_per_cpu_s"] > 0 and headline["baseline_acks_per_cpu_s"] > 0
    assert headline["gateway_to_baseline_per_cpu"] == round(
        headline["gateway_acks_per_cpu_s"] / headline["baseline_acks_per_cpu_s"], 3)
    if result["mosquitto"] is not None:  # it ran
        assert headline["mosquitto_acks_per_cpu_s"] > 0 and headline["gateway_to_mosquitto_per_cpu"] is not None
    else:
        assert "mosquitto_acks_per_cpu_s" not in headline
    assert result["storm"]["complete"] and result["backlog"]["acked"] == 200
    assert result["gateway"]["errors"] == 0 and result["gateway"]["rejected"] == 0
    report = {"date": "today", "quick": True, "machine": load.machine(), "elapsed_s": 0, "headline": headline,
              "result": result}
    json.dumps(report)
    table = load.markdown(report)
    assert "| acked punches/s, bare baseline |" in table and "storm" in table
    # the open-loop phases ran their fleet in two processes, and the bare server's floor is beside the gateway's
    assert result["baseline"]["latency_at_half"]["acked"] > 0 and result["latency_at_half_baseline"]["acked"] > 0
    assert "bare server (open loop)" in table and "acks per server CPU-second, closed loop" in table
    assert set(result["latency_ladder"]) == {"steps", "met_up_to_rate"}
    # metrics on against off, same run: both variants drove acks, the scraper reached /metrics
    cost = result["metrics_cost"]
    assert cost["on"]["acked"] > 0 and cost["off"]["acked"] > 0 and cost["ratio"] is not None
    assert headline["metrics_cost_ratio"] == cost["ratio"] and "metrics on" in table
    assert cost["on"]["scrapes"] >= 1 and cost["on"]["scrape_failures"] == 0


def test_box_share_counts_idle_and_steal():
    before = [100, 0, 50, 1000, 10, 0, 5, 20]
    after = [200, 0, 100, 1100, 20, 0, 10, 60]  # 100+50+100+10+5+40 = 305 ticks spent
    share = load.box_share(before, after)
    assert share == {"box_idle_pct": round(100 * 110 / 305, 1), "box_steal_pct": round(100 * 40 / 305, 1)}


def _phase(p99_ms: float) -> dict:
    return {"acks_per_s": 1.0, "latency_ms": {"p50_ms": 1.0, "p99_ms": p99_ms, "p999_ms": p99_ms}, "server_cpu_s": 0.0,
            "sent": 1, "acked": 1, "box_idle_pct": 0.0, "box_steal_pct": 0.0}


@pytest.mark.parametrize(("p99s", "met_at"), [
    ([60.0, 40.0, 20.0, 10.0], 1 / 6),  # stops at the first rate that meets 25 ms
    ([90.0, 80.0, 70.0, 60.0], None),  # none does: every step is reported
])
def test_latency_ladder_lowers_the_rate_until_p99_meets_the_target(monkeypatch, p99s, met_at):
    asked: list[float] = []

    async def fake_fleet_run(server, devices, **spec):
        asked.append(spec["rate"])
        return _phase(p99s[len(asked) - 1])

    monkeypatch.setattr(load, "fleet_run", fake_fleet_run)
    sizes = {"latency_fleet_processes": 2}
    ladder = uvloop.run(load.latency_ladder(None, [], {}, 24_000.0, _phase(100.0), sizes, lambda msg: None))
    assert asked == [24_000.0 * f for f in load.LADDER][:len(ladder["steps"])]
    assert [step["latency_ms"]["p99_ms"] for step in ladder["steps"]] == p99s[:len(asked)]
    assert ladder["met_up_to_rate"] == (round(24_000 * met_at) if met_at else None)


def test_latency_ladder_is_empty_when_half_the_baseline_already_meets_the_target():
    ladder = uvloop.run(load.latency_ladder(None, [], {}, 24_000.0, _phase(12.0), {}, lambda msg: None))
    assert ladder == {"steps": [], "met_up_to_rate": 12_000}


TINY_OUTAGE = dict(outage_devices=4, outage_hours=0.1, outage_photo_share=0.5, outage_batch=4, outage_workers=2,
                   outage_store="sqlite", outage_fleet_processes=2, outage_cap_s=60.0, disk_files=20)


def test_tiny_outage_reports_every_figure_and_delivers_everything():
    outage = uvloop.run(load_outage.outage_run(TINY_OUTAGE, log=lambda msg: None))
    punches = 4 * 6  # 0.1 h at one punch a minute
    photos = outage["photos"]
    assert (outage["records"], outage["acked"], outage["rejected"], outage["bad_frames"]) == (punches, punches, 0, 0)
    assert outage["store"] == "sqlite" and outage["workers"] == 1 and outage["fleet_processes"] == 2
    assert photos["confirmed"] == photos["announced"] and photos["refused"] == 0
    assert photos["bytes_confirmed"] == photos["confirmed"] * 30 * 1024
    assert (outage["province_records"], outage["province_photos"]) == (punches, photos["confirmed"])
    assert outage["gateway_stored_punches"] == punches and outage["complete"] is True
    headline = load.headline({"outage": outage})
    assert set(load.OUTAGE_HEADLINE) - {"outage_error"} <= set(headline)
    for key in ("outage_acked_s", "outage_forwarded_s", "disk_photo_mb_per_s", "outage_peak_rss_mib"):
        assert headline[key] is not None and headline[key] > 0, key
    assert headline["outage_wal_mb"] is None  # SQLite: no WAL figure
    assert outage["disk"]["files"] == 20 and outage["disk"]["directory_same_filesystem_as_store"] is True
    report = {"date": "today", "quick": True, "machine": load.machine(), "elapsed_s": 0, "headline": headline,
              "result": {"sizes": TINY_OUTAGE, "outage": outage}}
    json.dumps(report)
    table = load.markdown(report)
    assert "outage recovery: 4 terminals" in table and "disk fsync'd 30 KB files" in table


def test_disk_photo_rate_writes_and_removes_its_files(tmp_path):
    rate = load_outage.disk_photo_rate(str(tmp_path), 5, size=1000)
    assert (rate["files"], rate["file_bytes"]) == (5, 1000) and rate["mb_per_s"] > 0
    assert list(tmp_path.iterdir()) == []


def test_stores_compare_runs_sqlite_and_postgres_on_one_and_two_workers():
    sizes = dict(load_devices=4, stores_s=0.5, warmup_s=0.0, fleet_processes=1)
    stores = uvloop.run(load.stores_compare(sizes, log=lambda msg: None))
    assert stores["sqlite_1"]["acks_per_s"] > 0 and stores["sqlite_1"]["errors"] == 0
    skipped = [name for name in ("postgres_1", "postgres_2") if "skipped" in stores[name]]
    if skipped and os.environ.get("LMG_REQUIRE_POSTGRES") == "1":  # CI: never a silent skip
        pytest.fail(f"LMG_REQUIRE_POSTGRES=1 and {stores[skipped[0]]['skipped']}", pytrace=False)
    for name in ("postgres_1", "postgres_2"):
        if name not in skipped:
            assert stores[name]["acks_per_s"] > 0 and stores[name]["errors"] == 0 and stores[name]["to_sqlite"]
    headline = load.headline({"stores": stores})
    assert headline["sqlite_1_acks_per_s"] == stores["sqlite_1"]["acks_per_s"]
    assert {"postgres_1_acks_per_s", "postgres_2_acks_per_cpu_s"} <= set(headline)
    assert "PostgreSQL x2" in load.markdown({"date": "today", "quick": True, "machine": load.machine(),
                                              "headline": headline, "result": {"stores": stores}})
