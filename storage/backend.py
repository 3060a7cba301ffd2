"""What the SQLite and PostgreSQL stores share: the group-commit front of `store_punches`,
the photo upload flow, faces, the checks of every downlink call and the session-end API
on top of signals. A backend supplies the SQL through the `_`-prefixed hooks.

Rules kept here so both backends keep them identically:
- `store_punches` checks its argument in the caller's task (a bad record raises there and
  never reaches a batch shared with other callers), then joins the group commit.
- Photo bytes go through `PhotoUploads` and the `BlobStore`; the database only records
  that a verified blob exists (table `photos`), which is what links it to punches.
- Faces use the same `BlobStore` (content-addressed, so a face is stored once however
  often it is put); the `faces` row is written after the blob, so a row means the bytes
  are stored (SQLite: files under the data dir; PostgreSQL: `photo_blobs`, every node's).
- Every argument of a downlink call is checked here, in the caller's task, before the
  backend opens a transaction: a ValueError names the field and nothing is written.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import hashlib
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from lmg.protocol.regions import covered_codes
from lmg.storage.api import (
    COMMAND_ERROR_CHARS, COMMAND_PAYLOAD_MAX_BYTES, FACE_FORMATS, FACE_MIN_BYTES, MAX_COMMAND_PAGE,
    MAX_PUNCH_PAGE, MAX_ROSTER_PAGE, OPERATOR_COMMAND_TYPES, SECRET_BYTES, SHA256_BYTES, U32_MAX,
    ApiToken, Command, CommandState, Department, Device, MessageType, Project, Punch, PunchIn, PunchListing,
    PunchMonths, PunchOutcome, SessionEnd, SessionEndReason, Signal, SignalKind, Store, Worker, WorkerIn,
    check_api_token_fields, check_limit, check_project_code, check_project_fields, check_region_prefix, check_worker,
    scopes_from_text, scopes_text, wall_clock_ms,
)
from lmg.storage.blobs import BlobStore, FileBlobStore
from lmg.storage.config import StoreConfig
from lmg.storage.errors import StoreClosed
from lmg.storage.group_commit import GroupCommit
from lmg.storage.photos import PhotoUploads
from lmg.storage.roster import WorkerFields, worker_fields


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
        self.photos = PhotoUploads(photos_dir / ".partial", config.photo_max_bytes,
                                   config.photo_partial_ttl_ms)
        self._closed = False
        self._group = GroupCommit(
            self._commit_punches,
            max_records=config.group_commit_max_records,
            max_delay_ms=config.group_commit_max_delay_ms,
            max_queued_records=config.max_queued_records,
            enqueue_wait_ms=config.enqueue_wait_ms,
            max_queue_age_ms=config.max_queue_age_ms or None,
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

    async def _store_photo(self, sha256: bytes, content: bytes) -> None:
        """Store a verified photo's bytes durably, then record it (`_record_photo`)."""
        await self.blobs.put(sha256.hex(), content)
        await self._record_photo(sha256, len(content))

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
                                        self._store_photo)

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

    @abc.abstractmethod
    async def _purgeable_photos(self, forwarded_before_ms: int, limit: int) -> list[bytes]:
        """Hashes of photos forwarded before that time, not purged yet and not a face."""

    @abc.abstractmethod
    async def _mark_photos_purged(self, sha256s: list[bytes], now_ms: int) -> None: ...

    async def adopt_local_photos(self, limit: int = 1000) -> int:
        return 0  # PostgreSQL overrides: its photos moved from files into the database

    async def maintain_punch_months(self, now_ms: int) -> PunchMonths:
        return PunchMonths(0, (), ())  # PostgreSQL overrides: its punches are partitioned by month

    async def purge_forwarded_photos(self, now_ms: int, limit: int = 1000) -> int:
        retention = self.config.photo_forwarded_retention_ms
        if retention == 0 or limit <= 0:
            return 0
        # Bytes first, then the mark: a crash in between leaves rows a later sweep marks.
        purgeable = await self._purgeable_photos(now_ms - retention, limit)
        for sha in purgeable:
            await self.blobs.delete(sha.hex())
        if purgeable:
            await self._mark_photos_purged(purgeable, now_ms)
        return len(purgeable)

    # presence -------------------------------------------------------------------------
    def _seen_since_ms(self) -> int:
        """A device flagged online but not heard since this time is shown offline: its
        node died (or lost the store) without writing it offline."""
        return self.clock_ms() - self.config.presence_stale_ms

    def _live(self, device: Device) -> Device:
        """`device` as read, offline if its online flag is older than presence_stale_ms."""
        if device.online and (device.last_seen_ms is None or device.last_seen_ms < self._seen_since_ms()):
            return dataclasses.replace(device, online=False)
        return device

    # faces --------------------------------------------------------------------------
    @abc.abstractmethod
    async def _face_size(self, sha256: bytes) -> int | None:
        """Size of the stored face with that hash, None if not stored."""

    @abc.abstractmethod
    async def _record_face(self, sha256: bytes, size: int, image_format: str) -> None:
        """Note in the database that the face's blob is stored (idempotent)."""

    async def put_face(self, data: bytes) -> bytes:
        image_format = face_format(data, self.config.face_max_bytes)
        sha256 = hashlib.sha256(data).digest()
        if await self._face_size(sha256) is None:
            await self.blobs.put(sha256.hex(), bytes(data))
            await self._record_face(sha256, len(data), image_format)
        return sha256

    async def get_face(self, sha256: bytes) -> bytes | None:
        check_face_sha(sha256)
        if await self._face_size(sha256) is None:
            return None
        return await self.blobs.get(sha256.hex())

    async def face_size(self, sha256: bytes) -> int | None:
        check_face_sha(sha256)
        return await self._face_size(sha256)

    # signals and the session-end API on top of them ---------------------------------
    @abc.abstractmethod
    async def _signals_after(self, after_id: int, limit: int, kinds: tuple[str, ...]) -> list[Signal]:
        """Signals of these kinds with id > after_id, in id order, at most `limit`."""

    @abc.abstractmethod
    async def _last_signal_id(self, kinds: tuple[str, ...]) -> int: ...

    @abc.abstractmethod
    async def _prune_signals(self, older_than_ms: int, kinds: tuple[str, ...]) -> int: ...

    @abc.abstractmethod
    async def _listen(self, heard: Callable[[int, str], None],
                      on_lost: Callable[[], None] | None) -> Callable[[], Awaitable[None]] | None:
        """Call heard(id, kind) for each signal committed anywhere; see Store.listen_signals."""

    async def signals_after(self, after_id: int, limit: int = 1000) -> list[Signal]:
        check_limit(limit)
        check_int("after_id", after_id)
        return await self._signals_after(after_id, limit, SIGNAL_KINDS)

    async def last_signal_id(self) -> int:
        return await self._last_signal_id(SIGNAL_KINDS)

    async def prune_signals(self, older_than_ms: int) -> int:
        check_int("older_than_ms", older_than_ms)
        return await self._prune_signals(older_than_ms, SIGNAL_KINDS)

    async def listen_signals(
        self, callback: Callable[[int], None], *, on_lost: Callable[[], None] | None = None,
    ) -> Callable[[], Awaitable[None]] | None:
        return await self._listen(lambda signal_id, _kind: callback(signal_id), on_lost)

    async def announce_sessions(self, sessions: Mapping[str, tuple[str, int]]) -> int:
        if not sessions:
            return 0
        detail: dict[str, list] = {}
        for serial, (token, authenticated_ms) in sessions.items():
            if type(serial) is not str or type(token) is not str or not 0 < len(token) <= 64:
                raise ValueError(f"announce_sessions: {serial!r}: need a serial and a session token of 1-64 "
                                 f"characters, got {token!r}")
            check_int("authenticated_ms", authenticated_ms)
            if authenticated_ms < 0:
                raise ValueError(f"announce_sessions: {serial!r}: authenticated_ms {authenticated_ms} is negative")
            detail[serial] = [token, authenticated_ms]
        return await self._signal_takeover(orjson.dumps(detail).decode())

    @abc.abstractmethod
    async def _signal_takeover(self, detail: str) -> int:
        """Write one TAKEOVER signal (and its NOTIFY on PostgreSQL); its id."""

    async def session_ends_after(self, after_id: int, limit: int = 1000) -> list[SessionEnd]:
        check_limit(limit)
        check_int("after_id", after_id)
        return [SessionEnd(s.id, s.subject, SessionEndReason(s.detail), s.created_at_ms)
                for s in await self._signals_after(after_id, limit, _SESSION_END)]

    async def last_session_end_id(self) -> int:
        return await self._last_signal_id(_SESSION_END)

    async def prune_session_ends(self, older_than_ms: int) -> int:
        check_int("older_than_ms", older_than_ms)
        return await self._prune_signals(older_than_ms, _SESSION_END)

    async def listen_session_ends(
        self, callback: Callable[[int], None], *, on_lost: Callable[[], None] | None = None,
    ) -> Callable[[], Awaitable[None]] | None:
        def heard(signal_id: int, kind: str) -> None:
            if kind == SignalKind.SESSION_END:
                callback(signal_id)

        return await self._listen(heard, on_lost)


