"""The one table of a warning's life (lmg.protocol.warning_codes), which the store writes by
and the supervision core reads: every pair but the refused ones, an event for every change,
the codes and Chinese names of dispositions and departments, and the docs' tables."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from lmg.protocol.warning_codes import (
    CLOSING_DEPARTMENT,
    TRANSITIONS,
    Department,
    Disposition,
    Happening,
    WarningEventKind,
    WarningState,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
O, R, C = WarningState.OPEN, WarningState.RESOLVED, WarningState.CLOSED


def test_the_table_covers_every_pair_but_the_refused_ones():
    states = (None, O, R, C)
    missing = {(s, h) for s, h in itertools.product(states, Happening)} - TRANSITIONS.keys()
    assert missing == {(None, Happening.DUE), (None, Happening.CLOSE), (R, Happening.DUE), (C, Happening.DUE),
                       (C, Happening.CLOSE)}


def test_every_change_appends_an_event_and_a_state_only_changes_with_one():
    for (before, _), (after, event) in TRANSITIONS.items():
        assert event is not None or after == before
    assert TRANSITIONS[(R, Happening.FOUND)] == (O, WarningEventKind.REOPENED)
    assert {after for after, _ in TRANSITIONS.values() if after is not None} == set(WarningState)
    assert all(after is C for (before, _), (after, _) in TRANSITIONS.items() if before is C)  # final


@pytest.mark.parametrize(("text", "department"), [
    ("construction", Department.CONSTRUCTION), ("住建", Department.CONSTRUCTION),
    ("住房和城乡建设", Department.CONSTRUCTION), (" labour ", Department.LABOUR), ("人社", Department.LABOUR),
])
def test_departments_by_code_or_chinese_name(text, department):
    assert Department.parse(text) is department


def test_an_unknown_department_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"use construction \(住建\), labour \(人社\)"):
        Department.parse("police")
    assert CLOSING_DEPARTMENT is Department.CONSTRUCTION and CLOSING_DEPARTMENT == "construction"


def test_dispositions_by_code_or_chinese_name():
    assert [Disposition.parse(d.name_zh) for d in Disposition] == list(Disposition)
    assert [d.code for d in Disposition] == ["interview", "rectification", "penalty-points", "public-notice",
                                            "false-alarm"]


def test_the_docs_list_every_disposition_and_the_state_table():
    supervision = (DOCS / "supervision.md").read_text(encoding="utf-8")
    for disposition in Disposition:
        assert f"| `{disposition.code}` | {disposition.name_zh} |" in supervision, disposition
    assert "lmg.protocol.warning_codes.TRANSITIONS" in supervision
    assert "lmg.protocol.warning_codes.TRANSITIONS" in (DOCS / "storage.md").read_text(encoding="utf-8")
