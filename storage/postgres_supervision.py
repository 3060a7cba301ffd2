"""The PostgreSQL store's supervision of key personnel: a mixin of `PostgresStore`.

The rules are `lmg.storage.supervision`'s, shared with SQLite; this module is their SQL.
What several nodes sharing one database need:

- Writers of bid awards, personnel changes and warnings take one transaction-level
  advisory lock (`_SUPERVISION_LOCK`) first, so an evaluation, an escalation and a
  supervisor's closing never interleave: each reads the warnings it changes under the
  lock, and the state table's preconditions hold when it writes. Evaluations are rare
  (a schedule, a command), so the lock costs nothing that matters; the punch path never
  takes it.
- The attendance aggregate streams through a server-side cursor in its own transaction,
  page by page, so a province's month (millions of rows) never sits in memory; its reads
  may take longer than `pg_command_timeout_ms` (a sort of the month), so they get
  `_SCAN_TIMEOUT_S`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import date
from typing import Any

import asyncpg

from lmg.protocol.regions import covered_codes
from lmg.storage.api import (
    MAX_ATTENDANCE_PAGE, MAX_WARNING_PAGE, ApplyResult, ApprovedLeave, AttendanceDay, AttendanceMask, BidAward,
    Commitment,
    Disposition, EvaluationScope, KeyPerson, PauseDay, PersonnelChange, ProjectDay, StopWork, UpsertOutcome,
    WarningEvent, WarningFinding, WarningRecord, WarningState, Worker, check_day, check_limit, check_marks, check_mask_window,
    check_project_code,
)
from lmg.storage.backend import WORKER_COLUMNS, check_int, worker
from lmg.storage.errors import UnknownProject, UnknownWarning
from lmg.storage.supervision import (
    AWARD_COLUMNS, CHANGE_COLUMNS, CHINA_OFFSET_MS, DAY_MS, DEVICE_PATH_MAX_DEVICES, DEVICE_READ_COST,
    EVENT_COLUMNS, KEY_POST_CODES, LEAVE_COLUMNS, NOTE_CHARS, PAUSE_COLUMNS, PERSON_COLUMNS,
    RECEIVE_SLACK_MS, STOP_COLUMNS, WARNING_COLUMNS, WARNING_UPDATE_COLUMNS, AwardedPerson, DayCache,
    WarningChange, approved_leave, attendance_day, award_from_rows, canonical_json, check_bid_award, check_by,
    check_days, check_id_number, check_period, check_personnel_change, check_project_codes, check_scope,
    check_text, checked_findings, commitments, day_of, day_range_ms, number_of, pause_day, personnel_change, plan_apply,
    plan_close, plan_escalation, same_award, same_change, search_first_received, stop_work, warning_event,
    warning_filters, warning_record, warning_update_values,
)

# Any number works as long as every lmg uses the same one: "LMG" "sup" in ASCII.
_SUPERVISION_LOCK = 0x4C4D47_737570
# Who runs the scheduled evaluation: one process of all the nodes at a time (server/supervision/service.py).
_EVALUATION_LOCK = 0x4C4D47_657661
# The aggregate of a province's month sorts millions of rows before its first page; the
# store's per-call timeout (10 s by default) is for the gateway's calls, not for this.
_SCAN_TIMEOUT_S = 600.0
_DAY = f"(punch_time_ms + {CHINA_OFFSET_MS}) / {DAY_MS}"
_WARNING_SELECT = f"SELECT {WARNING_COLUMNS.replace('figures', 'figures::text')} FROM warnings"
_EVENT_SELECT = f"SELECT {EVENT_COLUMNS.replace('detail', 'detail::text')} FROM warning_events"
_NEW_WARNING = ("key", "rule", "project_code", "region_code", "worker_id", "post", "period_start",
                "opened_at_ms", "forwarded_version", *WARNING_UPDATE_COLUMNS)
_TYPES = {"period_start": "date", "period_end": "date", "figures": "text", "level": "integer",
          "opened_at_ms": "bigint", "forwarded_version": "bigint", "level_since_ms": "bigint",
          "updated_at_ms": "bigint", "resolved_at_ms": "bigint", "closed_at_ms": "bigint", "version": "bigint"}
_INSERT_WARNINGS = (
    f"INSERT INTO warnings ({', '.join(_NEW_WARNING)}) "
    f"SELECT {', '.join('figures::jsonb' if c == 'figures' else c for c in _NEW_WARNING)} FROM unnest("
    + ", ".join(f"${n}::{_TYPES.get(c, 'text')}[]" for n, c in enumerate(_NEW_WARNING, start=1))
    + f") AS t({', '.join(_NEW_WARNING)}) RETURNING id, key")
_UPDATE_WARNING = ("UPDATE warnings SET "
                   + ", ".join(f"{c} = ${n}" + ("::jsonb" if c == "figures" else "")
                               for n, c in enumerate(WARNING_UPDATE_COLUMNS, start=1))
                   + f" WHERE id = ${len(WARNING_UPDATE_COLUMNS) + 1}")
_INSERT_EVENT = ("INSERT INTO warning_events (warning_id, at_ms, event, level, state, by, detail) "
                 "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)")


async def _require_project(conn: asyncpg.Connection, project_code: str) -> None:
    if await conn.fetchval("SELECT 1 FROM projects WHERE code = $1", project_code) is None:
        raise UnknownProject(project_code)


async def _award(conn: asyncpg.Connection, notice_no: str) -> BidAward | None:
    row = await conn.fetchrow(f"SELECT {AWARD_COLUMNS} FROM bid_awards WHERE notice_no = $1", notice_no)
    if row is None:
        return None
    return award_from_rows(row, await conn.fetch(f"SELECT {PERSON_COLUMNS} FROM bid_personnel "
                                                 f"WHERE notice_no = $1", notice_no))


async def _write_changes(conn: asyncpg.Connection, changes: Sequence[WarningChange]) -> list[WarningRecord]:
    """Insert the new warnings (one statement), update the others, append every event;
    the warnings as stored, in the order of `changes`."""
    new = [c.after for c in changes if c.before is None]
    ids: dict[str, int] = {}
    if new:
        columns: list[list[Any]] = [[] for _ in _NEW_WARNING]
        for w in new:
            for column, value in zip(columns, (w.key, w.rule, w.project_code, w.region_code, w.worker_id, w.post,
                                               w.period_start, w.opened_at_ms, w.forwarded_version,
                                               *warning_update_values(w))):
                column.append(value)
        ids = {row[1]: row[0] for row in await conn.fetch(_INSERT_WARNINGS, *columns)}
    written = [replace(c.after, id=ids[c.after.key]) if c.before is None else c.after for c in changes]
    updates = [(*warning_update_values(c.after), c.after.id) for c in changes if c.before is not None]
    if updates:
        await conn.executemany(_UPDATE_WARNING, updates)
    await conn.executemany(_INSERT_EVENT, [
        (w.id, w.updated_at_ms, c.event.value, w.level, w.state.value, c.by,
         canonical_json("detail", c.detail, limit=1 << 20)) for c, w in zip(changes, written)])
    return written


class PostgresSupervision:
    """The supervision methods of `Store` for PostgreSQL; mixed into PostgresStore, whose
    pool and clock these use."""

    # Provided by PostgresStore.
    clock_ms: Callable[[], int]
    _connection: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]
    _fetch: Callable[..., Any]
    _execute: Callable[..., Any]

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction holding the supervision lock: `async with self._locked() as conn`."""
        async with self._connection() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SUPERVISION_LOCK)
                yield conn

    @asynccontextmanager
    async def evaluation_lock(self) -> AsyncIterator[bool]:
        """A session-level try-lock on its own pooled connection, held for the block (see
        Store.evaluation_lock); released before the connection goes back to the pool."""
        async with self._connection() as conn:
            held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", _EVALUATION_LOCK))
            try:
                yield held
            finally:
                if held:
                    await conn.execute("SELECT pg_advisory_unlock($1)", _EVALUATION_LOCK)

    # bid awards and changes ---------------------------------------------------------
    async def import_bid_award(self, award: BidAward) -> tuple[BidAward, UpsertOutcome]:
        checked = check_bid_award(award)
        async with self._locked() as conn:
            await _require_project(conn, checked.project_code)
            stored = await _award(conn, checked.notice_no)
            if stored is not None and same_award(stored, checked):
                return stored, "unchanged"
            if stored is not None:
                await conn.execute("DELETE FROM bid_awards WHERE notice_no = $1", checked.notice_no)  # cascades
            await conn.execute(f"INSERT INTO bid_awards ({AWARD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                               checked.notice_no, checked.project_code, checked.enterprise,
                               checked.enterprise_uscc, checked.award_date, self.clock_ms())
            await conn.executemany(f"INSERT INTO bid_personnel ({PERSON_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
                                   [(checked.notice_no, p.post, p.id_number, p.name, p.certificate_no)
                                    for p in checked.personnel])
            made = await _award(conn, checked.notice_no)
        assert made is not None
        return made, "added" if stored is None else "updated"

    async def get_bid_award(self, notice_no: str) -> BidAward | None:
        awards = await self._awards("a.notice_no = $1", notice_no)
        return awards[0] if awards else None

    async def list_bid_awards(self, project_code: str) -> list[BidAward]:
        check_project_code(project_code)
        return await self._awards("a.project_code = $1", project_code)

    async def _awards(self, condition: str, value: str) -> list[BidAward]:
        columns = ", ".join(f"a.{c.strip()}" for c in AWARD_COLUMNS.split(","))
        people = ", ".join(f"p.{c.strip()}" for c in PERSON_COLUMNS.split(","))
        rows = await self._fetch(
            f"SELECT {columns}, {people} FROM bid_awards a JOIN bid_personnel p ON p.notice_no = a.notice_no "
            f"WHERE {condition} ORDER BY a.award_date, a.notice_no", value)
        grouped: dict[str, tuple[tuple, list[tuple]]] = {}
        for row in rows:
            grouped.setdefault(row[0], (tuple(row[:6]), []))[1].append(tuple(row[6:]))
        return [award_from_rows(award, people_rows) for award, people_rows in grouped.values()]

    async def record_personnel_change(self, change: PersonnelChange) -> tuple[PersonnelChange, UpsertOutcome]:
        c = check_personnel_change(change)
        key = (c.project_code, c.post, c.old_id_number, c.new_id_number, c.approved_on)
        where = ("WHERE project_code = $1 AND post = $2 AND old_id_number = $3 AND new_id_number = $4 "
                 "AND approved_on = $5")
        async with self._locked() as conn:
            await _require_project(conn, c.project_code)
            row = await conn.fetchrow(f"SELECT {CHANGE_COLUMNS} FROM personnel_changes {where}", *key)
            if row is not None and same_change(personnel_change(row), c):
                return personnel_change(row), "unchanged"
            if row is None:
                await conn.execute(
                    "INSERT INTO personnel_changes (project_code, post, old_id_number, new_id_number, approved_on, "
                    "new_name, new_certificate_no, approval_ref, recorded_at_ms) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", *key, c.new_name, c.new_certificate_no,
                    c.approval_ref, self.clock_ms())
            else:
                await conn.execute(f"UPDATE personnel_changes SET new_name = $6, new_certificate_no = $7, "
                                   f"approval_ref = $8 {where}", *key, c.new_name, c.new_certificate_no,
                                   c.approval_ref)
            stored = personnel_change(await conn.fetchrow(f"SELECT {CHANGE_COLUMNS} FROM personnel_changes {where}",
                                                          *key))
        return stored, "added" if row is None else "updated"

    async def list_personnel_changes(self, project_code: str) -> list[PersonnelChange]:
        check_project_code(project_code)
        rows = await self._fetch(f"SELECT {CHANGE_COLUMNS} FROM personnel_changes WHERE project_code = $1 "
                                 f"ORDER BY approved_on, id", project_code)
        return [personnel_change(row) for row in rows]

    async def key_personnel(self, project_codes: Collection[str] | None, first_day: date,
                            last_day: date) -> list[Commitment]:
        codes = check_project_codes(project_codes)
        check_days(first_day, last_day)
        people = await self._fetch(
            "SELECT a.notice_no, a.project_code, a.award_date, p.post, p.id_number, p.name, p.certificate_no "
            "FROM bid_awards a JOIN bid_personnel p ON p.notice_no = a.notice_no "
            "WHERE $1::text[] IS NULL OR a.project_code = ANY($1::text[])", codes)
        changes = await self._fetch(f"SELECT {CHANGE_COLUMNS} FROM personnel_changes "
                                    f"WHERE $1::text[] IS NULL OR project_code = ANY($1::text[])", codes)
        awarded = [AwardedPerson(r[0], r[1], r[2], KeyPerson(r[3], r[4], r[5], r[6])) for r in people]
        return commitments(awarded, map(personnel_change, changes), first_day, last_day)

    # leave, stop-work, pause days ---------------------------------------------------
    async def _upsert(self, project_code: str | None, sql: str, *args: Any) -> Any:
        async with self._connection() as conn:
            async with conn.transaction():
                if project_code is not None:
                    await _require_project(conn, project_code)
                return await conn.fetchrow(sql, *args)

    async def add_leave(self, project_code: str, id_number: str, first_day: date, last_day: date,
                        reference: str) -> ApprovedLeave:
        check_period(project_code, first_day, last_day, reference)
        check_id_number("id_number", id_number)
        return approved_leave(await self._upsert(
            project_code,
            f"INSERT INTO approved_leave (project_code, id_number, first_day, last_day, reference, recorded_at_ms) "
            f"VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project_code, id_number, first_day, last_day) "
            f"DO UPDATE SET reference = excluded.reference RETURNING {LEAVE_COLUMNS}",
            project_code, id_number, first_day, last_day, reference, self.clock_ms()))

    async def list_leave(self, *, first_day: date, last_day: date, project_codes: Collection[str] | None = None,
                         id_number: str | None = None) -> list[ApprovedLeave]:
        codes = check_project_codes(project_codes)
        check_days(first_day, last_day)
        rows = await self._fetch(
            f"SELECT {LEAVE_COLUMNS} FROM approved_leave WHERE first_day <= $1 AND last_day >= $2 "
            f"AND ($3::text[] IS NULL OR project_code = ANY($3::text[])) AND ($4::text IS NULL OR id_number = $4) "
            f"ORDER BY project_code, id_number, first_day", last_day, first_day, codes, id_number)
        return [approved_leave(row) for row in rows]

    async def delete_leave(self, leave_id: int) -> bool:
        check_int("leave_id", leave_id)
        return await self._execute("DELETE FROM approved_leave WHERE id = $1", leave_id) != "DELETE 0"

    async def add_stop_work(self, project_code: str, first_day: date, last_day: date,
                            reference: str) -> StopWork:
        check_period(project_code, first_day, last_day, reference)
        return stop_work(await self._upsert(
            project_code,
            f"INSERT INTO stop_work (project_code, first_day, last_day, reference, recorded_at_ms) "
            f"VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_code, first_day, last_day) "
            f"DO UPDATE SET reference = excluded.reference RETURNING {STOP_COLUMNS}",
            project_code, first_day, last_day, reference, self.clock_ms()))

    async def list_stop_work(self, *, first_day: date, last_day: date,
                             project_codes: Collection[str] | None = None) -> list[StopWork]:
        codes = check_project_codes(project_codes)
        check_days(first_day, last_day)
        rows = await self._fetch(
            f"SELECT {STOP_COLUMNS} FROM stop_work WHERE first_day <= $1 AND last_day >= $2 "
            f"AND ($3::text[] IS NULL OR project_code = ANY($3::text[])) ORDER BY project_code, first_day",
            last_day, first_day, codes)
        return [stop_work(row) for row in rows]

    async def delete_stop_work(self, stop_id: int) -> bool:
        check_int("stop_id", stop_id)
        return await self._execute("DELETE FROM stop_work WHERE id = $1", stop_id) != "DELETE 0"

    async def set_pause_day(self, day: date, reason: str) -> PauseDay:
        check_day("day", day)
        check_text("reason", reason)
        return pause_day(await self._upsert(
            None, f"INSERT INTO pause_days (day, reason, recorded_at_ms) VALUES ($1, $2, $3) ON CONFLICT (day) "
                  f"DO UPDATE SET reason = excluded.reason, recorded_at_ms = excluded.recorded_at_ms "
                  f"RETURNING {PAUSE_COLUMNS}", day, reason, self.clock_ms()))

    async def get_supervision_marks(self) -> dict[str, int]:
        return {row[0]: row[1] for row in await self._fetch("SELECT name, value_ms FROM supervision_marks")}

    async def set_supervision_marks(self, marks: Mapping[str, int]) -> None:
        pairs = check_marks(marks)
        if not pairs:
            return
        now = self.clock_ms()
        async with self._connection() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO supervision_marks (name, value_ms, set_at_ms) VALUES ($1, $2, $3) ON CONFLICT (name) "
                "DO UPDATE SET value_ms = excluded.value_ms, set_at_ms = excluded.set_at_ms",
                [(name, value, now) for name, value in pairs])

    async def list_pause_days(self, first_day: date, last_day: date) -> list[PauseDay]:
        check_days(first_day, last_day)
        rows = await self._fetch(f"SELECT {PAUSE_COLUMNS} FROM pause_days WHERE day BETWEEN $1 AND $2 ORDER BY day",
                                 first_day, last_day)
        return [pause_day(row) for row in rows]

    async def delete_pause_day(self, day: date) -> bool:
        check_day("day", day)
        return await self._execute("DELETE FROM pause_days WHERE day = $1", day) != "DELETE 0"

    # attendance ---------------------------------------------------------------------
    async def _first_id_received(self, conn: asyncpg.Connection, since_ms: int) -> int | None:
        first, last = await conn.fetchrow("SELECT min(id), max(id) FROM punches")
        if first is None:
            return None
        search = search_first_received(first, last, since_ms - RECEIVE_SLACK_MS)
        try:
            asked = next(search)
            while True:
                row = await conn.fetchrow("SELECT id, received_at_ms FROM punches WHERE id >= $1 ORDER BY id LIMIT 1",
                                          asked)
                asked = search.send(None if row is None else (row[0], row[1]))
        except StopIteration as done:
            found: int = done.value
            return found

    async def _attendance_query(self, conn: asyncpg.Connection, codes: list[str] | None, since_ms: int,
                                until_ms: int, masks: tuple[int, int, int] | None = None
                                ) -> tuple[str, list[Any]] | None:
        """The aggregate's SQL and arguments on the path reading fewer rows; None when
        nothing can match (see Store.iter_attendance_days). `masks`: (first day number,
        min_punches, min_span_ms) for the per-person masks (Store.iter_attendance_masks)."""
        low = await self._first_id_received(conn, since_ms)
        if low is None:
            return None
        where = "id >= $4"
        args: list[Any] = [low]
        if codes is not None:
            serials = [r[0] for r in await conn.fetch("SELECT serial FROM devices WHERE project_code = ANY($1::text[])",
                                                      codes)]
            if not serials:
                return None
            # by arrival, the other projects' punches are dropped before they are grouped
            where, args = "id >= $4 AND device_serial = ANY($5::text[])", [low, serials]
            if len(serials) <= DEVICE_PATH_MAX_DEVICES:
                in_range = await conn.fetchval("SELECT max(id) FROM punches") - low + 1
                on_devices = await conn.fetchval(
                    "SELECT count(*) FROM punches WHERE device_serial = ANY($1::text[])", serials,
                    timeout=_SCAN_TIMEOUT_S)
                if on_devices * DEVICE_READ_COST < in_range:
                    where, args = "device_serial = ANY($4::text[])", [serials]
        per_day = (f"SELECT d.project_code, a.worker_id, a.day, sum(a.n)::bigint AS n, min(a.first_ms) AS first_ms, "
                   f"max(a.last_ms) AS last_ms "
                   f"FROM (SELECT device_serial, worker_id, {_DAY} AS day, count(*) AS n, "
                   f"min(punch_time_ms) AS first_ms, max(punch_time_ms) AS last_ms FROM punches "
                   f"WHERE {where} AND punch_time_ms >= $1 AND punch_time_ms < $2 "
                   f"GROUP BY device_serial, worker_id, day) a JOIN devices d ON d.serial = a.device_serial "
                   f"WHERE $3::text[] IS NULL OR d.project_code = ANY($3::text[]) "
                   f"GROUP BY d.project_code, a.worker_id, a.day")
        if masks is None:
            return per_day + " ORDER BY d.project_code, a.worker_id, a.day", [since_ms, until_ms, codes, *args]
        # one row per (project, person): the days as bits from the window's first day
        base, least, span = (f"${4 + len(args) + n}" for n in range(3))
        sql = (f"SELECT project_code, worker_id, bit_or(1::bigint << (day - {base})::int), "
               f"coalesce(bit_or(CASE WHEN n >= {least} AND last_ms - first_ms >= {span} "
               f"THEN 1::bigint << (day - {base})::int END), 0) "
               f"FROM ({per_day}) x GROUP BY project_code, worker_id ORDER BY project_code, worker_id")
        return sql, [since_ms, until_ms, codes, *args, *masks]

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
        days = DayCache()
        async with self._connection() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                query = await self._attendance_query(conn, codes, since_ms, until_ms, masks)
                if query is None:
                    return
                if masks is not None:
                    # Fetched whole, not through a cursor: PostgreSQL plans no parallel workers
                    # for a cursor, and the masks are one row per person (120,000 a province,
                    # ~15 MB), where the day rows are millions.
                    rows = await conn.fetch(query[0], *query[1], timeout=_SCAN_TIMEOUT_S)
                    for start in range(0, len(rows), MAX_ATTENDANCE_PAGE):
                        yield [tuple.__new__(AttendanceMask, tuple(row))
                               for row in rows[start:start + MAX_ATTENDANCE_PAGE]]
                    return
                cursor = await conn.cursor(query[0], *query[1], timeout=_SCAN_TIMEOUT_S)
                while rows := await cursor.fetch(MAX_ATTENDANCE_PAGE, timeout=_SCAN_TIMEOUT_S):
                    yield [attendance_day(row, days) for row in rows]

    async def days_with_punches_received(self, after_ms: int, *, until_ms: int | None = None) -> list[ProjectDay]:
        check_int("after_ms", after_ms)
        check_int("until_ms", until_ms, optional=True)
        async with self._connection() as conn:
            low = await self._first_id_received(conn, after_ms)
            if low is None:
                return []
            rows = await conn.fetch(
                f"SELECT DISTINCT d.project_code, a.day FROM (SELECT DISTINCT device_serial, {_DAY} AS day "
                f"FROM punches WHERE id >= $1 AND received_at_ms > $2 "
                f"AND ($3::bigint IS NULL OR received_at_ms <= $3)) a "
                f"JOIN devices d ON d.serial = a.device_serial ORDER BY 1, 2", low, after_ms, until_ms,
                timeout=_SCAN_TIMEOUT_S)
        return [ProjectDay(code, day_of(day)) for code, day in rows]

    async def list_key_post_workers(self, project_codes: Collection[str] | None = None) -> list[Worker]:
        codes = check_project_codes(project_codes)
        rows = await self._fetch(
            f"SELECT {WORKER_COLUMNS} FROM workers WHERE post = ANY($1::text[]) "
            f"AND ($2::text[] IS NULL OR project_code = ANY($2::text[])) ORDER BY project_code, worker_id",
            list(KEY_POST_CODES), codes)
        return [worker(row) for row in rows]

    # warnings -----------------------------------------------------------------------
    async def apply_warnings(self, scope: EvaluationScope, findings: Sequence[WarningFinding],
                             now_ms: int) -> ApplyResult:
        checked_scope = check_scope(scope)
        checked = checked_findings(checked_scope, findings)
        check_int("now_ms", now_ms)
        codes = None if checked_scope.project_codes is None else sorted(checked_scope.project_codes)
        wanted = sorted({f.project_code for f in checked})
        async with self._locked() as conn:
            stored = {w.key: w for w in map(warning_record, await conn.fetch(
                f"{_WARNING_SELECT} WHERE period_start BETWEEN $1 AND $2 AND rule = ANY($3::text[]) "
                f"AND ($4::text[] IS NULL OR project_code = ANY($4::text[]))",
                checked_scope.first_day, checked_scope.last_day, sorted(checked_scope.rules), codes))}
            regions = {r[0]: r[1] for r in await conn.fetch(
                "SELECT code, region_code FROM projects WHERE code = ANY($1::text[])", wanted)}
            for code in wanted:
                if code not in regions:
                    raise UnknownProject(code)
            plan = plan_apply(checked_scope, checked, stored, regions, now_ms)
            await _write_changes(conn, plan.changes)
        return plan.result

    async def escalate_warnings(self, now_ms: int, *, level2_after_ms: int, level3_after_ms: int) -> int:
        check_int("now_ms", now_ms)
        plan_escalation([], now_ms, level2_after_ms, level3_after_ms)  # checks the waits
        async with self._locked() as conn:
            due = [warning_record(row) for row in await conn.fetch(
                f"{_WARNING_SELECT} WHERE state = 'open' AND ((level = 1 AND level_since_ms <= $1) "
                f"OR (level = 2 AND level_since_ms <= $2)) ORDER BY id",
                now_ms - level2_after_ms, now_ms - level3_after_ms)]
            changes = plan_escalation(due, now_ms, level2_after_ms, level3_after_ms)
            await _write_changes(conn, changes)
        return len(changes)

    async def close_warning(self, warning_id: int, disposition: Disposition | str, *, note: str, by: str,
                            now_ms: int) -> WarningRecord:
        check_int("warning_id", warning_id)
        check_int("now_ms", now_ms)
        chosen = Disposition.parse(disposition)
        check_text("note", note, required=chosen is Disposition.FALSE_ALARM, chars=NOTE_CHARS)
        check_by(by)
        async with self._locked() as conn:
            row = await conn.fetchrow(f"{_WARNING_SELECT} WHERE id = $1", warning_id)
            if row is None:
                raise UnknownWarning(warning_id)
            return (await _write_changes(conn, [plan_close(warning_record(row), chosen, note, by, now_ms)]))[0]

    async def get_warning(self, warning_id: int) -> WarningRecord | None:
        check_int("warning_id", warning_id)
        rows = await self._fetch(f"{_WARNING_SELECT} WHERE id = $1", warning_id)
        return warning_record(rows[0]) if rows else None

    async def warning_history(self, warning_id: int) -> list[WarningEvent]:
        check_int("warning_id", warning_id)
        rows = await self._fetch(f"{_EVENT_SELECT} WHERE warning_id = $1 ORDER BY id", warning_id)
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
        parts: list[str] = ["id > $1"]
        params: list[Any] = [after_id]
        if region_scope is not None:
            params.append(sorted(covered_codes(region_scope)))
            parts.append(f"region_code = ANY(${len(params)}::text[])")
        for condition, value in conditions:
            if value is not None:
                params.append(value)
                parts.append(condition.format(f"${len(params)}"))
        rows = await self._fetch(f"{_WARNING_SELECT} WHERE {' AND '.join(parts)} ORDER BY id "
                                 f"LIMIT ${len(params) + 1}", *params, limit)
        return [warning_record(row) for row in rows]

    async def warnings_to_forward(self, limit: int = 100) -> list[WarningRecord]:
        check_limit(limit, MAX_WARNING_PAGE)
        rows = await self._fetch(f"{_WARNING_SELECT} WHERE version > forwarded_version ORDER BY id LIMIT $1", limit)
        return [warning_record(row) for row in rows]

    async def mark_warnings_forwarded(self, versions: Sequence[tuple[int, int]]) -> int:
        pairs = [(int(warning_id), int(version)) for warning_id, version in versions]
        if not pairs:
            return 0
        status = await self._execute(
            "UPDATE warnings w SET forwarded_version = least(v.version, w.version) "
            "FROM unnest($1::bigint[], $2::bigint[]) AS v(id, version) "
            "WHERE w.id = v.id AND w.forwarded_version < least(v.version, w.version)",
            [p[0] for p in pairs], [p[1] for p in pairs])
        return int(status.rsplit(" ", 1)[-1])

