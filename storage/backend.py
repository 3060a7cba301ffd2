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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from lmg.storage.api import (
    MAX_PUNCH_PAGE, SECRET_BYTES, SHA256_BYTES, ApiToken, Punch, PunchIn, PunchListing, PunchOutcome,
    SessionEnd, SessionEndReason, Store, check_api_token_fields, check_limit, scopes_from_text,
    scopes_text, wall_clock_ms,
)
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
# Device's fields in order. NEW_DEVICE_COLUMNS are those add_device writes (last_address
# is NULL until the device's first session).
NEW_DEVICE_COLUMNS = ("serial, secret, project_code, region_code, enabled, last_seen_ms, online, "
                      "firmware, roster_version, created_at_ms")
DEVICE_COLUMNS = NEW_DEVICE_COLUMNS + ", last_address"
# list_punches: the punch's id, its fields, its device's project ("" if not provisioned).
PUNCH_LISTING_SELECT = (
    "SELECT p.id, " + ", ".join(f"p.{column.strip()}" for column in PUNCH_COLUMNS.split(","))
    + ", coalesce(d.project_code, '') FROM punches p LEFT JOIN devices d ON d.serial = p.device_serial")
API_TOKEN_COLUMNS = "name, token_sha256, scopes, region_code, created_at_ms, revoked_at_ms, created_by"
SESSION_END_COLUMNS = "id, device_serial, reason, created_at_ms"
AUDIT_COLUMNS = "id, at_ms, event, subject, detail, address"
COMMAND_COLUMNS = ("id, device_serial, command_type, payload, state, seq, result_code, "
                   "created_at_ms, sent_at_ms, completed_at_ms, expires_at_ms")


def new_secret(secret: bytes | None) -> bytes:
    """`secret` checked, or 32 fresh bytes from the OS CSPRNG."""
    if secret is None:
        return secrets.token_bytes(SECRET_BYTES)
    if type(secret) is not bytes or len(secret) != SECRET_BYTES:
        raise ValueError(f"a device secret must be {SECRET_BYTES} bytes")
    return secret


def new_api_token(name: str, token_sha256: bytes, scopes: Iterable[str], region_code: str | None,
                  created_by: str, now_ms: int) -> tuple[ApiToken, str]:
    """The token `create_api_token` stores, checked, and its scopes' stored text."""
    check_api_token_fields(name, token_sha256, region_code, created_by)
    text = scopes_text(scopes)
    return ApiToken(name, token_sha256, scopes_from_text(text), region_code, now_ms, None,
                    created_by), text


def api_token(row: Sequence[Any]) -> ApiToken:
    """An ApiToken from a row of API_TOKEN_COLUMNS."""
    return ApiToken(row[0], bytes(row[1]), scopes_from_text(row[2]), row[3], row[4], row[5], row[6])


def session_end(row: Sequence[Any]) -> SessionEnd:
    """A SessionEnd from a row of SESSION_END_COLUMNS."""
    return SessionEnd(row[0], row[1], SessionEndReason(row[2]), row[3])


def session_end_reason(reason: SessionEndReason | str) -> SessionEndReason:
    try:
        return SessionEndReason(reason)
    except ValueError:
        raise ValueError(f"reason {reason!r}: use one of "
                         f"{', '.join(r.value for r in SessionEndReason)}") from None


def punch_listing(row: Sequence[Any]) -> PunchListing:
    """A PunchListing from a row (id, PUNCH_COLUMNS..., project_code)."""
    return PunchListing(row[0], Punch(*row[1:11]), row[11])


def where(conditions: Sequence[tuple[str, Any]], mark: Callable[[int], str]) -> tuple[str, list[Any]]:
    """" WHERE a AND b ..." and its parameters from (condition, value) pairs, leaving out
    those whose value is None. Each condition holds one `{}` where the dialect's
    placeholder for its value goes (`mark(n)` for the n-th parameter, from 1)."""
    parts: list[str] = []
    params: list[Any] = []
    for condition, value in conditions:
        if value is None:
            continue
        params.append(value)
        parts.append(condition.format(mark(len(params))))
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def check_int(name: str, value: int | None, *, optional: bool = False) -> None:
    """Raise ValueError naming `name` unless `value` is an int (or, if optional, None)."""
    if type(value) is int or (optional and value is None):
        return
    what = "Unix ms" if name.endswith("_ms") else "an id: the last one already read, 0 to start"
    raise ValueError(f"{name} {value!r}: must be an int ({what})")


def punch_filters(project_code: str | None, device_serial: str | None, worker_id: str | None,
                  since_ms: int | None, until_ms: int | None, after_id: int,
                  limit: int) -> list[tuple[str, Any]]:
    """The checked conditions of `list_punches` over `punches p JOIN devices d`."""
    check_limit(limit, MAX_PUNCH_PAGE)
    check_int("after_id", after_id)
    check_int("since_ms", since_ms, optional=True)
    check_int("until_ms", until_ms, optional=True)
    return [("p.id > {}", after_id), ("p.device_serial = {}", device_serial),
            ("p.worker_id = {}", worker_id), ("p.punch_time_ms >= {}", since_ms),
            ("p.punch_time_ms < {}", until_ms), ("d.project_code = {}", project_code)]


def audit_filters(limit: int, event: str | None, subject: str | None, since_ms: int | None,
                  until_ms: int | None, before_id: int | None) -> list[tuple[str, Any]]:
    """The checked conditions of `list_audit`."""
    check_limit(limit)
    check_int("before_id", before_id, optional=True)
    check_int("since_ms", since_ms, optional=True)
    check_int("until_ms", until_ms, optional=True)
    return [("id < {}", before_id), ("event = {}", event), ("subject = {}", subject),
            ("at_ms >= {}", since_ms), ("at_ms < {}", until_ms)]


def device_filters(after_serial: str, limit: int, project_code: str | None, region_code: str | None,
                   online: bool | None) -> list[tuple[str, Any]]:
    """The checked conditions of `list_devices`."""
    check_limit(limit)
    return [("serial > {}", after_serial), ("project_code = {}", project_code),
            ("region_code = {}", region_code), ("online = {}", online)]
