"""The supervision glue on both backends: a month evaluated end to end from stored punches,
idempotence, a late backlog that clears warnings on the next scheduled run, escalation at
exactly N days through the injected clock, the schedule's plan, and the evaluation lock."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from lmg.protocol.identity import check_digit
from lmg.server.supervision.calendar import Month
from lmg.server.supervision.rules import default_rules
from lmg.server.supervision.service import (
    SupervisionSchedule,
    evaluate_month,
    evaluate_month_run,
    evaluation_pool,
    find,
    plan,
)
from lmg.storage import ApplyResult, BidAward, KeyPerson, PunchIn, WarningState
from lmg.storage.supervision import day_start_ms

RULES = default_rules()
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MARCH = Month(2026, 3)
USCC = "91620000224330386X"


def person(n: int) -> str:
    first17 = f"62010219800101{n:03d}"
    return first17 + check_digit(first17)


PM, SAFETY = person(1), person(2)


def at(day: date, hour: int) -> int:
    return day_start_ms(day) + hour * HOUR_MS


def month_days(month: Month) -> list[date]:
    return [month.first + timedelta(days=n) for n in range((month.last - month.first).days + 1)]


class Records:
    """Punches of one device, numbered in the order made."""

    def __init__(self, serial: str) -> None:
        self.serial, self.next_no = serial, 1

    def days(self, who: str, days: list[date]) -> list[PunchIn]:
        out = []
        for day in days:  # in at 08:00, out at 17:00: a valid day
            for hour in (8, 17):
                out.append(PunchIn(self.serial, self.next_no, who, at(day, hour), 1, 1, 365, None, 0))
                self.next_no += 1
        return out


ABSENT = [date(2026, 3, d) for d in range(10, 21)]  # the safety officer, 11 days
BACKLOG = [d for d in ABSENT if d.day not in (11, 14, 17)]  # what the offline terminal held


async def site(store, clock) -> Records:
    """Project P1 (城关区) started 1 March 2026, one terminal, a bid award naming a project
    manager and a safety officer; March's punches stored on 1 April but for the safety
    officer's 10-20 March."""
    clock.now_ms = at(date(2026, 2, 1), 9)
    await store.add_project("P1", name="工程 P1", region_code="620102", start_date=date(2026, 3, 1))
    await store.add_device("D1", project_code="P1", region_code="620102")
    await store.import_bid_award(BidAward("GS-2026-001", "P1", "甘肃建工集团", USCC, date(2026, 2, 1), (
        KeyPerson("project-manager", PM, "张经理"), KeyPerson("safety-officer", SAFETY, "李安全"))))
    records = Records("D1")
    clock.now_ms = at(date(2026, 4, 1), 6)
    present = [d for d in month_days(MARCH) if d not in ABSENT]
    await store.store_punches(records.days(PM, month_days(MARCH)) + records.days(SAFETY, present))
    return records


async def warnings(store, month: Month = MARCH) -> dict[str, tuple[WarningState, int]]:
    """March's warnings (the schedule also evaluates April, where nobody punched)."""
    return {w.key: (w.state, w.level) for w in await store.list_warnings(limit=1000)
            if month.first <= w.period_start <= month.last}


async def test_a_month_is_evaluated_from_stored_punches(sv_store, clock):
    await site(sv_store, clock)
    run = await evaluate_month_run(sv_store, RULES, MARCH, as_of=None, now_ms=clock())
    assert run.applied == ApplyResult(opened=2)
    assert run.by_rule == {"consecutive-absence": 1, "low-presence": 1}
    stored = {w.rule: w for w in await sv_store.list_warnings()}
    assert set(stored) == {"consecutive-absence", "low-presence"}
    low = stored["low-presence"]
    assert (low.worker_id, low.post, low.region_code, low.level) == (SAFETY, "safety-officer", "620102", 1)
    assert (low.figures["valid_days"], low.figures["construction_days"]) == (20, 31)
    run_warning = stored["consecutive-absence"]
    assert (run_warning.period_start, run_warning.period_end) == (date(2026, 3, 10), date(2026, 3, 20))


async def test_evaluating_twice_changes_nothing(sv_store, clock):
    await site(sv_store, clock)
    await evaluate_month(sv_store, RULES, MARCH, as_of=None, now_ms=clock())
    before = await sv_store.list_warnings()
    histories = [await sv_store.warning_history(w.id) for w in before]
    clock.now_ms += HOUR_MS
    again = await evaluate_month(sv_store, RULES, MARCH, as_of=None, now_ms=clock())
    assert again == ApplyResult(unchanged=2)
    assert await sv_store.list_warnings() == before
    assert [await sv_store.warning_history(w.id) for w in before] == histories


