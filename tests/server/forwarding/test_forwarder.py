"""The forwarder against the province simulator: delivery, retries, dead letters, limits."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import time
from collections import defaultdict

import orjson
import pytest

from lmg.server.forwarding.config import ForwarderConfig
from lmg.server.settings import Settings, SettingsError, load_settings
from lmg.simulators.province import Faults, held_records, report
from lmg.storage import PunchIn, open_store
from tests.waiting import wait_for

from tests.server.forwarding.conftest import LMG, REPO, WAIT_S, add_punches, drained, env_without_forward_vars, fast_config


def held(sim) -> set[tuple[str, int]]:
    return {(serial, n) for serial, n, _ in held_records(sim.data_dir)}


def arrival_order_per_device(sim) -> dict[str, list[int]]:
    order = defaultdict(list)
    for serial, n, _ in held_records(sim.data_dir):
        order[serial].append(n)
    return order


async def test_every_punch_reaches_the_province_once_and_in_order_per_device(store, province, forwarding):
    sim = await province()
    sent = await add_punches(store, devices=20, per_device=30)
    running = forwarding(store, fast_config(sim.url))
    await drained(store)
    assert held(sim) == set(sent)
    summary = report(sim.data_dir)
    assert summary["unique"] == summary["received"] == len(sent) and summary["duplicates"] == 0
    for serial, numbers in arrival_order_per_device(sim).items():
        assert numbers == sorted(numbers), serial
    assert running.forwarder.stats.acked == len(sent)


async def test_records_the_province_rejects_become_dead_letters_with_its_reason(store, province, forwarding, tmp_path):
    sim = await province()
    good = await add_punches(store, devices=2, per_device=5)
    # A punch an older gateway let through: 18 characters, wrong check digit.
    await store.store_punches([PunchIn("GS-FWD-0000", 100, "620102198503000010", time.time_ns() // 1_000_000,
                                       1, 1, 365, None, 0)])
    forwarding(store, fast_config(sim.url))
    await drained(store)
    [dead] = await store.list_dead_letters()
    assert (dead.punch.device_serial, dead.punch.record_no) == ("GS-FWD-0000", 100)
    assert dead.last_error.startswith("province 2002:") and "check digit" in dead.last_error
    assert held(sim) == set(good)  # the device's later punches were not held up by it

    data_dir = str(tmp_path / "gateway")
    listed = subprocess.run([LMG, "forward", "dead-letters", "--json", "--data-dir", data_dir], capture_output=True,
                            text=True, cwd=REPO, timeout=60, env=env_without_forward_vars())
    assert listed.returncode == 0, listed.stderr
    [row] = orjson.loads(listed.stdout)
    assert row["id"] == dead.id and row["record_id"] == "GS-FWD-0000:100" and "2002" in row["reason"]
    retried = subprocess.run([LMG, "forward", "retry", str(dead.id), "--json", "--data-dir", data_dir],
                             capture_output=True, text=True, cwd=REPO, timeout=60, env=env_without_forward_vars())
    assert retried.returncode == 0 and orjson.loads(retried.stdout) == {"retried": 1}, retried.stderr
    await drained(store, what="the retried dead letter to be sent again")
    assert len(await store.list_dead_letters()) == 1  # really invalid: rejected again, still not lost
    assert report(sim.data_dir)["rejected"] == 2


async def test_500s_timeouts_and_drops_are_retried_until_accepted_exactly_once(store, province, forwarding):
    sim = await province(error_rate=0.3, drop_rate=0.1, timeout_rate=0.1, hang_s=5)
    sent = await add_punches(store, devices=10, per_device=20)
    running = forwarding(store, fast_config(sim.url, timeout_s=0.5, lease_s=3.0))
    await drained(store, timeout=40)
    assert held(sim) == set(sent)
    assert await store.list_dead_letters() == []
    stats = running.forwarder.stats
    assert stats.retried > 0 and stats.failures.get("http_500", 0) > 0
    for serial, numbers in arrival_order_per_device(sim).items():
        assert numbers == sorted(numbers), serial


async def test_429_holds_every_request_until_retry_after(store, province, forwarding):
    sim = await province(rate_limit_rate=1.0)
    sent = await add_punches(store, devices=5, per_device=40)
    running = forwarding(store, fast_config(sim.url, concurrency=4))
    started = time.monotonic()
    await asyncio.sleep(2.5)
    elapsed = time.monotonic() - started
    requests = running.forwarder.stats.requests
    # Retry-After: 1 s. Each second at most one round of `concurrency` requests goes out
    # (those already past the check when the 429 arrived), not the hundreds a loop
    # retrying after its 0.05-0.1 s backoff would send.
    assert 1 <= requests <= 4 * (elapsed + 1), requests
    sim.faults = Faults()
    await drained(store)
    assert held(sim) == set(sent)


async def test_the_breaker_stops_hammering_a_province_that_is_down(store, province, forwarding):
    sim = await province(down_for_s=3.0)
    sent = await add_punches(store, devices=5, per_device=20)
    running = forwarding(store, fast_config(sim.url, breaker_failures=3, breaker_open_s=0.2, breaker_max_open_s=1.0))
    await asyncio.sleep(2.5)
    forwarder = running.forwarder
    # 3 failures open it; then one probe after 0.2, 0.4, 0.8, 1.0 s: about 8, plus what was
    # in flight (2). Without the breaker the 0.05-0.1 s backoff allows ~50.
    assert forwarder.stats.requests <= 14, forwarder.stats
    await drained(store)
    assert held(sim) == set(sent)


async def test_memory_stays_bounded_whatever_the_backlog(store, province, forwarding):
    sim = await province(latency_ms=20)
    sent = await add_punches(store, devices=50, per_device=60)  # 3,000 pending
    limits = []
    real_claim = store.claim_outbox

    async def claim(limit, now_ms, lease_ms):
        limits.append(limit)
        return await real_claim(limit, now_ms, lease_ms)

    store.claim_outbox = claim
    config = fast_config(sim.url, batch_records=50, concurrency=2)
    running = forwarding(store, config)
    await drained(store)
    assert max(limits) <= 100 and running.forwarder.max_held <= 100  # batch_records x concurrency
    assert held(sim) == set(sent)


async def test_a_new_forwarder_resumes_from_the_outbox_where_the_last_stopped(store, province, forwarding):
    sim = await province(latency_ms=100)
    sent = await add_punches(store, devices=10, per_device=30)
    first = forwarding(store, fast_config(sim.url, batch_records=20, concurrency=1))
    for _ in range(200):
        await asyncio.sleep(0.05)
        if first.forwarder.stats.acked >= 40:
            break
    await first.stop()
    left = (await store.outbox_status(time.time_ns() // 1_000_000)).pending
    assert 0 < left < len(sent)
    forwarding(store, fast_config(sim.url))
    await drained(store)
    assert held(sim) == set(sent)
    assert report(sim.data_dir)["unique"] == len(sent)


async def punch_naming_a_photo(store, serial: str) -> tuple[bytes, bytes]:
    """Provision `serial` and store its punch 1 naming a new photo; (photo, sha256)."""
    photo = os.urandom(3000)
    sha = hashlib.sha256(photo).digest()
    await store.add_device(serial, project_code="P-1", region_code="620100")
    await store.store_punches([PunchIn(serial, 1, "620102198503000011", time.time_ns() // 1_000_000, 1, 1,
                                       365, sha, len(photo))])
    return photo, sha


async def test_a_photo_the_gateway_holds_is_put_before_its_record(store, province, forwarding):
    sim = await province()
    photo, sha = await punch_naming_a_photo(store, "GS-PHOTO-1")
    await store.photo_append("GS-PHOTO-1", sha, len(photo), 0, photo)
    running = forwarding(store, fast_config(sim.url))
    await drained(store)
    assert report(sim.data_dir)["photos"] == 1 and running.forwarder.stats.photos_sent == 1
    assert held(sim) == {("GS-PHOTO-1", 1)}
    assert await store.unforwarded_photos(2**62, 10) == []  # marked: the late-photo sweep leaves it alone


async def test_a_photo_uploaded_after_its_record_went_is_sent_by_the_late_photo_sweep(store, province, forwarding):
    # A terminal sends the punch, then the photo in chunks; the record may be forwarded
    # in between. The photo used to stay on the gateway for ever.
    sim = await province()
    photo, sha = await punch_naming_a_photo(store, "GS-PHOTO-2")
    running = forwarding(store, fast_config(sim.url, late_photo_s=0.2))
    await drained(store)
    assert held(sim) == {("GS-PHOTO-2", 1)} and report(sim.data_dir)["photos"] == 0
    await store.photo_append("GS-PHOTO-2", sha, len(photo), 0, photo)

    async def sent_and_marked():
        return report(sim.data_dir)["photos"] == 1 and not await store.unforwarded_photos(2**62, 10)

    await wait_for(sent_and_marked, WAIT_S, "the late photo at the province, marked forwarded")
    assert running.forwarder.stats.late_photos_sent == 1


async def test_one_sweep_sends_every_late_photo_not_one_page(province, forwarding, tmp_path):
    # Terminals upload photos after their punches, so at the design load (167 punches/s,
    # each with a photo) most photos take the sweep: one sweep must send them all, not a page.
    sim = await province()
    hour_ago = await open_store(None, data_dir=tmp_path / "gateway", clock_ms=lambda: time.time_ns() // 1_000_000
                                - 3_600_000)  # the photos were stored an hour ago
    try:
        photos = [os.urandom(200) for _ in range(25)]
        for photo in photos:
            await hour_ago.photo_append("GS-PHOTO-4", hashlib.sha256(photo).digest(), len(photo), 0, photo)
        running = forwarding(hour_ago, fast_config(sim.url, late_photo_s=600))  # its own sweep waits 10 min
        await wait_for(lambda: running.forwarder._session is not None, WAIT_S, "the forwarder's HTTP session")
        assert await running.forwarder.send_late_photos(page=7) == len(photos)  # four pages, one call
        assert report(sim.data_dir)["photos"] == len(photos)
        assert await hour_ago.unforwarded_photos(2**62, 10) == []
        assert await running.forwarder.send_late_photos(page=7) == 0  # nothing left, nothing sent twice
        await running.stop()
    finally:
        await hour_ago.close()


async def test_a_photo_the_province_refuses_for_good_holds_back_nothing(province, forwarding, tmp_path):
    # A damaged photo file gets 400 (hash mismatch) on every try: first in the sweep's
    # order, it used to end every sweep before the photos behind it; naming a record, it
    # kept the record in the outbox for ever.
    sim = await province()
    hour_ago = await open_store(None, data_dir=tmp_path / "gateway", clock_ms=lambda: time.time_ns() // 1_000_000
                                - 3_600_000)
    try:
        photos = [os.urandom(300) for _ in range(3)]
        shas = [hashlib.sha256(p).digest() for p in photos]
        for photo, sha in zip(photos, shas, strict=True):
            await hour_ago.photo_append("GS-PHOTO-5", sha, len(photo), 0, photo)
        hour_ago.blobs.path(shas[0].hex()).write_bytes(b"damaged on disk")  # the oldest
        await hour_ago.add_device("GS-PHOTO-6", project_code="P-1", region_code="620100")
        damaged = os.urandom(300)
        damaged_sha = hashlib.sha256(damaged).digest()
        await hour_ago.store_punches([PunchIn("GS-PHOTO-6", 1, "620102198503000011", time.time_ns() // 1_000_000,
                                              1, 1, 365, damaged_sha, len(damaged))])
        await hour_ago.photo_append("GS-PHOTO-6", damaged_sha, len(damaged), 0, damaged)
        hour_ago.blobs.path(damaged_sha.hex()).write_bytes(b"damaged too")
        running = forwarding(hour_ago, fast_config(sim.url, late_photo_s=600))
        await drained(hour_ago)  # the record naming the damaged photo went all the same
        assert held(sim) == {("GS-PHOTO-6", 1)}
        assert await running.forwarder.send_late_photos(page=1) == 2  # the two sound photos, past the damaged one
        assert report(sim.data_dir)["photos"] == 2
        assert await hour_ago.unforwarded_photos(2**62, 10) == []  # refused for good: not tried again
        assert running.forwarder.stats.failures["photo_refused"] == 2
        await running.stop()
    finally:
        await hour_ago.close()


async def test_a_photo_whose_file_is_gone_stays_pending_and_holds_back_no_other(province, forwarding, tmp_path,
                                                                               caplog):
    # The late-photo sweep used to mark a photo whose file was missing as forwarded: it
    # never reached the province. It must stay pending, logged, and not stop the sweep.
    sim = await province()
    hour_ago = await open_store(None, data_dir=tmp_path / "gateway", clock_ms=lambda: time.time_ns() // 1_000_000
                                - 3_600_000)
    try:
        photos = [os.urandom(300) for _ in range(3)]
        shas = [hashlib.sha256(p).digest() for p in photos]
        for photo, sha in zip(photos, shas, strict=True):
            await hour_ago.photo_append("GS-PHOTO-7", sha, len(photo), 0, photo)
        hour_ago.blobs.path(shas[0].hex()).unlink()  # the oldest, gone from the disk
        running = forwarding(hour_ago, fast_config(sim.url, late_photo_s=600))
        await wait_for(lambda: running.forwarder._session is not None, WAIT_S, "the forwarder's HTTP session")
        assert await running.forwarder.send_late_photos(page=1) == 2  # past the unreadable one
        assert report(sim.data_dir)["photos"] == 2
        assert await hour_ago.unforwarded_photos(2**62, 10) == [shas[0]]  # pending, not marked sent
        assert await running.forwarder.send_late_photos(page=1) == 0  # tried again, and the sweep ends
        assert await hour_ago.unforwarded_photos(2**62, 10) == [shas[0]]
        assert running.forwarder.stats.failures["photo_unreadable"] == 2
        assert "unreadable on this node" in caplog.text
        await running.stop()
    finally:
        await hour_ago.close()

async def test_a_late_photo_the_province_did_not_take_is_sent_by_a_later_sweep(store, province, forwarding):
    photo = os.urandom(2000)
    sha = hashlib.sha256(photo).digest()
    await store.photo_append("GS-PHOTO-3", sha, len(photo), 0, photo)  # no punch names it yet
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed: every request fails to connect
    down = forwarding(store, fast_config(nobody, late_photo_s=0.05))
    await wait_for(lambda: down.forwarder.stats.failures.get("connection"), WAIT_S, "a failed PUT")
    await down.stop()
    assert await store.unforwarded_photos(2**62, 10) == [sha]
    assert down.forwarder.stats.late_photos_sent == 0

    sim = await province()
    up = forwarding(store, fast_config(sim.url, late_photo_s=0.05))
    await wait_for(lambda: report(sim.data_dir)["photos"] == 1, WAIT_S, "the photo at the province")

    async def marked():
        return not await store.unforwarded_photos(2**62, 10)

    await wait_for(marked, WAIT_S, "the photo marked forwarded")
    assert up.forwarder.stats.late_photos_sent == 1


async def test_device_status_snapshot_goes_in_pages(store, province, forwarding):
    sim = await province()
    await add_punches(store, devices=3, per_device=1)
    running = forwarding(store, fast_config(sim.url))
    assert await asyncio.wait_for(running.forwarder.send_device_status(), WAIT_S) == 3
    assert report(sim.data_dir)["devices"] == 3


async def test_lmg_forward_status_json(store, tmp_path):
    await add_punches(store, devices=2, per_device=3)
    out = subprocess.run([LMG, "forward", "status", "--json", "--data-dir", str(tmp_path / "gateway")],
                         capture_output=True, text=True, cwd=REPO, timeout=60, env=env_without_forward_vars())
    assert out.returncode == 0, out.stderr
    status = orjson.loads(out.stdout)
    assert set(status) == {"pending", "oldest_age_s", "dead_letters"}
    assert status["pending"] == 6 and status["dead_letters"] == 0 and status["oldest_age_s"] >= 0


# ----------------------------------------------------------------------------- config


def test_flags_beat_environment_beat_file(tmp_path):
    config_file = tmp_path / "lmg.toml"
    config_file.write_text('forward_url = "http://file:1"\nforward_app_key = "file-key"\n'
                           'forward_app_secret = "very-secret-7"\nforward_concurrency = 3\ntcp = "0.0.0.0:9100"\n')
    env = {"LMG_FORWARD_APP_KEY": "env-key", "LMG_FORWARD_TIMEOUT_S": "5"}
    config = load_settings({"forward_url": "http://flag:2"}, env=env, config_file=str(config_file)).forward
    assert (config.url, config.app_key, config.concurrency, config.timeout_s) == ("http://flag:2", "env-key", 3, 5.0)
    assert config.app_secret == "very-secret-7" and "very-secret-7" not in repr(config)


@pytest.mark.parametrize("values, fragment", [
    ({"forward_url": "ftp://x"}, "http(s)://"),
    ({"forward_url": "http://x:1"}, "forward_app_secret are missing"),
    ({"forward_batch_records": 501}, "province's limit"),
    ({"forward_timeout_s": 30.0, "forward_lease_s": 60.0}, "raise the lease"),
    ({"forward_concurrency": "many"}, "expected int"),
    ({"forward_late_photo_s": 0}, "forward_late_photo_s must be greater than 0"),
])
def test_bad_settings_name_the_key_and_what_to_do(values, fragment):
    with pytest.raises(SettingsError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_settings(values, env={})


def test_forward_keys_sit_beside_the_gateways_in_one_settings_object():
    settings = Settings.from_keys({"forward_url": "http://127.0.0.1:9200", "forward_app_key": "k",
                                   "forward_app_secret": "s", "tcp": "0.0.0.0:9100"})
    config = settings.forward
    assert config.url == "http://127.0.0.1:9200" and config.batch_records == 500 and config.enabled()
    assert Settings.from_keys({"forward_url": ""}).forward.enabled() is False
    assert ForwarderConfig().enabled() is False
