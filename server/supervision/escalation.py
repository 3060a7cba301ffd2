"""A warning's life as the core sees it: its status, the supervisor's close, its levels by time.

A warning is what the store keeps of a finding (`evaluate.Finding`, by its key). The states,
what can happen to a warning, the dispositions and the one table of moves
(`TRANSITIONS`) are lmg.protocol.warning_codes': the store writes warnings by the same
table (lmg.storage.supervision `transition`, `plan_apply`, `plan_escalation`,
`plan_close`), so there is one life cycle, not two to keep in step. This module adds what
the core needs on top: a warning's `WarningStatus` (state, level, since when), the status
after a happening (`apply`), closing with a disposition (`close`) and the level due at a
time (`due_level`, `escalate`, `next_escalation_ms`).

- `Happening.FOUND` / `FOUND_CHANGED`: an evaluation found it; `NOT_FOUND`: an evaluation
  whose scope covers it did not (the condition cleared: a late backlog disproved it, a
  leave or stop-work was approved); `CLOSE`: a supervisor closed it; `DUE`: its wait ran out
  (`escalate`, not `apply`, moves levels).
- A RESOLVED warning found again is **reopened**: it keeps its level (the bureau that last
  held it takes it back) and its time at that level restarts.
- A CLOSED warning stays closed whatever evaluations find. CLOSED is final: closing it again
  is an error. Who may close is access.py's `may_close`.

Levels (`WarningLevel`): a warning opens at level 1 (the project's county bureau) and,
while OPEN, rises to level 2 (the city) `city_after_days` after it reached level 1 and to
level 3 (the province) `province_after_days` after it reached level 2. A day is
86,400,000 ms of elapsed time, not a calendar day: the boundary is exact, the warning rises
at exactly N days (`now_ms - level_since_ms >= N * DAY_MS`), not 1 ms before. A level is
reached at its due time, not when the glue noticed, so a late tick does not push the next
level back. Which bureau owns a level is access.py's `owner`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lmg.protocol.warning_codes import (  # noqa: F401 - the core's names for the shared tables
    TRANSITIONS,
    Disposition,
    Happening,
    WarningEventKind,
    WarningLevel,
    WarningState,
)
from lmg.server.supervision.rules import Rules


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


def apply(status: WarningStatus, happening: Happening, now_ms: int) -> WarningStatus:
    """The status after `happening` at `now_ms`, by `TRANSITIONS`. Raises
    WarningTransitionError for a move not in it (closing a closed warning) and for `DUE`
    (levels move by `escalate`). Closing goes through `close`, which checks the disposition."""
    moved = TRANSITIONS.get((status.state, happening))
    if moved is None or happening is Happening.DUE:
        if happening is Happening.DUE:
            raise WarningTransitionError("levels move by time: use escalate(status, now_ms, rules)")
        raise WarningTransitionError(f"a {status.state.value} warning cannot be {_PAST[happening]}: it is final")
    target, event = moved
    assert target is not None
    if event is WarningEventKind.REOPENED:
        return WarningStatus(WarningState.OPEN, status.level, now_ms)  # same level, its time restarts
    return replace(status, state=target)


_PAST = {Happening.FOUND: "found", Happening.FOUND_CHANGED: "found", Happening.NOT_FOUND: "cleared",
         Happening.CLOSE: "closed", Happening.DUE: "escalated"}


def close(status: WarningStatus, disposition: Disposition, note: str, now_ms: int) -> WarningStatus:
    """The status after a supervisor closes the warning with `disposition` and `note` (the
    reason, required for a false alarm; its length limit is the store's). Raises
    WarningTransitionError when the warning is closed already, ValueError for a false alarm
    without a note."""
    if disposition is Disposition.FALSE_ALARM and not note.strip():
        raise ValueError("a false alarm needs a note: say why the warning is wrong")
    return apply(status, Happening.CLOSE, now_ms)


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