async def test_a_small_chunk_gives_the_same_findings(sv_store, clock):
    """Chunks of one project, and a person committed on two projects (double-post) across chunks."""
    records = await site(sv_store, clock)
    await sv_store.add_project("P2", name="工程 P2", region_code="620102", start_date=date(2026, 3, 1))
    await sv_store.add_device("D2", project_code="P2", region_code="620102")
    await sv_store.import_bid_award(BidAward("GS-2026-002", "P2", "甘肃建工集团", USCC, date(2026, 2, 1), (
        KeyPerson("project-manager", PM, "张经理"),)))
    other = Records("D2")
    await sv_store.store_punches(other.days(PM, [date(2026, 3, 3)]))
    del records
    whole = await evaluate_month_run(sv_store, RULES, MARCH, as_of=None, now_ms=clock(), escalate=False)
    chunked = await evaluate_month_run(sv_store, RULES, MARCH, as_of=None, now_ms=clock(), escalate=False,
                                       chunk_projects=1)
    assert whole.by_rule == chunked.by_rule
    assert whole.by_rule["double-post"] == 2  # one per project, naming the other
    assert chunked.applied == ApplyResult(unchanged=whole.findings)


async def test_the_process_pool_finds_what_the_loop_finds(sv_store, clock):
    """The gateway's way: chunks evaluated in a spawned process while the loop reads on."""
    await site(sv_store, clock)
    await sv_store.add_project("P2", name="工程 P2", region_code="620103", start_date=date(2026, 3, 1))
    on_loop = await find(sv_store, RULES, MARCH, as_of=None, chunk_projects=1)
    pool = evaluation_pool()
    try:
        in_pool = await find(sv_store, RULES, MARCH, as_of=None, chunk_projects=1, executor=pool)
    finally:
        pool.shutdown()
    assert in_pool.findings == on_loop.findings and len(in_pool.findings) == 2
    assert in_pool.scope == on_loop.scope and in_pool.scope.project_codes == {"P1", "P2"}


async def test_a_late_backlog_clears_the_warnings_on_the_next_scheduled_run(sv_store, clock):
    records = await site(sv_store, clock)
    clock.now_ms = at(date(2026, 4, 1), 10)
    schedule = SupervisionSchedule(sv_store, RULES, clock_ms=clock, interval_s=3600)
    runs = await schedule.run_once()
    assert runs is not None and [(r.month, r.as_of) for r in runs] == [(MARCH, None)]
    assert sorted(state for state, _ in (await warnings(sv_store)).values()) == [WarningState.OPEN] * 2
    # the offline terminal comes back on 3 April with the safety officer's March punches
    clock.now_ms = at(date(2026, 4, 3), 9)
    await sv_store.store_punches(records.days(SAFETY, BACKLOG))
    clock.now_ms = at(date(2026, 4, 3), 10)
    runs = await schedule.run_once()
    assert runs is not None and MARCH in [r.month for r in runs]
    march = next(r for r in runs if r.month == MARCH)
    assert march.applied == ApplyResult(resolved=2) and march.findings == 0
    assert sorted(state for state, _ in (await warnings(sv_store)).values()) == [WarningState.RESOLVED] * 2
    # and nothing more on the run after
    clock.now_ms += HOUR_MS
    runs = await schedule.run_once()
    assert runs is not None and [r.month for r in runs] == [Month(2026, 4)]


async def test_a_restarted_schedule_starts_from_the_stores_mark_not_two_days_back(sv_store, clock):
    """The mark of the last look is the store's: a backlog received while the evaluation was
    off (or failing) for longer than the first-run look-back is still found, and a month
    evaluated in full before the restart is not evaluated again."""
    records = await site(sv_store, clock)
    clock.now_ms = at(date(2026, 4, 1), 10)
    before = SupervisionSchedule(sv_store, RULES, clock_ms=clock, interval_s=3600)
    assert [(r.month, r.as_of) for r in await before.run_once() or []] == [(MARCH, None)]
    assert (await sv_store.get_supervision_marks())["backlog_checked_ms"] == clock.now_ms
    # the backlog arrives on 2 April; the evaluation is off until 6 April (4 days > 2)
    clock.now_ms = at(date(2026, 4, 2), 9)
    await sv_store.store_punches(records.days(SAFETY, BACKLOG))
    clock.now_ms = at(date(2026, 4, 6), 10)
    after = SupervisionSchedule(sv_store, RULES, clock_ms=clock, interval_s=3600)  # a new process
    runs = await after.run_once()
    assert runs is not None and MARCH in [r.month for r in runs]
    assert sorted(state for state, _ in (await warnings(sv_store)).values()) == [WarningState.RESOLVED] * 2
    # without a backlog, the new process does not redo March, which the old one completed
    clock.now_ms += HOUR_MS
    assert [r.month for r in await SupervisionSchedule(sv_store, RULES, clock_ms=clock,
                                                       interval_s=3600).run_once() or []] == [Month(2026, 4)]


