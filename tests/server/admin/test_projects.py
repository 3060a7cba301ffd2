"""`/api/v1/projects` and `/api/v1/commands`: projects, masked rosters, commands queued to a
live terminal and followed to their outcome, cancellation, scopes and audit."""

from __future__ import annotations

import os
from datetime import date, timedelta

from lmg.protocol import ResultCode
from lmg.protocol.roster_file import china_date
from lmg.simulators.terminal import worker_id_for
from lmg.storage import WorkerIn

from tests.server.admin.test_api import api, now_ms  # noqa: F401  (the fixture)
from tests.server.conftest import wait_for

PROJECT = {"code": "620102-2026-009", "name": "兰州某安置房", "region": "620102", "enterprise": "甘肃某建工集团",
           "uscc": "91620100MA7XXXXX0A", "start_date": "2026-03-01"}


async def test_a_project_is_added_listed_by_region_and_read_and_a_second_add_is_409(api):
    status, body = await api.call("POST", "/api/v1/projects", as_="writer", json=PROJECT)
    assert status == 201, body
    assert body["code"] == PROJECT["code"] and body["roster_version"] == 0 and body["start_date"] == "2026-03-01"
    assert (await api.call("POST", "/api/v1/projects", as_="writer", json=PROJECT))[0] == 409
    status, body = await api.call("POST", "/api/v1/projects", as_="writer", json={**PROJECT, "code": "X", "region": "62"})
    assert status == 400 and "region" in body["message"]
    assert (await api.call("POST", "/api/v1/projects", as_="reader", json={**PROJECT, "code": "Y"}))[0] == 403
    # the region filter is the region tree (a city and its counties), not a code prefix
    status, body = await api.call("GET", "/api/v1/projects", as_="reader", params={"region": "620100"})
    assert [p["code"] for p in body["items"]] == [PROJECT["code"]]
    status, body = await api.call("GET", "/api/v1/projects", as_="reader", params={"region": "620200"})
    assert body["items"] == []
    assert (await api.call("GET", "/api/v1/projects", as_="reader", params={"region": "6201"}))[0] == 400
    assert (await api.call("GET", f"/api/v1/projects/{PROJECT['code']}", as_="reader"))[1]["name"] == PROJECT["name"]
    status, body = await api.call("GET", "/api/v1/projects/NOPE", as_="reader")
    assert status == 404 and "/api/v1/projects" in body["message"]
    added = await api.gw.store.list_audit(event="project_added", limit=5)
    assert [(e.subject, e.detail["by"]) for e in added] == [(PROJECT["code"], "token:writer")]


async def test_the_roster_masks_id_numbers_without_pii_pages_with_a_sealed_cursor_and_lists_leavers(api):
    store = api.gw.store
    await store.add_project(PROJECT["code"], name="P", region_code="620102")
    today = china_date(now_ms())
    face = await store.put_face(b"\xff\xd8\xff\xe0" + os.urandom(3000))
    ids = sorted(worker_id_for(n) for n in range(40, 45))
    rows = [WorkerIn(worker_id=w, name=f"工人{i}", entry_date=today - timedelta(days=3), team="钢筋班",
                     post="project-manager" if i == 0 else "worker", face_sha256=face if i == 1 else None)
            for i, w in enumerate(ids)]
    await store.import_workers(PROJECT["code"], rows, today=today)
    await store.remove_worker(PROJECT["code"], ids[4], exit_date=today, today=today)

    status, body = await api.call("GET", f"/api/v1/projects/{PROJECT['code']}/workers", as_="reader",
                                  params={"limit": "2"})
    assert status == 200 and len(body["items"]) == 2
    assert all(w["id_number"] != ids[i] and w["id_number"].endswith(ids[i][-4:]) for i, w in enumerate(body["items"]))
    assert ids[1] not in body["next"] and ids[1][-4:] not in body["next"]  # the cursor is sealed, not the number
    seen = body["items"]
    while body["next"]:
        body = (await api.call("GET", f"/api/v1/projects/{PROJECT['code']}/workers", as_="reader",
                               params={"limit": "2", "after": body["next"]}))[1]
        seen += body["items"]
    assert [w["name"] for w in seen] == ["工人0", "工人1", "工人2", "工人3"]  # the leaver is off the roster
    assert seen[0]["post"] == "project-manager" and seen[1]["face_sha256"] == face.hex()

    body = (await api.call("GET", f"/api/v1/projects/{PROJECT['code']}/workers", as_="viewer",
                           params={"all": "true"}))[1]
    assert [w["id_number"] for w in body["items"]] == ids  # pii: in full
    assert body["items"][4]["on_roster"] is False and body["items"][4]["exit_date"] == today.isoformat()
    status, body = await api.call("GET", f"/api/v1/projects/{PROJECT['code']}/workers", as_="reader",
                                  params={"after": "not-a-cursor"})
    assert status == 400
    assert (await api.call("GET", "/api/v1/projects/NOPE/workers", as_="reader"))[0] == 404


