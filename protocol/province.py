"""The provincial access interface (docs/province-api.md), as pure functions and tables.

Both ends use this module: the forwarder (client) and `simulators/province.py`
(server), so the two can only disagree with the document, never with each other, and
the document's worked examples are checked against it in tests/protocol/test_province.py.

Rules kept here:

- No I/O, no clock, no randomness of its own: the timestamp, nonce and the 12-byte
  GCM nonces are arguments, so every output is reproducible in a test.
- One table of result codes (`ProvinceCode`) with the HTTP status each travels with;
  the document's table is checked against it.
- Every limit is named here with the reason for its value.
- Resident ID numbers never appear in a request in clear: `WorkerIdCipher` with
  AES-256-GCM under a key derived by HKDF-SHA256 from the app secret, the record id (a
  warning's `warning/<id>`) as associated data (a ciphertext moved to another record
  fails to decrypt); `encode_warning` refuses a warning that quotes the number elsewhere.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from lmg.protocol.warning_codes import Disposition, WarningEventKind, WarningLevel, WarningState

# `cryptography` is imported where keys are made, so `lmg --help` and the config code
# load without it (it costs ~40 ms to import).

API_VERSION = "V1.0"
SIGNATURE_SCHEME = "LMG-HMAC-SHA256"
CIPHER = "AES-256-GCM"

PATH_ATTENDANCE = "/api/v1/attendance/batch"
PATH_DEVICE_STATUS = "/api/v1/devices/status"
PATH_PHOTOS = "/api/v1/photos/"  # + 64 hex characters of the photo's SHA-256
PATH_WARNINGS = "/api/v1/warnings/batch"

HEADER_APP_KEY = "X-Lmg-App-Key"
HEADER_TIMESTAMP = "X-Lmg-Timestamp"
HEADER_NONCE = "X-Lmg-Nonce"
HEADER_SIGNATURE = "X-Lmg-Signature"

# Limits. The province states them; a sender must stay within them (413 otherwise).
MAX_BATCH_RECORDS = 500  # the gateway's own per-frame limit: one device frame fits one batch
MAX_BATCH_BYTES = 1 << 20  # 1 MiB: a 500-record batch is ~190 KiB, so bytes bind only on odd data
MAX_DEVICE_STATUS = 1000  # devices per status request: 10,000 terminals in 10 requests
MAX_PHOTO_BYTES = 2 << 20  # 2 MiB, the gateway's photo_max_bytes: any photo it kept fits
# Warnings per request: a warning with its whole history is 1-4 KB (5-20 events of
# ~200 bytes), so 100 are well under MAX_BATCH_BYTES, and the 12,000 warnings the
# monthly rules may open on the 1st (20,000 projects x 6 posts, 10% short) go in 120 requests.
MAX_WARNING_BATCH = 100
# Replay window: a request's timestamp may differ from the province's clock by at most
# this much either way. 300 s absorbs NTP-less gateway clocks (minutes of drift seen in
# the field are corrected by NTP long before) while a captured request goes stale fast.
REPLAY_WINDOW_MS = 300_000
NONCE_CHARS = (16, 64)  # 16-64 characters [0-9A-Za-z_-]; 32 hex characters (128 bits) is typical

# HKDF parameters for the resident-ID key; changing them is a new API version.
HKDF_SALT = b"LMG-PROVINCE-V1"
HKDF_INFO_PREFIX = b"worker-id/AES-256-GCM/"  # followed by the app key
GCM_NONCE_BYTES = 12  # NIST SP 800-38D: 96-bit nonces, fresh and random per value
GCM_TAG_BYTES = 16

_NONCE_RE = re.compile(r"[0-9A-Za-z_-]{%d,%d}" % NONCE_CHARS)
_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")


class ProvinceCode(enum.IntEnum):
    """Result codes: request-level ones in the response's `code`, record-level in `results`."""

    OK = 0
    DUPLICATE = 1  # record level: this record id is already held; not stored again
    BAD_SIGNATURE = 1001
    STALE_TIMESTAMP = 1002
    REPLAYED_NONCE = 1003
    UNKNOWN_APP_KEY = 1004
    NO_PERMISSION = 1101
    ADDRESS_NOT_ALLOWED = 1102
    RATE_LIMITED = 1201
    MALFORMED_REQUEST = 1301
    TOO_LARGE = 1302
    PHOTO_HASH_MISMATCH = 1303
    INVALID_RECORD = 2001  # record level: a field is missing or out of range
    INVALID_WORKER_ID = 2002  # record level: the ID number's check digit is wrong
    UNDECRYPTABLE_WORKER_ID = 2003  # record level: worker_id_enc does not decrypt for this record
    PUNCH_TIME_OUT_OF_RANGE = 2004  # record level: punch time more than 90 days old or 1 day ahead
    INTERNAL_ERROR = 5000
    UNAVAILABLE = 5003


