"""Content-addressed blob storage for punch photos.

`BlobStore` is the whole contract: bytes in and out by SHA-256 hex key, nothing else, so
an S3-compatible object store can implement it with PUT/GET/HEAD/DELETE on the key.
`PostgresBlobStore` (storage/postgres_blobs.py) is the PostgreSQL store's, so that every
node of the database reads every photo. `FileBlobStore`, SQLite's, keeps blobs under
`<data dir>/photos/` as `ab/cd/abcd…` (two fan-out levels keep a directory under ~65 000
entries per 2^32 photos). A blob reported put is on disk: written to a temporary name,
fsynced, renamed, directory fsynced; readers never see half a photo.
"""

from __future__ import annotations

import abc
import asyncio
import os
import re
import tempfile
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{64}$")


def is_key(name: str) -> bool:
    """Whether `name` is a blob key (a file of the store is named by its key)."""
    return bool(_KEY.match(name))


def check_key(key: str) -> str:
    """Return `key` if it is a lowercase SHA-256 hex digest, else raise ValueError."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"blob key {key!r}: expected 64 lowercase hex digits (a SHA-256)")
    return key


class BlobStore(abc.ABC):
    """Bytes keyed by their SHA-256 hex digest. Callers verify the hash before put."""

    @abc.abstractmethod
    async def put(self, key: str, data: bytes) -> None:
        """Store durably; putting an existing key again is a no-op."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove; False if it was not there."""


class FileBlobStore(BlobStore):
    """Blobs as files under `root`, one per key."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key[2:4] / key

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self.path(key), data)

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, self.path(key))

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).exists)

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self._delete, self.path(key))

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fsync_dir(path.parent)

    @staticmethod
    def _get(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    @staticmethod
    def _delete(path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


def fsync_dir(directory: Path) -> None:
    """Make a rename or create inside `directory` survive power loss."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
