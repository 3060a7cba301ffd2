"""The console's pages: sign-in, overview, warnings, projects, photos, devices, forwarding, exports.

Each page reads through the JSON API's own functions and store calls (server/admin/
supervision.py, projects.py, devices.py, forwarding.py, punches.py) as the signed-in
account's principal (app.py `api_request`), so a page and the API cannot disagree about
who sees what. Where a page needs another figure than a route gives, it asks the store
with the principal's `list_scope`: the overview's counts (`warning_counts`,
`warnings_opened`), the devices list filtered by a region and what it covers, and the
outbox counted up to `OUTBOX_CAP` (`outbox_glance`). Two differences from the API, on
purpose (issue 16):

- Anything outside the account's region is a 403 page and an audit row
  (`console_forbidden`), where the API answers 404; something that does not exist is 404.
- Pages are server-rendered HTML (Jinja2); filters and pagination swap the table in place
  with htmx (the `HX-Request` header asks for the fragment only), and work without it.

Who sees what (docs/console.md "Who sees what"):
- a supervisor (住建 or 人社): overview, warnings, projects and exports of its region;
  closes warnings when `access.may_close` says so (住建 whose region owns the level);
  photos with the account's pii flag; no devices or forwarding pages (403);
- an operator: the same pages read-only (it closes nothing), plus devices (time sync,
  roster resync) in its region, plus forwarding when its region is the province.

Lists page by keyset (the store's cursors, `PAGE` rows): `page` carries the cursors of the
pages before, each percent-encoded, comma-separated, so a[rel=prev] walks back without an offset scan; after
`MAX_TRAIL` pages the oldest cursors are dropped (prev then stops there).
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, unquote, urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from lmg.protocol import regions
from lmg.protocol.identity import mask_id_number
from lmg.protocol.posts import KEY_POSTS
from lmg.protocol.roster_file import china_date
from lmg.protocol.warning_codes import Disposition
from lmg.server.admin.api import ApiError
from lmg.server.console import accounts
from lmg.server.console.app import (
    COOKIE,
    LOGIN_COOKIE,
    SIGNED,
    WHY,
    Refused,
    Signed,
    api_request,
    audit,
    clear_cookie,
    console_of,
    redirect,
    set_cookie,
    signed,
)
from lmg.server.console.lockout import CLEAR, LockoutState, failed, succeeded
from lmg.server.supervision.calendar import Month
from lmg.server.supervision.rules import RULES
from lmg.storage import CommandState, ConsoleSession

PAGE = 50
MAX_TRAIL = 100  # cursors kept in `page`, and at most MAX_TRAIL_CHARS of them (encoded), so a
MAX_TRAIL_CHARS = 3000  # link stays well under the 8 KiB request line with the filters beside it
TREND_MONTHS = 6
# The forwarding page counts waiting records up to this: a healthy outbox holds seconds of
# punches (a province's ~170 a second), 100,000 is hours of backlog, and counting them
# reads 100,000 index entries (~10 ms); `lmg forward status` gives the exact figure.
OUTBOX_CAP = 100_000
CHINA = timezone(timedelta(hours=8))
STATE_ZH = {"open": "未处理 open", "resolved": "已消除 resolved", "closed": "已办结 closed"}
LEVEL_ZH = {1: "一级 (县区) level 1", 2: "二级 (市州) level 2", 3: "三级 (省) level 3"}
EVENT_ZH = {"opened": "开出 opened", "figures_changed": "数据变化 figures changed", "escalated": "升级 escalated",
            "resolved": "消除 resolved", "reopened": "重新开出 reopened", "closed": "办结 closed"}
COMMAND_STATE_ZH = {"queued": "待发送 pending", "sent": "已发送 sent", "acked": "已确认 acked",
                    "failed": "失败 failed", "expired": "过期 expired", "cancelled": "已取消 cancelled"}
FIGURE_ZH = {"valid_days": "有效出勤天数 valid days", "construction_days": "施工天数 construction days",
             "rate": "出勤率 rate", "required_share": "要求比例 required share"}
TIME_SYNC, ROSTER_RESYNC = "set-time", "roster-version-query"  # lmg.server.downlink.commands COMMAND_TYPES


# --- helpers ---------------------------------------------------------------------------------------------------


def china_time(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, CHINA).strftime("%Y-%m-%d %H:%M")


def add_filters(env: jinja2.Environment) -> None:
    env.filters["china_time"] = china_time
    env.filters["masked"] = lambda value: mask_id_number(value) if value else "—"
    env.globals.update(STATE_ZH=STATE_ZH, LEVEL_ZH=LEVEL_ZH, EVENT_ZH=EVENT_ZH, COMMAND_STATE_ZH=COMMAND_STATE_ZH,
                       FIGURE_ZH=FIGURE_ZH, RULE_ZH={str(code): info.name_zh for code, info in RULES.items()},
                       region_name=_region_name)


def _region_name(code: str | None) -> str:
    if not code or not regions.is_known(code):
        return code or "—"
    return regions.region(code).name


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    who = request.get(SIGNED)
    base: dict[str, Any] = {"signed": who, "csrf": who.session.csrf_token if who is not None else "",
                            "is_operator": who is not None and accounts.is_operator(who.account)}
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


def fragment(request: web.Request) -> bool:
    """An htmx request that wants the table only: not a boosted whole page, nor the history
    restore htmx sends after Back when its cache missed (that one needs the whole page)."""
    headers = request.headers
    return (bool(headers.get("HX-Request")) and not headers.get("HX-Boosted")
            and not headers.get("HX-History-Restore-Request"))


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise Refused(400, f"参数 {name} 重复 (query parameter {name!r} given {len(values)} times)")
    value = values[0].strip() if values else ""
    return value or None


def _month(text: str | None, today: date) -> Month:
    if text is None:
        return Month.of(today)
    try:
        return Month.parse(text)
    except ValueError:
        raise Refused(400, f"月份格式应为 YYYY-MM (month {text!r}: use YYYY-MM)") from None


def _trail(request: web.Request) -> list[str]:
    raw = _one(request, "page")
    if raw is None:
        return []
    parts = [unquote(part) for part in raw.split(",")]
    if len(parts) > MAX_TRAIL or any(not part or len(part) > 64 for part in parts):
        raise Refused(400, "分页参数无效，请从第一页开始 (page: not a cursor this console gave; start from page 1)")
    return parts


def pager(request: web.Request, trail: list[str], next_cursor: str | None) -> dict[str, Any]:
    """The prev/next links of a keyset page: `page` is the trail of cursors; the current
    page's own cursor is its last element (none on page 1)."""
    params = {k: v for k, v in request.query.items() if k != "page" and v}

    def link(cursors: list[str]) -> str:
        query = dict(params)
        if cursors:
            kept = [quote(cursor, safe="") for cursor in cursors[-MAX_TRAIL:]]
            while len(kept) > 1 and sum(len(k) + 1 for k in kept) > MAX_TRAIL_CHARS:
                kept.pop(0)
            query["page"] = ",".join(kept)
        return request.path + ("?" + urlencode(query) if query else "")

    return {"number": len(trail) + 1, "prev": link(trail[:-1]) if trail else None,
            "next": link([*trail, next_cursor]) if next_cursor else None}


