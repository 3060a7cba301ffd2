"""Photo uploads: resumable, verified, content-addressed, linked to punches (both backends)."""

from __future__ import annotations

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
