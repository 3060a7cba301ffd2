"""The SQLite store's supervision of key personnel: a mixin of `SqliteStore`.

The same split as the rest of the SQLite store: every write is one function run by the
writer process in one transaction (module-level, named by reference), every read runs on
a reader thread. The rules are `lmg.storage.supervision`'s, shared with PostgreSQL; this
module is only their SQL.

The attendance aggregate streams: it runs on the scan thread (`SqliteStore._scans`, the
one operators' listings use, so the gateway's reads never queue behind it) and hands pages
to the event loop through a queue at most `_PAGES_AHEAD` pages deep, so a province's month
(millions of rows) never sits in memory at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import date
from typing import Any

import orjson

from lmg.protocol.regions import covered_codes
from lmg.storage.api import (
    MAX_ATTENDANCE_PAGE, MAX_WARNING_PAGE, ApplyResult, ApprovedLeave, AttendanceDay, AttendanceMask, BidAward,
    Commitment,
    Disposition, EvaluationScope, KeyPerson, PauseDay, PersonnelChange, ProjectDay, StopWork, UpsertOutcome, Worker,
    WarningEvent, WarningFinding, WarningRecord, WarningState, check_day, check_limit, check_marks, check_mask_window,
    check_project_code,
)
from lmg.storage.backend import WORKER_COLUMNS, check_int, worker
from lmg.storage.errors import StoreUnavailable, UnknownProject, UnknownWarning
from lmg.storage.supervision import (
    AWARD_COLUMNS, CHANGE_COLUMNS, CHINA_OFFSET_MS, DAY_MS, DEVICE_PATH_MAX_DEVICES, DEVICE_READ_COST,
    EVENT_COLUMNS, KEY_POST_CODES, LEAVE_COLUMNS, NOTE_CHARS, PAUSE_COLUMNS, PERSON_COLUMNS, RECEIVE_SLACK_MS,
    STOP_COLUMNS, WARNING_COLUMNS, WARNING_UPDATE_COLUMNS, AwardedPerson, DayCache, WarningChange,
    approved_leave, attendance_day, award_from_rows, canonical_json, check_bid_award, check_by, check_days,
    check_id_number, check_period, check_personnel_change, check_project_codes, check_scope, check_text,
    checked_findings, commitments, day_of, day_range_ms, drive_search, number_of, pause_day, personnel_change,
    plan_apply, plan_close, plan_escalation, same_award, same_change, search_first_received, stop_work,
    warning_event, warning_filters, warning_record, warning_update_values,
)

_PAGES_AHEAD = 2  # pages the scan thread may read ahead of the consumer: 2 x 10,000 rows
# A consumer that holds the iterator without reading for this long gives the scan thread
# back (the operators' listings share it): the scan stops and the next read raises.
_CONSUMER_WAIT_S = 60.0
_JSON_LIST = "(SELECT value FROM json_each(?))"  # one bound parameter for any number of values


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _codes(values: Collection[str]) -> str:
    return orjson.dumps(sorted(values)).decode()


def _require_project(conn: sqlite3.Connection, project_code: str) -> None:
    if conn.execute("SELECT 1 FROM projects WHERE code = ?", (project_code,)).fetchone() is None:
        raise UnknownProject(project_code)


# ----------------------------------------------------------------- writer-process work

def _award(conn: sqlite3.Connection, notice_no: str) -> BidAward | None:
    row = conn.execute(f"SELECT {AWARD_COLUMNS} FROM bid_awards WHERE notice_no = ?", (notice_no,)).fetchone()
    if row is None:
        return None
    return award_from_rows(row, conn.execute(f"SELECT {PERSON_COLUMNS} FROM bid_personnel WHERE notice_no = ?",
                                             (notice_no,)))


def _import_bid_award(conn: sqlite3.Connection, award: BidAward, now_ms: int) -> tuple[BidAward, UpsertOutcome]:
    _require_project(conn, award.project_code)
    stored = _award(conn, award.notice_no)
    if stored is not None and same_award(stored, award):
        return stored, "unchanged"
    if stored is not None:
        conn.execute("DELETE FROM bid_personnel WHERE notice_no = ?", (award.notice_no,))
        conn.execute("DELETE FROM bid_awards WHERE notice_no = ?", (award.notice_no,))
    conn.execute(f"INSERT INTO bid_awards ({AWARD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                 (award.notice_no, award.project_code, award.enterprise, award.enterprise_uscc,
                  award.award_date.isoformat(), now_ms))
    conn.executemany(f"INSERT INTO bid_personnel ({PERSON_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                     [(award.notice_no, p.post, p.id_number, p.name, p.certificate_no) for p in award.personnel])
    made = _award(conn, award.notice_no)
    assert made is not None
    return made, "added" if stored is None else "updated"


def _record_change(conn: sqlite3.Connection, change: PersonnelChange,
                   now_ms: int) -> tuple[PersonnelChange, UpsertOutcome]:
    _require_project(conn, change.project_code)
    key = (change.project_code, change.post, change.old_id_number, change.new_id_number,
           change.approved_on.isoformat())
    where = ("WHERE project_code = ? AND post = ? AND old_id_number = ? AND new_id_number = ? "
             "AND approved_on = ?")
    row = conn.execute(f"SELECT {CHANGE_COLUMNS} FROM personnel_changes {where}", key).fetchone()
    if row is not None and same_change(personnel_change(row), change):
        return personnel_change(row), "unchanged"
    if row is None:
        conn.execute(f"INSERT INTO personnel_changes ({CHANGE_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (change.project_code, change.post, change.old_id_number, change.new_id_number,
                      change.new_name, change.new_certificate_no, change.approved_on.isoformat(),
                      change.approval_ref, now_ms))
    else:
        conn.execute(f"UPDATE personnel_changes SET new_name = ?, new_certificate_no = ?, approval_ref = ? {where}",
                     (change.new_name, change.new_certificate_no, change.approval_ref, *key))
    stored = personnel_change(conn.execute(f"SELECT {CHANGE_COLUMNS} FROM personnel_changes {where}", key).fetchone())
    return stored, "added" if row is None else "updated"


def _upsert_returning(conn: sqlite3.Connection, project_code: str | None, sql: str, params: tuple) -> tuple:
    if project_code is not None:
        _require_project(conn, project_code)
    row: tuple = conn.execute(sql, params).fetchone()
    return row


def _write_changes(conn: sqlite3.Connection, changes: Sequence[WarningChange]) -> list[WarningRecord]:
    """Insert or update each change's warning and append its event; the warnings as stored."""
    written: list[WarningRecord] = []
    sets = ", ".join(f"{column} = ?" for column in WARNING_UPDATE_COLUMNS)
    for change in changes:
        w = change.after
        values = list(warning_update_values(w))
        values[0] = w.period_end.isoformat()
        if change.before is None:
            warning_id = conn.execute(
                "INSERT INTO warnings (key, rule, project_code, region_code, worker_id, post, period_start, "
                "opened_at_ms, forwarded_version, " + ", ".join(WARNING_UPDATE_COLUMNS) + ") VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, " + ", ".join("?" * len(WARNING_UPDATE_COLUMNS)) + ") RETURNING id",
                (w.key, w.rule, w.project_code, w.region_code, w.worker_id, w.post, w.period_start.isoformat(),
                 w.opened_at_ms, w.forwarded_version, *values)).fetchone()[0]
            w = replace(w, id=warning_id)
        else:
            conn.execute(f"UPDATE warnings SET {sets} WHERE id = ?", (*values, w.id))
        conn.execute("INSERT INTO warning_events (warning_id, at_ms, event, level, state, by, detail) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (w.id, w.updated_at_ms, change.event.value, w.level, w.state.value, change.by,
                      canonical_json("detail", change.detail, limit=1 << 20)))
        written.append(w)
    return written