def _api_refusal(exc: ApiError) -> Refused:
    if exc.status == 404:
        return Refused(404, f"未找到 (not found): {exc.message}")
    if exc.status == 403:
        return Refused(403, f"无权操作 (forbidden): {exc.message}", exc.message)
    return Refused(exc.status, exc.message)


def _forbidden_region(what: str, region: str) -> Refused:
    return Refused(403, f"{what}不在您的辖区内，无权查看 (outside your region)",
                   f"{what} in region {region} is outside the account's region")


def _require_operator(request: web.Request) -> Signed:
    who = signed(request)
    if not accounts.is_operator(who.account):
        raise Refused(403, "设备与转发页面仅供运维人员使用 (devices and forwarding are for operator accounts)",
                      "operator page, supervisor account")
    return who


def _today(request: web.Request) -> date:
    return china_date(console_of(request).now_ms())


def _region_options(who: Signed) -> list[tuple[str, str]]:
    scope = who.principal.region_code or regions.PROVINCE
    codes = sorted(regions.covered_codes(scope))
    return [(code, regions.region(code).name) for code in codes]


# --- sign-in ---------------------------------------------------------------------------------------------------


def _next_path(text: str | None) -> str:
    """Where to go after signing in: a /console/ path of this site, else the overview."""
    if text and text.startswith("/console/") and not text.startswith("//") and "\\" not in text \
            and not text.startswith("/console/login"):
        return text
    return "/console/"


async def login_page(request: web.Request) -> web.StreamResponse:
    return _login_form(request, error="", info=WHY.get(_one(request, "why") or "", ""), status=200)


