"""The supervision routes and the region scope of every route of the admin API (issue 15 §6).

The scope test is systematic: it walks the app's own route table, so a route added later
without a case here fails the test until it says what a county token may do with it.
Places are real GB/T 2260 codes: 城关区 620102 and 七里河区 620103 under 兰州市 620100,
兰州新区 620171 (a node of its own, though its code starts with 6201)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import date, timedelta

import aiohttp
import orjson
import pytest

from lmg.protocol import MessageType
from lmg.protocol.identity import check_digit, mask_id_number
from lmg.protocol.roster_file import china_date
from lmg.server.admin import tokens
from lmg.server.admin.app import all_routes
from lmg.storage import (
    BidAward, EvaluationScope, KeyPerson, PersonnelChange, PunchIn, WarningFinding, WorkerIn,
)

from tests.server.admin.test_api import Api, now_ms

A, B, CITY, XQ = "620102", "620103", "620100", "620171"
DAY_MS = 86_400_000


def person(prefix: str, n: int) -> str:
    first17 = f"{prefix}1980010{n:04d}"
    return first17 + check_digit(first17)


W_A, W_B, W_B2, W_XQ = person(A, 1), person(B, 2), person(B, 3), person(XQ, 4)
P_A, P_B, P_XQ = "P-CG-001", "P-QLH-001", "P-XQ-001"
D_A, D_B, D_XQ = "D-CG-001", "D-QLH-001", "D-XQ-001"
NOTICE_B = "ZB-QLH-2026-01"
PHOTO = b"\xff\xd8\xff\xe0" + os.urandom(2000)
# What of county B must never reach county A's token.
B_MARKERS = (B, "七里河", P_B, D_B, W_B, W_B2, mask_id_number(W_B), NOTICE_B)

TOKENS = {
    # name: (scopes, department, region); None, None: an operator's token
    "operator": ("read,write,pii", None, None),
    "county-a": ("read,write,pii", "住建", A),
    "county-b": ("read,write", "住建", B),
    "city": ("read,write", "住建", CITY),
    "xinqu": ("read,write", "住建", XQ),
    "province": ("read,write,pii", "住建", "620000"),
    "labour": ("read,write,pii", "人社", "620000"),
}


@dataclass
class World:
    api: Api
    month: str
    today: date
    command_b: int = 0
    warnings: dict[str, int] = field(default_factory=dict)


async def _warning(store, project: str, worker: str, rule: str, month_first: date, at_ms: int,
                   figures: dict | None = None) -> int:
    last = month_first + timedelta(days=27)
    finding = WarningFinding(rule, project, worker, "project-manager", month_first, last,
                             figures or {"valid_days": 3, "construction_days": 20, "rate": 0.15})
    await store.apply_warnings(EvaluationScope(frozenset({rule}), month_first, last, frozenset({project})),
                               [finding], at_ms)
    found = await store.list_warnings(project_code=project, rule=rule)
    return found[0].id


@pytest.fixture
async def world(start_gateway):
    # no scheduled evaluation: the warnings here are made by hand and must stay as made
    gw = await start_gateway(signal_poll_s=0.1, supervision=False)
    store = gw.store
    made = {}
    for name, (scopes, department, region) in TOKENS.items():
        token, digest = tokens.new_token()
        await store.create_api_token(name, digest, tokens.parse_scopes(scopes), region_code=region,
                                     department=department, created_by="test")
        made[name] = token
    now = now_ms()
    today = china_date(now)
    first = today.replace(day=1)
    for code, serial, region, worker in ((P_A, D_A, A, W_A), (P_B, D_B, B, W_B), (P_XQ, D_XQ, XQ, W_XQ)):
        await store.add_project(code, name=f"项目{region}", region_code=region, start_date=first - timedelta(days=40))
        await store.add_device(serial, project_code=code, region_code=region)
        await store.import_workers(code, [WorkerIn(worker_id=worker, name="张三", post="project-manager",
                                                   entry_date=first - timedelta(days=30))], today=today)
        await store.import_bid_award(BidAward(f"ZB-{code}" if code != P_B else NOTICE_B, code, "甘肃某建工集团",
                                              "91620100MA7XXXXX0A", first - timedelta(days=35),
                                              (KeyPerson("project-manager", worker, "张三", "甘162000001"),)))
    sha = hashlib.sha256(PHOTO).digest()
    await store.store_punches([
        PunchIn(D_A, 1, W_A, now - 3_600_000, 1, 1, 365, None, 0),
        PunchIn(D_B, 1, W_B, now - 3_600_000, 1, 1, 365, sha, len(PHOTO)),
        PunchIn(D_XQ, 1, W_XQ, now - 3_600_000, 1, 1, 365, None, 0),
    ])
    await store.photo_append(D_B, sha, len(PHOTO), 0, PHOTO)
    await store.record_personnel_change(PersonnelChange(P_B, "project-manager", W_B, W_B2, "李四",
                                                        first - timedelta(days=1), "七建变〔2026〕1号"))
    world = World(Api(gw, None, made), today.strftime("%Y-%m"), today)  # type: ignore[arg-type]
    world.command_b = await store.enqueue_command(D_B, MessageType.REBOOT, b"{}", expires_at_ms=None,
                                                  created_by="test")
    # B's warning rose to the city; A's opened now, at the county
    world.warnings["b"] = await _warning(store, P_B, W_B, "low-presence", first, now - 8 * DAY_MS)
    await store.escalate_warnings(now, level2_after_ms=7 * DAY_MS, level3_after_ms=7 * DAY_MS)
    world.warnings["a"] = await _warning(store, P_A, W_A, "low-presence", first, now)
    world.warnings["a2"] = await _warning(store, P_A, W_A, "consecutive-absence", first, now)
    # A's person punches on B's project too: the figures name it, which county A must not read
    world.warnings["a3"] = await _warning(store, P_A, W_A, "double-post", first, now,
                                          {"days": [first.isoformat()], "other_projects": [P_B, P_XQ]})
    async with aiohttp.ClientSession() as session:
        world.api.session = session
        yield world


@dataclass(frozen=True)
class Case:
    """How a route is called with county B's things, and what each token must get:
    `read`: county A gets 404 or an answer without B; the province gets B.
    `change`: county A gets 404 and B is unchanged; the province succeeds.
    `create`: making a thing in B, county A gets 403; the province succeeds.
    `operators`: every supervisor's token gets 403; an operator's succeeds."""

    kind: str
    queries: tuple[dict, ...] = ({},)
    body: dict | None = None


def cases(world: World) -> dict[tuple[str, str], Case]:
    month = world.month
    return {
        ("GET", "/api/v1/devices"): Case("read", ({}, {"project": P_B}, {"region": B})),
        ("GET", "/api/v1/devices/{serial}"): Case("read"),
        ("POST", "/api/v1/devices"): Case("create", body={"serial": "D-QLH-NEW", "project": P_B, "region": B}),
        ("PATCH", "/api/v1/devices/{serial}"): Case("change", body={"enabled": True}),
        ("POST", "/api/v1/devices/{serial}/secret"): Case("change"),
        ("DELETE", "/api/v1/devices/{serial}/session"): Case("change"),
        ("GET", "/api/v1/projects"): Case("read", ({}, {"region": B}, {"region": CITY}, {"region": "620000"})),
        ("GET", "/api/v1/projects/{code}"): Case("read"),
        ("POST", "/api/v1/projects"): Case("create", body={"code": "P-QLH-NEW", "name": "七里河新项目", "region": B}),
        ("GET", "/api/v1/projects/{code}/workers"): Case("read", ({}, {"all": "true"})),
        ("POST", "/api/v1/devices/{serial}/commands"): Case("change", body={"type": "reboot", "arguments": {}}),
        ("GET", "/api/v1/commands/{id}"): Case("read"),
        ("GET", "/api/v1/commands"): Case("read", ({}, {"device": D_B})),
        ("DELETE", "/api/v1/commands/{id}"): Case("change"),
        ("GET", "/api/v1/punches"): Case("read", ({}, {"project": P_B}, {"device": D_B}, {"worker": W_B})),
        ("GET", "/api/v1/punches/{serial}/{record_no}/photo"): Case("read"),
        ("GET", "/api/v1/warnings"): Case("read", ({}, {"region": B}, {"region": CITY}, {"project": P_B},
                                                   {"worker": W_B}, {"level": "2"}, {"rule": "low-presence"})),
        ("GET", "/api/v1/warnings/{id}"): Case("read"),
        ("POST", "/api/v1/warnings/{id}/close"): Case("change", body={"disposition": "interview", "note": "约谈"}),
        ("GET", "/api/v1/projects/{code}/attendance"): Case("read", ({"month": month},)),
        ("POST", "/api/v1/bid-awards"): Case("change", body={
            "notice_no": NOTICE_B, "project": P_B, "enterprise": "甘肃某建工集团", "uscc": "91620100MA7XXXXX0A",
            "award_date": (world.today.replace(day=1) - timedelta(days=35)).isoformat(),
            "personnel": [{"post": "project-manager", "id_number": W_B, "name": "张三", "certificate_no": "甘162000001"}]}),
        ("GET", "/api/v1/projects/{code}/bid-awards"): Case("read"),
        ("POST", "/api/v1/personnel-changes"): Case("change", body={
            "project": P_B, "post": "project-manager", "old_id_number": W_B2, "new_id_number": W_B, "new_name": "张三",
            "approved_on": world.today.isoformat(), "approval_ref": "七建变〔2026〕2号"}),
        ("GET", "/api/v1/forwarding/status"): Case("operators"),
        ("GET", "/api/v1/forwarding/dead-letters"): Case("operators"),
        ("POST", "/api/v1/forwarding/requeues"): Case("operators", body={"all": True}),
        ("GET", "/api/v1/audit"): Case("operators"),
    }


def fill(path: str, world: World) -> str:
    ids = {"serial": D_B, "code": P_B, "record_no": "1",
           "id": str(world.command_b if path.startswith("/api/v1/commands") else world.warnings["b"])}
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path


def leaked(body) -> list[str]:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else orjson.dumps(body).decode()
    found = [marker for marker in B_MARKERS if marker in text]
    if isinstance(body, bytes) and PHOTO in body:
        found.append("the photo")
    return found


async def b_as_stored(store, world: World) -> tuple:
    device = await store.get_device(D_B)
    return (device.enabled, device.secret, (await store.get_command(world.command_b)).state,
            await store.get_warning(world.warnings["b"]), await store.warning_history(world.warnings["b"]),
            await store.get_bid_award(NOTICE_B), await store.list_personnel_changes(P_B),
            await store.get_device("D-QLH-NEW"), await store.get_project("P-QLH-NEW"),
            await store.list_commands(device_serial=D_B))


async def test_a_county_token_reads_and_changes_nothing_of_another_county_through_any_route(world):
    """Every route of the route table, with B's serials, codes, ids and filters: county A's
    token (all scopes) gets 404, 403 or answers holding nothing of B, and B is unchanged; the
    province's token gets B."""
    api, store = world.api, world.api.gw.store
    table = cases(world)
    routes = [r for r in all_routes() if r.scope is not None]  # /healthz, /readyz, /metrics hold no region's data
    missing = [f"{r.method} {r.path}" for r in routes if (r.method, r.path) not in table]
    assert not missing, f"routes without a region-scope case here: {missing}; add them to cases()"
    before = await b_as_stored(store, world)
    problems = []
    for route in routes:
        case = table[(route.method, route.path)]
        for query in case.queries:
            status, body = await api.call(route.method, fill(route.path, world), as_="county-a", params=query,
                                          json=case.body)
            what = f"{route.method} {route.path} {query}"
            if case.kind in ("create", "operators"):
                ok = status == 403
            elif case.kind == "change":
                ok = status == 404
            else:
                ok = status == 404 or (status == 200 and not leaked(body))
            if not ok:
                problems.append(f"{what}: {status} {leaked(body) or body!r:.200}")
    assert not problems, "county A reached county B:\n" + "\n".join(problems)
    assert await b_as_stored(store, world) == before

    for route in routes:
        case = table[(route.method, route.path)]
        for query in case.queries:
            status, body = await api.call(route.method, fill(route.path, world), as_="province", params=query,
                                          json=case.body)
            what = f"{route.method} {route.path} {query}"
            if case.kind == "operators":
                assert status == 403 and "operator" in body["message"], what
                status, body = await api.call(route.method, fill(route.path, world), as_="operator", json=case.body)
                assert status in (200, 201), (what, body)
            elif case.kind == "read":
                assert status == 200 and leaked(body), (what, status, body if isinstance(body, dict) else "")
            else:
                assert status in (200, 201), (what, status, body)


