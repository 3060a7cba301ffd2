"""The code tables of a supervision warning's life: its states, what can happen to it, the
events of its history, its levels, the dispositions that close it and the departments of
the supervisors. The one home of these tables: the store (lmg.storage) writes warnings by
them and the supervision core (lmg.server.supervision) reasons with them.

The life cycle is one table, `TRANSITIONS`: (state before, what happened) -> (state after,
event appended to the history; None: nothing changes, nothing is appended). A state of
None is a key no warning has yet. A pair not in the table is refused by the caller in one
place (the store's `transition`, the core's `escalation.apply`):

    a new key --found--> OPEN --not found in scope--> RESOLVED --found--> OPEN (reopened)
    OPEN --found with other figures--> OPEN (figures_changed);  OPEN --due--> OPEN (escalated)
    OPEN or RESOLVED --close (a supervisor, with a disposition)--> CLOSED (final)
    CLOSED --found or not found--> CLOSED (nothing appended: a decision outlives evaluations)

Codes are what the store keeps and the APIs and the province see (`open`, `false-alarm`,
`construction`); the Chinese names are what a person reads and may type instead.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum


class WarningState(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"  # the condition cleared: the evaluation no longer finds it
    CLOSED = "closed"  # a supervisor closed it with a disposition; final


class Happening(enum.Enum):
    """What can happen to a warning; with its state, the key of TRANSITIONS."""

    FOUND = "found"  # an evaluation found it, as stored
    FOUND_CHANGED = "found_changed"  # found, with another period end or other figures
    NOT_FOUND = "not_found"  # in the scope evaluated, and not found: the condition cleared
    DUE = "due"  # its time at its level ran out
    CLOSE = "close"  # a supervisor closed it


class WarningEventKind(enum.StrEnum):
    """The kinds of entry in a warning's history."""

    OPENED = "opened"
    FIGURES_CHANGED = "figures_changed"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CLOSED = "closed"


class WarningLevel(enum.IntEnum):
    """Who owns a warning (lmg.protocol.regions.bureau_for names the bureau)."""

    COUNTY = 1
    CITY = 2
    PROVINCE = 3


_O, _R, _C = WarningState.OPEN, WarningState.RESOLVED, WarningState.CLOSED
_H, _E = Happening, WarningEventKind
TRANSITIONS: dict[tuple[WarningState | None, Happening], tuple[WarningState | None, WarningEventKind | None]] = {
    (None, _H.FOUND): (_O, _E.OPENED),
    (None, _H.FOUND_CHANGED): (_O, _E.OPENED),
    (None, _H.NOT_FOUND): (None, None),
    (_O, _H.FOUND): (_O, None),
    (_O, _H.FOUND_CHANGED): (_O, _E.FIGURES_CHANGED),
    (_O, _H.NOT_FOUND): (_R, _E.RESOLVED),
    (_O, _H.DUE): (_O, _E.ESCALATED),
    (_O, _H.CLOSE): (_C, _E.CLOSED),
    # reopened: same level, its time at that level restarts (the time it stood disproved
    # counts against no one)
    (_R, _H.FOUND): (_O, _E.REOPENED),
    (_R, _H.FOUND_CHANGED): (_O, _E.REOPENED),
    (_R, _H.NOT_FOUND): (_R, None),
    (_R, _H.CLOSE): (_C, _E.CLOSED),  # records what the bureau did while it was open
    # A closure is final: a supervisor's decision outlives later evaluations.
    (_C, _H.FOUND): (_C, None),
    (_C, _H.FOUND_CHANGED): (_C, None),
    (_C, _H.NOT_FOUND): (_C, None),
}
# Missing on purpose: (None, DUE | CLOSE) - no warning to act on; (resolved | closed, DUE) -
# only open warnings escalate; (closed, CLOSE) - closing is final.


class Disposition(enum.StrEnum):
    """How a supervisor closes a warning."""

    INTERVIEW = "interview"  # 约谈
    RECTIFICATION = "rectification"  # 责令整改
    PENALTY_POINTS = "penalty-points"  # 记分
    PUBLIC_NOTICE = "public-notice"  # 通报
    FALSE_ALARM = "false-alarm"  # 误报: needs a note saying why

    @property
    def code(self) -> str:
        return self.value

    @property
    def name_zh(self) -> str:
        return _DISPOSITION_ZH[self]

    @classmethod
    def parse(cls, text: str) -> Disposition:
        """From the code or the Chinese name; ValueError naming the accepted values."""
        wanted = text.strip() if isinstance(text, str) else text
        for disposition, zh in _DISPOSITION_ZH.items():
            if wanted in (disposition.value, zh):
                return disposition
        accepted = ", ".join(f"{d.value} ({zh})" for d, zh in _DISPOSITION_ZH.items())
        raise ValueError(f"disposition {text!r}: use one of {accepted}")


_DISPOSITION_ZH = {Disposition.INTERVIEW: "约谈", Disposition.RECTIFICATION: "责令整改",
                   Disposition.PENALTY_POINTS: "记分", Disposition.PUBLIC_NOTICE: "通报",
                   Disposition.FALSE_ALARM: "误报"}


class Department(enum.StrEnum):
    """The department a supervisor (an API token, a console account) belongs to.

    The code (`construction`, `labour`) is what the store keeps in api_tokens.department and
    what the API and `lmg token --json` print; the Chinese short name (住建, 人社) is what a
    person reads and may type (`parse` takes either, or the full names)."""

    CONSTRUCTION = "construction"  # 住建: 住房和城乡建设 (the housing and construction bureau)
    LABOUR = "labour"  # 人社: 人力资源和社会保障 (human resources and social security)

    @property
    def name_zh(self) -> str:
        return _DEPARTMENT_ZH[self][0]

    @classmethod
    def parse(cls, text: str) -> Department:
        """A department from its code or Chinese name (住建, 人社, or the full names);
        ValueError naming the accepted values otherwise."""
        wanted = text.strip() if isinstance(text, str) else text
        for department, names in _DEPARTMENT_ZH.items():
            if wanted == department.value or wanted in names:
                return department
        accepted = ", ".join(f"{d.value} ({names[0]})" for d, names in _DEPARTMENT_ZH.items())
        raise ValueError(f"department {text!r}: use {accepted}")


_DEPARTMENT_ZH = {Department.CONSTRUCTION: ("住建", "住房和城乡建设"),
                  Department.LABOUR: ("人社", "人力资源和社会保障")}

# The one department that closes warnings about key personnel (现场管理人员): 住建.
# 人社 sees attendance and roster figures but closes none.
CLOSING_DEPARTMENT = Department.CONSTRUCTION