def _login_form(request: web.Request, *, error: str, info: str, status: int, name: str = "") -> web.StreamResponse:
    token = accounts.new_csrf_token()
    response = render(request, "login.html", {"login_csrf": token, "error": error, "info": info, "name": name,
                                              "next": _next_path(_one(request, "next"))}, status=status)
    set_cookie(response, request, LOGIN_COOKIE, token)
    return response


GENERIC_FAILURE = "用户名或密码错误 (wrong name or password)"


async def login(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    form = await request.post()
    presented = form.get("csrf")
    if not accounts.same_token(presented if isinstance(presented, str) else None,
                               request.cookies.get(LOGIN_COOKIE, "") or "\0"):
        raise Refused(403, "登录表单已失效，请刷新页面后重试 (login form expired: reload the page)",
                      "login csrf cookie missing or different")
    name = str(form.get("name", "")).strip()
    password = str(form.get("password", ""))
    known = accounts.ACCOUNT_NAME.fullmatch(name) is not None
    account = await console.store.get_console_account(name) if known else None
    usable = account is not None and not account.disabled
    loop = asyncio.get_running_loop()
    now = console.now_ms()
    # only an existing account's name is written: what was typed for an unknown one may be a
    # password typed into the wrong field
    actor = f"account:{account.name}" if account is not None else "-"
    state = CLEAR
    if account is not None and usable:
        state = LockoutState(account.failed_logins, account.locked_until_ms, account.lockout_level)
    if account is not None and usable and state.locked(now):
        # the same work as a check, and not counted (lockout.py)
        await loop.run_in_executor(None, accounts.verify_password, None, password)
        await audit(request, "console_login_refused", {"reason": "locked", "until_ms": state.locked_until_ms},
                    actor)
        return _login_form(request, error=f"{GENERIC_FAILURE}；请于 {_hhmm(state.locked_until_ms)} 后再试 "
                                          f"(try again after {_hhmm(state.locked_until_ms)})",
                           info="", status=200, name=name)
    ok = await loop.run_in_executor(None, accounts.verify_password,
                                    account.password_hash if account is not None and usable else None, password)
    if account is None or not ok:
        reason = "wrong password" if usable else ("disabled account" if account is not None else "unknown account")
        await audit(request, "console_login_failed", {"reason": reason}, actor)
        message = GENERIC_FAILURE
        if account is not None and usable:
            after = failed(state, console.lockout, now)
            await console.store.set_console_lockout(account.name, failed_logins=after.failed,
                                                    locked_until_ms=after.locked_until_ms, lockout_level=after.level)
            if after.locked(now):
                await audit(request, "console_locked", {"until_ms": after.locked_until_ms, "level": after.level},
                            actor)
                message = f"{GENERIC_FAILURE}；请于 {_hhmm(after.locked_until_ms)} 后再试 " \
                          f"(try again after {_hhmm(after.locked_until_ms)})"
        return _login_form(request, error=message, info="", status=200, name=name)
    if state != CLEAR:
        after = succeeded(state)
        await console.store.set_console_lockout(account.name, failed_logins=after.failed,
                                                locked_until_ms=after.locked_until_ms, lockout_level=after.level)
    settings = console.settings
    cookie, digest = accounts.new_session_id()
    await console.store.prune_console_sessions(now_ms=now,
                                               idle_before_ms=now - int(settings.console_session_idle_s * 1000))
    await console.store.create_console_session(ConsoleSession(digest, account.name, accounts.new_csrf_token(), now,
                                                              now + int(settings.console_session_max_s * 1000), now))
    await audit(request, "console_login", {"role": account.role, "region": account.region_code}, actor)
    response = redirect(_next_path(str(form.get("next", "")) or _one(request, "next")))
    set_cookie(response, request, COOKIE, cookie)
    clear_cookie(response, request, LOGIN_COOKIE)
    return response


def _hhmm(ms: int | None) -> str:
    return "—" if ms is None else datetime.fromtimestamp(ms / 1000, CHINA).strftime("%H:%M")


async def logout(request: web.Request) -> web.StreamResponse:
    who = signed(request)
    await console_of(request).store.end_console_sessions(id_sha256=who.session.id_sha256)
    await audit(request, "console_logout", {})
    response = redirect("/console/login")
    clear_cookie(response, request, COOKIE)
    return response


# --- overview --------------------------------------------------------------------------------------------------


def _row_node(scope: str, code: str) -> str:
    """The node of the overview's row for a warning region: the child of `scope` on the way
    down to `code` (a province's rows are its cities, a city's its counties), or `scope`."""
    if code == scope or not regions.is_known(code):
        return scope
    chain = [code, *(a.code for a in regions.ancestors(code))]
    for below, above in zip(chain, chain[1:]):
        if above == scope:
            return below
    return scope


def _china_midnight_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=CHINA).timestamp() * 1000)