async def test_a_city_sees_its_counties_not_lanzhou_new_area_whose_code_starts_like_it(world):
    api = world.api
    body = (await api.call("GET", "/api/v1/projects", as_="city"))[1]
    assert [p["code"] for p in body["items"]] == [P_A, P_B]
    body = (await api.call("GET", "/api/v1/devices", as_="xinqu"))[1]
    assert [d["serial"] for d in body["items"]] == [D_XQ]
    assert (await api.call("GET", f"/api/v1/projects/{P_XQ}", as_="city"))[0] == 404
    assert (await api.call("GET", f"/api/v1/projects/{P_A}", as_="xinqu"))[0] == 404
    # a filter wider than the token narrows to the token; one beside it lists nothing
    body = (await api.call("GET", "/api/v1/projects", as_="county-b", params={"region": "620000"}))[1]
    assert [p["code"] for p in body["items"]] == [P_B]
    body = (await api.call("GET", "/api/v1/punches", as_="operator", params={"limit": "10"}))[1]
    assert len(body["items"]) == 3  # an operator's token is not region-limited
    body = (await api.call("GET", "/api/v1/projects", as_="county-b", params={"region": A}))[1]
    assert body["items"] == []


async def test_warnings_list_filter_and_show_the_owner_per_level_and_mask_id_numbers(world):
    api = world.api
    status, body = await api.call("GET", "/api/v1/warnings", as_="city", params={"level": "2"})
    assert status == 200 and [w["id"] for w in body["items"]] == [world.warnings["b"]]
    item = body["items"][0]
    assert item["worker_id"] == mask_id_number(W_B) and item["owner"] == {"level": 2, "region": CITY, "name": "兰州市"}
    status, body = await api.call("GET", f"/api/v1/warnings/{world.warnings['b']}", as_="province")
    assert body["worker_id"] == W_B  # pii
    assert [(b["level"], b["region"]) for b in body["bureaus"]] == [(1, B), (2, CITY), (3, "620000")]
    assert [e["event"] for e in body["history"]] == ["opened", "escalated"]
    body = (await api.call("GET", "/api/v1/warnings", as_="county-a",
                           params={"rule": "consecutive-absence", "state": "open"}))[1]
    assert [w["id"] for w in body["items"]] == [world.warnings["a2"]]
    body = (await api.call("GET", "/api/v1/warnings", as_="county-a", params={"limit": "1"}))[1]
    rest = (await api.call("GET", "/api/v1/warnings", as_="county-a", params={"after": body["next"]}))[1]
    assert [w["id"] for w in body["items"] + rest["items"]] == [world.warnings[k] for k in ("a", "a2", "a3")]
    later = (world.today + timedelta(days=60)).isoformat()
    assert (await api.call("GET", "/api/v1/warnings", as_="province", params={"period_from": later}))[1]["items"] == []
    # labour (人社) reads warnings too
    assert len((await api.call("GET", "/api/v1/warnings", as_="labour"))[1]["items"]) == 4
    # another region's project in a double post is counted, not named, for a token that cannot see it
    body = (await api.call("GET", f"/api/v1/warnings/{world.warnings['a3']}", as_="city"))[1]
    assert body["figures"]["other_projects"] == [P_B] and body["figures"]["other_projects_outside_your_region"] == 1
    assert body["history"][0]["detail"]["figures"]["other_projects"] == [P_B]
    body = (await api.call("GET", f"/api/v1/warnings/{world.warnings['a3']}", as_="province"))[1]
    assert body["figures"] == {"days": [world.today.replace(day=1).isoformat()], "other_projects": [P_B, P_XQ]}


