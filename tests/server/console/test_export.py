"""The monthly report export: CSV (UTF-8 with a BOM) and XLSX, the same rows as
`lmg supervision report` for the signed-in region, audited."""

from __future__ import annotations

import csv
import io

import openpyxl

from lmg.server.supervision.monthly_report import report_columns
from tests.server.console.conftest import A, B, P_A, P_B, W_A, W_B


async def _csv(world, query: str = "") -> list[dict]:
    response = await world.get(f"/console/reports/monthly.csv?month={world.today:%Y-%m}{query}")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    body = await response.read()
    assert body.startswith("\ufeff".encode())
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


async def test_csv_rows_of_the_region_masked_without_pii(world):
    await world.login("city")
    rows = await _csv(world)
    assert [(r["project_code"], r["region_code"], r["post"]) for r in rows] == [(P_A, A, "project-manager"),
                                                                                (P_B, B, "project-manager")]
    assert list(rows[0]) == report_columns()
    assert rows[0]["id_number"] == W_A[:6] + "********" + W_A[-4:]
    assert (rows[0]["low-presence"], rows[0]["consecutive-absence"], rows[1]["low-presence"]) == ("1", "1", "1")
    audit = (await world.audit("console_export"))[0]
    assert (audit.subject, audit.detail["format"], audit.detail["rows"], audit.detail["pii"]) == (
        "account:city", "csv", 2, False)


async def test_a_county_narrows_its_export_and_pii_shows_full_numbers(world):
    await world.login("county-a")
    rows = await _csv(world)
    assert [r["project_code"] for r in rows] == [P_A] and rows[0]["id_number"] == W_A
    await world.logout()
    await world.login("city")
    assert [r["project_code"] for r in await _csv(world, f"&region={B}")] == [P_B]


async def test_xlsx_reads_back_with_the_same_rows(world):
    await world.login("city")
    expected = await _csv(world)
    response = await world.get(f"/console/reports/monthly.xlsx?month={world.today:%Y-%m}")
    assert response.status == 200 and "spreadsheetml" in response.headers["Content-Type"]
    book = openpyxl.load_workbook(io.BytesIO(await response.read()), read_only=True)
    sheet = book.worksheets[0]
    values = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert values[0] == report_columns()
    got = [{k: "" if v is None else str(v) for k, v in zip(values[0], row)} for row in values[1:]]
    assert [(r["project_code"], r["id_number"], r["valid_days"], r["low-presence"]) for r in got] == [
        (r["project_code"], r["id_number"], r["valid_days"], r["low-presence"]) for r in expected]
    assert W_B not in str(values)  # masked
    assert [e.detail["format"] for e in await world.audit("console_export")] == ["xlsx", "csv"]


async def test_a_bad_month_is_a_400_page(world):
    await world.login("city")
    response = await world.get("/console/reports/monthly.csv?month=2026-1")
    assert response.status == 400 and "YYYY-MM" in await response.text()