async def test_a_mark_that_names_no_month_is_ignored(sv_store, clock, caplog):
    await site(sv_store, clock)
    await sv_store.set_supervision_marks({"month_evaluated:March": 1})
    clock.now_ms = at(date(2026, 4, 1), 10)
    runs = await SupervisionSchedule(sv_store, RULES, clock_ms=clock, interval_s=3600).run_once()
    assert [(r.month, r.as_of) for r in runs or []] == [(MARCH, None)]
    assert "names no month" in caplog.text


async def test_escalation_at_exactly_n_days_by_the_injected_clock(sv_store, clock):
    await site(sv_store, clock)
    opened = clock()
    await evaluate_month(sv_store, RULES, MARCH, as_of=None, now_ms=opened)
    schedule = SupervisionSchedule(sv_store, RULES, clock_ms=clock, interval_s=3600)
    clock.now_ms = opened + 7 * DAY_MS - 1
    await schedule.run_once()
    assert {level for _, level in (await warnings(sv_store)).values()} == {1}
    clock.now_ms = opened + 7 * DAY_MS
    runs = await schedule.run_once()
    assert runs is not None and runs[-1].escalated >= 2
    assert {level for _, level in (await warnings(sv_store)).values()} == {2}
    assert all(w.level_since_ms == opened + 7 * DAY_MS for w in await sv_store.list_warnings()
               if w.period_start < Month(2026, 4).first)
    clock.now_ms = opened + 14 * DAY_MS
    await schedule.run_once()
    assert {level for _, level in (await warnings(sv_store)).values()} == {3}


async def test_nothing_is_decided_before_the_month(sv_store, clock):
    await site(sv_store, clock)
    assert await evaluate_month(sv_store, RULES, MARCH, as_of=date(2026, 2, 27), now_ms=clock()) == ApplyResult()
    # the month to date: only the daily rules (the run of absence, not the monthly share)
    run = await evaluate_month_run(sv_store, RULES, MARCH, as_of=date(2026, 3, 16), now_ms=clock())
    assert run.by_rule == {"consecutive-absence": 1}


async def test_only_one_process_evaluates_at_a_time(sv_store, clock):
    await site(sv_store, clock)
    clock.now_ms = at(date(2026, 4, 1), 10)
    schedule = SupervisionSchedule(sv_store, RULES, clock_ms=clock, interval_s=3600)
    async with sv_store.evaluation_lock() as held:
        assert held
        if sv_store.backend_name == "postgres":  # another connection, as another worker would be
            assert await schedule.run_once() is None
    assert await schedule.run_once() is not None


async def test_the_scheduled_task_runs_until_cancelled(sv_store, clock):
    await site(sv_store, clock)
    clock.now_ms = at(date(2026, 4, 1), 10)
    schedule = SupervisionSchedule(sv_store, RULES, clock_ms=clock, interval_s=3600)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now_ms += int(seconds * 1000)
        if len(slept) == 3:
            raise _Stop

    with pytest.raises(_Stop):
        await schedule.run_every(sleep)
    assert slept == [3600, 3600, 3600] and schedule.runs == 3 and schedule.failures == 0
    assert len(await warnings(sv_store)) == 2


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("today", "backlog", "completed", "expected"), [
    # mid-month: the month to date, as of yesterday
    (date(2026, 3, 15), [], set(), [(MARCH, date(2026, 3, 14), "daily")]),
    # the 1st: yesterday's month in full
    (date(2026, 4, 1), [], set(), [(MARCH, None, "daily")]),
    # the 3rd, March not yet done by this process: in full, besides April to date
    (date(2026, 4, 3), [], set(), [(MARCH, None, "month over"), (Month(2026, 4), date(2026, 4, 2), "daily")]),
    (date(2026, 4, 3), [], {MARCH}, [(Month(2026, 4), date(2026, 4, 2), "daily")]),
    # a backlog of February days: February, and March into which its runs may go on
    (date(2026, 4, 20), [date(2026, 2, 27), date(2026, 4, 20)], set(),
     [(Month(2026, 2), None, "late backlog"), (MARCH, None, "late backlog"),
      (Month(2026, 4), date(2026, 4, 19), "daily")]),
])
def test_the_plan(today, backlog, completed, expected):
    assert [(p.month, p.as_of, p.why) for p in plan(today, backlog_days=backlog, completed=completed)] == expected
