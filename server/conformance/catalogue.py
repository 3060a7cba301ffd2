"""The conformance kit's catalogue: every item it grades, and the waits it grades them with.

One source of truth: the item ids, sections and levels below are what `report.json` holds,
what docs/conformance.md lists (a test checks the doc against `CATALOGUE`) and what the
simulated device's misbehaviours name (simulators/firmware.py, `MISBEHAVIOURS`). An id, once
published, never changes meaning: vendors compare reports across firmware versions.

Levels follow the document's words: MUST (a miss is `fail`), SHOULD (a miss is
`non-strict`), INFO (always `informational`: the kit reports what it saw). A device conforms
when no MUST item is `fail` or `not run`.

`KitTimings` holds every wait the kit grades against, with the document's values as
defaults; tests shrink them (a real terminal waits 15 s before resending, a test 0.5 s).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields


class Level(str, enum.Enum):
    MUST = "MUST"
    SHOULD = "SHOULD"
    INFO = "INFO"


class Verdict(str, enum.Enum):
    PASS = "pass"
    NON_STRICT = "non-strict"  # a SHOULD missed
    FAIL = "fail"
    INFORMATIONAL = "informational"
    NOT_RUN = "not run"  # the device never reached the item


@dataclass(frozen=True)
class ItemSpec:
    """One graded item: `id` (stable, dotted), the section of docs/protocol.md it checks,
    its level, and one sentence saying what passes."""

    id: str
    section: str
    level: Level
    checks: str


_M, _S, _I = Level.MUST, Level.SHOULD, Level.INFO

#: Every item, in the order the report lists them (roughly the order a device meets them).
CATALOGUE: tuple[ItemSpec, ...] = (
    ItemSpec("frame.format", "§2", _M, "every frame has the magic, version 1, a right CRC-32, reserved flag bits 0, "
             "and fits the maximum frame size; over WebSocket, one frame per binary message"),
    ItemSpec("auth.handshake", "§5", _M, "HELLO → CHALLENGE → AUTH with the HMAC-SHA256 of §5, finished within the "
             "authentication timeout (10 s)"),
    ItemSpec("auth.before_ok", "§5", _M, "nothing but HELLO and AUTH is sent before AUTH_RESULT OK"),
    ItemSpec("auth.refusal.auth_timeout", "§5.1/§5.2", _M, "after GOODBYE AUTH_TIMEOUT following CHALLENGE, the device "
             "reconnects with back-off, not at once"),
    ItemSpec("auth.refusal.server_busy", "§5.1/§5.2", _M, "after GOODBYE SERVER_BUSY before HELLO, the device waits "
             "`reconnect_after_s` before connecting again"),
    ItemSpec("auth.refusal.locked_out", "§5.2", _M, "after AUTH_RESULT LOCKED_OUT (instead of CHALLENGE), the device "
             "waits `retry_after_s` before connecting again"),
    ItemSpec("auth.refusal.unknown_device", "§5.2", _M, "after AUTH_RESULT UNKNOWN_DEVICE, the device retries at the "
             "maximum back-off interval (60 s, less at most 50 % jitter), not sooner"),
    ItemSpec("auth.refusal.bad_signature", "§5.2", _M, "after AUTH_RESULT BAD_SIGNATURE, the device retries at the "
             "maximum back-off interval (60 s, less at most 50 % jitter), not sooner"),
    ItemSpec("heartbeat.interval", "§6.1", _M, "HEARTBEAT every `heartbeat_interval_s` of AUTH_RESULT (no gap above "
             "1.5 intervals)"),
    ItemSpec("session.window", "§6.2", _M, "at most 8 frames wait for an answer at any time"),
    ItemSpec("punch.ack", "§4.1/§6.3", _M, "punch frames decode; each record valid (ID check digit, direction, mode, "
             "temperature, time window, photo fields); a record_no never reused with other content"),
    ItemSpec("punch.batch", "§6.4", _M, "per-record results handled: neither an OK row nor a rejected row is resent; "
             "a PUNCH_BATCH holds at most `max_batch_records`"),
    ItemSpec("punch.retransmit_timeout", "§6.2", _M, "a record whose ACK is withheld is resent (same record_no, new "
             "frame) after the retransmit wait (15 s)"),
    ItemSpec("punch.retransmit_reconnect", "§6.2", _M, "a record unanswered when the connection breaks is resent in "
             "the next session"),
    ItemSpec("punch.duplicate", "§6.4", _M, "an ACK row DUPLICATE ends the record's resends"),
    ItemSpec("extension.unknown_result_code", "§8", _M, "an ACK row with an unknown result code is a final rejection: "
             "the record is not resent"),
    ItemSpec("photo.upload", "§6.5", _M, "PHOTO_CHUNKs only after the punch's ACK, one photo at a time, each from the "
             "last `next_offset`, within the frame size, assembling to the announced size and SHA-256"),
    ItemSpec("photo.resume", "§6.5", _M, "after a disconnect mid-photo, PHOTO_QUERY first, then chunks from the "
             "server's `next_offset` to a whole photo"),
    ItemSpec("time.sync", "§6.6", _S, "TIME_SYNC_REQUEST sent (at start, then at least every 24 h)"),
    ItemSpec("time.set_time", "§4.5/§6.6", _M, "SET_TIME answered with ACK, and the device's clock follows: its next "
             "frame with a time (HEARTBEAT, TIME_SYNC_REQUEST, its ACK, a new PUNCH) carries the time set"),
    ItemSpec("command.roster_version_query", "§6.7", _M, "ROSTER_VERSION_QUERY answered in order with "
             "ROSTER_VERSION_REPLY naming it, reporting the versions the device applied"),
    ItemSpec("command.config_get", "§6.7", _M, "CONFIG_GET answered in order with CONFIG_REPLY naming it: known keys "
             "in the order asked, unknown keys left out"),
    ItemSpec("command.config_set", "§6.7", _M, "CONFIG_SET answered in order: ACK for a key the device reported, NACK "
             "UNKNOWN_CONFIG_KEY for one it does not know"),
    ItemSpec("command.roster_add", "§6.7", _M, "ROSTER_ADD answered in order with ACK"),
    ItemSpec("command.roster_update", "§6.7", _M, "ROSTER_UPDATE answered in order with ACK"),
    ItemSpec("command.roster_remove", "§6.7", _M, "ROSTER_REMOVE answered in order with ACK"),
    ItemSpec("command.door_open", "§6.7", _M, "DOOR_OPEN answered in order with ACK (or NACK when HELLO announced no "
             "door)"),
    ItemSpec("command.reboot", "§6.7", _M, "REBOOT answered with ACK"),
    ItemSpec("command.unknown_message", "§6.9/§8", _M, "a message of an unknown type is answered NACK "
             "UNSUPPORTED_MESSAGE naming it, and the session continues"),
    ItemSpec("roster.faces", "§6.7", _M, "a roster change with a face, sent in FACE_CHUNKs, is applied: every chunk "
             "ACKed and ROSTER_VERSION_REPLY reports its version"),
    ItemSpec("roster.face_chunk_nack", "§6.7", _M, "a face that does not hash to its `face_sha256` is NACK "
             "COMMAND_FAILED and not adopted (the version stays)"),
    ItemSpec("extension.unknown_trailing", "§8/§9.8", _M, "a command with unknown trailing body bytes and reserved "
             "flag bits set is carried out as usual"),
    ItemSpec("reconnect.goodbye_backoff", "§6.8/§9.7", _M, "after GOODBYE with `reconnect_after_s`, the device waits "
             "at least that long"),
    ItemSpec("reconnect.backoff", "§6.8/§9.7", _S, "after connections that fail at once, the waits grow (exponential "
             "back-off with jitter, capped at 60 s before jitter)"),
    ItemSpec("reconnect.takeover", "§6.8", _I, "what the device does after GOODBYE TAKEOVER (another session of its "
             "serial): the kit reports the wait before it came back"),
)

ITEMS: dict[str, ItemSpec] = {spec.id: spec for spec in CATALOGUE}
if len(ITEMS) != len(CATALOGUE):  # an id listed twice would be graded twice and reported once
    raise ValueError("duplicate item ids in CATALOGUE")

#: What the document asks of a terminal that the kit cannot test, and why; docs/conformance.md
#: lists these so a vendor knows what a "conforms" report does not cover.
NOT_TESTED: tuple[tuple[str, str], ...] = (
    ("§5.2 DEVICE_DISABLED: retry at most every 10 minutes", "a run would last over 10 minutes for one item"),
    ("§5.2 UNSUPPORTED_VERSION: stop, retry at most hourly", "a run would last over an hour for one item"),
    ("§9.4 punches kept in non-volatile storage", "the kit cannot cut the device's power; unplug it during a run "
     "and check that the records come back (punch.retransmit_reconnect covers a broken connection)"),
    ("§4.1 record_no never reused after a reboot or a storage wipe", "needs the device restarted and wiped; the kit "
     "checks reuse within a run (punch.ack)"),
    ("§6.8 the 60 s back-off cap and the jitter's spread", "needs 7 failed attempts (over 2 minutes) and many "
     "samples; reconnect.backoff checks that waits grow"),
    ("§6.1 reconnect after two unanswered heartbeats (SHOULD)", "not graded in this version"),
    ("§6.2 resend after NACK STORE_UNAVAILABLE / SERVER_BUSY", "not graded in this version"),
    ("§2 resend after NACK BAD_CHECKSUM", "not graded in this version"),
)


@dataclass(frozen=True)
class KitTimings:
    """Every wait the kit grades against, in seconds, with the document's values as defaults.

    A real terminal is graded with the defaults; a test shrinks them to the simulated
    device's own settings. Every field is positive (ValueError otherwise)."""

    #: §6.2: a terminal resends an unanswered record after 15 s.
    retransmit_wait_s: float = 15.0
    #: §6.1: heartbeat_interval_s told in AUTH_RESULT (a u16 of whole seconds, so >= 1).
    heartbeat_interval_s: int = 30
    #: §5: the whole handshake within the authentication timeout.
    auth_timeout_s: float = 10.0
    #: §5.2: reconnect_after_s of GOODBYE SERVER_BUSY (the gateway sends 10).
    busy_wait_s: int = 10
    #: §5.2: retry_after_s of LOCKED_OUT: the first lockout lasts 60 s.
    locked_out_wait_s: int = 60
    #: §5.2 and §6.8: the maximum back-off interval, used after UNKNOWN_DEVICE and BAD_SIGNATURE.
    max_backoff_s: float = 60.0
    #: §6.8: the first back-off wait.
    backoff_base_s: float = 1.0
    #: §6.8: reconnect_after_s of the kit's GOODBYE SHUTTING_DOWN (the gateway's goodbye_reconnect_s).
    goodbye_wait_s: int = 5
    #: §6.7: the gateway resends a command unanswered for 30 s; the kit grades it failed then.
    command_wait_s: float = 30.0
    #: How long the kit waits for the device to come back after it closed a connection:
    #: the longest wait §6.8 allows (60 s cap + 50 % jitter) with room for a slow link.
    reconnect_wait_s: float = 100.0
    #: Measurement slack for every "at least" and "within" comparison: a loaded network
    #: or a slow event loop shifts both ends by a few tens of milliseconds.
    slack_s: float = 0.25
    #: Heartbeat gaps observed before heartbeat.interval passes.
    heartbeat_gaps: int = 3
    #: Connections closed at once for reconnect.backoff: 4 give waits of about 2, 4, 8 and
    #: 16 s, and the last is at least 2x the first whatever the ±50 % jitter draws
    #: (16 x 0.5 / (2 x 1.5) = 2.7); with 3 it could be 1.3x, too close to a fixed wait's.
    backoff_probes: int = 4
    #: How far SET_TIME moves the device's clock, and how close its later frames must be.
    set_time_shift_s: float = 120.0
    clock_tolerance_s: float = 2.0
    #: records of the largest PUNCH_BATCH the kit takes (AUTH_RESULT max_batch_records).
    max_batch_records: int = 500
    #: How long the kit waits for the next punch before it leaves the punch items not run:
    #: an operator at a bench punches within minutes.
    punch_idle_s: float = 300.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"{f.name} must be greater than 0, got {getattr(self, f.name)!r}")
        if self.heartbeat_interval_s > 0xFFFF or int(self.heartbeat_interval_s) != self.heartbeat_interval_s:
            raise ValueError("heartbeat_interval_s must be whole seconds, at most 65535 (a u16 in AUTH_RESULT)")
        for name in ("busy_wait_s", "locked_out_wait_s", "goodbye_wait_s"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) > 0xFFFF:
                raise ValueError(f"{name} must be whole seconds, at most 65535 (a u16 on the wire)")

    def ms(self, name: str) -> int:
        """The wait `name` in milliseconds."""
        return int(round(float(getattr(self, name)) * 1000))