# HTTP status a request-level code travels with (record-level codes ride in a 200).
HTTP_STATUS = {
    ProvinceCode.OK: 200,
    ProvinceCode.BAD_SIGNATURE: 401,
    ProvinceCode.STALE_TIMESTAMP: 401,
    ProvinceCode.REPLAYED_NONCE: 401,
    ProvinceCode.UNKNOWN_APP_KEY: 401,
    ProvinceCode.NO_PERMISSION: 403,
    ProvinceCode.ADDRESS_NOT_ALLOWED: 403,
    ProvinceCode.RATE_LIMITED: 429,
    ProvinceCode.MALFORMED_REQUEST: 400,
    ProvinceCode.TOO_LARGE: 413,
    ProvinceCode.PHOTO_HASH_MISMATCH: 400,
    ProvinceCode.INTERNAL_ERROR: 500,
    ProvinceCode.UNAVAILABLE: 503,
}

RECORD_STORED = "stored"
RECORD_DUPLICATE = "duplicate"
RECORD_INVALID = "invalid"


def is_record_rejection(code: int) -> bool:
    """True for the 2xxx codes: the record itself is wrong and resending cannot help."""
    return 2000 <= code < 3000


# ------------------------------------------------------------------------------ signing


def body_sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_string(method: str, target: str, app_key: str, timestamp_ms: int, nonce: str,
                     body: bytes) -> str:
    """The text that is signed: seven lines joined by LF, no trailing LF.

    `target` is the request path with its query string exactly as sent (this API uses
    none). `timestamp_ms` is Unix ms as decimal digits.
    """
    return "\n".join((SIGNATURE_SCHEME, method.upper(), target, app_key, str(int(timestamp_ms)), nonce,
                      body_sha256_hex(body)))


