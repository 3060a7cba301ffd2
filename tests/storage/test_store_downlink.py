"""The Store contract of the downlink (migration 5), on every backend: projects, the roster
and its versions, faces, each device's face progress and roster version, operator
commands, and the signals that wake running gateways."""

from __future__ import annotations

import asyncio
import pickle
import random
from dataclasses import replace
from datetime import date, datetime, timedelta

import orjson
import pytest

from lmg.protocol import MessageType
from lmg.protocol.identity import check_digit
from lmg.storage import (
    FACE_MIN_BYTES, CommandState, ImportResult, ProjectExists, SessionEndReason, SignalKind,
    StoreConfig, UnknownDevice, UnknownProject, Worker, WorkerIn, open_store,
)
from lmg.storage.postgres import signals_channel
from lmg.storage.roster import on_roster
from test_store_operations import raw_sql

T0 = 1_700_000_000_000
DAY = date(2026, 3, 2)  # "today" in China for most tests
WAIT_S = 5.0  # for a notification that normally arrives in a few ms
REBOOT = int(MessageType.REBOOT)
ARGS = b'{"delay_s": 5}'


def worker_id(n: int) -> str:
    """A valid resident ID number, one per n."""
    first17 = f"62010219900101{n:03d}"
    return first17 + check_digit(first17)


def row(n: int, **overrides) -> WorkerIn:
    fields = dict(name=f"工人{n}", card_no=f"C{n:04d}", enterprise="甘肃建工", team="钢筋班",
                  entry_date=DAY - timedelta(days=10))
    fields.update(overrides)
    return WorkerIn(worker_id(n), **fields)


def jpeg(tag: bytes, size: int = 4000) -> bytes:
    return (b"\xff\xd8\xff\xe0" + tag).ljust(size - 2, b"\x00") + b"\xff\xd9"


def png(tag: bytes, size: int = 2000) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + tag).ljust(size, b"\x00")


async def project_with(store, code: str = "P1", region: str = "620102"):
    return await store.add_project(code, name=f"工程 {code}", region_code=region)


async def kinds(store, after: int = 0) -> list[tuple[SignalKind, str, str]]:
    return [(s.kind, s.subject, s.detail) for s in await store.signals_after(after)]


# ---------------------------------------------------------------------------- projects


async def test_projects_are_added_read_listed_by_region_and_paged(store):
    made = await store.add_project("LZ-2026-001", name="兰州新区厂房", region_code="620102",
                                   enterprise="甘肃建工集团", enterprise_uscc="91620000224330386X",
                                   start_date=date(2026, 1, 5), end_date=date(2027, 6, 30))
    assert (made.roster_version, made.roster_floor) == (0, 0) and made.created_at_ms > 0
    assert await store.get_project("LZ-2026-001") == made  # every field as written, dates as dates
    await store.add_project("TS-1", name="天水", region_code="620502")
    await store.add_project("LZ-2026-002", name="兰州", region_code="620103")
    await store.add_project("JYG-1", name="嘉峪关", region_code="620200")
    with pytest.raises(ValueError, match="region code '610102' is not a region of Gansu"):
        await store.add_project("XA-1", name="西安", region_code="610102")  # lmg holds Gansu's tree only
    assert await store.get_project("NOPE") is None

    async def codes(**kwargs) -> list[str]:
        return [p.code for p in await store.list_projects(**kwargs)]

    assert await codes() == ["JYG-1", "LZ-2026-001", "LZ-2026-002", "TS-1"]
    assert await codes(region_prefix="62") == ["JYG-1", "LZ-2026-001", "LZ-2026-002", "TS-1"]
    assert await codes(region_prefix="6201") == ["LZ-2026-001", "LZ-2026-002"]
    assert await codes(region_prefix="620103") == ["LZ-2026-002"]
    assert await codes(after_code="LZ-2026-001", limit=2) == ["LZ-2026-002", "TS-1"]
    with pytest.raises(ProjectExists, match="'TS-1'.*lmg project import"):
        await store.add_project("TS-1", name="again", region_code="620502")
    for bad in ("6_", "%", "6201021"):
        with pytest.raises(ValueError, match="region prefix"):
            await store.list_projects(region_prefix=bad)
    with pytest.raises(ValueError, match="limit"):
        await store.list_projects(limit=10_001)
    assert str(pickle.loads(pickle.dumps(ProjectExists("x")))) == str(ProjectExists("x"))
    assert str(pickle.loads(pickle.dumps(UnknownProject("x")))) == str(UnknownProject("x"))


@pytest.mark.parametrize("overrides, field", [
    ({"code": ""}, "project code"),
    ({"code": "c" * 65}, "project code"),
    ({"code": " padded"}, "project code"),
    ({"name": "  "}, "project name"),
    ({"name": "n" * 129}, "project name"),
    ({"region_code": "62010"}, "region code"),
    ({"region_code": "62010x"}, "region code"),
    ({"region_code": "620199"}, "region code '620199' is not a region of Gansu"),
    ({"enterprise_uscc": "91620000224330386"}, "enterprise_uscc"),
    ({"enterprise_uscc": "91620000224330386O"}, "enterprise_uscc"),  # O is not in GB 32100
    ({"start_date": "2026-01-01"}, "start_date"),
    ({"end_date": datetime(2026, 1, 1)}, "end_date"),
    ({"start_date": date(2026, 2, 1), "end_date": date(2026, 1, 31)}, "end_date 2026-01-31 is before"),
])
async def test_project_fields_are_checked(store, overrides, field):
    fields = dict(code="P1", name="工程", region_code="620102")
    fields.update(overrides)
    code = fields.pop("code")
    with pytest.raises(ValueError, match=field):
        await store.add_project(code, **fields)
    with pytest.raises(ValueError, match=field):
        await store.upsert_project(code, **fields)
    assert await store.list_projects() == []


