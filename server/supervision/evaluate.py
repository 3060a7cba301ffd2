"""The evaluation: facts and rules in, findings out, for one calendar month as known on a day.

`evaluate(facts, rules, month, as_of)` returns every finding of `month` that the facts
prove on `as_of` (the last complete day the glue has: yesterday, for the daily run). It
reads no store and no clock, and its result depends only on its arguments: not on the
order of any input, nor on how often it runs. The glue stores each finding by its `key`
(open a warning, or refresh its figures) and resolves the open warnings inside `scope(...)`
that the result no longer holds: that is how a late backlog of punches clears a warning
it disproves. Data only grows, so a finding that disappears was disproved.

Rules (`rules.RULES` is the table; calendar.py defines the days):

- Who is watched: the committed people of each active project (`Commitment`), per post
  and while their commitment holds. A project without a bid award has nobody to check.
- **Daily rules** are decided for each day from the month's first to `as_of`:
  - `consecutive-absence`: a run of `consecutive_days` or more of the person's construction
    days without a valid day (excused leave, stop-work, pause days and days outside the
    commitment are skipped: they neither break a run nor lengthen it). A run belongs to
    the month in which it reaches the count and to each later month it goes on into; in
    each, the finding's period is the run's days in that month and starts the key, so a
    run still growing keeps its key. Its figures give the run's first day (from
    `attendance_from` at the earliest) and its length.
  - `not-committed`: a roster holder of a key post punches on a day they are not committed
    to that post there, while the award names someone for that post (a replacement before
    its approval date is such a day).
  - `double-post`: a person committed on two active projects punches on both the same day.
    One finding per project, naming the others.
  The period of these two starts on the month's first day (so that an earlier day found
  later does not make it another warning) and ends on the last day found; the figures
  list the days.
- **Monthly rules** are decided once the month is over (`as_of` on or after its last day):
  a month to date is not judged against a monthly share; the daily rules give the early
  signal. Both take the person's construction days in the month (under that commitment),
  and their period is the month:
  - `low-presence`: valid days below the post's required share of them (exact fractions).
  - `committed-absent`: not one punch on the project on a day of the month the commitment
    holds, though the month has construction days for them. A person absent all month is
    also `low-presence` and `consecutive-absence`: each rule stands on its own, so adding
    a valid day never makes a `low-presence` finding appear.
- Keys are `rule|project|post|ID number|period start` (lmg.storage's WarningFinding.key).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import Any

from lmg.protocol.posts import Post
from lmg.server.supervision.calendar import (
    NO_LEAVE,
    LeaveDays,
    Month,
    ProjectCalendar,
    leave_days,
    attendance_sets,
    person_days,
)
from lmg.server.supervision.facts import Commitment, Facts, Leave, ProjectFacts, PunchedDays, StopWork
from lmg.server.supervision.rules import RULES, Cadence, RuleCode, Rules

RATE_DIGITS = 4  # a rate to 0.01%: a month has at most 31 construction days, one is 3%


@dataclass(frozen=True, slots=True)
class Figures:
    """The figures behind a finding; each field is set by the rules it belongs to.

    `days`: the days involved (low-presence: the construction days without a valid day;
    consecutive-absence: the run's days in the month; not-committed: the days punched
    without a commitment; double-post: the days punched on two projects). `rate` is
    valid_days / construction_days, exact; `as_json` rounds it for people."""

    construction_days: int | None = None
    valid_days: int | None = None
    required_share: Fraction | None = None
    days: tuple[date, ...] = ()
    run_first_day: date | None = None
    run_days: int | None = None
    leave_days: int | None = None  # excused leave days in the period
    over_cap_leave_days: int | None = None  # leave beyond a cap, counted as construction days
    other_projects: tuple[str, ...] = ()

    @property
    def rate(self) -> Fraction | None:
        if self.valid_days is None or not self.construction_days:
            return None
        return Fraction(self.valid_days, self.construction_days)

    def as_json(self) -> dict[str, Any]:
        """The figures as JSON values (dates ISO, shares and rates as numbers), unset ones left out."""
        out: dict[str, Any] = {}
        for name in ("construction_days", "valid_days", "run_days", "leave_days", "over_cap_leave_days"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.rate is not None:
            out["rate"] = round(float(self.rate), RATE_DIGITS)
        if self.required_share is not None:
            out["required_share"] = float(self.required_share)
        if self.days:
            out["days"] = [day.isoformat() for day in self.days]
        if self.run_first_day is not None:
            out["run_first_day"] = self.run_first_day.isoformat()
        if self.other_projects:
            out["other_projects"] = list(self.other_projects)
        return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule found broken: about `id_number` (`name`) under `post` on `project_code`, over
    `period_start` to `period_end` (both included; the start is part of the key)."""

    rule: RuleCode
    project_code: str
    post: Post
    id_number: str | None
    name: str
    period_start: date
    period_end: date
    figures: Figures

    @property
    def key(self) -> str:
        """The natural key the store upserts by (lmg.storage's WarningFinding.key): the same
        fact gives the same key on every run."""
        person = self.id_number or "-"
        return f"{self.rule}|{self.project_code}|{self.post.code}|{person}|{self.period_start.isoformat()}"


