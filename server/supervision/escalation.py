"""A warning's life: its states as a table, the supervisor's dispositions, and its levels by time.

A warning is what the store keeps of a finding (`evaluate.Finding`, by its key). The glue
turns what happens to it into events and asks this module for the next status; every
change of state or level is appended to the warning's history, which is never rewritten
(the record the notice says accumulates for credit management).

States (`TRANSITIONS`; a move not in it raises `WarningTransitionError`):

    a new key --found--> OPEN --cleared--> RESOLVED --found--> OPEN (reopened, same level)
    OPEN --found--> OPEN (figures refreshed);  RESOLVED --cleared--> RESOLVED
    OPEN or RESOLVED --close (a supervisor, with a disposition)--> CLOSED
    CLOSED --found or cleared--> CLOSED (final; the figures are still refreshed)

- `found`: an evaluation found it; `cleared`: an evaluation whose scope covers it did not
  (the condition cleared: a late backlog disproved it, a leave or stop-work was approved).
- A RESOLVED warning found again is **reopened**: it keeps its level (the bureau that last
  held it takes it back) and its time at that level restarts, since the time it stood
  disproved does not count against anyone. Data only grows, so this takes a correction of
  the facts (a leave or stop-work withdrawn, a commitment corrected) or of the rules.
- A CLOSED warning stays closed whatever evaluations find: a supervisor's decision, a false
  alarm above all, is not undone by the next run. The evaluation still refreshes its
  figures. The next month's finding is another warning (another key).
- An OPEN or RESOLVED warning can be closed, with a `Disposition`; a false alarm needs a
  note saying why. A resolved one can be closed so that what the bureau did while it was
  open (a 约谈 held before a backlog disproved it) enters the record. CLOSED is final:
  closing it again is an error. Who may close is access.py's `may_close`.

Levels (`WarningLevel`): a warning opens at level 1 (the project's county bureau) and,
while OPEN, rises to level 2 (the city) `city_after_days` after it reached level 1 and to
level 3 (the province) `province_after_days` after it reached level 2. A day is
86,400,000 ms of elapsed time, not a calendar day: the boundary is exact, the warning rises
at exactly N days (`now_ms - level_since_ms >= N * DAY_MS`), not 1 ms before. A level is
reached at its due time, not when the glue noticed, so a late tick does not push the next
level back. Which bureau owns a level is access.py's `owner`.

The store applies the same life cycle when it writes warnings (lmg.storage.supervision:
`TRANSITIONS`, `plan_apply`, `plan_escalation`, `plan_close`): storage cannot import the
server, so the table exists twice, and tests/server/supervision/test_escalation.py checks
that the two agree state for state, with the same dispositions and escalation times.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from lmg.server.supervision.rules import Rules

class WarningState(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"  # the condition cleared: the evaluation no longer finds it
    CLOSED = "closed"  # a supervisor closed it with a disposition


class WarningEvent(enum.StrEnum):
    FOUND = "found"
    CLEARED = "cleared"
    CLOSE = "close"


_S, _E = WarningState, WarningEvent
TRANSITIONS: dict[tuple[WarningState, WarningEvent], WarningState] = {
    (_S.OPEN, _E.FOUND): _S.OPEN,
    (_S.OPEN, _E.CLEARED): _S.RESOLVED,
    (_S.OPEN, _E.CLOSE): _S.CLOSED,
    (_S.RESOLVED, _E.FOUND): _S.OPEN,  # reopened
    (_S.RESOLVED, _E.CLEARED): _S.RESOLVED,
    (_S.RESOLVED, _E.CLOSE): _S.CLOSED,  # to record what was done while it was open
    (_S.CLOSED, _E.FOUND): _S.CLOSED,
    (_S.CLOSED, _E.CLEARED): _S.CLOSED,
}


class WarningLevel(enum.IntEnum):
    COUNTY = 1
    CITY = 2
    PROVINCE = 3


@dataclass(frozen=True, slots=True)
class DispositionInfo:
    code: str
    name_zh: str
    name_en: str


class Disposition(enum.Enum):
    """What a supervisor did about a warning when closing it (the codes lmg.storage's
    Disposition stores)."""

    INTERVIEW = DispositionInfo("interview", "约谈", "interview")
    RECTIFICATION = DispositionInfo("rectification", "责令整改", "rectification order")
    PENALTY_POINTS = DispositionInfo("penalty-points", "记分", "penalty points on the credit record")
    PUBLIC_NOTICE = DispositionInfo("public-notice", "通报", "public notice")
    FALSE_ALARM = DispositionInfo("false-alarm", "误报", "false alarm")

    @property
    def code(self) -> str:
        info: DispositionInfo = self.value
        return info.code

    @classmethod
    def parse(cls, text: str) -> Disposition:
        """A disposition from its code or Chinese name; ValueError naming the accepted values."""
        wanted = text.strip()
        for disposition in cls:
            if wanted in (disposition.value.code, disposition.value.name_zh):
                return disposition
        names = ", ".join(f"{d.value.code} ({d.value.name_zh})" for d in cls)
        raise ValueError(f"unknown disposition {text!r}: use one of {names}")


class WarningTransitionError(ValueError):
    """The event cannot happen to a warning in its state (closing one that is not open); the
    message says why, for the person who tried."""


@dataclass(frozen=True, slots=True)
class WarningStatus:
    """Where a warning stands: its state, its level and since when (Unix ms) it holds that level."""

    state: WarningState
    level: WarningLevel
    level_since_ms: int


def opened(now_ms: int) -> WarningStatus:
    """A warning found for the first time: open at level 1 from `now_ms`."""
    return WarningStatus(WarningState.OPEN, WarningLevel.COUNTY, now_ms)


def apply(status: WarningStatus, event: WarningEvent, now_ms: int) -> WarningStatus:
    """The status after `event` at `now_ms`. Raises WarningTransitionError for a move not in
    `TRANSITIONS`. Closing goes through `close`, which checks the disposition."""
    target = TRANSITIONS.get((status.state, event))
    if target is None:
        raise WarningTransitionError(f"a {status.state.value} warning cannot be {_PAST[event]}: it is final")
    if status.state is WarningState.RESOLVED and target is WarningState.OPEN:
        return WarningStatus(WarningState.OPEN, status.level, now_ms)  # reopened: same level, its time restarts
    return replace(status, state=target)


_PAST = {WarningEvent.FOUND: "found", WarningEvent.CLEARED: "cleared", WarningEvent.CLOSE: "closed"}


def close(status: WarningStatus, disposition: Disposition, note: str, now_ms: int) -> WarningStatus:
    """The status after a supervisor closes the warning with `disposition` and `note` (the
    reason, required for a false alarm; its length limit is the store's). Raises
    WarningTransitionError when the warning is closed already, ValueError for a false alarm
    without a note."""
    if disposition is Disposition.FALSE_ALARM and not note.strip():
        raise ValueError("a false alarm needs a note: say why the warning is wrong")
    return apply(status, WarningEvent.CLOSE, now_ms)


@dataclass(frozen=True, slots=True)
class LevelDue:
    level: WarningLevel
    since_ms: int  # when it reached that level: the due time, not the time it was noticed


def due_level(level: WarningLevel, level_since_ms: int, now_ms: int, rules: Rules) -> LevelDue:
    """The level an open warning holds at `now_ms`, having held `level` since `level_since_ms`:
    one higher for every step whose time has come (exactly N days counts), at most PROVINCE."""
    while level < WarningLevel.PROVINCE:
        due = level_since_ms + _wait_ms(level, rules)
        if now_ms < due:
            break
        level, level_since_ms = WarningLevel(level + 1), due
    return LevelDue(level, level_since_ms)


def next_escalation_ms(level: WarningLevel, level_since_ms: int, rules: Rules) -> int | None:
    """When a warning open at `level` since `level_since_ms` rises next (Unix ms); None at the
    province. The glue arms its timer with the earliest of these."""
    if level >= WarningLevel.PROVINCE:
        return None
    return level_since_ms + _wait_ms(level, rules)


def escalate(status: WarningStatus, now_ms: int, rules: Rules) -> WarningStatus:
    """`status` with the level due at `now_ms`; unchanged unless it is OPEN."""
    if status.state is not WarningState.OPEN:
        return status
    due = due_level(status.level, status.level_since_ms, now_ms, rules)
    return WarningStatus(status.state, due.level, due.since_ms)


def _wait_ms(level: WarningLevel, rules: Rules) -> int:
    return rules.city_after_ms if level is WarningLevel.COUNTY else rules.province_after_ms