async def test_upsert_project_is_an_idempotent_import_that_leaves_the_roster_alone(store):
    made, outcome = await store.upsert_project("P1", name="工程", region_code="620102")
    assert outcome == "added" and made == await store.get_project("P1")
    assert await store.upsert_project("P1", name="工程", region_code="620102") == (made, "unchanged")
    await store.import_workers("P1", [row(1)], today=DAY)
    updated, outcome = await store.upsert_project("P1", name="工程二期", region_code="620102",
                                                  end_date=date(2027, 1, 1))
    assert outcome == "updated"
    assert (updated.name, updated.end_date, updated.roster_version, updated.created_at_ms) == (
        "工程二期", date(2027, 1, 1), 1, made.created_at_ms)
    assert await store.get_project("P1") == updated


# ------------------------------------------------------------------------------ roster


async def test_import_adds_workers_with_consecutive_versions_and_one_signal(store):
    await project_with(store)
    face = await store.put_face(jpeg(b"w2"))
    result = await store.import_workers(
        "P1", [row(3), row(2, face_sha256=face, post="项目经理"), row(1, exit_date=DAY + timedelta(days=30))],
        today=DAY)
    assert result == ImportResult(added=3, updated=0, unchanged=0, roster_version=3)
    assert (await store.get_project("P1")).roster_version == 3
    changes = await store.roster_changes("P1", after_version=0)
    assert [(w.worker_id, w.version, w.added_version, w.face_version) for w in changes] == [
        (worker_id(3), 1, 1, 0), (worker_id(2), 2, 2, 2), (worker_id(1), 3, 3, 0)]  # in the rows' order
    manager = await store.get_worker("P1", worker_id(2))
    assert manager == changes[1] and manager.post == "project-manager"  # the Chinese name stored as the code
    assert (manager.face_sha256, manager.on_roster, manager.entry_date) == (face, True, DAY - timedelta(days=10))
    assert manager.updated_at_ms > 0 and manager.project_code == "P1" and manager.card_no == "C0002"
    assert await kinds(store) == [(SignalKind.ROSTER, "P1", "3")]

    again = await store.import_workers("P1", [row(3), row(1, exit_date=DAY + timedelta(days=30))], today=DAY)
    assert again == ImportResult(added=0, updated=0, unchanged=2, roster_version=3)
    assert len(await store.signals_after(0)) == 1  # nothing changed: no signal
    assert [w.worker_id for w in await store.list_workers("P1")] == sorted(worker_id(n) for n in (1, 2, 3))
    assert await store.roster_changes("P1", after_version=3) == []
    assert [w.version for w in await store.roster_changes("P1", after_version=1, limit=1)] == [2]


async def test_changes_take_the_next_version_and_keep_what_terminals_hold(store):
    await project_with(store)
    first, second = await store.put_face(jpeg(b"a")), await store.put_face(png(b"b"))
    await store.import_workers("P1", [row(1, face_sha256=first), row(2)], today=DAY)
    result = await store.import_workers("P1", [row(1, team="木工班"), row(2, face_sha256=second)], today=DAY)
    assert result == ImportResult(added=0, updated=2, unchanged=0, roster_version=4)
    one, two = await store.get_worker("P1", worker_id(1)), await store.get_worker("P1", worker_id(2))
    # no face in the row keeps the stored one (a terminal cannot be told to drop a face)
    assert (one.team, one.face_sha256, one.version, one.added_version, one.face_version) == (
        "木工班", first, 3, 1, 1)
    assert (two.face_sha256, two.version, two.added_version, two.face_version) == (second, 4, 2, 4)
    assert await kinds(store) == [(SignalKind.ROSTER, "P1", "2"), (SignalKind.ROSTER, "P1", "4")]


async def test_workers_not_entered_yet_wait_without_a_version_until_their_day(store):
    await project_with(store)
    await project_with(store, "P2")
    later = DAY + timedelta(days=3)
    face = await store.put_face(jpeg(b"late"))
    result = await store.import_workers("P1", [row(1), row(2, entry_date=later, face_sha256=face)], today=DAY)
    assert result == ImportResult(added=2, updated=0, unchanged=0, roster_version=1)
    waiting = await store.get_worker("P1", worker_id(2))
    assert (waiting.on_roster, waiting.version, waiting.added_version, waiting.face_version) == (False, 0, 0, 0)
    assert [w.worker_id for w in await store.roster_changes("P1", after_version=0)] == [worker_id(1)]
    assert [w.worker_id for w in await store.list_workers("P1")] == [worker_id(1)]
    assert len(await store.list_workers("P1", on_roster_only=False)) == 2
    # a change to a worker off the roster on both sides reaches no terminal: stored, no version
    result = await store.import_workers("P1", [row(2, entry_date=later, team="新班组", face_sha256=face)], today=DAY)
    assert result == ImportResult(added=0, updated=1, unchanged=0, roster_version=1)
    assert (await store.get_worker("P1", worker_id(2))).team == "新班组"
    await store.import_workers("P2", [row(1, entry_date=later)], today=DAY)
    assert await store.apply_roster_dates(DAY) == []
    before = await store.last_signal_id()

    assert await store.apply_roster_dates(later) == ["P1", "P2"]
    joined = await store.get_worker("P1", worker_id(2))
    assert (joined.on_roster, joined.version, joined.added_version, joined.face_version) == (True, 2, 2, 2)
    assert (await store.get_worker("P2", worker_id(1))).version == 1
    assert sorted(await kinds(store, before)) == [(SignalKind.ROSTER, "P1", "2"), (SignalKind.ROSTER, "P2", "1")]
    assert await store.apply_roster_dates(later) == []  # done: nothing more to flip


