"""Days: China dates, valid days at their boundaries, construction days, leave within its caps, months."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmg.server.supervision.calendar import (
    Month,
    ProjectCalendar,
    Punched,
    aggregate_days,
    attendance_from,
    china_day,
    is_valid_day,
    leave_days,
    merge_days,
    person_days,
)
from lmg.server.supervision.facts import Commitment, DayAttendance, Leave, StopWork
from lmg.server.supervision.rules import default_rules
from lmg.protocol.posts import Post
from tests.server.supervision.sites import P1, ZHANG, at, d, span

RULES = default_rules()
HOUR_MS = 3_600_000


def test_a_punch_at_2359_and_one_at_0001_china_time_are_on_two_days():
    late, early = at(d(10), 23, 59), at(d(11), 0, 1)
    assert (china_day(late), china_day(early)) == (d(10), d(11))
    # in UTC both fall on the 10th (15:59 and 16:01)
    assert early - late == 2 * 60_000
    rows = aggregate_days([Punched("P1", ZHANG, early), Punched("P1", ZHANG, late)])
    assert [(r.day, r.punches) for r in rows] == [(d(10), 1), (d(11), 1)]


def test_midnight_china_time_starts_the_day():
    assert china_day(at(d(11), 0, 0)) == d(11)
    assert china_day(at(d(11), 0, 0) - 1) == d(10)


def test_the_store_formula_gives_the_same_day():
    # calendar.py's docstring gives the store's SQL: (time_ms + 28_800_000) div 86_400_000
    for ms in (at(d(10), 23, 59), at(d(11), 0, 0), at(d(11), 0, 0) - 1, at(d(1, 1), 7, 59)):
        assert date.fromordinal(date(1970, 1, 1).toordinal() + (ms + 28_800_000) // 86_400_000) == china_day(ms)


def test_the_stores_day_is_the_same():
    stored = pytest.importorskip("lmg.storage.supervision", reason="the store's side of issue 15 is not there yet")
    for ms in (at(d(10), 23, 59), at(d(11), 0, 0), at(d(11), 0, 0) - 1, at(d(1, 1), 7, 59)):
        assert stored.day_of(stored.day_number(ms)) == china_day(ms)


def _day(punches: int, span_ms: int) -> DayAttendance:
    first = at(d(10), 8)
    return DayAttendance("P1", ZHANG, d(10), punches, first, first + span_ms)


@pytest.mark.parametrize(("punches", "span_ms", "valid"), [
    (2, 4 * HOUR_MS, True),  # exactly 4 h
    (2, 4 * HOUR_MS - 1, False),  # 1 ms short
    (1, 0, False),
    (1, 10 * HOUR_MS, False),  # a malformed aggregate: one punch cannot span anything
    (5, 9 * HOUR_MS, True),
])
def test_a_valid_day_at_its_boundaries(punches, span_ms, valid):
    assert is_valid_day(_day(punches, span_ms), RULES) is valid


def test_aggregates_do_not_depend_on_punch_order_and_merge_when_split():
    punches = [Punched("P1", ZHANG, at(d(10), h)) for h in (8, 12, 18)] + [Punched("P2", ZHANG, at(d(10), 9))]
    rows = aggregate_days(punches)
    assert rows == aggregate_days(reversed(punches))
    assert rows[0] == DayAttendance("P1", ZHANG, d(10), 3, at(d(10), 8), at(d(10), 18))
    split = aggregate_days(punches[1::2]) + aggregate_days(punches[::2])
    assert merge_days(split) == merge_days(rows)


@given(st.lists(st.integers(at(d(1), 0), at(d(31), 23, 59)), max_size=30), st.randoms(use_true_random=False))
def test_aggregates_are_the_same_for_any_arrival_order(times, rnd):
    punches = [Punched("P1", ZHANG, t) for t in times]
    shuffled = punches[:]
    rnd.shuffle(shuffled)
    assert aggregate_days(shuffled) == aggregate_days(punches)
    assert sum(r.punches for r in aggregate_days(punches)) == len(punches)


def test_construction_days_are_the_projects_dates_minus_stop_work_and_pause_days():
    project = dataclasses.replace(P1, start_date=d(3), end_date=d(20))
    calendar = ProjectCalendar(project, [StopWork("P1", d(10), d(12)), StopWork("P2", d(5), d(6))], [d(15)])
    expected = [day for day in span(d(3), d(20)) if day not in (d(10), d(11), d(12), d(15))]
    assert calendar.construction_days(d(1), d(31)) == expected  # P2's stop is not P1's
    assert calendar.is_construction_day(d(20)) and not calendar.is_construction_day(d(21))  # the end is included


def test_no_start_date_means_no_construction_days():
    calendar = ProjectCalendar(dataclasses.replace(P1, start_date=None), [], [])
    assert calendar.construction_days(d(1), d(31)) == []


def _leave(*periods: tuple[date, date], rules=RULES, pauses=(), through=d(31, 12)):
    calendar = ProjectCalendar(P1, [], pauses)
    return leave_days(calendar, [Leave("P1", ZHANG, a, b) for a, b in periods], rules, through)


def test_leave_within_the_month_cap_is_excused_and_beyond_it_is_not():
    got = _leave((d(3), d(12)))
    assert got.excused == frozenset(span(d(3), d(8)))
    assert got.over_cap == frozenset(span(d(9), d(12)))


def test_the_month_cap_starts_again_each_month():
    got = _leave((d(27, 2), d(6)))  # 2 in February, 6 in March
    assert got.excused == frozenset(span(d(27, 2), d(6))) and got.over_cap == frozenset()


def test_the_year_cap_counts_from_january_and_starts_again_in_january():
    periods = [(d(1, m), d(6, m)) for m in (1, 2, 3, 4)]  # 24 days, 6 a month
    got = _leave(*periods, (d(1, 1, 2026), d(2, 1, 2026)), through=d(31, 1, 2026))
    assert got.excused == frozenset(day for a, b in periods for day in span(a, b) if day < d(3, 4)) | {
        d(1, 1, 2026), d(2, 1, 2026)}
    assert got.over_cap == frozenset(span(d(3, 4), d(6, 4)))


def test_leave_over_pause_days_and_stop_work_costs_nothing():
    got = _leave((d(1), d(10)), pauses=span(d(1), d(4)))
    assert got.excused == frozenset(span(d(5), d(10)))  # 6 construction days
    assert got.over_cap == frozenset()


def test_overlapping_leave_counts_each_day_once_and_stops_at_through():
    got = _leave((d(1), d(4)), (d(3), d(6)), through=d(5))
    assert got.excused == frozenset(span(d(1), d(5)))


def test_caps_of_zero_excuse_nothing():
    rules = dataclasses.replace(RULES, leave_days_per_month=0)
    assert _leave((d(1), d(3)), rules=rules).over_cap == frozenset(span(d(1), d(3)))


def test_person_days_follow_the_commitment_and_skip_excused_leave():
    commitment = Commitment("P1", Post.PROJECT_MANAGER, ZHANG, "张三", d(5), d(10))
    leave = _leave((d(6), d(6)))
    got = person_days(span(d(1), d(31)), [(commitment.from_date, commitment.to_date)], leave)
    assert got == [d(5), d(7), d(8), d(9)]  # the 10th is the successor's first day


@pytest.mark.parametrize(("month", "previous", "following", "last"), [
    (Month(2025, 1), Month(2024, 12), Month(2025, 2), d(31, 1)),
    (Month(2024, 2), Month(2024, 1), Month(2024, 3), date(2024, 2, 29)),
    (Month(2025, 12), Month(2025, 11), Month(2026, 1), d(31, 12)),
])
def test_months(month, previous, following, last):
    assert (month.previous(), month.next(), month.last) == (previous, following, last)
    assert Month.parse(str(month)) == month and Month.of(last) == month


@pytest.mark.parametrize("text", ["2025-3", "2025-13", "March", "2025-03-01", ""])
def test_a_month_that_is_not_one_says_the_form(text):
    with pytest.raises(ValueError, match="YYYY-MM"):
        Month.parse(text)


def test_attendance_is_needed_from_the_month_before():
    assert attendance_from(Month(2025, 3)) == d(1, 2)
    assert attendance_from(Month(2025, 1)) == date(2024, 12, 1)


@pytest.mark.parametrize("make", [
    lambda: Commitment("P1", Post.PROJECT_MANAGER, ZHANG, "张三", d(5), d(5)),
    lambda: Commitment("P1", Post.WORKER, ZHANG, "张三", d(5)),
    lambda: Leave("P1", ZHANG, d(5), d(4)),
    lambda: StopWork("P1", d(5), d(4)),
])
def test_records_that_end_before_they_start_are_refused(make):
    with pytest.raises(ValueError):
        make()