def _months_back(today: date, count: int) -> list[Month]:
    month = Month.of(today)
    out = [month]
    for _ in range(count - 1):
        month = month.previous()
        out.append(month)
    return out[::-1]


async def overview(request: web.Request) -> web.StreamResponse:
    who = signed(request)
    console = console_of(request)
    scope = who.principal.region_code
    today = _today(request)
    top = scope or regions.PROVINCE
    # the province covers every node a warning can have (a project's region is checked against
    # the tree): no region condition to evaluate for each of its warnings
    scope = None if scope == regions.PROVINCE else scope
    table: dict[str, dict[int, int]] = {}
    for c in await console.store.warning_counts(region_scope=scope, state="open"):
        row = table.setdefault(_row_node(top, c.region_code), {1: 0, 2: 0, 3: 0})
        row[c.level] = row.get(c.level, 0) + c.count
    back = _months_back(today, TREND_MONTHS)
    months = [str(m) for m in back]
    trend = dict.fromkeys(months, 0)
    for day, count in await console.store.warnings_opened(since_ms=_china_midnight_ms(back[0].first),
                                                          region_scope=scope):
        trend[f"{day:%Y-%m}"] = trend.get(f"{day:%Y-%m}", 0) + count
    rows: list[dict[str, Any]] = [{"code": code, "name": _region_name(code), "levels": levels,
                                   "total": sum(levels.values())} for code, levels in sorted(table.items())]
    devices = None
    if accounts.is_operator(who.account):
        devices = {"offline": await console.store.count_devices(online=False, region_scope=scope),
                   "online": await console.store.count_devices(online=True, region_scope=scope)}
    return render(request, "overview.html", {
        "rows": rows, "totals": {n: sum(r["levels"][n] for r in rows) for n in (1, 2, 3)}, "scope": top,
        "trend_months": months, "trend_counts": [trend[m] for m in months], "devices": devices,
        "month": str(Month.of(today)), "previous_month": str(Month.of(today).previous())})


# --- warnings --------------------------------------------------------------------------------------------------