def _apply_warnings(conn: sqlite3.Connection, scope: EvaluationScope, findings: list[WarningFinding],
                    now_ms: int) -> ApplyResult:
    sql = (f"SELECT {WARNING_COLUMNS} FROM warnings WHERE period_start BETWEEN ? AND ? "
           f"AND rule IN {_JSON_LIST}")
    params: list[Any] = [scope.first_day.isoformat(), scope.last_day.isoformat(), _codes(scope.rules)]
    if scope.project_codes is not None:
        sql += f" AND project_code IN {_JSON_LIST}"
        params.append(_codes(scope.project_codes))
    stored = {w.key: w for w in map(warning_record, conn.execute(sql, params))}
    wanted = {f.project_code for f in findings}
    regions = dict(conn.execute(f"SELECT code, region_code FROM projects WHERE code IN {_JSON_LIST}",
                                (_codes(wanted),)).fetchall())
    for code in sorted(wanted - regions.keys()):
        raise UnknownProject(code)
    plan = plan_apply(scope, findings, stored, regions, now_ms)
    _write_changes(conn, plan.changes)
    return plan.result


def _escalate(conn: sqlite3.Connection, now_ms: int, level2_after_ms: int, level3_after_ms: int) -> int:
    due = [warning_record(row) for row in conn.execute(
        f"SELECT {WARNING_COLUMNS} FROM warnings WHERE state = 'open' AND ((level = 1 AND level_since_ms <= ?) "
        f"OR (level = 2 AND level_since_ms <= ?)) ORDER BY id",
        (now_ms - level2_after_ms, now_ms - level3_after_ms))]
    changes = plan_escalation(due, now_ms, level2_after_ms, level3_after_ms)
    _write_changes(conn, changes)
    return len(changes)