async def test_who_may_close_follows_the_current_owner_and_labour_closes_none(world):
    api, store = world.api, world.api.gw.store
    a, b = world.warnings["a"], world.warnings["b"]
    close = {"disposition": "rectification", "note": "责令整改"}
    status, body = await api.call("POST", f"/api/v1/warnings/{b}/close", as_="labour", json=close)
    assert status == 403 and "人社" in body["message"]
    status, body = await api.call("POST", f"/api/v1/warnings/{b}/close", as_="county-b", json=close)
    assert status == 403 and "level 2" in body["message"] and "兰州市" in body["message"]  # it rose to the city
    status, body = await api.call("POST", f"/api/v1/warnings/{b}/close", as_="operator", json=close)
    assert status == 403 and "supervisor" in body["message"]
    status, body = await api.call("POST", f"/api/v1/warnings/{b}/close", as_="city", json=close)
    assert status == 200 and body["state"] == "closed" and body["disposition"] == "rectification"
    assert body["closed_by"] == "token:city" and body["history"][-1]["event"] == "closed"
    status, body = await api.call("POST", f"/api/v1/warnings/{a}/close", as_="county-a", json=close)
    assert status == 200  # level 1: its county closes it
    audit = await store.list_audit(event="warning_closed", limit=5)
    assert [(e.subject, e.detail["by"]) for e in audit] == [(str(a), "token:county-a"), (str(b), "token:city")]


