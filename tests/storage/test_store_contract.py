"""The Store contract, run on every backend (SQLite always, PostgreSQL when reachable)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from lmg.storage import DUPLICATE, STORED, DeviceExists, Outcome, Presence, PunchIn, StoreConfig, UnknownDevice

T0 = 1_700_000_000_000


def punch(serial: str = "LMG0001", record_no: int = 1, **overrides) -> PunchIn:
    fields = dict(device_serial=serial, record_no=record_no, worker_id="620102199001011234",
                  punch_time_ms=T0 + record_no, direction=1, verify_mode=1, temperature_dc=365,
                  photo_sha256=None, photo_size=0)
    fields.update(overrides)
    return PunchIn(**fields)


# ---------------------------------------------------------------------------- punches


async def test_store_then_read_back_every_field(store):
    sha = hashlib.sha256(b"face").digest()
    record = punch(record_no=7, direction=2, verify_mode=4, temperature_dc=371,
                   photo_sha256=sha, photo_size=4)
    assert await store.store_punches([record]) == [STORED]
    stored = await store.get_punch("LMG0001", 7)
    assert stored.same_record(record)
    assert stored.photo_sha256 == sha and stored.received_at_ms > 0
    assert await store.get_punch("LMG0001", 8) is None
    assert await store.count_punches() == 1


async def test_duplicates_across_batches_and_within_one_batch(store):
    a, b = punch(record_no=1), punch(record_no=2)
    assert await store.store_punches([a, b, a]) == [STORED, STORED, DUPLICATE]
    assert await store.store_punches([b, punch(record_no=3), b]) == [DUPLICATE, STORED, DUPLICATE]
    assert await store.count_punches() == 3
    assert (await store.outbox_status(T0)).pending == 3


async def test_submit_punches_is_store_punches_as_a_future(store):
    a, b = punch(record_no=1), punch(record_no=2)
    future = store.submit_punches([a, b, a])
    assert isinstance(future, asyncio.Future)
    assert await future == [STORED, STORED, DUPLICATE]
    assert await store.submit_punches([b]) == [DUPLICATE]
    assert await store.count_punches() == 2 and (await store.outbox_status(T0)).pending == 2
    with pytest.raises(TypeError, match="PunchIn"):
        store.submit_punches([tuple(a)])  # a caller's bug raises at once, never reaches a shared batch


async def test_same_record_no_on_two_devices_is_two_punches(store):
    outcomes = await store.store_punches([punch("DEV-A", 1), punch("DEV-B", 1)])
    assert outcomes == [STORED, STORED]
    assert await store.count_punches("DEV-A") == 1 and await store.count_punches() == 2


async def test_concurrent_callers_sending_the_same_records_store_each_once(store):
    records = [punch(f"DEV{n % 5}", n) for n in range(60)]

    async def caller(offset: int):
        rotated = records[offset:] + records[:offset]  # every caller in another order
        return rotated, await store.store_punches(rotated)

    results = await asyncio.gather(*(caller(k * 7) for k in range(8)))
    stored_keys = [(r.device_serial, r.record_no) for sent, outs in results
                   for r, o in zip(sent, outs) if o.status is Outcome.STORED]
    assert sorted(stored_keys) == sorted((r.device_serial, r.record_no) for r in records)
    assert all(o.acknowledged for _, outs in results for o in outs)
    assert await store.count_punches() == 60
    assert (await store.outbox_status(T0)).pending == 60


async def test_rejected_records_are_kept_for_audit_and_never_forwarded(store):
    bad = punch(record_no=5, worker_id="62010219900101123X0", reject_reason=17)
    outcomes = await store.store_punches([punch(record_no=4), bad, bad])
    assert [o.status for o in outcomes] == [Outcome.STORED, Outcome.REJECTED, Outcome.REJECTED]
    assert outcomes[1].reject_reason == 17 and not outcomes[1].acknowledged
    assert await store.get_punch("LMG0001", 5) is None
    rejected = await store.list_rejected_punches()
    assert [(r.record_no, r.reject_reason, r.worker_id) for r in rejected] == [(5, 17, bad.worker_id)]
    claimed = await store.claim_outbox(10, T0 * 2, 1000)
    assert [item.punch.record_no for item in claimed] == [4]


def test_invalid_records_are_refused_before_they_reach_a_shared_batch():
    with pytest.raises(ValueError, match="record_no"):
        punch(record_no=2**32)
    with pytest.raises(ValueError, match="worker_id"):
        punch(worker_id="123")
    with pytest.raises(ValueError, match="direction"):
        punch(direction=3)
    with pytest.raises(ValueError, match="photo_sha256"):
        punch(photo_sha256=b"short")
    # the same wrong values are fine on a record kept for audit
    assert punch(direction=3, worker_id="123", reject_reason=2).reject_reason == 2


async def test_iter_punches_pages_in_key_order(store):
    records = [punch(f"D{n % 3}", n) for n in range(2500)]
    await store.store_punches(records)
    seen = [(p.device_serial, p.record_no) async for p in store.iter_punches()]
    assert seen == sorted((r.device_serial, r.record_no) for r in records)
    only = [p.record_no async for p in store.iter_punches("D1")]
    assert only == sorted(n for n in range(2500) if n % 3 == 1)


async def test_punches_survive_a_restart(backend):
    first = await backend.open()
    await first.store_punches([punch(record_no=n) for n in range(10)])
    await first.close()
    again = await backend.open()
    assert await again.count_punches() == 10
    assert await again.store_punches([punch(record_no=3)]) == [DUPLICATE]


async def test_close_commits_what_is_queued(backend):
    store = await backend.open()
    pending = asyncio.ensure_future(store.store_punches([punch(record_no=1)]))
    await asyncio.sleep(0)  # queued, its group-commit window not over yet
    await store.close()
    assert await pending == [STORED]
    again = await backend.open()
    assert await again.count_punches() == 1


# ---------------------------------------------------------------------------- devices


async def test_device_lifecycle_and_secret_never_in_repr(store):
    device = await store.add_device("LMG0001", project_code="P-7", region_code="620102")
    assert len(device.secret) == 32 and device.enabled
    assert device.secret.hex() not in repr(device) and "hidden" in repr(device)
    assert (await store.get_device("LMG0001")).secret == device.secret
    with pytest.raises(DeviceExists):
        await store.add_device("LMG0001", project_code="P-7", region_code="620102")
    await store.disable_device("LMG0001")
    assert not (await store.get_device("LMG0001")).enabled
    await store.enable_device("LMG0001")
    assert (await store.get_device("LMG0001")).enabled
    new = await store.rotate_device_secret("LMG0001")
    assert new != device.secret and (await store.get_device("LMG0001")).secret == new
    with pytest.raises(UnknownDevice):
        await store.disable_device("NOPE")
    with pytest.raises(UnknownDevice):
        await store.rotate_device_secret("NOPE")
    with pytest.raises(ValueError, match="region code"):
        await store.add_device("X", project_code="P", region_code="62")
    assert await store.get_device("NOPE") is None


async def test_get_devices_reads_many_serials_in_one_call(store):
    made = {f"LMG{n}": await store.add_device(f"LMG{n}", project_code="P", region_code="620100")
            for n in range(3)}
    await store.disable_device("LMG1")
    found = await store.get_devices(["LMG2", "GHOST", "LMG0", "LMG1", "LMG0"])
    assert sorted(found) == ["LMG0", "LMG1", "LMG2"]  # unknown absent, duplicates once
    assert found["LMG0"].secret == made["LMG0"].secret
    assert found["LMG1"] == await store.get_device("LMG1") and not found["LMG1"].enabled
    assert await store.get_devices([]) == {}
    assert await store.get_devices(["GHOST"]) == {}


async def test_get_devices_sees_changes_made_after_an_earlier_read(store):
    """No caching inside the store: a disable or a rotated secret shows in the next call."""
    await store.add_device("LMG0", project_code="P", region_code="620100")
    before = (await store.get_devices(["LMG0"]))["LMG0"]
    await store.disable_device("LMG0")
    new_secret = await store.rotate_device_secret("LMG0")
    after = (await store.get_devices(["LMG0"]))["LMG0"]
    assert before.enabled and not after.enabled and after.secret == new_secret


async def test_get_devices_takes_a_storm_worth_of_serials(store):
    """More serials than SQLite's 32,766 bound parameters or one IN list would allow."""
    serials = [f"LMG{n:05d}" for n in range(40_000)]
    await store.add_device("LMG00007", project_code="P", region_code="620100")
    await store.add_device("LMG39999", project_code="P", region_code="620100")
    assert sorted(await store.get_devices(serials)) == ["LMG00007", "LMG39999"]


