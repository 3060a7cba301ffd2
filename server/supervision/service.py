"""The supervision's asyncio glue: load the facts of a month from the store, evaluate, apply.

`evaluate_month(store, rules, month, as_of=..., now_ms=...)` is one evaluation: it reads
what `facts.Facts` says an evaluation of `month` needs, runs the pure core
(`evaluate.evaluate`, `evaluate.scope`), hands every finding to `store.apply_warnings` in
ONE call (one transaction: the warnings of a month never stand half applied) and then
raises the levels that fell due (`store.escalate_warnings`). `SupervisionSchedule` decides
which months to evaluate when (`run_once`), and the gateway runs it every
`supervision_evaluate_s` (`run_every`). Time is an input: both take `now_ms` or a clock
function; nothing here sleeps but `run_every`.

Memory and time, for a province (20,000 projects, 120,000 committed people, 3.6M attendance
days a month): the store aggregates each person's days on a project into two bit masks
(`Store.iter_attendance_masks`: the days punched and the valid ones, decided in SQL with the
rules' `min_punches` and `min_span_ms`), so a province is 120,000 rows rather than millions,
and the evaluation costs little more than one SQL aggregate (`lmg bench supervision`). The
rows are streamed in the store's pages, ordered by project, and evaluated in chunks of
`CHUNK_PROJECTS` projects. Every rule is about one (project, person) but `double-post`,
which needs a person's days on all their projects: it is evaluated once at the end over the
people committed on two projects or more (a few; their rows are kept while streaming), and
the chunks' own `double-post` findings are dropped. Rows of people neither committed nor
holding a key post (the workers, most of a site) are dropped as they stream.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import NamedTuple

from lmg.protocol.posts import Post
from lmg.server.supervision.calendar import MaskDays, Month, attendance_from, china_day
from lmg.server.supervision.evaluate import Finding, evaluate, scope
from lmg.server.supervision.facts import (
    Commitment,
    Facts,
    Leave,
    ProjectFacts,
    PunchedDays,
    RosterHolder,
    StopWork,
)
from lmg.server.supervision.rules import RuleCode, Rules
from lmg.storage import ApplyResult, EvaluationScope, Project, Store, StoreError, WarningFinding

log = logging.getLogger("lmg.supervision")

# Projects evaluated at once: 250 projects hold ~1,500 committed people and ~90,000 day rows
# of two months (~15 MB as facts). Small enough that a province makes 80 chunks, so the
# pool evaluates one while the loop reads the next; the CPU per project is the same from
# 100 to 1,000 a chunk (measured 3.0-3.3 s for 1,000 projects, this VM, 2026-11).
CHUNK_PROJECTS = 250
PROJECT_PAGE = 10_000  # list_projects' largest page
# The first run on a store that has no mark of a previous look (`BACKLOG_MARK`) looks this
# far back for late backlogs; every later run, in any process or node, starts from the mark.
FIRST_BACKLOG_LOOKBACK_MS = 2 * 86_400_000
# The store's supervision marks (Store.get_supervision_marks): when a run last looked for late
# backlogs, and each month evaluated in full (by any process: a restart does not redo it).
BACKLOG_MARK = "backlog_checked_ms"
MONTH_MARK = "month_evaluated:"  # + YYYY-MM
# days_with_punches_received: a group commit stamps its punches before it commits, so a
# punch may become visible a little after its receive time (storage's advice: a minute).
RECEIVED_OVERLAP_MS = 60_000
# The previous month is evaluated in full on the first run of the month's first days; a
# gateway down on the 1st still does it when it comes back within these days.
PREVIOUS_MONTH_DAYS = 7
# Chunks evaluated or waiting in the pool while the next is read: two keep the process busy
# and hold at most three chunks' rows (~1M) in memory.
CHUNKS_IN_FLIGHT = 2


@dataclass(frozen=True, slots=True)
class MonthRun:
    """What one evaluation of a month did: the month, the last day decided (None: the month
    is over, every rule decided), how many findings, what the store changed and how many
    levels rose."""

    month: Month
    as_of: date | None
    findings: int
    applied: ApplyResult
    escalated: int
    by_rule: dict[str, int] = field(default_factory=dict)


async def all_projects(store: Store, codes: Collection[str] | None = None) -> list[Project]:
    """Every project (or those of `codes`), by code."""
    out: list[Project] = []
    after = ""
    while True:
        page = await store.list_projects(after_code=after, limit=PROJECT_PAGE)
        out += page if codes is None else [p for p in page if p.code in codes]
        if len(page) < PROJECT_PAGE:
            return out
        after = page[-1].code


def to_finding(f: Finding) -> WarningFinding:
    """A core finding as the store's (the same key; docs/supervision.md, "The evaluation")."""
    return WarningFinding(str(f.rule), f.project_code, f.id_number, f.post.code, f.period_start, f.period_end,
                          f.figures.as_json())