async def test_a_command_reaches_the_live_terminal_and_its_status_follows_it_to_acked(api):
    terminal = await api.gw.terminal()
    serial = api.gw.device.serial
    status, body = await api.call("POST", f"/api/v1/devices/{serial}/commands", as_="writer",
                                  json={"type": "config-get", "arguments": {"keys": ["volume"]}})
    assert status == 201 and body["status"] in ("queued", "sent") and body["type"] == "config-get", body
    command_id = body["id"]

    async def acked():
        got = (await api.call("GET", f"/api/v1/commands/{command_id}", as_="reader"))[1]
        return got if got["status"] == "acked" else None

    got = await wait_for(acked, what="config-get acked")
    assert got["result"] == "OK" and got["attempts"] == 1 and got["created_by"] == "token:writer"
    assert got["reply"] == {"volume": terminal.device.config["volume"]}
    listed = (await api.call("GET", "/api/v1/commands", as_="reader", params={"device": serial, "status": "acked"}))[1]
    assert [c["id"] for c in listed["items"]] == [command_id]
    assert (await api.call("GET", "/api/v1/commands", as_="reader", params={"status": "queued"}))[1]["items"] == []
    status, body = await api.call("DELETE", f"/api/v1/commands/{command_id}", as_="writer")
    assert status == 409 and "acked" in body["message"]  # answered already
    queued = await api.gw.store.list_audit(event="command_queued", limit=5)
    assert [(e.subject, e.detail["type"], e.detail["by"]) for e in queued] == [(serial, "config-get", "token:writer")]


async def test_a_command_for_an_offline_device_waits_can_be_cancelled_and_bad_ones_are_400_or_404(api):
    store = api.gw.store
    await store.add_device("GS-CMD-02", project_code="P-CMD", region_code="620102")
    status, body = await api.call("POST", "/api/v1/devices/GS-CMD-02/commands", as_="writer",
                                  json={"type": "door-open", "arguments": {"duration_s": 5}, "expires_s": 600})
    assert status == 201 and body["status"] == "queued", body
    assert now_ms() + 590_000 < body["expires_at_ms"] <= now_ms() + 600_000
    status, body = await api.call("DELETE", f"/api/v1/commands/{body['id']}", as_="writer")
    assert status == 200 and body["status"] == "cancelled"
    assert [e.subject for e in await store.list_audit(event="command_cancelled", limit=5)] == [str(body["id"])]

    status, body = await api.call("POST", "/api/v1/devices/GS-CMD-02/commands", as_="writer", json={"type": "explode"})
    assert status == 400 and "set-time" in body["message"]
    status, body = await api.call("POST", "/api/v1/devices/GS-CMD-02/commands", as_="writer",
                                  json={"type": "reboot", "arguments": {"delay_s": "soon"}})
    assert status == 400 and "delay_s" in body["message"]
    assert (await api.call("POST", "/api/v1/devices/NOPE/commands", as_="writer", json={"type": "reboot"}))[0] == 404
    assert (await api.call("POST", "/api/v1/devices/GS-CMD-02/commands", as_="reader", json={"type": "reboot"}))[0] == 403
    assert (await api.call("GET", "/api/v1/commands/999999", as_="reader"))[0] == 404
    assert (await api.call("DELETE", "/api/v1/commands/999999", as_="writer"))[0] == 404