async def test_list_devices_pages_by_serial(store):
    for n in (3, 1, 2):
        await store.add_device(f"LMG{n}", project_code="P", region_code="620100")
    assert [d.serial for d in await store.list_devices()] == ["LMG1", "LMG2", "LMG3"]
    assert [d.serial for d in await store.list_devices(after_serial="LMG1", limit=1)] == ["LMG2"]


async def test_presence_batch_updates_many_devices_in_one_call(backend):
    store = await backend.open(clock_ms=lambda: T0 + 10)  # online is read against the store's clock
    for n in range(3):
        await store.add_device(f"LMG{n}", project_code="P", region_code="620100")
    updated = await store.update_presence([
        Presence("LMG0", T0, True, firmware="2.1.0", roster_version=9),
        Presence("LMG1", T0 + 5, True),
        Presence("GHOST", T0, True),
    ])
    assert updated == 2
    d0, d1, d2 = await store.list_devices()
    assert (d0.last_seen_ms, d0.online, d0.firmware, d0.roster_version) == (T0, True, "2.1.0", 9)
    assert (d1.last_seen_ms, d1.online, d1.firmware) == (T0 + 5, True, "")
    assert (d2.last_seen_ms, d2.online) == (None, False)
    await store.update_presence([Presence("LMG0", T0 + 9, False)])
    d0 = await store.get_device("LMG0")
    assert (d0.online, d0.firmware, d0.roster_version) == (False, "2.1.0", 9)