def to_scope(facts: Facts, month: Month, as_of: date | None) -> EvaluationScope | None:
    """The store's scope of an evaluation; None when it decided nothing (as_of before the
    month, no project)."""
    s = scope(facts, month, as_of)
    if s.through is None or not s.rules or not s.project_codes:
        return None
    return EvaluationScope(frozenset(map(str, s.rules)), s.first_day, s.last_day, s.project_codes)


async def evaluate_month(store: Store, rules: Rules, month: Month, *, as_of: date | None, now_ms: int,
                         projects: Collection[str] | None = None, escalate: bool = True,
                         chunk_projects: int = CHUNK_PROJECTS, executor: Executor | None = None) -> ApplyResult:
    """Evaluate `month` as known on `as_of` (the last complete day; None: the month is
    over) for every project (or `projects`), apply the findings in one store call at
    `now_ms`, then escalate what fell due at `now_ms`. Idempotent: the same data gives no
    change the second time. `executor`: see `find`. Raises the store's errors
    (StoreUnavailable: nothing applied)."""
    return (await evaluate_month_run(store, rules, month, as_of=as_of, now_ms=now_ms, projects=projects,
                                     escalate=escalate, chunk_projects=chunk_projects, executor=executor)).applied


async def evaluate_month_run(store: Store, rules: Rules, month: Month, *, as_of: date | None, now_ms: int,
                             projects: Collection[str] | None = None, escalate: bool = True,
                             chunk_projects: int = CHUNK_PROJECTS, executor: Executor | None = None) -> MonthRun:
    """`evaluate_month` with what it did (`MonthRun`)."""
    findings = await find(store, rules, month, as_of=as_of, projects=projects, chunk_projects=chunk_projects,
                          executor=executor)
    applied, where = ApplyResult(), findings.scope
    if where is not None:
        applied = await store.apply_warnings(where, [to_finding(f) for f in findings.findings], now_ms)
    escalated = 0
    if escalate:
        escalated = await store.escalate_warnings(now_ms, level2_after_ms=rules.city_after_ms,
                                                  level3_after_ms=rules.province_after_ms)
    by_rule: dict[str, int] = defaultdict(int)
    for f in findings.findings:
        by_rule[str(f.rule)] += 1
    return MonthRun(month, as_of, len(findings.findings), applied, escalated, dict(sorted(by_rule.items())))


@dataclass(slots=True)
class Found:
    findings: list[Finding]
    scope: EvaluationScope | None


