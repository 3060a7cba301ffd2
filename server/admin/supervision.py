"""`/api/v1/warnings`, project attendance calendars, bid awards and personnel changes: the
supervision of key personnel (issue 15; docs/supervision.md is the design).

Who sees what (api.py `ApiRequest`, lmg.server.supervision.access):
- A supervisor's token sees the warnings, projects, awards and attendance of the regions its
  region covers; anything else answers 404, as an unknown id or code does. An operator's
  token sees everything.
- Closing a warning is a supervisor's decision: a 住建 token whose region covers the
  warning's **current** owner (`access.may_close`: a county at level 1, the city at levels
  1-2, the province at any level). 人社 reads warnings, attendance and rosters but closes
  none (403), and records no bid award or personnel change (403): those are the
  construction bureau's records. An operator's token closes none either (403): it is
  nobody's bureau.
- Resident ID numbers are masked (620102********4516) unless the token has `pii`; a filter
  by ID number takes the full number either way (it finds records, it shows nothing).

Every change (an award imported, a change recorded, a warning closed) is written to the
audit log with the token's name; a closure also appends to the warning's history, which is
never rewritten.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue

from lmg.protocol.identity import mask_id_number
from lmg.protocol.posts import KEY_POSTS, Post
from lmg.protocol.regions import all_regions, bureau_for
from lmg.protocol.roster_file import china_date
from lmg.protocol.warning_codes import Department, Disposition
from lmg.server.admin.api import (
    NOWHERE,
    ApiError,
    ApiRequest,
    ApiRoutes,
    Output,
    Page,
    PageQuery,
    RegionFilter,
    Strict,
    cursor_value,
    one_of,
)
from lmg.server.admin.projects import CODE, TEXT, ProjectPath, scoped_project
from lmg.server.supervision.rules import RuleCode
from lmg.storage import (
    BidAward,
    KeyPerson,
    PersonnelChange,
    UnknownProject,
    UnknownWarning,
    WarningClosed,
    WarningEvent,
    WarningRecord,
)

routes = ApiRoutes()
TAG = "supervision"

ID_NUMBER = r"^\d{17}[\dX]$"
_REGION_CODES = list[JsonValue](sorted(r.code for r in all_regions()))
_KEY_POST_CODES = list[JsonValue](p.code for p in KEY_POSTS)
_RULE_CODES = list[JsonValue](str(rule) for rule in RuleCode)
_NOTE = TEXT.replace("+$", "*$")  # printable, as the store keeps notes




def _masked(id_number: str | None, pii: bool) -> str | None:
    return id_number if pii or id_number is None else mask_id_number(id_number)


# --- warnings --------------------------------------------------------------------------------------


class WarningQuery(PageQuery):
    region: RegionFilter = Field(None, pattern=r"^\d{6}$", description="this region and the regions below it "
                                 "(lmg.protocol.regions), within the token's own",
                                 json_schema_extra={"enum": _REGION_CODES})
    level: int | None = Field(None, ge=1, le=3, description="1 county, 2 city, 3 province")
    rule: Annotated[str | None, one_of(_RULE_CODES, "rule")] = Field(
        None, description="the rule (docs/supervision.md)", json_schema_extra={"enum": _RULE_CODES})
    state: Literal["open", "resolved", "closed"] | None = None
    project: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
                                description="project code")
    worker: str | None = Field(None, pattern=ID_NUMBER, description="resident ID number (full)")
    period_from: date | None = Field(None, description="periods that end on or after this day")
    period_to: date | None = Field(None, description="periods that start on or before this day")


class Bureau(Output):
    level: int
    region: str
    name: str


class WarningOut(Output):
    id: int = Field(description="the cursor")
    rule: str
    project: str
    region: str = Field(description="the project's region when the warning opened")
    worker_id: str | None = Field(description="resident ID number, masked without the pii scope")
    post: str | None = Field(description="a key post code (lmg.protocol.posts)")
    period_start: date
    period_end: date
    figures: dict[str, Any] = Field(description="valid_days, construction_days, rate, days, ... "
                                                "(docs/supervision.md)")
    level: int = Field(description="1 county, 2 city, 3 province")
    owner: Bureau = Field(description="the bureau that owns the warning at its level")
    state: str = Field(description="open, resolved or closed")
    opened_at_ms: int
    level_since_ms: int
    updated_at_ms: int
    resolved_at_ms: int | None
    closed_at_ms: int | None
    disposition: str | None = Field(description="interview, rectification, penalty-points, public-notice, "
                                                "false-alarm")
    note: str
    closed_by: str
    version: int


class EventOut(Output):
    id: int
    at_ms: int
    event: str = Field(description="opened, figures_changed, escalated, resolved, reopened, closed")
    level: int
    state: str
    by: str = Field(description="lmg (the evaluation, the escalation) or the supervisor's token")
    detail: dict[str, Any]


class WarningDetail(WarningOut):
    bureaus: list[Bureau] = Field(description="the owner at each level: county, city, province")
    history: list[EventOut] = Field(description="every change, oldest first; appended, never rewritten")


class WarningPath(Strict):
    id: int = Field(ge=1, le=2**63 - 1)


class CloseBody(Strict):
    disposition: Annotated[str, one_of(list[JsonValue](d.value for d in Disposition), "disposition")] = Field(
        description="约谈 interview, 责令整改 rectification, 记分 penalty-points, 通报 "
                                         "public-notice, 误报 false-alarm (needs a note saying why)",
                             json_schema_extra={"enum": list[JsonValue](d.value for d in Disposition)})
    note: str = Field("", max_length=1024, pattern=_NOTE, description="what was done, or why it is a false alarm")


def _bureau(region_code: str, level: int) -> Bureau:
    node = bureau_for(region_code, level)
    return Bureau(level=level, region=node.code, name=node.name)


# The figures of a double-post warning name the person's other projects, which may lie in
# another region: a token that cannot see one gets how many there are, not their codes.
OTHER_PROJECTS, ELSEWHERE = "other_projects", "other_projects_outside_your_region"


def _other_projects(value: Any) -> set[str]:
    """Every project code under an `other_projects` key anywhere in `value` (figures, an
    event's detail with figures before and after)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == OTHER_PROJECTS and isinstance(inner, list):
                found |= {code for code in inner if isinstance(code, str)}
            else:
                found |= _other_projects(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= _other_projects(inner)
    return found


def _redacted(value: Any, hidden: Collection[str]) -> Any:
    """`value` with the `hidden` codes taken out of its `other_projects` lists and counted."""
    if not hidden:
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            if key == OTHER_PROJECTS and isinstance(inner, list):
                out[key] = [code for code in inner if code not in hidden]
                out[ELSEWHERE] = len(inner) - len(out[key])
            else:
                out[key] = _redacted(inner, hidden)
        return out
    if isinstance(value, list):
        return [_redacted(inner, hidden) for inner in value]
    return value


async def hidden_projects(request: ApiRequest, *values: Any) -> set[str]:
    """The projects named in `values`' `other_projects` that the token's region does not cover."""
    if request.region is None:
        return set()
    hidden = set()
    for code in sorted(_other_projects(list(values))):
        project = await request.store.get_project(code)
        if project is None or not request.sees(project.region_code):
            hidden.add(code)
    return hidden


def warning_fields(w: WarningRecord, pii: bool, hidden: Collection[str] = ()) -> dict[str, Any]:
    return dict(id=w.id, rule=w.rule, project=w.project_code, region=w.region_code,
                worker_id=_masked(w.worker_id, pii), post=w.post, period_start=w.period_start,
                period_end=w.period_end, figures=_redacted(w.figures, hidden), level=w.level,
                owner=_bureau(w.region_code, w.level),
                state=str(w.state), opened_at_ms=w.opened_at_ms, level_since_ms=w.level_since_ms,
                updated_at_ms=w.updated_at_ms, resolved_at_ms=w.resolved_at_ms, closed_at_ms=w.closed_at_ms,
                disposition=None if w.disposition is None else str(w.disposition), note=w.note,
                closed_by=w.closed_by, version=w.version)


async def warning_detail(request: ApiRequest, w: WarningRecord) -> WarningDetail:
    """The warning with its bureaus and history, as the token may see them."""
    history = await request.store.warning_history(w.id)
    hidden = await hidden_projects(request, w.figures, [e.detail for e in history])
    return WarningDetail(**warning_fields(w, request.has_scope("pii"), hidden),
                         bureaus=[_bureau(w.region_code, n) for n in (1, 2, 3)],
                         history=[EventOut(id=e.id, at_ms=e.at_ms, event=str(e.kind), level=e.level,
                                           state=str(e.state), by=e.by, detail=_redacted(e.detail, hidden))
                                  for e in history])


async def scoped_warning(request: ApiRequest, warning_id: int) -> WarningRecord:
    """The warning, if it exists and the token's region covers its project's; else 404."""
    warning = await request.store.get_warning(warning_id)
    if warning is None or not request.sees(warning.region_code):
        raise ApiError(404, "not_found", f"no warning {warning_id}; GET /api/v1/warnings lists them")
    return warning


@routes.route("GET", "/api/v1/warnings", scope="read", tag=TAG, summary="list warnings",
              query_model=WarningQuery, response_model=Page[WarningOut], errors=(400,),
              description="In id order, within the token's region; filter by region, level, rule, state, project, "
                          "person and period (a window that ends before it starts holds nothing). Resident ID "
                          "numbers are masked unless the token has `pii`.")
async def list_warnings(request: ApiRequest) -> Page[WarningOut]:
    q: WarningQuery = request.query
    scope = request.list_scope(q.region)
    if scope == NOWHERE or (q.period_from and q.period_to and q.period_to < q.period_from):
        return Page[WarningOut](items=[], next=None)
    rows = await request.store.list_warnings(region_scope=scope, project_code=q.project, worker_id=q.worker,
                                             rule=q.rule, state=q.state, level=q.level, period_from=q.period_from,
                                             period_to=q.period_to, after_id=cursor_value(q.after), limit=q.limit)
    pii = request.has_scope("pii")
    hidden = await hidden_projects(request, [w.figures for w in rows])
    return Page[WarningOut](items=[WarningOut(**warning_fields(w, pii, hidden)) for w in rows],
                            next=str(rows[-1].id) if len(rows) == q.limit else None)


@routes.route("GET", "/api/v1/warnings/{id}", scope="read", tag=TAG, summary="one warning with its history",
              path_model=WarningPath, response_model=WarningDetail, errors=(404,),
              description="With the bureau that owns each level and the whole history.")
async def get_warning(request: ApiRequest) -> WarningDetail:
    return await warning_detail(request, await scoped_warning(request, request.path.id))


@routes.route("POST", "/api/v1/warnings/{id}/close", scope="write", tag=TAG, summary="close a warning",
              path_model=WarningPath, body_model=CloseBody, response_model=WarningDetail, errors=(400, 404, 409, 415),
              description="A 住建 supervisor whose region covers the warning's current owner closes it with a "
                          "disposition (a false alarm needs a note saying why); 403 for 人社, for an operator's "
                          "token and for a region that does not own the warning at its level; 409 if it is closed "
                          "already (a closure is final). Appended to its history and audited.")
async def close_warning(request: ApiRequest) -> WarningDetail:
    from lmg.server.supervision.access import Supervisor, may_close

    body: CloseBody = request.body
    warning = await scoped_warning(request, request.path.id)
    department, region = request.department, request.region
    if department is None or region is None:
        raise ApiError(403, "forbidden", "closing a warning is a supervisor's decision: use a 住建 token with its "
                                         "region (lmg token create --department 住建 --region CODE)")
    if not may_close(Supervisor(department, region), warning.region_code, warning.level):
        if department != Department.CONSTRUCTION:
            raise ApiError(403, "forbidden", "人社 reads warnings about key personnel but does not close them: "
                                             "their supervision is 住建's")
        owner = bureau_for(warning.region_code, warning.level)
        raise ApiError(403, "forbidden", f"warning {warning.id} is at level {warning.level}, owned by {owner.code} "
                                         f"{owner.name}; region {region} does not cover it, so it cannot close it")
    try:
        closed = await request.store.close_warning(warning.id, body.disposition, note=body.note, by=request.actor,
                                                   now_ms=request.gateway.now_ms())
    except WarningClosed as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except UnknownWarning:
        raise ApiError(404, "not_found", f"no warning {warning.id}") from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    await request.store.audit("warning_closed", str(warning.id),
                              {"disposition": body.disposition, "level": warning.level, "by": request.actor},
                              request.peer)
    return await warning_detail(request, closed)


# --- the attendance calendar of a project -----------------------------------------------------------


class AttendanceQuery(Strict):
    month: str = Field(pattern=r"^(19|20)\d\d-(0[1-9]|1[0-2])$", description="YYYY-MM")


class DayOut(Output):
    day: date
    punches: int
    first_punch_ms: int | None
    last_punch_ms: int | None
    valid: bool = Field(description="a valid day: enough punches, far enough apart (the rules file)")
    construction_day: bool = Field(description="a construction day of this person under the commitment")
    excused_leave: bool = Field(description="approved leave within its caps: not a construction day")


class PersonAttendance(Output):
    post: str
    post_name: str
    name: str
    id_number: str = Field(description="masked without the pii scope")
    committed_from: date
    committed_until: date | None = Field(description="the first day no longer committed (a change), null: still")
    required_share: float
    valid_days: int = Field(description="valid days among the person's construction days")
    construction_days: int
    rate: float | None = Field(description="valid_days / construction_days; null without construction days")
    days: list[DayOut] = Field(description="every day of the month up to `through`")


class AttendanceOut(Output):
    project: str
    region: str
    month: str
    through: date | None = Field(description="the last day counted (today for the running month); null: the "
                                             "month has not begun")
    construction_days: int = Field(description="the project's construction days up to `through`")
    people: list[PersonAttendance] = Field(description="the committed key personnel (bid award and changes)")


def _rules(request: ApiRequest) -> Any:
    """The rules the gateway evaluates with; on a node that does not evaluate (`supervision`
    off), the `supervision_rules_file` setting's, read once (a new file takes a restart)."""
    schedule = getattr(request.gateway, "supervision", None)
    if schedule is not None:
        return schedule.rules
    return _rules_file(request.gateway.settings.gateway.supervision_rules_file)


@functools.lru_cache(maxsize=4)
def _rules_file(path: str) -> Any:
    from lmg.server.supervision.rules import load_rules

    return load_rules(path or None)


async def attendance_calendar(store: Any, rules: Any, project: Any, month_text: str, today: date,
                              pii: bool) -> AttendanceOut:
    """The calendar of `project`'s committed key personnel in a month, as the evaluation
    counts it (lmg.server.supervision.calendar), read from the store."""
    from lmg.server.supervision import calendar as cal
    from lmg.server.supervision import facts

    month = cal.Month.parse(month_text)
    through = min(month.last, today)
    code = project.code
    if through < month.first:
        return AttendanceOut(project=code, region=project.region_code, month=str(month), through=None,
                             construction_days=0, people=[])
    since = date(month.first.year, 1, 1)  # leave caps count from 1 January
    stops = [facts.StopWork(s.project_code, s.first_day, s.last_day)
             for s in await store.list_stop_work(first_day=since, last_day=through, project_codes=[code])]
    pauses = [p.day for p in await store.list_pause_days(since, through)]
    calendar = cal.ProjectCalendar(facts.ProjectFacts(code, project.region_code, project.start_date,
                                                      project.end_date), stops, pauses)
    project_days = calendar.construction_days(month.first, through)
    leaves = await store.list_leave(first_day=since, last_day=through, project_codes=[code])
    rows = await store.attendance_days([code], month.first, through)
    by_person = cal.merge_days(facts.DayAttendance(r.project_code, r.worker_id, r.day, r.punches, r.first_punch_ms,
                                                   r.last_punch_ms) for r in rows)
    held: dict[tuple[str, str], list[Any]] = {}
    for c in await store.key_personnel([code], month.first, through):
        held.setdefault((c.post, c.id_number), []).append(c)
    people = []
    for (post_code, who), commitments in sorted(held.items()):
        post = Post.parse(post_code)
        mine_leave = [facts.Leave(v.project_code, v.id_number, v.first_day, v.last_day) for v in leaves
                      if v.id_number == who]
        leave = cal.leave_days(calendar, mine_leave, rules, through) if mine_leave else cal.NO_LEAVE
        intervals = [(c.from_date, c.to_date_exclusive) for c in commitments]
        mine = cal.person_days(project_days, intervals, leave)
        by_day = by_person.get((code, who), {})
        valid = cal.valid_days(by_day, rules)
        present = sum(1 for day in mine if day in valid)
        mine_set = set(mine)
        days = []
        for day in cal.days(month.first, through):
            row = by_day.get(day)
            days.append(DayOut(day=day, punches=row.punches if row else 0, first_punch_ms=row.first_ms if row else None,
                               last_punch_ms=row.last_ms if row else None, valid=day in valid,
                               construction_day=day in mine_set, excused_leave=day in leave.excused))
        last = commitments[-1]
        people.append(PersonAttendance(
            post=post.code, post_name=post.info.name_zh, name=last.name, id_number=_masked(who, pii) or "",
            committed_from=min(c.from_date for c in commitments),
            committed_until=None if any(c.to_date_exclusive is None for c in commitments)
            else max(c.to_date_exclusive for c in commitments),
            required_share=float(rules.required_share(post)), valid_days=present, construction_days=len(mine),
            rate=round(present / len(mine), 4) if mine else None, days=days))
    return AttendanceOut(project=code, region=project.region_code, month=str(month), through=through,
                         construction_days=len(project_days), people=people)


@routes.route("GET", "/api/v1/projects/{code}/attendance", scope="read", tag=TAG,
              summary="the attendance calendar of the project's key personnel", path_model=ProjectPath,
              query_model=AttendanceQuery, response_model=AttendanceOut, errors=(400, 404),
              description="Per committed key person: every day of the month with its punches, whether it is a valid "
                          "day and a construction day, and the month's valid days, construction days and rate, as "
                          "the evaluation counts them. The running month counts up to today (China).")
async def project_attendance(request: ApiRequest) -> AttendanceOut:
    project = await scoped_project(request, request.path.code)
    today = china_date(request.gateway.now_ms())
    return await attendance_calendar(request.store, _rules(request), project, request.query.month, today,
                                     request.has_scope("pii"))


# --- bid awards and personnel changes -----------------------------------------------------------------


class KeyPersonIn(Strict):
    post: Annotated[str, one_of(_KEY_POST_CODES, "post")] = Field(description="a key post code (lmg.protocol.posts)",
                                                                  json_schema_extra={"enum": _KEY_POST_CODES})
    id_number: str = Field(pattern=ID_NUMBER, description="resident ID number (GB 11643 check digit)")
    name: str = Field(min_length=1, max_length=85, pattern=TEXT)
    certificate_no: str = Field("", max_length=128, pattern=_NOTE, description="e.g. 注册建造师 certificate")


class BidAwardIn(Strict):
    notice_no: str = Field(min_length=1, max_length=64, pattern=TEXT, description="中标通知书编号")
    project: str = CODE
    enterprise: str = Field(min_length=1, max_length=128, pattern=TEXT, description="the winning enterprise")
    uscc: str = Field(pattern=r"^[0-9A-HJ-NPQRTUWXY]{18}$", description="its unified social credit code")
    award_date: date
    personnel: list[KeyPersonIn] = Field(min_length=1, max_length=200)


class KeyPersonOut(Output):
    post: str
    id_number: str = Field(description="masked without the pii scope")
    name: str
    certificate_no: str


class BidAwardOut(Output):
    notice_no: str
    project: str
    enterprise: str
    uscc: str
    award_date: date
    imported_at_ms: int
    personnel: list[KeyPersonOut]


class BidAwardImported(BidAwardOut):
    outcome: str = Field(description="added, updated (a correction of the award as imported) or unchanged")


class ChangeIn(Strict):
    project: str = CODE
    post: Annotated[str, one_of(_KEY_POST_CODES, "post")] = Field(json_schema_extra={"enum": _KEY_POST_CODES},
                                                                  description="the key post whose person changes")
    old_id_number: str = Field(pattern=ID_NUMBER)
    new_id_number: str = Field(pattern=ID_NUMBER)
    new_name: str = Field(min_length=1, max_length=85, pattern=TEXT)
    new_certificate_no: str = Field("", max_length=128, pattern=_NOTE)
    approved_on: date = Field(description="from this day the new person holds the post")
    approval_ref: str = Field(min_length=1, max_length=128, pattern=TEXT, description="the approval's reference (文号)")


class ChangeOut(Output):
    id: int
    project: str
    post: str
    old_id_number: str = Field(description="masked without the pii scope")
    new_id_number: str = Field(description="masked without the pii scope")
    new_name: str
    new_certificate_no: str
    approved_on: date
    approval_ref: str
    recorded_at_ms: int


class ChangeRecorded(ChangeOut):
    outcome: str = Field(description="added, updated or unchanged")


class ProjectAwards(Output):
    awards: list[BidAwardOut]
    changes: list[ChangeOut] = Field(description="approved personnel changes, by approval date")


def award_fields(a: BidAward, pii: bool) -> dict[str, Any]:
    return dict(notice_no=a.notice_no, project=a.project_code, enterprise=a.enterprise, uscc=a.enterprise_uscc,
                award_date=a.award_date, imported_at_ms=a.imported_at_ms,
                personnel=[KeyPersonOut(post=p.post, id_number=_masked(p.id_number, pii) or "", name=p.name,
                                        certificate_no=p.certificate_no) for p in a.personnel])


def change_fields(c: PersonnelChange, pii: bool) -> dict[str, Any]:
    return dict(id=c.id, project=c.project_code, post=c.post, old_id_number=_masked(c.old_id_number, pii) or "",
                new_id_number=_masked(c.new_id_number, pii) or "", new_name=c.new_name,
                new_certificate_no=c.new_certificate_no, approved_on=c.approved_on, approval_ref=c.approval_ref,
                recorded_at_ms=c.recorded_at_ms)


def _construction_only(request: ApiRequest) -> None:
    if request.department is not None and request.department != Department.CONSTRUCTION:
        raise ApiError(403, "forbidden", "bid awards and personnel changes are the construction bureau's (住建) "
                                         "records; a 人社 token reads them but does not record them")


@routes.route("POST", "/api/v1/bid-awards", scope="write", tag=TAG, summary="import a bid award",
              body_model=BidAwardIn, response_model=BidAwardImported, errors=(400, 404, 409, 415),
              description="Idempotent by notice number: the same award again is unchanged, one with other values "
                          "replaces it (a correction; a change of person is a personnel change). The project must "
                          "exist and be in the token's region (404). 403 for 人社. Audited.")
async def import_bid_award(request: ApiRequest) -> BidAwardImported:
    body: BidAwardIn = request.body
    _construction_only(request)
    await scoped_project(request, body.project)
    existing = await request.store.get_bid_award(body.notice_no)
    if existing is not None and existing.project_code != body.project:
        # a notice names one award of one project: re-importing it under another project would
        # move it, possibly out of another region's sight
        raise ApiError(409, "conflict", f"notice {body.notice_no} is the award of another project; a notice number "
                                        "names one award (correct its project through the operators)")
    award = BidAward(body.notice_no, body.project, body.enterprise, body.uscc, body.award_date,
                     tuple(KeyPerson(p.post, p.id_number, p.name, p.certificate_no) for p in body.personnel))
    try:
        stored, outcome = await request.store.import_bid_award(award)
    except UnknownProject:
        raise ApiError(404, "not_found", f"no project {body.project}; GET /api/v1/projects lists them") from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    await request.store.audit("bid_award_imported", stored.notice_no,
                              {"project": stored.project_code, "outcome": outcome, "people": len(stored.personnel),
                               "by": request.actor}, request.peer)
    return BidAwardImported(**award_fields(stored, request.has_scope("pii")), outcome=outcome)


@routes.route("GET", "/api/v1/projects/{code}/bid-awards", scope="read", tag=TAG,
              summary="the project's bid awards and personnel changes", path_model=ProjectPath,
              response_model=ProjectAwards, errors=(404,),
              description="Resident ID numbers are masked unless the token has `pii`.")
async def project_awards(request: ApiRequest) -> ProjectAwards:
    project = await scoped_project(request, request.path.code)
    pii = request.has_scope("pii")
    awards = await request.store.list_bid_awards(project.code)
    changes = await request.store.list_personnel_changes(project.code)
    return ProjectAwards(awards=[BidAwardOut(**award_fields(a, pii)) for a in awards],
                         changes=[ChangeOut(**change_fields(c, pii)) for c in changes])


@routes.route("POST", "/api/v1/personnel-changes", scope="write", tag=TAG, summary="record a personnel change",
              body_model=ChangeIn, response_model=ChangeRecorded, errors=(400, 404, 415),
              description="An approved change (变更) of a key post's person: from `approved_on` the new person holds "
                          "the post and the old one's obligation ends. Idempotent by (project, post, old, new, "
                          "approval date). The project must be in the token's region (404). 403 for 人社. Audited.")
async def record_change(request: ApiRequest) -> ChangeRecorded:
    body: ChangeIn = request.body
    _construction_only(request)
    await scoped_project(request, body.project)
    change = PersonnelChange(body.project, body.post, body.old_id_number, body.new_id_number, body.new_name,
                             body.approved_on, body.approval_ref, body.new_certificate_no)
    try:
        stored, outcome = await request.store.record_personnel_change(change)
    except UnknownProject:
        raise ApiError(404, "not_found", f"no project {body.project}; GET /api/v1/projects lists them") from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    await request.store.audit("personnel_change_recorded", stored.project_code,
                              {"id": stored.id, "post": stored.post, "outcome": outcome,
                               "new": mask_id_number(stored.new_id_number), "by": request.actor}, request.peer)
    return ChangeRecorded(**change_fields(stored, request.has_scope("pii")), outcome=outcome)

