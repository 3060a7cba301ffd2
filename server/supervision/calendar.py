"""Which days count: China days, valid days, construction days, and leave within its caps.

Rules this module keeps (docs/supervision.md explains them):

- **Days are China dates** (UTC+8, no daylight saving since 1991): a punch at 23:59 and one
  at 00:01 China time are on two days. One definition, `lmg.protocol.roster_file.china_date`,
  which the roster's dates also use; the store's per-day aggregate must agree with it (in
  SQL: the day number `(time_ms + 28_800_000) div 86_400_000` since 1970-01-01).
- **A valid day** of a person on a project: at least `min_punches` punches on the
  project's terminals and at least `min_span_ms` between the first and the last.
- **A construction day of a project**: a day from its start date to its end date (both
  included) that is neither in an approved stop-work period of the project nor a
  province-wide pause day. Weekends are construction days: sites work through them; a day
  off for everyone is a pause day.
- **A construction day of a person** under a commitment: a construction day of the project
  on which the commitment holds, unless it is excused leave.
- **Leave within its caps**: the approved leave days of a person on a project that are
  construction days of the project are excused in date order while the month has excused
  fewer than `leave_days_per_month` and the year fewer than `leave_days_per_year` (calendar
  month and year); a leave day beyond a cap is a construction day like any other, absent
  unless it is a valid day. Which days are excused does not depend on attendance, so a
  late backlog never moves a cap: a valid day on an excused leave day is not counted (the
  day is not a construction day for the person), one on a day over the cap is present.
- **Months** are calendar months. Attendance is needed from `attendance_from(month)`, the
  first day of the month before: a run of absence that began there counts its days.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from lmg.protocol.roster_file import china_date
from lmg.server.supervision.facts import DayAttendance, Facts, Leave, ProjectFacts, PunchedDays, StopWork
from lmg.server.supervision.rules import Rules

ONE_DAY = timedelta(days=1)


def china_day(time_ms: int) -> date:
    """The China date of a Unix time in ms."""
    return china_date(time_ms)


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """A calendar month, the period of the monthly rules."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12 or not 2 <= self.year <= 9998:
            raise ValueError(f"month {self.year}-{self.month}: use a year from 2 to 9998 and a month from 1 to 12")

    @classmethod
    def of(cls, day: date) -> Month:
        return cls(day.year, day.month)

    @classmethod
    def parse(cls, text: str) -> Month:
        """A month from "YYYY-MM"; ValueError saying the form otherwise."""
        try:
            year, month = text.strip().split("-")
            if len(year) != 4 or len(month) != 2:
                raise ValueError
            return cls(int(year), int(month))
        except ValueError:
            raise ValueError(f"month {text!r}: write it as YYYY-MM, for example 2025-03") from None

    @property
    def first(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last(self) -> date:
        return self.next().first - ONE_DAY

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def attendance_from(month: Month) -> date:
    """The first day whose attendance an evaluation of `month` needs: the first day of the
    month before. A run of absence that crosses into `month` is counted from there, which
    holds every run of up to 28 construction days (`absence.consecutive_days` is at most 28)."""
    return month.previous().first


def days(first: date, last: date) -> list[date]:
    """Every day from `first` to `last`, both included (empty if last < first)."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --- attendance ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Punched:
    """One punch as the supervision needs it: who, on which project, when (Unix ms)."""

    project: str
    id_number: str
    time_ms: int


def aggregate_days(punches: Iterable[Punched]) -> list[DayAttendance]:
    """The per-day aggregates of `punches` (what the store's query computes), sorted by
    project, person and day; the order of `punches` does not matter."""
    acc: dict[tuple[str, str, date], list[int]] = {}
    for punch in punches:
        key = (punch.project, punch.id_number, china_day(punch.time_ms))
        found = acc.get(key)
        if found is None:
            acc[key] = [1, punch.time_ms, punch.time_ms]
        else:
            found[0] += 1
            found[1] = min(found[1], punch.time_ms)
            found[2] = max(found[2], punch.time_ms)
    return [DayAttendance(p, who, day, n, first, last) for (p, who, day), (n, first, last) in sorted(acc.items())]


def merge_days(rows: Iterable[DayAttendance]) -> dict[tuple[str, str], dict[date, DayAttendance]]:
    """Aggregates by (project, ID number) and day; rows of the same day are merged (counts
    added, the earliest first and the latest last), so split aggregates in any order give
    the same result."""
    out: dict[tuple[str, str], dict[date, DayAttendance]] = {}
    for row in rows:  # millions of rows a province: one tuple unpacking, two dict lookups a row
        project, who, day, punches, first_ms, last_ms = row
        person = out.get((project, who))
        if person is None:
            out[(project, who)] = {day: row}
            continue
        seen = person.get(day)
        if seen is None:
            person[day] = row
        else:
            person[day] = DayAttendance(project, who, day, seen.punches + punches, min(seen.first_ms, first_ms),
                                        max(seen.last_ms, last_ms))
    return out


# Days a store mask holds: bit i is `first + i` days, in a signed 64-bit integer (SQLite's
# integers, PostgreSQL's bigint). An evaluation's window is at most two months, 62 days.
MASK_DAYS = 62


def punched_days_from_rows(rows: Iterable[DayAttendance], rules: Rules) -> dict[tuple[str, str], PunchedDays]:
    """Each (project, ID number)'s punched and valid days from day aggregates (split rows merged
    first, as `merge_days`)."""
    least, span_ms = rules.min_punches, rules.min_span_ms
    out: dict[tuple[str, str], PunchedDays] = {}
    for (project, who), by_day in merge_days(rows).items():
        punched = frozenset(day for day, row in by_day.items() if row.punches > 0)
        valid = frozenset(day for day, row in by_day.items()
                          if row.punches >= least and row.last_ms - row.first_ms >= span_ms)
        out[(project, who)] = PunchedDays(project, who, punched, valid)
    return out


def attendance_sets(facts: Facts, rules: Rules, projects: Collection[str], through: date
                    ) -> dict[tuple[str, str], PunchedDays]:
    """Each (project, ID number)'s punched and valid days on `projects` from
    `facts.attendance_from` to `through`: the day rows (`facts.attendance`, merged and judged
    by `rules`) and the store's sets (`facts.punched_days`) joined. What the evaluation and
    the report count, computed one way."""
    first = facts.attendance_from
    out = punched_days_from_rows((a for a in facts.attendance if first <= a.day <= through and a.project in projects),
                                 rules)
    for given in facts.punched_days:
        if given.project not in projects:
            continue
        punched, valid = given.punched, given.valid
        if punched and (min(punched) < first or max(punched) > through):  # the store's are inside
            punched = frozenset(day for day in punched if first <= day <= through)
            valid = frozenset(day for day in valid if first <= day <= through)
        person = (given.project, given.id_number)
        seen = out.get(person)
        out[person] = (PunchedDays(given.project, given.id_number, punched, valid) if seen is None
                       else PunchedDays(given.project, given.id_number, seen.punched | punched, seen.valid | valid))
    return out


class MaskDays:
    """Bit masks of days from `first` (bit i: `first` + i days) to sets of dates: a table of
    the days each byte value stands for, per byte position, so a mask costs 8 lookups rather
    than a test per bit (120,000 people a province, two masks each)."""

    def __init__(self, first: date):
        self.first = first
        self._tables = [[tuple(first + timedelta(days=8 * position + bit) for bit in range(8) if value >> bit & 1)
                         for value in range(256)] for position in range(8)]

    def days(self, mask: int) -> frozenset[date]:
        """The days of `mask` (a non-negative integer of at most MASK_DAYS bits)."""
        if mask < 0 or mask >> MASK_DAYS:
            raise ValueError(f"a day mask holds {MASK_DAYS} days from {self.first}: {mask:#x} does not fit")
        out: list[date] = []
        position = 0
        while mask:
            value = mask & 0xFF
            if value:
                out += self._tables[position][value]
            mask >>= 8
            position += 1
        return frozenset(out)


def mask_of(first: date, days: Iterable[date]) -> int:
    """The bit mask of `days` counted from `first` (the inverse of `MaskDays.days`)."""
    mask = 0
    for day in days:
        offset = (day - first).days
        if not 0 <= offset < MASK_DAYS:
            raise ValueError(f"{day} is outside the {MASK_DAYS} days a mask from {first} holds")
        mask |= 1 << offset
    return mask


def is_valid_day(row: DayAttendance, rules: Rules) -> bool:
    """At least `min_punches` punches, the first and the last at least `min_span_ms` apart."""
    return row.punches >= rules.min_punches and row.last_ms - row.first_ms >= rules.min_span_ms


# --- construction days -------------------------------------------------------------------------------


class ProjectCalendar:
    """The construction days of one project: its dates, minus its stop-work periods, minus
    the province's pause days."""

    __slots__ = ("project", "_stops", "_pauses")

    def __init__(self, project: ProjectFacts, stop_works: Sequence[StopWork], pause_days: Iterable[date]):
        self.project = project
        self._stops = tuple((s.first_day, s.last_day) for s in stop_works if s.project == project.code)
        self._pauses = frozenset(pause_days)

    def is_construction_day(self, day: date) -> bool:
        p = self.project
        if p.start_date is None or day < p.start_date or (p.end_date is not None and day > p.end_date):
            return False
        if day in self._pauses:
            return False
        return not any(first <= day <= last for first, last in self._stops)

    def construction_days(self, first: date, last: date) -> list[date]:
        """The construction days from `first` to `last`, both included, in order."""
        return [day for day in days(first, last) if self.is_construction_day(day)]


@dataclass(frozen=True, slots=True)
class LeaveDays:
    """A person's approved leave on a project as it counts: `excused` days are not
    construction days for them; `over_cap` days are leave beyond a cap, counted as
    construction days."""

    excused: frozenset[date]
    over_cap: frozenset[date]


NO_LEAVE = LeaveDays(frozenset(), frozenset())


def leave_days(calendar: ProjectCalendar, leaves: Iterable[Leave], rules: Rules, through: date) -> LeaveDays:
    """Which of a person's leave days on the project (`leaves`, all theirs, from 1 January of
    the first year evaluated) up to `through` are excused and which are over a cap. Only
    construction days of the project use up a cap: leave over a holiday costs nothing.
    Overlapping leave periods count each day once."""
    wanted = sorted({day for leave in leaves for day in days(leave.first_day, min(leave.last_day, through))})
    excused, over = set(), set()
    per_month: dict[tuple[int, int], int] = {}
    per_year: dict[int, int] = {}
    for day in wanted:
        if not calendar.is_construction_day(day):
            continue
        month_used, year_used = per_month.get((day.year, day.month), 0), per_year.get(day.year, 0)
        if month_used < rules.leave_days_per_month and year_used < rules.leave_days_per_year:
            excused.add(day)
            per_month[(day.year, day.month)] = month_used + 1
            per_year[day.year] = year_used + 1
        else:
            over.add(day)
    return LeaveDays(frozenset(excused), frozenset(over))


def person_days(project_days: Sequence[date], obligations: Sequence[tuple[date, date | None]],
                leave: LeaveDays) -> list[date]:
    """A person's construction days under a commitment: those of `project_days` (sorted)
    inside one of `obligations` ([from, to) with to None: open) and not excused leave, in order."""
    slices = [project_days[bisect_left(project_days, a):len(project_days) if b is None
                           else bisect_left(project_days, b)] for a, b in obligations]
    # one interval is the rule (a change starts a new person, not a new interval)
    chosen = list(slices[0]) if len(slices) == 1 else sorted({day for part in slices for day in part})
    if leave.excused:
        chosen = [day for day in chosen if day not in leave.excused]
    return chosen


def valid_days(by_day: Mapping[date, DayAttendance], rules: Rules) -> frozenset[date]:
    """The valid days among a person's aggregates on one project (`is_valid_day`)."""
    least, span_ms = rules.min_punches, rules.min_span_ms
    return frozenset(day for day, row in by_day.items()
                     if row.punches >= least and row.last_ms - row.first_ms >= span_ms)