async def find(store: Store, rules: Rules, month: Month, *, as_of: date | None,
               projects: Collection[str] | None = None, chunk_projects: int = CHUNK_PROJECTS,
               executor: Executor | None = None) -> Found:
    """The findings of `month` on `as_of` and the scope they decide, read from the store;
    writes nothing (the report and the benchmark use it as it is).

    `executor`: where the chunks are evaluated (the core is CPU work: ~2 s for 1,000
    projects on the benchmark VM). None: here, on the event loop (the CLI, tests). The
    gateway passes a one-process pool (`evaluation_pool`), so that its loop keeps serving
    terminals and the evaluation of a chunk overlaps the reading of the next; at most
    `CHUNKS_IN_FLIGHT` chunks wait, which bounds the memory."""
    first = attendance_from(month)
    through = month.last if as_of is None else min(as_of, month.last)
    stored = await all_projects(store, None if projects is None else set(projects))
    project_facts = [ProjectFacts(p.code, p.region_code, p.start_date, p.end_date) for p in stored]
    where = to_scope(Facts(first, projects=project_facts), month, as_of)
    if where is None:
        return Found([], None)
    codes = None if projects is None else sorted(p.code for p in stored)
    commitments, holders, leaves, stops, pauses = await _inputs(store, codes, first, through)

    watched: dict[str, set[str]] = defaultdict(set)  # project -> the people whose rows count
    projects_of: dict[str, set[str]] = defaultdict(set)  # person -> projects committed on
    for c in commitments:
        watched[c.project].add(c.id_number)
        projects_of[c.id_number].add(c.project)
    for h in holders:
        watched[h.project].add(h.id_number)
    several = {who for who, on in projects_of.items() if len(on) > 1}

    by_project = _group(commitments, holders, leaves, stops)
    ordered = sorted(project_facts, key=lambda p: p.code)
    chunks = [ordered[i:i + chunk_projects] for i in range(0, len(ordered), chunk_projects)] or [[]]
    plain_rules = replace(rules, presence=dict(rules.presence))  # picklable: a process pool takes it
    loop = asyncio.get_running_loop()
    findings: list[Finding] = []
    in_flight: list[asyncio.Future[list[Finding]]] = []
    several_rows: list[Row] = []
    rows: list[Row] = []
    index = 0

    async def flush(upto: int) -> None:
        """Evaluate the chunks before `upto` with the rows gathered for them."""
        nonlocal index, rows
        while index < upto:
            chunk = chunks[index]
            inputs = [by_project[p.code] for p in chunk if p.code in by_project]
            if any(i.commitments for i in inputs):  # nobody committed: no rule has anyone to check
                work = Chunk(chunk, [c for i in inputs for c in i.commitments], [h for i in inputs for h in i.holders],
                             rows, [v for i in inputs for v in i.leaves], [s for i in inputs for s in i.stops])
                if executor is None:
                    findings.extend(evaluate_chunk(work, pauses, first, plain_rules, month, as_of))
                else:
                    in_flight.append(loop.run_in_executor(executor, evaluate_chunk, work, pauses, first,
                                                          plain_rules, month, as_of))
                    while len(in_flight) > CHUNKS_IN_FLIGHT:
                        findings.extend(await in_flight.pop(0))
            rows = []
            index += 1

    last_code = [c[-1].code if c else "" for c in chunks]
    nobody: frozenset[str] = frozenset()
    try:
        async for page in store.iter_attendance_masks(codes, first, through, min_punches=rules.min_punches,
                                                      min_span_ms=rules.min_span_ms):
            # a page at a time, in comprehensions: a province is 120,000 rows; [:] makes the
            # named tuple a plain one, half the cost to pickle for the pool
            kept = [row[:] for row in page if row[1] in watched.get(row[0], nobody)]
            if several:
                several_rows.extend(row for row in kept if row[1] in several)
            start = 0
            # rows are ordered by project: split them at the chunks' ends (every watched
            # project is in a chunk; the index check only keeps a stray row from failing)
            while start < len(kept) and index < len(chunks):
                if kept[start][0] > last_code[index]:
                    upto = index
                    while upto < len(chunks) and kept[start][0] > last_code[upto]:
                        upto += 1
                    await flush(upto)
                    if index == len(chunks):
                        break
                end = bisect_right(kept, last_code[index], lo=start, key=_project_of)
                rows.extend(kept[start:end])
                start = end
        await flush(len(chunks))
        for future in in_flight:
            findings.extend(await future)
    finally:
        for future in in_flight:
            future.cancel()
    if several:
        mine = [c for c in commitments if c.id_number in several]
        on = {c.project for c in mine}
        double = Chunk([p for p in project_facts if p.code in on], mine, [], several_rows, [], [])
        findings += [f for f in evaluate_chunk(double, pauses, first, plain_rules, month, as_of, every_rule=True)
                     if f.rule is RuleCode.DOUBLE_POST]
    findings.sort(key=lambda f: f.key)
    return Found(findings, where)


