"""Photo upload in chunks, resumed across a reconnect, linked to its punch."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

from lmg.protocol import Ack, PhotoChunk, PhotoQuery, PhotoStatus, Punch, ResultCode
from lmg.server.forwarding.config import ForwarderConfig
from lmg.server.forwarding.forwarder import Forwarder
from lmg.simulators.province import Access, Faults, ProvinceSimulator, held_records, report
from lmg.simulators.terminal import make_punch

from tests.server.conftest import WAIT_S, wait_for


async def announce(client, record_no: int, photo: bytes) -> None:
    """Store the punch that announces `photo`: a photo nobody announced is refused."""
    client.send(Punch.of(make_punch(record_no, 1, time.time_ns() // 1_000_000, photo=photo)))
    assert [r.result for r in (await client.expect(Ack)).results] == [ResultCode.OK]


async def test_a_photo_no_punch_announced_is_refused_and_not_stored(gw):
    # Before: a chunk for a record that did not exist got PHOTO_STATUS OK, was stored and
    # was forwarded to the province.
    photo = os.urandom(5_000)
    sha = hashlib.sha256(photo).digest()
    client = await gw.raw_authenticated()
    client.send(PhotoChunk(404, sha, len(photo), 0, photo))  # no such punch
    assert (await client.expect(PhotoStatus)).result == ResultCode.PHOTO_NOT_ANNOUNCED
    client.send(Punch.of(make_punch(405, 1, time.time_ns() // 1_000_000)))  # a punch without a photo
    await client.expect(Ack)
    client.send(PhotoChunk(405, sha, len(photo), 0, photo))
    assert (await client.expect(PhotoStatus)).result == ResultCode.PHOTO_NOT_ANNOUNCED
    await announce(client, 406, photo)
    client.send(PhotoChunk(406, sha, len(photo) + 1, 0, photo))  # the wrong size
    assert (await client.expect(PhotoStatus)).result == ResultCode.PHOTO_NOT_ANNOUNCED
    client.send(PhotoQuery(404, sha, len(photo)))
    assert (await client.expect(PhotoStatus)).result == ResultCode.PHOTO_NOT_ANNOUNCED
    assert await gw.store.get_photo(sha) is None
    assert await gw.store.photo_status(gw.device.serial, sha) == 0
    # another device's punch does not announce it for this one
    other = await gw.add_device("GS-TEST-000009")
    second = await gw.raw_authenticated(other)
    second.send(PhotoChunk(406, sha, len(photo), 0, photo))
    assert (await second.expect(PhotoStatus)).result == ResultCode.PHOTO_NOT_ANNOUNCED
    assert gw.gateway.counters["photo_refused_photo_not_announced"] == 5
    # the announced one goes through
    client.send(PhotoChunk(406, sha, len(photo), 0, photo))
    assert (await client.expect(PhotoStatus)).result == ResultCode.OK


async def test_the_photo_size_limit_holds_at_the_punch_and_the_query(start_gateway):
    # Before: only the first PHOTO_CHUNK enforced photo_max_bytes; a punch announced
    # 200 MiB and PHOTO_QUERY answered OK.
    gw = await start_gateway(photo_max_bytes=10_000)
    client = await gw.raw_authenticated()
    huge = make_punch(1, 1, time.time_ns() // 1_000_000)._replace(photo_size=200 << 20, photo_sha256=bytes(range(32)))
    client.send(Punch.of(huge))
    assert [r.result for r in (await client.expect(Ack)).results] == [ResultCode.PHOTO_TOO_LARGE]
    client.send(PhotoQuery(1, bytes(range(32)), 200 << 20))
    assert (await client.expect(PhotoStatus)).result == ResultCode.PHOTO_TOO_LARGE
    assert gw.gateway.counters["photo_refused_photo_too_large"] == 1


async def test_photo_uploads_in_progress_per_device_are_bounded(start_gateway):
    gw = await start_gateway(photo_uploads_per_device=2)
    client = await gw.raw_authenticated()
    photos = [os.urandom(40_000) for _ in range(3)]
    for no, photo in enumerate(photos, 1):
        await announce(client, no, photo)
    for no, photo in enumerate(photos, 1):
        client.send(PhotoChunk(no, hashlib.sha256(photo).digest(), len(photo), 0, photo[:1000]))
    results = [(await client.expect(PhotoStatus)).result for _ in photos]
    assert results == [ResultCode.OK, ResultCode.OK, ResultCode.PHOTO_UPLOADS_BUSY]
    first = photos[0]
    client.send(PhotoChunk(1, hashlib.sha256(first).digest(), len(first), 1000, first[1000:]))
    assert (await client.expect(PhotoStatus)).next_offset == len(first)  # done: its slot is free
    client.send(PhotoChunk(3, hashlib.sha256(photos[2]).digest(), len(photos[2]), 0, photos[2][:1000]))
    assert (await client.expect(PhotoStatus)).result == ResultCode.OK


async def test_photo_frames_in_the_store_at_once_are_bounded_per_process(start_gateway, monkeypatch):
    """Photos must not take every shared store connection (issue 17: 3,000 uploads starved
    presence, signals and the forwarder): one turn here, one frame may wait, the next is
    refused PHOTO_UPLOADS_BUSY at once and counted as `store_busy`."""
    gw = await start_gateway(photo_store_concurrency=1, photo_chunks_waiting=1)
    release = asyncio.Event()
    append = gw.store.photo_append

    async def held(*args):
        await release.wait()
        return await append(*args)

    monkeypatch.setattr(gw.store, "photo_append", held)
    intake = gw.gateway.photo_intake
    clients, photos = [], []
    for n in range(3):
        device = gw.device if n == 0 else await gw.add_device(f"GS-TEST-00010{n}")
        client = await gw.raw_authenticated(device)
        photo = os.urandom(3_000)
        await announce(client, 1, photo)
        clients.append(client)
        photos.append(photo)
    chunk = [PhotoChunk(1, hashlib.sha256(p).digest(), len(p), 0, p) for p in photos]
    clients[0].send(chunk[0])
    await wait_for(lambda: intake.in_store == 1, what="the first chunk holding the only turn")
    clients[1].send(chunk[1])
    await wait_for(lambda: intake.waiting == 1, what="the second chunk waiting its turn")
    clients[2].send(chunk[2])
    refused = await clients[2].expect(PhotoStatus)
    assert (refused.result, refused.next_offset) == (ResultCode.PHOTO_UPLOADS_BUSY, 0)
    assert gw.gateway.counters["photo_refused_store_busy"] == 1
    release.set()
    for client, photo in zip(clients[:2], photos):
        status = await client.expect(PhotoStatus)
        assert (status.result, status.next_offset) == (ResultCode.OK, len(photo))
    clients[2].send(chunk[2])  # after its back-off
    assert (await clients[2].expect(PhotoStatus)).result == ResultCode.OK
    assert (intake.in_store, intake.waiting) == (0, 0)


async def test_the_gateway_deletes_partial_uploads_nobody_continued(start_gateway):
    # photo_partial_ttl_ms existed in the store, but nothing ever called the pruning, so
    # abandoned uploads piled up for ever; the gateway now sweeps every partial_photo_sweep_s.
    gw = await start_gateway(photo_partial_ttl_ms=1, partial_photo_sweep_s=0.05)
    photo = os.urandom(40_000)
    sha = hashlib.sha256(photo).digest()
    client = await gw.raw_authenticated()
    await announce(client, 7, photo)
    client.send(PhotoChunk(7, sha, len(photo), 0, photo[:32768]))
    assert (await client.expect(PhotoStatus)).next_offset == 32768
    await wait_for(lambda: gw.gateway.counters["partial_photos_pruned"] >= 1, what="the partial upload swept")
    assert await gw.store.photo_status(gw.device.serial, sha) == 0  # the device starts over


async def test_photo_resumes_after_a_reconnect_and_is_linked_to_its_punch(gw):
    photo = os.urandom(70_000)  # three chunks of 32 KiB, the largest the spec recommends
    sha = hashlib.sha256(photo).digest()
    record = make_punch(7, 1, time.time_ns() // 1_000_000, photo=photo)
    first = await gw.raw_authenticated()
    first.send(Punch.of(record))
    assert [r.result for r in (await first.receive()).results] == [ResultCode.OK]
    first.send(PhotoChunk(7, sha, len(photo), 0, photo[:32768]))
    status = await first.expect(PhotoStatus)
    assert (status.photo_sha256, status.result, status.next_offset) == (sha, ResultCode.OK, 32768)
    await first.close()
    assert await gw.store.get_punch_photo(gw.device.serial, 7) is None

    second = await gw.raw_authenticated()
    second.send(PhotoQuery(7, sha, len(photo)))
    status = await second.expect(PhotoStatus)
    assert (status.result, status.next_offset) == (ResultCode.OK, 32768)
    # a chunk at the wrong offset is told where to resume
    second.send(PhotoChunk(7, sha, len(photo), 0, photo[:100]))
    status = await second.expect(PhotoStatus)
    assert (status.result, status.next_offset) == (ResultCode.PHOTO_OFFSET_MISMATCH, 32768)
    offset = status.next_offset
    while offset < len(photo):
        second.send(PhotoChunk(7, sha, len(photo), offset, photo[offset : offset + 32768]))
        status = await second.expect(PhotoStatus)
        assert status.result == ResultCode.OK
        offset = status.next_offset
    assert offset == len(photo)
    assert await gw.store.get_punch_photo(gw.device.serial, 7) == photo
    second.send(PhotoQuery(7, sha, len(photo)))
    assert (await second.expect(PhotoStatus)).next_offset == len(photo)


async def test_simulator_upload_photo_resumes_with_photo_query(gw):
    photo = os.urandom(40_000)
    record = make_punch(8, 2, time.time_ns() // 1_000_000, photo=photo)
    terminal = await gw.terminal()
    reply = await terminal.request(Punch.of(record))
    assert [r.result for r in reply.results] == [ResultCode.OK]
    status = await terminal.upload_photo(8, photo, chunk_size=16_000)
    assert (status.result, status.next_offset) == (ResultCode.OK, len(photo))
    assert await gw.store.get_punch_photo(gw.device.serial, 8) == photo


async def test_wrong_photo_bytes_are_refused_with_hash_mismatch(gw):
    photo = os.urandom(5_000)
    sha = hashlib.sha256(photo).digest()
    client = await gw.raw_authenticated()
    await announce(client, 9, photo)
    client.send(PhotoChunk(9, sha, len(photo), 0, os.urandom(len(photo))))
    status = await client.expect(PhotoStatus, WAIT_S)
    assert (status.result, status.next_offset) == (ResultCode.PHOTO_HASH_MISMATCH, 0)
    client.send(PhotoChunk(9, sha, len(photo), 0, photo))
    assert (await client.expect(PhotoStatus)).result == ResultCode.OK


async def test_a_photo_uploaded_after_its_punch_was_forwarded_reaches_the_province(gw, tmp_path):
    """End to end: the terminal sends the punch, the forwarder sends its record, then the
    terminal uploads the photo (as the protocol orders them); the photo still reaches the
    province, through the forwarder's late-photo sweep."""
    province = ProvinceSimulator(tmp_path / "province", Access("e2e-app", "e2e-secret-123"), Faults(), seed=1)
    host, port = await province.start("127.0.0.1", 0)
    config = ForwarderConfig(url=f"http://{host}:{port}", app_key="e2e-app", app_secret="e2e-secret-123",
                             idle_poll_s=0.05, status_interval_s=0, late_photo_s=0.2)
    stop = asyncio.Event()
    forwarding = asyncio.ensure_future(Forwarder(gw.store, config).run(stop))
    try:
        photo = os.urandom(40_000)
        terminal = await gw.terminal()
        reply = await terminal.request(Punch.of(make_punch(9, 3, time.time_ns() // 1_000_000, photo=photo)))
        assert [r.result for r in reply.results] == [ResultCode.OK]
        await wait_for(lambda: held_records(tmp_path / "province"), what="the record at the province")
        assert report(tmp_path / "province")["photos"] == 0  # the record went without its photo
        status = await terminal.upload_photo(9, photo, chunk_size=16_000)
        assert (status.result, status.next_offset) == (ResultCode.OK, len(photo))
        await wait_for(lambda: report(tmp_path / "province")["photos"] == 1, what="the photo at the province")
    finally:
        stop.set()
        await asyncio.wait_for(forwarding, WAIT_S)
        await province.stop()


async def test_the_gateway_deletes_forwarded_photos_past_their_retention(start_gateway):
    # photo_forwarded_retention_ms: the sweep of partial uploads also deletes the bytes of
    # photos the province confirmed longer ago; a photo not forwarded yet stays.
    gw = await start_gateway(photo_forwarded_retention_ms=1, partial_photo_sweep_s=0.05)
    forwarded, pending = os.urandom(2000), os.urandom(2000)
    shas = [hashlib.sha256(p).digest() for p in (forwarded, pending)]
    for photo, sha in zip((forwarded, pending), shas, strict=True):
        await gw.store.photo_append(gw.device.serial, sha, len(photo), 0, photo)
    await gw.store.mark_photos_forwarded([shas[0]], time.time_ns() // 1_000_000 - 1000)

    async def purged() -> bool:
        return await gw.store.get_photo(shas[0]) is None

    await wait_for(purged, what="the forwarded photo's bytes deleted")
    assert await gw.store.get_photo(shas[1]) == pending
    assert await gw.store.photo_status(gw.device.serial, shas[0]) == len(forwarded)
