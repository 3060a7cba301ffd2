"""Supervision warnings to the province: the real store (SQLite and PostgreSQL), the real
forwarder and the province simulator (docs/province-api.md §7, §9).

A warning is made as the evaluation makes it, through `store.apply_warnings` with a
finding, then escalated and closed through the store; each change is a new version the
forwarder must deliver, whole, once the province holds it, with the resident ID number
never in clear.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import date

import pytest

from lmg.protocol import province as api
from lmg.protocol.identity import check_digit
from lmg.simulators.province import Access, Faults, held_warnings, report
from lmg.storage import (
    BidAward, EvaluationScope, KeyPerson, StoreUnavailable, WarningFinding, WarningState, open_store,
)
from tests.waiting import wait_for

from tests.server.forwarding.conftest import APP_KEY, APP_SECRET, WAIT_S, add_punches, drained, fast_config

DAY_MS = 86_400_000
MARCH = (date(2026, 3, 1), date(2026, 3, 31))
SCOPE = EvaluationScope(frozenset({"low-presence"}), *MARCH)
PROJECT = "P-620102-SUP"


def person(n: int) -> str:
    first17 = f"62010219800101{n:03d}"
    return first17 + check_digit(first17)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_store(request, tmp_path):
    """A fresh store on each backend (PostgreSQL: a schema of its own, dropped after)."""
    if request.param == "sqlite":
        store = await open_store(None, data_dir=tmp_path / "gateway")
        yield store
        await store.close()
        return
    from tests.storage.conftest import PG_DSN, drop_schema, require_postgres

    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = await open_store(f"{PG_DSN}?schema={schema}", data_dir=tmp_path / "gateway")
    try:
        yield store
    finally:
        await store.close()
        await drop_schema(schema)


async def open_warning(store, *whos: int, project: str = PROJECT) -> int:
    """A `low-presence` warning on the project manager `person(who)` (张经理) of `project` for
    each of `whos` (default 1), opened as one evaluation opens them (an evaluation resolves
    what it does not find); returns the first one's id."""
    whos = whos or (1,)
    if await store.get_project(project) is None:
        await store.add_project(project, name="工程", region_code="620102")
        await store.import_bid_award(BidAward(f"GS-{project}", project, "甘肃建工集团", "91620000224330386X",
                                              date(2026, 1, 10),
                                              (KeyPerson("project-manager", person(1), "张经理"),)))
    findings = [WarningFinding("low-presence", project, person(who), "project-manager", *MARCH,
                               {"valid_days": 10, "construction_days": 22, "rate": 0.4545, "required_share": 0.8})
                for who in whos]
    await store.apply_warnings(SCOPE, findings, now_ms())
    [warning] = await store.list_warnings(worker_id=person(whos[0]), project_code=project)
    return int(warning.id)


def held(sim) -> list[tuple[int, int]]:
    return [(w["warning_id"], w["version"]) for w in held_warnings(sim.data_dir)]


async def nothing_due(store) -> bool:
    return await store.warnings_to_forward() == []