def _close_warning(conn: sqlite3.Connection, warning_id: int, disposition: Disposition, note: str, by: str,
                   now_ms: int) -> WarningRecord:
    row = conn.execute(f"SELECT {WARNING_COLUMNS} FROM warnings WHERE id = ?", (warning_id,)).fetchone()
    if row is None:
        raise UnknownWarning(warning_id)
    return _write_changes(conn, [plan_close(warning_record(row), disposition, note, by, now_ms)])[0]


# ------------------------------------------------------------------- scan-thread work

def _first_id_received(conn: sqlite3.Connection, since_ms: int) -> int | None:
    """A lower bound of the ids of punches received at or after `since_ms` (less the slack);
    None if there are no punches."""
    # Two statements: SQLite finds min() or max() of the key in one seek only when it is the
    # query's one aggregate; together they scan the table.
    first = conn.execute("SELECT min(id) FROM punches").fetchone()[0]
    if first is None:
        return None
    last = conn.execute("SELECT max(id) FROM punches").fetchone()[0]

    def probe(at: int) -> tuple[int, int] | None:
        found: tuple[int, int] | None = conn.execute(
            "SELECT id, received_at_ms FROM punches WHERE id >= ? ORDER BY id LIMIT 1", (at,)).fetchone()
        return found

    return drive_search(search_first_received(first, last, since_ms - RECEIVE_SLACK_MS), probe)


_DAY = f"(punch_time_ms + {CHINA_OFFSET_MS}) / {DAY_MS}"
_PER_DEVICE = (f"SELECT device_serial, worker_id, {_DAY} AS day, count(*) AS n, min(punch_time_ms) AS first_ms, "
               f"max(punch_time_ms) AS last_ms FROM punches WHERE {{where}} "
               f"AND punch_time_ms >= ? AND punch_time_ms < ? GROUP BY device_serial, worker_id, day")
_PER_PROJECT_DAY = ("SELECT d.project_code AS project_code, a.worker_id AS worker_id, a.day AS day, sum(a.n) AS n, "
                    "min(a.first_ms) AS first_ms, max(a.last_ms) AS last_ms "
                    "FROM ({per_device}) a JOIN devices d ON d.serial = a.device_serial{projects} "
                    "GROUP BY d.project_code, a.worker_id, a.day")