async def test_a_false_alarm_needs_a_reason_a_closure_is_final_and_history_only_grows(world):
    api, store = world.api, world.api.gw.store
    a = world.warnings["a"]
    before = await store.warning_history(a)
    status, body = await api.call("POST", f"/api/v1/warnings/{a}/close", as_="county-a",
                                  json={"disposition": "false-alarm", "note": "  "})
    assert status == 400 and "note" in body["message"]
    assert await store.warning_history(a) == before
    status, body = await api.call("POST", f"/api/v1/warnings/{a}/close", as_="county-a",
                                  json={"disposition": "false-alarm", "note": "考勤机断网, 补传后已正常"})
    assert status == 200 and body["note"].startswith("考勤机")
    after = await store.warning_history(a)
    assert after[:len(before)] == before and len(after) == len(before) + 1
    status, body = await api.call("POST", f"/api/v1/warnings/{a}/close", as_="province",
                                  json={"disposition": "interview", "note": ""})
    assert status == 409 and "final" in body["message"]
    assert await store.warning_history(a) == after


async def test_the_attendance_calendar_counts_valid_days_per_committed_person(world):
    api, store = world.api, world.api.gw.store
    now = now_ms()
    # with the fixture's punch an hour ago, two punches 5 h apart: a valid day (4 h) if both are today
    start = now - 6 * 3_600_000
    await store.store_punches([PunchIn(D_A, 2, W_A, start, 1, 1, 365, None, 0)])
    status, body = await api.call("GET", f"/api/v1/projects/{P_A}/attendance", as_="labour",
                                  params={"month": world.month})
    assert status == 200, body
    assert body["through"] == world.today.isoformat() and body["construction_days"] == world.today.day
    [who] = body["people"]
    assert who["post"] == "project-manager" and who["post_name"] == "项目经理" and who["id_number"] == W_A
    assert who["construction_days"] == world.today.day and len(who["days"]) == world.today.day
    today = who["days"][-1]
    same_day = china_date(start) == world.today
    assert today["punches"] == (2 if same_day else 1) and today["valid"] is same_day
    assert who["valid_days"] == int(same_day) and who["required_share"] == 0.8
    masked = (await api.call("GET", f"/api/v1/projects/{P_B}/attendance", as_="city",
                             params={"month": world.month}))[1]
    # the change approved the day before the month: the new person holds the post all month
    assert [p["id_number"] for p in masked["people"]] == [mask_id_number(W_B2)]
    assert (await api.call("GET", f"/api/v1/projects/{P_A}/attendance", as_="city",
                           params={"month": "2026-13"}))[0] == 400


