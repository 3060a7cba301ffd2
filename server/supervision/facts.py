"""What the evaluation reads: plain frozen records, converted from store rows by the glue.

Nothing here reads the store or the clock. The glue builds one `Facts` for a month
(`calendar.attendance_from` says from which day attendance is needed) and hands it to
`evaluate.evaluate`. Day conventions, each stated on its field:

- Every date is a China date (UTC+8; `calendar.china_day` turns a Unix time in ms into one).
- A commitment runs from `from_date` (inclusive) until `to_date` (exclusive): a personnel
  change (变更) approved on day D ends the old person's obligation with D - 1 and starts the
  new person's on D. Until a change is recorded, the old person is still counted.
- Leave and stop-work periods are written as people write them, first and last day both
  included (请假 3月5日至3月7日 is three days).

What the glue must put in, for an evaluation of month M:
- `projects`, `commitments`, `leaves`, `stop_works` and `pause_days`: every row that touches
  1 January of `attendance_from`'s year onward (leave caps count from 1 January);
- `holders`: the key-post holders on the projects' rosters as they stand;
- `attendance`: every day aggregate of the evaluated projects from `attendance_from` to the
  last day evaluated, for the people in the commitments and holders; more rows are ignored.
Rows for the same (project, person, day) may come split: they are merged (counts added).
- or, instead of a person's rows, their `PunchedDays` (`punched_days`): the days they punched
  and the valid days among them, already decided with the rules' `min_punches` and
  `min_span_ms` over ALL their punches on the project that day (the store's mask query, one
  row per person for a province instead of one per day). A person's days come one way or
  the other; given both, the sets are joined, which is right only when each way is complete
  for its days.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

from lmg.protocol.posts import Post


@dataclass(frozen=True, slots=True)
class ProjectFacts:
    """A project under supervision. Its construction days lie in [`start_date`, `end_date`]
    (开工 to 竣工, both included; no start date: no construction days, so the presence rules
    skip it). `active` False: the project is not supervised (cancelled, archived): no
    findings, it counts for no one's double post, and its warnings are out of the
    evaluation's scope."""

    code: str
    region: str  # GB/T 2260 code of its county-level division (lmg.protocol.regions)
    start_date: date | None
    end_date: date | None
    active: bool = True


@dataclass(frozen=True, slots=True)
class Commitment:
    """A person named for a key post in the project's bid award (中标通知书), or an approved
    replacement: obliged from `from_date` until `to_date` (exclusive; None: still)."""

    project: str
    post: Post
    id_number: str
    name: str
    from_date: date
    to_date: date | None = None

    def __post_init__(self) -> None:
        if not self.post.info.key_post:
            raise ValueError(f"commitment of {self.name} on {self.project}: {self.post.code} is not a key post")
        if self.to_date is not None and self.to_date <= self.from_date:
            raise ValueError(f"commitment of {self.name} on {self.project} as {self.post.code}: ends "
                             f"{self.to_date} (exclusive), not after it starts {self.from_date}")

    def covers(self, day: date) -> bool:
        return self.from_date <= day and (self.to_date is None or day < self.to_date)


@dataclass(frozen=True, slots=True)
class RosterHolder:
    """A person on the project's roster under a key post (the downlink's workers table)."""

    project: str
    id_number: str
    post: Post
    name: str = ""


class DayAttendance(NamedTuple):
    """One person's punches on one project's terminals on one China day: how many, and the
    Unix times in ms of the first and the last (the store's per-day aggregate;
    `calendar.aggregate_days` builds the same from punches).

    An immutable tuple rather than a frozen dataclass, as the store's AttendanceDay (in the
    same field order): a province's month is millions of these, and building one cost
    3 µs as a frozen dataclass against 0.4 µs as a tuple (2026-11, the benchmark VM:
    `lmg bench supervision`, 830,000 rows for 5,000 projects)."""

    project: str
    id_number: str
    day: date
    punches: int
    first_ms: int
    last_ms: int


class PunchedDays(NamedTuple):
    """One person's attendance on one project's terminals over the evaluation's window: the
    China days with at least one punch, and the valid days among them (`calendar.is_valid_day`
    decided on the day's merged aggregate). `calendar.MaskDays` reads the sets off the store's
    bit masks; `calendar.punched_days_from_rows` builds them from day aggregates. `valid` is a
    subset of `punched`."""

    project: str
    id_number: str
    punched: frozenset[date]
    valid: frozenset[date]


@dataclass(frozen=True, slots=True)
class Leave:
    """Approved leave of a person on a project, `first_day` to `last_day`, both included."""

    project: str
    id_number: str
    first_day: date
    last_day: date

    def __post_init__(self) -> None:
        if self.last_day < self.first_day:
            raise ValueError(f"leave on {self.project}: ends {self.last_day} before it starts {self.first_day}")


@dataclass(frozen=True, slots=True)
class StopWork:
    """An approved stop-work period (停工) of a project, `first_day` to `last_day`, both included."""

    project: str
    first_day: date
    last_day: date

    def __post_init__(self) -> None:
        if self.last_day < self.first_day:
            raise ValueError(f"stop-work on {self.project}: ends {self.last_day} before it starts {self.first_day}")


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything one evaluation reads (see the module docstring for what must be in it).

    `attendance_from`: the first day whose attendance `attendance` holds completely; days
    before it are unknown, never absent. `pause_days`: province-wide days that are not
    construction days for anyone (holidays, the Spring Festival, weather the province
    declares)."""

    attendance_from: date
    projects: Sequence[ProjectFacts] = ()
    commitments: Sequence[Commitment] = ()
    holders: Sequence[RosterHolder] = ()
    attendance: Sequence[DayAttendance] = ()
    leaves: Sequence[Leave] = ()
    stop_works: Sequence[StopWork] = ()
    pause_days: Collection[date] = field(default_factory=frozenset)
    punched_days: Sequence[PunchedDays] = ()
