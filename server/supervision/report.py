"""The monthly presence of every committed person, for `lmg supervision report`: pure.

`presence_rows(facts, rules, month, as_of)` gives, per project, key post and committed
person, the figures the `low-presence` rule judges (valid days, construction days, the
rate, the post's required share), whether or not a warning was found: a report lists the
people who are present as well as those who are not. The days are the evaluation's
(calendar.py: construction days of the project under the commitment, minus excused
leave; valid days by the rules), so a row's figures are the finding's when there is one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from fractions import Fraction

from lmg.protocol.posts import Post
from lmg.server.supervision.calendar import (
    NO_LEAVE,
    Month,
    ProjectCalendar,
    attendance_sets,
    leave_days,
    person_days,
)
from lmg.server.supervision.facts import Commitment, Facts, Leave, StopWork
from lmg.server.supervision.rules import Rules


@dataclass(frozen=True, slots=True)
class PresenceRow:
    """One committed person on one post of one project in a month (to `through`)."""

    project_code: str
    post: Post
    id_number: str
    name: str
    from_date: date  # the commitment's first day (the earliest, if several)
    to_date: date | None  # exclusive; None: still holds it
    construction_days: int
    valid_days: int
    required_share: Fraction

    @property
    def rate(self) -> Fraction | None:
        return Fraction(self.valid_days, self.construction_days) if self.construction_days else None


def presence_rows(facts: Facts, rules: Rules, month: Month, as_of: date | None = None) -> list[PresenceRow]:
    """A row per (project, post, committed person) of the active projects whose commitment
    overlaps the month up to `as_of` (None: the whole month), ordered by project, post and
    person. Empty when `as_of` is before the month."""
    through = month.last if as_of is None else min(as_of, month.last)
    if through < month.first:
        return []
    projects = {p.code: p for p in facts.projects if p.active}
    stops: dict[str, list[StopWork]] = defaultdict(list)
    for stop in facts.stop_works:
        stops[stop.project].append(stop)
    pauses = frozenset(facts.pause_days)
    calendars = {code: ProjectCalendar(p, stops[code], pauses) for code, p in projects.items()}
    leaves: dict[tuple[str, str], list[Leave]] = defaultdict(list)
    for one in facts.leaves:
        leaves[(one.project, one.id_number)].append(one)
    held: dict[tuple[str, Post, str], list[Commitment]] = defaultdict(list)
    for c in facts.commitments:
        if c.project in projects and c.from_date <= through and (c.to_date is None or c.to_date > month.first):
            held[(c.project, c.post, c.id_number)].append(c)
    attendance = attendance_sets(facts, rules, set(projects), through)
    project_days = {code: cal.construction_days(month.first, through) for code, cal in calendars.items()}
    rows = []
    for (project, post, who), commitments in sorted(held.items(), key=lambda item: (item[0][0], item[0][1].code,
                                                                                      item[0][2])):
        own = leaves.get((project, who))
        leave = leave_days(calendars[project], own, rules, through) if own else NO_LEAVE
        mine = person_days(project_days[project], [(c.from_date, c.to_date) for c in commitments], leave)
        mine = mine[bisect_left(mine, month.first):]
        attended = attendance.get((project, who))
        valid = attended.valid if attended is not None else frozenset()
        latest = max(commitments, key=lambda c: (c.from_date, c.name))
        ends = [c.to_date for c in commitments]
        rows.append(PresenceRow(project, post, who, latest.name, min(c.from_date for c in commitments),
                                None if None in ends else max(d for d in ends if d is not None),
                                len(mine), sum(1 for day in mine if day in valid), rules.required_share(post)))
    return rows
