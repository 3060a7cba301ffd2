"""The admin API: tokens and scopes, every resource, revocation at once, bounded and JSON errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import aiohttp
import pytest

from lmg.protocol import Goodbye, PhotoChunk, PhotoStatus, Punch, ResultCode
from lmg.server.admin import tokens
from lmg.server.admin.app import AdminRefused, start_admin
from lmg.simulators.terminal import make_punch, worker_id_for

from tests.server.conftest import WAIT_S, wait_for

SCOPED = {"reader": "read", "writer": "write", "viewer": "read,pii", "root": "read,write,pii"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Api:
    """An HTTP client of one gateway's admin listener, with a token per scope set."""

    def __init__(self, gw, session: aiohttp.ClientSession, tokens_by_name: dict[str, str]):
        self.gw, self.session, self.tokens = gw, session, tokens_by_name
        self.base = f"http://127.0.0.1:{gw.admin_port}"

    async def call(self, method: str, path: str, *, as_: str | None = None, json=None, data=None,
                   headers: dict | None = None, params: dict | None = None):
        headers = dict(headers or {})
        if as_ is not None:
            headers["Authorization"] = f"Bearer {self.tokens[as_]}"
        async with self.session.request(method, self.base + path, json=json, data=data, headers=headers,
                                        params=params, timeout=aiohttp.ClientTimeout(total=WAIT_S)) as response:
            body = await response.read()
            kind = response.headers.get("Content-Type", "")
            return response.status, (await response.json() if kind.startswith("application/json") else body)


@pytest.fixture
async def api(start_gateway):
    gw = await start_gateway(signal_poll_s=0.1)
    made = {}
    for name, scope in SCOPED.items():
        token, digest = tokens.new_token()
        await gw.store.create_api_token(name, digest, tokens.parse_scopes(scope), created_by="test")
        made[name] = token
    revoked, digest = tokens.new_token()
    await gw.store.create_api_token("gone", digest, frozenset({"read"}))
    await gw.store.revoke_api_token("gone")
    made["gone"] = revoked
    async with aiohttp.ClientSession() as session:
        yield Api(gw, session, made)


async def test_no_token_a_bad_one_or_a_revoked_one_is_401_and_audited(api):
    assert (await api.call("GET", "/api/v1/devices"))[0] == 401
    status, body = await api.call("GET", "/api/v1/devices", headers={"Authorization": "Bearer nonsense"})
    assert status == 401 and body["error"] == "unauthorized" and "lmg_" in body["message"]
    unknown, _ = tokens.new_token()
    assert (await api.call("GET", "/api/v1/devices", headers={"Authorization": f"Bearer {unknown}"}))[0] == 401
    assert (await api.call("GET", "/api/v1/devices", as_="gone"))[0] == 401
    entries = await api.gw.store.list_audit(event="api_auth_failed", limit=10)
    assert sorted(e.detail["reason"] for e in entries) == ["malformed token", "no bearer token", "revoked token",
                                                           "unknown token"]
    assert [e.subject for e in entries if e.detail["reason"] == "revoked token"] == ["gone"]
    assert not any(unknown in str(e) or api.tokens["gone"] in str(e) for e in entries)  # never the token itself


async def test_a_token_without_the_scope_is_403_and_audited_with_its_name(api):
    status, body = await api.call("POST", "/api/v1/devices", as_="reader",
                                  json={"serial": "GS-NEW-1", "project": "P1", "region": "620100"})
    assert status == 403 and "write" in body["message"]
    assert (await api.call("GET", "/api/v1/devices", as_="writer"))[0] == 403  # write does not imply read
    entries = await api.gw.store.list_audit(event="api_forbidden", limit=10)
    assert [(e.subject, e.detail["reason"]) for e in entries] == [("writer", "needs scope read"),
                                                                  ("reader", "needs scope write")]


async def test_health_readiness_and_the_document_need_no_token(api):
    assert await api.call("GET", "/healthz") == (200, {"status": "alive"})
    assert (await api.call("GET", "/readyz"))[0] == 200
    status, doc = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/api/v1/devices", "/api/v1/punches", "/api/v1/audit", "/api/v1/forwarding/status"} <= set(doc["paths"])
    assert doc["paths"]["/api/v1/devices"]["post"]["x-lmg-scope"] == "write"