# (project code, ID number, punched days, valid days): the store's AttendanceMask as a plain
# tuple, the days as bits from the evaluation's first day (`attendance_from`)
Row = tuple[str, str, int, int]


def _project_of(row: Row) -> str:
    return row[0]


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one chunk's evaluation reads, sent to a pool process as it is (plain records)."""

    projects: list[ProjectFacts]
    commitments: list[Commitment]
    holders: list[RosterHolder]
    rows: list[Row]
    leaves: list[Leave]
    stops: list[StopWork]


def evaluate_chunk(chunk: Chunk, pauses: frozenset[date], first: date, rules: Rules, month: Month,
                   as_of: date | None, *, every_rule: bool = False) -> list[Finding]:
    """The findings of one chunk of projects, `double-post` left out unless `every_rule` (a
    chunk does not hold a person's other projects). Pure: runs in a pool process."""
    bits = MaskDays(first)
    attended = [PunchedDays(project, who, bits.days(punched), bits.days(valid)) for project, who, punched, valid
                in chunk.rows]
    facts = Facts(first, projects=chunk.projects, commitments=chunk.commitments, holders=chunk.holders,
                  leaves=chunk.leaves, stop_works=chunk.stops, pause_days=pauses, punched_days=attended)
    found = evaluate(facts, rules, month, as_of)
    return found if every_rule else [f for f in found if f.rule is not RuleCode.DOUBLE_POST]


def evaluation_pool() -> Executor:
    """A pool of one process for the evaluation (`find(executor=...)`), started by spawn: the
    gateway has threads (the SQLite readers), which fork would copy mid-lock. One process:
    the chunks are evaluated in order while the loop reads the next; more would only
    compete with the gateway and the store for a 2-core node."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


class _Inputs(NamedTuple):
    commitments: list[Commitment]
    holders: list[RosterHolder]
    leaves: list[Leave]
    stops: list[StopWork]
    pauses: frozenset[date]


async def _inputs(store: Store, codes: list[str] | None, first: date, through: date) -> _Inputs:
    """Everything but the attendance, converted to the core's records: from 1 January of
    `first`'s year (leave caps count from then) to `through`."""
    since = date(first.year, 1, 1)
    commitments = [Commitment(c.project_code, Post.parse(c.post), c.id_number, c.name, c.from_date,
                              c.to_date_exclusive)
                   for c in await store.key_personnel(codes, since, through)]
    holders = [RosterHolder(w.project_code, w.worker_id, Post.parse(w.post), w.name)
               for w in await store.list_key_post_workers(codes)]
    leaves = [Leave(v.project_code, v.id_number, v.first_day, v.last_day)
              for v in await store.list_leave(first_day=since, last_day=through, project_codes=codes)]
    stops = [StopWork(s.project_code, s.first_day, s.last_day)
             for s in await store.list_stop_work(first_day=since, last_day=through, project_codes=codes)]
    pauses = frozenset(p.day for p in await store.list_pause_days(since, through))
    return _Inputs(commitments, holders, leaves, stops, pauses)