@dataclass(frozen=True, slots=True)
class Scope:
    """What one evaluation decided: an open warning inside it that the evaluation did not find
    is no longer true (the glue resolves it); warnings outside it are left alone. A warning
    is inside when its rule is one of `rules`, its project one of `project_codes` and its
    period starts within the month (lmg.storage's EvaluationScope, with first_day and
    last_day the month's). With `as_of` before the month nothing was decided: `rules` is
    empty and there is nothing to apply."""

    month: Month
    through: date | None  # the last day evaluated; None: none (as_of before the month)
    rules: frozenset[RuleCode]
    project_codes: frozenset[str]

    @property
    def first_day(self) -> date:
        return self.month.first

    @property
    def last_day(self) -> date:
        return self.month.last

    def covers(self, rule: str, project_code: str, period_start: date) -> bool:
        return (rule in self.rules and project_code in self.project_codes
                and self.month.first <= period_start <= self.month.last)


def scope(facts: Facts, month: Month, as_of: date | None = None) -> Scope:
    """The scope of `evaluate(facts, rules, month, as_of)`: the active projects of `facts`,
    the daily rules when a day of the month is evaluated, the monthly ones when it is over."""
    through = month.last if as_of is None else min(as_of, month.last)
    if through < month.first:
        return Scope(month, None, frozenset(), frozenset())
    complete = as_of is None or as_of >= month.last
    rules = frozenset(code for code, info in RULES.items() if complete or info.cadence is Cadence.DAILY)
    return Scope(month, through, rules, frozenset(p.code for p in facts.projects if p.active))


def evaluate(facts: Facts, rules: Rules, month: Month, as_of: date | None = None) -> list[Finding]:
    """Every finding of `month` on `as_of` (None: the month is over), sorted by key.

    Raises ValueError if `facts.attendance_from` is after the month's first day (the
    month's own attendance would be missing)."""
    if facts.attendance_from > month.first:
        raise ValueError(f"evaluating {month} needs attendance from {month.first} at the latest; the facts hold it "
                         f"from {facts.attendance_from}")
    where = scope(facts, month, as_of)
    if where.through is None:
        return []
    run = _Evaluation(facts, rules, month, where.through, complete=as_of is None or as_of >= month.last)
    findings = run.presence() + run.not_committed() + run.double_post()
    return sorted(findings, key=lambda f: f.key)


