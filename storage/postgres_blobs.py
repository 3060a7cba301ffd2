"""Photo and face bytes in PostgreSQL, readable by every gateway node of the database.

`PostgresBlobStore` keeps each blob as one row of `photo_blobs` (sha256 bytea primary
key, data bytea; migration 0007 says why bytea rather than large objects). A put is one
autocommitted INSERT: when it returns, the bytes are committed (the server's fsync), the
same promise `FileBlobStore` gives with its temp file, fsync and rename.

Files a node wrote under `<data dir>/photos/` before version 7 are not moved: `get` and
`exists` look in the table first and then in that node's own directory (`fallback`), so
the node that holds such a file still reads it, and its forwarder sends it; `delete`
removes both. Another node cannot read those files: their photos stay pending at the
province until the node holding them forwards them (the forwarder never marks a photo
it could not read). `adopt_files` moves them into the table, a batch at a time (the
gateway calls it from its photo sweep), after which every node reads them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from lmg.storage.blobs import BlobStore, FileBlobStore, check_key, is_key

log = logging.getLogger("lmg.storage")


class PostgresBlobStore(BlobStore):
    """Blobs as rows of `photo_blobs`, through the store's pooled connections.

    `connection` is the store's `_connection` (an async context manager giving a pooled
    asyncpg connection whose search_path is the store's schema; faults come out as
    StoreUnavailable). `fallback`, if given, is read after the table (see the module)."""

    def __init__(self, connection: Callable[[], AbstractAsyncContextManager[Any]],
                 fallback: FileBlobStore | None = None) -> None:
        self._connection = connection
        self.fallback = fallback

    async def put(self, key: str, data: bytes) -> None:
        digest = bytes.fromhex(check_key(key))
        async with self._connection() as conn:
            await conn.execute("INSERT INTO photo_blobs (sha256, data) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                               digest, bytes(data))

    async def get(self, key: str) -> bytes | None:
        digest = bytes.fromhex(check_key(key))
        async with self._connection() as conn:
            data = await conn.fetchval("SELECT data FROM photo_blobs WHERE sha256 = $1", digest)
        if data is not None:
            return bytes(data)
        return None if self.fallback is None else await self.fallback.get(key)

    async def exists(self, key: str) -> bool:
        digest = bytes.fromhex(check_key(key))
        async with self._connection() as conn:
            found = await conn.fetchval("SELECT true FROM photo_blobs WHERE sha256 = $1", digest)
        if found:
            return True
        return self.fallback is not None and await self.fallback.exists(key)

    async def delete(self, key: str) -> bool:
        digest = bytes.fromhex(check_key(key))
        async with self._connection() as conn:
            status = await conn.execute("DELETE FROM photo_blobs WHERE sha256 = $1", digest)
        deleted = status.split()[-1] != "0"
        if self.fallback is not None:
            deleted = await self.fallback.delete(key) or deleted
        return deleted

    async def adopt_files(self, limit: int) -> int:
        """Move up to `limit` blob files of `fallback` into the table: each is checked
        against its name (a file whose bytes do not hash to it is renamed `<key>.damaged`,
        logged and left), inserted, and deleted once the insert committed. Returns how many
        were moved; 0 when none is left (or there is no fallback)."""
        if self.fallback is None or limit <= 0:
            return 0
        moved = 0
        for path in await asyncio.to_thread(_blob_files, self.fallback.root, limit):
            data = await asyncio.to_thread(_read, path)
            if data is None:
                continue  # deleted meanwhile (a purge)
            if hashlib.sha256(data).hexdigest() != path.name:
                log.error("photo file %s does not hash to its name: left as %s.damaged", path, path.name)
                await asyncio.to_thread(os.replace, path, path.with_name(path.name + ".damaged"))
                continue
            await self.put(path.name, data)
            await asyncio.to_thread(_unlink, path)
            moved += 1
        return moved


def _blob_files(root: Path, limit: int) -> list[Path]:
    """Up to `limit` files `root/ab/cd/<64 hex>` (the partial uploads' folder is not one)."""
    found: list[Path] = []
    for path in root.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*"):
        if is_key(path.name):
            found.append(path)
            if len(found) >= limit:
                break
    return found


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