async def test_each_version_of_a_warning_reaches_the_province_whole_and_encrypted(any_store, province,
                                                                                  forwarding):
    store = any_store
    sim = await province()
    wid = await open_warning(store)
    running = forwarding(store, fast_config(sim.url, warning_interval_s=0.05))
    await wait_for(lambda: held(sim) == [(wid, 1)], WAIT_S, "version 1 at the province")
    await wait_for(lambda: nothing_due(store), WAIT_S, "version 1 marked forwarded")

    await store.escalate_warnings(now_ms() + 8 * DAY_MS, level2_after_ms=7 * DAY_MS, level3_after_ms=7 * DAY_MS)
    await wait_for(lambda: held(sim)[-1:] == [(wid, 2)], WAIT_S, "version 2 (escalated) at the province")
    await store.close_warning(wid, "约谈", note="约谈项目经理", by="ops-620100", now_ms=now_ms())
    await wait_for(lambda: held(sim)[-1:] == [(wid, 3)], WAIT_S, "version 3 (closed) at the province")
    await wait_for(lambda: nothing_due(store), WAIT_S, "version 3 marked forwarded")

    first, second, third = held_warnings(sim.data_dir)
    assert (first["level"], first["bureau_region"], first["state"]) == (1, "620102", "open")
    assert (second["level"], second["bureau_region"]) == (2, "620100")  # 城关区 -> 兰州市
    assert (third["state"], third["disposition"], third["note"], third["closed_by"]) == (
        "closed", "interview", "约谈项目经理", "ops-620100")
    assert [e["event"] for e in third["history"]] == ["opened", "escalated", "closed"]
    assert third["history"][:2] == second["history"]  # every version carries the whole history
    assert {w["worker_id"] for w in (first, second, third)} == {person(1)}  # the province decrypts it
    assert third["worker_name"] == "张经理" and third["figures"]["valid_days"] == 10
    # what travelled: never the ID number in clear
    assert sim.warning_bodies and not any(person(1).encode() in body for body in sim.warning_bodies)
    assert (await store.get_warning(wid)).forwarded_version == 3
    assert running.forwarder.stats.warnings == {"accepted": 3}


async def test_a_failing_province_is_retried_until_it_holds_the_warning(store, province, forwarding):
    sim = await province(error_rate=1.0)
    wid = await open_warning(store)
    running = forwarding(store, fast_config(sim.url, warning_interval_s=0.05))
    await wait_for(lambda: running.forwarder.stats.warnings.get("retried", 0) >= 2, WAIT_S, "two failed sends")
    assert held(sim) == [] and [w.id for w in await store.warnings_to_forward()] == [wid]
    assert running.forwarder.stats.attempts.get("http_500", 0) >= 2
    sim.faults = Faults()
    await wait_for(lambda: held(sim) == [(wid, 1)], WAIT_S, "the warning at the province after the fault")
    await wait_for(lambda: nothing_due(store), WAIT_S, "the warning marked forwarded")


async def test_a_resend_of_a_version_the_province_holds_is_a_duplicate_and_changes_nothing(store, province,
                                                                                           forwarding):
    sim = await province()
    wid = await open_warning(store)
    running = forwarding(store, fast_config(sim.url, warning_interval_s=600))  # sweeps only when called
    await wait_for(lambda: running.forwarder._session is not None, WAIT_S, "the forwarder's HTTP session")
    real_mark = store.mark_warnings_forwarded
    calls = []

    async def mark_fails_once(versions):
        calls.append(list(versions))
        if len(calls) == 1:
            raise StoreUnavailable("injected: the mark is lost")
        return await real_mark(versions)

    store.mark_warnings_forwarded = mark_fails_once
    assert await running.forwarder.send_warnings() == 1  # held by the province, not marked
    assert [w.id for w in await store.warnings_to_forward()] == [wid]
    assert await running.forwarder.send_warnings() == 1  # sent again: the province says duplicate
    assert calls == [[(wid, 1)], [(wid, 1)]] and await nothing_due(store)
    summary = report(sim.data_dir)
    assert (summary["warning_versions"], summary["warnings_received"], summary["warnings_duplicates"]) == (1, 2, 1)
    assert held(sim) == [(wid, 1)]


async def test_a_warning_that_changes_in_flight_is_sent_again_at_its_new_version(store, province, forwarding):
    sim = await province()
    wid = await open_warning(store)
    running = forwarding(store, fast_config(sim.url, warning_interval_s=600))
    await wait_for(lambda: running.forwarder._session is not None, WAIT_S, "the forwarder's HTTP session")
    real_history = store.warning_history

    async def history_after_an_escalation(warning_id):
        # the warning escalates between the forwarder reading it and reading its history
        store.warning_history = real_history
        await store.escalate_warnings(now_ms() + 8 * DAY_MS, level2_after_ms=7 * DAY_MS, level3_after_ms=DAY_MS * 99)
        return await real_history(warning_id)

    store.warning_history = history_after_an_escalation
    assert await running.forwarder.send_warnings() == 1
    [sent] = held_warnings(sim.data_dir)
    assert (sent["version"], sent["level"], len(sent["history"])) == (1, 1, 1)  # version 1 as read, whole
    assert [(w.id, w.version, w.forwarded_version) for w in await store.warnings_to_forward()] == [(wid, 2, 1)]
    assert await running.forwarder.send_warnings() == 1
    assert held(sim) == [(wid, 1), (wid, 2)] and await nothing_due(store)