async def test_provision_list_filter_and_page_devices(api):
    status, made = await api.call("POST", "/api/v1/devices", as_="writer",
                                  json={"serial": "GS-NEW-1", "project": "P-OTHER", "region": "620200"})
    assert status == 201 and len(bytes.fromhex(made["secret"])) == 32
    assert (await api.call("POST", "/api/v1/devices", as_="writer",
                           json={"serial": "GS-NEW-1", "project": "P", "region": "620200"}))[0] == 409
    for n in range(2, 5):
        await api.call("POST", "/api/v1/devices", as_="writer",
                       json={"serial": f"GS-NEW-{n}", "project": "P-OTHER", "region": "620200"})
    status, page = await api.call("GET", "/api/v1/devices", as_="reader", params={"project": "P-OTHER", "limit": 3})
    assert status == 200 and [d["serial"] for d in page["items"]] == ["GS-NEW-1", "GS-NEW-2", "GS-NEW-3"]
    assert "secret" not in page["items"][0]
    status, rest = await api.call("GET", "/api/v1/devices", as_="reader",
                                  params={"project": "P-OTHER", "limit": 3, "after": page["next"]})
    assert [d["serial"] for d in rest["items"]] == ["GS-NEW-4"] and rest["next"] is None
    await api.gw.raw_authenticated()
    await api.gw.gateway.flush_presence()
    status, online = await api.call("GET", "/api/v1/devices", as_="reader", params={"online": "true"})
    assert [d["serial"] for d in online["items"]] == [api.gw.device.serial]
    assert online["items"][0]["address"] == "127.0.0.1" and online["items"][0]["session_open_here"] is True
    status, one = await api.call("GET", f"/api/v1/devices/{api.gw.device.serial}", as_="reader")
    assert status == 200 and one["firmware"] == "test-1.0"
    assert (await api.call("GET", "/api/v1/devices/NOPE", as_="reader"))[0] == 404
    added = await api.gw.store.list_audit(event="device_added", limit=10)
    assert {e.detail["by"] for e in added} == {"token:writer"}


async def test_disabling_through_the_api_ends_the_open_session_at_once(api):
    client = await api.gw.raw_authenticated()
    status, device = await api.call("PATCH", f"/api/v1/devices/{api.gw.device.serial}", as_="writer",
                                    json={"enabled": False})
    assert status == 200 and device["enabled"] is False
    received = await client.closed_after()
    assert [(type(m), m.reason) for m in received] == [(Goodbye, ResultCode.DEVICE_DISABLED)]
    refused = await (await api.gw.raw()).authenticate(api.gw.device)
    assert refused.result == ResultCode.DEVICE_DISABLED
    assert (await api.gw.store.list_audit(event="device_disabled", limit=1))[0].detail["by"] == "token:writer"
    await api.call("PATCH", f"/api/v1/devices/{api.gw.device.serial}", as_="writer", json={"enabled": True})
    await api.gw.raw_authenticated()


async def test_rotating_the_secret_ends_the_session_and_the_new_secret_works(api):
    from lmg.simulators.terminal import DeviceCredentials

    client = await api.gw.raw_authenticated()
    status, body = await api.call("POST", f"/api/v1/devices/{api.gw.device.serial}/secret", as_="writer")
    assert status == 201
    received = await client.closed_after()
    assert [(type(m), m.reason) for m in received] == [(Goodbye, ResultCode.CREDENTIALS_CHANGED)]
    assert (await (await api.gw.raw()).authenticate(api.gw.device)).result == ResultCode.BAD_SIGNATURE
    fresh = DeviceCredentials(api.gw.device.serial, bytes.fromhex(body["secret"]), api.gw.device.project)
    await api.gw.raw_authenticated(fresh)


async def test_closing_a_session_says_so_and_the_device_may_come_straight_back(api):
    client = await api.gw.raw_authenticated()
    status, body = await api.call("DELETE", f"/api/v1/devices/{api.gw.device.serial}/session", as_="writer")
    assert status == 200 and body == {"serial": api.gw.device.serial, "closed_here": True}
    received = await client.closed_after()
    assert [(type(m), m.reason) for m in received] == [(Goodbye, ResultCode.CLOSED_BY_OPERATOR)]
    back = await api.gw.raw_authenticated()
    # the store's record of that end, read again by the poll, must not end the new session
    await api.gw.gateway.signals.poll()
    assert api.gw.gateway.sessions.get(api.gw.device.serial) is not None
    await back.close()