async def test_a_device_whose_node_died_is_shown_offline_after_presence_stale_ms(backend):
    # Its node wrote it online and then nothing more (killed, or cut from the store): the
    # flag alone kept it online for ever, on every node's admin API. Online is the flag
    # and a last-seen time within presence_stale_ms of the store's clock.
    clock = [T0]
    store = await backend.open(config=StoreConfig(presence_stale_ms=95_000), clock_ms=lambda: clock[0])
    for serial in ("LIVE", "DEAD"):
        await store.add_device(serial, project_code="P", region_code="620100")
    await store.update_presence([Presence("LIVE", T0, True), Presence("DEAD", T0, True)])
    clock[0] = T0 + 95_000
    assert (await store.get_device("DEAD")).online  # exactly at the limit: still online
    clock[0] = T0 + 95_001
    await store.update_presence([Presence("LIVE", T0 + 95_000, True)])  # its node is alive and flushes
    assert [(d.serial, d.online) for d in (await store.get_devices(["DEAD", "LIVE"])).values()] in (
        [("DEAD", False), ("LIVE", True)], [("LIVE", True), ("DEAD", False)])
    assert (await store.get_device("DEAD")).last_seen_ms == T0  # the stored time is kept as it was
    assert [d.serial for d in await store.list_devices(online=True)] == ["LIVE"]
    assert [d.serial for d in await store.list_devices(online=False)] == ["DEAD"]


# ----------------------------------------------------------------------------- outbox