async def load_facts(store: Store, rules: Rules, month: Month, *, as_of: date | None,
                     projects: list[Project]) -> Facts:
    """The whole `Facts` of an evaluation of `month` for a few `projects` (a region's report),
    attendance in memory as the store's per-person masks (`iter_attendance_masks`, judged
    with `rules`): not for a province (`find` streams)."""
    first = attendance_from(month)
    through = month.last if as_of is None else min(as_of, month.last)
    codes = sorted(p.code for p in projects)
    if not codes or through < first:
        return Facts(first)
    given = await _inputs(store, codes, first, through)
    watched = {(c.project, c.id_number) for c in given.commitments} | {(h.project, h.id_number)
                                                                       for h in given.holders}
    bits = MaskDays(first)
    attended = [PunchedDays(m.project_code, m.worker_id, bits.days(m.punched), bits.days(m.valid))
                async for page in store.iter_attendance_masks(codes, first, through, min_punches=rules.min_punches,
                                                              min_span_ms=rules.min_span_ms)
                for m in page if (m.project_code, m.worker_id) in watched]
    return Facts(first, projects=[ProjectFacts(p.code, p.region_code, p.start_date, p.end_date) for p in projects],
                 commitments=given.commitments, holders=given.holders, leaves=given.leaves, stop_works=given.stops,
                 pause_days=given.pauses, punched_days=attended)


@dataclass(slots=True)
class _ProjectInput:
    commitments: list[Commitment] = field(default_factory=list)
    holders: list[RosterHolder] = field(default_factory=list)
    leaves: list[Leave] = field(default_factory=list)
    stops: list[StopWork] = field(default_factory=list)


def _group(commitments: Iterable[Commitment], holders: Iterable[RosterHolder], leaves: Iterable[Leave],
           stops: Iterable[StopWork]) -> dict[str, _ProjectInput]:
    out: dict[str, _ProjectInput] = defaultdict(_ProjectInput)
    for c in commitments:
        out[c.project].commitments.append(c)
    for h in holders:
        out[h.project].holders.append(h)
    for v in leaves:
        out[v.project].leaves.append(v)
    for s in stops:
        out[s.project].stops.append(s)
    return out


# ----------------------------------------------------------------------------- the schedule


@dataclass(frozen=True, slots=True)
class Planned:
    """One evaluation a run makes: `month` as of `as_of` (None: in full), and why."""

    month: Month
    as_of: date | None
    why: str


def plan(today: date, *, backlog_days: Iterable[date], completed: Collection[Month]) -> list[Planned]:
    """The evaluations one scheduled run makes on China date `today` (pure).

    - The month of yesterday, as of yesterday (the last complete day): on the 1st that is
      the previous month in full.
    - In the first PREVIOUS_MONTH_DAYS of a month, the previous month in full unless this
      process did it already (`completed`).
    - Every month a late backlog touched (`backlog_days`, days before today), and the month
      after it up to yesterday's (a backlog at the end of a month can break a run of absence
      that goes on into the next), as of yesterday or in full when over.
    """
    yesterday = today - timedelta(days=1)
    current = Month.of(yesterday)
    wanted: dict[Month, str] = {current: "daily"}
    previous = Month.of(today).previous()
    if today.day <= PREVIOUS_MONTH_DAYS and previous not in completed and previous not in wanted:
        wanted[previous] = "month over"
    for day in sorted(set(backlog_days)):
        if day >= today:
            continue
        for month in (Month.of(day), Month.of(day).next()):
            if month <= current and month not in wanted:
                wanted[month] = "late backlog"
    return [Planned(m, None if m.last <= yesterday else yesterday, why) for m, why in sorted(wanted.items())]


def _evaluated_months(marks: Mapping[str, int]) -> set[Month]:
    """The months the marks say were evaluated in full; a mark that names no month is logged
    and ignored (the month is evaluated again, which is idempotent)."""
    out = set()
    for name in marks:
        if name.startswith(MONTH_MARK):
            try:
                out.add(Month.parse(name.removeprefix(MONTH_MARK)))
            except ValueError:
                log.warning("supervision: ignoring the mark %r, which names no month", name)
    return out