async def test_leaving_makes_a_tombstone_that_the_delta_carries(store):
    await project_with(store)
    leaves = DAY + timedelta(days=1)
    await store.import_workers("P1", [row(1, exit_date=leaves), row(2)], today=DAY)
    assert await store.apply_roster_dates(leaves) == ["P1"]
    gone = await store.get_worker("P1", worker_id(1))
    assert (gone.on_roster, gone.version, gone.added_version) == (False, 3, 1)
    assert [(w.worker_id, w.on_roster) for w in await store.roster_changes("P1", after_version=2)] == [
        (worker_id(1), False)]
    assert [w.worker_id for w in await store.list_workers("P1")] == [worker_id(2)]
    # an import that still lists the worker with the old dates, on a later day: unchanged
    result = await store.import_workers("P1", [row(1, exit_date=leaves)], today=leaves)
    assert result.unchanged == 1 and result.roster_version == 3
    # an import whose dates bring the worker back: joins again, a new added_version
    back = await store.import_workers("P1", [row(1)], today=leaves)
    assert back == ImportResult(added=0, updated=1, unchanged=0, roster_version=4)
    again = await store.get_worker("P1", worker_id(1))
    assert (again.on_roster, again.version, again.added_version) == (True, 4, 4)


async def test_import_counts_a_flip_by_today_as_a_change(store):
    """apply_roster_dates has not run yet: the import itself puts the stored state right."""
    await project_with(store)
    leaves = DAY + timedelta(days=1)
    await store.import_workers("P1", [row(1, exit_date=leaves)], today=DAY)
    result = await store.import_workers("P1", [row(1, exit_date=leaves)], today=leaves)
    assert result == ImportResult(added=0, updated=1, unchanged=0, roster_version=2)
    assert not (await store.get_worker("P1", worker_id(1))).on_roster


async def test_remove_worker(store):
    await project_with(store)
    await store.import_workers("P1", [row(1), row(2), row(3, entry_date=DAY + timedelta(days=5))], today=DAY)
    start = await store.last_signal_id()
    assert await store.remove_worker("P1", worker_id(1), exit_date=DAY, today=DAY)
    gone = await store.get_worker("P1", worker_id(1))
    assert (gone.on_roster, gone.exit_date, gone.version) == (False, DAY, 3)
    assert await kinds(store, start) == [(SignalKind.ROSTER, "P1", "3")]
    assert not await store.remove_worker("P1", worker_id(1), exit_date=DAY, today=DAY)  # gone already
    assert not await store.remove_worker("P1", worker_id(9), exit_date=DAY, today=DAY)  # unknown
    assert not await store.remove_worker("P1", worker_id(3), exit_date=DAY, today=DAY)  # not entered yet
    assert not await store.remove_worker("NOPE", worker_id(2), exit_date=DAY, today=DAY)
    # leaving later: the exit date is a change (version), the worker stays until the day
    assert await store.remove_worker("P1", worker_id(2), exit_date=DAY + timedelta(days=7), today=DAY)
    staying = await store.get_worker("P1", worker_id(2))
    assert (staying.on_roster, staying.exit_date, staying.version) == (True, DAY + timedelta(days=7), 4)
    assert await store.remove_worker("P1", worker_id(2), exit_date=DAY + timedelta(days=7), today=DAY)
    assert (await store.get_project("P1")).roster_version == 4  # the same date again changes nothing
    with pytest.raises(ValueError, match="before the worker's entry_date"):
        await store.remove_worker("P1", worker_id(2), exit_date=DAY - timedelta(days=30), today=DAY)
    with pytest.raises(ValueError, match="exit_date"):
        await store.remove_worker("P1", worker_id(2), exit_date="2026-03-02", today=DAY)


WORKER_PROBLEMS = [
    (dict(worker_id="620102199001011235"), "worker '620102199001011235': worker_id is not a valid"),
    (dict(worker_id="62010219900101123x"), "worker_id is not a valid"),  # lower-case x
    (dict(name=" "), "name: must not be empty"),
    (dict(name="张" * 86), "name: 258 bytes in UTF-8"),
    (dict(name="tab\there"), "name 'tab\\\\there': holds control characters"),
    (dict(card_no="C" * 129), "card_no: 129 characters"),
    (dict(team=7), "team: must be a string"),
    (dict(post="boss"), "post: unknown post 'boss'"),
    (dict(entry_date=datetime(2026, 1, 1)), "entry_date .* must be a datetime.date"),
    (dict(exit_date=DAY - timedelta(days=11)), "exit_date .* is before entry_date"),
    (dict(face_sha256=b"\x00" * 31), "face_sha256: must be the 32-byte"),
    (dict(face_sha256=b"\x00" * 32), "face_sha256 0000.* is not a stored face"),
]


