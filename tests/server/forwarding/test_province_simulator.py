"""The province simulator implements docs/province-api.md: refusals, dedup, validation, faults."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import aiohttp
import orjson
import pytest

from lmg.protocol import province as api
from lmg.simulators.province import Access, report
from lmg.simulators.terminal import worker_id_for

from tests.server.forwarding.conftest import APP_KEY, APP_SECRET, PROJECT


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def record(serial: str, n: int, *, worker_id: str | None = None, punch_time: int | None = None, **changes) -> dict:
    rid = api.record_id(serial, n)
    cipher = api.WorkerIdCipher.for_app(APP_SECRET, APP_KEY)
    row = {"record_id": rid, "device_serial": serial, "record_no": n, "project_code": PROJECT,
           "worker_id_enc": cipher.encrypt(worker_id or worker_id_for(n), rid, os.urandom(12)),
           "punch_time": punch_time or now_ms() - 60_000, "direction": 1, "verify_mode": 1, "temperature_dc": 365,
           "photo_sha256": None, "photo_size": 0, "received_at": now_ms()}
    row.update(changes)
    return row


async def send(url: str, path: str, body: bytes, *, method: str = "POST", secret: str = APP_SECRET,
               key: str = APP_KEY, timestamp: int | None = None, nonce: str | None = None, timeout: float = 5.0):
    headers = api.signed_headers(key, secret, method, path, body, timestamp_ms=timestamp or now_ms(),
                                 nonce=nonce or os.urandom(16).hex())
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.request(method, url + path, data=body, headers=headers) as response:
            return response.status, orjson.loads(await response.read()), response.headers


def batch(*records) -> bytes:
    return orjson.dumps({"batch_id": "t-1", "records": list(records)})


async def test_stores_once_answers_duplicate_after_and_reports_counts(province):
    sim = await province()
    body = batch(record("GS-1", 1), record("GS-1", 2), record("GS-1", 1))
    status, answer, _ = await send(sim.url, api.PATH_ATTENDANCE, body)
    assert status == 200 and answer["code"] == 0 and answer["batch_id"] == "t-1"
    assert [r["result"] for r in answer["results"]] == ["stored", "stored", "duplicate"]
    status, answer, _ = await send(sim.url, api.PATH_ATTENDANCE, batch(record("GS-1", 2)))
    assert answer["results"][0] == {"record_id": "GS-1:2", "result": "duplicate", "code": 1,
                                    "reason": "record id already held"}
    summary = report(sim.data_dir)
    assert {k: summary[k] for k in ("received", "unique", "duplicates", "rejected")} == \
        {"received": 4, "unique": 2, "duplicates": 2, "rejected": 0}


@pytest.mark.parametrize("change, code", [
    ({"worker_id": "620102198503000010"}, 2002),  # wrong check digit
    ({"direction": 3}, 2001),
    ({"record_id": "GS-1:99"}, 2001),  # not serial:record_no
    ({"punch_time": 1_000}, 2004),
    ({"photo_size": 10}, 2001),  # a size without a hash
    ({"worker_id_enc": "AAAA"}, 2003),
])
async def test_invalid_records_are_answered_per_record_with_a_code_and_reason(province, change, code):
    sim = await province()
    worker_id = change.pop("worker_id", None)
    status, answer, _ = await send(sim.url, api.PATH_ATTENDANCE,
                                   batch(record("GS-1", 5, worker_id=worker_id, **change), record("GS-1", 6)))
    assert status == 200
    bad, good = answer["results"]
    assert bad["result"] == "invalid" and bad["code"] == code and bad["reason"]
    assert good["result"] == "stored"  # one bad record does not spoil its batch
    assert report(sim.data_dir)["rejected_by_code"] == {str(code): 1}


async def test_a_ciphertext_moved_to_another_record_is_undecryptable(province):
    sim = await province()
    moved = record("GS-1", 8, worker_id_enc=record("GS-1", 7)["worker_id_enc"])
    _, answer, _ = await send(sim.url, api.PATH_ATTENDANCE, batch(moved))
    assert answer["results"][0]["code"] == 2003


@pytest.mark.parametrize("kind, status, code", [
    ("bad_signature", 401, 1001),
    ("stale", 401, 1002),
    ("unknown_key", 401, 1004),
])
async def test_requests_failing_authentication_are_refused_and_change_nothing(province, kind, status, code):
    sim = await province()
    body = batch(record("GS-1", 1))
    kw = {"bad_signature": {"secret": "not the secret"}, "stale": {"timestamp": now_ms() - 301_000},
          "unknown_key": {"key": "someone-else"}}[kind]
    got, answer, _ = await send(sim.url, api.PATH_ATTENDANCE, body, **kw)
    assert (got, answer["code"]) == (status, code) and answer["message"]
    assert report(sim.data_dir)["unique"] == 0


async def test_a_replayed_nonce_is_refused(province):
    sim = await province()
    nonce = os.urandom(16).hex()
    first, _, _ = await send(sim.url, api.PATH_ATTENDANCE, batch(record("GS-1", 1)), nonce=nonce)
    again, answer, _ = await send(sim.url, api.PATH_ATTENDANCE, batch(record("GS-1", 2)), nonce=nonce)
    assert first == 200 and (again, answer["code"]) == (401, 1003)
    assert report(sim.data_dir)["unique"] == 1


async def test_address_allowlist_and_permissions(province):
    import ipaddress

    outside = await province(access=Access(APP_KEY, APP_SECRET, (ipaddress.ip_network("10.0.0.0/8"),)))
    status, answer, _ = await send(outside.url, api.PATH_ATTENDANCE, batch(record("GS-1", 1)))
    assert (status, answer["code"]) == (403, 1102)
    no_photos = await province(access=Access(APP_KEY, APP_SECRET, (), frozenset({"attendance"})))
    status, answer, _ = await send(no_photos.url, api.PATH_DEVICE_STATUS, b'{"devices":[]}')
    assert (status, answer["code"]) == (403, 1101)


async def test_batch_limits_are_enforced(province):
    sim = await province()
    status, answer, _ = await send(sim.url, api.PATH_ATTENDANCE,
                                   batch(*(record("GS-1", n) for n in range(api.MAX_BATCH_RECORDS + 1))))
    assert (status, answer["code"]) == (413, 1302)
    status, answer, _ = await send(sim.url, api.PATH_ATTENDANCE, b'{"batch_id": "x"}')
    assert (status, answer["code"]) == (400, 1301)


async def test_photos_are_checked_against_their_hash_and_kept_once(province):
    sim = await province()
    photo = os.urandom(5000)
    sha = hashlib.sha256(photo).hexdigest()
    status, answer, _ = await send(sim.url, api.photo_target(sha), photo, method="PUT")
    assert status == 200 and answer["stored"] is True
    status, answer, _ = await send(sim.url, api.photo_target(sha), photo, method="PUT")
    assert status == 200 and answer["stored"] is False
    status, answer, _ = await send(sim.url, api.photo_target(sha), photo + b"x", method="PUT")
    assert (status, answer["code"]) == (400, 1303)
    assert report(sim.data_dir)["photos"] == 1


async def test_device_status_snapshot_is_kept(province):
    sim = await province()
    body = orjson.dumps({"devices": [{"device_serial": f"GS-{i}", "project_code": PROJECT, "online": i % 2 == 0}
                                     for i in range(3)]})
    status, answer, _ = await send(sim.url, api.PATH_DEVICE_STATUS, body)
    assert status == 200 and answer["accepted"] == 3 and report(sim.data_dir)["devices"] == 3


async def test_injected_500_and_429_with_retry_after(province):
    errors = await province(error_rate=1.0)
    status, answer, _ = await send(errors.url, api.PATH_ATTENDANCE, batch(record("GS-1", 1)))
    assert (status, answer["code"]) == (500, 5000)
    limited = await province(rate_limit_rate=1.0)
    status, answer, headers = await send(limited.url, api.PATH_ATTENDANCE, batch(record("GS-1", 1)))
    assert (status, answer["code"]) == (429, 1201) and headers["Retry-After"] == "1"
    assert report(errors.data_dir)["unique"] == 0 and report(limited.data_dir)["faults"] == {"429": 1}


async def test_dropped_and_hung_requests_give_no_answer_but_half_are_stored_first(province):
    sim = await province(drop_rate=1.0)
    outcomes = []
    for n in range(20):
        with pytest.raises(aiohttp.ClientError):
            await send(sim.url, api.PATH_ATTENDANCE, batch(record("GS-1", n)))
        outcomes.append(n)
    stored = report(sim.data_dir)["unique"]
    assert 0 < stored < 20  # some processed before the drop: the sender's resend meets "duplicate"
    hung = await province(timeout_rate=1.0, hang_s=30)
    with pytest.raises(asyncio.TimeoutError):
        await send(hung.url, api.PATH_ATTENDANCE, batch(record("GS-1", 1)), timeout=0.5)


async def test_an_outage_refuses_connections_then_the_province_comes_back(province):
    sim = await province(down_after_s=0.0, down_for_s=1.0)
    await asyncio.sleep(0.1)
    with pytest.raises(aiohttp.ClientConnectionError):
        await send(sim.url, api.PATH_ATTENDANCE, batch(record("GS-1", 1)))
    for _ in range(40):
        await asyncio.sleep(0.1)
        if not sim.down:
            break
    status, _, _ = await send(sim.url, api.PATH_ATTENDANCE, batch(record("GS-1", 1)))
    assert status == 200


# ------------------------------------------------------------------------------ warnings


def warning_row(warning_id: int = 42, version: int = 3, **changes) -> dict:
    """The §7.3 example warning at `version` (its first `version` events), encrypted for this app key."""
    from dataclasses import replace

    from lmg.storage import WarningState
    from tests.protocol.test_province import example_warning

    warning, events = example_warning()
    events = events[:version] + [replace(events[1], at_ms=events[1].at_ms + n) for n in range(version - 3)]
    last = events[-1]
    warning = replace(warning, id=warning_id, version=version, level=last.level, state=last.state)
    if last.state is not WarningState.CLOSED:
        warning = replace(warning, disposition=None, closed_at_ms=None, note="", closed_by="")
    cipher = api.WorkerIdCipher.for_app(APP_SECRET, APP_KEY)
    row = api.warning_record(warning, events, "张经理", cipher, os.urandom(12))
    row.update(changes)
    return row


def warnings_batch(*rows) -> bytes:
    return orjson.dumps({"batch_id": "w-1", "warnings": list(rows)})


async def test_a_warning_version_is_held_once_and_an_older_one_is_a_duplicate(province):
    from lmg.simulators.province import held_warnings

    sim = await province()
    status, answer, _ = await send(sim.url, api.PATH_WARNINGS, warnings_batch(warning_row(version=2),
                                                                              warning_row(7, version=1)))
    assert status == 200 and [r["result"] for r in answer["results"]] == ["stored", "stored"]
    status, answer, _ = await send(sim.url, api.PATH_WARNINGS, warnings_batch(warning_row(version=2),
                                                                              warning_row(version=3),
                                                                              warning_row(version=1)))
    assert [(r["version"], r["result"], r["reason"]) for r in answer["results"]] == [
        (2, "duplicate", "version already held"), (3, "stored", ""), (1, "duplicate", "a later version is held")]
    held = held_warnings(sim.data_dir)
    assert [(w["warning_id"], w["version"], w["state"]) for w in held] == [(42, 2, "open"), (7, 1, "open"),
                                                                           (42, 3, "closed")]
    assert all(w["worker_id"] == "620102198503000011" for w in held)
    summary = report(sim.data_dir)
    assert (summary["warnings"], summary["warning_versions"], summary["warnings_duplicates"]) == (2, 3, 2)


@pytest.mark.parametrize("change, code, fragment", [
    ({"level": 4}, 2001, "level"),
    ({"bureau_region": "620102"}, 2001, "bureau_region"),  # level 2 of 城关区 is 兰州市
    ({"state": "gone"}, 2001, "state"),
    ({"history": []}, 2001, "history"),
    ({"disposition": None}, 2001, "disposition"),
    ({"rule": "Low Presence"}, 2001, "rule"),
    ({"post": "worker"}, 2001, "post"),
    ({"worker_id_enc": "AAAA"}, 2003, "worker_id_enc"),
    ({"period_end": "2026-02-28"}, 2001, "period_end"),
])
async def test_an_invalid_warning_is_answered_with_a_code_and_its_batch_goes_on(province, change, code, fragment):
    sim = await province()
    _, answer, _ = await send(sim.url, api.PATH_WARNINGS, warnings_batch(warning_row(**change), warning_row(8)))
    bad, good = answer["results"]
    assert (bad["result"], bad["code"]) == ("invalid", code) and fragment in bad["reason"]
    assert good["result"] == "stored"
    assert report(sim.data_dir)["warnings_rejected"] == 1


async def test_a_warning_id_number_with_a_wrong_check_digit_is_refused(province):
    sim = await province()
    cipher = api.WorkerIdCipher.for_app(APP_SECRET, APP_KEY)
    token = cipher.encrypt("620102198503000010", api.warning_ad(42), os.urandom(12))
    _, answer, _ = await send(sim.url, api.PATH_WARNINGS, warnings_batch(warning_row(worker_id_enc=token)))
    assert answer["results"][0]["code"] == 2002


async def test_warnings_need_their_permission_their_limits_and_a_signature(province):
    sim = await province()
    status, answer, _ = await send(sim.url, api.PATH_WARNINGS,
                                   warnings_batch(*(warning_row(n) for n in range(1, api.MAX_WARNING_BATCH + 2))))
    assert (status, answer["code"]) == (413, 1302)
    status, answer, _ = await send(sim.url, api.PATH_WARNINGS, warnings_batch(warning_row()), secret="wrong")
    assert (status, answer["code"]) == (401, 1001)
    status, answer, _ = await send(sim.url, api.PATH_WARNINGS, b'{"batch_id":"x","warnings":[]}')
    assert (status, answer["code"]) == (400, 1301)
    no_warnings = await province(access=Access(APP_KEY, APP_SECRET, (), frozenset({"attendance"})))
    status, answer, _ = await send(no_warnings.url, api.PATH_WARNINGS, warnings_batch(warning_row()))
    assert (status, answer["code"]) == (403, 1101)
    assert report(sim.data_dir)["warnings"] == 0
