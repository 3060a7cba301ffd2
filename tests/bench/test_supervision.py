"""Smoke test of `lmg bench supervision`: a tiny generated province loaded, evaluated and
measured against the one-aggregate baseline on SQLite, every figure reported and the report
written. No timing is asserted."""

from __future__ import annotations

import asyncio
import json

import pytest

from lmg.bench import load, supervision

pytestmark = pytest.mark.timeout(120)


def test_the_generated_province_has_every_profile_and_valid_id_numbers():
    from lmg.protocol.identity import is_valid_id_number

    province = supervision.province(400)
    assert set(province["profiles"]) == {"regular", "short", "patchy", "absent", "elsewhere"}
    people = [who for staff in province["people"].values() for _, who, _ in staff]
    assert all(is_valid_id_number(who) for who in people)
    assert len(people) == 400 * 6 and len(set(people)) < len(people)  # the managers committed twice


def test_a_tiny_province_reports_every_figure(tmp_path):
    result = asyncio.run(supervision.bench(40, f"sqlite:///{tmp_path}/lmg.db", log=lambda msg: None))
    for key in ("projects", "evaluate_s", "baseline_s", "ratio", "warnings", "evaluate_inline_s", "apply_s",
                "punches", "baseline_rows"):
        assert key in result, key
    assert result["projects"] == 40 and result["punches"] > 0 and result["baseline_rows"] > 0
    assert result["evaluate_s"] > 0 and result["baseline_s"] > 0
    assert sum(result["warnings"].values()) == result["opened"] > 0
    report = {"date": "today", "quick": True, "machine": load.machine(), "elapsed_s": 0, "result": result}
    json.dumps(report, ensure_ascii=False)
    table = supervision.markdown(report)
    assert "**evaluate_s**" in table and "**baseline_s**" in table and "warnings by rule" in table


def test_a_store_url_of_another_kind_is_a_usage_error(capsys):
    from lmg.server.cli import main

    assert main(["bench", "supervision", "--store", "bogus://x", "--no-write"]) == 2
    assert "lmg: --store bogus://x: use a sqlite:/// or postgresql:// URL" in capsys.readouterr().err
    assert main(["bench", "console", "--projects", "1", "--no-write"]) == 2
    assert "--projects: at least 2" in capsys.readouterr().err
