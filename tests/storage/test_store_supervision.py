"""The Store contract of the supervision of key personnel (migration 6), on every backend:
bid awards and personnel changes as commitment intervals, leave, stop-work and pause days,
the attendance aggregate, warnings with their state table, escalation, closing, listing by
region and the append-only history, and tokens with a department."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import date, timedelta

import pytest

from lmg.protocol.identity import check_digit
from lmg.storage import (
    ApplyResult, BidAward, Department, Disposition, EvaluationScope, KeyPerson, PersonnelChange, PunchIn,
    TokenExists, UnknownProject, UnknownWarning, WarningClosed, WarningEventKind, WarningFinding, WarningState,
    WorkerIn,
)
from lmg.storage.migrations import load_migrations
from lmg.storage.supervision import day_start_ms
from test_store_migrations import _open_with
from test_store_operations import raw_sql, sha

MARCH = (date(2026, 3, 1), date(2026, 3, 31))
T0 = day_start_ms(date(2026, 4, 1))  # "now" in most tests: the month is over
DAY_MS = 86_400_000
USCC = "91620000224330386X"


def person(n: int) -> str:
    """A valid resident ID number, one per n."""
    first17 = f"62010219800101{n:03d}"
    return first17 + check_digit(first17)


def at(day: date, hour: int, minute: int = 0) -> int:
    """Unix ms of hour:minute of `day` in China."""
    return day_start_ms(day) + (hour * 60 + minute) * 60_000


def award(notice: str = "GS-2026-001", project: str = "P1", day: date = date(2026, 1, 10),
          people: tuple[KeyPerson, ...] | None = None) -> BidAward:
    return BidAward(notice, project, "甘肃建工集团", USCC, day, people if people is not None else (
        KeyPerson("project-manager", person(1), "张经理", "甘162000000001"),
        KeyPerson("safety-officer", person(2), "李安全"),
    ))


async def projects(store, *codes_regions: tuple[str, str]) -> None:
    for code, region in codes_regions:
        await store.add_project(code, name=f"工程 {code}", region_code=region)


def finding(rule: str = "monthly-presence", project: str = "P1", who: int | None = 1,
            post: str | None = "project-manager", start: date = MARCH[0], end: date = MARCH[1], **figures) -> WarningFinding:
    return WarningFinding(rule, project, None if who is None else person(who), post, start, end,
                          figures or {"valid_days": 10, "construction_days": 22, "rate": 0.4545})


SCOPE = EvaluationScope(frozenset({"monthly-presence", "absence-run"}), *MARCH)


# --------------------------------------------------------------- bid awards, changes


async def test_a_bid_award_imports_once_and_a_corrected_one_replaces_it(store):
    await projects(store, ("P1", "620102"))
    made, outcome = await store.import_bid_award(award())
    assert outcome == "added" and made.imported_at_ms > 0
    assert [(p.post, p.id_number) for p in made.personnel] == [("project-manager", person(1)),
                                                                ("safety-officer", person(2))]
    # the same award again, people in another order and a post by its Chinese name
    again = award(people=(KeyPerson("安全员", person(2), "李安全"),
                          KeyPerson("project-manager", person(1), "张经理", "甘162000000001")))
    assert await store.import_bid_award(again) == (made, "unchanged")
    fixed, outcome = await store.import_bid_award(award(people=(KeyPerson("project-manager", person(3), "王经理"),)))
    assert outcome == "updated" and [p.id_number for p in fixed.personnel] == [person(3)]
    assert await store.get_bid_award("GS-2026-001") == fixed
    await store.import_bid_award(award("GS-2026-002", day=date(2026, 1, 5),
                                       people=(KeyPerson("chief-supervisor", person(4), "赵总监"),)))
    assert [a.notice_no for a in await store.list_bid_awards("P1")] == ["GS-2026-002", "GS-2026-001"]
    assert await store.get_bid_award("NOPE") is None and await store.list_bid_awards("P2") == []


@pytest.mark.parametrize("bad, field", [
    (dict(people=(KeyPerson("worker", "x", "某"),)), "id_number"),
    (dict(people=(KeyPerson("worker", person(1), "某"),)), "not a key post"),
    (dict(people=(KeyPerson("project-manager", person(1)[:-1] + "0", "某"),)), "not a valid resident ID"),
    (dict(people=(KeyPerson("project-manager", person(1), "某"), KeyPerson("项目经理", person(1), "某"))),
     "listed twice"),
    (dict(people=()), "at least one"),
    (dict(notice=""), "notice_no"),
    (dict(day="2026-01-10"), "award_date"),
])
async def test_a_bad_award_is_refused_whole(store, bad, field):
    await projects(store, ("P1", "620102"))
    with pytest.raises(ValueError, match=field):
        await store.import_bid_award(award(**bad))
    assert await store.list_bid_awards("P1") == []


async def test_an_award_needs_its_project_and_a_valid_uscc(store):
    with pytest.raises(UnknownProject):
        await store.import_bid_award(award(project="NOPE"))
    await projects(store, ("P1", "620102"))
    with pytest.raises(ValueError, match="enterprise_uscc"):
        await store.import_bid_award(replace(award(), enterprise_uscc="91620000224330386O"))


async def test_changes_make_commitment_intervals(store):
    await projects(store, ("P1", "620102"), ("P2", "620171"))
    await store.import_bid_award(award())
    await store.import_bid_award(award("GS-2026-009", "P2", people=(KeyPerson("project-manager", person(1), "张经理"),)))
    change = PersonnelChange("P1", "项目经理", person(1), person(5), "钱经理", date(2026, 3, 15), "兰建变〔2026〕3号")
    made, outcome = await store.record_personnel_change(change)
    assert outcome == "added" and made.post == "project-manager" and made.id > 0
    assert (await store.record_personnel_change(change))[1] == "unchanged"
    assert (await store.record_personnel_change(replace(change, approval_ref="兰建变〔2026〕3号-改")))[1] == "updated"
    await store.record_personnel_change(PersonnelChange("P1", "project-manager", person(5), person(6), "孙经理",
                                                        date(2026, 5, 1), "兰建变〔2026〕9号"))
    assert [c.new_id_number for c in await store.list_personnel_changes("P1")] == [person(5), person(6)]

    march = await store.key_personnel(["P1"], *MARCH)
    assert [(c.post, c.id_number, c.from_date, c.to_date_exclusive, c.notice_no, c.change_id is not None)
            for c in march] == [
        ("project-manager", person(1), date(2026, 1, 10), date(2026, 3, 15), "GS-2026-001", False),
        ("project-manager", person(5), date(2026, 3, 15), date(2026, 5, 1), None, True),  # until the May change
        ("safety-officer", person(2), date(2026, 1, 10), None, "GS-2026-001", False),
    ]
    spring = await store.key_personnel(["P1"], date(2026, 4, 30), date(2026, 5, 31))
    assert [(c.id_number, c.from_date, c.to_date_exclusive) for c in spring if c.post == "project-manager"] == [
        (person(5), date(2026, 3, 15), date(2026, 5, 1)), (person(6), date(2026, 5, 1), None)]
    may = await store.key_personnel(["P1"], date(2026, 5, 1), date(2026, 5, 31))
    assert [c.id_number for c in may if c.post == "project-manager"] == [person(6)]  # 5 left on 1 May
    both = await store.key_personnel(None, *MARCH)
    assert {c.project_code for c in both} == {"P1", "P2"}
    assert await store.key_personnel([], *MARCH) == []
    before = await store.key_personnel(["P1"], date(2025, 12, 1), date(2025, 12, 31))
    assert before == []  # the award is from January
    with pytest.raises(UnknownProject):
        await store.record_personnel_change(replace(change, project_code="NOPE"))
    with pytest.raises(ValueError, match="same person"):
        await store.record_personnel_change(replace(change, new_id_number=person(1)))


# ------------------------------------------------------------ leave, stop-work, pause


async def test_leave_stop_work_and_pause_days(store):
    await projects(store, ("P1", "620102"), ("P2", "620103"))
    leave = await store.add_leave("P1", person(1), date(2026, 3, 5), date(2026, 3, 7), "请假单 12")
    assert (leave.first_day, leave.last_day, leave.reference) == (date(2026, 3, 5), date(2026, 3, 7), "请假单 12")
    again = await store.add_leave("P1", person(1), date(2026, 3, 5), date(2026, 3, 7), "请假单 12 (补)")
    assert again.id == leave.id and again.reference == "请假单 12 (补)"
    await store.add_leave("P2", person(1), date(2026, 2, 25), date(2026, 3, 1), "x")
    await store.add_leave("P1", person(2), date(2026, 4, 1), date(2026, 4, 2), "x")
    assert [(l.project_code, l.first_day) for l in await store.list_leave(first_day=MARCH[0], last_day=MARCH[1])] == [
        ("P1", date(2026, 3, 5)), ("P2", date(2026, 2, 25))]
    assert len(await store.list_leave(first_day=MARCH[0], last_day=MARCH[1], project_codes=["P2"])) == 1
    assert len(await store.list_leave(first_day=date(2026, 1, 1), last_day=date(2026, 12, 31),
                                      id_number=person(2))) == 1
    assert await store.delete_leave(leave.id) and not await store.delete_leave(leave.id)
    with pytest.raises(ValueError, match="last_day"):
        await store.add_leave("P1", person(1), date(2026, 3, 7), date(2026, 3, 5), "x")
    with pytest.raises(ValueError, match="resident ID"):
        await store.add_leave("P1", "620102", date(2026, 3, 5), date(2026, 3, 5), "x")
    with pytest.raises(UnknownProject):
        await store.add_leave("NOPE", person(1), date(2026, 3, 5), date(2026, 3, 5), "x")

    stop = await store.add_stop_work("P1", date(2026, 3, 10), date(2026, 3, 20), "停工令 1")
    assert (await store.add_stop_work("P1", date(2026, 3, 10), date(2026, 3, 20), "停工令 1")).id == stop.id
    assert [s.id for s in await store.list_stop_work(first_day=date(2026, 3, 20), last_day=date(2026, 3, 25))] == [
        stop.id]
    assert await store.list_stop_work(first_day=date(2026, 3, 21), last_day=date(2026, 3, 25)) == []
    assert await store.delete_stop_work(stop.id)

    await store.set_pause_day(date(2026, 4, 5), "清明节")
    changed = await store.set_pause_day(date(2026, 4, 5), "清明节 (调休)")
    await store.set_pause_day(date(2026, 5, 1), "劳动节")
    assert changed.reason == "清明节 (调休)"
    assert [p.day for p in await store.list_pause_days(date(2026, 4, 1), date(2026, 4, 30))] == [date(2026, 4, 5)]
    assert await store.delete_pause_day(date(2026, 5, 1)) and not await store.delete_pause_day(date(2026, 5, 1))


# ------------------------------------------------------------------------- attendance


def punches(serial: str, who: str, times: list[int], first_record: int = 1) -> list[PunchIn]:
    return [PunchIn(serial, first_record + n, who, t, 1, 1, 365, None, 0) for n, t in enumerate(times)]


async def attendance_fixture(store) -> None:
    await projects(store, ("P1", "620102"), ("P2", "620103"))
    for serial, project in (("D1", "P1"), ("D2", "P1"), ("D3", "P2")):
        await store.add_device(serial, project_code=project, region_code="620102")
    day = date(2026, 3, 2)
    await store.store_punches(
        punches("D1", person(1), [at(day, 8), at(day, 23, 59)])  # 23:59 in Beijing: 2 March
        + punches("D2", person(1), [at(day, 12), at(day + timedelta(days=1), 0, 1)], 10)  # 00:01: 3 March
        + punches("D3", person(1), [at(day, 9)])  # the same person on another project
        + punches("D1", person(2), [at(day - timedelta(days=1), 23, 0)], 20)  # 1 March
        + punches("D9", person(2), [at(day, 10)])  # a device not provisioned: no project
        + punches("D1", person(3), [at(date(2026, 4, 1), 8)], 30))  # April


async def test_attendance_aggregates_per_project_person_and_day_in_china(store):
    await attendance_fixture(store)
    rows = await store.attendance_days(None, *MARCH)
    assert [(r.project_code, r.worker_id[-4:], r.day.day, r.punches, r.first_punch_ms, r.last_punch_ms)
            for r in rows] == [
        ("P1", person(1)[-4:], 2, 3, at(date(2026, 3, 2), 8), at(date(2026, 3, 2), 23, 59)),
        ("P1", person(1)[-4:], 3, 1, at(date(2026, 3, 3), 0, 1), at(date(2026, 3, 3), 0, 1)),
        ("P1", person(2)[-4:], 1, 1, at(date(2026, 3, 1), 23), at(date(2026, 3, 1), 23)),
        ("P2", person(1)[-4:], 2, 1, at(date(2026, 3, 2), 9), at(date(2026, 3, 2), 9)),
    ]
    assert await store.attendance_days(["P2"], *MARCH) == [rows[-1]]
    assert await store.attendance_days(["P1"], *MARCH) == rows[:3]  # the device path: the same rows
    assert await store.attendance_days(["NOPE"], *MARCH) == []
    assert [r.day.day for r in await store.attendance_days(None, date(2026, 3, 3), date(2026, 3, 3))] == [3]
    assert [r.worker_id for r in await store.attendance_days(None, date(2026, 4, 1), date(2026, 4, 1))] == [person(3)]
    with pytest.raises(ValueError, match="last_day"):
        await store.attendance_days(None, MARCH[1], MARCH[0])


async def test_attendance_of_an_empty_store_is_empty(store):
    assert await store.attendance_days(None, *MARCH) == []
    assert await store.days_with_punches_received(0) == []


async def masks(store, codes, first: date, last: date, least: int = 2, span_ms: int = 4 * 3_600_000) -> list:
    return [row async for page in store.iter_attendance_masks(codes, first, last, min_punches=least,
                                                               min_span_ms=span_ms) for row in page]


async def reference_masks(store, codes, first: date, last: date, least: int = 2, span_ms: int = 4 * 3_600_000) -> list:
    """The base class's fold of iter_attendance_days: what the backends' SQL must equal."""
    from lmg.storage import Store

    return [row async for page in Store.iter_attendance_masks(store, codes, first, last, min_punches=least,
                                                               min_span_ms=span_ms) for row in page]


async def test_attendance_masks_are_one_row_per_person_with_valid_days_decided_across_devices(store):
    await attendance_fixture(store)
    window = (date(2026, 2, 1), MARCH[1])  # an evaluation's two months: March is bits 28..58
    rows = await masks(store, None, *window)
    bit = lambda day: 1 << (day - window[0]).days  # noqa: E731
    # person 1 on P1: 2 March has 3 punches on D1 and D2, 08:00 to 23:59 (valid); 3 March one
    # punch at 00:01 (punched, not valid); on P2 one punch; person 2 one punch at 23:00 on 1 March
    assert [(r.project_code, r.worker_id, r.punched, r.valid) for r in rows] == [
        ("P1", person(1), bit(date(2026, 3, 2)) | bit(date(2026, 3, 3)), bit(date(2026, 3, 2))),
        ("P1", person(2), bit(date(2026, 3, 1)), 0),
        ("P2", person(1), bit(date(2026, 3, 2)), 0),
    ]
    assert rows == await reference_masks(store, None, *window)
    # the thresholds are the rules': a 1-punch, 0-hour valid day makes every punched day valid
    assert all(r.valid == r.punched for r in await masks(store, None, *window, least=1, span_ms=0))
    assert await masks(store, ["P1"], *window) == rows[:2] == await reference_masks(store, ["P1"], *window)
    assert await masks(store, ["NOPE"], *window) == [] == await masks(store, [], *window)


async def test_attendance_masks_merge_a_day_split_over_devices(store):
    await projects(store, ("P1", "620102"))
    for serial in ("D1", "D2"):
        await store.add_device(serial, project_code="P1", region_code="620102")
    day = date(2026, 3, 10)
    # in at one turnstile, out at another: neither device has 2 punches or 4 h, the project has both
    await store.store_punches(punches("D1", person(1), [at(day, 8)]) + punches("D2", person(1), [at(day, 17)], 5))
    [row] = await masks(store, None, *MARCH)
    assert row.punched == row.valid == 1 << 9


async def test_attendance_masks_refuse_a_window_longer_than_a_mask(store):
    with pytest.raises(ValueError, match="62 days"):
        await masks(store, None, date(2026, 1, 1), date(2026, 3, 31))
    with pytest.raises(ValueError, match="min_punches"):
        await masks(store, None, *MARCH, least=-1)
    with pytest.raises(ValueError, match="first_day <= last_day"):
        await masks(store, None, MARCH[1], MARCH[0])
    assert await masks(store, None, date(2026, 1, 1), date(2026, 3, 3)) == []  # 62 days: the most


async def test_attendance_masks_equal_the_reference_for_random_punches(store):
    rng = random.Random(15)
    await projects(store, ("P1", "620102"), ("P2", "620103"))
    for serial, project in (("D1", "P1"), ("D2", "P1"), ("D3", "P2")):
        await store.add_device(serial, project_code=project, region_code="620102")
    batch, record = [], 1
    for _ in range(400):
        who = person(rng.randrange(1, 8))
        day = date(2026, 2, 1) + timedelta(days=rng.randrange(0, 59))
        batch += punches(rng.choice(["D1", "D2", "D3"]), who, [at(day, rng.randrange(0, 24), rng.randrange(0, 60))],
                         record)
        record += 1
    await store.store_punches(batch)
    window = (date(2026, 2, 1), MARCH[1])
    for least, span_ms in ((2, 4 * 3_600_000), (1, 0), (3, 3_600_000)):
        got = await masks(store, None, *window, least, span_ms)
        assert got == await reference_masks(store, None, *window, least, span_ms)
        assert got and all(r.valid & ~r.punched == 0 for r in got)
    assert await masks(store, ["P2"], *window) == await reference_masks(store, ["P2"], *window)


async def test_attendance_pages_and_a_consumer_may_stop_early(store, monkeypatch):
    import lmg.storage.postgres_supervision
    import lmg.storage.sqlite_supervision

    for module in (lmg.storage.sqlite_supervision, lmg.storage.postgres_supervision):
        monkeypatch.setattr(module, "MAX_ATTENDANCE_PAGE", 2)
    await attendance_fixture(store)
    pages = [page async for page in store.iter_attendance_days(None, *MARCH)]
    assert [len(p) for p in pages] == [2, 2]
    for _ in range(3):  # leaving the loop gives the scan back, every time
        async for page in store.iter_attendance_days(None, *MARCH):
            assert len(page) == 2
            break
    assert len(await store.attendance_days(None, *MARCH)) == 4


async def test_a_late_backlog_names_the_days_it_touched(backend):
    clock = [T0]
    store = await backend.open(clock_ms=lambda: clock[0])
    await attendance_fixture(store)  # received at T0
    clock[0] = T0 + 3 * DAY_MS
    # a terminal offline for days uploads March punches late
    await store.store_punches(punches("D3", person(7), [at(date(2026, 3, 20), 8), at(date(2026, 3, 21), 8)], 50))
    assert [(d.project_code, d.day) for d in await store.days_with_punches_received(T0 + DAY_MS)] == [
        ("P2", date(2026, 3, 20)), ("P2", date(2026, 3, 21))]
    everything = await store.days_with_punches_received(T0 - 1)
    assert [(d.project_code, d.day.isoformat()) for d in everything] == [
        ("P1", "2026-03-01"), ("P1", "2026-03-02"), ("P1", "2026-03-03"), ("P1", "2026-04-01"),
        ("P2", "2026-03-02"), ("P2", "2026-03-20"), ("P2", "2026-03-21")]
    assert len(await store.days_with_punches_received(T0 - 1, until_ms=T0)) == 5  # the first upload only
    assert await store.days_with_punches_received(T0 + 3 * DAY_MS) == []


async def test_key_post_workers_are_listed_across_projects(store):
    await projects(store, ("P1", "620102"), ("P2", "620103"))
    day = date(2026, 3, 1)
    await store.import_workers("P1", [WorkerIn(person(1), "张经理", post="项目经理", entry_date=day),
                                      WorkerIn(person(9), "工人", entry_date=day)], today=day)
    await store.import_workers("P2", [WorkerIn(person(2), "李总监", post="chief-supervisor", entry_date=day)], today=day)
    assert [(w.project_code, w.post) for w in await store.list_key_post_workers()] == [
        ("P1", "project-manager"), ("P2", "chief-supervisor")]
    assert [w.worker_id for w in await store.list_key_post_workers(["P2"])] == [person(2)]


# --------------------------------------------------------------------------- warnings


async def test_an_evaluation_opens_updates_resolves_and_reopens_and_is_idempotent(store):
    await projects(store, ("P1", "620102"), ("P2", "620171"))
    first = [finding(), finding(who=2, post="safety-officer"), finding(project="P2")]
    assert await store.apply_warnings(SCOPE, first, T0) == ApplyResult(opened=3)
    assert await store.apply_warnings(SCOPE, list(reversed(first)), T0 + 1) == ApplyResult(unchanged=3)
    stored = {w.project_code + w.worker_id[-1]: w for w in await store.list_warnings()}
    p1 = stored["P1" + person(1)[-1]]
    assert (p1.level, p1.state, p1.region_code, p1.opened_at_ms, p1.version) == (1, WarningState.OPEN, "620102", T0, 1)
    assert stored["P2" + person(1)[-1]].region_code == "620171"
    assert p1.figures == {"valid_days": 10, "construction_days": 22, "rate": 0.4545}

    second = [finding(valid_days=12, construction_days=22, rate=0.5454), finding(project="P2")]
    assert await store.apply_warnings(SCOPE, second, T0 + 2) == ApplyResult(updated=1, resolved=1, unchanged=1)
    assert (await store.get_warning(p1.id)).figures["valid_days"] == 12
    third = [*second, finding(who=2, post="safety-officer")]
    assert await store.apply_warnings(SCOPE, third, T0 + 3) == ApplyResult(reopened=1, unchanged=2)
    history = await store.warning_history(stored["P1" + person(2)[-1]].id)
    assert [(e.kind, e.state, e.by) for e in history] == [
        (WarningEventKind.OPENED, WarningState.OPEN, "lmg"), (WarningEventKind.RESOLVED, WarningState.RESOLVED, "lmg"),
        (WarningEventKind.REOPENED, WarningState.OPEN, "lmg")]
    assert [e.kind for e in await store.warning_history(p1.id)] == [WarningEventKind.OPENED,
                                                                     WarningEventKind.FIGURES_CHANGED]
    changed = (await store.warning_history(p1.id))[1]
    assert changed.detail["before"]["figures"]["valid_days"] == 10 and changed.detail["figures"]["valid_days"] == 12


async def test_the_same_findings_in_any_order_leave_the_same_warnings(store):
    await projects(store, ("P1", "620102"))
    findings = [finding(who=n, post=post, **{"valid_days": n}) for n in range(1, 6)
                for post in ("project-manager", "safety-officer")]
    shuffled = random.Random(7)
    for attempt in range(4):
        shuffled.shuffle(findings)
        result = await store.apply_warnings(SCOPE, findings, T0 + attempt)
        assert result == (ApplyResult(opened=10) if attempt == 0 else ApplyResult(unchanged=10))
    assert len(await store.list_warnings()) == 10
    for w in await store.list_warnings():
        assert len(await store.warning_history(w.id)) == 1


async def test_evaluations_racing_each_other_open_each_warning_once(store):
    """Two nodes evaluating the same month at once (PostgreSQL: the supervision lock)."""
    await projects(store, ("P1", "620102"))
    findings = [finding(who=n) for n in range(1, 30)]
    results = await asyncio.gather(*(store.apply_warnings(SCOPE, findings, T0) for _ in range(4)))
    assert sorted(r.opened for r in results) == [0, 0, 0, 29] and sum(r.unchanged for r in results) == 3 * 29
    assert len(await store.list_warnings()) == 29


async def test_a_scope_resolves_only_what_it_evaluated(store):
    await projects(store, ("P1", "620102"), ("P2", "620103"))
    await store.apply_warnings(SCOPE, [finding(), finding(project="P2"),
                                       finding("absence-run", start=date(2026, 3, 5), end=date(2026, 3, 9))], T0)
    only_p1_monthly = EvaluationScope(frozenset({"monthly-presence"}), *MARCH, project_codes=frozenset({"P1"}))
    assert await store.apply_warnings(only_p1_monthly, [], T0 + 1) == ApplyResult(resolved=1)
    april = EvaluationScope(frozenset({"monthly-presence", "absence-run"}), date(2026, 4, 1), date(2026, 4, 30))
    assert await store.apply_warnings(april, [], T0 + 2) == ApplyResult()
    states = {(w.project_code, w.rule): w.state for w in await store.list_warnings()}
    assert states == {("P1", "monthly-presence"): WarningState.RESOLVED, ("P2", "monthly-presence"): WarningState.OPEN,
                      ("P1", "absence-run"): WarningState.OPEN}


async def test_apply_checks_everything_first_and_writes_nothing_on_error(store):
    await projects(store, ("P1", "620102"))
    with pytest.raises(ValueError, match="outside the scope"):
        await store.apply_warnings(SCOPE, [finding(start=date(2026, 4, 1), end=date(2026, 4, 30))], T0)
    with pytest.raises(ValueError, match="found twice"):
        await store.apply_warnings(SCOPE, [finding(), finding(valid_days=3)], T0)
    with pytest.raises(ValueError, match="rule"):
        await store.apply_warnings(SCOPE, [finding("Monthly")], T0)
    with pytest.raises(ValueError, match="figures"):
        await store.apply_warnings(SCOPE, [finding(blob=object())], T0)
    with pytest.raises(UnknownProject):
        await store.apply_warnings(SCOPE, [finding(), finding(project="NOPE")], T0)
    assert await store.list_warnings() == []
    # a rule about the project, not a person
    assert await store.apply_warnings(SCOPE, [finding(who=None, post=None)], T0) == ApplyResult(opened=1)


async def test_escalation_at_exactly_n_days_and_a_late_run_catches_up(store):
    await projects(store, ("P1", "620102"))
    await store.apply_warnings(SCOPE, [finding(who=1), finding(who=2, post="safety-officer")], T0)
    week = 7 * DAY_MS
    assert await store.escalate_warnings(T0 + week - 1, level2_after_ms=week, level3_after_ms=week) == 0
    assert await store.escalate_warnings(T0 + week, level2_after_ms=week, level3_after_ms=week) == 2
    assert {w.level for w in await store.list_warnings()} == {2}
    assert all(w.level_since_ms == T0 + week for w in await store.list_warnings())
    assert await store.escalate_warnings(T0 + week, level2_after_ms=week, level3_after_ms=week) == 0  # idempotent
    # one resolves; the other is escalated by a run three weeks late: to 3, from its due time
    await store.apply_warnings(SCOPE, [finding(who=1)], T0 + week + 1)
    assert await store.escalate_warnings(T0 + 5 * week, level2_after_ms=week, level3_after_ms=week) == 1
    by_who = {w.worker_id: w for w in await store.list_warnings()}
    assert (by_who[person(1)].level, by_who[person(1)].level_since_ms) == (3, T0 + 2 * week)
    assert (by_who[person(2)].level, by_who[person(2)].state) == (2, WarningState.RESOLVED)
    events = await store.warning_history(by_who[person(1)].id)
    assert [(e.kind, e.level, e.detail.get("due_at_ms")) for e in events] == [
        (WarningEventKind.OPENED, 1, None), (WarningEventKind.ESCALATED, 2, T0 + week),
        (WarningEventKind.ESCALATED, 3, T0 + 2 * week)]
    # a fresh warning jumps 1 -> 3 in one late run
    await store.apply_warnings(SCOPE, [finding(who=1), finding(who=3)], T0 + 6 * week)
    assert await store.escalate_warnings(T0 + 8 * week, level2_after_ms=week, level3_after_ms=week) == 2
    assert (await store.list_warnings(worker_id=person(3)))[0].level == 3
    with pytest.raises(ValueError, match="level2_after_ms"):
        await store.escalate_warnings(T0, level2_after_ms=-1, level3_after_ms=week)


async def test_a_supervisor_closes_a_warning_for_good(store):
    await projects(store, ("P1", "620102"))
    await store.apply_warnings(SCOPE, [finding(who=1), finding(who=2, post="safety-officer")], T0)
    one, two = await store.list_warnings()
    closed = await store.close_warning(one.id, "约谈", note="约谈项目经理", by="ops-620102", now_ms=T0 + 5)
    assert (closed.state, closed.disposition, closed.closed_by, closed.closed_at_ms) == (
        WarningState.CLOSED, Disposition.INTERVIEW, "ops-620102", T0 + 5)
    assert await store.get_warning(one.id) == closed
    with pytest.raises(WarningClosed, match="closed already"):
        await store.close_warning(one.id, Disposition.PENALTY_POINTS, note="", by="x", now_ms=T0 + 6)
    with pytest.raises(ValueError, match="note"):
        await store.close_warning(two.id, Disposition.FALSE_ALARM, note="", by="x", now_ms=T0 + 6)
    with pytest.raises(ValueError, match="disposition"):
        await store.close_warning(two.id, "fined", note="", by="x", now_ms=T0 + 6)
    with pytest.raises(UnknownWarning):
        await store.close_warning(99_999, "interview", note="", by="x", now_ms=T0 + 6)
    # a closed warning stays closed whatever the evaluation finds, and does not escalate
    assert await store.apply_warnings(SCOPE, [finding(who=1, valid_days=1)], T0 + 7) == ApplyResult(
        resolved=1, unchanged=1)
    assert await store.escalate_warnings(T0 + 100 * DAY_MS, level2_after_ms=1, level3_after_ms=1) == 0
    history = await store.warning_history(one.id)
    assert [(e.kind, e.by, e.detail.get("disposition")) for e in history] == [
        (WarningEventKind.OPENED, "lmg", None), (WarningEventKind.CLOSED, "ops-620102", "interview")]
    # a resolved warning may still be closed with a disposition
    assert (await store.close_warning(two.id, "false-alarm", note="设备故障", by="x", now_ms=T0 + 8)).state == "closed"


async def test_listing_by_region_level_rule_state_period_and_pages(store):
    await projects(store, ("CG", "620102"), ("QLH", "620103"), ("LZ", "620100"), ("XQ", "620171"),
                   ("TS", "620502"), ("KQ", "629900"))
    codes = ["CG", "QLH", "LZ", "XQ", "TS", "KQ"]
    await store.apply_warnings(SCOPE, [finding(project=c) for c in codes]
                               + [finding("absence-run", project="CG", start=date(2026, 3, 20), end=date(2026, 3, 24))],
                               T0)

    async def listed(**filters) -> list[str]:
        return [f"{w.project_code}:{w.rule}" if w.rule != "monthly-presence" else w.project_code
                for w in await store.list_warnings(**filters)]

    assert await listed(region_scope="620000") == [*codes, "CG:absence-run"]
    assert await listed(region_scope="620100") == ["CG", "QLH", "LZ", "CG:absence-run"]  # not 兰州新区
    assert await listed(region_scope="620102") == ["CG", "CG:absence-run"]
    assert await listed(region_scope="620171") == ["XQ"]
    assert await listed(region_scope="629900") == ["KQ"]
    assert await listed(rule="absence-run") == ["CG:absence-run"]
    assert await listed(period_from=date(2026, 3, 25)) == codes  # the run ended on the 24th
    assert await listed(period_to=date(2026, 3, 19)) == codes  # the run started on the 20th
    assert await listed(project_code="TS", level=1, state="open") == ["TS"]
    assert await listed(level=2) == [] and await listed(state=WarningState.CLOSED) == []
    page = await store.list_warnings(limit=4)
    assert [w.project_code for w in await store.list_warnings(after_id=page[-1].id)] == ["TS", "KQ", "CG"]
    with pytest.raises(ValueError, match="not a region of Gansu"):
        await store.list_warnings(region_scope="610100")
    with pytest.raises(ValueError, match="level"):
        await store.list_warnings(level=4)
    with pytest.raises(ValueError, match="state"):
        await store.list_warnings(state="gone")
    with pytest.raises(ValueError, match="limit"):
        await store.list_warnings(limit=10_001)


async def test_warnings_to_forward_are_those_changed_since_the_province_confirmed_them(store):
    await projects(store, ("P1", "620102"))
    await store.apply_warnings(SCOPE, [finding(who=1), finding(who=2, post="safety-officer")], T0)
    due = await store.warnings_to_forward()
    assert [(w.version, w.forwarded_version) for w in due] == [(1, 0), (1, 0)]
    assert await store.mark_warnings_forwarded([(w.id, w.version) for w in due]) == 2
    assert await store.warnings_to_forward() == []
    assert await store.mark_warnings_forwarded([(due[0].id, 1)]) == 0  # a late confirmation again
    await store.escalate_warnings(T0 + 10 * DAY_MS, level2_after_ms=DAY_MS, level3_after_ms=100 * DAY_MS)
    again = await store.warnings_to_forward(limit=1)
    assert [(w.id, w.level, w.version) for w in again] == [(due[0].id, 2, 2)]
    # a confirmation of a version the warning does not have yet stops at its version
    assert await store.mark_warnings_forwarded([(due[0].id, 99)]) == 1
    assert (await store.get_warning(due[0].id)).forwarded_version == 2


async def test_the_history_is_append_only_and_warnings_are_never_deleted(backend):
    store = await backend.open()
    await projects(store, ("P1", "620102"))
    await store.apply_warnings(SCOPE, [finding()], T0)
    for sqlite_sql, pg_sql in (
        ("UPDATE warning_events SET by = 'someone else'", 'UPDATE "{schema}".warning_events SET by = \'x\''),
        ("DELETE FROM warning_events", 'DELETE FROM "{schema}".warning_events'),
        ("DELETE FROM warnings", 'DELETE FROM "{schema}".warnings'),
        (None, 'TRUNCATE "{schema}".warning_events CASCADE'),
    ):
        if sqlite_sql is None and backend.name == "sqlite":
            continue
        with pytest.raises(Exception, match="append-only|never deleted|never rewritten"):
            await raw_sql(backend, sqlite_sql or "", pg_sql)
    (warning,) = await store.list_warnings()
    assert [e.by for e in await store.warning_history(warning.id)] == ["lmg"]


# The state table's own tests are tests/protocol/test_warning_codes.py (lmg.protocol.warning_codes).


# ---------------------------------------------------------------------------- tokens


async def test_a_supervisors_token_carries_its_department_and_region(store):
    made = await store.create_api_token("zj-620102", sha("a"), {"read"}, region_code="620102", department="住建")
    assert (made.department, made.region_code) == (Department.CONSTRUCTION, "620102")
    await store.create_api_token("rs-620100", sha("b"), {"read"}, region_code="620100", department="labour")
    await store.create_api_token("ops", sha("c"), {"read", "write"})
    listed = {t.name: (t.department, t.region_code) for t in await store.list_api_tokens()}
    assert listed == {"ops": (None, None), "rs-620100": (Department.LABOUR, "620100"),
                      "zj-620102": (Department.CONSTRUCTION, "620102")}
    assert (await store.get_api_token_by_hash(sha("a"))) == made
    with pytest.raises(ValueError, match="needs its region"):
        await store.create_api_token("zj", sha("d"), {"read"}, department="住建")
    with pytest.raises(ValueError, match="department"):
        await store.create_api_token("zj", sha("d"), {"read"}, region_code="620100", department="公安")
    with pytest.raises(ValueError, match="not a region of Gansu"):
        await store.create_api_token("zj", sha("d"), {"read"}, region_code="620199", department="住建")
    with pytest.raises(TokenExists):
        await store.create_api_token("ops", sha("e"), {"read"})


async def test_version_5_database_upgrades_with_tokens_kept_and_no_department(backend):
    dialect = "sqlite" if backend.name == "sqlite" else "postgres"
    full = load_migrations(dialect)
    assert [m.name for m in full][5] == "supervision"
    old = await _open_with(backend, full[:5])
    await old.close()
    columns = "name, token_sha256, scopes, region_code, created_at_ms, created_by"
    await raw_sql(backend,
                  f"INSERT INTO api_tokens ({columns}) VALUES ('ops', X'{sha('a').hex()}', 'read', '620100', 1, '')",
                  f'INSERT INTO "{{schema}}".api_tokens ({columns}) '
                  f"VALUES ('ops', '\\x{sha('a').hex()}', 'read', '620100', 1, '')")
    new = await backend.open()
    assert await new.schema_version() == full[-1].version
    (token,) = await new.list_api_tokens()
    assert (token.department, token.region_code) == (None, "620100")
    assert await new.list_warnings() == []


async def test_supervision_marks_are_kept_replaced_and_checked(backend):
    clock = [T0]
    store = await backend.open(clock_ms=lambda: clock[0])
    assert await store.get_supervision_marks() == {}
    await store.set_supervision_marks({"backlog_checked_ms": T0, "month_evaluated:2026-03": T0})
    await store.set_supervision_marks({"backlog_checked_ms": T0 + DAY_MS})
    await store.set_supervision_marks({})
    assert await store.get_supervision_marks() == {"backlog_checked_ms": T0 + DAY_MS, "month_evaluated:2026-03": T0}
    for bad in ({"": 1}, {"x\n": 1}, {"x" * 101: 1}, {"x": 1.5}, {"x": True}):
        with pytest.raises(ValueError, match="supervision mark"):
            await store.set_supervision_marks(bad)
    await store.close()
    reopened = await backend.open(clock_ms=lambda: clock[0])  # kept across a restart
    assert (await reopened.get_supervision_marks())["backlog_checked_ms"] == T0 + DAY_MS


async def test_a_few_projects_read_by_arrival_get_only_their_own_punches(store, monkeypatch):
    """The arrival path (taken above DEVICE_PATH_MAX_DEVICES devices) drops the other projects'
    punches before grouping; the rows are those the device path gives."""
    import lmg.storage.postgres_supervision
    import lmg.storage.sqlite_supervision

    await attendance_fixture(store)
    by_device = await store.attendance_days(["P1"], *MARCH)
    by_device_masks = await masks(store, ["P1"], date(2026, 2, 1), MARCH[1])
    for module in (lmg.storage.sqlite_supervision, lmg.storage.postgres_supervision):
        monkeypatch.setattr(module, "DEVICE_PATH_MAX_DEVICES", 0)
    assert await store.attendance_days(["P1"], *MARCH) == by_device
    assert [r.project_code for r in by_device] == ["P1"] * 3
    assert await masks(store, ["P1"], date(2026, 2, 1), MARCH[1]) == by_device_masks
    assert await masks(store, ["P2"], date(2026, 2, 1), MARCH[1]) == await reference_masks(store, ["P2"], date(2026, 2, 1),
                                                                                          MARCH[1])