@pytest.mark.parametrize("overrides, problem", WORKER_PROBLEMS)
async def test_a_bad_row_fails_the_whole_import_naming_the_worker_and_the_field(store, overrides, problem):
    await project_with(store)
    await store.import_workers("P1", [row(1)], today=DAY)
    overrides = dict(overrides)  # the parameter is shared by both backends' runs
    bad_id = overrides.pop("worker_id", worker_id(5))
    bad = replace(row(5, **overrides), worker_id=bad_id)
    with pytest.raises(ValueError, match=problem) as refused:
        await store.import_workers("P1", [row(2), row(1, team="改"), bad, row(3)], today=DAY)
    assert f"worker {bad_id}" in str(refused.value) or f"worker {bad_id!r}" in str(refused.value)
    assert (await store.get_project("P1")).roster_version == 1  # nothing of the call was written
    assert [w.team for w in await store.list_workers("P1", on_roster_only=False)] == ["钢筋班"]
    assert len(await store.signals_after(0)) == 1


async def test_import_refuses_duplicates_oversize_calls_and_unknown_projects(backend):
    store = await backend.open(config=StoreConfig(roster_import_max_rows=3))
    await project_with(store)
    with pytest.raises(ValueError, match=f"worker {worker_id(1)}: listed twice"):
        await store.import_workers("P1", [row(1), row(2), row(1, team="x")], today=DAY)
    with pytest.raises(ValueError, match="4 workers in one import; at most roster_import_max_rows"):
        await store.import_workers("P1", [row(n) for n in range(4)], today=DAY)
    with pytest.raises(UnknownProject, match="'NOPE'"):
        await store.import_workers("NOPE", [row(1)], today=DAY)
    with pytest.raises(ValueError, match="today"):
        await store.import_workers("P1", [row(1)], today=datetime(2026, 3, 2))
    with pytest.raises(ValueError, match="WorkerIn"):
        await store.import_workers("P1", [("not", "a row")], today=DAY)
    assert await store.list_workers("P1", on_roster_only=False) == []
    assert await store.import_workers("P1", [], today=DAY) == ImportResult(0, 0, 0, 0)


async def test_an_import_is_one_transaction_even_when_the_database_fails_midway(backend):
    store = await backend.open()
    await project_with(store)
    await raw_sql(
        backend,
        "CREATE TRIGGER refuse BEFORE INSERT ON workers WHEN NEW.name = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        'CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS '
        "$$BEGIN IF NEW.name = 'boom' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END$$; "
        'CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".workers '
        'FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();')
    with pytest.raises(Exception, match="refused by the test"):
        await store.import_workers("P1", [row(1), row(2), row(3, name="boom"), row(4)], today=DAY)
    assert await store.list_workers("P1", on_roster_only=False) == []
    assert (await store.get_project("P1")).roster_version == 0 and await store.signals_after(0) == []
    assert (await store.import_workers("P1", [row(1)], today=DAY)).roster_version == 1  # not harmed


class Terminal:
    """A terminal's roster as the gateway builds it from deltas (docs/downlink.md): ROSTER_ADD
    when added_version > v, ROSTER_UPDATE otherwise, ROSTER_REMOVE for a tombstone, the face
    sent when face_version > v (v: the version the terminal held when the delta began)."""

    def __init__(self) -> None:
        self.version = 0
        self.workers: dict[str, tuple[str, str, str, bytes | None]] = {}

    def apply(self, delta: list[Worker]) -> None:
        v = self.version
        for w in delta:
            assert w.version > self.version  # in version order
            if not w.on_roster:
                self.workers.pop(w.worker_id, None)
            else:
                face = w.face_sha256 if w.face_version > v else None
                if w.added_version <= v:  # ROSTER_UPDATE: the terminal must have the worker
                    assert w.worker_id in self.workers, "ROSTER_UPDATE of a worker the terminal lacks"
                    face = face if face is not None else self.workers[w.worker_id][3]
                else:
                    assert w.face_sha256 is None or face == w.face_sha256, "ROSTER_ADD without its face"
                self.workers[w.worker_id] = (w.name, w.card_no, w.post, face)
            self.version = w.version


async def roster_state(store, code: str) -> dict[str, tuple[str, str, str, bytes | None]]:
    return {w.worker_id: (w.name, w.card_no, w.post, w.face_sha256) for w in await store.list_workers(code)}


async def test_a_delta_from_any_earlier_version_rebuilds_the_roster(store):
    """Random imports, removals and days passing; a terminal that stopped at any version
    and applies the delta from there holds exactly the roster, faces included."""
    await project_with(store)
    rng = random.Random(14)
    faces = [await store.put_face(jpeg(bytes([n]))) for n in range(4)]
    day = DAY
    snapshots: list[Terminal] = []
    for _ in range(40):
        action = rng.random()
        if action < 0.6:
            rows = []
            for n in rng.sample(range(12), rng.randint(1, 5)):
                entry = day + timedelta(days=rng.choice([-20, -1, 0, 1, 3]))
                exit_ = rng.choice([None, None, entry + timedelta(days=rng.randint(0, 6))])
                rows.append(row(n, name=f"工人{n}{rng.choice('甲乙')}", entry_date=entry, exit_date=exit_,
                                post=rng.choice(["worker", "safety-officer"]),
                                face_sha256=rng.choice([None, *faces])))
            await store.import_workers("P1", rows, today=day)
        elif action < 0.75:
            on = await store.list_workers("P1")
            if on:
                await store.remove_worker("P1", rng.choice(on).worker_id,
                                          exit_date=day + timedelta(days=rng.choice([0, 2])), today=day)
        else:
            day += timedelta(days=1)
            await store.apply_roster_dates(day)
        terminal = Terminal()
        terminal.apply(await store.roster_changes("P1", after_version=0))
        assert terminal.workers == await roster_state(store, "P1")
        snapshots.append(terminal)
    final = await roster_state(store, "P1")
    version = (await store.get_project("P1")).roster_version
    assert version > 20
    for terminal in snapshots:
        terminal.apply(await store.roster_changes("P1", after_version=terminal.version))
        assert terminal.workers == final and terminal.version == version
    for w in await store.list_workers("P1", on_roster_only=False):
        assert w.on_roster == on_roster(w.entry_date, w.exit_date, day)


