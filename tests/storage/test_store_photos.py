"""Photo uploads: resumable, verified, content-addressed, linked to punches (both backends)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from lmg.storage import PhotoHashMismatch, PhotoOffsetMismatch, PhotoTooLarge, PunchIn, StoreConfig

T0 = 1_700_000_000_000


def punch_with_photo(record_no: int, photo: bytes) -> PunchIn:
    return PunchIn("CAM1", record_no, "620102199001011234", T0, 1, 1, 365,
                   hashlib.sha256(photo).digest(), len(photo))


async def test_chunked_upload_resumes_after_restart_and_links_punches(backend):
    photo = os.urandom(10_000)
    sha = hashlib.sha256(photo).digest()
    store = await backend.open()
    await store.store_punches([punch_with_photo(1, photo), punch_with_photo(2, photo)])
    assert await store.get_punch_photo("CAM1", 1) is None  # not uploaded yet
    assert await store.photo_append("CAM1", sha, len(photo), 0, photo[:4000]) == 4000
    await store.close()

    store = await backend.open()  # the gateway restarted; the device reconnects
    assert await store.photo_status("CAM1", sha) == 4000
    with pytest.raises(PhotoOffsetMismatch) as refused:
        await store.photo_append("CAM1", sha, len(photo), 8000, photo[8000:])
    assert refused.value.expected_offset == 4000
    assert await store.photo_append("CAM1", sha, len(photo), 4000, photo[4000:9000]) == 9000
    assert await store.photo_append("CAM1", sha, len(photo), 9000, photo[9000:]) == len(photo)
    assert await store.get_photo(sha) == photo
    assert await store.get_punch_photo("CAM1", 1) == photo
    assert await store.get_punch_photo("CAM1", 2) == photo
    # content-addressed: another device with the same bytes is done at once
    assert await store.photo_status("CAM2", sha) == len(photo)
    assert await store.photo_append("CAM2", sha, len(photo), 0, photo[:10]) == len(photo)
    assert not list((backend.data_dir / "photos" / ".partial").rglob("*.part"))


async def test_hash_mismatch_discards_the_partial(store):
    photo = os.urandom(3000)
    claimed = hashlib.sha256(b"something else").digest()
    assert await store.photo_append("CAM1", claimed, 3000, 0, photo[:1000]) == 1000
    with pytest.raises(PhotoHashMismatch, match="upload the photo again from offset 0"):
        await store.photo_append("CAM1", claimed, 3000, 1000, photo[1000:])
    assert await store.photo_status("CAM1", claimed) == 0
    assert await store.get_photo(claimed) is None


async def test_a_whole_photo_in_one_chunk_skips_the_partial_and_replaces_an_old_attempt(backend):
    photo = os.urandom(30_720)
    sha = hashlib.sha256(photo).digest()
    store = await backend.open()
    await store.store_punches([punch_with_photo(1, photo)])
    partials = backend.data_dir / "photos" / ".partial"
    assert await store.photo_append("CAM1", sha, len(photo), 0, photo[:16_384]) == 16_384  # an attempt cut off
    assert len(list(partials.rglob("*.part"))) == 1
    # the terminal starts again with the whole photo in one chunk: stored, the old partial gone
    assert await store.photo_append("CAM1", sha, len(photo), 0, photo) == len(photo)
    assert await store.get_punch_photo("CAM1", 1) == photo
    assert await store.photo_status("CAM1", sha) == len(photo)
    assert not list(partials.rglob("*.part"))
    # and a whole chunk whose bytes are not the announced hash is refused, nothing kept
    other = os.urandom(2000)
    claimed = hashlib.sha256(b"what the punch announced").digest()
    with pytest.raises(PhotoHashMismatch):
        await store.photo_append("CAM1", claimed, len(other), 0, other)
    assert await store.photo_status("CAM1", claimed) == 0
    assert await store.get_photo(claimed) is None
    assert not list(partials.rglob("*.part"))


async def test_size_limit_is_enforced(backend):
    store = await backend.open(config=StoreConfig(photo_max_bytes=1000))
    sha = hashlib.sha256(b"x").digest()
    with pytest.raises(PhotoTooLarge, match="photo_max_bytes"):
        await store.photo_append("CAM1", sha, 1001, 0, b"x")
    with pytest.raises(PhotoTooLarge, match="runs past"):
        await store.photo_append("CAM1", sha, 10, 5, b"123456")


async def test_abandoned_partials_are_pruned(store):
    sha = hashlib.sha256(b"abc").digest()
    await store.photo_append("CAM1", sha, 3, 0, b"a")
    assert await store.prune_partial_photos(store.clock_ms()) == 0
    assert await store.prune_partial_photos(store.clock_ms() + store.config.photo_partial_ttl_ms + 1000) == 1
    assert await store.photo_status("CAM1", sha) == 0


async def test_stored_photos_wait_for_the_province_until_marked_forwarded(store):
    """The forwarder's late-photo sweep reads this list: complete photos the province has
    not confirmed, stored before a time, at most `limit`; a partial upload is not listed."""
    first, second, partial = os.urandom(100), os.urandom(200), os.urandom(300)
    a, b, c = (hashlib.sha256(p).digest() for p in (first, second, partial))
    await store.photo_append("CAM1", a, len(first), 0, first)
    await store.photo_append("CAM1", b, len(second), 0, second)
    await store.photo_append("CAM1", c, len(partial), 0, partial[:10])
    later = 2**62
    assert set(await store.unforwarded_photos(later, 10)) == {a, b}
    assert len(await store.unforwarded_photos(later, 1)) == 1
    assert await store.unforwarded_photos(0, 10) == []  # none stored before the epoch
    assert await store.mark_photos_forwarded([a], T0) == 1
    assert await store.mark_photos_forwarded([a], T0 + 1) == 0  # already marked: the first time is kept
    assert await store.mark_photos_forwarded([], T0) == 0
    assert await store.unforwarded_photos(later, 10) == [b]


async def test_forwarded_photos_lose_their_bytes_after_the_retention_and_nothing_else_does(backend):
    retention = 10_000
    store = await backend.open(config=StoreConfig(photo_forwarded_retention_ms=retention))
    forwarded, pending = os.urandom(1000), os.urandom(1000)
    face = b"\xff\xd8\xff\xe0" + os.urandom(3000) + b"\xff\xd9"  # a JPEG's frame: also a roster face
    shas = [hashlib.sha256(p).digest() for p in (forwarded, pending, face)]
    for photo, sha in zip((forwarded, pending, face), shas, strict=True):
        await store.photo_append("CAM1", sha, len(photo), 0, photo)
    assert await store.put_face(face) == shas[2]
    await store.store_punches([punch_with_photo(1, forwarded)])
    await store.mark_photos_forwarded([shas[0], shas[2]], T0)

    assert await store.purge_forwarded_photos(T0 + retention) == 0  # not longer ago than the retention
    assert await store.purge_forwarded_photos(T0 + retention + 1) == 1
    assert await store.get_photo(shas[0]) is None and await store.get_punch_photo("CAM1", 1) is None
    assert await store.photo_status("CAM2", shas[0]) == len(forwarded)  # stored and sent: not asked again
    assert await store.get_photo(shas[1]) == pending  # never forwarded: kept whatever its age
    assert await store.get_face(shas[2]) == face  # the roster still needs these bytes
    assert await store.purge_forwarded_photos(2**62) == 0  # each photo once
    if backend.name == "sqlite":
        assert not store.blobs.path(shas[0].hex()).exists()


async def test_a_retention_of_zero_keeps_forwarded_photos_for_ever(backend):
    store = await backend.open(config=StoreConfig(photo_forwarded_retention_ms=0))
    photo = os.urandom(500)
    sha = hashlib.sha256(photo).digest()
    await store.photo_append("CAM1", sha, len(photo), 0, photo)
    await store.mark_photos_forwarded([sha], T0)
    assert await store.purge_forwarded_photos(2**62) == 0 and await store.get_photo(sha) == photo
    with pytest.raises(ValueError, match="photo_forwarded_retention_ms"):
        StoreConfig(photo_forwarded_retention_ms=-1)


@pytest.mark.postgres
async def test_postgres_nodes_share_photos_and_faces_and_still_read_their_old_files(pg_urls, tmp_path):
    # Two stores on one database with their own data dirs are two gateway nodes.
    from lmg.storage import open_store

    url = pg_urls()
    node_a = await open_store(url, data_dir=tmp_path / "a")
    node_b = await open_store(url, data_dir=tmp_path / "b")
    try:
        photo = os.urandom(20_000)
        sha = hashlib.sha256(photo).digest()
        await node_a.store_punches([punch_with_photo(1, photo)])
        await node_a.photo_append("CAM1", sha, len(photo), 0, photo[:8000])
        await node_a.photo_append("CAM1", sha, len(photo), 8000, photo[8000:])
        assert await node_b.get_photo(sha) == photo and await node_b.get_punch_photo("CAM1", 1) == photo
        assert await node_b.photo_status("CAM1", sha) == len(photo)
        assert not [p for p in (tmp_path / "a" / "photos").rglob("*") if p.is_file()]  # nothing node-local
        face = b"\xff\xd8\xff\xe0" + os.urandom(2000) + b"\xff\xd9"
        assert await node_b.get_face(await node_a.put_face(face)) == face

        old = os.urandom(700)  # a photo node A stored as a file before version 7
        old_sha = hashlib.sha256(old).digest()
        await node_a.blobs.fallback.put(old_sha.hex(), old)
        await node_a._record_photo(old_sha, len(old))
        assert await node_a.get_photo(old_sha) == old  # the table first, then its own files
        assert await node_b.get_photo(old_sha) is None  # not visible elsewhere: the forwarder leaves it pending
        assert await node_a.blobs.delete(old_sha.hex()) and not await node_a.blobs.exists(old_sha.hex())

        # moving such files into the table: every node reads them after; a damaged one stays
        olds = [os.urandom(300) for _ in range(3)]
        for photo in olds:
            await node_a.blobs.fallback.put(hashlib.sha256(photo).hexdigest(), photo)
        damaged = hashlib.sha256(b"was something else").hexdigest()
        await node_a.blobs.fallback.put(damaged, b"bit rot")
        moved = [await node_a.adopt_local_photos(limit=2) for _ in range(3)]
        assert sum(moved) == 3 and moved[-1] == 0 and max(moved) <= 2  # batches of at most 2, then none
        for photo in olds:
            assert await node_b.blobs.get(hashlib.sha256(photo).hexdigest()) == photo
        files = sorted(p.name for p in (tmp_path / "a" / "photos").rglob("*") if p.is_file())
        assert files == [damaged + ".damaged"]
        assert await node_b.adopt_local_photos() == 0  # nothing of its own to move
    finally:
        await node_a.close()
        await node_b.close()


@pytest.mark.postgres
async def test_postgres_stores_photos_verified_together_in_one_transaction(pg_urls, tmp_path):
    """Verified photos share a transaction (one WAL flush); a hash twice in a batch, or one
    already stored, is stored once."""
    from lmg.storage import open_store

    store = await open_store(pg_urls(), data_dir=tmp_path)
    try:
        photos = [os.urandom(30_720) for _ in range(5)]
        shas = [hashlib.sha256(p).digest() for p in photos]
        await store.store_punches([punch_with_photo(n, p) for n, p in enumerate(photos, 1)])
        assert await store.photo_append("CAM1", shas[0], len(photos[0]), 0, photos[0]) == len(photos[0])
        batches: list[int] = []
        store._photo_group.observer = lambda size, seconds: batches.append(size)
        outcomes = await asyncio.gather(*(store.photo_append("CAM1", sha, len(p), 0, p)
                                          for sha, p in [*zip(shas, photos), (shas[1], photos[1])]))
        assert outcomes == [len(p) for p in [*photos, photos[1]]]
        assert sum(batches) <= 6 and len(batches) >= 1
        for n, (sha, photo) in enumerate(zip(shas, photos), 1):
            assert await store.get_punch_photo("CAM1", n) == photo
            assert await store.photo_status("CAM2", sha) == len(photo)
        assert len(await store.unforwarded_photos(2**62, 100)) == 5
    finally:
        await store.close()