class SupervisionSchedule:
    """The gateway's scheduled evaluation: `run_once()` every `interval_s` (`run_every`).

    One process of all the nodes evaluates at a time (`store.evaluation_lock()`): another
    that finds the lock taken skips its run. `clock_ms` is the time (Unix ms) and the China
    date of today comes from it; tests inject it. What a run evaluates is `plan`."""

    def __init__(self, store: Store, rules: Rules, *, clock_ms: Callable[[], int], interval_s: float,
                 executor: Executor | None = None) -> None:
        self.store, self.rules, self.clock_ms, self.interval_s = store, rules, clock_ms, interval_s
        self.executor = executor  # see find(); the gateway's is evaluation_pool(), shut down with run_every
        self.completed: set[Month] = set()  # months this process evaluated in full
        self.checked_ms: int | None = None  # when the previous run looked for late backlogs
        self.runs = 0
        self.failures = 0

    async def run_once(self) -> list[MonthRun] | None:
        """One scheduled run; None when another process holds the evaluation lock. Raises the
        store's errors (the next run tries again: nothing is half applied)."""
        async with self.store.evaluation_lock() as held:
            if not held:
                log.debug("supervision: another process is evaluating; skipping this run")
                return None
            now = self.clock_ms()
            today = china_day(now)
            marks = await self.store.get_supervision_marks()
            # another node or an earlier process may have run since this one last did
            checked = max((m for m in (self.checked_ms, marks.get(BACKLOG_MARK)) if m is not None), default=None)
            after = now - FIRST_BACKLOG_LOOKBACK_MS if checked is None else checked - RECEIVED_OVERLAP_MS
            completed = self.completed | _evaluated_months(marks)
            touched = await self.store.days_with_punches_received(after, until_ms=now)
            runs = []
            for planned in plan(today, backlog_days=[d.day for d in touched], completed=completed):
                run = await evaluate_month_run(self.store, self.rules, planned.month, as_of=planned.as_of,
                                               now_ms=now, escalate=False, executor=self.executor)
                runs.append(run)
                if planned.as_of is None:
                    self.completed.add(planned.month)
                # an hourly run that changed nothing is not news: info only when warnings moved
                a = run.applied
                changed = a.opened + a.updated + a.reopened + a.resolved
                log.log(logging.INFO if changed else logging.DEBUG,
                        "supervision: %s evaluated (%s, as of %s): %d findings; %d opened, %d updated, "
                        "%d reopened, %d resolved, %d unchanged", planned.month, planned.why,
                        planned.as_of or "its end", run.findings, a.opened, a.updated, a.reopened, a.resolved,
                        a.unchanged)
            escalated = await self.store.escalate_warnings(now, level2_after_ms=self.rules.city_after_ms,
                                                           level3_after_ms=self.rules.province_after_ms)
            if escalated:
                log.info("supervision: %d warning levels rose", escalated)
            if runs:
                last = runs[-1]
                runs[-1] = MonthRun(last.month, last.as_of, last.findings, last.applied, escalated, last.by_rule)
            self.checked_ms = now
            await self.store.set_supervision_marks(
                {BACKLOG_MARK: now, **{f"{MONTH_MARK}{r.month}": now for r in runs if r.as_of is None}})
            self.runs += 1
            return runs

    async def run_every(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Run now, then every `interval_s`, until cancelled; a failed run is logged and the
        next one tries again. Cancelled, it shuts its executor down."""
        try:
            while True:
                try:
                    await self.run_once()
                except StoreError as exc:
                    self.failures += 1
                    log.warning("supervision: evaluation failed, next try in %.0f s: %s", self.interval_s, exc)
                except Exception:
                    self.failures += 1
                    log.exception("supervision: evaluation failed, next try in %.0f s", self.interval_s)
                await sleep(self.interval_s)
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=False, cancel_futures=True)
