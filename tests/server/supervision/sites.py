"""Small sites for the supervision tests: projects, committed people and their days, as a builder.

`Site` collects what a scenario needs (projects, commitments, roster holders, punches,
leave, stop-work, pause days) and turns it into the `Facts` an evaluation reads, building
the day aggregates from raw punch times with `calendar.aggregate_days`, so every test goes
through the China-day rule. A person is "present" on a day with two punches, 08:00 and
18:00 China time (a valid day under the default rules: 2 punches, 10 h apart).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from lmg.protocol.identity import check_digit
from lmg.protocol.posts import Post
from lmg.server.supervision.calendar import Month, Punched, aggregate_days, attendance_from, days
from lmg.server.supervision.evaluate import Finding
from lmg.server.supervision.facts import Commitment, Facts, Leave, ProjectFacts, RosterHolder, StopWork

CHINA = timezone(timedelta(hours=8))
MARCH = Month(2025, 3)
# 兰州市城关区 and 白银市白银区: two counties of two cities
P1 = ProjectFacts("P1", "620102", date(2025, 1, 1), None)
P2 = ProjectFacts("P2", "620402", date(2025, 1, 1), None)


def id_number(n: int) -> str:
    first17 = f"620102198503{n:05d}"
    return first17 + check_digit(first17)


ZHANG, LI, WANG = id_number(1), id_number(2), id_number(3)
LABEL = {ZHANG: "张三", LI: "李四", WANG: "王五"}


def d(day: int, month: int = 3, year: int = 2025) -> date:
    return date(year, month, day)


def at(day: date, hour: int, minute: int = 0) -> int:
    """Unix ms of `hour:minute` China time on `day`."""
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=CHINA).timestamp()) * 1000


def span(first: date, last: date) -> list[date]:
    return days(first, last)


@dataclass
class Site:
    projects: list[ProjectFacts] = field(default_factory=lambda: [P1])
    commitments: list[Commitment] = field(default_factory=list)
    holders: list[RosterHolder] = field(default_factory=list)
    punches: list[Punched] = field(default_factory=list)
    leaves: list[Leave] = field(default_factory=list)
    stop_works: list[StopWork] = field(default_factory=list)
    pause_days: set[date] = field(default_factory=set)

    def commit(self, who: str, post: Post = Post.PROJECT_MANAGER, project: str = "P1",
               from_date: date = date(2025, 1, 1), to_date: date | None = None, name: str | None = None) -> Site:
        self.commitments.append(Commitment(project, post, who, name or LABEL.get(who, who), from_date, to_date))
        return self

    def hold(self, who: str, post: Post = Post.PROJECT_MANAGER, project: str = "P1", name: str | None = None) -> Site:
        self.holders.append(RosterHolder(project, who, post, name or LABEL.get(who, who)))
        return self

    def present(self, who: str, on: Iterable[date], project: str = "P1") -> Site:
        for day in on:
            self.punch(who, day, 8, 0, project)
            self.punch(who, day, 18, 0, project)
        return self

    def punch(self, who: str, day: date, hour: int, minute: int = 0, project: str = "P1") -> Site:
        self.punches.append(Punched(project, who, at(day, hour, minute)))
        return self

    def leave(self, who: str, first: date, last: date, project: str = "P1") -> Site:
        self.leaves.append(Leave(project, who, first, last))
        return self

    def stop(self, first: date, last: date, project: str = "P1") -> Site:
        self.stop_works.append(StopWork(project, first, last))
        return self

    def facts(self, month: Month = MARCH, punches: Iterable[Punched] | None = None) -> Facts:
        return Facts(attendance_from(month), tuple(self.projects), tuple(self.commitments), tuple(self.holders),
                     tuple(aggregate_days(self.punches if punches is None else punches)), tuple(self.leaves),
                     tuple(self.stop_works), frozenset(self.pause_days))


def manager_present_except(*absent: date, first: date = d(1, 2), last: date = d(31)) -> Site:
    """P1 with 张三 its committed project manager since 1 January, present every day from
    `first` to `last` except `absent`."""
    site = Site().commit(ZHANG).hold(ZHANG)
    return site.present(ZHANG, [day for day in span(first, last) if day not in absent])


def summary(findings: Iterable[Finding]) -> set[tuple[str, str, str, date, date]]:
    """What a scenario's expectations name: rule, project, person, period."""
    return {(str(f.rule), f.project_code, LABEL.get(f.id_number or "", "-"), f.period_start, f.period_end)
            for f in findings}
