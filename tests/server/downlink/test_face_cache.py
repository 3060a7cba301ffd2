"""The face cache of the downlink glue: one store read per face however many terminals want it."""

from __future__ import annotations

import asyncio

import pytest

from lmg.server.downlink.service import FaceCache


class Reads:
    def __init__(self, faces: dict[bytes, bytes]):
        self.faces = faces
        self.calls: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, sha: bytes) -> bytes | None:
        self.calls.append(sha)
        await self.gate.wait()
        return self.faces.get(sha)


async def test_concurrent_reads_of_a_face_share_one_store_read():
    reads = Reads({b"a": b"A" * 10})
    cache = FaceCache(reads, 100)
    reads.gate.clear()
    waiting = [asyncio.ensure_future(cache.get(b"a")) for _ in range(20)]
    await asyncio.sleep(0)
    reads.gate.set()
    assert await asyncio.gather(*waiting) == [b"A" * 10] * 20
    assert reads.calls == [b"a"]
    assert await cache.get(b"a") == b"A" * 10 and reads.calls == [b"a"]  # and later from memory
    assert (cache.hits, cache.misses) == (1, 1)


async def test_least_recently_used_faces_go_first_past_the_byte_bound():
    reads = Reads({b"a": b"A" * 40, b"b": b"B" * 40, b"c": b"C" * 40})
    cache = FaceCache(reads, 100)
    await cache.get(b"a")
    await cache.get(b"b")
    await cache.get(b"a")  # a is now the most recent
    await cache.get(b"c")  # 120 bytes: b goes
    assert cache.bytes == 80
    await cache.get(b"a")
    await cache.get(b"b")
    assert reads.calls == [b"a", b"b", b"c", b"b"]


async def test_a_missing_face_and_a_failed_read_are_not_cached():
    reads = Reads({})
    cache = FaceCache(reads, 100)
    assert await cache.get(b"x") is None
    assert await cache.get(b"x") is None
    assert reads.calls == [b"x", b"x"]

    async def broken(sha: bytes) -> bytes | None:
        raise OSError("disk")

    failing = FaceCache(broken, 100)
    with pytest.raises(OSError):
        await failing.get(b"x")
    assert failing.bytes == 0


async def test_a_cache_of_0_bytes_reads_every_time():
    reads = Reads({b"a": b"A"})
    cache = FaceCache(reads, 0)
    await cache.get(b"a")
    await cache.get(b"a")
    assert reads.calls == [b"a", b"a"] and cache.bytes == 0
