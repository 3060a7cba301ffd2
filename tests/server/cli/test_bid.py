"""`lmg bid import|list|change` against a store: CSV and JSON awards, bad rows with their line
and reason, whole awards held back, idempotence, masking, changes, exits."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from lmg.protocol.identity import check_digit, mask_id_number
from lmg.server.cli import main
from lmg.storage import open_store


def person(n: int) -> str:
    first17 = f"6201021980010{n:04d}"
    return first17 + check_digit(first17)


PM, TL, SUP, NEW = person(1), person(2), person(3), person(4)
PROJECT = "620102-2026-001"


def lmg(capsys, data, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--data-dir", str(data)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def site(tmp_path, capsys):
    data = tmp_path / "data"

    async def provision() -> None:
        store = await open_store(None, data_dir=data)
        await store.close()

    asyncio.run(provision())
    code, _, err = lmg(capsys, data, "project", "add", PROJECT, "--name", "兰州某住宅楼", "--region", "620102")
    assert code == 0, err
    return data


CSV = (
    "notice_no,project,enterprise,uscc,award_date,post,id_number,name,certificate_no\n"
    f"ZB-1,{PROJECT},甘肃某建工集团,91620100MA7XXXXX0A,2026-03-01,项目经理,{PM},张三,甘162000001\n"
    f"ZB-1,{PROJECT},甘肃某建工集团,91620100MA7XXXXX0A,2026-03-01,technical-lead,{TL},李四,\n"
    f"ZB-2,{PROJECT},甘肃某监理公司,91620100MA7XXXXX0A,2026-03-02,总监理工程师,{SUP},王五,\n"
    f"ZB-2,{PROJECT},甘肃某监理公司,91620100MA7XXXXX0A,2026-03-02,工人,{NEW},赵六,\n"
    f"ZB-3,NO-SUCH-PROJECT,甘肃某建工集团,91620100MA7XXXXX0A,2026-03-01,项目经理,{PM},张三,\n"
    f"ZB-4,{PROJECT},甘肃某建工集团,91620100MA7XXXXX0A,2026-03-01,安全员,620102198001010000,钱七,\n"
)


def test_a_csv_import_keeps_good_awards_holds_back_bad_ones_and_is_idempotent(site, tmp_path, capsys):
    path = tmp_path / "awards.csv"
    path.write_text(CSV, encoding="utf-8")
    code, out, err = lmg(capsys, site, "bid", "import", str(path))
    assert code == 1 and out.startswith("1 added"), (out, err)
    assert "awards.csv:line 5: post '工人' is not a key post" in err
    assert "awards.csv:line 4: award ZB-2 not imported: its line 5 is wrong" in err  # an award is whole or nothing
    assert "awards.csv:line 6: award ZB-3: no project NO-SUCH-PROJECT" in err
    assert "awards.csv:line 7: id_number" in err
    code, out, _ = lmg(capsys, site, "bid", "import", str(path), "--json")
    body = orjson.loads(out)
    assert code == 1 and (body["added"], body["unchanged"]) == (0, 1)
    assert [r["line"] for r in body["refused"]] == [4, 5, 6, 7]
    code, out, _ = lmg(capsys, site, "bid", "list", PROJECT, "--json")
    [award] = orjson.loads(out)["awards"]
    assert award["notice_no"] == "ZB-1" and [p["id_number"] for p in award["personnel"]] == [
        mask_id_number(PM), mask_id_number(TL)]


def test_a_json_import_names_the_line_an_award_starts_on(site, tmp_path, capsys):
    good = {"notice_no": "ZB-J1", "project": PROJECT, "enterprise": "甘肃某建工集团", "uscc": "91620100MA7XXXXX0A",
            "award_date": "2026-03-01", "personnel": [{"post": "project-manager", "id_number": PM, "name": "张三"}]}
    bad = {**good, "notice_no": "ZB-J2", "award_date": "2026-02-30"}
    path = tmp_path / "awards.json"
    path.write_text("[\n" + orjson.dumps(good).decode() + ",\n" + orjson.dumps(bad).decode() + "\n]\n", encoding="utf-8")
    code, out, err = lmg(capsys, site, "bid", "import", str(path))
    assert code == 1 and out.startswith("1 added") and "awards.json:line 3: award_date '2026-02-30'" in err
    path.write_text(orjson.dumps(good).decode(), encoding="utf-8")
    code, out, err = lmg(capsys, site, "bid", "import", str(path))
    assert code == 0 and out.startswith("0 added, 0 updated, 1 unchanged"), err
    path.write_text("[{", encoding="utf-8")
    code, _, err = lmg(capsys, site, "bid", "import", str(path))
    assert code == 2 and "not JSON" in err


def test_a_change_is_recorded_once_listed_masked_and_pii_is_audited(site, tmp_path, capsys):
    path = tmp_path / "awards.csv"
    path.write_text(CSV.splitlines(keepends=True)[0] + CSV.splitlines(keepends=True)[1], encoding="utf-8")
    assert lmg(capsys, site, "bid", "import", str(path))[0] == 0
    argv = ["bid", "change", "--project", PROJECT, "--post", "项目经理", "--old", PM, "--new", NEW, "--name", "赵六",
            "--approved-on", "2026-04-10", "--reference", "城建变〔2026〕3号"]
    code, out, err = lmg(capsys, site, *argv)
    assert code == 0 and "added" in out and "赵六" in out, err
    assert "unchanged" in lmg(capsys, site, *argv)[1]
    code, out, _ = lmg(capsys, site, "bid", "list", PROJECT)
    assert mask_id_number(NEW) in out and NEW not in out and PM not in out
    code, out, _ = lmg(capsys, site, "bid", "list", PROJECT, "--pii", "--json")
    assert orjson.loads(out)["changes"][0]["new_id_number"] == NEW
    code, _, err = lmg(capsys, site, *[("NOPE" if word == PROJECT else word) for word in argv])
    assert code == 2 and "no project NOPE" in err

    async def audited() -> list[str]:
        store = await open_store(None, data_dir=site, create=False)
        try:
            return [e.event for e in await store.list_audit(limit=10)]
        finally:
            await store.close()

    assert {"bid_awards_shown", "personnel_change_recorded", "bid_awards_imported"} <= set(asyncio.run(audited()))


def test_a_missing_file_is_a_usage_error(site, capsys):
    code, _, err = lmg(capsys, site, "bid", "import", "/nonexistent/awards.csv")
    assert code == 2 and "cannot read" in err