async def test_bid_awards_import_idempotently_and_labour_records_none(world):
    api, store = world.api, world.api.gw.store
    award = {"notice_no": "ZB-CG-2026-07", "project": P_A, "enterprise": "甘肃某监理公司", "uscc": "91620100MA7XXXXX0A",
             "award_date": "2026-01-05", "personnel": [
                 {"post": "chief-supervisor", "id_number": W_A, "name": "张三"},
                 {"post": "specialist-supervisor", "id_number": person(A, 9), "name": "王五"}]}
    status, body = await api.call("POST", "/api/v1/bid-awards", as_="county-a", json=award)
    assert status == 200 and body["outcome"] == "added" and len(body["personnel"]) == 2, body
    assert (await api.call("POST", "/api/v1/bid-awards", as_="county-a", json=award))[1]["outcome"] == "unchanged"
    status, body = await api.call("POST", "/api/v1/bid-awards", as_="labour", json=award)
    assert status == 403 and "住建" in body["message"]
    bad = {**award, "personnel": [{"post": "chief-supervisor", "id_number": "620102198001010000", "name": "张三"}]}
    status, body = await api.call("POST", "/api/v1/bid-awards", as_="county-a", json=bad)
    assert status == 400 and "resident ID" in body["message"]
    status, body = await api.call("POST", "/api/v1/bid-awards", as_="county-a", json={**award, "project": P_XQ})
    assert status == 404
    status, body = await api.call("POST", "/api/v1/bid-awards", as_="province", json={**award, "project": P_B})
    assert status == 409  # a notice names one award of one project
    body = (await api.call("GET", f"/api/v1/projects/{P_A}/bid-awards", as_="city"))[1]
    assert sorted(a["notice_no"] for a in body["awards"]) == ["ZB-CG-2026-07", f"ZB-{P_A}"]
    assert all("*" in p["id_number"] for a in body["awards"] for p in a["personnel"])
    audit = await store.list_audit(event="bid_award_imported", limit=5)
    assert [e.detail["outcome"] for e in audit] == ["unchanged", "added"]


async def test_a_personnel_change_is_recorded_once_and_shown_masked(world):
    api = world.api
    change = {"project": P_A, "post": "project-manager", "old_id_number": W_A, "new_id_number": person(A, 7),
              "new_name": "赵六", "approved_on": world.today.isoformat(), "approval_ref": "城建变〔2026〕3号"}
    status, body = await api.call("POST", "/api/v1/personnel-changes", as_="county-a", json=change)
    assert status == 200 and body["outcome"] == "added" and body["new_id_number"] == person(A, 7)
    assert (await api.call("POST", "/api/v1/personnel-changes", as_="county-a", json=change))[1]["outcome"] == "unchanged"
    assert (await api.call("POST", "/api/v1/personnel-changes", as_="labour", json=change))[0] == 403
    body = (await api.call("GET", f"/api/v1/projects/{P_A}/bid-awards", as_="city"))[1]
    assert [c["new_id_number"] for c in body["changes"]] == [mask_id_number(person(A, 7))]