_PER_PROJECT = _PER_PROJECT_DAY + " ORDER BY d.project_code, a.worker_id, a.day"
# One row per (project, person): the days as bits from the window's first day (AttendanceMask).
# The days are distinct within a group, so sum() is the bitwise or; bit 61 at most (62 days).
_MASKS = ("SELECT project_code, worker_id, sum(1 << (day - ?)), "
          "sum(CASE WHEN n >= ? AND last_ms - first_ms >= ? THEN 1 << (day - ?) ELSE 0 END) "
          "FROM (" + _PER_PROJECT_DAY + ") GROUP BY project_code, worker_id ORDER BY project_code, worker_id")


def _attendance_query(conn: sqlite3.Connection, codes: list[str] | None, since_ms: int,
                      until_ms: int, masks: tuple[int, int, int] | None = None) -> tuple[str, list[Any]] | None:
    """The aggregate's SQL and parameters, reading the fewer rows of the two paths (see
    Store.iter_attendance_days); None when nothing can match. `masks`: (first day number,
    min_punches, min_span_ms) for the per-person masks (Store.iter_attendance_masks)
    instead of the day rows."""
    projects, project_params = "", [] if codes is None else [_codes(codes)]
    if codes is not None:
        projects = f" WHERE d.project_code IN {_JSON_LIST}"
    low = _first_id_received(conn, since_ms)
    if low is None:
        return None
    chosen: tuple[str, list[Any]] = (_PER_DEVICE.format(where="id >= ?"), [low])
    if codes is not None:
        serials = [row[0] for row in conn.execute(
            f"SELECT serial FROM devices WHERE project_code IN {_JSON_LIST}", (_codes(codes),))]
        if not serials:
            return None
        # by arrival, the other projects' punches are dropped before they are grouped: a
        # county's report on a province's month grouped all of them (2.3 s for 277 of 2,500
        # projects, 0.5 s with the filter)
        chosen = (_PER_DEVICE.format(where=f"id >= ? AND device_serial IN {_JSON_LIST}"), [low, _codes(serials)])
        if len(serials) <= DEVICE_PATH_MAX_DEVICES:
            in_range = conn.execute("SELECT max(id) FROM punches").fetchone()[0] - low + 1
            on_devices = conn.execute(f"SELECT count(*) FROM punches WHERE device_serial IN {_JSON_LIST}",
                                      (_codes(serials),)).fetchone()[0]
            if on_devices * DEVICE_READ_COST < in_range:
                chosen = (_PER_DEVICE.format(where=f"device_serial IN {_JSON_LIST}"), [_codes(serials)])
    sql, params = chosen
    if masks is not None:
        base, least, span_ms = masks
        return (_MASKS.format(per_device=sql, projects=projects),
                [base, least, span_ms, base, *params, since_ms, until_ms, *project_params])
    return (_PER_PROJECT.format(per_device=sql, projects=projects),
            [*params, since_ms, until_ms, *project_params])


def _set_marks(conn: sqlite3.Connection, rows: list[tuple[str, int, int]]) -> None:
    conn.executemany("INSERT INTO supervision_marks (name, value_ms, set_at_ms) VALUES (?, ?, ?) ON CONFLICT (name) "
                     "DO UPDATE SET value_ms = excluded.value_ms, set_at_ms = excluded.set_at_ms", rows)


def _stream_attendance(conn: sqlite3.Connection, codes: list[str] | None, since_ms: int, until_ms: int,
                       deliver: Callable[[list[Any] | None], None], credits: threading.Semaphore,
                       stop: threading.Event, masks: tuple[int, int, int] | None = None) -> None:
    """Read the aggregate (the day rows, or with `masks` the per-person masks) page by page
    and deliver each (None at the end), waiting for a credit before each page so at most
    _PAGES_AHEAD wait; stops when `stop` is set."""
    try:
        query = _attendance_query(conn, codes, since_ms, until_ms, masks)
        if query is None:
            return
        cursor = conn.execute(*query)
        days = DayCache()
        try:
            while not stop.is_set():
                rows = cursor.fetchmany(MAX_ATTENDANCE_PAGE)
                if not rows:
                    return
                if not credits.acquire(timeout=_CONSUMER_WAIT_S):
                    raise StoreUnavailable(f"the attendance pages were not read for {_CONSUMER_WAIT_S:.0f} s; "
                                           f"the scan stopped to free the scan thread: read them again")
                if stop.is_set():
                    return
                deliver([attendance_day(row, days) for row in rows] if masks is None
                        else [tuple.__new__(AttendanceMask, row) for row in rows])
        finally:
            cursor.close()
    finally:
        deliver(None)