async def test_outbox_claim_ack_fail_and_lease(store):
    await store.store_punches([punch("A", n) for n in range(3)] + [punch("B", 1)])
    now = T0 * 2
    first = await store.claim_outbox(2, now, lease_ms=1000)
    assert [(i.punch.device_serial, i.punch.record_no, i.attempts) for i in first] == [
        ("A", 0, 1), ("A", 1, 1)]
    # A's next item waits behind the leased ones; B is free
    second = await store.claim_outbox(10, now, lease_ms=1000)
    assert [(i.punch.device_serial, i.punch.record_no) for i in second] == [("B", 1)]
    assert await store.ack_outbox([first[0].id]) == 1
    assert await store.ack_outbox([first[0].id]) == 0  # a late second ack changes nothing
    # the leases of A/1 and B/1 run out: claimed again, A/2 now free behind A/1
    again = await store.claim_outbox(10, now + 1000, lease_ms=1000)
    assert [(i.punch.device_serial, i.punch.record_no, i.attempts) for i in again] == [
        ("A", 1, 2), ("A", 2, 1), ("B", 1, 2)]
    assert await store.fail_outbox([i.id for i in again], "HTTP 503", now + 60_000) == 3
    assert await store.claim_outbox(10, now + 2000, 1000) == []  # backing off
    retried = await store.claim_outbox(10, now + 60_000, 1000)
    assert [(i.punch.device_serial, i.punch.record_no, i.last_error) for i in retried] == [
        ("A", 1, "HTTP 503"), ("A", 2, "HTTP 503"), ("B", 1, "HTTP 503")]
    status = await store.outbox_status(now + 60_000)
    assert status.pending == 3 and status.dead_letters == 0


async def test_outbox_keeps_device_order_behind_an_item_backing_off(store):
    await store.store_punches([punch("A", n) for n in range(3)])
    now = T0 * 2
    head = (await store.claim_outbox(1, now, 1000))[0]
    await store.fail_outbox(head.id, "timeout", now + 5000)
    assert await store.claim_outbox(10, now + 10, 1000) == []  # A/1 must not overtake A/0
    later = await store.claim_outbox(10, now + 5000, 1000)
    assert [i.punch.record_no for i in later] == [0, 1, 2]


async def test_dead_letters_are_kept_listed_and_retried(store):
    await store.store_punches([punch("A", 1), punch("B", 1), punch("C", 1)])
    now = T0 * 2
    items = await store.claim_outbox(10, now, 1000)
    assert await store.dead_letter([items[0].id, items[1].id], "province rejected: bad ID") == 2
    dead = await store.list_dead_letters()
    assert [(d.punch.device_serial, d.dead, d.last_error) for d in dead] == [
        ("A", True, "province rejected: bad ID"), ("B", True, "province rejected: bad ID")]
    first_page = await store.list_dead_letters(limit=1)
    assert [d.punch.device_serial for d in first_page] == ["A"]
    assert [d.punch.device_serial for d in await store.list_dead_letters(after_id=first_page[-1].id)] == ["B"]
    status = await store.outbox_status(now + 10_000)
    assert (status.pending, status.dead_letters) == (1, 2)
    assert status.oldest_age_s >= 0
    assert await store.retry_dead_letters([items[0].id]) == 1
    assert await store.retry_dead_letters() == 1
    back = await store.claim_outbox(10, store.clock_ms() + 1, 1000)
    assert sorted(i.punch.device_serial for i in back) == ["A", "B"]
    assert all(i.attempts == 1 for i in back)


async def test_outbox_status_reports_the_age_of_the_oldest_pending(backend):
    clock = [T0]
    store = await backend.open(clock_ms=lambda: clock[0])
    await store.store_punches([punch(record_no=1)])
    clock[0] += 5000
    await store.store_punches([punch(record_no=2)])
    status = await store.outbox_status(T0 + 30_000)
    assert (status.pending, status.oldest_age_s, status.dead_letters) == (2, 30.0, 0)


# ------------------------------------------------------------------------------ audit
# (operator commands: test_store_downlink.py)


async def test_audit_log_newest_first_and_by_event(store):
    await store.audit("auth_failed", "LMG1", {"reason": "bad hmac", "count": 3}, "10.0.0.7:5000")
    await store.audit("device_added", "LMG2", {"by": "admin"})
    await store.audit("auth_failed", "LMG3", None, "10.0.0.8:5000")
    entries = await store.list_audit()
    assert [e.subject for e in entries] == ["LMG3", "LMG2", "LMG1"]
    failures = await store.list_audit(event="auth_failed", limit=1)
    assert [(e.subject, e.detail, e.address) for e in failures] == [("LMG3", {}, "10.0.0.8:5000")]
    assert entries[2].detail == {"reason": "bad hmac", "count": 3} and entries[2].at_ms > 0