def _check_sha(sha256: bytes) -> None:
    if type(sha256) is not bytes or len(sha256) != SHA256_BYTES:
        raise ValueError(f"photo sha256 must be {SHA256_BYTES} bytes")


def check_face_sha(sha256: bytes) -> None:
    if type(sha256) is not bytes or len(sha256) != SHA256_BYTES:
        raise ValueError(f"face sha256: must be the {SHA256_BYTES}-byte SHA-256 digest of the face")


def face_format(data: bytes, max_bytes: int) -> str:
    """"jpeg" or "png"; ValueError saying which rule `data` breaks."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"face: pass the photo's bytes, not {type(data).__name__}")
    size = len(data)
    if size < FACE_MIN_BYTES:
        raise ValueError(f"face: {size} bytes is too small for a face photo (at least {FACE_MIN_BYTES})")
    if size > max_bytes:
        raise ValueError(f"face: {size:,} bytes is larger than face_max_bytes ({max_bytes:,}); "
                         f"send a smaller JPEG (640x480 is plenty)")
    head = bytes(data[:8])
    for magic, name in FACE_FORMATS.items():
        if head.startswith(magic):
            return name
    raise ValueError(f"face: not a JPEG or PNG (the file starts {head[:4].hex(' ')}); "
                     f"convert the photo to JPEG")


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
API_TOKEN_COLUMNS = ("name, token_sha256, scopes, region_code, created_at_ms, revoked_at_ms, created_by, "
                     "department")
AUDIT_COLUMNS = "id, at_ms, event, subject, detail, address"
COMMAND_COLUMNS = ("id, device_serial, command_type, payload, state, seq, result_code, "
                   "created_at_ms, sent_at_ms, completed_at_ms, expires_at_ms, attempts, error, "
                   "created_by, reply")
NEW_COMMAND_COLUMNS = "device_serial, command_type, payload, created_at_ms, expires_at_ms, created_by"
SIGNAL_COLUMNS = "id, kind, subject, detail, created_at_ms"
# Project's and Worker's fields, in order.
PROJECT_COLUMNS = ("code, name, region_code, enterprise, enterprise_uscc, start_date, end_date, "
                   "roster_version, created_at_ms, roster_floor")
WORKER_COLUMNS = ("project_code, worker_id, name, card_no, enterprise, team, post, entry_date, "
                  "exit_date, face_sha256, on_roster, version, added_version, face_version, updated_at_ms")
# What an upsert of a worker row changes: everything but its key.
WORKER_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in (c.strip() for c in WORKER_COLUMNS.split(","))
                          if c not in ("project_code", "worker_id"))
SIGNAL_KINDS = tuple(kind.value for kind in SignalKind)
_SESSION_END = (SignalKind.SESSION_END.value,)
PENDING = "('queued', 'sent')"  # the pending command states, for SQL


def new_secret(secret: bytes | None) -> bytes:
    """`secret` checked, or 32 fresh bytes from the OS CSPRNG."""
    if secret is None:
        return secrets.token_bytes(SECRET_BYTES)
    if type(secret) is not bytes or len(secret) != SECRET_BYTES:
        raise ValueError(f"a device secret must be {SECRET_BYTES} bytes")
    return secret


def new_api_token(name: str, token_sha256: bytes, scopes: Iterable[str], region_code: str | None,
                  created_by: str, now_ms: int, department: str | None = None) -> tuple[ApiToken, str]:
    """The token `create_api_token` stores, checked, and its scopes' stored text."""
    parsed = check_api_token_fields(name, token_sha256, region_code, created_by, department)
    text = scopes_text(scopes)
    return ApiToken(name, token_sha256, scopes_from_text(text), region_code, now_ms, None,
                    created_by, parsed), text


