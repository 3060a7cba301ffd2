"""The evaluation against a table of calendar scenarios, late backlogs, keys and properties.

Each scenario is a small site (tests/server/supervision/sites.py) and the findings it must
give, named by rule, project, person and period. The properties run random sites:
evaluating is idempotent and independent of the order of every input (punch arrival
above all), and adding valid days never makes a low-presence or committed-absent finding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmg.protocol.posts import Post
from lmg.server.supervision.calendar import MaskDays, Month, Punched, aggregate_days, mask_of, punched_days_from_rows
from lmg.server.supervision.evaluate import Figures, Finding, evaluate, scope
from lmg.server.supervision.facts import Facts, ProjectFacts, PunchedDays
from lmg.server.supervision.rules import RuleCode, Rules, default_rules, default_text, parse_rules
from tests.server.supervision.sites import (
    LI,
    MARCH,
    P1,
    WANG,
    ZHANG,
    Site,
    at,
    d,
    manager_present_except,
    span,
    summary,
)

RULES = default_rules()
LOW, RUN, NOT_COMMITTED, ABSENT, DOUBLE = ("low-presence", "consecutive-absence", "not-committed",
                                           "committed-absent", "double-post")
WHOLE_MARCH = (d(1), d(31))


@dataclass(frozen=True)
class Scenario:
    name: str
    site: Callable[[], Site]
    expected: set[tuple[str, str, str, date, date]]
    as_of: date | None = None  # None: the month is over
    month: Month = MARCH

    def __str__(self) -> str:
        return self.name


def _leave_over_year_cap() -> Site:
    # 18 days of leave in January to March, then 7 in April: 2 fit the year's 20, 5 do not
    site = manager_present_except(*span(d(10), d(15)), *span(d(10, 4), d(16, 4)), first=d(1), last=d(30, 4))
    site.leave(ZHANG, d(6, 1), d(11, 1)).leave(ZHANG, d(10, 2), d(15, 2)).leave(ZHANG, d(10), d(15))
    return site.leave(ZHANG, d(10, 4), d(16, 4))


def _holiday_leave() -> Site:
    site = manager_present_except(*span(d(1), d(12))).leave(ZHANG, d(1), d(12))
    site.pause_days |= set(span(d(1), d(6)))  # 6 of the 12 leave days are pause days: they cost no leave
    return site


def _night_shift() -> Site:
    # in at 20:00 on the 10th, a punch at 23:59 and out at 00:01 on the 11th: in China time the
    # 10th has two punches 3 h 59 min apart (not valid); grouped by UTC day the three would
    # make a valid 10th (4 h 01 min), and no run of five
    site = manager_present_except(*span(d(6), d(10)))
    return site.punch(ZHANG, d(10), 20).punch(ZHANG, d(10), 23, 59).punch(ZHANG, d(11), 0, 1)


def _change(recorded: bool, li_from: date = d(16), zhang_until: date = d(15)) -> Site:
    site = Site()
    site.commit(ZHANG, to_date=d(16) if recorded else None).hold(ZHANG)
    if recorded:
        site.commit(LI, from_date=d(16))
    site.hold(LI)
    site.present(ZHANG, span(d(1, 2), zhang_until))
    return site.present(LI, span(li_from, d(31)))


def _two_projects(p2_active: bool = True) -> Site:
    site = manager_present_except()
    site.projects.append(ProjectFacts("P2", "620402", d(1), None, active=p2_active))
    site.commit(ZHANG, project="P2").hold(ZHANG, project="P2")
    for day in (d(5), d(12)):  # an afternoon on P2 (4 h 30 min: valid there too)
        site.punch(ZHANG, day, 13, 0, "P2").punch(ZHANG, day, 17, 30, "P2")
    return site


def _two_projects_committed_late() -> Site:
    site = _two_projects()
    site.commitments[-1] = dataclasses.replace(site.commitments[-1], from_date=d(10))  # P2's from the 10th
    return site


def _never_comes() -> Site:
    return manager_present_except().commit(WANG, Post.SAFETY_OFFICER).hold(WANG, Post.SAFETY_OFFICER)


def _no_award_for_the_post() -> Site:
    site = manager_present_except().hold(WANG, Post.QUALITY_OFFICER)
    return site.present(WANG, span(d(1), d(31)))


def _no_start_date() -> Site:
    site = Site(projects=[dataclasses.replace(P1, start_date=None)])
    return site.commit(ZHANG).hold(ZHANG)


SCENARIOS = [
    Scenario("all present", manager_present_except, set()),
    Scenario("absent four days in a row", lambda: manager_present_except(*span(d(10), d(13))), set()),
    Scenario("absent five days in a row", lambda: manager_present_except(*span(d(10), d(14))),
             {(RUN, "P1", "张三", d(10), d(14))}),
    Scenario("leave inside the cap",
             lambda: manager_present_except(*span(d(10), d(15))).leave(ZHANG, d(10), d(15)), set()),
    # 15 days of leave: 6 excused (3rd-8th), the 9 over the month's cap are absent days: a run
    # of 9 and 16 valid days of 25
    Scenario("leave over the month cap",
             lambda: manager_present_except(*span(d(3), d(17))).leave(ZHANG, d(3), d(17)),
             {(RUN, "P1", "张三", d(9), d(17)), (LOW, "P1", "张三", *WHOLE_MARCH)}),
    Scenario("leave over the year cap", _leave_over_year_cap, {(RUN, "P1", "张三", d(12, 4), d(16, 4))},
             month=Month(2025, 4)),
    Scenario("leave over pause days costs no leave", _holiday_leave, set()),
    Scenario("stop-work", lambda: manager_present_except(*span(d(10), d(20))).stop(d(10), d(20)), set()),
    # absent 8th-18th, stopped 10th-14th: six absent construction days, one run across the stop;
    # 20 valid days of 26
    Scenario("a stop-work neither breaks nor lengthens a run",
             lambda: manager_present_except(*span(d(8), d(18))).stop(d(10), d(14)),
             {(RUN, "P1", "张三", d(8), d(18)), (LOW, "P1", "张三", *WHOLE_MARCH)}),
    Scenario("pause days", lambda: _with_pauses(manager_present_except(*span(d(3), d(9))), span(d(3), d(9))), set()),
    Scenario("a personnel change mid-month", lambda: _change(recorded=True), set()),
    Scenario("a change not recorded: the old person still counts", lambda: _change(recorded=False),
             {(RUN, "P1", "张三", d(16), d(31)), (LOW, "P1", "张三", *WHOLE_MARCH),
              (NOT_COMMITTED, "P1", "李四", d(1), d(31))}),
    Scenario("a replacement punching before the change is approved", lambda: _change(recorded=True, li_from=d(12)),
             {(NOT_COMMITTED, "P1", "李四", d(1), d(15))}),
    Scenario("the replaced person punching after the change", lambda: _change(recorded=True, zhang_until=d(20)),
             {(NOT_COMMITTED, "P1", "张三", d(1), d(20))}),
    Scenario("a punch at 23:59 and one at 00:01 are on two days", _night_shift,
             {(RUN, "P1", "张三", d(6), d(10))}),
    # P2 started on 1 March and saw him on the 5th and the 12th only
    Scenario("two projects with one manager", _two_projects,
             {(DOUBLE, "P1", "张三", d(1), d(12)), (DOUBLE, "P2", "张三", d(1), d(12)),
              (RUN, "P2", "张三", d(6), d(11)), (RUN, "P2", "张三", d(13), d(31)), (LOW, "P2", "张三", *WHOLE_MARCH)}),
    Scenario("two projects, the other inactive", lambda: _two_projects(p2_active=False), set()),
    # committed on P2 from the 10th: the 5th there is a day without a commitment, not a double post
    Scenario("two projects, committed on the second from the 10th", _two_projects_committed_late,
             {(DOUBLE, "P1", "张三", d(1), d(12)), (DOUBLE, "P2", "张三", d(1), d(12)),
              (NOT_COMMITTED, "P2", "张三", d(1), d(5)), (RUN, "P2", "张三", d(13), d(31)),
              (LOW, "P2", "张三", *WHOLE_MARCH)}),
    Scenario("a committed person who never comes", _never_comes,
             {(ABSENT, "P1", "王五", *WHOLE_MARCH), (LOW, "P1", "王五", *WHOLE_MARCH),
              (RUN, "P1", "王五", *WHOLE_MARCH)}),
    Scenario("the month to date: daily rules only", lambda: manager_present_except(*span(d(1), d(20))),
             {(RUN, "P1", "张三", d(1), d(20))}, as_of=d(20)),
    Scenario("a day before the month", lambda: manager_present_except(*span(d(1), d(20))), set(), as_of=d(28, 2)),
    Scenario("a run from the month before, in March", lambda: manager_present_except(*span(d(26, 2), d(3))),
             {(RUN, "P1", "张三", d(1), d(3))}),
    Scenario("a run from the month before, in February (3 days there)",
             lambda: manager_present_except(*span(d(26, 2), d(3)), first=d(1, 1)), set(), month=Month(2025, 2)),
    Scenario("no award names anyone for the post", _no_award_for_the_post, set()),
    Scenario("a project without a start date", _no_start_date, set()),
]


def _with_pauses(site: Site, pauses: list[date]) -> Site:
    site.pause_days |= set(pauses)
    return site


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_scenario(scenario: Scenario):
    site = scenario.site()
    findings = evaluate(site.facts(scenario.month), RULES, scenario.month, scenario.as_of)
    assert summary(findings) == scenario.expected
    assert len({f.key for f in findings}) == len(findings)


def test_the_figures_of_leave_over_the_cap():
    site = manager_present_except(*span(d(3), d(17))).leave(ZHANG, d(3), d(17))
    low = _only(evaluate(site.facts(), RULES, MARCH), RuleCode.LOW_PRESENCE)
    assert low.figures == Figures(construction_days=25, valid_days=16, required_share=RULES.required_share(
        Post.PROJECT_MANAGER), days=tuple(span(d(9), d(17))), leave_days=6, over_cap_leave_days=9)
    assert low.figures.as_json() == {
        "construction_days": 25, "valid_days": 16, "rate": 0.64, "required_share": 0.8, "leave_days": 6,
        "over_cap_leave_days": 9, "days": [day.isoformat() for day in span(d(9), d(17))]}


def test_a_run_from_the_month_before_names_its_first_day():
    site = manager_present_except(*span(d(26, 2), d(3)))
    run = _only(evaluate(site.facts(), RULES, MARCH), RuleCode.CONSECUTIVE_ABSENCE)
    assert (run.figures.run_first_day, run.figures.run_days, run.figures.days) == (d(26, 2), 6, tuple(span(d(1), d(3))))


def test_double_post_names_the_other_project_and_the_days():
    findings = evaluate(_two_projects().facts(), RULES, MARCH)
    doubles = {f.project_code: f.figures for f in findings if f.rule is RuleCode.DOUBLE_POST}
    assert doubles["P1"].other_projects == ("P2",) and doubles["P2"].other_projects == ("P1",)
    assert doubles["P1"].days == doubles["P2"].days == (d(5), d(12))
    late = evaluate(_two_projects_committed_late().facts(), RULES, MARCH)
    assert [f.figures.days for f in late if f.rule is RuleCode.DOUBLE_POST] == [(d(12),), (d(12),)]


def test_exactly_80_percent_is_enough_and_one_day_less_is_not():
    # 31 construction days: 25 valid days is 80.6%; one fewer is 77.4%
    absent = [d(2), d(4), d(6), d(8), d(20), d(22)]
    assert summary(evaluate(manager_present_except(*absent).facts(), RULES, MARCH)) == set()
    findings = evaluate(manager_present_except(*absent, d(24)).facts(), RULES, MARCH)
    assert summary(findings) == {(LOW, "P1", "张三", *WHOLE_MARCH)}


def test_a_share_met_exactly_is_met_in_exact_arithmetic():
    # 14 valid days of 25 at 56%: in floating point 0.56 * 25 is 14.000000000000002, and 14 < that
    rules = parse_rules(default_text().replace("project-manager = 0.80", "project-manager = 0.56"), "56%")
    absent = [*span(d(1), d(4)), *span(d(6), d(9)), d(11), d(13), d(15)]  # runs of 4: no consecutive absence
    site = manager_present_except(*absent).stop(d(26), d(31))
    assert evaluate(site.facts(), rules, MARCH) == []
    site = manager_present_except(*absent, d(17)).stop(d(26), d(31))
    assert summary(evaluate(site.facts(), rules, MARCH)) == {(LOW, "P1", "张三", *WHOLE_MARCH)}


def _only(findings: list[Finding], rule: RuleCode) -> Finding:
    (found,) = [f for f in findings if f.rule is rule]
    return found


# --- late backlogs, keys and scope -------------------------------------------------------------------


def test_a_late_backlog_clears_the_warning_it_disproves():
    site = manager_present_except(*span(d(10), d(14)))
    before = evaluate(site.facts(), RULES, MARCH, as_of=d(15))
    (run,) = before
    assert run.rule is RuleCode.CONSECUTIVE_ABSENCE
    site.present(ZHANG, [d(12)])  # the terminal was offline; its stored punches arrive on the 16th
    after = evaluate(site.facts(), RULES, MARCH, as_of=d(16))
    assert after == []
    # the store resolves it: it lies in the scope of the evaluation that no longer finds it
    assert scope(site.facts(), MARCH, d(16)).covers(run.rule, run.project_code, run.period_start)


def test_a_late_backlog_clears_low_presence_and_a_run():
    site = manager_present_except(*span(d(1), d(5)), d(20), d(22))  # 24 valid days of 31
    assert summary(evaluate(site.facts(), RULES, MARCH)) == {(RUN, "P1", "张三", d(1), d(5)),
                                                             (LOW, "P1", "张三", *WHOLE_MARCH)}
    site.present(ZHANG, [d(3)])  # 25 of 31, and the run is broken
    assert summary(evaluate(site.facts(), RULES, MARCH)) == set()
    assert not scope(site.facts(), MARCH).covers(RuleCode.LOW_PRESENCE, "P1", d(1, 2))


def test_a_growing_run_keeps_its_key():
    site = manager_present_except(*span(d(10), d(20)))
    keys = set()
    for as_of in span(d(14), d(25)):
        (run,) = evaluate(site.facts(), RULES, MARCH, as_of)
        keys.add(run.key)
        assert run.period_end == min(as_of, d(20))
    assert keys == {f"consecutive-absence|P1|project-manager|{ZHANG}|2025-03-10"}


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.expected], ids=str)
def test_the_store_takes_the_findings_and_their_scope(scenario: Scenario):
    from lmg.storage.api import EvaluationScope, WarningFinding
    from lmg.storage.supervision import check_scope, checked_findings

    facts = scenario.site().facts(scenario.month)
    findings = evaluate(facts, RULES, scenario.month, scenario.as_of)
    where = scope(facts, scenario.month, scenario.as_of)
    stored_scope = check_scope(EvaluationScope(frozenset(map(str, where.rules)), where.first_day, where.last_day,
                                               where.project_codes))
    rows = [WarningFinding(str(f.rule), f.project_code, f.id_number, f.post.code, f.period_start, f.period_end,
                           f.figures.as_json()) for f in findings]
    assert [row.key for row in checked_findings(stored_scope, rows)] == [f.key for f in findings]


def test_scope_by_how_far_the_month_is():
    facts = _two_projects(p2_active=False).facts()
    mid = scope(facts, MARCH, d(15))
    assert mid.rules == {RuleCode.CONSECUTIVE_ABSENCE, RuleCode.NOT_COMMITTED, RuleCode.DOUBLE_POST}
    assert mid.project_codes == {"P1"} and mid.through == d(15)
    assert (mid.first_day, mid.last_day) == (d(1), d(31))
    assert scope(facts, MARCH).rules == set(RuleCode) == scope(facts, MARCH, d(1, 4)).rules
    assert scope(facts, MARCH, d(28, 2)).rules == frozenset()
    assert not mid.covers(RuleCode.LOW_PRESENCE, "P1", d(1))
    assert not mid.covers(RuleCode.CONSECUTIVE_ABSENCE, "P2", d(1))
    assert not mid.covers(RuleCode.CONSECUTIVE_ABSENCE, "P1", d(1, 4))


def test_attendance_must_reach_back_to_the_month():
    facts = dataclasses.replace(manager_present_except().facts(), attendance_from=d(2))
    with pytest.raises(ValueError, match="needs attendance from 2025-03-01"):
        evaluate(facts, RULES, MARCH)


def test_split_aggregates_of_one_day_are_merged():
    site = manager_present_except(*span(d(10), d(14)))
    whole = site.facts()
    # the same day's punches as two rows: 08:00 alone, then 18:00 alone (neither valid alone)
    split = aggregate_days([Punched("P1", ZHANG, at(d(12), 8))]) + aggregate_days([Punched("P1", ZHANG, at(d(12), 18))])
    merged = dataclasses.replace(whole, attendance=(*whole.attendance, *split))
    assert evaluate(whole, RULES, MARCH) != []
    assert evaluate(merged, RULES, MARCH) == []


def test_names_do_not_depend_on_the_order_of_records():
    site = _change(recorded=False)
    site.holders.append(dataclasses.replace(site.holders[-1], name="李肆"))
    site.commitments.append(dataclasses.replace(site.commitments[0], name="张叁"))
    facts = site.facts()
    forward = evaluate(facts, RULES, MARCH)
    backward = evaluate(dataclasses.replace(facts, holders=facts.holders[::-1], commitments=facts.commitments[::-1]),
                        RULES, MARCH)
    assert forward == backward
    assert {f.name for f in forward} == {"张叁", "李肆"}  # the greater, whatever the order


# --- properties ----------------------------------------------------------------------------------------

PEOPLE = (ZHANG, LI, WANG)
POSTS = (Post.PROJECT_MANAGER, Post.CHIEF_SUPERVISOR, Post.SAFETY_OFFICER)
WINDOW = span(d(1, 2), d(31))
DAY_KINDS = ("valid", "single", "short", "night")
NAMES = st.sampled_from(("张三", "张叁"))  # a person's name written two ways in two records


def _day_punches(project: str, who: str, day: date, kind: str) -> list[Punched]:
    hours = {"valid": [(8, 0), (18, 0)], "single": [(9, 0)], "short": [(9, 0), (11, 0)], "night": [(20, 0), (23, 59)]}
    out = [Punched(project, who, at(day, h, m)) for h, m in hours[kind]]
    if kind == "night":
        out.append(Punched(project, who, at(day + timedelta(days=1), 0, 1)))
    return out


@st.composite
def random_sites(draw: st.DrawFn) -> tuple[Site, Rules]:
    dates = st.sampled_from(WINDOW)
    site = Site(projects=[P1, ProjectFacts("P2", "620402", draw(dates), draw(st.none() | dates),
                                           active=draw(st.booleans()))])
    for who in PEOPLE:
        for _ in range(draw(st.integers(0, 2))):
            start = draw(st.sampled_from(span(d(1, 1), d(31))))
            end = draw(st.none() | st.sampled_from(span(start + timedelta(days=1), d(1, 4))))
            site.commit(who, draw(st.sampled_from(POSTS)), draw(st.sampled_from(("P1", "P2"))), start, end,
                        name=draw(NAMES))
        for _ in range(draw(st.integers(0, 2))):
            site.hold(who, draw(st.sampled_from(POSTS)), draw(st.sampled_from(("P1", "P2"))), name=draw(NAMES))
    # each person's habit on each project (how often they come), then odd days of any kind
    rnd = draw(st.randoms(use_true_random=False))
    for project in ("P1", "P2"):
        for who in PEOPLE:
            rate = draw(st.sampled_from((0.0, 0.3, 0.8, 0.97)))
            for day in WINDOW:
                if rnd.random() < rate:
                    site.punches += _day_punches(project, who, day, "valid")
    cells = draw(st.lists(st.tuples(st.sampled_from(("P1", "P2")), st.sampled_from(PEOPLE), dates,
                                    st.sampled_from(DAY_KINDS)), max_size=40))
    for project, who, day, kind in cells:
        site.punches += _day_punches(project, who, day, kind)
    for _ in range(draw(st.integers(0, 3))):
        first = draw(st.sampled_from(span(d(1, 1), d(31))))
        site.leave(draw(st.sampled_from(PEOPLE)), first, first + timedelta(days=draw(st.integers(0, 9))),
                   draw(st.sampled_from(("P1", "P2"))))
    for _ in range(draw(st.integers(0, 2))):
        first = draw(dates)
        site.stop(first, first + timedelta(days=draw(st.integers(0, 6))), draw(st.sampled_from(("P1", "P2"))))
    site.pause_days |= set(draw(st.lists(dates, max_size=4)))
    rules = dataclasses.replace(RULES, consecutive_days=draw(st.integers(1, 6)),
                                leave_days_per_month=draw(st.integers(0, 6)))
    return site, rules


AS_OF = st.none() | st.sampled_from(span(d(25, 2), d(2, 4)))


@settings(max_examples=100, deadline=None)
@given(random_sites(), AS_OF, st.randoms(use_true_random=False))
def test_evaluation_is_idempotent_and_independent_of_input_order(built, as_of, rnd):
    site, rules = built
    facts = site.facts()
    once = evaluate(facts, rules, MARCH, as_of)
    assert evaluate(facts, rules, MARCH, as_of) == once  # idempotent
    assert len({f.key for f in once}) == len(once)
    assert all(scope(facts, MARCH, as_of).covers(f.rule, f.project_code, f.period_start) for f in once)

    def shuffled(items):
        items = list(items)
        rnd.shuffle(items)
        return tuple(items)

    punches = shuffled(site.punches)  # the punches arrive in another order, the backlog split in two
    half = rnd.randrange(len(punches) + 1)
    reordered = Facts(facts.attendance_from, shuffled(facts.projects), shuffled(facts.commitments),
                      shuffled(facts.holders),
                      shuffled(aggregate_days(punches[:half]) + aggregate_days(punches[half:])),
                      shuffled(facts.leaves), shuffled(facts.stop_works), frozenset(shuffled(facts.pause_days)))
    assert evaluate(reordered, rules, MARCH, as_of) == once


@settings(max_examples=100, deadline=None)
@given(random_sites(), st.lists(st.tuples(st.sampled_from(("P1", "P2")), st.sampled_from(PEOPLE),
                                          st.sampled_from(WINDOW)), min_size=1, max_size=20))
def test_adding_valid_days_never_makes_low_presence_or_committed_absent(built, extra):
    site, rules = built
    before = evaluate(site.facts(), rules, MARCH)
    for project, who, day in extra:
        site.punches += _day_punches(project, who, day, "valid")
    after = evaluate(site.facts(), rules, MARCH)
    monotone = (RuleCode.LOW_PRESENCE, RuleCode.COMMITTED_ABSENT)
    assert {f.key for f in after if f.rule in monotone} <= {f.key for f in before if f.rule in monotone}


@settings(max_examples=100, deadline=None)
@given(random_sites(), AS_OF)
def test_the_stores_masks_give_the_findings_the_day_rows_give(built, as_of):
    """The province path (service.find) hands the core each person's days as the store's bit
    masks (`punched_days`), the calendar path hands day rows (`attendance`): one truth."""
    site, rules = built
    facts = site.facts()
    first = facts.attendance_from
    bits = MaskDays(first)
    by_person = punched_days_from_rows(facts.attendance, rules)
    masked = [PunchedDays(p.project, p.id_number, bits.days(mask_of(first, p.punched)), bits.days(mask_of(first, p.valid)))
              for p in by_person.values()]
    assert [(p.punched, p.valid) for p in masked] == [(p.punched, p.valid) for p in by_person.values()]
    from_masks = dataclasses.replace(facts, attendance=(), punched_days=masked)
    assert evaluate(from_masks, rules, MARCH, as_of) == evaluate(facts, rules, MARCH, as_of)
    # split: some people by rows, the others by masks
    half = {key for n, key in enumerate(sorted(by_person)) if n % 2}
    mixed = dataclasses.replace(facts, attendance=[a for a in facts.attendance if (a.project, a.id_number) not in half],
                                punched_days=[p for p in masked if (p.project, p.id_number) in half])
    assert evaluate(mixed, rules, MARCH, as_of) == evaluate(facts, rules, MARCH, as_of)


def test_mask_days_reads_every_bit_and_refuses_what_does_not_fit():
    first = d(1, 2)
    bits = MaskDays(first)
    every = frozenset(first + timedelta(days=n) for n in range(62))
    assert bits.days((1 << 62) - 1) == every
    assert bits.days(mask_of(first, [d(1, 2), d(31)])) == {d(1, 2), d(31)}
    assert bits.days(0) == frozenset()
    with pytest.raises(ValueError, match="62 days"):
        bits.days(1 << 62)
    with pytest.raises(ValueError, match="outside"):
        mask_of(first, [first - timedelta(days=1)])