async def test_pruning_tombstones_raises_the_floor_and_spares_workers_to_come(backend):
    clock = [T0]
    store = await backend.open(clock_ms=lambda: clock[0])
    await project_with(store)
    await project_with(store, "P2")
    later = DAY + timedelta(days=30)
    await store.import_workers("P1", [row(1), row(2), row(3), row(4, entry_date=later)], today=DAY)
    await store.remove_worker("P1", worker_id(1), exit_date=DAY, today=DAY)  # tombstone at version 4
    await store.remove_worker("P1", worker_id(2), exit_date=DAY, today=DAY)  # version 5
    await store.import_workers("P2", [row(1, exit_date=DAY)], today=DAY)  # never on the roster: version 0
    clock[0] += 1000
    await store.remove_worker("P1", worker_id(3), exit_date=DAY, today=DAY)  # version 6, recent
    assert await store.roster_floor("P1") == 0

    assert await store.prune_roster_tombstones(T0 + 1, today=DAY) == 3
    assert await store.roster_floor("P1") == 5 and (await store.get_project("P1")).roster_floor == 5
    assert await store.roster_floor("P2") == 0  # what was pruned there had no version
    assert await store.roster_floor("NOPE") == 0
    left = await store.list_workers("P1", on_roster_only=False)
    assert [w.worker_id for w in left] == [worker_id(3), worker_id(4)]  # recent, and to come
    assert await store.prune_roster_tombstones(T0 + 10_000, today=later) == 1
    assert await store.roster_floor("P1") == 6
    assert [w.worker_id for w in await store.list_workers("P1", on_roster_only=False)] == [worker_id(4)]
    with pytest.raises(ValueError, match="today"):
        await store.prune_roster_tombstones(T0, today="today")


async def test_roster_reads_check_their_arguments(store):
    await project_with(store)
    with pytest.raises(ValueError, match="after_version"):
        await store.roster_changes("P1", after_version=-1)
    with pytest.raises(ValueError, match="limit"):
        await store.roster_changes("P1", after_version=0, limit=10_001)
    with pytest.raises(ValueError, match="limit"):
        await store.list_workers("P1", limit=-1)
    with pytest.raises(ValueError, match="today"):
        await store.apply_roster_dates(None)
    assert await store.roster_changes("NOPE", after_version=0) == []
    assert await store.get_worker("P1", worker_id(1)) is None


# ------------------------------------------------------------------------------- faces


async def test_faces_are_stored_once_in_the_blob_store(backend):
    store = await backend.open()
    photo = jpeg(b"face")
    sha = await store.put_face(photo)
    assert await store.put_face(photo) == sha  # once: same bytes, same key
    assert await store.get_face(sha) == photo and await store.face_size(sha) == len(photo)
    blobs = [p for p in (backend.data_dir / "photos").rglob("*") if p.is_file()]
    if backend.name == "sqlite":  # files under the data dir; PostgreSQL: rows every node reads
        assert [p.name for p in blobs] == [sha.hex()]
    else:
        assert blobs == [] and await store._fetch("SELECT sha256 FROM photo_blobs") == [(sha,)]
    small_png = png(b"p", FACE_MIN_BYTES)
    assert await store.face_size(await store.put_face(small_png)) == FACE_MIN_BYTES
    other = bytes(32)
    assert await store.get_face(other) is None and await store.face_size(other) is None
    with pytest.raises(ValueError, match="face sha256"):
        await store.get_face(b"short")


async def test_faces_are_checked(backend):
    store = await backend.open(config=StoreConfig(face_max_bytes=5000))
    with pytest.raises(ValueError, match="1023 bytes is too small"):
        await store.put_face(jpeg(b"x", FACE_MIN_BYTES - 1))
    with pytest.raises(ValueError, match="5,001 bytes is larger than face_max_bytes"):
        await store.put_face(jpeg(b"x", 5001))
    with pytest.raises(ValueError, match="not a JPEG or PNG .*47 49 46 38"):
        await store.put_face(b"GIF89a".ljust(2000, b"\x00"))
    with pytest.raises(ValueError, match="bytes, not str"):
        await store.put_face("a photo")
    assert [p for p in (backend.data_dir / "photos").rglob("*") if p.is_file()] == []
    with pytest.raises(ValueError, match="face_max_bytes"):
        StoreConfig(face_max_bytes=100)