def sign(app_secret: str, method: str, target: str, app_key: str, timestamp_ms: int, nonce: str,
         body: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of the canonical string, keyed with the secret's UTF-8 bytes."""
    text = canonical_string(method, target, app_key, timestamp_ms, nonce, body)
    return hmac.new(app_secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_headers(app_key: str, app_secret: str, method: str, target: str, body: bytes, *,
                   timestamp_ms: int, nonce: str) -> dict[str, str]:
    """The four authentication headers of one request."""
    return {
        HEADER_APP_KEY: app_key,
        HEADER_TIMESTAMP: str(int(timestamp_ms)),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(app_secret, method, target, app_key, timestamp_ms, nonce, body),
    }


@dataclass(frozen=True, slots=True)
class RequestAuth:
    """The authentication headers of a received request, parsed (not yet verified)."""

    app_key: str
    timestamp_ms: int
    nonce: str
    signature: str


class ProvinceError(Exception):
    """A request-level refusal: `code` and the message the province answers with."""

    def __init__(self, code: ProvinceCode, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def parse_auth_headers(headers: Mapping[str, str]) -> RequestAuth:
    """Read the four headers (any case-insensitive mapping). Raises ProvinceError."""
    values = {name: headers.get(name, "") for name in (HEADER_APP_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ProvinceError(ProvinceCode.BAD_SIGNATURE, f"missing header(s): {', '.join(missing)}")
    timestamp = values[HEADER_TIMESTAMP]
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 16:
        raise ProvinceError(ProvinceCode.BAD_SIGNATURE, f"{HEADER_TIMESTAMP} must be Unix milliseconds")
    if not _NONCE_RE.fullmatch(values[HEADER_NONCE]):
        raise ProvinceError(ProvinceCode.BAD_SIGNATURE,
                            f"{HEADER_NONCE} must be {NONCE_CHARS[0]}-{NONCE_CHARS[1]} characters of [0-9A-Za-z_-]")
    return RequestAuth(values[HEADER_APP_KEY], int(timestamp), values[HEADER_NONCE], values[HEADER_SIGNATURE].lower())


def verify_request(auth: RequestAuth, app_secret: str, method: str, target: str, body: bytes, now_ms: int) -> None:
    """Check the signature, then the replay window. Raises ProvinceError.

    The nonce's uniqueness is the caller's to check (it needs memory of the window);
    do it after this, so unsigned garbage cannot fill that memory.
    """
    expected = sign(app_secret, method, target, auth.app_key, auth.timestamp_ms, auth.nonce, body)
    if not hmac.compare_digest(expected, auth.signature):
        raise ProvinceError(ProvinceCode.BAD_SIGNATURE, "signature does not match the canonical string")
    if abs(now_ms - auth.timestamp_ms) > REPLAY_WINDOW_MS:
        raise ProvinceError(
            ProvinceCode.STALE_TIMESTAMP,
            f"timestamp is {(auth.timestamp_ms - now_ms) / 1000:+.0f} s from the province's clock; "
            f"the window is ±{REPLAY_WINDOW_MS // 1000} s (synchronise the sender's clock)",
        )


# ----------------------------------------------------------------- resident ID encryption


def derive_id_key(app_secret: str, app_key: str) -> bytes:
    """The 32-byte AES key for resident ID numbers: HKDF-SHA256(secret, salt, info + app key)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT,
                info=HKDF_INFO_PREFIX + app_key.encode("utf-8")).derive(app_secret.encode("utf-8"))


class WorkerIdCipher:
    """AES-256-GCM over resident ID numbers, bound to the record id as associated data."""

    __slots__ = ("_aead", "_invalid_tag")

    def __init__(self, key: bytes):
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._invalid_tag = InvalidTag

    @classmethod
    def for_app(cls, app_secret: str, app_key: str) -> WorkerIdCipher:
        return cls(derive_id_key(app_secret, app_key))

    def encrypt(self, worker_id: str, record_id: str, nonce: bytes) -> str:
        """base64(nonce || ciphertext || tag). `nonce`: 12 fresh random bytes per call."""
        if len(nonce) != GCM_NONCE_BYTES:
            raise ValueError(f"GCM nonce must be {GCM_NONCE_BYTES} bytes, got {len(nonce)}")
        sealed = self._aead.encrypt(nonce, worker_id.encode("ascii"), record_id.encode("utf-8"))
        return base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str, record_id: str) -> str:
        """The ID number, or ValueError if the token is malformed, tampered or for another record."""
        try:
            raw = base64.b64decode(token, validate=True)
        except (ValueError, TypeError):
            raise ValueError("worker_id_enc is not base64") from None
        if len(raw) < GCM_NONCE_BYTES + GCM_TAG_BYTES:
            raise ValueError("worker_id_enc is too short to hold a nonce and a tag")
        try:
            clear = self._aead.decrypt(raw[:GCM_NONCE_BYTES], raw[GCM_NONCE_BYTES:], record_id.encode("utf-8"))
        except self._invalid_tag:
            raise ValueError("worker_id_enc does not decrypt for this record (wrong key, altered, or moved)") from None
        try:
            return clear.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("worker_id_enc decrypts to non-ASCII text") from None


# ------------------------------------------------------------------------------- records


class StoredPunch(Protocol):
    """What `attendance_record` reads of a punch: a `lmg.storage.Punch` (not imported,
    since protocol/ sits below storage; tests/protocol/test_purity.py)."""

    @property
    def device_serial(self) -> str: ...
    @property
    def record_no(self) -> int: ...
    @property
    def worker_id(self) -> str: ...
    @property
    def punch_time_ms(self) -> int: ...
    @property
    def direction(self) -> int: ...
    @property
    def verify_mode(self) -> int: ...
    @property
    def temperature_dc(self) -> int: ...
    @property
    def photo_sha256(self) -> bytes | None: ...
    @property
    def photo_size(self) -> int: ...
    @property
    def received_at_ms(self) -> int: ...


class DeviceState(Protocol):
    """What `device_status_body` reads of a device: a `lmg.storage.Device`."""

    @property
    def serial(self) -> str: ...
    @property
    def project_code(self) -> str: ...
    @property
    def region_code(self) -> str: ...
    @property
    def online(self) -> bool: ...
    @property
    def last_seen_ms(self) -> int | None: ...
    @property
    def firmware(self) -> str: ...
    @property
    def roster_version(self) -> int: ...


def record_id(device_serial: str, record_no: int) -> str:
    """The stable identity the province deduplicates on: `<device serial>:<record_no>`.

    It is the gateway's own identity of a punch (unique per (serial, record_no)), so
    every resend of a punch, from any gateway node, after any restart, carries the same
    id. Serials have no ':' ambiguity: the record_no is always the text after the last ':'.
    """
    return f"{device_serial}:{record_no}"


def attendance_record(punch: StoredPunch, project_code: str, cipher: WorkerIdCipher,
                      gcm_nonce: bytes) -> dict[str, Any]:
    """The JSON object for one stored punch (a `lmg.storage.Punch`)."""
    rid = record_id(punch.device_serial, punch.record_no)
    return {
        "record_id": rid,
        "device_serial": punch.device_serial,
        "record_no": punch.record_no,
        "project_code": project_code,
        "worker_id_enc": cipher.encrypt(punch.worker_id, rid, gcm_nonce),
        "punch_time": punch.punch_time_ms,
        "direction": punch.direction,
        "verify_mode": punch.verify_mode,
        "temperature_dc": punch.temperature_dc,
        "photo_sha256": punch.photo_sha256.hex() if punch.photo_sha256 and punch.photo_size else None,
        "photo_size": punch.photo_size,
        "received_at": punch.received_at_ms,
    }


def encode_record(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


# `{"batch_id":"<id>","records":[` + records joined by ',' + `]}`
_BATCH_OVERHEAD = len(b'{"batch_id":"","records":[]}')
BATCH_ID_MAX_CHARS = 64


def batch_body_size(batch_id: str, encoded_records_total: int, count: int) -> int:
    """Bytes of the body `attendance_batch_body` makes from records totalling that many bytes."""
    return _BATCH_OVERHEAD + len(batch_id) + encoded_records_total + max(0, count - 1)


def attendance_batch_body(batch_id: str, encoded_records: list[bytes]) -> bytes:
    """The request body, from records already encoded with `encode_record` (sizes known)."""
    return b"".join((b'{"batch_id":', orjson.dumps(batch_id), b',"records":[', b",".join(encoded_records), b"]}"))


def device_status_body(devices: Iterable[DeviceState]) -> bytes:
    """Body of a status request from `lmg.storage.Device` objects (at most MAX_DEVICE_STATUS)."""
    return orjson.dumps({"devices": [
        {"device_serial": d.serial, "project_code": d.project_code, "region_code": d.region_code,
         "online": bool(d.online), "last_seen": d.last_seen_ms, "firmware": d.firmware,
         "roster_version": d.roster_version}
        for d in devices
    ]})


def photo_target(sha256_hex: str) -> str:
    if not _SHA256_HEX_RE.fullmatch(sha256_hex):
        raise ValueError(f"photo id must be 64 lower-case hex characters, got {sha256_hex!r}")
    return PATH_PHOTOS + sha256_hex


# ------------------------------------------------------------------ reading the answers


@dataclass(frozen=True, slots=True)
class RecordResult:
    record_id: str
    result: str  # RECORD_STORED, RECORD_DUPLICATE or RECORD_INVALID
    code: int
    reason: str

    @property
    def accepted(self) -> bool:
        """The province holds this record (now or before): the gateway may forget it."""
        return self.result in (RECORD_STORED, RECORD_DUPLICATE)


def parse_batch_results(body: bytes) -> dict[str, RecordResult]:
    """The per-record results of a 200 answer, keyed by record id. ValueError if malformed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"answer is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("code") != 0 or not isinstance(data.get("results"), list):
        raise ValueError("answer lacks code 0 and a results list")
    out: dict[str, RecordResult] = {}
    for row in data["results"]:
        if not isinstance(row, dict) or not isinstance(row.get("record_id"), str):
            raise ValueError("a result row lacks its record_id")
        result, code = row.get("result"), row.get("code")
        if result not in (RECORD_STORED, RECORD_DUPLICATE, RECORD_INVALID) or not isinstance(code, int):
            raise ValueError(f"result row for {row['record_id']!r} has result {result!r} / code {code!r}")
        if result == RECORD_INVALID and not is_record_rejection(code):
            raise ValueError(f"result row for {row['record_id']!r}: invalid with non-record code {code}")
        out[row["record_id"]] = RecordResult(row["record_id"], result, code, str(row.get("reason") or ""))
    return out


def parse_error(body: bytes) -> tuple[int | None, str]:
    """(code, message) of a non-200 answer; (None, excerpt) if it is not the documented shape."""
    try:
        data = orjson.loads(body)
        return int(data["code"]), str(data.get("message", ""))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None, body[:200].decode("utf-8", "replace")


def parse_retry_after_ms(value: str | None, now_ms: int) -> int | None:
    """Retry-After as ms from now: delta-seconds (what the province sends) or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0, int(when.timestamp() * 1000) - now_ms)


# ------------------------------------------------------------------------------ warnings
# Warnings of the supervision of key personnel (docs/province-api.md §7). The gateway sends
# a warning's whole current state and its whole history with every version, so the
# province can hold any version alone and a lost or reordered request costs nothing.

# The wire's code tables are the warnings' own (lmg.protocol.warning_codes), as codes.
WARNING_STATES = tuple(state.value for state in WarningState)
WARNING_EVENTS = tuple(kind.value for kind in WarningEventKind)
DISPOSITIONS = tuple(disposition.value for disposition in Disposition)
WARNING_LEVELS = tuple(int(level) for level in WarningLevel)  # county, city, province
RULE_CODE_RE = re.compile(r"[a-z0-9-]{1,64}")  # a new rule needs no new interface version
NOTE_MAX_CHARS = 1024  # a supervisor's note: the store's own bound (lmg.storage.supervision.NOTE_CHARS)
BY_MAX_CHARS = 256  # who made a change: "lmg" or a supervisor's token name (BY_CHARS there)
RESULT_SUPERSEDED_REASON = "a later version is held"


class CalendarDay(Protocol):
    """A `datetime.date` as this module reads it (datetime is not imported: it has a clock)."""

    def isoformat(self) -> str: ...


class StoredWarning(Protocol):
    """What `warning_record` reads of a warning: a `lmg.storage.WarningRecord`."""

    @property
    def id(self) -> int: ...
    @property
    def rule(self) -> str: ...
    @property
    def project_code(self) -> str: ...
    @property
    def region_code(self) -> str: ...
    @property
    def worker_id(self) -> str | None: ...
    @property
    def post(self) -> str | None: ...
    @property
    def period_start(self) -> CalendarDay: ...
    @property
    def period_end(self) -> CalendarDay: ...
    @property
    def figures(self) -> Mapping[str, Any]: ...
    @property
    def level(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def opened_at_ms(self) -> int: ...
    @property
    def level_since_ms(self) -> int: ...
    @property
    def updated_at_ms(self) -> int: ...
    @property
    def resolved_at_ms(self) -> int | None: ...
    @property
    def closed_at_ms(self) -> int | None: ...
    @property
    def disposition(self) -> str | None: ...
    @property
    def note(self) -> str: ...
    @property
    def closed_by(self) -> str: ...
    @property
    def version(self) -> int: ...


class StoredWarningEvent(Protocol):
    """What `warning_record` reads of one history entry: a `lmg.storage.WarningEvent`."""

    @property
    def at_ms(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def level(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def by(self) -> str: ...
    @property
    def detail(self) -> Mapping[str, Any]: ...


def warning_ad(warning_id: int) -> str:
    """The associated data of a warning's `worker_id_enc`: `warning/<id>`. It has no ':', so
    it is never an attendance record id (`<serial>:<record_no>`): a ciphertext moves
    neither between warnings nor between a warning and a punch."""
    return f"warning/{warning_id}"


def warning_record(warning: StoredWarning, events: Sequence[StoredWarningEvent], worker_name: str,
                   cipher: WorkerIdCipher, gcm_nonce: bytes) -> dict[str, Any]:
    """The JSON object for one version of a stored warning.

    `events` is the warning's history, oldest first, as the store returns it; event i is
    what made version i + 1 (one event per change), so only the first `version` are sent:
    events appended after the warning was read belong to a later version, sent on its own.
    ValueError if the history is shorter than the version (the store broke its contract)
    or the region is not in the tree.
    """
    from lmg.protocol.regions import bureau_for

    if len(events) < warning.version:
        raise ValueError(f"warning {warning.id} is at version {warning.version} but has {len(events)} events")
    worker_id_enc = None
    if warning.worker_id is not None:
        worker_id_enc = cipher.encrypt(warning.worker_id, warning_ad(warning.id), gcm_nonce)
    return {
        "warning_id": warning.id,
        "version": warning.version,
        "rule": str(warning.rule),
        "project_code": warning.project_code,
        "region_code": warning.region_code,
        "level": warning.level,
        "bureau_region": bureau_for(warning.region_code, warning.level).code,
        "state": str(warning.state),
        "post": warning.post,
        "worker_id_enc": worker_id_enc,
        "worker_name": worker_name,
        "period_start": warning.period_start.isoformat(),
        "period_end": warning.period_end.isoformat(),
        "figures": dict(warning.figures),
        "opened_at": warning.opened_at_ms,
        "level_since": warning.level_since_ms,
        "updated_at": warning.updated_at_ms,
        "resolved_at": warning.resolved_at_ms,
        "closed_at": warning.closed_at_ms,
        "disposition": None if warning.disposition is None else str(warning.disposition),
        "note": warning.note,
        "closed_by": warning.closed_by,
        "history": [{"version": n, "at": e.at_ms, "event": str(e.kind), "level": e.level, "state": str(e.state),
                     "by": e.by, "detail": dict(e.detail)}
                    for n, e in enumerate(events[:warning.version], start=1)],
    }


def encode_warning(record: dict[str, Any], worker_id: str | None) -> bytes:
    """The record as JSON; ValueError if the resident ID number `worker_id` appears in it in
    clear (a figure or a note that quotes it): it must travel only as `worker_id_enc`."""
    encoded = orjson.dumps(record)
    if worker_id and worker_id.encode("ascii", "replace") in encoded:
        raise ValueError(f"warning {record.get('warning_id')}: its resident ID number appears in clear "
                         "outside worker_id_enc; not sent")
    return encoded


# `{"batch_id":"<id>","warnings":[` + warnings joined by ',' + `]}`
_WARNINGS_OVERHEAD = len(b'{"batch_id":"","warnings":[]}')


def warnings_body_size(batch_id: str, encoded_total: int, count: int) -> int:
    """Bytes of the body `warnings_batch_body` makes from warnings totalling that many bytes."""
    return _WARNINGS_OVERHEAD + len(batch_id) + encoded_total + max(0, count - 1)


def warnings_batch_body(batch_id: str, encoded_warnings: list[bytes]) -> bytes:
    """The request body, from warnings encoded with `encode_warning`."""
    return b"".join((b'{"batch_id":', orjson.dumps(batch_id), b',"warnings":[', b",".join(encoded_warnings), b"]}"))


@dataclass(frozen=True, slots=True)
class WarningResult:
    warning_id: int
    version: int
    result: str  # RECORD_STORED, RECORD_DUPLICATE or RECORD_INVALID
    code: int
    reason: str

    @property
    def accepted(self) -> bool:
        """The province holds this version or a later one: the sender may forget it."""
        return self.result in (RECORD_STORED, RECORD_DUPLICATE)


def parse_warning_results(body: bytes) -> dict[tuple[int, int], WarningResult]:
    """The per-warning results of a 200 answer, keyed by (warning id, version). ValueError if malformed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"answer is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("code") != 0 or not isinstance(data.get("results"), list):
        raise ValueError("answer lacks code 0 and a results list")
    out: dict[tuple[int, int], WarningResult] = {}
    for row in data["results"]:
        if not isinstance(row, dict) or type(row.get("warning_id")) is not int or type(row.get("version")) is not int:
            raise ValueError("a result row lacks its warning_id and version")
        key = (row["warning_id"], row["version"])
        result, code = row.get("result"), row.get("code")
        if result not in (RECORD_STORED, RECORD_DUPLICATE, RECORD_INVALID) or not isinstance(code, int):
            raise ValueError(f"result row for warning {key} has result {result!r} / code {code!r}")
        if result == RECORD_INVALID and not is_record_rejection(code):
            raise ValueError(f"result row for warning {key}: invalid with non-record code {code}")
        out[key] = WarningResult(key[0], key[1], result, code, str(row.get("reason") or ""))
    return out