def api_token_row(token: ApiToken, scopes_stored: str) -> tuple[Any, ...]:
    """The row of API_TOKEN_COLUMNS that stores a new token."""
    return (token.name, token.token_sha256, scopes_stored, token.region_code, token.created_at_ms,
            token.revoked_at_ms, token.created_by, None if token.department is None else token.department.value)


def api_token(row: Sequence[Any]) -> ApiToken:
    """An ApiToken from a row of API_TOKEN_COLUMNS."""
    return ApiToken(row[0], bytes(row[1]), scopes_from_text(row[2]), row[3], row[4], row[5], row[6],
                    None if row[7] is None else Department(row[7]))


def signal(row: Sequence[Any]) -> Signal:
    """A Signal from a row of SIGNAL_COLUMNS."""
    return Signal(row[0], SignalKind(row[1]), row[2], row[3], row[4])


def as_date(value: date | str | None) -> date | None:
    """A stored date: PostgreSQL gives a date, SQLite the ISO text it was written as."""
    return value if value is None or isinstance(value, date) else date.fromisoformat(value)


def project(row: Sequence[Any]) -> Project:
    """A Project from a row of PROJECT_COLUMNS."""
    return Project(row[0], row[1], row[2], row[3], row[4], as_date(row[5]), as_date(row[6]), row[7],
                   row[8], row[9])


