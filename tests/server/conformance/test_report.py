"""report.json against its schema, report.html holding every item, escaped, with personal data masked."""

from __future__ import annotations

import json
import random

from lmg.protocol.identity import mask_id_number
from lmg.server.conformance.catalogue import CATALOGUE, KitTimings
from lmg.server.conformance.examiner import Examiner
from lmg.server.conformance.report import REPORT_SCHEMA, render_html, schema_errors, summary_lines, write_report
from lmg.simulators.firmware import FirmwareConfig, FirmwareCore, Flash
from lmg.simulators.terminal import worker_id_for
from tests.server.conformance.virtual import WALL0, VirtualRun

SECRET = bytes(range(32))
HOSTILE = "<script>alert(1)</script>"


def run(serial: str, misbehave: frozenset[str] = frozenset()) -> dict:
    examiner = Examiner(KitTimings(), secret=SECRET, serial=serial, wall_at_start_ms=WALL0,
                        entropy=random.Random(5).randbytes)
    core = FirmwareCore(FirmwareConfig(serial, SECRET, misbehave=misbehave), Flash(), rng=random.Random(6),
                        now_ms=WALL0)
    return VirtualRun(examiner, core, punch_every_ms=5_000, photo_share=0.5, photo_bytes=40_000, seed=7).run(
        3_600_000)


def test_the_report_files_follow_the_schema_and_list_every_item(tmp_path):
    report = run("GS-LZ-000123", frozenset({"resend_duplicates"}))
    json_path, html_path = write_report(report, tmp_path / "out")
    loaded = json.loads(json_path.read_text())
    assert schema_errors(loaded, REPORT_SCHEMA) == []
    assert [i["id"] for i in loaded["items"]] == [s.id for s in CATALOGUE]
    page = html_path.read_text()
    for spec in CATALOGUE:
        assert f'<h2 id="{spec.id}">' in page and f'href="#{spec.id}"' in page
    assert "http://" not in page and "https://" not in page and "<link" not in page  # no external assets
    summary = loaded["summary"]
    assert summary["fail"] == 1 and summary["verdict"] == "does not conform"
    assert any("punch.duplicate" in line for line in summary_lines(loaded))


def test_the_schema_check_finds_what_is_wrong():
    report = run("GS-LZ-000123")
    report["items"][0]["verdict"] = "passed"
    del report["summary"]["device"]
    report["items"][1]["wirelog"].append({"conn": -1})
    errors = schema_errors(report, REPORT_SCHEMA)
    assert any("'passed' not one of" in e for e in errors)
    assert any("missing 'device'" in e for e in errors)
    assert any("missing 'hex'" in e for e in errors) and any("below 0" in e for e in errors)


def test_text_from_the_device_is_escaped():
    page = render_html(run(HOSTILE))
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_resident_id_numbers_are_masked_in_the_wirelog():
    report = run("GS-LZ-000123")
    text = json.dumps(report)
    worker = worker_id_for(3)  # the simulated punches cycle through workers 0-19
    assert worker not in text
    assert worker.encode().hex(" ") not in text  # nor in the hex
    assert mask_id_number(worker) in text