async def test_face_progress_per_device_and_face(store):
    a, b = await store.put_face(jpeg(b"a")), await store.put_face(jpeg(b"b"))
    assert await store.face_progress("LMG1", a) == 0
    await store.set_face_progress("LMG1", a, 16_384)
    await store.set_face_progress("LMG1", a, 32_768)
    await store.set_face_progress("LMG2", a, 16_384)
    assert (await store.face_progress("LMG1", a), await store.face_progress("LMG2", a),
            await store.face_progress("LMG1", b)) == (32_768, 16_384, 0)
    await store.clear_face_progress("LMG1", a)
    await store.clear_face_progress("LMG1", a)  # harmless
    assert await store.face_progress("LMG1", a) == 0 and await store.face_progress("LMG2", a) == 16_384
    with pytest.raises(ValueError, match="offset"):
        await store.set_face_progress("LMG1", a, -1)


# ------------------------------------------------------------- devices and the roster


async def test_device_roster_version_and_a_projects_devices(store):
    for serial, code in (("B", "P1"), ("A", "P1"), ("C", "P2")):
        await store.add_device(serial, project_code=code, region_code="620102")
    assert await store.devices_of_project("P1") == ["A", "B"]
    assert await store.devices_of_project("NONE") == []
    await store.set_device_roster_version("A", 42)
    assert (await store.get_device("A")).roster_version == 42
    with pytest.raises(UnknownDevice):
        await store.set_device_roster_version("GHOST", 1)
    with pytest.raises(ValueError, match="roster version"):
        await store.set_device_roster_version("A", 2**32)


# ---------------------------------------------------------------------------- commands


async def test_command_lifecycle(store):
    for serial in ("LMG1", "LMG2"):
        await store.add_device(serial, project_code="P1", region_code="620102")
    first = await store.enqueue_command("LMG1", REBOOT, ARGS, created_by="cli:ops")
    second = await store.enqueue_command("LMG1", MessageType.CONFIG_GET, b'{"keys": [1, 2]}')
    other = await store.enqueue_command("LMG2", MessageType.DOOR_OPEN, b"{}")
    assert await kinds(store) == [(SignalKind.COMMAND, "LMG1", str(first)),
                                  (SignalKind.COMMAND, "LMG1", str(second)),
                                  (SignalKind.COMMAND, "LMG2", str(other))]
    queued = await store.get_command(first)
    assert (queued.state, queued.command_type, queued.payload, queued.attempts, queued.created_by) == (
        CommandState.QUEUED, REBOOT, ARGS, 0, "cli:ops")
    assert [c.id for c in await store.pending_commands("LMG1")] == [first, second]

    assert await store.mark_command_sent(first, 77, T0)
    assert await store.mark_command_sent(first, 80, T0 + 30_000)  # no answer: sent again
    sent = await store.get_command(first)
    assert (sent.state, sent.seq, sent.sent_at_ms, sent.attempts) == (CommandState.SENT, 80, T0 + 30_000, 2)
    assert [c.id for c in await store.pending_commands("LMG1")] == [first, second]  # resent on reconnect
    assert await store.complete_command(first, 0)
    assert not await store.complete_command(first, 0)
    assert not await store.mark_command_sent(first, 81, T0)
    acked = await store.get_command(first)
    assert (acked.state, acked.result_code, acked.completed_at_ms > 0, acked.reply) == (
        CommandState.ACKED, 0, True, None)

    await store.mark_command_sent(second, 81, T0)
    assert await store.complete_command(second, 0, reply=b'{"1": "a", "2": "b"}')
    assert (await store.get_command(second)).reply == b'{"1": "a", "2": "b"}'
    assert await store.mark_command_sent(other, 5, T0)
    assert await store.complete_command(other, 0x0060, failed=True, error="door jammed")
    failed = await store.get_command(other)
    assert (failed.state, failed.result_code, failed.error) == (CommandState.FAILED, 0x0060, "door jammed")

    silent = await store.enqueue_command("LMG2", REBOOT, ARGS)
    assert await store.complete_command(silent, None, failed=True, error="no answer")
    assert (await store.get_command(silent)).result_code is None
    gone = await store.enqueue_command("LMG2", REBOOT, ARGS)
    assert await store.cancel_command(gone) and not await store.cancel_command(gone)
    assert (await store.get_command(gone)).state is CommandState.CANCELLED
    assert await store.pending_commands("LMG1") == [] and await store.get_command(10_000) is None
    with pytest.raises(UnknownDevice, match="'GHOST'"):
        await store.enqueue_command("GHOST", REBOOT, ARGS)
    assert len(await store.signals_after(0)) == 5  # none for the refused one


async def test_commands_expire_and_are_listed_and_counted(backend):
    clock = [T0]
    store = await backend.open(clock_ms=lambda: clock[0])
    await store.add_device("LMG1", project_code="P1", region_code="620102")
    await store.add_device("LMG2", project_code="P1", region_code="620102")
    soon = await store.enqueue_command("LMG1", REBOOT, ARGS, expires_at_ms=T0 + 10)
    never = await store.enqueue_command("LMG1", REBOOT, ARGS)
    sent = await store.enqueue_command("LMG2", REBOOT, ARGS, expires_at_ms=T0 + 10)
    await store.mark_command_sent(sent, 1, T0)
    clock[0] = T0 + 10
    assert [c.id for c in await store.pending_commands("LMG1")] == [never]  # expired by the clock already
    assert await store.expire_commands(T0 + 10) == 2
    assert (await store.get_command(soon)).state is CommandState.EXPIRED
    assert (await store.get_command(sent)).state is CommandState.EXPIRED
    assert await store.expire_commands(T0 + 10) == 0

    async def ids(**filters) -> list[int]:
        return [c.id for c in await store.list_commands(**filters)]

    assert await ids() == [soon, never, sent]
    assert await ids(device_serial="LMG1") == [soon, never]
    assert await ids(state=CommandState.EXPIRED) == [soon, sent]
    assert await ids(state="queued", device_serial="LMG1") == [never]
    assert await ids(after_id=soon, limit=1) == [never]
    counts = await store.count_commands_by_state()
    assert counts == {**dict.fromkeys(CommandState, 0), CommandState.EXPIRED: 2, CommandState.QUEUED: 1}
    with pytest.raises(ValueError, match="state 'done'"):
        await store.list_commands(state="done")
    with pytest.raises(ValueError, match="limit"):
        await store.list_commands(limit=10_001)