class _Evaluation:
    """The indexes one evaluation builds over its facts, and the rules applied to them."""

    def __init__(self, facts: Facts, rules: Rules, month: Month, through: date, *, complete: bool):
        self.rules, self.month, self.through, self.complete = rules, month, through, complete
        self.month_first = month.first
        self.window_first = facts.attendance_from
        self.projects: dict[str, ProjectFacts] = {p.code: p for p in facts.projects if p.active}
        self.attendance = attendance_sets(facts, rules, set(self.projects), through)
        stops: dict[str, list[StopWork]] = defaultdict(list)
        for stop in facts.stop_works:
            stops[stop.project].append(stop)
        pauses = frozenset(facts.pause_days)
        self.calendars = {code: ProjectCalendar(p, stops[code], pauses) for code, p in self.projects.items()}
        self._project_days: dict[str, list[date]] = {}
        self.leaves: dict[tuple[str, str], list[Leave]] = defaultdict(list)
        for leave in facts.leaves:
            self.leaves[(leave.project, leave.id_number)].append(leave)
        self.obligations: dict[tuple[str, Post, str], list[Commitment]] = defaultdict(list)
        for c in facts.commitments:
            if c.project in self.projects:
                self.obligations[(c.project, c.post, c.id_number)].append(c)
        # a person's name on a post: the latest commitment's (the same whatever the input order)
        self.names = {key: max(commitments, key=lambda c: (c.from_date, c.name)).name
                      for key, commitments in self.obligations.items()}
        holders: dict[tuple[str, Post, str], str] = {}
        for h in facts.holders:
            if h.project in self.projects and h.post.info.key_post:
                key = (h.project, h.post, h.id_number)
                holders[key] = max(holders.get(key, ""), h.name)
        self.holders = holders

    def project_days(self, project: str) -> list[date]:
        """The project's construction days in the window, computed once per project."""
        found = self._project_days.get(project)
        if found is None:
            found = self._project_days[project] = self.calendars[project].construction_days(self.window_first,
                                                                                            self.through)
        return found

    def days(self, project: str, id_number: str) -> PunchedDays:
        """The person's punched and valid days on the project within the window."""
        return self.attendance.get((project, id_number)) or PunchedDays(project, id_number, frozenset(), frozenset())

    # -- the presence rules: consecutive-absence, low-presence, committed-absent --------------------
    def presence(self) -> list[Finding]:
        out: list[Finding] = []
        for (project, post, who), commitments in self.obligations.items():
            intervals = [(c.from_date, c.to_date) for c in commitments]
            name = self.names[(project, post, who)]
            own_leaves = self.leaves.get((project, who))
            leave = (leave_days(self.calendars[project], own_leaves, self.rules, self.through) if own_leaves
                     else NO_LEAVE)
            mine = person_days(self.project_days(project), intervals, leave)
            attended = self.days(project, who)
            valid = attended.valid
            out += self._absence_runs(project, post, who, name, mine, valid)
            if self.complete:
                month_days = mine[bisect_left(mine, self.month_first):]
                out += self._monthly(project, post, who, name, intervals, month_days, valid, attended.punched, leave)
        return out

    def _absence_runs(self, project: str, post: Post, who: str, name: str, mine: Sequence[date],
                      valid: frozenset[date]) -> list[Finding]:
        out = []
        need, first = self.rules.consecutive_days, self.month_first
        run: list[date] = []
        for day in mine:
            if day not in valid:
                run.append(day)
            elif run:
                if len(run) >= need and run[-1] >= first:
                    out.append(self._run_finding(project, post, who, name, run))
                run = []
        if len(run) >= need and run[-1] >= first:
            out.append(self._run_finding(project, post, who, name, run))
        return out

    def _run_finding(self, project: str, post: Post, who: str, name: str, run: list[date]) -> Finding:
        inside = run[bisect_left(run, self.month_first):]
        return Finding(RuleCode.CONSECUTIVE_ABSENCE, project, post, who, name, inside[0], inside[-1],
                       Figures(construction_days=len(inside), valid_days=0, days=tuple(inside),
                               run_first_day=run[0], run_days=len(run)))

    def _monthly(self, project: str, post: Post, who: str, name: str, intervals: Sequence[tuple[date, date | None]],
                 month_days: Sequence[date], valid: frozenset[date], punched_days: frozenset[date],
                 leave: LeaveDays) -> list[Finding]:
        if not month_days:
            return []
        m = self.month
        out = []
        present = sum(1 for day in month_days if day in valid)
        share = self.rules.required_share(post)
        excused = sum(1 for day in leave.excused if m.first <= day <= m.last)
        over = sum(1 for day in leave.over_cap if m.first <= day <= m.last)
        if present < share * len(month_days):
            absent = tuple(day for day in month_days if day not in valid)
            out.append(Finding(RuleCode.LOW_PRESENCE, project, post, who, name, m.first, m.last,
                               Figures(construction_days=len(month_days), valid_days=present, required_share=share,
                                       days=absent, leave_days=excused, over_cap_leave_days=over)))
        # a valid day among the month's days is a punch under the commitment; else look at every day
        punched = present > 0 or any(
            any(a <= day and (b is None or day < b) for a, b in intervals)
            for day in punched_days if m.first <= day <= m.last)
        if not punched:
            out.append(Finding(RuleCode.COMMITTED_ABSENT, project, post, who, name, m.first, m.last,
                               Figures(construction_days=len(month_days), valid_days=0, leave_days=excused,
                                       over_cap_leave_days=over)))
        return out

    # -- bid-award consistency: not-committed, double-post ----------------------------------------------
    def _month_punch_days(self, project: str, who: str) -> list[date]:
        first = self.month_first
        return sorted(day for day in self.days(project, who).punched if day >= first)

    def not_committed(self) -> list[Finding]:
        named: dict[tuple[str, Post], list[Commitment]] = defaultdict(list)
        for (project, post, _), commitments in self.obligations.items():
            named[(project, post)] += commitments
        out = []
        for (project, post, who), name in self.holders.items():
            award = named.get((project, post))
            if not award:
                continue  # the award names nobody for this post: nothing to check against
            mine = [c for c in award if c.id_number == who]
            if any(c.covers(self.month_first) and (c.to_date is None or c.to_date > self.through) for c in mine):
                continue  # committed all month: the usual case, decided without looking at a day
            days = [day for day in self._month_punch_days(project, who) if not any(c.covers(day) for c in mine)]
            if days:
                out.append(Finding(RuleCode.NOT_COMMITTED, project, post, who, name, self.month.first, days[-1],
                                   Figures(days=tuple(days))))
        return out

    def double_post(self) -> list[Finding]:
        by_person: dict[str, list[Commitment]] = defaultdict(list)
        for (_, _, who), commitments in self.obligations.items():
            by_person[who] += commitments
        out = []
        for who, commitments in by_person.items():
            if len({c.project for c in commitments}) < 2:
                continue
            # day -> the projects committed and punched on that day
            on: dict[date, set[str]] = defaultdict(set)
            for project in {c.project for c in commitments}:
                mine = [c for c in commitments if c.project == project]
                for day in self._month_punch_days(project, who):
                    if any(c.covers(day) for c in mine):
                        on[day].add(project)
            clashes = {day: projects for day, projects in on.items() if len(projects) > 1}
            if clashes:
                out += self._double_findings(who, commitments, clashes)
        return out

    def _double_findings(self, who: str, commitments: Iterable[Commitment],
                         clashes: Mapping[date, set[str]]) -> list[Finding]:
        # (project, post) -> days and the other projects on them
        found: dict[tuple[str, Post], tuple[list[date], set[str], str]] = {}
        for day in sorted(clashes):
            for c in commitments:
                if c.project in clashes[day] and c.covers(day):
                    days, others, _ = found.setdefault((c.project, c.post),
                                                       ([], set(), self.names[(c.project, c.post, who)]))
                    if not days or days[-1] != day:
                        days.append(day)
                    others |= clashes[day] - {c.project}
        return [Finding(RuleCode.DOUBLE_POST, project, post, who, name, self.month.first, days[-1],
                        Figures(days=tuple(days), other_projects=tuple(sorted(others))))
                for (project, post), (days, others, name) in found.items()]
