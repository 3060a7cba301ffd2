"""A warning's life: the state table over every pair, closing, levels at exactly N days, and the store's copy.

The store keeps the same life cycle (lmg.storage.supervision), since storage cannot import
the server; the last tests check that the two agree, so a change to either fails here.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmg.server.supervision.escalation import (
    TRANSITIONS,
    Disposition,
    WarningEvent,
    WarningLevel,
    WarningState,
    WarningStatus,
    WarningTransitionError,
    apply,
    close,
    due_level,
    escalate,
    next_escalation_ms,
    opened,
)
from lmg.server.supervision.rules import default_rules

RULES = default_rules()
DAY_MS = 86_400_000
T0 = 1_741_000_000_000  # a Unix time in ms (March 2025)
O, R, C = WarningState.OPEN, WarningState.RESOLVED, WarningState.CLOSED
FOUND, CLEARED, CLOSE = WarningEvent.FOUND, WarningEvent.CLEARED, WarningEvent.CLOSE

EXPECTED = {
    (O, FOUND): O, (O, CLEARED): R, (O, CLOSE): C,
    (R, FOUND): O, (R, CLEARED): R, (R, CLOSE): C,
    (C, FOUND): C, (C, CLEARED): C,  # (C, CLOSE) is not a move: closing is final
}


def test_the_table():
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("state", "event"), list(itertools.product(WarningState, WarningEvent)))
def test_every_pair_moves_by_the_table_or_is_refused(state, event):
    status = WarningStatus(state, WarningLevel.CITY, T0)
    if (state, event) in EXPECTED:
        after = apply(status, event, T0 + DAY_MS)
        assert after.state is EXPECTED[(state, event)]
        assert after.level is WarningLevel.CITY  # events never change the level
    else:
        with pytest.raises(WarningTransitionError, match="closed warning cannot be closed: it is final"):
            apply(status, event, T0 + DAY_MS)


def test_a_new_warning_opens_at_the_county():
    assert opened(T0) == WarningStatus(O, WarningLevel.COUNTY, T0)


def test_reopening_keeps_the_level_and_restarts_its_time():
    resolved = WarningStatus(R, WarningLevel.CITY, T0)
    assert apply(resolved, FOUND, T0 + 3 * DAY_MS) == WarningStatus(O, WarningLevel.CITY, T0 + 3 * DAY_MS)
    # found again while open: nothing moves, its time runs on
    still = WarningStatus(O, WarningLevel.CITY, T0)
    assert apply(still, FOUND, T0 + 3 * DAY_MS) == still


def test_closing_a_resolved_warning_records_the_disposition():
    assert close(WarningStatus(R, WarningLevel.COUNTY, T0), Disposition.INTERVIEW, "", T0).state is C


@pytest.mark.parametrize("note", ["", "   "])
def test_a_false_alarm_needs_a_note(note):
    with pytest.raises(ValueError, match="a false alarm needs a note"):
        close(opened(T0), Disposition.FALSE_ALARM, note, T0)
    assert close(opened(T0), Disposition.FALSE_ALARM, "the terminal was installed in the site office", T0).state is C


def test_closing_a_closed_warning_is_refused():
    with pytest.raises(WarningTransitionError):
        close(WarningStatus(C, WarningLevel.COUNTY, T0), Disposition.PUBLIC_NOTICE, "", T0)


@pytest.mark.parametrize(("text", "disposition"), [
    ("interview", Disposition.INTERVIEW), ("约谈", Disposition.INTERVIEW), ("责令整改", Disposition.RECTIFICATION),
    ("记分", Disposition.PENALTY_POINTS), (" 通报 ", Disposition.PUBLIC_NOTICE), ("false-alarm", Disposition.FALSE_ALARM),
])
def test_dispositions_by_code_or_chinese_name(text, disposition):
    assert Disposition.parse(text) is disposition


def test_an_unknown_disposition_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"use one of interview \(约谈\), rectification \(责令整改\)"):
        Disposition.parse("warning")


@given(st.lists(st.sampled_from(list(WarningEvent)), max_size=30), st.lists(st.integers(0, 10 * DAY_MS), max_size=30))
def test_any_sequence_of_events_stays_in_the_table(events, gaps):
    status, now = opened(T0), T0
    for event, gap in zip(events, gaps + [0] * len(events)):
        now += gap
        if status.state is C and event is CLOSE:
            with pytest.raises(WarningTransitionError):
                apply(status, event, now)
            continue
        before = status
        status = apply(status, event, now)
        assert status.level is before.level
        assert status.state is EXPECTED[(before.state, event)]
        reopened = before.state is R and status.state is O
        assert status.level_since_ms == (now if reopened else before.level_since_ms)
        if before.state is C:
            assert status == before  # closed is final


# --- levels by time ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("elapsed_ms", "level", "since_ms"), [
    (0, WarningLevel.COUNTY, T0),
    (7 * DAY_MS - 1, WarningLevel.COUNTY, T0),  # 1 ms short of N days
    (7 * DAY_MS, WarningLevel.CITY, T0 + 7 * DAY_MS),  # exactly N days
    (14 * DAY_MS - 1, WarningLevel.CITY, T0 + 7 * DAY_MS),
    (14 * DAY_MS, WarningLevel.PROVINCE, T0 + 14 * DAY_MS),  # exactly N + M days
    (400 * DAY_MS, WarningLevel.PROVINCE, T0 + 14 * DAY_MS),  # a late tick: levels keep their due times
])
def test_escalation_at_exactly_n_days(elapsed_ms, level, since_ms):
    due = due_level(WarningLevel.COUNTY, T0, T0 + elapsed_ms, RULES)
    assert (due.level, due.since_ms) == (level, since_ms)
    assert escalate(opened(T0), T0 + elapsed_ms, RULES) == WarningStatus(O, level, since_ms)


def test_the_waits_are_the_rules():
    rules = dataclasses.replace(RULES, city_after_days=3, province_after_days=10)
    assert due_level(WarningLevel.COUNTY, T0, T0 + 3 * DAY_MS - 1, rules).level is WarningLevel.COUNTY
    assert due_level(WarningLevel.COUNTY, T0, T0 + 3 * DAY_MS, rules).level is WarningLevel.CITY
    assert due_level(WarningLevel.COUNTY, T0, T0 + 13 * DAY_MS - 1, rules).level is WarningLevel.CITY
    assert due_level(WarningLevel.CITY, T0, T0 + 10 * DAY_MS, rules).level is WarningLevel.PROVINCE


def test_the_next_deadline():
    assert next_escalation_ms(WarningLevel.COUNTY, T0, RULES) == T0 + 7 * DAY_MS
    assert next_escalation_ms(WarningLevel.CITY, T0, RULES) == T0 + 7 * DAY_MS
    assert next_escalation_ms(WarningLevel.PROVINCE, T0, RULES) is None


@pytest.mark.parametrize("state", [R, C])
def test_only_an_open_warning_rises(state):
    status = WarningStatus(state, WarningLevel.COUNTY, T0)
    assert escalate(status, T0 + 100 * DAY_MS, RULES) == status


# --- the store's copy agrees ----------------------------------------------------------------------------



def _stores_copy():
    return pytest.importorskip("lmg.storage.supervision", reason="the store's side of issue 15 is not there yet")


def test_the_states_and_dispositions_are_the_stores():
    _stores_copy()
    from lmg.storage.api import Disposition as StoredDisposition
    from lmg.storage.api import WarningState as StoredState

    assert {s.value for s in WarningState} == {s.value for s in StoredState}
    assert {d.code for d in Disposition} == {d.value for d in StoredDisposition}
    assert {d.code: d.value.name_zh for d in Disposition} == {d.value: d.name_zh for d in StoredDisposition}


def test_the_table_is_the_stores():
    storage = _stores_copy()
    happening = storage.Happening
    # the store tells a finding with changed figures apart, and escalation is a move of its table
    events = {happening.FOUND: FOUND, happening.FOUND_CHANGED: FOUND, happening.NOT_FOUND: CLEARED,
              happening.CLOSE: CLOSE}
    theirs = {}
    for (before, what), (after, _) in storage.TRANSITIONS.items():
        if before is None or what is happening.DUE:
            continue
        theirs[(WarningState(before.value), events[what])] = WarningState(after.value)
    assert theirs == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(WarningLevel)), st.integers(0, 40 * DAY_MS), st.integers(1, 30), st.integers(1, 30))
def test_escalation_times_are_the_stores(level, elapsed, city_days, province_days):
    from lmg.storage.api import WarningRecord

    storage = _stores_copy()
    rules = dataclasses.replace(RULES, city_after_days=city_days, province_after_days=province_days)
    record = WarningRecord(1, "k", "low-presence", "P1", "620102", None, None, date(2025, 3, 1), date(2025, 3, 31),
                           {}, int(level), storage.WarningState.OPEN, T0, T0, T0, None, None, None, "", "", 1, 0)
    changes = storage.plan_escalation([record], T0 + elapsed, rules.city_after_ms, rules.province_after_ms)
    stored = changes[-1].after if changes else record
    due = due_level(level, T0, T0 + elapsed, rules)
    assert (stored.level, stored.level_since_ms) == (due.level, due.since_ms)


def test_the_doc_lists_every_disposition():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "supervision.md").read_text(encoding="utf-8")
    for disposition in Disposition:
        assert f"| `{disposition.code}` | {disposition.value.name_zh} |" in doc, disposition
