"""Smoke test of `lmg bench console`: a tiny generated province served by `lmg serve`, every
console page and its API call measured a few times, the report's shape checked. No timing is
asserted (the figures are the benchmark's, as ratios against the same run's API calls)."""

from __future__ import annotations

import asyncio
import json

import pytest

from lmg.bench import console, load, supervision

pytestmark = pytest.mark.timeout(240)

PAGES = {"overview (province)", "overview (city)", "overview (county)", "warnings, page 1", "warnings, filtered",
         "warning detail", "project", "devices", "forwarding", "monthly CSV (county)"}


def test_the_principals_are_the_busiest_county_its_city_the_province_and_an_operator():
    generated = supervision.province(200)
    who = console.principals(generated)
    county = who["county"]["region"]
    assert who["city"]["region"] == county[:4] + "00" and who["province"]["region"] == "620000"
    assert who["operator"]["role"] == "operator" and {p["role"] for n, p in who.items() if n != "operator"} == {
        "supervisor"}
    counts = [sum(1 for _, r in generated["projects"] if r == code) for code in {r for _, r in generated["projects"]}]
    assert sum(1 for _, r in generated["projects"] if r == county) == max(counts)


def test_a_tiny_province_reports_every_page_beside_its_api_call(tmp_path):
    result = asyncio.run(console.bench(12, f"sqlite:///{tmp_path}/lmg.db", requests=2, log=lambda msg: None))
    assert result["projects"] == 12 and result["workers"] > 12 and result["punches"] > 0 and result["warnings"] > 0
    assert {row["page"] for row in result["pages"]} == PAGES
    for row in result["pages"]:
        assert set(row) >= {"page", "as", "page_path", "api_path", "page_ms", "page_p90_ms", "api_ms", "api_p90_ms",
                            "ratio", "within_300ms", "samples", "page_bytes", "api_bytes"}, row
        assert row["page_path"].startswith("console/") and row["api_path"].startswith("api/v1/")
        assert row["page_ms"] > 0 and row["api_ms"] > 0 and row["page_bytes"] > 0 and row["api_bytes"] > 0
        assert row["within_300ms"] == (row["page_ms"] <= console.TARGET_MS) and row["samples"] == 2
    assert result["all_within_target"] == all(row["within_300ms"] for row in result["pages"])
    report = {"date": "today", "quick": True, "machine": load.machine(), "elapsed_s": 0, "result": result}
    json.dumps(report, ensure_ascii=False)
    table = console.markdown(report)
    assert all(f"| {page} |" in table for page in PAGES)
