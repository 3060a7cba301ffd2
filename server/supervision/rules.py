"""The supervision rules: what each warning rule checks (one code table) and its thresholds (one TOML file).

Two tables, each the one source of its facts:

- `RULES`: every rule the evaluation applies (`RuleCode`), with its Chinese name, when it
  is evaluated, what it checks and whose published practice it follows. docs/supervision.md
  repeats it and tests/server/supervision/test_rules.py checks the two agree.
- `THRESHOLDS`: every key of the rules file, its accepted range and its source. The file
  (the packaged `rules.toml` by default; the operator's copy through the setting
  `supervision_rules_file`) is parsed against it into a frozen `Rules`.

The defaults are not Gansu's numbers: Gansu publishes none, so each follows practice
elsewhere (../shared/supervision-precedents.md), and the file says so in its header.

Rules of the file, so that a mistake stops the start instead of changing a warning:
every key must be present (an operator's copy is a whole file, never a patch over the
defaults), an unknown key or section is an error, and a value outside its range is an
error naming the key and the range. All problems of a file are reported at once
(`RulesError`). Shares are kept as exact fractions, so 7 valid days of 10 meet 70%.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lmg.protocol.posts import KEY_POSTS, Post

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DEFAULT_RULES_FILE = "rules.toml"  # package data of lmg.server.supervision


class RuleCode(enum.StrEnum):
    """A warning rule's code, as stored and sent (lower case and '-', as post codes are)."""

    LOW_PRESENCE = "low-presence"
    CONSECUTIVE_ABSENCE = "consecutive-absence"
    NOT_COMMITTED = "not-committed"
    COMMITTED_ABSENT = "committed-absent"
    DOUBLE_POST = "double-post"


class Cadence(enum.StrEnum):
    """When a rule can be decided: every day evaluated, or once a calendar month is over."""

    DAILY = "daily"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class RuleInfo:
    code: RuleCode
    name_zh: str
    cadence: Cadence
    checks: str
    source: str


RULES: Mapping[RuleCode, RuleInfo] = MappingProxyType({info.code: info for info in (
    RuleInfo(RuleCode.LOW_PRESENCE, "到岗率不足", Cadence.MONTHLY,
             "a committed person's valid days are below the post's required share of their construction days "
             "in a calendar month",
             "Jilin 吉建规〔2023〕11号 (80%, warning raised by the platform); Wuhu (总监 50%); Xuzhou, Nantong"),
    RuleInfo(RuleCode.CONSECUTIVE_ABSENCE, "连续缺勤", Cadence.DAILY,
             "a committed person has no valid day on `consecutive_days` construction days in a row; opens on the "
             "day the run reaches it",
             "Fuzhou 2022 (5 consecutive days absent: 约谈, public listing, 记分)"),
    RuleInfo(RuleCode.NOT_COMMITTED, "非中标人员履职", Cadence.DAILY,
             "a person on the roster under a key post punches on the project on a day they are not the committed "
             "person (nor the approved replacement) for that post",
             "Gansu 甘建建〔2021〕1号 二(二) (中标通知书 against the people on site); Bengbu 建政秘〔2010〕238号, "
             "Changzhou, Yuhang"),
    RuleInfo(RuleCode.COMMITTED_ABSENT, "中标人员未到岗", Cadence.MONTHLY,
             "a committed person has not one punch on the project in a calendar month that has construction days "
             "for them",
             "Gansu 甘建建〔2021〕1号 二(二); Ningxia 2020 (no attendance: investigate 转包/挂靠)"),
    RuleInfo(RuleCode.DOUBLE_POST, "一人多岗", Cadence.DAILY,
             "one ID number committed to key posts on two active projects punches on both on the same day",
             "national: 注册建造师管理规定 (建设部令第153号: a 项目经理 heads one project at a time); Gansu "
             "甘建建〔2021〕1号 二(二) (挂靠, 转包)"),
)})