async def warnings_list(request: web.Request) -> web.StreamResponse:
    from lmg.server.admin.supervision import WarningQuery, list_warnings

    who = signed(request)
    trail = _trail(request)
    level, rule, state = _one(request, "level"), _one(request, "rule"), _one(request, "state")
    region, month_text = _one(request, "region"), _one(request, "month")
    month = _month(month_text, _today(request)) if month_text else None
    mine = who.principal.region_code
    # a filter above the account's own region narrows to it (list_scope); one beside it is refused
    if region is not None and regions.is_known(region) and mine is not None \
            and not regions.covers(mine, region) and not regions.covers(region, mine):
        raise _forbidden_region("该地区", region)
    query: dict[str, Any] = {"limit": PAGE, "after": trail[-1] if trail else None, "level": level, "rule": rule,
                             "state": state, "region": region}
    if month is not None:
        query.update(period_from=month.first, period_to=month.last)
    try:
        page = await list_warnings(api_request(request, query=WarningQuery.model_validate(
            {k: v for k, v in query.items() if v is not None})))
    except ApiError as exc:
        raise _api_refusal(exc) from None
    except ValueError as exc:  # pydantic's ValidationError: a filter outside its choices
        raise Refused(400, f"筛选条件无效 (bad filter): {_first_error(exc)}") from None
    context = {"warnings": page.items, "pager": pager(request, trail, page.next),
               "filters": {"level": level or "", "rule": rule or "", "state": state or "", "region": region or "",
                           "month": month_text or ""},
               "rules": [(str(code), info.name_zh) for code, info in RULES.items()],
               "region_options": _region_options(who), "month": str(month or Month.of(_today(request)))}
    return render(request, "warnings_table.html" if fragment(request) else "warnings.html", context)


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors(include_url=False)[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(exc)


async def _visible_warning(request: web.Request, warning_id: int) -> Any:
    warning = await console_of(request).store.get_warning(warning_id)
    if warning is None:
        raise Refused(404, f"没有编号为 {warning_id} 的预警 (no warning {warning_id})")
    if not api_request(request).sees(warning.region_code):
        raise _forbidden_region(f"预警 {warning_id} ", warning.region_code)
    return warning


def _warning_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise Refused(404, "没有这个预警 (no such warning)")
    return int(text)


async def warning_page(request: web.Request, *, error: str = "", status: int = 200) -> web.StreamResponse:
    from lmg.server.admin.supervision import warning_detail
    from lmg.server.supervision.access import Supervisor, may_close

    who = signed(request)
    warning = await _visible_warning(request, _warning_id(request))
    detail = await warning_detail(api_request(request), warning)
    principal = who.principal
    closable = (warning.state.value != "closed" and principal.department is not None
                and principal.region_code is not None
                and may_close(Supervisor(principal.department, principal.region_code), warning.region_code,
                              warning.level))
    figures = [(FIGURE_ZH.get(k, k), _figure(v)) for k, v in detail.figures.items()
               if k in ("valid_days", "construction_days", "rate")]
    others = [(k, _figure(v)) for k, v in detail.figures.items() if k not in ("valid_days", "construction_days",
                                                                               "rate")]
    return render(request, "warning.html", {
        "w": detail, "figures": figures, "other_figures": others, "closable": closable, "error": error,
        "dispositions": [(d.value, d.name_zh) for d in Disposition]}, status=status)


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1%}" if 0 <= value <= 1 else f"{value:g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


async def close_warning(request: web.Request) -> web.StreamResponse:
    from lmg.server.admin.supervision import CloseBody, WarningPath
    from lmg.server.admin.supervision import close_warning as api_close

    warning_id = _warning_id(request)
    await _visible_warning(request, warning_id)
    form = await request.post()
    disposition = str(form.get("disposition", ""))
    # a textarea's line breaks become spaces: the store keeps a note as one printable line
    note = " ".join(str(form.get("note", "")).split())
    try:
        body = CloseBody(disposition=disposition, note=note)
    except ValueError as exc:
        return await warning_page(request, error=f"无法办结 (cannot close): {_first_error(exc)}", status=400)
    try:
        await api_close(api_request(request, path=WarningPath(id=warning_id), body=body))
    except ApiError as exc:
        if exc.status in (400, 409):
            return await warning_page(request, error=f"无法办结 (cannot close): {exc.message}", status=exc.status)
        raise _api_refusal(exc) from None
    await audit(request, "console_warning_closed", {"warning": warning_id, "disposition": body.disposition})
    return redirect(f"/console/warnings/{warning_id}")


# --- projects --------------------------------------------------------------------------------------------------


async def projects_list(request: web.Request) -> web.StreamResponse:
    from lmg.server.admin.projects import ProjectQuery, list_projects

    code = _one(request, "code")
    if code is not None:
        return redirect(f"/console/projects/{_quote_code(code)}")
    trail = _trail(request)
    try:
        page = await list_projects(api_request(request, query=ProjectQuery.model_validate(
            {"limit": PAGE, "after": trail[-1] if trail else None})))
    except ApiError as exc:
        raise _api_refusal(exc) from None
    return render(request, "projects.html", {"projects": page.items, "pager": pager(request, trail, page.next)})


def _quote_code(code: str) -> str:
    return quote(code, safe="")


async def project_page(request: web.Request) -> web.StreamResponse:
    from lmg.server.admin.supervision import _rules, attendance_calendar

    who = signed(request)
    console = console_of(request)
    code = request.match_info["code"]
    project = await console.store.get_project(code)
    if project is None:
        raise Refused(404, f"没有编码为 {code} 的项目 (no project {code})")
    req = api_request(request)
    if not req.sees(project.region_code):
        raise _forbidden_region(f"项目 {code} ", project.region_code)
    today = _today(request)
    month = _month(_one(request, "month"), today)
    pii = who.account.pii
    calendar = await attendance_calendar(console.store, _rules(req), project, str(month), today, pii)
    through = calendar.through or month.first
    rows = await console.store.attendance_days([code], month.first, through) if calendar.through else []
    punched: dict[str, int] = {}
    for r in rows:
        punched[r.worker_id] = punched.get(r.worker_id, 0) + 1
    holders = await console.store.list_key_post_workers([code])
    # matched by the full ID number (the calendar masks it without pii); the latest commitment names the person
    committed = {(c.post, c.id_number): c for c in await console.store.key_personnel([code], month.first, month.last)}
    table = _bid_vs_site(committed, holders, punched, pii)
    people = [{"post": p.post_name, "name": p.name, "masked": p.id_number if not pii else mask_id_number(p.id_number),
               "valid_days": p.valid_days, "construction_days": p.construction_days,
               "rate": "—" if p.rate is None else f"{p.rate:.0%}",
               "days": [[d.day.isoformat(), 2 if d.valid else (1 if d.punches else 0)] for d in p.days
                        if d.construction_day or d.punches]} for p in calendar.people]
    punches = await _project_punches(request, code, month)
    return render(request, "project.html", {
        "project": project, "month": str(month), "through": calendar.through, "table": table, "people": people,
        "punches": punches["items"], "pager": punches["pager"], "pii": pii,
        "prev_month": str(month.previous()), "next_month": str(_next_month(month))})


def _next_month(month: Month) -> Month:
    return Month.of(month.last + timedelta(days=1))


def _bid_vs_site(committed: dict[tuple[str, str], Any], holders: list[Any], punched: dict[str, int],
                 pii: bool) -> list[dict[str, Any]]:
    """The 中标通知书 ↔ 现场配置人员 check: per key post, each committed person beside whoever
    is on the roster under that post; a row is a mismatch when the committed person is not
    on site under it, or someone on site under it was not committed."""
    shown = (lambda n: n) if pii else mask_id_number
    on_site: dict[tuple[str, str], Any] = {(w.post, w.worker_id): w for w in holders}
    rows = []
    for post in KEY_POSTS:
        code = post.info.code
        ids = sorted({i for (p, i) in committed if p == code} | {i for (p, i) in on_site if p == code})
        for who in ids:
            c, w = committed.get((code, who)), on_site.get((code, who))
            days = punched.get(who, 0)
            present = w is not None and days > 0
            rows.append({"post": post.info.name_zh, "post_code": code,
                         "committed": None if c is None else {"name": c.name, "id": shown(who)},
                         "site": None if w is None else {"name": w.name, "id": shown(who), "days": days},
                         "mismatch": c is None or not present,
                         "why": ("非中标人员在岗 (not the committed person)" if c is None else
                                 "中标人员未到岗 (committed, not punching)" if not present else "")})
    return rows


async def _project_punches(request: web.Request, code: str, month: Month) -> dict[str, Any]:
    console = console_of(request)
    trail = _trail(request)
    after = int(trail[-1]) if trail and trail[-1].isdigit() else 0
    start, end = _china_midnight_ms(month.first), _china_midnight_ms(month.last + timedelta(days=1))
    rows = await console.store.list_punches(project_code=code, since_ms=start, until_ms=end, after_id=after,
                                            limit=PAGE, region_scope=api_request(request).list_scope())
    items = [{"id": r.id, "time": china_time(r.punch.punch_time_ms), "device": r.punch.device_serial,
              "worker": mask_id_number(r.punch.worker_id), "direction": "进 in" if r.punch.direction == 1 else "出 out",
              "photo": r.punch.photo_sha256 is not None} for r in rows]
    return {"items": items, "pager": pager(request, trail, str(rows[-1].id) if len(rows) == PAGE else None)}


async def punch_photo(request: web.Request) -> web.StreamResponse:
    who = signed(request)
    console = console_of(request)
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise Refused(404, "没有这条打卡记录 (no such punch)")
    punch_id = int(text)
    if not who.account.pii:
        raise Refused(403, "查看现场照片需要个人信息权限 (viewing a photo needs the pii permission)",
                      f"photo of punch {punch_id} without pii")
    found = await console.store.list_punches(after_id=punch_id - 1, limit=1)
    if not found or found[0].id != punch_id:
        raise Refused(404, f"没有编号为 {punch_id} 的打卡记录 (no punch {punch_id})")
    punch = found[0].punch
    device = await console.store.get_device(punch.device_serial)
    if device is None or not api_request(request).sees(device.region_code):
        raise _forbidden_region(f"打卡记录 {punch_id} ", device.region_code if device is not None else "unknown")
    photo = await console.store.get_punch_photo(punch.device_serial, punch.record_no)
    if photo is None:
        raise Refused(404, "该打卡记录没有照片 (no photo for that punch)")
    await audit(request, "console_photo_viewed", {"punch": punch_id, "device": punch.device_serial,
                                                  "project": found[0].project_code})
    kind = "image/png" if photo.startswith(b"\x89PNG") else "image/jpeg"
    return web.Response(body=photo, content_type=kind, headers={"Cache-Control": "no-store"})


# --- devices ---------------------------------------------------------------------------------------------------


async def devices_list(request: web.Request) -> web.StreamResponse:
    from lmg.server.admin.devices import device_out

    _require_operator(request)
    console = console_of(request)
    trail = _trail(request)
    state, region = _one(request, "state"), _one(request, "region")
    if state not in (None, "online", "offline"):
        raise Refused(400, f"状态应为 online 或 offline (state {state!r}: online or offline)")
    req = api_request(request)
    if region is not None and (not regions.is_known(region) or not req.sees(region)):
        raise _forbidden_region("该地区", region)
    # the store's call behind GET /api/v1/devices, with the region filter as a scope (a city
    # holds its counties' devices), narrowed to the account's region as the API narrows
    found = await console.store.list_devices(after_serial=trail[-1] if trail else "", limit=PAGE,
                                             online=None if state is None else state == "online",
                                             region_scope=req.list_scope(region))
    items = [device_out(d, req) for d in found]
    pending = await _pending_commands(console, req.list_scope(), {d.serial for d in items})
    next_cursor = found[-1].serial if len(found) == PAGE else None
    context = {"devices": items, "pending": pending, "pager": pager(request, trail, next_cursor),
               "filters": {"state": state or "", "region": region or ""},
               "region_options": _region_options(signed(request))}
    return render(request, "devices_table.html" if fragment(request) else "devices.html", context)


async def _pending_commands(console: Any, scope: str | None, serials: set[str]) -> dict[str, int]:
    """Commands queued or sent per device of the page: two scoped reads, not one per row."""
    from lmg.storage import MAX_COMMAND_PAGE

    counts: dict[str, int] = {}
    for state in (CommandState.QUEUED, CommandState.SENT):
        for c in await console.store.list_commands(state=state, limit=MAX_COMMAND_PAGE, region_scope=scope):
            if c.device_serial in serials:
                counts[c.device_serial] = counts.get(c.device_serial, 0) + 1
    return counts


async def _operator_device(request: web.Request) -> Any:
    _require_operator(request)
    serial = request.match_info["sn"]
    device = await console_of(request).store.get_device(serial)
    if device is None:
        raise Refused(404, f"没有序列号为 {serial} 的设备 (no device {serial})")
    if not api_request(request).sees(device.region_code):
        raise _forbidden_region(f"设备 {serial} ", device.region_code)
    return device


async def device_page(request: web.Request) -> web.StreamResponse:
    from lmg.server.admin.devices import device_out
    from lmg.server.admin.projects import command_out

    device = await _operator_device(request)
    commands = await console_of(request).store.list_commands(device_serial=device.serial, limit=1000)
    recent = [command_out(c) for c in commands[-PAGE:]][::-1]
    return render(request, "device.html", {"d": device_out(device, api_request(request)), "commands": recent})


async def _send(request: web.Request, command_type: str) -> web.StreamResponse:
    from lmg.server.admin.devices import DevicePath
    from lmg.server.admin.projects import CommandCreate, send_command

    device = await _operator_device(request)
    try:
        sent = await send_command(api_request(request, path=DevicePath(serial=device.serial),
                                              body=CommandCreate.model_validate({"type": command_type})))
    except ApiError as exc:
        raise _api_refusal(exc) from None
    await audit(request, "console_device_command", {"device": device.serial, "type": command_type, "id": sent.id})
    return redirect(f"/console/devices/{_quote_code(device.serial)}")


async def time_sync(request: web.Request) -> web.StreamResponse:
    return await _send(request, TIME_SYNC)


async def roster_resync(request: web.Request) -> web.StreamResponse:
    return await _send(request, ROSTER_RESYNC)


# --- forwarding ------------------------------------------------------------------------------------------------


def _forwarding_operator(request: web.Request) -> None:
    _require_operator(request)
    try:
        api_request(request).require_operator()
    except ApiError:
        raise Refused(403, "转发页面仅供全省运维账户使用 (forwarding is for the province's operator accounts)",
                      "forwarding page, region-limited operator") from None


async def forwarding_page(request: web.Request) -> web.StreamResponse:
    from lmg.server.admin.api import PageQuery
    from lmg.server.admin.forwarding import dead_letters

    _forwarding_operator(request)
    trail = _trail(request)
    console = console_of(request)
    # not the API's outbox_status: its exact count of a month's backlog (7.3 million records
    # of a province, bench/results/console-*) takes seconds; a page counts to OUTBOX_CAP
    status = await console.store.outbox_glance(now_ms=console.now_ms(), cap=OUTBOX_CAP)
    page = await dead_letters(api_request(request, query=PageQuery(limit=PAGE, after=trail[-1] if trail else None)))
    return render(request, "forwarding.html", {"status": status, "letters": page.items, "cap": OUTBOX_CAP,
                                               "pager": pager(request, trail, page.next)})


async def requeue_one(request: web.Request) -> web.StreamResponse:
    from lmg.server.admin.forwarding import Requeue, requeue

    _forwarding_operator(request)
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise Refused(404, "没有这条死信 (no such dead letter)")
    result = await requeue(api_request(request, body=Requeue.model_validate({"ids": [int(text)]})))
    await audit(request, "console_requeue", {"ids": [int(text)], "count": result.requeued})
    return redirect("/console/forwarding")


async def requeue_all(request: web.Request) -> web.StreamResponse:
    from lmg.server.admin.forwarding import Requeue, requeue

    _forwarding_operator(request)
    result = await requeue(api_request(request, body=Requeue.model_validate({"all": True})))
    await audit(request, "console_requeue", {"ids": "all", "count": result.requeued})
    return redirect("/console/forwarding")


# --- exports ---------------------------------------------------------------------------------------------------


async def _report(request: web.Request) -> tuple[str, Month, list[str], list[dict[str, Any]]]:
    from lmg.server.admin.supervision import _rules
    from lmg.server.supervision.monthly_report import monthly_report, report_columns

    who = signed(request)
    today = _today(request)
    month = _month(_one(request, "month"), today)
    region = who.principal.region_code or regions.PROVINCE
    wanted = _one(request, "region")
    if wanted is not None and wanted != region:
        if not regions.is_known(wanted) or not api_request(request).sees(wanted):
            raise _forbidden_region("该地区的报表", wanted)
        region = wanted
    yesterday = today - timedelta(days=1)
    as_of = None if month.last <= yesterday else yesterday
    rows = await monthly_report(console_of(request).store, _rules(api_request(request)), month, region, as_of,
                                who.account.pii)
    return region, month, report_columns(), rows


async def export_csv(request: web.Request) -> web.StreamResponse:
    region, month, columns, rows = await _report(request)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    await audit(request, "console_export", {"format": "csv", "region": region, "month": str(month),
                                            "rows": len(rows), "pii": signed(request).account.pii})
    return _download(("\ufeff" + buffer.getvalue()).encode(), "text/csv; charset=utf-8",
                     f"monthly-{region}-{month}.csv")


async def export_xlsx(request: web.Request) -> web.StreamResponse:
    region, month, columns, rows = await _report(request)
    body = await asyncio.get_running_loop().run_in_executor(None, _xlsx, columns, rows, f"{region} {month}")
    await audit(request, "console_export", {"format": "xlsx", "region": region, "month": str(month),
                                            "rows": len(rows), "pii": signed(request).account.pii})
    return _download(body, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                     f"monthly-{region}-{month}.xlsx")


def _xlsx(columns: list[str], rows: list[dict[str, Any]], title: str) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(title=title[:31])  # Excel's limit on a sheet name
    sheet.append(columns)
    for row in rows:
        sheet.append([row[c] for c in columns])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _download(body: bytes, kind: str, filename: str) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": kind, "Cache-Control": "no-store",
                                            "Content-Disposition": f'attachment; filename="{filename}"'})


# --- routes ----------------------------------------------------------------------------------------------------


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/login", login_page)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/", overview)
    r.add_get("/warnings", warnings_list)
    r.add_get("/warnings/{id}", warning_page)
    r.add_post("/warnings/{id}/close", close_warning)
    r.add_get("/projects", projects_list)
    r.add_get("/projects/{code}", project_page)
    r.add_get("/punches/{id}/photo", punch_photo)
    r.add_get("/devices", devices_list)
    r.add_get("/devices/{sn}", device_page)
    r.add_post("/devices/{sn}/time-sync", time_sync)
    r.add_post("/devices/{sn}/roster-resync", roster_resync)
    r.add_get("/forwarding", forwarding_page)
    r.add_post("/forwarding/dead-letters/requeue-all", requeue_all)
    r.add_post("/forwarding/dead-letters/{id}/requeue", requeue_one)
    r.add_get("/reports/monthly.csv", export_csv)
    r.add_get("/reports/monthly.xlsx", export_xlsx)
