"""What the SQLite and PostgreSQL stores share: the group-commit front of `store_punches`
and the photo upload flow. A backend supplies the SQL through the `_`-prefixed hooks.

Rules kept here so both backends keep them identically:
- `store_punches` checks its argument in the caller's task (a bad record raises there and
  never reaches a batch shared with other callers), then joins the group commit.
- Photo bytes go through `PhotoUploads` and the `BlobStore`; the database only records
  that a verified blob exists (table `photos`), which is what links it to punches.
"""

from __future__ import annotations

import abc
import asyncio
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from lmg.storage.api import SECRET_BYTES, SHA256_BYTES, PunchIn, PunchOutcome, Store, wall_clock_ms
from lmg.storage.blobs import BlobStore, FileBlobStore
from lmg.storage.config import StoreConfig
from lmg.storage.errors import StoreClosed
from lmg.storage.group_commit import GroupCommit
from lmg.storage.photos import PhotoUploads


class BackendStore(Store):
    """Common part of the concrete stores; not used directly."""

    dialect: str = ""

    def __init__(self, *, data_dir: str | os.PathLike[str], config: StoreConfig,
                 clock_ms: Callable[[], int] = wall_clock_ms, blobs: BlobStore | None = None,
                 batches_in_flight: int = 1) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.clock_ms = clock_ms
        photos_dir = self.data_dir / "photos"
        self.blobs = blobs if blobs is not None else FileBlobStore(photos_dir)
        self.photos = PhotoUploads(self.blobs, photos_dir / ".partial", config.photo_max_bytes,
                                   config.photo_partial_ttl_ms)
        self._closed = False
        self._group = GroupCommit(
            self._commit_punches,
            max_records=config.group_commit_max_records,
            max_delay_ms=config.group_commit_max_delay_ms,
            max_queued_records=config.max_queued_records,
            enqueue_wait_ms=config.enqueue_wait_ms,
            in_flight=batches_in_flight,
            name=f"lmg-{self.dialect}-group-commit",
        )

    # punches ------------------------------------------------------------------------
    async def store_punches(self, records: Sequence[PunchIn]) -> list[PunchOutcome]:
        if self._closed:
            raise StoreClosed("the store is closed; reopen it before storing punches")
        for record in records:
            if type(record) is not PunchIn:
                raise TypeError(f"store_punches takes PunchIn records, got {type(record).__name__}")
        return await self._group.submit(records)

    def submit_punches(self, records: Sequence[PunchIn]) -> asyncio.Future:
        if self._closed:
            return asyncio.ensure_future(self.store_punches(records))  # raises StoreClosed there
        for record in records:
            if type(record) is not PunchIn:
                raise TypeError(f"submit_punches takes PunchIn records, got {type(record).__name__}")
        return self._group.enqueue(records)

    @abc.abstractmethod
    async def _commit_punches(self, records: list[PunchIn]) -> list[PunchOutcome]:
        """Write one group-commit batch in one transaction; one outcome per record."""

    async def _close_group(self) -> None:
        await self._group.close()

    # photos -------------------------------------------------------------------------
    @abc.abstractmethod
    async def _photo_size(self, sha256: bytes) -> int | None:
        """Size of the stored photo with that hash, None if not stored."""

    @abc.abstractmethod
    async def _record_photo(self, sha256: bytes, size: int) -> None:
        """Note in the database that the verified blob is stored (idempotent)."""

    @abc.abstractmethod
    async def _punch_photo_sha(self, device_serial: str, record_no: int) -> bytes | None:
        """The hash of the punch's photo if that photo is stored."""

    async def photo_append(self, device_serial: str, sha256: bytes, total_size: int, offset: int,
                           data: bytes) -> int:
        _check_sha(sha256)
        stored = await self._photo_size(sha256)
        if stored is not None:
            return stored
        return await self.photos.append(device_serial, sha256, total_size, offset, data,
                                        self._record_photo)

    async def photo_status(self, device_serial: str, sha256: bytes) -> int:
        _check_sha(sha256)
        stored = await self._photo_size(sha256)
        if stored is not None:
            return stored
        return await self.photos.partial_size(device_serial, sha256)

    async def get_photo(self, sha256: bytes) -> bytes | None:
        _check_sha(sha256)
        if await self._photo_size(sha256) is None:
            return None
        return await self.blobs.get(sha256.hex())

    async def get_punch_photo(self, device_serial: str, record_no: int) -> bytes | None:
        sha = await self._punch_photo_sha(device_serial, record_no)
        return None if sha is None else await self.blobs.get(sha.hex())

    async def prune_partial_photos(self, now_ms: int) -> int:
        return await self.photos.prune(now_ms)


def _check_sha(sha256: bytes) -> None:
    if type(sha256) is not bytes or len(sha256) != SHA256_BYTES:
        raise ValueError(f"photo sha256 must be {SHA256_BYTES} bytes")


PUNCH_COLUMNS = ("device_serial, record_no, worker_id, punch_time_ms, direction, verify_mode, "
                 "temperature_dc, photo_sha256, photo_size, received_at_ms")
REJECTED_COLUMNS = ("device_serial, record_no, worker_id, punch_time_ms, direction, verify_mode, "
                    "temperature_dc, photo_sha256, photo_size, reject_reason, received_at_ms")
DEVICE_COLUMNS = ("serial, secret, project_code, region_code, enabled, last_seen_ms, online, "
                  "firmware, roster_version, created_at_ms")
COMMAND_COLUMNS = ("id, device_serial, command_type, payload, state, seq, result_code, "
                   "created_at_ms, sent_at_ms, completed_at_ms, expires_at_ms")


def new_secret(secret: bytes | None) -> bytes:
    """`secret` checked, or 32 fresh bytes from the OS CSPRNG."""
    if secret is None:
        return secrets.token_bytes(SECRET_BYTES)
    if type(secret) is not bytes or len(secret) != SECRET_BYTES:
        raise ValueError(f"a device secret must be {SECRET_BYTES} bytes")
    return secret
