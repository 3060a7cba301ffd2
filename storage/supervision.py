"""What both stores share for the supervision of key personnel: checks, day arithmetic, the
commitment intervals, the warning state table and the plans of warning changes. Pure: no
SQL, no I/O, no clock (the caller passes `now_ms`).

Rules kept here, so that SQLite and PostgreSQL keep them identically:

- Days are dates in China (Asia/Shanghai: UTC+8 all year, no daylight saving since 1991);
  a punch at 23:59 and one at 00:01 Beijing time fall on two days. In SQL a punch's day is
  the integer `(punch_time_ms + CHINA_OFFSET_MS) / DAY_MS` (days since 1970-01-01 in China).
- A commitment (who holds a key post) starts at the award date; an approved change ends
  the old person's on its approval date (exclusive) and starts the new person's there.
  Changes of one (project, post) apply in approval-date order, then in the order recorded.
- A warning moves only along lmg.protocol.warning_codes' `TRANSITIONS`, a table of (state,
  what happened) -> (state after, event to append); a pair not in the table is refused in
  one place (`transition`). Every change appends exactly one event and bumps the version.
- `plan_apply` makes an evaluation idempotent: the same findings for the same scope give
  no change the second time, whatever order they come in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

import orjson

from lmg.protocol.identity import is_valid_id_number
from lmg.protocol.posts import Post
from lmg.protocol.warning_codes import TRANSITIONS, Happening
from lmg.storage.api import (
    _USCC, TEXT_CHARS, ApplyResult, ApprovedLeave, AttendanceDay, BidAward, Commitment, Disposition,
    EvaluationScope, KeyPerson, PauseDay, PersonnelChange, StopWork, WarningEvent, WarningEventKind,
    WarningFinding, WarningRecord, WarningState, _text, check_day, check_project_code,
)
from lmg.storage.errors import WarningClosed

# ------------------------------------------------------------------------------- days

DAY_MS = 86_400_000
CHINA_OFFSET_MS = 8 * 3_600_000  # UTC+8
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# How far before a day's first millisecond the punches of that day may have been received.
# A terminal's clock may run ahead of the server's by `max_future_skew_s` (300 s by
# default, server/gateway/session.py), and the receive stamps of group commits (one clock
# per node on PostgreSQL) are in id order only to within clock corrections: an hour covers
# both with room. Raising max_future_skew_s past an hour means raising this too.
RECEIVE_SLACK_MS = 3_600_000


def day_number(time_ms: int) -> int:
    """The day in China of a Unix time, as days since 1970-01-01."""
    return (time_ms + CHINA_OFFSET_MS) // DAY_MS


def number_of(day: date) -> int:
    """A China date as days since 1970-01-01 (the inverse of `day_of`)."""
    return day.toordinal() - _EPOCH_ORDINAL


def day_of(number: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + number)


def day_start_ms(day: date) -> int:
    """Unix ms of 00:00 of `day` in China."""
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY_MS - CHINA_OFFSET_MS


def search_first_received(
        first_id: int, last_id: int, since_ms: int) -> Generator[int, tuple[int, int] | None, int]:
    """Find a lower bound of the ids of punches received at or after `since_ms`.

    Sans-I/O binary search over the punches' primary key: it yields an id to probe and is
    sent back the first stored punch at or after that id as (id, received_at_ms), or None
    if there is none; it returns an id such that every punch received at or after
    `since_ms` has an id at least that. It relies on ids being given in receive order (to
    within RECEIVE_SLACK_MS, which the caller subtracts from `since_ms`): one probe per
    halving, 27 for 100 million ids, each a primary-key seek.
    """
    low, high = first_id, last_id + 1  # the answer lies in [low, high]; high: none received
    while low < high:
        middle = (low + high) // 2
        found = yield middle
        if found is None:
            high = middle
            continue
        found_id, received_at_ms = found
        if received_at_ms >= since_ms:
            high = middle
        else:
            low = found_id + 1  # ids between middle and found_id do not exist
    return low


def drive_search(search: Generator[int, tuple[int, int] | None, int],
                 probe: Callable[[int], tuple[int, int] | None]) -> int:
    """Run `search_first_received` with a synchronous probe (the SQLite reader's)."""
    try:
        asked = next(search)
        while True:
            asked = search.send(probe(asked))
    except StopIteration as done:
        result: int = done.value
        return result


def day_range_ms(first_day: date, last_day: date) -> tuple[int, int]:
    """[since_ms, until_ms) of the days `first_day`..`last_day` in China."""
    check_days(first_day, last_day)
    return day_start_ms(first_day), day_start_ms(last_day + timedelta(days=1))


def check_days(first_day: date, last_day: date) -> None:
    check_day("first_day", first_day)
    check_day("last_day", last_day)
    if last_day < first_day:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")


# ------------------------------------------------------------------------------ checks

_RULE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
NOTICE_NO_CHARS = 64
FIGURES_MAX_BYTES = 4096  # a warning's numbers, not a report: a few dozen figures fit
NOTE_CHARS = 1024  # a supervisor's reason, read by a person
BY_CHARS = 256
MAX_PERSONNEL = 200  # key people of one award; a large project names a few dozen
STR8_NAME_CHARS = 85  # a name travels to terminals as str8: 255 bytes, 85 Chinese characters


def check_text(what: str, value: object, *, required: bool = True, chars: int = TEXT_CHARS) -> str:
    problem = _text(what, value, required=required, chars=chars)
    if problem is not None:
        raise ValueError(problem)
    assert isinstance(value, str)
    return value


def check_id_number(what: str, value: object) -> str:
    if type(value) is not str or not is_valid_id_number(value):
        raise ValueError(f"{what} {value!r}: not a valid resident ID number (18 characters, GB 11643 "
                         f"check digit, capital X)")
    return value


def key_post(what: str, value: object) -> str:
    """The code of a key post given by code or Chinese name; ValueError otherwise."""
    if type(value) is not str:
        raise ValueError(f"{what} {value!r}: must be a key post's code or Chinese name")
    try:
        post = Post.parse(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if not post.info.key_post:
        keys = ", ".join(f"{p.info.code} ({p.info.name_zh})" for p in Post if p.info.key_post)
        raise ValueError(f"{what} {value!r}: not a key post; use one of {keys}")
    return post.code


def check_rule(rule: object) -> str:
    if type(rule) is not str or not _RULE.fullmatch(rule):
        raise ValueError(f"rule {rule!r}: a rule's code, 1-64 lower-case letters, digits and '-'")
    return rule


def check_bid_award(award: BidAward) -> BidAward:
    """`award` with posts as codes and personnel in (post, id_number) order; ValueError naming
    the field (and the person) otherwise."""
    if type(award) is not BidAward:
        raise ValueError(f"import_bid_award takes a BidAward, got {type(award).__name__}")
    notice = check_text("notice_no", award.notice_no, chars=NOTICE_NO_CHARS)
    if notice != notice.strip():
        raise ValueError(f"notice_no {notice!r}: no surrounding spaces")
    check_project_code(award.project_code)
    check_text("enterprise", award.enterprise)
    if type(award.enterprise_uscc) is not str or not _USCC.fullmatch(award.enterprise_uscc):
        raise ValueError(f"enterprise_uscc {award.enterprise_uscc!r}: the winning enterprise's unified social "
                         f"credit code, 18 characters (digits and capital letters but I, O, S, V, Z)")
    check_day("award_date", award.award_date)
    if not isinstance(award.personnel, (tuple, list)) or not award.personnel:
        raise ValueError(f"bid award {notice}: personnel: name at least one committed key person")
    if len(award.personnel) > MAX_PERSONNEL:
        raise ValueError(f"bid award {notice}: {len(award.personnel)} people; at most {MAX_PERSONNEL}")
    people: dict[tuple[str, str], KeyPerson] = {}
    for person in award.personnel:
        if type(person) is not KeyPerson:
            raise ValueError(f"bid award {notice}: personnel holds {type(person).__name__}, not KeyPerson")
        who = check_id_number("id_number", person.id_number)
        try:
            post = key_post("post", person.post)
            check_text("name", person.name, chars=STR8_NAME_CHARS)
            check_text("certificate_no", person.certificate_no, required=False, chars=NOTICE_NO_CHARS)
        except ValueError as exc:
            raise ValueError(f"bid award {notice}, person {who}: {exc}") from None
        if (post, who) in people:
            raise ValueError(f"bid award {notice}, person {who}: listed twice as {post}; keep one row")
        people[(post, who)] = KeyPerson(post, who, person.name, person.certificate_no)
    return replace(award, personnel=tuple(people[k] for k in sorted(people)), imported_at_ms=0)


def same_award(a: BidAward, b: BidAward) -> bool:
    """Equal in everything an import sets (not when it was imported)."""
    return replace(a, imported_at_ms=0) == replace(b, imported_at_ms=0)


def check_personnel_change(change: PersonnelChange) -> PersonnelChange:
    if type(change) is not PersonnelChange:
        raise ValueError(f"record_personnel_change takes a PersonnelChange, got {type(change).__name__}")
    check_project_code(change.project_code)
    post = key_post("post", change.post)
    check_id_number("old_id_number", change.old_id_number)
    check_id_number("new_id_number", change.new_id_number)
    if change.old_id_number == change.new_id_number:
        raise ValueError(f"new_id_number {change.new_id_number}: the same person as old_id_number; "
                         f"a change replaces one person by another")
    check_text("new_name", change.new_name, chars=STR8_NAME_CHARS)
    check_text("new_certificate_no", change.new_certificate_no, required=False, chars=NOTICE_NO_CHARS)
    check_day("approved_on", change.approved_on)
    check_text("approval_ref", change.approval_ref)
    return replace(change, post=post, id=0, recorded_at_ms=0)


def check_period(project_code: str, first_day: date, last_day: date, reference: str) -> None:
    check_project_code(project_code)
    check_days(first_day, last_day)
    check_text("reference", reference)


def check_project_codes(project_codes: Iterable[str] | None) -> list[str] | None:
    """A set of project codes as a sorted list (None stays None: every project)."""
    if project_codes is None:
        return None
    if isinstance(project_codes, (str, bytes)):
        raise ValueError(f"project_codes {project_codes!r}: pass a collection of project codes, not one")
    codes = sorted(set(project_codes))
    for code in codes:
        check_project_code(code)
    return codes


def canonical_json(what: str, value: Mapping[str, Any], limit: int = FIGURES_MAX_BYTES) -> str:
    """`value` as JSON with sorted keys: equal figures are equal text. ValueError naming
    `what` for a value that is not a JSON object of at most `limit` bytes."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}: must be a mapping of names to JSON values, got {type(value).__name__}")
    try:
        text = orjson.dumps(dict(value), option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:
        raise ValueError(f"{what}: not JSON ({exc})") from None
    if len(text) > limit:
        raise ValueError(f"{what}: {len(text):,} bytes of JSON; at most {limit:,}")
    return text


def check_finding(finding: WarningFinding) -> WarningFinding:
    """`finding` with its figures as a plain dict and its post as a code."""
    if type(finding) is not WarningFinding:
        raise ValueError(f"apply_warnings takes WarningFinding rows, got {type(finding).__name__}")
    check_rule(finding.rule)
    check_project_code(finding.project_code)
    if finding.worker_id is not None:
        check_id_number("worker_id", finding.worker_id)
    post = None if finding.post is None else key_post("post", finding.post)
    check_day("period_start", finding.period_start)
    check_day("period_end", finding.period_end)
    if finding.period_end < finding.period_start:
        raise ValueError(f"finding {finding.key}: period_end {finding.period_end} is before period_start")
    figures = orjson.loads(canonical_json(f"finding {finding.key}: figures", finding.figures))
    return replace(finding, post=post, figures=figures)


def check_scope(scope: EvaluationScope) -> EvaluationScope:
    if type(scope) is not EvaluationScope:
        raise ValueError(f"scope: an EvaluationScope, got {type(scope).__name__}")
    if isinstance(scope.rules, (str, bytes)) or not scope.rules:
        raise ValueError("scope.rules: the set of rules the evaluation ran (at least one)")
    rules = frozenset(check_rule(r) for r in scope.rules)
    check_days(scope.first_day, scope.last_day)
    projects = check_project_codes(scope.project_codes)
    return EvaluationScope(rules, scope.first_day, scope.last_day,
                           None if projects is None else frozenset(projects))


def in_scope(scope: EvaluationScope, rule: str, project_code: str, period_start: date) -> bool:
    return (rule in scope.rules and scope.first_day <= period_start <= scope.last_day
            and (scope.project_codes is None or project_code in scope.project_codes))


def checked_findings(scope: EvaluationScope, findings: Sequence[WarningFinding]) -> list[WarningFinding]:
    if isinstance(findings, (str, bytes)) or not isinstance(findings, Sequence):
        raise ValueError("findings: a sequence of WarningFinding")
    checked = [check_finding(f) for f in findings]
    seen: set[str] = set()
    for finding in checked:
        if not in_scope(scope, finding.rule, finding.project_code, finding.period_start):
            raise ValueError(f"finding {finding.key}: outside the scope evaluated (rules, projects, "
                             f"{scope.first_day}..{scope.last_day}); widen the scope to hold it")
        if finding.key in seen:
            raise ValueError(f"finding {finding.key}: found twice in one evaluation; keep one")
        seen.add(finding.key)
    return checked


def check_by(by: object) -> str:
    return check_text("by", by, chars=BY_CHARS)


# ---------------------------------------------------------------------- commitments

@dataclass(frozen=True, slots=True)
class AwardedPerson:
    """A person of a stored award, with what the commitment rule needs of the award."""

    notice_no: str
    project_code: str
    award_date: date
    person: KeyPerson


def commitments(awarded: Iterable[AwardedPerson], changes: Iterable[PersonnelChange],
                first_day: date, last_day: date) -> list[Commitment]:
    """Who holds each committed key post of each project, as intervals that overlap
    `first_day`..`last_day`, ordered by (project, post, from_date, id_number)."""
    holding: dict[tuple[str, str], list[Commitment]] = {}
    for a in awarded:
        holding.setdefault((a.project_code, a.person.post), []).append(Commitment(
            a.project_code, a.person.post, a.person.id_number, a.person.name, a.person.certificate_no,
            a.award_date, None, a.notice_no, None))
    for change in sorted(changes, key=lambda c: (c.approved_on, c.id)):
        held = holding.setdefault((change.project_code, change.post), [])
        for index, current in enumerate(held):
            if (current.id_number == change.old_id_number and current.to_date_exclusive is None
                    and current.from_date <= change.approved_on):
                held[index] = replace(current, to_date_exclusive=change.approved_on)
        held.append(Commitment(change.project_code, change.post, change.new_id_number, change.new_name,
                               change.new_certificate_no, change.approved_on, None, None, change.id))
    end = last_day + timedelta(days=1)
    found = [c for held in holding.values() for c in held
             if c.from_date < end and (c.to_date_exclusive is None or c.to_date_exclusive > first_day)
             and (c.to_date_exclusive is None or c.to_date_exclusive > c.from_date)]
    found.sort(key=lambda c: (c.project_code, c.post, c.from_date, c.id_number))
    return found


# ------------------------------------------------------------------------- warnings

# The life cycle's table, `TRANSITIONS` ((state before, what happened) -> (state after, event
# appended)), and `Happening` are lmg.protocol.warning_codes', shared with the supervision core.
_E = WarningEventKind


def transition(warning: WarningRecord | None, happening: Happening
               ) -> tuple[WarningState | None, WarningEventKind | None]:
    """The state after `happening` and the event to append; the one place a pair outside
    TRANSITIONS is refused (WarningClosed for closing a closed warning)."""
    state = None if warning is None else warning.state
    found = TRANSITIONS.get((state, happening))
    if found is None:
        if warning is not None and happening is Happening.CLOSE:
            raise WarningClosed(warning.id, warning.disposition.value if warning.disposition else "closed")
        raise ValueError(f"warning {None if warning is None else warning.id}: {happening.value} is not "
                         f"possible in state {state}")
    return found


SYSTEM = "lmg"  # the `by` of what the evaluation and the escalation do


@dataclass(frozen=True, slots=True)
class WarningChange:
    """One warning to insert (`before` None; `after.id` is 0 until the store numbers it)
    or update, and the event that records it."""

    before: WarningRecord | None
    after: WarningRecord
    event: WarningEventKind
    by: str
    detail: dict[str, Any]


@dataclass(slots=True)
class ApplyPlan:
    changes: list[WarningChange]
    result: ApplyResult


def _changed(before: WarningRecord, now_ms: int, **fields: Any) -> WarningRecord:
    """`before` with `fields` changed at `now_ms`: the next version."""
    return replace(before, updated_at_ms=now_ms, version=before.version + 1, **fields)


def plan_apply(scope: EvaluationScope, findings: Sequence[WarningFinding],
               stored: Mapping[str, WarningRecord], regions: Mapping[str, str], now_ms: int) -> ApplyPlan:
    """The changes one evaluation makes. `findings` are checked (`checked_findings`),
    `stored` holds every stored warning in `scope` by key, `regions` the region code of
    each finding's project (a project missing there is the caller's UnknownProject)."""
    counts = {"opened": 0, "updated": 0, "reopened": 0, "resolved": 0, "unchanged": 0}
    changes: list[WarningChange] = []
    found: set[str] = set()
    for finding in findings:
        key = finding.key
        found.add(key)
        before = stored.get(key)
        figures = dict(finding.figures)
        differs = before is None or before.figures != figures or before.period_end != finding.period_end
        state, event = transition(before, Happening.FOUND_CHANGED if differs else Happening.FOUND)
        if event is None:
            counts["unchanged"] += 1
            continue
        detail: dict[str, Any] = {"figures": figures, "period_end": finding.period_end.isoformat()}
        if before is None:
            new = WarningRecord(0, key, finding.rule, finding.project_code, regions[finding.project_code],
                                finding.worker_id, finding.post, finding.period_start, finding.period_end,
                                figures, 1, WarningState.OPEN, now_ms, now_ms, now_ms, None, None, None, "",
                                "", 1, 0)
            changes.append(WarningChange(None, new, event, SYSTEM, detail))
            counts["opened"] += 1
            continue
        assert state is not None
        if event is _E.REOPENED:
            after = _changed(before, now_ms, state=state, figures=figures, period_end=finding.period_end,
                             level_since_ms=now_ms, resolved_at_ms=None)
            counts["reopened"] += 1
        else:
            detail["before"] = {"figures": before.figures, "period_end": before.period_end.isoformat()}
            after = _changed(before, now_ms, figures=figures, period_end=finding.period_end)
            counts["updated"] += 1
        changes.append(WarningChange(before, after, event, SYSTEM, detail))
    for key, before in sorted(stored.items(), key=lambda item: item[1].id):
        if key in found or not in_scope(scope, before.rule, before.project_code, before.period_start):
            continue
        state, event = transition(before, Happening.NOT_FOUND)
        if event is None:
            continue
        assert state is not None
        changes.append(WarningChange(before, _changed(before, now_ms, state=state, resolved_at_ms=now_ms),
                                     event, SYSTEM, {}))
        counts["resolved"] += 1
    return ApplyPlan(changes, ApplyResult(**counts))


def plan_escalation(due: Iterable[WarningRecord], now_ms: int, level2_after_ms: int,
                    level3_after_ms: int) -> list[WarningChange]:
    """The level changes of open warnings whose wait ran out (see Store.escalate_warnings);
    a warning two levels behind gets two changes, each from its due time."""
    check_wait("level2_after_ms", level2_after_ms)
    check_wait("level3_after_ms", level3_after_ms)
    changes: list[WarningChange] = []
    for warning in due:
        current = warning
        while current.level < 3:
            wait = level2_after_ms if current.level == 1 else level3_after_ms
            due_at = current.level_since_ms + wait
            if due_at > now_ms:
                break
            state, event = transition(current, Happening.DUE)
            assert event is not None and state is not None
            after = _changed(current, now_ms, level=current.level + 1, level_since_ms=due_at)
            changes.append(WarningChange(current, after, event, SYSTEM,
                                         {"from": current.level, "to": after.level, "due_at_ms": due_at}))
            current = after
    return changes


def check_wait(what: str, value: int) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} {value!r}: a wait in ms, an int of 0 or more (7 days is 604,800,000)")


def plan_close(warning: WarningRecord, disposition: Disposition | str, note: str, by: str,
               now_ms: int) -> WarningChange:
    """The closing of `warning`; WarningClosed if it is closed, ValueError naming the field."""
    chosen = Disposition.parse(disposition)
    check_text("note", note, required=chosen is Disposition.FALSE_ALARM, chars=NOTE_CHARS)
    check_by(by)
    state, event = transition(warning, Happening.CLOSE)
    assert state is not None and event is not None
    after = _changed(warning, now_ms, state=state, closed_at_ms=now_ms, disposition=chosen,
                     note=note, closed_by=by)
    return WarningChange(warning, after, event, by, {"disposition": chosen.value, "note": note})


def warning_filters(project_code: str | None, worker_id: str | None, rule: str | None,
                    state: WarningState | str | None, level: int | None, period_from: date | None,
                    period_to: date | None) -> list[tuple[str, Any]]:
    """The checked conditions of `list_warnings` but the region scope (the backend writes it:
    a list of covered codes is one parameter in a dialect of its own), as (condition with
    `{}` for the placeholder, value) pairs whose None values are left out."""
    if rule is not None:
        check_rule(rule)
    if state is not None:
        try:
            state = WarningState(state)
        except ValueError:
            raise ValueError(f"state {state!r}: use one of {', '.join(s.value for s in WarningState)}") from None
    if level is not None and (type(level) is not int or level not in (1, 2, 3)):
        raise ValueError(f"level {level!r}: 1 (county), 2 (city) or 3 (province)")
    if period_from is not None:
        check_day("period_from", period_from)
    if period_to is not None:
        check_day("period_to", period_to)
    return [("project_code = {}", project_code), ("worker_id = {}", worker_id), ("rule = {}", rule),
            ("state = {}", None if state is None else WarningState(state).value), ("level = {}", level),
            ("period_end >= {}", period_from), ("period_start <= {}", period_to)]


# ------------------------------------------------------------- rows, both backends

# WarningRecord's fields, in order, but `figures` (JSON) read as text on both backends.
WARNING_COLUMNS = ("id, key, rule, project_code, region_code, worker_id, post, period_start, period_end, "
                   "figures, level, state, opened_at_ms, level_since_ms, updated_at_ms, resolved_at_ms, "
                   "closed_at_ms, disposition, note, closed_by, version, forwarded_version")
# What an update of a warning writes (the key fields never change).
WARNING_UPDATE_COLUMNS = ("period_end", "figures", "level", "state", "level_since_ms", "updated_at_ms",
                          "resolved_at_ms", "closed_at_ms", "disposition", "note", "closed_by", "version")
EVENT_COLUMNS = "id, warning_id, at_ms, event, level, state, by, detail"
AWARD_COLUMNS = "notice_no, project_code, enterprise, enterprise_uscc, award_date, imported_at_ms"
PERSON_COLUMNS = "notice_no, post, id_number, name, certificate_no"
CHANGE_COLUMNS = ("id, project_code, post, old_id_number, new_id_number, new_name, new_certificate_no, "
                  "approved_on, approval_ref, recorded_at_ms")
LEAVE_COLUMNS = "id, project_code, id_number, first_day, last_day, reference, recorded_at_ms"
STOP_COLUMNS = "id, project_code, first_day, last_day, reference, recorded_at_ms"
PAUSE_COLUMNS = "day, reason, recorded_at_ms"
KEY_POST_CODES = tuple(post.code for post in Post if post.info.key_post)


def as_day(value: date | str) -> date:
    """A stored day: PostgreSQL gives a date, SQLite the ISO text it was written as."""
    return value if isinstance(value, date) else date.fromisoformat(value)


def warning_record(row: Sequence[Any]) -> WarningRecord:
    """A WarningRecord from a row of WARNING_COLUMNS."""
    return WarningRecord(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], as_day(row[7]), as_day(row[8]),
        orjson.loads(row[9]), row[10], WarningState(row[11]), row[12], row[13], row[14], row[15], row[16],
        None if row[17] is None else Disposition(row[17]), row[18], row[19], row[20], row[21])


def warning_update_values(w: WarningRecord) -> tuple[Any, ...]:
    """The values of WARNING_UPDATE_COLUMNS for `w` (dates as dates, figures as JSON text)."""
    return (w.period_end, canonical_json("figures", w.figures), w.level, w.state.value, w.level_since_ms,
            w.updated_at_ms, w.resolved_at_ms, w.closed_at_ms,
            None if w.disposition is None else w.disposition.value, w.note, w.closed_by, w.version)


def warning_event(row: Sequence[Any]) -> WarningEvent:
    return WarningEvent(row[0], row[1], row[2], WarningEventKind(row[3]), row[4], WarningState(row[5]),
                           row[6], orjson.loads(row[7]))


def award_from_rows(award: Sequence[Any], people: Iterable[Sequence[Any]]) -> BidAward:
    """A BidAward from its row of AWARD_COLUMNS and its rows of PERSON_COLUMNS."""
    personnel = sorted((KeyPerson(p[1], p[2], p[3], p[4]) for p in people), key=lambda k: (k.post, k.id_number))
    return BidAward(award[0], award[1], award[2], award[3], as_day(award[4]), tuple(personnel), award[5])


def personnel_change(row: Sequence[Any]) -> PersonnelChange:
    return PersonnelChange(row[1], row[2], row[3], row[4], row[5], as_day(row[7]), row[8], row[6], row[0], row[9])


def same_change(a: PersonnelChange, b: PersonnelChange) -> bool:
    """Equal in what a record sets (not its id or when it was recorded)."""
    return replace(a, id=0, recorded_at_ms=0) == replace(b, id=0, recorded_at_ms=0)


def approved_leave(row: Sequence[Any]) -> ApprovedLeave:
    return ApprovedLeave(row[0], row[1], row[2], as_day(row[3]), as_day(row[4]), row[5], row[6])


def stop_work(row: Sequence[Any]) -> StopWork:
    return StopWork(row[0], row[1], as_day(row[2]), as_day(row[3]), row[4], row[5])


def pause_day(row: Sequence[Any]) -> PauseDay:
    return PauseDay(as_day(row[0]), row[1], row[2])


class DayCache(dict[int, date]):
    """Day numbers to dates, each date made once (an aggregate of a month has 31 days and
    millions of rows)."""

    def __missing__(self, number: int) -> date:
        made = self[number] = day_of(number)
        return made


def attendance_day(row: Sequence[Any], days: DayCache) -> AttendanceDay:
    """An AttendanceDay from (project_code, worker_id, day number, punches, first, last)."""
    return tuple.__new__(AttendanceDay, (row[0], row[1], days[row[2]], row[3], row[4], row[5]))


# Random row reads through the device key cost about this many times a row of a scan in
# primary-key order: the attendance aggregate reads a few projects' devices when their
# punches number less than the range's rows divided by it. A rough figure; both paths are
# right, this only picks the faster one.
DEVICE_READ_COST = 4
# Above this many devices the device path is not considered (counting their punches first
# would cost more than it saves: a province has 20,000).
DEVICE_PATH_MAX_DEVICES = 256
