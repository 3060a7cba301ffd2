"""The kit's conductor: what to do to the device, connection by connection, and the report.

Sans-I/O, like the gateway's session: the asyncio glue (server.py) calls `opened`,
`received`, `closed` and `tick` with the kit's monotonic time in ms, and carries out the
actions they return (`Send` bytes, `Close` a connection, `Say` a line to the operator,
`Done`). `next_deadline()` says when to call `tick`. Randomness (CHALLENGE nonces) comes
from the `entropy` function given; the wall clock is the `wall_at_start_ms` given plus the
kit's time. Every frame either side sends, and every `Note` of what the kit did on
purpose, goes to every undecided item (items.py), which decides its verdict.

The plan, in order (docs/conformance.md walks through it for an operator):

1. Refusals, one connection each: GOODBYE AUTH_TIMEOUT after CHALLENGE; GOODBYE
   SERVER_BUSY before HELLO; AUTH_RESULT LOCKED_OUT and UNKNOWN_DEVICE instead of CHALLENGE;
   AUTH_RESULT BAD_SIGNATURE after AUTH. Each grades the wait before the next connection.
2. Sessions: AUTH_RESULT OK, then the commands of §4.5 in small batches (at most 4
   unanswered, as the gateway): roster with faces and a corrupted face, configuration,
   SET_TIME (then the clock is set back), DOOR_OPEN, an unknown message type, a command
   with trailing bytes and reserved flag bits. Meanwhile the operator punches; each new
   punch frame gets the next treatment (ACK withheld, DUPLICATE, rejected rows, an unknown
   result code, ACK withheld and the connection broken); the second photo is broken off
   after its first chunk. Heartbeats, time sync and the window are graded throughout.
3. GOODBYE SHUTTING_DOWN with `reconnect_after_s`; then `backoff_probes` connections
   closed at once (the waits must grow).
4. A session ended at once with GOODBYE TAKEOVER (the wait before the device comes back is
   reported), then a last one: REBOOT, answered with ACK. Then the kit stops.

The phases and their order are one table, `NEXT_PHASE`; `_enter` refuses any other move.
Disruptive steps (breaking a connection) wait until the commands are done and no ACK is
being withheld for the retransmit test, so one item's set-up never spoils another's.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from lmg.protocol import (
    Ack,
    AuthResult,
    Challenge,
    ConfigGet,
    ConfigKey,
    ConfigSet,
    ConfigEntry,
    DoorOpen,
    FaceChunk,
    Goodbye,
    MessageType,
    Nack,
    PhotoStatus,
    ProtocolError,
    Reboot,
    RecordResult,
    ResultCode,
    RosterAdd,
    RosterRemove,
    RosterUpdate,
    RosterVersionQuery,
    SetTime,
    TimeSyncReply,
    decode_frame,
    encode,
)
from lmg.protocol.codes import Capability
from lmg.protocol.identity import check_digit
from lmg.protocol.messages import Message
from lmg.protocol.schema import MAX_FRAME_SIZE
from lmg.server.conformance.catalogue import CATALOGUE, KitTimings, Level, Verdict
from lmg.server.conformance.items import (
    Closed,
    Context,
    Event,
    Expect,
    Frame,
    Item,
    Note,
    Opened,
    Tick,
    build_items,
)
from lmg.server.conformance.wire import WireFrame, kit_frame

#: The largest photo the kit holds, bytes: the gateway's limit (§4.1, 2 MiB), so a device
#: cannot make the kit hold more than one such photo per announcement.
MAX_PHOTO_BYTES = 2 << 20
#: The gateway keeps at most 4 commands unanswered per terminal (§6.7).
COMMAND_WINDOW = 4
#: A message type no version of the protocol uses (§8: unknown types get NACK UNSUPPORTED_MESSAGE).
UNKNOWN_TYPE = 0x0777
#: A result code the document does not define (§8: an unknown code in an ACK row is final).
UNKNOWN_CODE = 0x00EE
#: Configuration keys asked: the document's examples, and one no terminal knows.
CONFIG_KEYS = ("volume", "relay_ms")
NO_SUCH_KEY = "lmg.conformance.no-such-key"
#: Face photos the kit enrolls: small, so three chunks of FACE_CHUNK_BYTES carry one.
FACE_CHUNK_BYTES = 200
FACE_BYTES = 3 * FACE_CHUNK_BYTES
#: Two workers that exist only for the kit (valid check digits; removed again at the end).
TEST_WORKERS = tuple(first17 + check_digit(first17) for first17 in ("62010219900101901", "62010219900101902"))
#: The order in which new punch frames are treated; (treatment, item, breaks the connection).
TREATMENTS = (
    ("withhold_timeout", "punch.retransmit_timeout", False),
    ("duplicate", "punch.duplicate", False),
    ("batch", "punch.batch", False),
    ("unknown_code", "extension.unknown_result_code", False),
    ("withhold_reconnect", "punch.retransmit_reconnect", True),
)
#: Items the punch phase waits for (punch.ack, passive, is decided when the kit stops).
_PUNCH_ITEMS = tuple(item for _, item, _ in TREATMENTS) + ("photo.upload", "photo.resume")


class Phase(enum.Enum):
    REFUSALS = "refusals"  # each new connection gets the next refusal of Examiner.ROLES
    SESSION = "session"  # commands, punches, photos; heartbeats and time graded throughout
    GOODBYE = "goodbye"  # the next session gets GOODBYE SHUTTING_DOWN at once
    PROBES = "probes"  # connections closed at accept, `backoff_probes` of them
    TAKEOVER = "takeover"  # the next session gets GOODBYE TAKEOVER at once
    REBOOT = "reboot"  # the next session gets REBOOT; its answer ends the run
    DONE = "done"


#: The plan as a table: the phase after each, and what moves the kit on. Any other move is a
#: bug, refused by `Examiner._enter`. The time limit ends the run from any phase.
NEXT_PHASE: dict[Phase, tuple[Phase, str]] = {
    Phase.REFUSALS: (Phase.SESSION, "the first AUTH_RESULT OK, every refusal done"),
    Phase.SESSION: (Phase.GOODBYE, "the commands answered and every punch item decided, or punch_idle_s without a "
                                   "punch"),
    Phase.GOODBYE: (Phase.PROBES, "GOODBYE SHUTTING_DOWN sent"),
    Phase.PROBES: (Phase.TAKEOVER, "the last probe connection closed"),
    Phase.TAKEOVER: (Phase.REBOOT, "GOODBYE TAKEOVER sent"),
    Phase.REBOOT: (Phase.DONE, "REBOOT answered"),
}

_DEVICE_ANSWERS = frozenset({MessageType.ACK, MessageType.NACK, MessageType.ROSTER_VERSION_REPLY,
                             MessageType.CONFIG_REPLY})


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    conn: int
    data: bytes


@dataclass(frozen=True)
class Close:
    conn: int
    abort: bool = False  # drop at once (no FIN wait): a connection the kit refuses outright


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class Done:
    pass


Action = Send | Close | Say | Done


# --- the command script ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cmd:
    """One command of a batch: a message (or a hand-built frame: `raw` = (msg_type, body,
    flags)), the item its answer grades (None: not graded) and what must answer it."""

    message: Message | None
    item: str | None
    expect: Expect
    raw: tuple[int, bytes, int] | None = None


@dataclass(frozen=True)
class Until:
    """Wait until `item` is decided, or `timeout_ms` passed."""

    item: str
    timeout_ms: int


Step = list[Cmd] | Until
Script = Generator[Step, "list[Any] | None", None]


@dataclass
class _Conn:
    id: int
    opened_ms: int
    state: str = "hello"  # hello -> auth -> ready -> closed
    role: str | None = None
    hello: Any = None
    seq: int = 0


@dataclass
class _Batch:
    cmds: list[Cmd]
    conn: int = -1
    seqs: dict[int, int] = field(default_factory=dict)  # seq -> index in cmds
    answers: list[Any] = field(default_factory=list)
    deadline_ms: int = 0


def _face(label: bytes) -> bytes:
    body = (b"lmg-conformance-face-" + label) * (FACE_BYTES // 20)
    return (b"\xff\xd8\xff\xe0" + body)[: FACE_BYTES - 2] + b"\xff\xd9"


class Examiner:
    """The kit's pure core: feed it connection events, carry out its actions."""

    ROLES = ("auth_timeout", "server_busy", "locked_out", "unknown_device", "bad_signature")

    def __init__(self, timings: KitTimings | None = None, *, secret: bytes | None = None, serial: str | None = None,
                 wall_at_start_ms: int = 0, entropy: Callable[[int], bytes] | None = None,
                 validate: Callable[[Any, int], int | None] | None = None):
        self.timings = t = timings or KitTimings()
        self.ctx = Context(t, secret, serial, wall_at_start_ms)
        if entropy is None:
            import os

            entropy = os.urandom
        self.entropy = entropy
        self.validate = validate or default_validator()
        self.items: dict[str, Item] = build_items(self.ctx, self.validate)
        self.conns: dict[int, _Conn] = {}
        self.roles = list(self.ROLES)
        self.phase = Phase.REFUSALS
        self.session: int | None = None
        self.device_serial: str | None = None
        self.out: list[Action] = []
        self.ended_ms: int | None = None
        self.done = False
        # punches and photos
        self.answers: dict[int, int] = {}  # record_no -> the code it was answered with
        self.withheld: dict[int, str] = {}
        self.punches_seen = 0
        self.told_needed: tuple[int, int] | None = None
        self.last_punch_ms: int | None = None
        self.photos: dict[bytes, bytearray] = {}  # sha256 -> the bytes held of a photo being uploaded
        self.announced: dict[tuple[int, bytes], int] = {}  # (record_no, sha256) of acknowledged punches -> size
        self.complete: set[bytes] = set()
        # commands
        self.script: Script | None = None
        self.script_name = ""
        self.step: _Batch | Until | None = None
        self.until_deadline = 0
        self.commands_done = False
        self.probes_left = t.backoff_probes
        self.capabilities = 0
        self._clock = 0  # the time of the call being handled, for the scripts

    # -- entry points ---------------------------------------------------------------------------
    def opened(self, conn: int, now_ms: int) -> list[Action]:
        if self.done:
            return [Close(conn, abort=True)]
        self.conns[conn] = c = _Conn(conn, now_ms)
        self._feed(Opened(conn, now_ms), now_ms)
        if self.phase is Phase.PROBES:
            self._close(c, now_ms, abort=True)
            self._note("probe_abort", conn, now_ms)
            self.probes_left -= 1
            if self.probes_left <= 0:
                self._enter(Phase.TAKEOVER)
        elif self.roles and self.roles[0] == "server_busy":
            self.roles.pop(0)
            frame = self._send(c, Goodbye(ResultCode.SERVER_BUSY, self.timings.busy_wait_s), now_ms)
            self._close(c, now_ms)
            self._note("server_busy", conn, now_ms, min_ms=self.timings.ms("busy_wait_s"), frame=frame,
                       what=f"GOODBYE SERVER_BUSY before HELLO, reconnect_after_s {self.timings.busy_wait_s}")
        return self._drain(now_ms)

    def received(self, frame: WireFrame, now_ms: int) -> list[Action]:
        c = self.conns.get(frame.conn)
        if c is None or c.state == "closed" or self.done:
            return []
        self._feed(Frame(frame), now_ms)
        if frame.error is not None:
            self._on_error(c, frame.error, now_ms)
        elif frame.message is not None:
            self._dispatch(c, frame.message, frame, now_ms)
        return self._drain(now_ms)

    def note(self, kind: str, conn: int, now_ms: int) -> list[Action]:
        """Something the transport saw that an item grades (WebSocket: "ws_text")."""
        if self.done:
            return []
        self._note(kind, conn, now_ms)
        return self._drain(now_ms)

    def closed(self, conn: int, now_ms: int) -> list[Action]:
        """The device (or the network) closed `conn`."""
        c = self.conns.get(conn)
        if c is not None and c.state != "closed" and not self.done:
            c.state = "closed"
            self._lost(c, now_ms, by="device")
        return self._drain(now_ms)

    def tick(self, now_ms: int) -> list[Action]:
        if self.done:
            return []
        self._feed(Tick(now_ms), now_ms)
        return self._drain(now_ms)

    def next_deadline(self) -> int | None:
        deadlines = [item.deadline_ms for item in self.items.values()
                     if item.verdict is None and item.deadline_ms is not None]
        if isinstance(self.step, _Batch) and self.step.seqs:
            deadlines.append(self.step.deadline_ms)
        if isinstance(self.step, Until):
            deadlines.append(self.until_deadline)
        if self.phase is Phase.SESSION and self.last_punch_ms is not None:
            deadlines.append(self.last_punch_ms + self.timings.ms("punch_idle_s"))
        return min(deadlines) if deadlines else None

    def stop(self, now_ms: int) -> list[Action]:
        """The time limit: decide what is open (items the device never reached: not run)."""
        self._end(now_ms)
        out, self.out = self.out, []
        return out

    # -- the report -------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        items = []
        summary = {verdict.value: 0 for verdict in Verdict}
        for spec in CATALOGUE:
            item = self.items[spec.id]
            verdict = item.verdict or Verdict.NOT_RUN
            summary[verdict.value] += 1
            items.append({"id": spec.id, "section": spec.section, "level": spec.level.value,
                          "verdict": verdict.value, "detail": item.detail, "checks": spec.checks,
                          "wirelog": item.wirelog})
        conforms = all((self.items[s.id].verdict or Verdict.NOT_RUN) not in (Verdict.FAIL, Verdict.NOT_RUN)
                       for s in CATALOGUE if s.level is Level.MUST)
        ended = self.ended_ms if self.ended_ms is not None else 0
        result: dict[str, Any] = {"items": items, "summary": {
            **summary,
            "device": self.device_serial or self.ctx.serial or "",
            "started": _iso(self.ctx.wall_at_start_ms),
            "ended": _iso(self.ctx.wall_at_start_ms + ended),
            "verdict": "conforms" if conforms else "does not conform",
            "not_reached": [i["id"] for i in items if i["verdict"] == Verdict.NOT_RUN.value],
        }}
        return result

    # -- plumbing ---------------------------------------------------------------------------------
    def _drain(self, now_ms: int) -> list[Action]:
        self._progress(now_ms)
        out, self.out = self.out, []
        return out

    def _feed(self, event: Event, now_ms: int) -> None:
        self._clock = now_ms
        for item in self.items.values():
            if item.verdict is None:
                item.observe(event, now_ms)
        if isinstance(event, Tick):
            self._on_tick(now_ms)

    def _note(self, kind: str, conn: int, now_ms: int, **data: Any) -> None:
        self._feed(Note(kind, conn, now_ms, data), now_ms)
        if "what" in data and "min_ms" in data:
            self.out.append(Say(f"sent {data['what']} on purpose; the terminal should come back by itself "
                                f"(not before {data['min_ms'] / 1000:g} s)"))
        elif kind == "probe_abort":
            self.out.append(Say("connection closed at once on purpose (back-off probe); the terminal should come "
                                "back by itself, waiting longer each time"))

    def _send(self, c: _Conn, message: Message, now_ms: int) -> WireFrame:
        c.seq = (c.seq + 1) & 0xFFFFFFFF
        message = message._replace(seq=c.seq)
        frame = WireFrame(c.id, "kit", now_ms, encode(message, max_frame_size=MAX_FRAME_SIZE), message)
        self._feed(Frame(frame), now_ms)
        self.out.append(Send(c.id, frame.raw))
        return frame

    def _send_raw(self, c: _Conn, msg_type: int, body: bytes, flags: int, now_ms: int) -> WireFrame:
        c.seq = (c.seq + 1) & 0xFFFFFFFF
        raw = kit_frame(msg_type, c.seq, body, flags=flags)
        try:
            frame = WireFrame(c.id, "kit", now_ms, raw, decode_frame(raw), None, flags)
        except ProtocolError as exc:
            frame = WireFrame(c.id, "kit", now_ms, raw, None, exc, flags)
        self._feed(Frame(frame), now_ms)
        self.out.append(Send(c.id, raw))
        return frame

    def _close(self, c: _Conn, now_ms: int, abort: bool = False) -> None:
        if c.state == "closed":
            return
        c.state = "closed"
        self.out.append(Close(c.id, abort))
        self._lost(c, now_ms, by="kit")

    def _lost(self, c: _Conn, now_ms: int, by: str) -> None:
        self._feed(Closed(c.id, now_ms, by), now_ms)
        if self.session == c.id:
            self.session = None
            if isinstance(self.step, _Batch) and self.step.conn == c.id:
                self.step.seqs.clear()
                self.step.conn = -1  # sent again, whole, in the next session

    def _server_ms(self, now_ms: int) -> int:
        return self.ctx.wall_ms(now_ms)

    # -- the connection ---------------------------------------------------------------------------
    def _on_error(self, c: _Conn, error: ProtocolError, now_ms: int) -> None:
        if error.fatal:
            self._close(c, now_ms)
        elif error.seq is not None and error.msg_type is not None:
            self._send(c, Nack(error.seq, error.msg_type, error.result_code), now_ms)

    def _dispatch(self, c: _Conn, message: Message, frame: WireFrame, now_ms: int) -> None:
        kind = message.msg_type
        if kind == MessageType.GOODBYE:
            self._close(c, now_ms)
            return
        if c.state == "hello":
            if kind == MessageType.HELLO:
                self._on_hello(c, message, now_ms)
            else:
                self._send(c, Nack(message.seq, kind, ResultCode.AUTH_REQUIRED), now_ms)
        elif c.state == "auth":
            if kind == MessageType.AUTH:
                self._on_auth(c, now_ms)
            else:
                self._send(c, Nack(message.seq, kind, ResultCode.AUTH_REQUIRED), now_ms)
        elif kind in (MessageType.HEARTBEAT, MessageType.DEVICE_STATUS):
            self._send(c, Ack(message.seq, kind, self._server_ms(now_ms), ()), now_ms)
        elif kind == MessageType.TIME_SYNC_REQUEST:
            server = self._server_ms(now_ms)
            self._send(c, TimeSyncReply(message.device_time_ms, server, server), now_ms)
        elif kind in (MessageType.PUNCH, MessageType.PUNCH_BATCH):
            self._on_punches(c, message, frame, now_ms)
        elif kind == MessageType.PHOTO_CHUNK:
            self._on_photo_chunk(c, message, frame, now_ms)
        elif kind == MessageType.PHOTO_QUERY:
            self._on_photo_query(c, message, now_ms)
        elif kind in _DEVICE_ANSWERS:
            self._on_answer(c, message, now_ms)
        else:
            self._send(c, Nack(message.seq, kind, ResultCode.UNEXPECTED_MESSAGE), now_ms)

    def _on_hello(self, c: _Conn, hello: Any, now_ms: int) -> None:
        c.hello = hello
        self.device_serial = self.device_serial or hello.serial
        self.capabilities = hello.capabilities
        role = self.roles.pop(0) if self.roles else None
        c.role = role
        t = self.timings
        if role in ("locked_out", "unknown_device"):
            code = ResultCode.LOCKED_OUT if role == "locked_out" else ResultCode.UNKNOWN_DEVICE
            retry = t.locked_out_wait_s if role == "locked_out" else 0
            frame = self._send(c, AuthResult(code, 0, self._server_ms(now_ms), MAX_FRAME_SIZE, 0, retry), now_ms)
            self._close(c, now_ms)
            if role == "locked_out":
                self._note("locked_out", c.id, now_ms, min_ms=t.ms("locked_out_wait_s"), frame=frame,
                           what=f"AUTH_RESULT LOCKED_OUT, retry_after_s {retry}")
            else:
                self._note("unknown_device", c.id, now_ms, min_ms=t.ms("max_backoff_s") // 2, frame=frame,
                           what="AUTH_RESULT UNKNOWN_DEVICE (retry at the maximum interval)")
            return
        self._send(c, Challenge(self.entropy(16), self._server_ms(now_ms)), now_ms)
        c.state = "auth"
        if role == "auth_timeout":
            frame = self._send(c, Goodbye(ResultCode.AUTH_TIMEOUT, 0), now_ms)
            self._close(c, now_ms)
            self._note("auth_timeout", c.id, now_ms, min_ms=t.ms("backoff_base_s") // 2, frame=frame,
                       what="GOODBYE AUTH_TIMEOUT after CHALLENGE (reconnect with back-off)")

    def _on_auth(self, c: _Conn, now_ms: int) -> None:
        t = self.timings
        if c.role == "bad_signature":
            frame = self._send(c, AuthResult(ResultCode.BAD_SIGNATURE, 0, self._server_ms(now_ms), MAX_FRAME_SIZE, 0),
                               now_ms)
            self._close(c, now_ms)
            self._note("bad_signature", c.id, now_ms, min_ms=t.ms("max_backoff_s") // 2, frame=frame,
                       what="AUTH_RESULT BAD_SIGNATURE (retry at the maximum interval)")
            return
        # A wrong mac is graded (auth.handshake) but answered OK all the same, as Autobahn's
        # fuzzing server goes on after a failure: the rest of the report still says something.
        self._send(c, AuthResult(ResultCode.OK, t.heartbeat_interval_s, self._server_ms(now_ms), MAX_FRAME_SIZE,
                                 t.max_batch_records), now_ms)
        c.state = "ready"
        self._session_started(c, now_ms)

    # -- the plan ---------------------------------------------------------------------------------
    def _session_started(self, c: _Conn, now_ms: int) -> None:
        self.session = c.id
        if self.phase is Phase.REFUSALS:
            self._enter(Phase.SESSION)
            self.last_punch_ms = now_ms
            punches, photos = self._punches_needed()
            self.out.append(Say(f"authenticated ({c.hello.serial}); commands follow. Punch a card now: the kit needs "
                                f"about {punches} punches, {photos} of them with a face snapshot"))
        if self.phase is Phase.SESSION:
            if self.script is None and not self.commands_done:
                self._start_script("commands", self._commands(), now_ms)
            elif isinstance(self.step, _Batch) and self.step.conn == -1:
                self._send_batch(self.step, now_ms)
        elif self.phase is Phase.GOODBYE:
            self._goodbye(c, now_ms)
        elif self.phase is Phase.TAKEOVER:
            frame = self._send(c, Goodbye(ResultCode.TAKEOVER, 0), now_ms)
            self._close(c, now_ms)
            self._note("takeover", c.id, now_ms, min_ms=self.timings.ms("max_backoff_s") // 2, frame=frame,
                       what="GOODBYE TAKEOVER (§6.8: report it, back off to the maximum interval)")
            self._enter(Phase.REBOOT)
        elif self.phase is Phase.REBOOT:
            if self.script is None:
                self._start_script("reboot", self._final(), now_ms)
            elif isinstance(self.step, _Batch) and self.step.conn == -1:
                self._send_batch(self.step, now_ms)

    def _progress(self, now_ms: int) -> None:
        if self.done:
            return
        if isinstance(self.step, Until) and self.items[self.step.item].verdict is not None:
            self._advance(None, now_ms)
        if self.phase is Phase.SESSION and self.commands_done and self._punches_finished(now_ms):
            self._enter(Phase.GOODBYE)
            self.out.append(Say("punch items done; the kit now tests reconnects: leave the device running"))
            if self.session is not None:
                self._goodbye(self.conns[self.session], now_ms)

    def _punches_finished(self, now_ms: int) -> bool:
        camera = self.capabilities & Capability.PHOTO_UPLOAD
        waiting = [i for i in _PUNCH_ITEMS + ("heartbeat.interval",) if self.items[i].verdict is None
                   and (camera or not i.startswith("photo."))]
        if not waiting:
            return True
        idle = self.last_punch_ms is not None and now_ms - self.last_punch_ms >= self.timings.ms("punch_idle_s")
        return idle and not any(self._busy(i) for i in waiting)

    def _punches_needed(self) -> tuple[int, int]:
        """(punches, of them with a face snapshot) the undecided punch and photo items still need."""
        punches = (self.punches_seen == 0) + sum(
            1 for _, item, _ in TREATMENTS if self.items[item].verdict is None and not self._busy(item))
        photos = 0 if not self.capabilities & Capability.PHOTO_UPLOAD else sum(
            1 for item in ("photo.upload", "photo.resume") if self.items[item].verdict is None)
        return max(punches, photos), photos

    def _goodbye(self, c: _Conn, now_ms: int) -> None:
        t = self.timings
        frame = self._send(c, Goodbye(ResultCode.SHUTTING_DOWN, t.goodbye_wait_s), now_ms)
        self._close(c, now_ms)
        self._note("goodbye", c.id, now_ms, min_ms=t.ms("goodbye_wait_s"), frame=frame,
                   what=f"GOODBYE SHUTTING_DOWN, reconnect_after_s {t.goodbye_wait_s}")
        self._enter(Phase.PROBES)

    def _enter(self, phase: Phase) -> None:
        if NEXT_PHASE.get(self.phase, (None, ""))[0] is not phase:
            raise RuntimeError(f"the kit's plan has no move from {self.phase.value} to {phase.value}")
        self.phase = phase

    def _end(self, now_ms: int) -> None:
        if self.done:
            return
        if self.phase is Phase.REBOOT:
            self._enter(Phase.DONE)
        self.done = True
        self.ended_ms = now_ms
        for item in self.items.values():
            item.finish(now_ms)
        self.out.append(Done())

    def _on_tick(self, now_ms: int) -> None:
        step = self.step
        if isinstance(step, _Batch) and step.seqs and now_ms >= step.deadline_ms:
            for seq, index in list(step.seqs.items()):
                cmd = step.cmds[index]
                if cmd.item is not None:
                    self._feed(Note("expect_timeout", step.conn, now_ms, {"seq": seq, "item": cmd.item}), now_ms)
            step.seqs.clear()
            self._advance(step.answers, now_ms)
        elif isinstance(step, Until) and now_ms >= self.until_deadline:
            self._advance(None, now_ms)

    # -- scripts ----------------------------------------------------------------------------------
    def _start_script(self, name: str, script: Script, now_ms: int) -> None:
        self.script, self.script_name = script, name
        self._advance_to(next(script), now_ms)

    def _advance(self, answers: list[Any] | None, now_ms: int) -> None:
        assert self.script is not None
        try:
            step = self.script.send(answers)
        except StopIteration:
            self.script, self.step = None, None
            self._script_done(now_ms)
            return
        self._advance_to(step, now_ms)

    def _advance_to(self, step: Step, now_ms: int) -> None:
        if isinstance(step, Until):
            self.step = step
            self.until_deadline = now_ms + step.timeout_ms
            if self.items[step.item].verdict is not None:
                self._advance(None, now_ms)
            return
        batch = _Batch(step, answers=[None] * len(step))
        self.step = batch
        if self.session is not None:
            self._send_batch(batch, now_ms)

    def _send_batch(self, batch: _Batch, now_ms: int) -> None:
        assert self.session is not None
        c = self.conns[self.session]
        batch.conn, batch.seqs = c.id, {}
        batch.deadline_ms = now_ms + self.timings.ms("command_wait_s")
        for index, cmd in enumerate(batch.cmds):
            if cmd.raw is not None:
                frame = self._send_raw(c, *cmd.raw, now_ms)
            else:
                if isinstance(cmd.message, SetTime):
                    self.ctx.shift_ms = cmd.message.server_time_ms - (self.ctx.wall_at_start_ms + now_ms)
                    frame = self._send(c, cmd.message, now_ms)
                    if cmd.item is not None:
                        self._note("set_time", c.id, now_ms, seq=c.seq, value_ms=cmd.message.server_time_ms)
                else:
                    frame = self._send(c, cmd.message, now_ms)
            batch.seqs[c.seq] = index
            if cmd.item is not None:
                self._note("expect", c.id, now_ms, seq=c.seq, item=cmd.item, expect=cmd.expect, frame=frame)

    def _on_answer(self, c: _Conn, message: Any, now_ms: int) -> None:
        batch = self.step
        if not isinstance(batch, _Batch) or batch.conn != c.id or message.ref_seq not in batch.seqs:
            return
        batch.answers[batch.seqs.pop(message.ref_seq)] = message
        if not batch.seqs:
            self._advance(batch.answers, now_ms)

    def _script_done(self, now_ms: int) -> None:
        if self.script_name == "commands":
            self.commands_done = True
        elif self.script_name == "reboot":
            if self.session is not None:
                self._close(self.conns[self.session], now_ms)
            self._end(now_ms)

    def _commands(self) -> Script:
        """The §4.5 commands, batch by batch (each yield sends a batch and gets its answers)."""
        t = self.timings
        rvq = "ROSTER_VERSION_QUERY"
        answers = yield [Cmd(RosterVersionQuery(), "command.roster_version_query", Expect("rvr", what=rvq))]
        v0 = _version(answers)
        asked = CONFIG_KEYS + (NO_SUCH_KEY,)
        answers = yield [Cmd(ConfigGet(tuple(ConfigKey(k) for k in asked)), "command.config_get",
                             Expect("config_reply", keys=asked, unknown_keys=(NO_SUCH_KEY,), what="CONFIG_GET"))]
        reply = answers[0] if answers else None
        entries = list(reply.entries) if reply is not None and reply.msg_type == MessageType.CONFIG_REPLY else []
        if entries:
            yield [Cmd(ConfigSet((ConfigEntry(entries[0].key, entries[0].value),)), "command.config_set",
                       Expect("ack", what=f"CONFIG_SET of {entries[0].key!r} to the value the device reported"))]
        else:
            yield [Cmd(ConfigSet((ConfigEntry(NO_SUCH_KEY, "1"),)), "command.config_set",
                       Expect("nack", codes=(ResultCode.UNKNOWN_CONFIG_KEY,), what="CONFIG_SET of an unknown key"))]
        # roster.faces: a worker with a face, in three chunks
        w1, w2 = TEST_WORKERS
        face1, face2 = _face(b"1"), _face(b"2")
        sha1 = hashlib.sha256(face1).digest()
        yield [Cmd(RosterAdd(v0 + 1, w1, "测试一", "", 1, len(face1), sha1), "command.roster_add",
                   Expect("ack", what="ROSTER_ADD of a worker with a face")),
               *self._chunks(face1, sha1, "roster.faces")]
        yield [Cmd(RosterVersionQuery(), "roster.faces", Expect("rvr", version=v0 + 1, what=f"{rvq} after the face"))]
        # roster.face_chunk_nack: a second face in two chunks, the second corrupted
        good = face2[: 2 * FACE_CHUNK_BYTES]
        sha2 = hashlib.sha256(good).digest()
        half = FACE_CHUNK_BYTES
        corrupted = bytes(b ^ 0x5A for b in good[half:half + 8]) + good[half + 8:]
        yield [Cmd(RosterAdd(v0 + 2, w2, "测试二", "", 1, len(good), sha2), "command.roster_add",
                   Expect("ack", what="ROSTER_ADD of a second worker with a face")),
               Cmd(FaceChunk(sha2, len(good), 0, good[:half]), "roster.face_chunk_nack",
                   Expect("ack", what="FACE_CHUNK 1 of 2")),
               Cmd(FaceChunk(sha2, len(good), half, corrupted), "roster.face_chunk_nack",
                   Expect("nack", codes=(ResultCode.COMMAND_FAILED,),
                          what="FACE_CHUNK completing a face that does not hash to its face_sha256"))]
        yield [Cmd(RosterVersionQuery(), "roster.face_chunk_nack",
                   Expect("rvr", version=v0 + 1, what=f"{rvq} after the corrupted face (its version not adopted)"))]
        # the face again, whole, from offset 0 (§6.7), so the device ends as the kit found it
        yield [Cmd(FaceChunk(sha2, len(good), 0, good[:half]), "roster.faces",
                   Expect("ack", what="FACE_CHUNK 1 of 2, sent again")),
               Cmd(FaceChunk(sha2, len(good), half, good[half:]), "roster.faces",
                   Expect("ack", what="FACE_CHUNK 2 of 2, sent again, right"))]
        yield [Cmd(RosterVersionQuery(), "roster.faces", Expect("rvr", version=v0 + 2, what=f"{rvq} after the face "
                                                                                             "was sent again"))]
        yield [Cmd(RosterUpdate(v0 + 3, w1, "测试一", "", 2, 0, bytes(32)), "command.roster_update",
                   Expect("ack", what="ROSTER_UPDATE (role, no new face)"))]
        # time.set_time: move the clock, see it in the next heartbeat, move it back
        wall = self.ctx.wall_at_start_ms + self._clock
        shifted = wall + t.ms("set_time_shift_s")
        yield [Cmd(SetTime(shifted), "time.set_time", Expect("ack", what="SET_TIME"))]
        yield Until("time.set_time", t.ms("heartbeat_interval_s") * 2 + t.ms("slack_s"))
        yield [Cmd(SetTime(self.ctx.wall_at_start_ms + self._clock), None, Expect("ack"))]
        door = () if self.capabilities & Capability.DOOR else (ResultCode.COMMAND_FAILED,
                                                               ResultCode.UNSUPPORTED_MESSAGE)
        yield [Cmd(DoorOpen(1, 1), "command.door_open", Expect("ack", codes=door, what="DOOR_OPEN lane 1 for 1 s"))]
        yield [Cmd(None, "command.unknown_message",
                   Expect("nack", codes=(ResultCode.UNSUPPORTED_MESSAGE,), ref_type=UNKNOWN_TYPE,
                          what=f"a message of unknown type 0x{UNKNOWN_TYPE:04X}"),
                   raw=(UNKNOWN_TYPE, b"lmg-conformance", 0))]
        yield [Cmd(None, "extension.unknown_trailing",
                   Expect("rvr", version=v0 + 3, what=f"{rvq} with 6 trailing body bytes and flags 0xFE"),
                   raw=(MessageType.ROSTER_VERSION_QUERY, b"\x01\x02\x03\x04\x05\x06", 0xFE))]
        yield [Cmd(RosterRemove(v0 + 4, w1), "command.roster_remove", Expect("ack", what="ROSTER_REMOVE")),
               Cmd(RosterRemove(v0 + 5, w2), "command.roster_remove", Expect("ack", what="ROSTER_REMOVE"))]
        yield [Cmd(RosterVersionQuery(), "command.roster_version_query",
                   Expect("rvr", version=v0 + 5, what=f"{rvq} after the kit's changes"))]

    def _final(self) -> Script:
        yield [Cmd(Reboot(5), "command.reboot", Expect("ack", what="REBOOT in 5 s"))]

    @staticmethod
    def _chunks(face: bytes, sha: bytes, item: str) -> list[Cmd]:
        return [Cmd(FaceChunk(sha, len(face), offset, face[offset:offset + FACE_CHUNK_BYTES]), item,
                    Expect("ack", what=f"FACE_CHUNK at {offset}"))
                for offset in range(0, len(face), FACE_CHUNK_BYTES)]

    # -- punches and photos -----------------------------------------------------------------------
    def _treatment(self, now_ms: int) -> str:
        if self.punches_seen == 0:
            return "ack"
        calm = self.commands_done and not self._busy("punch.retransmit_timeout") and not self._busy("photo.resume")
        for name, item_id, disruptive in TREATMENTS:
            if self.items[item_id].verdict is None and not self._busy(item_id) and (calm or not disruptive):
                return name
        return "ack"

    def _on_punches(self, c: _Conn, message: Any, frame: WireFrame, now_ms: int) -> None:
        records = [message.record] if message.msg_type == MessageType.PUNCH else list(message.records)
        if message.msg_type == MessageType.PUNCH_BATCH and len(records) > self.timings.max_batch_records:
            self._send(c, Nack(message.seq, message.msg_type, ResultCode.BATCH_TOO_LARGE), now_ms)
            return
        self.last_punch_ms = now_ms
        new = [r for r in records if r.record_no not in self.answers and r.record_no not in self.withheld]
        treatment = self._treatment(now_ms) if new else "ack"
        server = self._server_ms(now_ms)
        if treatment in ("withhold_timeout", "withhold_reconnect"):
            mode = "timeout" if treatment == "withhold_timeout" else "reconnect"
            for r in new:
                self.withheld[r.record_no] = mode
            self.punches_seen += len(new)
            self._note("withheld", c.id, now_ms, mode=mode, records=[r.record_no for r in new], seq=message.seq,
                       frame=frame)
            if mode == "reconnect":
                self._close(c, now_ms)
            return
        results, codes, treated, photos = [], {}, {}, {}
        for index, r in enumerate(records):
            problem = self.validate(r, server)
            if r.record_no in self.withheld:
                del self.withheld[r.record_no]
                code = problem if problem is not None else ResultCode.OK
            elif r.record_no in self.answers:
                before = self.answers[r.record_no]
                code = ResultCode.DUPLICATE if before in (ResultCode.OK, ResultCode.DUPLICATE) else before
            elif problem is not None:
                code = problem
            else:
                code = treated[r.record_no] = self._code_for(treatment, index)
            self.answers.setdefault(r.record_no, code)
            results.append(RecordResult(r.record_no, code))
            codes[r.record_no] = code
            if r.photo_size:
                photos[r.record_no] = (r.photo_sha256, r.photo_size)
                if code in (ResultCode.OK, ResultCode.DUPLICATE):
                    self.announced[(r.record_no, r.photo_sha256)] = r.photo_size
        self.punches_seen += len(new)
        self._note("answered", c.id, now_ms, treatment=treatment if new else "ack", codes=codes, treated=treated,
                   photos=photos)
        self._send(c, Ack(message.seq, message.msg_type, server, tuple(results)), now_ms)
        self._tell_punches_needed()

    def _tell_punches_needed(self) -> None:
        needed = self._punches_needed()
        if needed != self.told_needed:
            self.told_needed = needed
            punches, photos = needed
            self.out.append(Say(f"punches still needed: about {punches}, {photos} with a face snapshot" if punches
                                else "no more punches needed"))

    @staticmethod
    def _code_for(treatment: str, index: int) -> int:
        if treatment == "duplicate":
            return ResultCode.DUPLICATE
        if treatment == "batch":
            return ResultCode.OK if index % 2 else ResultCode.TIME_TOO_OLD
        if treatment == "unknown_code":
            return UNKNOWN_CODE
        return ResultCode.OK

    def _busy(self, item_id: str) -> bool:
        """True while an undecided item watches something the kit set up."""
        item = self.items[item_id]
        return item.verdict is None and item.armed

    def _cut_photo_now(self, message: Any) -> bool:
        return (message.offset == 0 and self.commands_done and self.items["photo.upload"].verdict is not None
                and self.items["photo.resume"].verdict is None and not self._busy("photo.resume")
                and not self._busy("punch.retransmit_timeout") and not self._busy("punch.retransmit_reconnect"))

    def _photo_refusal(self, message: Any) -> int | None:
        """Why a chunk or query is refused before any byte is held (§6.5), or None. Only
        photos of acknowledged punches are held, so the kit holds at most one photo of at
        most MAX_PHOTO_BYTES per punch the device made."""
        if message.total_size > MAX_PHOTO_BYTES:
            return ResultCode.PHOTO_TOO_LARGE
        if self.announced.get((message.record_no, message.photo_sha256)) != message.total_size:
            return ResultCode.PHOTO_NOT_ANNOUNCED
        return None

    def _on_photo_chunk(self, c: _Conn, message: Any, frame: WireFrame, now_ms: int) -> None:
        sha, total = message.photo_sha256, message.total_size
        refusal = self._photo_refusal(message)
        if refusal is not None:
            self._send(c, PhotoStatus(sha, refusal, 0), now_ms)
            return
        if sha in self.complete:
            self._send(c, PhotoStatus(sha, ResultCode.OK, total), now_ms)
            return
        held = self.photos.setdefault(sha, bytearray())
        if not held and self._cut_photo_now(message):
            held += message.data[: max(1, len(message.data) // 2)]
            self._note("photo_cut", c.id, now_ms, sha=sha, held=len(held), frame=frame)
            self._close(c, now_ms)
            return
        if message.offset != len(held):
            self._send(c, PhotoStatus(sha, ResultCode.PHOTO_OFFSET_MISMATCH, len(held)), now_ms)
            return
        held += message.data[: total - len(held)]
        if len(held) < total:
            self._send(c, PhotoStatus(sha, ResultCode.OK, len(held)), now_ms)
        elif hashlib.sha256(held).digest() == sha:
            self.complete.add(sha)
            del self.photos[sha]
            self._send(c, PhotoStatus(sha, ResultCode.OK, total), now_ms)
        else:
            del self.photos[sha]
            self._send(c, PhotoStatus(sha, ResultCode.PHOTO_HASH_MISMATCH, 0), now_ms)

    def _on_photo_query(self, c: _Conn, message: Any, now_ms: int) -> None:
        sha, total = message.photo_sha256, message.total_size
        refusal = self._photo_refusal(message)
        if refusal is not None:
            self._send(c, PhotoStatus(sha, refusal, 0), now_ms)
        elif sha in self.complete:
            self._send(c, PhotoStatus(sha, ResultCode.OK, total), now_ms)
        else:
            self._send(c, PhotoStatus(sha, ResultCode.OK, len(self.photos.get(sha, b""))), now_ms)


def _version(answers: list[Any] | None) -> int:
    reply = answers[0] if answers else None
    if reply is not None and reply.msg_type == MessageType.ROSTER_VERSION_REPLY:
        return int(reply.roster_version)
    return 0


def _iso(wall_ms: int) -> str:
    return datetime.fromtimestamp(wall_ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")


def default_validator() -> Callable[[Any, int], int | None]:
    """The gateway's own record rules (ID check digit, time window, direction, mode,
    temperature, photo size), with its default limits: the kit grades what the gateway takes."""
    from lmg.server.gateway.session import SessionLimits, _validate

    limits = SessionLimits()

    def validate(record: Any, server_ms: int) -> int | None:
        return _validate(record, server_ms, limits, MAX_PHOTO_BYTES)

    return validate


