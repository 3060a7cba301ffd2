"""Resumable, verified photo uploads; the finished bytes go to the store's `store_photo`.

A device sends a photo in chunks: (sha256, total_size, offset, data). The bytes so far
live in `<photos>/.partial/<device hex>/<sha256 hex>.part` on the local disk, so a
reconnect or a restart of the gateway resumes where the file ends. Rules:

- A chunk must start exactly at the partial's current size, else PhotoOffsetMismatch
  tells the device where to resume. Chunks are not fsynced one by one: after a crash the
  file may be shorter than what was acknowledged, and the device, asking `status` or
  being told the expected offset, simply resends from there.
- total_size is bounded by `photo_max_bytes`.
- When the partial reaches total_size its SHA-256 is checked: a mismatch discards it
  (PhotoHashMismatch); a match calls `store_photo(sha256, content)`, which must store the
  bytes durably and record the photo (linking it to every punch carrying that hash), then
  removes the partial.
- A chunk that is the whole photo (offset 0, total_size bytes: a 30 KB snapshot in one
  32 KiB chunk, the common case) never touches the partial directory: it is checked and
  stored from memory, and a partial left by an earlier attempt is removed.
- Partials are node-local: with several gateway nodes on PostgreSQL, a device that
  reconnects to another node starts that photo again from offset 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from lmg.storage.api import SHA256_BYTES
from lmg.storage.errors import PhotoHashMismatch, PhotoOffsetMismatch, PhotoTooLarge


class PhotoUploads:
    """Partial uploads of one node. Calls for the same (device, photo) run one at a time."""

    def __init__(self, partial_dir: str | os.PathLike[str], max_bytes: int, partial_ttl_ms: int) -> None:
        self.partial_dir = Path(partial_dir)
        self.max_bytes = max_bytes
        self.partial_ttl_ms = partial_ttl_ms
        self._locks: dict[tuple[str, bytes], list] = {}  # key -> [Lock, users]

    def partial_path(self, device_serial: str, sha256: bytes) -> Path:
        # Hex of the serial: serials come from devices and must never name a path.
        return self.partial_dir / device_serial.encode().hex() / (sha256.hex() + ".part")

    async def partial_size(self, device_serial: str, sha256: bytes) -> int:
        _check_sha(sha256)
        return await asyncio.to_thread(_size, self.partial_path(device_serial, sha256))

    async def append(
        self, device_serial: str, sha256: bytes, total_size: int, offset: int, data: bytes,
        store_photo: Callable[[bytes, bytes], Awaitable[None]],
    ) -> int:
        """Write one chunk; return the next offset. See the module rules for errors."""
        _check_sha(sha256)
        if type(total_size) is not int or not 0 < total_size <= self.max_bytes:
            raise PhotoTooLarge(
                f"photo {sha256.hex()}: size {total_size} bytes is outside 1..{self.max_bytes} "
                f"(photo_max_bytes); the device must send a smaller picture"
            )
        if type(offset) is not int or offset < 0 or offset + len(data) > total_size:
            raise PhotoTooLarge(
                f"photo {sha256.hex()}: chunk at offset {offset} of {len(data)} bytes runs "
                f"past the announced size {total_size}"
            )
        if offset == 0 and len(data) == total_size:
            return await self._store_whole(device_serial, sha256, data, store_photo)
        key = (device_serial, sha256)
        holder = self._locks.get(key)
        if holder is None:
            holder = self._locks[key] = [asyncio.Lock(), 0]
        holder[1] += 1  # callers using this lock; the last one out drops it
        try:
            async with holder[0]:
                path = self.partial_path(device_serial, sha256)
                next_offset = await asyncio.to_thread(_append, path, offset, data)
                if next_offset == -1:
                    expected = await asyncio.to_thread(_size, path)
                    raise PhotoOffsetMismatch(sha256.hex(), offset, expected)
                if next_offset < total_size:
                    return next_offset
                if next_offset > total_size:  # a previous upload announced another size
                    await asyncio.to_thread(_unlink, path)
                    raise PhotoOffsetMismatch(sha256.hex(), offset, 0)
                content = await asyncio.to_thread(path.read_bytes)
                actual = hashlib.sha256(content).digest()
                if actual != sha256:
                    await asyncio.to_thread(_unlink, path)
                    raise PhotoHashMismatch(sha256.hex(), actual.hex())
                await store_photo(sha256, content)
                await asyncio.to_thread(_unlink, path)
                return total_size
        finally:
            holder[1] -= 1
            if holder[1] == 0:
                del self._locks[key]

    async def _store_whole(self, device_serial: str, sha256: bytes, data: bytes,
                           store_photo: Callable[[bytes, bytes], Awaitable[None]]) -> int:
        """The whole photo in one chunk: no partial file, no thread hop. Three thread hops
        and a file per photo were most of its cost on the node (issue 17's outage run)."""
        content = bytes(data)
        actual = hashlib.sha256(content).digest()
        if actual != sha256:
            raise PhotoHashMismatch(sha256.hex(), actual.hex())
        await store_photo(sha256, content)
        # An earlier attempt's partial, if any, is now useless; unlinking a missing file is
        # one syscall of a few µs, cheaper inline than a thread hop.
        _unlink(self.partial_path(device_serial, sha256))
        return len(content)

    async def prune(self, now_ms: int) -> int:
        """Delete partials not written for partial_ttl_ms; return how many."""
        return await asyncio.to_thread(self._prune, now_ms)

    def _prune(self, now_ms: int) -> int:
        removed = 0
        cutoff_s = (now_ms - self.partial_ttl_ms) / 1000.0
        if not self.partial_dir.is_dir():
            return 0
        for device_dir in self.partial_dir.iterdir():
            for part in device_dir.glob("*.part"):
                try:
                    if part.stat().st_mtime < cutoff_s:
                        part.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed


def _check_sha(sha256: bytes) -> None:
    if type(sha256) is not bytes or len(sha256) != SHA256_BYTES:
        raise ValueError(f"photo sha256 must be {SHA256_BYTES} bytes")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _append(path: Path, offset: int, data: bytes) -> int:
    """Append at `offset`; -1 if the file does not end there. Returns the new size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        size = out.seek(0, os.SEEK_END)
        if size != offset:
            return -1
        out.write(data)
        return size + len(data)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass

