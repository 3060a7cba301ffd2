"""A warning's life: the state table over every pair, closing, levels at exactly N days.

The table is lmg.protocol.warning_codes' and the store moves warnings by it too; its own
shape (every pair but the refused ones) is tested in tests/storage/test_store_supervision.py.
Here: the core's status moves by the same table, and the store's escalation times agree
with the core's.
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
    Happening,
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
FOUND, CLEARED, CLOSE = Happening.FOUND, Happening.NOT_FOUND, Happening.CLOSE
EVENTS = (FOUND, Happening.FOUND_CHANGED, CLEARED, CLOSE)  # DUE moves levels: escalate, not apply

EXPECTED = {
    (O, FOUND): O, (O, CLEARED): R, (O, CLOSE): C,
    (R, FOUND): O, (R, CLEARED): R, (R, CLOSE): C,
    (C, FOUND): C, (C, CLEARED): C,  # (C, CLOSE) is not a move: closing is final
}


def test_the_table():
    # the shared table, read as the core reads it: found with or without changed figures alike
    core = {(before, what): after for (before, what), (after, _) in TRANSITIONS.items()
            if before is not None and what in (FOUND, CLEARED, CLOSE)}
    assert core == EXPECTED
    for state in WarningState:
        assert TRANSITIONS.get((state, Happening.FOUND_CHANGED), (None,))[0] == EXPECTED.get((state, FOUND))


def test_levels_move_by_time_not_by_apply():
    with pytest.raises(WarningTransitionError, match="use escalate"):
        apply(opened(T0), Happening.DUE, T0)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(WarningState, EVENTS)))
def test_every_pair_moves_by_the_table_or_is_refused(state, event):
    status = WarningStatus(state, WarningLevel.CITY, T0)
    expected = EXPECTED.get((state, FOUND if event is Happening.FOUND_CHANGED else event))
    if expected is not None:
        after = apply(status, event, T0 + DAY_MS)
        assert after.state is expected
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


@given(st.lists(st.sampled_from([FOUND, CLEARED, CLOSE]), max_size=30), st.lists(st.integers(0, 10 * DAY_MS), max_size=30))
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


# --- the store escalates at the core's times ----------------------------------------------------------------------------



@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(WarningLevel)), st.integers(0, 40 * DAY_MS), st.integers(1, 30), st.integers(1, 30))
def test_escalation_times_are_the_stores(level, elapsed, city_days, province_days):
    from lmg.storage.api import WarningRecord

    from lmg.storage import supervision as storage

    rules = dataclasses.replace(RULES, city_after_days=city_days, province_after_days=province_days)
    record = WarningRecord(1, "k", "low-presence", "P1", "620102", None, None, date(2025, 3, 1), date(2025, 3, 31),
                           {}, int(level), storage.WarningState.OPEN, T0, T0, T0, None, None, None, "", "", 1, 0)
    changes = storage.plan_escalation([record], T0 + elapsed, rules.city_after_ms, rules.province_after_ms)
    stored = changes[-1].after if changes else record
    due = due_level(level, T0, T0 + elapsed, rules)
    assert (stored.level, stored.level_since_ms) == (due.level, due.since_ms)
