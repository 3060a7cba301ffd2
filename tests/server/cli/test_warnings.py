"""`lmg warnings list|show|close` against a store: the region tree as filter, masking and its
audit, the history shown, closing with a disposition, a false alarm's reason, exits."""

from __future__ import annotations

import asyncio
from datetime import date

import orjson
import pytest

from lmg.protocol.identity import check_digit, mask_id_number
from lmg.server.cli import main
from lmg.storage import EvaluationScope, WarningFinding, open_store

DAY_MS = 86_400_000
T0 = 1_790_000_000_000
FIRST, LAST = date(2026, 10, 1), date(2026, 10, 31)


def person(region: str, n: int) -> str:
    first17 = f"{region}1980010{n:04d}"
    return first17 + check_digit(first17)


W_CG, W_QLH, W_XQ = person("620102", 1), person("620103", 2), person("620171", 3)


def lmg(capsys, data, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--data-dir", str(data)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def site(tmp_path):
    """Warnings in 城关区 (risen to 兰州市), 七里河区 and 兰州新区."""
    data = tmp_path / "data"

    async def provision() -> None:
        store = await open_store(None, data_dir=data)
        try:
            for code, region, worker in (("P-CG", "620102", W_CG), ("P-QLH", "620103", W_QLH),
                                         ("P-XQ", "620171", W_XQ)):
                await store.add_project(code, name=code, region_code=region)
                finding = WarningFinding("low-presence", code, worker, "project-manager", FIRST, LAST,
                                         {"valid_days": 10, "construction_days": 31, "rate": 0.3226})
                at = T0 if code == "P-CG" else T0 + 7 * DAY_MS
                await store.apply_warnings(EvaluationScope(frozenset({"low-presence"}), FIRST, LAST,
                                                           frozenset({code})), [finding], at)
            await store.escalate_warnings(T0 + 7 * DAY_MS, level2_after_ms=7 * DAY_MS, level3_after_ms=7 * DAY_MS)
        finally:
            await store.close()

    asyncio.run(provision())
    return data


def test_list_filters_by_the_region_tree_and_masks_unless_pii(site, capsys):
    code, out, _ = lmg(capsys, site, "warnings", "list", "--region", "620100", "--json")
    rows = orjson.loads(out)
    assert code == 0 and [r["project"] for r in rows] == ["P-CG", "P-QLH"]  # not 兰州新区 620171
    assert rows[0]["worker_id"] == mask_id_number(W_CG) and rows[0]["owner"] == {"region": "620100", "name": "兰州市"}
    code, out, _ = lmg(capsys, site, "warnings", "list", "--level", "1", "--json")
    assert [r["project"] for r in orjson.loads(out)] == ["P-QLH", "P-XQ"]
    code, out, _ = lmg(capsys, site, "warnings", "list", "--worker", W_QLH, "--json")
    assert [r["project"] for r in orjson.loads(out)] == ["P-QLH"]
    code, out, _ = lmg(capsys, site, "warnings", "list", "--from", "2026-11-01", "--json")
    assert orjson.loads(out) == []
    code, out, _ = lmg(capsys, site, "warnings", "list")
    assert code == 0 and "low-presence" in out and W_CG not in out and mask_id_number(W_CG) in out
    code, out, _ = lmg(capsys, site, "warnings", "list", "--region", "620171", "--pii")
    assert W_XQ in out and "P-CG" not in out
    code, _, err = lmg(capsys, site, "warnings", "list", "--region", "6201")
    assert code == 2 and "not a region of Gansu" in err


def test_show_gives_the_history_and_the_bureau_of_each_level(site, capsys):
    code, out, _ = lmg(capsys, site, "warnings", "show", "1", "--json")
    body = orjson.loads(out)
    assert code == 0 and body["level"] == 2 and [e["event"] for e in body["history"]] == ["opened", "escalated"]
    assert [b["name"] for b in body["bureaus"]] == ["城关区", "兰州市", "甘肃省"]
    code, out, _ = lmg(capsys, site, "warnings", "show", "1")
    assert "escalated" in out and W_CG not in out
    code, _, err = lmg(capsys, site, "warnings", "show", "99")
    assert code == 2 and "no warning 99" in err


def test_close_needs_a_disposition_a_false_alarm_a_reason_and_is_final(site, capsys):
    code, _, err = lmg(capsys, site, "warnings", "close", "2", "--disposition", "误报")
    assert code == 2 and "note" in err
    code, _, err = lmg(capsys, site, "warnings", "close", "2", "--disposition", "nonsense")
    assert code == 2 and "约谈" in err
    code, out, err = lmg(capsys, site, "warnings", "close", "2", "--disposition", "误报", "--note", "考勤机断网",
                         "--by", "qilihe-zhujian")
    assert code == 0 and "false-alarm" in out, err
    code, out, _ = lmg(capsys, site, "warnings", "show", "2", "--json")
    body = orjson.loads(out)
    assert body["state"] == "closed" and body["note"] == "考勤机断网" and body["closed_by"] == "qilihe-zhujian"
    assert [e["event"] for e in body["history"]] == ["opened", "closed"]
    code, _, err = lmg(capsys, site, "warnings", "close", "2", "--disposition", "约谈")
    assert code == 1 and "final" in err

    async def audit() -> list:
        store = await open_store(None, data_dir=site, create=False)
        try:
            return await store.list_audit(event="warning_closed", limit=5)
        finally:
            await store.close()

    [entry] = asyncio.run(audit())
    assert entry.subject == "2" and entry.detail["by"] == "qilihe-zhujian"