async def test_a_province_without_the_warnings_permission_does_not_stop_the_punches(store, province, forwarding):
    sim = await province(access=Access(APP_KEY, APP_SECRET, (), frozenset({"attendance", "devices", "photos"})))
    await open_warning(store)
    sent = await add_punches(store, devices=3, per_device=10)
    running = forwarding(store, fast_config(sim.url, warning_interval_s=0.05, breaker_failures=2))
    await wait_for(lambda: running.forwarder.stats.warnings.get("retried", 0) >= 3, WAIT_S,
                   "several refused warning requests")
    await drained(store)
    assert report(sim.data_dir)["unique"] == len(sent) and report(sim.data_dir)["refused"] == {
        "1101": running.forwarder.stats.warnings["retried"]}
    assert running.forwarder.breaker.state.value == "closed"  # 403 1101 is about warnings only
    assert len(await store.warnings_to_forward()) == 1  # still due, for when the province grants it


async def test_a_warning_that_cannot_be_sent_is_logged_counted_and_marked(store, province, forwarding, caplog):
    sim = await province()
    wid = await open_warning(store, 1, 2)
    [other] = [w.id for w in await store.list_warnings(worker_id=person(2))]
    running = forwarding(store, fast_config(sim.url, warning_interval_s=600))
    await wait_for(lambda: running.forwarder._session is not None, WAIT_S, "the forwarder's HTTP session")
    assert await running.forwarder.send_warnings() == 2
    # a note that quotes the number in clear: it must not travel, and must not block the others
    await store.close_warning(wid, "约谈", note=f"约谈 {person(1)}", by="ops-620102", now_ms=now_ms())
    await store.close_warning(other, "约谈", note="约谈项目经理", by="ops-620102", now_ms=now_ms())
    assert await running.forwarder.send_warnings() == 1
    assert held(sim) == [(wid, 1), (other, 1), (other, 2)] and await nothing_due(store)
    assert running.forwarder.stats.warnings == {"accepted": 3, "rejected": 1}
    assert any("in clear" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    assert not any(person(1).encode() in body for body in sim.warning_bodies)


async def test_a_warnings_sweep_starts_only_while_no_punches_are_in_flight(store, province, forwarding):
    sim = await province(latency_ms=100)
    wid = await open_warning(store)
    await add_punches(store, devices=20, per_device=20)
    running = forwarding(store, fast_config(sim.url, warning_interval_s=0.02))
    forwarder = running.forwarder
    held_at_warning_requests = []
    real_request = forwarder._request

    async def request(method, path, body, content_type):
        if path == api.PATH_WARNINGS:
            held_at_warning_requests.append(forwarder.held)
        return await real_request(method, path, body, content_type)

    forwarder._request = request
    await drained(store)
    await wait_for(lambda: held(sim) == [(wid, 1)], WAIT_S, "the warning at the province")
    assert held_at_warning_requests == [0]  # punches first: the sweep waited for a moment without any
    assert forwarder.stats.acked == 400


def test_the_documents_rule_codes_are_the_rules_and_the_wire_accepts_them():
    from pathlib import Path

    from lmg.server.supervision.rules import RuleCode

    doc = (Path(__file__).resolve().parents[3] / "docs" / "province-api.md").read_text(encoding="utf-8")
    row = next(line for line in doc.splitlines() if line.startswith("| `rule` |"))
    assert set(re.findall(r"`([a-z-]+)`", row)) - {"rule"} == {code.value for code in RuleCode}
    assert all(api.RULE_CODE_RE.fullmatch(code.value) for code in RuleCode)