def worker(row: Sequence[Any]) -> Worker:
    """A Worker from a row of WORKER_COLUMNS."""
    entry = as_date(row[7])
    assert entry is not None  # NOT NULL
    return Worker(row[0], row[1], row[2], row[3], row[4], row[5], row[6], entry, as_date(row[8]),
                  None if row[9] is None else bytes(row[9]), bool(row[10]), row[11], row[12], row[13],
                  row[14])


def command(row: Sequence[Any]) -> Command:
    """A Command from a row of COMMAND_COLUMNS."""
    return Command(row[0], row[1], row[2], bytes(row[3]), CommandState(row[4]), row[5], row[6], row[7],
                   row[8], row[9], row[10], row[11], row[12], row[13],
                   None if row[14] is None else bytes(row[14]))


def checked_workers(rows: Sequence[WorkerIn], max_rows: int) -> list[WorkerFields]:
    """The rows of an import, checked (posts as codes), as plain `worker_fields`; ValueError
    naming the worker and the field, or the number of rows, before anything is written."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise ValueError("import_workers takes a sequence of WorkerIn rows")
    if len(rows) > max_rows:
        raise ValueError(f"{len(rows):,} workers in one import; at most roster_import_max_rows "
                         f"({max_rows:,}): split the file")
    checked = [worker_fields(check_worker(row)) for row in rows]
    seen: set[str] = set()
    for fields in checked:
        if fields[0] in seen:
            raise ValueError(f"worker {fields[0]}: listed twice in one import; keep one row")
        seen.add(fields[0])
    return checked


def missing_face(rows: Sequence[WorkerFields], stored: set[bytes]) -> None:
    """Raise ValueError naming the first worker whose face is not in `stored`."""
    for fields in rows:
        face = fields[8]
        if face is not None and face not in stored:
            raise ValueError(f"worker {fields[0]}: face_sha256 {face.hex()} is not a stored face; "
                             f"store the photo with put_face first")


def check_roster_page(project_code: str, limit: int) -> None:
    check_project_code(project_code)
    check_limit(limit, MAX_ROSTER_PAGE)


def project_filters(after_code: str, limit: int, region_prefix: str) -> list[tuple[str, Any]]:
    """The checked conditions of `list_projects` (a prefix of digits holds no LIKE wildcard)."""
    check_limit(limit, MAX_ROSTER_PAGE)
    check_region_prefix(region_prefix)
    if type(after_code) is not str:
        raise ValueError(f"after_code {after_code!r}: must be a project code, \"\" to start")
    return [("code > {}", after_code), ("region_code LIKE {}", f"{region_prefix}%" if region_prefix else None)]


def new_project(code: str, name: str, region_code: str, enterprise: str, enterprise_uscc: str,
                start_date: date | None, end_date: date | None, now_ms: int) -> Project:
    """The project `add_project` / `upsert_project` store, checked."""
    check_project_fields(code, name, region_code, enterprise, enterprise_uscc, start_date, end_date)
    return Project(code, name, region_code, enterprise, enterprise_uscc, start_date, end_date, 0, now_ms)


def same_project(a: Project, b: Project) -> bool:
    """Equal in what an import sets (not the roster or the creation time)."""
    return (a.name, a.region_code, a.enterprise, a.enterprise_uscc, a.start_date, a.end_date) == (
        b.name, b.region_code, b.enterprise, b.enterprise_uscc, b.start_date, b.end_date)


def check_new_command(command_type: int, payload: bytes, expires_at_ms: int | None,
                      created_by: str) -> None:
    """Raise ValueError naming the bad argument of `enqueue_command`."""
    if type(command_type) not in (int, MessageType) or command_type not in OPERATOR_COMMAND_TYPES:
        names = ", ".join(sorted(MessageType(t).name for t in OPERATOR_COMMAND_TYPES))
        raise ValueError(f"command_type {command_type!r}: queue one of {names} (roster messages come "
                         f"from the roster)")
    if type(payload) is not bytes or len(payload) > COMMAND_PAYLOAD_MAX_BYTES:
        raise ValueError(f"payload: must be bytes, at most {COMMAND_PAYLOAD_MAX_BYTES:,}")
    try:
        arguments = orjson.loads(payload)
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise ValueError("payload: must be the UTF-8 JSON of an object (the command's arguments), "
                         f"got {payload[:40]!r}")
    check_int("expires_at_ms", expires_at_ms, optional=True)
    check_created_by(created_by)


def check_created_by(created_by: str) -> None:
    if type(created_by) is not str or len(created_by) > 256:
        raise ValueError(f"created_by {created_by!r}: use a string of at most 256 characters")


def check_completion(command_id: int, result_code: int | None, error: str | None,
                     reply: bytes | None) -> None:
    """Raise ValueError naming the bad argument of `complete_command`."""
    check_int("command_id", command_id)
    if result_code is not None and (type(result_code) is not int or not 0 <= result_code <= 0xFFFF):
        raise ValueError(f"result_code {result_code!r}: the terminal's result code (u16), or None")
    if error is not None and (type(error) is not str or len(error) > COMMAND_ERROR_CHARS):
        raise ValueError(f"error: a string of at most {COMMAND_ERROR_CHARS} characters, or None")
    if reply is not None:
        if type(reply) is not bytes or len(reply) > COMMAND_PAYLOAD_MAX_BYTES:
            raise ValueError(f"reply: bytes of UTF-8 JSON, at most {COMMAND_PAYLOAD_MAX_BYTES:,}, or None")
        try:
            orjson.loads(reply)
        except orjson.JSONDecodeError:
            raise ValueError(f"reply: not UTF-8 JSON ({reply[:40]!r})") from None


def check_seq(seq: int) -> None:
    if type(seq) is not int or not 0 <= seq <= U32_MAX:
        raise ValueError(f"seq {seq!r}: the frame's sequence number, an int in 0..{U32_MAX}")


def command_filters(device_serial: str | None, state: CommandState | None, after_id: int,
                    limit: int) -> list[tuple[str, Any]]:
    """The checked conditions of `list_commands`."""
    check_limit(limit, MAX_COMMAND_PAGE)
    check_int("after_id", after_id)
    if state is not None:
        try:
            state = CommandState(state)
        except ValueError:
            raise ValueError(f"state {state!r}: use one of "
                             f"{', '.join(s.value for s in CommandState)}") from None
    return [("id > {}", after_id), ("device_serial = {}", device_serial),
            ("state = {}", None if state is None else state.value)]


def check_offset(offset: int) -> None:
    if type(offset) is not int or not 0 <= offset <= U32_MAX:
        raise ValueError(f"offset {offset!r}: a byte offset into the face, an int in 0..{U32_MAX}")


def session_end_reason(reason: SessionEndReason | str) -> SessionEndReason:
    try:
        return SessionEndReason(reason)
    except ValueError:
        raise ValueError(f"reason {reason!r}: use one of "
                         f"{', '.join(r.value for r in SessionEndReason)}") from None


def punch_listing(row: Sequence[Any]) -> PunchListing:
    """A PunchListing from a row (id, PUNCH_COLUMNS..., project_code)."""
    return PunchListing(row[0], Punch(*row[1:11]), row[11])


def scope_filter(region_scope: str | None, codes_in: str, column: str = "region_code") -> tuple[str, Any]:
    """A (condition, value) pair for `where` that keeps the rows whose `column` (a region
    code) the node `region_scope` covers: the node and the nodes below it
    (lmg.protocol.regions.covered_codes, never a code prefix: 620171 兰州新区 is not
    兰州市's). The codes go as ONE parameter, a JSON array, read by the dialect's
    `codes_in` (its `{}` is the placeholder), so the statement is the same for any scope.
    None: no condition. UnknownRegion for a node outside the tree."""
    if region_scope is None:
        return (column + " = {}", None)  # a None value: `where` leaves the condition out
    return (f"{column} IN {codes_in}", orjson.dumps(sorted(covered_codes(region_scope))).decode())


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
                   online: bool | None, seen_since_ms: int) -> list[tuple[str, Any]]:
    """The checked conditions of `list_devices`; online means flagged online and heard
    at or after `seen_since_ms` (BackendStore._seen_since_ms)."""
    check_limit(limit)
    conditions: list[tuple[str, Any]] = [("serial > {}", after_serial), ("project_code = {}", project_code),
                  ("region_code = {}", region_code)]
    if online is True:
        conditions += [("online = {}", True), ("last_seen_ms >= {}", seen_since_ms)]
    elif online is False:
        conditions.append(("(NOT online OR last_seen_ms IS NULL OR last_seen_ms < {})", seen_since_ms))
    return conditions