@pytest.mark.parametrize("command_type, payload, kwargs, problem", [
    (int(MessageType.ROSTER_ADD), b"{}", {}, "command_type 513: queue one of .*REBOOT"),
    (0x31, b"{}", {}, "command_type 49"),
    ("reboot", b"{}", {}, "command_type 'reboot'"),
    (REBOOT, b"[1]", {}, "payload: must be the UTF-8 JSON of an object"),
    (REBOOT, b"\xff", {}, "payload: must be the UTF-8 JSON"),
    (REBOOT, '{"delay_s": 1}', {}, "payload: must be bytes"),
    (REBOOT, b"{}", {"expires_at_ms": "tomorrow"}, "expires_at_ms"),
    (REBOOT, b"{}", {"created_by": "x" * 257}, "created_by"),
])
async def test_enqueue_command_checks_its_arguments(store, command_type, payload, kwargs, problem):
    await store.add_device("LMG1", project_code="P1", region_code="620102")
    with pytest.raises(ValueError, match=problem):
        await store.enqueue_command("LMG1", command_type, payload, **kwargs)
    assert await store.list_commands() == [] and await store.signals_after(0) == []


async def test_command_updates_check_their_arguments(store):
    await store.add_device("LMG1", project_code="P1", region_code="620102")
    command_id = await store.enqueue_command("LMG1", REBOOT, ARGS)
    with pytest.raises(ValueError, match="seq"):
        await store.mark_command_sent(command_id, -1, T0)
    with pytest.raises(ValueError, match="now_ms"):
        await store.mark_command_sent(command_id, 1, None)
    with pytest.raises(ValueError, match="result_code"):
        await store.complete_command(command_id, 70_000)
    with pytest.raises(ValueError, match="reply: not UTF-8 JSON"):
        await store.complete_command(command_id, 0, reply=b"{")
    with pytest.raises(ValueError, match="error"):
        await store.complete_command(command_id, 0, error="e" * 1025)
    assert (await store.get_command(command_id)).state is CommandState.QUEUED


# ----------------------------------------------------------------------------- signals


async def test_signals_are_one_ordered_record_of_every_kind(backend):
    clock = [T0]
    store = await backend.open(clock_ms=lambda: clock[0])
    await store.add_device("LMG1", project_code="P1", region_code="620102")
    await project_with(store)
    assert await store.last_signal_id() == 0
    await store.disable_device("LMG1")
    clock[0] += 1000
    command_id = await store.enqueue_command("LMG1", REBOOT, ARGS)
    await store.import_workers("P1", [row(1)], today=DAY)
    ended = await store.end_device_sessions("LMG1", SessionEndReason.CLOSED_BY_OPERATOR)
    await store.rotate_device_secret("LMG1")
    signals = await store.signals_after(0)
    assert [(s.kind, s.subject, s.detail) for s in signals] == [
        (SignalKind.SESSION_END, "LMG1", "disabled"), (SignalKind.COMMAND, "LMG1", str(command_id)),
        (SignalKind.ROSTER, "P1", "1"), (SignalKind.SESSION_END, "LMG1", "closed_by_operator"),
        (SignalKind.SESSION_END, "LMG1", "secret_rotated")]
    assert [s.id for s in signals] == sorted(s.id for s in signals) and signals[3].id == ended
    assert [s.created_at_ms for s in signals] == [T0] + [T0 + 1000] * 4
    assert await store.last_signal_id() == signals[-1].id
    assert await store.signals_after(signals[1].id, limit=1) == [signals[2]]
    # the session-end API sees its own kind only, with the same ids
    ends = await store.session_ends_after(0)
    assert [(e.id, e.reason) for e in ends] == [
        (signals[0].id, SessionEndReason.DISABLED), (ended, SessionEndReason.CLOSED_BY_OPERATOR),
        (signals[4].id, SessionEndReason.SECRET_ROTATED)]
    await store.enqueue_command("LMG1", REBOOT, ARGS)
    assert await store.last_session_end_id() == signals[4].id < await store.last_signal_id()

    assert await store.prune_session_ends(T0 + 1) == 1  # the session end of T0 only
    assert await store.prune_signals(T0 + 1000) == 0
    assert await store.prune_signals(T0 + 1001) == 5
    assert await store.signals_after(0) == []
    with pytest.raises(ValueError, match="older_than_ms"):
        await store.prune_signals("yesterday")


