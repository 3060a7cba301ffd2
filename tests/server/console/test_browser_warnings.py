"""Warnings in the browser: close one with a disposition and a note and see it in the history;
export the monthly report and check its rows (CSV parsed, XLSX read with openpyxl)."""

from __future__ import annotations

import csv
import io

import openpyxl

from lmg.protocol.warning_codes import Disposition
from tests.server.console.browser import (  # noqa: F401
    A, B, P_A, P_B, PEOPLE, browser, console, warning_ids,
)

NOTE = "已约谈项目经理，责令三日内整改到岗"


async def test_close_a_warning_and_see_it_in_the_history(console):
    tab = await console.signed_in("county-a")
    page = tab.page
    await page.locator(f"table#warnings-by-level-region a[href*='region={A}']").first.click()
    await page.wait_for_url("**/console/warnings?*")
    row = page.locator("table#warnings tr[data-warning-id]").first
    warning_id = int(await row.get_attribute("data-warning-id"))
    await row.locator("a").first.click()
    await page.wait_for_url(f"**/console/warnings/{warning_id}")
    await page.locator("dl#warning-figures").wait_for()
    history = page.locator("table#warning-history tbody tr")
    before = await history.count()
    assert before >= 1, "the history holds at least the opening"
    form = page.locator("form#close-warning")
    options = await form.locator("select[name=disposition] option").evaluate_all(
        "options => options.map(o => o.value).filter(v => v)")
    assert set(options) == {d.value for d in Disposition}
    await form.locator("select[name=disposition]").select_option(Disposition.RECTIFICATION.value)
    await form.locator("textarea[name=note]").fill(NOTE)
    await form.locator("button[type=submit]").click()
    await page.wait_for_url(f"**/console/warnings/{warning_id}")
    await page.wait_for_load_state("load")
    assert await history.count() == before + 1
    last = await history.last.inner_text()
    assert NOTE in last and "county-a" in last, last
    assert await page.locator("form#close-warning").count() == 0, "a closed warning offers no second closing"
    stored = await console.store.get_warning(warning_id)
    assert stored.state.value == "closed" and stored.disposition == Disposition.RECTIFICATION
    assert stored.note == NOTE and stored.closed_by.endswith("county-a")
    await console.screenshot(tab, "closed")


def _people(region: str) -> set[str]:
    return {PEOPLE[region][key][1] for key in ("manager", "lead", "safety")}


async def test_export_the_monthly_report_and_check_its_rows(console):
    tab = await console.signed_in("county-a")
    page = tab.page
    await console.goto(tab, f"/console/warnings?month={console.month_text}")  # its exports are that month's
    exported = {}
    for kind in ("csv", "xlsx"):
        async with page.expect_download() as download:
            await page.locator(f"a[data-export={kind}]").click()
        path = console.tmp_path / f"report.{kind}"
        await (await download.value).save_as(path)
        exported[kind] = path
    await console.screenshot(tab, "exported")
    text = exported["csv"].read_bytes().decode("utf-8-sig")
    csv_rows = list(csv.DictReader(io.StringIO(text)))
    sheet = openpyxl.load_workbook(exported["xlsx"], read_only=True).active
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    header = [str(v) for v in values[0]]
    xlsx_rows = [dict(zip(header, ("" if v is None else str(v) for v in r))) for r in values[1:] if any(r)]
    for rows in (csv_rows, xlsx_rows):
        assert rows, "the report has rows"
        assert {r["region_code"] for r in rows} == {A} and {r["project_code"] for r in rows} == {P_A}
        assert {r["name"] for r in rows} == _people(A)
        # no full ID number without pii is not the point here (county-a has pii); B's people never appear
        assert not _people(B) & {r["name"] for r in rows}
    assert sorted((r["post"], r["name"], r["valid_days"]) for r in csv_rows) == \
        sorted((r["post"], r["name"], r["valid_days"]) for r in xlsx_rows)
    lead = next(r for r in csv_rows if r["name"] == PEOPLE[A]["lead"][1])
    manager = next(r for r in csv_rows if r["name"] == PEOPLE[A]["manager"][1])
    assert int(lead["valid_days"]) == 0 and int(manager["valid_days"]) > 20  # absent all month; there every day
    # the city's report holds both of its counties
    city = await console.signed_in("city")
    await console.goto(city, f"/console/warnings?month={console.month_text}")
    async with city.page.expect_download() as download:
        await city.page.locator("a[data-export=csv]").click()
    path = console.tmp_path / "city.csv"
    await (await download.value).save_as(path)
    city_rows = list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8-sig"))))
    assert {r["project_code"] for r in city_rows} == {P_A, P_B}
    assert {r["region_code"] for r in city_rows} == {A, B}
    assert len(await warning_ids(console.store, P_B)) > 0
