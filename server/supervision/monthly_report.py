"""The monthly report of a region, read from the store: the table `lmg supervision report`
prints and the console exports (CSV, XLSX). One builder, so the two cannot disagree.

A row per project of the region (`regions.covers`: a city holds its counties), key post and
committed person, with the figures of report.py's `presence_rows` (valid days,
construction days, the rate, the post's required share) and the month's warnings by rule
that are not resolved (open or closed). The ID number is masked unless `pii`; the caller
audits a report with full numbers. Days and months are China dates.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from lmg.protocol.identity import mask_id_number
from lmg.server.supervision.calendar import Month
from lmg.server.supervision.report import presence_rows
from lmg.server.supervision.rules import RULES, Rules

REPORT_COLUMNS = ("project_code", "region_code", "post", "post_name", "name", "id_number", "from_date", "to_date",
                  "valid_days", "construction_days", "rate", "required_share")
_PAGE = 10_000  # projects and warnings read per store call


def report_columns() -> list[str]:
    """The header: the fixed columns, then one count column per rule code."""
    return [*REPORT_COLUMNS, *(str(code) for code in RULES)]


async def monthly_report(store: Any, rules: Rules, month: Month, region: str, as_of: date | None,
                         pii: bool) -> list[dict[str, Any]]:
    """The rows of `region`'s report for `month` counted up to `as_of` (None: the whole
    month), keyed by `report_columns()`. UnknownRegion (a ValueError) for a region outside
    the tree."""
    from lmg.server.supervision.service import load_facts

    projects: list[Any] = []
    after = ""
    while True:
        page = await store.list_projects(after_code=after, limit=_PAGE, region_scope=region)
        projects += page
        if len(page) < _PAGE:
            break
        after = page[-1].code
    facts = await load_facts(store, rules, month, as_of=as_of, projects=projects)
    rows = presence_rows(facts, rules, month, as_of)
    counts: dict[tuple[str, str, str], dict[str, int]] = {}
    after_id = 0
    while True:
        warnings = await store.list_warnings(region_scope=region, period_from=month.first, period_to=month.last,
                                             after_id=after_id, limit=_PAGE)
        for w in warnings:
            if w.state.value != "resolved" and month.first <= w.period_start <= month.last:
                by = counts.setdefault((w.project_code, w.post or "", w.worker_id or ""), {})
                by[w.rule] = by.get(w.rule, 0) + 1
        if len(warnings) < _PAGE:
            break
        after_id = warnings[-1].id
    regions = {p.code: p.region_code for p in projects}
    rule_codes = [str(code) for code in RULES]
    table = []
    for r in rows:
        rate = r.rate
        found = counts.get((r.project_code, r.post.code, r.id_number), {})
        table.append({
            "project_code": r.project_code, "region_code": regions.get(r.project_code, ""), "post": r.post.code,
            "post_name": r.post.info.name_zh, "name": r.name,
            "id_number": r.id_number if pii else mask_id_number(r.id_number),
            "from_date": r.from_date.isoformat(), "to_date": "" if r.to_date is None else r.to_date.isoformat(),
            "valid_days": r.valid_days, "construction_days": r.construction_days,
            "rate": "" if rate is None else round(float(rate), 4), "required_share": float(r.required_share),
            **{code: found.get(code, 0) for code in rule_codes},
        })
    return table