async def test_signals_of_a_kind_this_lmg_does_not_know_are_left_out(backend):
    store = await backend.open()
    await store.add_device("LMG1", project_code="P1", region_code="620102")
    await raw_sql(backend,
                  "INSERT INTO signals (kind, subject, detail, created_at_ms) VALUES ('from_the_future', 'x', '', 1);",
                  "INSERT INTO \"{schema}\".signals (kind, subject, detail, created_at_ms) "
                  "VALUES ('from_the_future', 'x', '', 1);")
    command_id = await store.enqueue_command("LMG1", REBOOT, ARGS)
    assert [(s.kind, s.detail) for s in await store.signals_after(0)] == [(SignalKind.COMMAND, str(command_id))]


async def test_listening_for_signals_is_postgres_only(backend):
    store = await backend.open()
    stop = await store.listen_signals(lambda signal_id: None)
    assert (stop is None) == (backend.name == "sqlite")
    if stop is not None:
        await stop()


@pytest.mark.postgres
async def test_postgres_notifies_every_kind_of_signal_at_once(pg_urls, tmp_path):
    url = pg_urls()
    a = await open_store(url, data_dir=tmp_path)
    b = await open_store(url, data_dir=tmp_path)  # another node
    try:
        heard: asyncio.Queue[int] = asyncio.Queue()
        ends: list[int] = []
        stop = await b.listen_signals(heard.put_nowait)
        stop_ends = await b.listen_session_ends(ends.append)
        assert stop is not None and stop_ends is not None
        await a.add_device("LMG1", project_code="P1", region_code="620102")
        await project_with(a)
        command_id = await a.enqueue_command("LMG1", REBOOT, ARGS)
        await a.import_workers("P1", [row(1)], today=DAY)
        await a.disable_device("LMG1")
        got = [await asyncio.wait_for(heard.get(), WAIT_S) for _ in range(3)]
        signals = await b.signals_after(0)
        assert got == [s.id for s in signals]
        assert [(s.kind, s.detail) for s in signals] == [
            (SignalKind.COMMAND, str(command_id)), (SignalKind.ROSTER, "1"), (SignalKind.SESSION_END, "disabled")]
        assert ends == [signals[2].id]  # the session-end listener hears its kind only
        assert b.signals_channel == signals_channel(url.rsplit("schema=", 1)[1])
        await stop()
        await stop_ends()
    finally:
        await a.close()
        await b.close()


@pytest.mark.postgres
async def test_two_nodes_changing_one_roster_hand_out_each_version_once(pg_urls, tmp_path):
    """The project row lock makes a project's versions consecutive across nodes, and the
    signals lock makes signal ids commit in order: a follower by cursor misses none."""
    url = pg_urls()
    a = await open_store(url, data_dir=tmp_path)
    b = await open_store(url, data_dir=tmp_path)
    reader = await open_store(url, data_dir=tmp_path)
    try:
        await project_with(a)
        for n in range(4):
            await a.add_device(f"DEV{n}", project_code="P1", region_code="620102")
        read: list[int] = []
        done = asyncio.Event()

        async def importer(node, offset: int) -> None:
            for round_ in range(6):
                await node.import_workers("P1", [row(offset + k, team=f"班{round_}") for k in range(5)], today=DAY)

        async def operator(node) -> None:
            for round_ in range(6):
                await node.enqueue_command(f"DEV{round_ % 4}", REBOOT, ARGS)
                await node.end_device_sessions(f"DEV{round_ % 4}", SessionEndReason.CLOSED_BY_OPERATOR)

        async def follow() -> None:
            cursor = 0
            while True:
                finished = done.is_set()
                page = await reader.signals_after(cursor, limit=5)
                read.extend(s.id for s in page)
                cursor = page[-1].id if page else cursor
                if finished and not page:
                    return
                await asyncio.sleep(0)

        follower = asyncio.ensure_future(follow())
        await asyncio.gather(importer(a, 0), importer(b, 0), importer(a, 3), operator(a), operator(b))
        done.set()
        await asyncio.wait_for(follower, 30)
        everything = [s.id for s in await reader.signals_after(0, limit=10_000)]
        assert read == everything  # every id, once, in order
        versions = [w.version for w in await reader.roster_changes("P1", after_version=0)]
        final = (await reader.get_project("P1")).roster_version
        assert versions == sorted(versions) and len(set(versions)) == len(versions) == 8
        rosters = [int(s.detail) for s in await reader.signals_after(0, limit=10_000) if s.kind is SignalKind.ROSTER]
        assert rosters == sorted(rosters) and rosters[-1] == final
    finally:
        for store in (a, b, reader):
            await store.close()


async def test_sessions_authenticated_in_one_process_are_announced_in_one_takeover_signal(store):
    # Issue 17: a device that reconnects to another node must lose its session here; the
    # node that took it announces its new sessions, many in one signal.
    first = await store.last_signal_id()
    assert await store.announce_sessions({}) == 0 and await store.last_signal_id() == first  # nothing: no row
    signal_id = await store.announce_sessions({"LMG1": ("ab" * 16, 1_000), "LMG2": ("cd" * 16, 1_001)})
    [signal] = await store.signals_after(first)
    assert (signal.id, signal.kind, signal.subject) == (signal_id, SignalKind.TAKEOVER, "")
    assert orjson.loads(signal.detail) == {"LMG1": ["ab" * 16, 1_000], "LMG2": ["cd" * 16, 1_001]}
    assert await store.session_ends_after(first) == []  # not a session end: those are operators' doing
    for bad in ({"LMG1": ("", 1)}, {"LMG1": ("x" * 65, 1)}, {"LMG1": ("ab", -1)}):
        with pytest.raises(ValueError):
            await store.announce_sessions(bad)