async def test_punches_are_masked_without_pii_and_filtered(api):
    client = await api.gw.raw_authenticated()
    t0 = now_ms() - 60_000
    for n in range(1, 6):
        client.send(Punch.of(make_punch(n, n, t0 + n * 1000)))
        await client.receive()
    full = worker_id_for(3)
    status, page = await api.call("GET", "/api/v1/punches", as_="reader", params={"limit": 2})
    assert status == 200 and len(page["items"]) == 2 and page["next"]
    first = worker_id_for(1)
    assert page["items"][0]["worker_id"] == first[:6] + "********" + first[-4:]
    status, rest = await api.call("GET", "/api/v1/punches", as_="reader", params={"after": page["next"]})
    assert [p["record_no"] for p in rest["items"]] == [3, 4, 5] and rest["next"] is None
    status, one = await api.call("GET", "/api/v1/punches", as_="viewer", params={"worker": full})
    assert [p["worker_id"] for p in one["items"]] == [full]  # in full with pii
    status, window = await api.call("GET", "/api/v1/punches", as_="reader",
                                    params={"since": t0 + 2000, "until": t0 + 4000,
                                            "device": api.gw.device.serial})
    assert [p["record_no"] for p in window["items"]] == [2, 3]
    assert (await api.call("GET", "/api/v1/punches", as_="reader", params={"since": 5, "until": 5}))[0] == 400
    assert (await api.call("GET", "/api/v1/punches", as_="reader", params={"worker": "12345"}))[0] == 400


async def test_a_punch_photo_needs_pii(api):
    client = await api.gw.raw_authenticated()
    photo = b"\xff\xd8\xff" + os.urandom(5000)
    client.send(Punch.of(make_punch(9, 9, now_ms(), photo=photo)))
    await client.receive()
    client.send(PhotoChunk(9, hashlib.sha256(photo).digest(), len(photo), 0, photo))
    await client.expect(PhotoStatus)
    path = f"/api/v1/punches/{api.gw.device.serial}/9/photo"
    assert (await api.call("GET", path, as_="reader"))[0] == 403
    status, body = await api.call("GET", path, as_="viewer")
    assert status == 200 and body == photo
    assert (await api.call("GET", f"/api/v1/punches/{api.gw.device.serial}/10/photo", as_="viewer"))[0] == 404


async def test_forwarding_and_audit_routes(api):
    status, body = await api.call("GET", "/api/v1/forwarding/status", as_="reader")
    assert status == 200 and set(body) == {"pending", "oldest_age_s", "dead_letters"}
    status, body = await api.call("GET", "/api/v1/forwarding/dead-letters", as_="reader")
    assert status == 200 and body == {"items": [], "next": None}
    status, body = await api.call("POST", "/api/v1/forwarding/requeues", as_="writer", json={"all": True})
    assert status == 201 and body == {"requeued": 0}
    assert (await api.call("POST", "/api/v1/forwarding/requeues", as_="writer",
                           json={"all": True, "ids": [1]}))[0] == 400
    assert (await api.call("POST", "/api/v1/forwarding/requeues", as_="writer", json={}))[0] == 400
    status, body = await api.call("GET", "/api/v1/audit", as_="reader", params={"event": "dead_letters_retried"})
    assert [e["detail"]["by"] for e in body["items"]] == ["token:writer"]


async def test_bad_requests_are_json_and_say_what_to_do(api):
    status, body = await api.call("GET", "/api/v1/devices", as_="reader", params={"colour": "red"})
    assert status == 400 and "colour" in body["message"]
    status, body = await api.call("GET", "/api/v1/devices", as_="reader", params={"limit": "5000"})
    assert status == 400 and "limit" in body["message"]
    status, body = await api.call("POST", "/api/v1/devices", as_="writer", data=b"{not json",
                                  headers={"Content-Type": "application/json"})
    assert status == 400 and "JSON" in body["message"]
    status, body = await api.call("POST", "/api/v1/devices", as_="writer", data=b"serial=x",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    status, body = await api.call("POST", "/api/v1/devices", as_="writer", data=b"x" * (1024 * 1024 + 1),
                                  headers={"Content-Type": "application/json"})
    assert status == 413 and "api_max_body_bytes" in body["message"]
    status, body = await api.call("GET", "/api/v2/nothing")
    assert status == 404 and "openapi.json" in body["message"]
    status, body = await api.call("PUT", "/api/v1/devices", as_="writer")
    assert status == 405 and body["error"] == "method_not_allowed"
    status, body = await api.call("GET", "/api/v1/devices", as_="reader",
                                  headers={"X-Long": "x" * 9000})
    assert status == 400  # a header field over 8 KiB


async def test_no_token_means_no_listening_beyond_loopback(start_gateway):
    gw = await start_gateway(admin="")
    with pytest.raises(AdminRefused, match="no API token exists"):
        await start_admin(gw.gateway, "0.0.0.0", 0)
    _, digest = tokens.new_token()
    await gw.store.create_api_token("ops", digest, frozenset({"read"}))
    server = await start_admin(gw.gateway, "0.0.0.0", 0)
    server.close()
    await server.wait_closed()