def _project_days(conn: sqlite3.Connection, after_ms: int, until_ms: int | None) -> list[ProjectDay]:
    low = _first_id_received(conn, after_ms)
    if low is None:
        return []
    until = "" if until_ms is None else " AND received_at_ms <= ?"
    rows = conn.execute(
        f"SELECT DISTINCT d.project_code, a.day FROM (SELECT DISTINCT device_serial, {_DAY} AS day FROM punches "
        f"WHERE id >= ? AND received_at_ms > ?{until}) a JOIN devices d ON d.serial = a.device_serial "
        f"ORDER BY 1, 2", (low, after_ms) if until_ms is None else (low, after_ms, until_ms)).fetchall()
    return [ProjectDay(code, day_of(day)) for code, day in rows]


class SqliteSupervision:
    """The supervision methods of `Store` for SQLite; mixed into SqliteStore, whose
    writer, readers and clock these use."""

    # Provided by SqliteStore.
    clock_ms: Callable[[], int]
    _scans: Any  # the scan thread's readers (lmg.storage.sqlite._Readers)
    _write: Callable[..., Awaitable[Any]]
    _query: Callable[..., Awaitable[list[tuple]]]
    _check_open: Callable[[], None]

    # bid awards and changes ---------------------------------------------------------
    async def import_bid_award(self, award: BidAward) -> tuple[BidAward, UpsertOutcome]:
        checked = check_bid_award(award)
        result: tuple[BidAward, UpsertOutcome] = await self._write(_import_bid_award, checked, self.clock_ms())
        return result

    async def get_bid_award(self, notice_no: str) -> BidAward | None:
        awards = await self._awards("a.notice_no = ?", (notice_no,))
        return awards[0] if awards else None

    async def list_bid_awards(self, project_code: str) -> list[BidAward]:
        check_project_code(project_code)
        return await self._awards("a.project_code = ?", (project_code,))

    async def _awards(self, condition: str, params: tuple) -> list[BidAward]:
        columns = ", ".join(f"a.{c.strip()}" for c in AWARD_COLUMNS.split(","))
        people = ", ".join(f"p.{c.strip()}" for c in PERSON_COLUMNS.split(","))
        rows = await self._query(
            f"SELECT {columns}, {people} FROM bid_awards a JOIN bid_personnel p ON p.notice_no = a.notice_no "
            f"WHERE {condition} ORDER BY a.award_date, a.notice_no", params)
        grouped: dict[str, tuple[tuple, list[tuple]]] = {}
        for row in rows:
            grouped.setdefault(row[0], (row[:6], []))[1].append(row[6:])
        return [award_from_rows(award, people_rows) for award, people_rows in grouped.values()]

    async def record_personnel_change(self, change: PersonnelChange) -> tuple[PersonnelChange, UpsertOutcome]:
        checked = check_personnel_change(change)
        result: tuple[PersonnelChange, UpsertOutcome] = await self._write(_record_change, checked, self.clock_ms())
        return result

    async def list_personnel_changes(self, project_code: str) -> list[PersonnelChange]:
        check_project_code(project_code)
        rows = await self._query(f"SELECT {CHANGE_COLUMNS} FROM personnel_changes WHERE project_code = ? "
                                 f"ORDER BY approved_on, id", (project_code,))
        return [personnel_change(row) for row in rows]

    async def key_personnel(self, project_codes: Collection[str] | None, first_day: date,
                            last_day: date) -> list[Commitment]:
        codes = check_project_codes(project_codes)
        check_days(first_day, last_day)
        award_filter, change_filter, params = "", "", []
        if codes is not None:
            award_filter = f" WHERE a.project_code IN {_JSON_LIST}"
            change_filter = f" WHERE project_code IN {_JSON_LIST}"
            params = [_codes(codes)]
        people = await self._query(
            f"SELECT a.notice_no, a.project_code, a.award_date, p.post, p.id_number, p.name, p.certificate_no "
            f"FROM bid_awards a JOIN bid_personnel p ON p.notice_no = a.notice_no{award_filter}", params)
        changes = await self._query(f"SELECT {CHANGE_COLUMNS} FROM personnel_changes{change_filter}", params)
        awarded = [AwardedPerson(r[0], r[1], date.fromisoformat(r[2]), KeyPerson(r[3], r[4], r[5], r[6]))
                   for r in people]
        return commitments(awarded, map(personnel_change, changes), first_day, last_day)

    # leave, stop-work, pause days ---------------------------------------------------
    async def add_leave(self, project_code: str, id_number: str, first_day: date, last_day: date,
                        reference: str) -> ApprovedLeave:
        check_period(project_code, first_day, last_day, reference)
        check_id_number("id_number", id_number)
        row = await self._write(
            _upsert_returning, project_code,
            f"INSERT INTO approved_leave (project_code, id_number, first_day, last_day, reference, recorded_at_ms) "
            f"VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project_code, id_number, first_day, last_day) "
            f"DO UPDATE SET reference = excluded.reference RETURNING {LEAVE_COLUMNS}",
            (project_code, id_number, first_day.isoformat(), last_day.isoformat(), reference, self.clock_ms()))
        return approved_leave(row)

    async def list_leave(self, *, first_day: date, last_day: date, project_codes: Collection[str] | None = None,
                         id_number: str | None = None) -> list[ApprovedLeave]:
        codes = check_project_codes(project_codes)
        check_days(first_day, last_day)
        sql = f"SELECT {LEAVE_COLUMNS} FROM approved_leave WHERE first_day <= ? AND last_day >= ?"
        params: list[Any] = [last_day.isoformat(), first_day.isoformat()]
        if codes is not None:
            sql += f" AND project_code IN {_JSON_LIST}"
            params.append(_codes(codes))
        if id_number is not None:
            sql += " AND id_number = ?"
            params.append(id_number)
        rows = await self._query(sql + " ORDER BY project_code, id_number, first_day", params)
        return [approved_leave(row) for row in rows]

    async def delete_leave(self, leave_id: int) -> bool:
        check_int("leave_id", leave_id)
        return bool(await self._write(_rowcount, "DELETE FROM approved_leave WHERE id = ?", (leave_id,)))

    async def add_stop_work(self, project_code: str, first_day: date, last_day: date,
                            reference: str) -> StopWork:
        check_period(project_code, first_day, last_day, reference)
        row = await self._write(
            _upsert_returning, project_code,
            f"INSERT INTO stop_work (project_code, first_day, last_day, reference, recorded_at_ms) "
            f"VALUES (?, ?, ?, ?, ?) ON CONFLICT (project_code, first_day, last_day) "
            f"DO UPDATE SET reference = excluded.reference RETURNING {STOP_COLUMNS}",
            (project_code, first_day.isoformat(), last_day.isoformat(), reference, self.clock_ms()))
        return stop_work(row)

    async def list_stop_work(self, *, first_day: date, last_day: date,
                             project_codes: Collection[str] | None = None) -> list[StopWork]:
        codes = check_project_codes(project_codes)
        check_days(first_day, last_day)
        sql = f"SELECT {STOP_COLUMNS} FROM stop_work WHERE first_day <= ? AND last_day >= ?"
        params: list[Any] = [last_day.isoformat(), first_day.isoformat()]
        if codes is not None:
            sql += f" AND project_code IN {_JSON_LIST}"
            params.append(_codes(codes))
        rows = await self._query(sql + " ORDER BY project_code, first_day", params)
        return [stop_work(row) for row in rows]

    async def delete_stop_work(self, stop_id: int) -> bool:
        check_int("stop_id", stop_id)
        return bool(await self._write(_rowcount, "DELETE FROM stop_work WHERE id = ?", (stop_id,)))

    async def set_pause_day(self, day: date, reason: str) -> PauseDay:
        check_day("day", day)
        check_text("reason", reason)
        row = await self._write(
            _upsert_returning, None,
            f"INSERT INTO pause_days (day, reason, recorded_at_ms) VALUES (?, ?, ?) ON CONFLICT (day) "
            f"DO UPDATE SET reason = excluded.reason, recorded_at_ms = excluded.recorded_at_ms "
            f"RETURNING {PAUSE_COLUMNS}", (day.isoformat(), reason, self.clock_ms()))
        return pause_day(row)

    async def list_pause_days(self, first_day: date, last_day: date) -> list[PauseDay]:
        check_days(first_day, last_day)
        rows = await self._query(f"SELECT {PAUSE_COLUMNS} FROM pause_days WHERE day BETWEEN ? AND ? ORDER BY day",
                                 (first_day.isoformat(), last_day.isoformat()))
        return [pause_day(row) for row in rows]

    async def get_supervision_marks(self) -> dict[str, int]:
        rows = await self._query("SELECT name, value_ms FROM supervision_marks", ())
        return {name: value for name, value in rows}

    async def set_supervision_marks(self, marks: Mapping[str, int]) -> None:
        pairs = check_marks(marks)
        if pairs:
            await self._write(_set_marks, [(name, value, self.clock_ms()) for name, value in pairs])

    async def delete_pause_day(self, day: date) -> bool:
        check_day("day", day)
        return bool(await self._write(_rowcount, "DELETE FROM pause_days WHERE day = ?", (day.isoformat(),)))

    # attendance ---------------------------------------------------------------------
    def iter_attendance_days(self, project_codes: Collection[str] | None, first_day: date,
                             last_day: date) -> AsyncIterator[list[AttendanceDay]]:
        return self._scan_attendance(project_codes, first_day, last_day, None)

    def iter_attendance_masks(self, project_codes: Collection[str] | None, first_day: date, last_day: date,
                              *, min_punches: int, min_span_ms: int) -> AsyncIterator[list[AttendanceMask]]:
        check_mask_window(first_day, last_day, min_punches, min_span_ms)
        return self._scan_attendance(project_codes, first_day, last_day,
                                     (number_of(first_day), min_punches, min_span_ms))

    async def _scan_attendance(self, project_codes: Collection[str] | None, first_day: date, last_day: date,
                               masks: tuple[int, int, int] | None) -> AsyncIterator[Any]:
        codes = check_project_codes(project_codes)
        since_ms, until_ms = day_range_ms(first_day, last_day)
        if codes is not None and not codes:
            return
        self._check_open()
        loop = asyncio.get_running_loop()
        pages: asyncio.Queue[list[Any] | None] = asyncio.Queue()
        credits = threading.Semaphore(_PAGES_AHEAD)
        stop = threading.Event()

        def deliver(page: list[Any] | None) -> None:
            loop.call_soon_threadsafe(pages.put_nowait, page)

        scan = asyncio.ensure_future(self._scans.run(_stream_attendance, codes, since_ms, until_ms, deliver,
                                                     credits, stop, masks))
        try:
            while (page := await pages.get()) is not None:
                credits.release()
                yield page
            await scan  # the scan's error, if it failed
        finally:
            stop.set()
            credits.release()  # a scan waiting for a credit sees `stop`
            if not scan.done():  # left early: wait for the thread to notice; its error is moot
                with contextlib.suppress(Exception):
                    await asyncio.shield(scan)

    async def days_with_punches_received(self, after_ms: int, *, until_ms: int | None = None) -> list[ProjectDay]:
        check_int("after_ms", after_ms)
        check_int("until_ms", until_ms, optional=True)
        self._check_open()
        result: list[ProjectDay] = await self._scans.run(_project_days, after_ms, until_ms)
        return result

    async def list_key_post_workers(self, project_codes: Collection[str] | None = None) -> list[Worker]:
        codes = check_project_codes(project_codes)
        sql = f"SELECT {WORKER_COLUMNS} FROM workers WHERE post IN {_JSON_LIST}"
        params = [_codes(KEY_POST_CODES)]
        if codes is not None:
            sql += f" AND project_code IN {_JSON_LIST}"
            params.append(_codes(codes))
        rows = await self._query(sql + " ORDER BY project_code, worker_id", params)
        return [worker(row) for row in rows]

    # warnings -----------------------------------------------------------------------
    async def apply_warnings(self, scope: EvaluationScope, findings: Sequence[WarningFinding],
                             now_ms: int) -> ApplyResult:
        checked_scope = check_scope(scope)
        checked = checked_findings(checked_scope, findings)
        check_int("now_ms", now_ms)
        result: ApplyResult = await self._write(_apply_warnings, checked_scope, checked, now_ms)
        return result

    async def escalate_warnings(self, now_ms: int, *, level2_after_ms: int, level3_after_ms: int) -> int:
        check_int("now_ms", now_ms)
        plan_escalation([], now_ms, level2_after_ms, level3_after_ms)  # checks the waits
        result: int = await self._write(_escalate, now_ms, level2_after_ms, level3_after_ms)
        return result

    async def close_warning(self, warning_id: int, disposition: Disposition | str, *, note: str, by: str,
                            now_ms: int) -> WarningRecord:
        check_int("warning_id", warning_id)
        check_int("now_ms", now_ms)
        chosen = Disposition.parse(disposition)
        check_text("note", note, required=chosen is Disposition.FALSE_ALARM, chars=NOTE_CHARS)
        check_by(by)
        result: WarningRecord = await self._write(_close_warning, warning_id, chosen, note, by, now_ms)
        return result

    async def get_warning(self, warning_id: int) -> WarningRecord | None:
        rows = await self._query(f"SELECT {WARNING_COLUMNS} FROM warnings WHERE id = ?", (warning_id,))
        return warning_record(rows[0]) if rows else None

    async def warning_history(self, warning_id: int) -> list[WarningEvent]:
        rows = await self._query(f"SELECT {EVENT_COLUMNS} FROM warning_events WHERE warning_id = ? ORDER BY id",
                                 (warning_id,))
        return [warning_event(row) for row in rows]

    async def list_warnings(
        self, *, region_scope: str | None = None, project_code: str | None = None,
        worker_id: str | None = None, rule: str | None = None, state: WarningState | str | None = None,
        level: int | None = None, period_from: date | None = None, period_to: date | None = None,
        after_id: int = 0, limit: int = 100,
    ) -> list[WarningRecord]:
        check_limit(limit, MAX_WARNING_PAGE)
        check_int("after_id", after_id)
        conditions = warning_filters(project_code, worker_id, rule, state, level, period_from, period_to)
        parts: list[str] = ["id > ?"]
        params: list[Any] = [after_id]
        if region_scope is not None:
            parts.append(f"region_code IN {_JSON_LIST}")
            params.append(_codes(covered_codes(region_scope)))
        for condition, value in conditions:
            if value is not None:
                parts.append(condition.format("?"))
                params.append(value.isoformat() if isinstance(value, date) else value)
        rows = await self._query(f"SELECT {WARNING_COLUMNS} FROM warnings WHERE {' AND '.join(parts)} "
                                 f"ORDER BY id LIMIT ?", (*params, limit))
        return [warning_record(row) for row in rows]

    async def warnings_to_forward(self, limit: int = 100) -> list[WarningRecord]:
        check_limit(limit, MAX_WARNING_PAGE)
        rows = await self._query(f"SELECT {WARNING_COLUMNS} FROM warnings WHERE version > forwarded_version "
                                 f"ORDER BY id LIMIT ?", (limit,))
        return [warning_record(row) for row in rows]

    async def mark_warnings_forwarded(self, versions: Sequence[tuple[int, int]]) -> int:
        pairs = [(int(version), int(warning_id), int(version)) for warning_id, version in versions]
        if not pairs:
            return 0
        result: int = await self._write(
            _rowcount_many, "UPDATE warnings SET forwarded_version = min(?, version) WHERE id = ? "
            "AND forwarded_version < min(?, version)", pairs)
        return result


def _rowcount(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return conn.execute(sql, params).rowcount


def _rowcount_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    return conn.executemany(sql, rows).rowcount