@dataclass(frozen=True, slots=True)
class Threshold:
    """One key of the rules file: `section.key`, whole numbers only or not, its inclusive range."""

    section: str
    key: str
    field: str  # the `Rules` field it sets
    whole: bool
    low: float
    high: float
    meaning: str
    source: str

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    def accepted(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        return f"{kind} from {_number(self.low)} to {_number(self.high)}"


_PRESENCE_SOURCE = {
    Post.CHIEF_SUPERVISOR: "Wuhu (总监 at least 50%)",
    Post.CHIEF_SUPERVISOR_DEPUTY: "Wuhu (posts other than the 总监: 80%)",
    Post.SPECIALIST_SUPERVISOR: "Wuhu (posts other than the 总监: 80%)",
}
THRESHOLDS: tuple[Threshold, ...] = (
    # A punch count above a day's in-and-out at every break is not a presence rule any more.
    Threshold("valid_day", "min_punches", "min_punches", True, 1, 24,
              "punches on the project's terminals that make a valid day", "Jilin 吉建规〔2023〕11号"),
    # 20 h: a rule asking more of one China day than a long shift is a typo.
    Threshold("valid_day", "min_span_hours", "min_span_hours", False, 0, 20,
              "hours between the day's first and last punch that make a valid day",
              "Jilin 吉建规〔2023〕11号; Nanjing"),
    *(Threshold("presence", post.code, "presence", False, 0, 1,
                f"required share of construction days with a valid day for the {post.info.name_en} "
                f"({post.info.name_zh})",
                _PRESENCE_SOURCE.get(post, "Jilin 吉建规〔2023〕11号; Wuhu")) for post in KEY_POSTS),
    # At most 28: runs are judged on one month of look-back (`calendar.attendance_from`), and
    # February has 28 days.
    Threshold("absence", "consecutive_days", "consecutive_days", True, 1, 28,
              "construction days in a row without a valid day that open a warning", "Fuzhou 2022"),
    Threshold("leave", "days_per_month", "leave_days_per_month", True, 0, 31,
              "approved leave days a calendar month that are not construction days", "Heilongjiang"),
    Threshold("leave", "days_per_year", "leave_days_per_year", True, 0, 366,
              "approved leave days a calendar year that are not construction days", "Heilongjiang"),
    Threshold("escalation", "city_after_days", "city_after_days", True, 1, 365,
              "days a warning stays open at the county (level 1) before it rises to the city (level 2)",
              "none published (issue 15's default)"),
    Threshold("escalation", "province_after_days", "province_after_days", True, 1, 365,
              "days a warning stays open at the city (level 2) before it rises to the province (level 3)",
              "none published (issue 15's default)"),
)


class RulesError(ValueError):
    """The rules file cannot be used; the message names the file and every wrong key, with what
    it accepts."""


@dataclass(frozen=True)
class Rules:
    """The thresholds of one rules file. Build it with `parse_rules`, `load_rules` or
    `default_rules` (which check every value); `dataclasses.replace` in tests."""

    min_punches: int
    min_span_hours: float
    presence: Mapping[Post, Fraction]  # every key post, share in [0, 1]
    consecutive_days: int
    leave_days_per_month: int
    leave_days_per_year: int
    city_after_days: int
    province_after_days: int
    source: str = "<built in>"  # the file they came from, for messages

    @property
    def min_span_ms(self) -> int:
        return round(self.min_span_hours * HOUR_MS)

    @property
    def city_after_ms(self) -> int:
        return self.city_after_days * DAY_MS

    @property
    def province_after_ms(self) -> int:
        return self.province_after_days * DAY_MS

    def required_share(self, post: Post) -> Fraction:
        """The post's required share; KeyError for a post that is not a key post."""
        return self.presence[post]


def parse_rules(text: str, source: str) -> Rules:
    """`Rules` from the text of a rules file; `source` names it in errors. Raises RulesError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"supervision rules {source}: not valid TOML: {exc}") from None
    problems: list[str] = []
    values: dict[str, Any] = {}
    presence: dict[Post, Fraction] = {}
    sections = {t.section for t in THRESHOLDS}
    for section in sorted(set(data) - sections):
        problems.append(f"[{section}]: unknown section; the sections are {', '.join(sorted(sections))}")
    for threshold in THRESHOLDS:
        table = data.get(threshold.section)
        if table is not None and not isinstance(table, dict):
            problems.append(f"{threshold.section}: must be a table ([{threshold.section}])")
            continue
        if table is None or threshold.key not in table:
            problems.append(f"{threshold.name}: missing; give {threshold.accepted()} ({threshold.meaning})")
            continue
        value, problem = _check(threshold, table[threshold.key])
        if problem:
            problems.append(f"{threshold.name} = {table[threshold.key]!r}: {problem}")
        elif threshold.field == "presence":
            presence[Post.parse(threshold.key)] = Fraction(str(value))
        else:
            values[threshold.field] = value
    for section in sections & set(data):
        table = data[section]
        if isinstance(table, dict):
            known = {t.key for t in THRESHOLDS if t.section == section}
            for key in sorted(set(table) - known):
                problems.append(f"{section}.{key}: unknown key; [{section}] takes {', '.join(sorted(known))}")
    problems += _cross_checks(values)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise RulesError(f"supervision rules {source}: {len(problems)} problem(s):\n{listed}")
    return Rules(presence=MappingProxyType(presence), source=source, **values)


def load_rules(path: str | Path | None = None) -> Rules:
    """The rules of the file at `path`, or the packaged defaults for None or "". Raises
    RulesError (also for a file that cannot be read)."""
    if not path:
        return default_rules()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"supervision rules {path}: cannot be read: {exc}") from None
    return parse_rules(text, str(path))


def default_text() -> str:
    """The packaged rules file, the one to copy and edit."""
    return resources.files("lmg.server.supervision").joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")


@cache
def default_rules() -> Rules:
    return parse_rules(default_text(), f"(packaged {DEFAULT_RULES_FILE})")


def _check(threshold: Threshold, value: object) -> tuple[float, str | None]:
    # bool is an int in Python, and `true` in a rules file is a mistake, never a count
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0, f"use {threshold.accepted()}"
    if threshold.whole and not isinstance(value, int):
        return 0, f"use {threshold.accepted()}"
    if not threshold.low <= value <= threshold.high:
        return 0, f"out of range; use {threshold.accepted()}"
    return value, None


def _cross_checks(values: Mapping[str, Any]) -> list[str]:
    problems = []
    if values.get("min_punches") == 1 and values.get("min_span_hours", 0) > 0:
        problems.append("valid_day.min_span_hours: must be 0 when valid_day.min_punches is 1 (one punch spans no "
                        "time, so no day would be valid)")
    month, year = values.get("leave_days_per_month"), values.get("leave_days_per_year")
    if month is not None and year is not None and month > year:
        problems.append(f"leave.days_per_month = {month}: more than leave.days_per_year = {year}")
    return problems


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)
