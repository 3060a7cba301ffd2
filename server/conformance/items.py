"""The graders: one small object per catalogue item, fed events, deciding a verdict.

Sans-I/O: an item never sends, sleeps or reads a clock. The examiner (examiner.py) feeds
every item every event, in order, with the kit's monotonic time in ms:

- `Opened(conn, at_ms)`, `Closed(conn, at_ms, by)`: a connection began or ended (`by` is
  "kit" when the kit closed it on purpose, "device" otherwise);
- `Frame(WireFrame)`: a frame either side sent (the kit's own frames too, as it sends them);
- `Note(kind, conn, at_ms, data)`: what the kit did on purpose that a grader must know
  about (a refusal and its wait, a withheld ACK, a command and what answers it);
- `Tick(at_ms)`: time passed (an item's `deadline_ms` came).

`observe(event, now_ms)` returns the verdict once decided (and then is not called again);
`finish(now_ms)` decides what is still open when the kit stops (usually "not run": the
device never reached the item). Every item keeps the frames that decided it in `wirelog`
(at most `WIRELOG_LIMIT`), which the report shows in hex and decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmg.protocol import Capability, MessageType, ResultCode
from lmg.protocol.auth import verify_auth
from lmg.protocol.errors import UnsupportedMessage
from lmg.server.conformance.catalogue import ITEMS, ItemSpec, KitTimings, Level, Verdict
from lmg.server.conformance.wire import RESERVED_FLAGS, WireFrame, describe

#: Frames kept per item for the report: enough for a handshake, a photo and its resume,
#: small enough that a run of an hour does not build a report of megabytes.
WIRELOG_LIMIT = 40

#: §6.2: "up to 8 frames waiting for an answer".
WINDOW = 8

_REQUESTS = frozenset({MessageType.HEARTBEAT, MessageType.PUNCH, MessageType.PUNCH_BATCH, MessageType.DEVICE_STATUS,
                       MessageType.PHOTO_CHUNK, MessageType.PHOTO_QUERY, MessageType.TIME_SYNC_REQUEST})
_DEVICE_ANSWERS = frozenset({MessageType.ACK, MessageType.NACK, MessageType.ROSTER_VERSION_REPLY,
                             MessageType.CONFIG_REPLY})
_PUNCHES = frozenset({MessageType.PUNCH, MessageType.PUNCH_BATCH})


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    conn: int
    at_ms: int


@dataclass(frozen=True)
class Closed:
    conn: int
    at_ms: int
    by: str  # "kit" or "device"


@dataclass(frozen=True)
class Frame:
    frame: WireFrame


@dataclass(frozen=True)
class Note:
    kind: str
    conn: int
    at_ms: int
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Tick:
    at_ms: int


Event = Opened | Closed | Frame | Note | Tick


@dataclass(frozen=True)
class Expect:
    """What must answer a command: `kind` is "ack", "nack", "rvr" (ROSTER_VERSION_REPLY) or
    "config_reply"; `codes` the NACK codes accepted (with kind "nack"), or accepted besides
    ACK (with kind "ack"); `version` the roster version an RVR must report (None: any);
    `keys` the keys a CONFIG_GET asked (the reply must keep their order, leaving out
    `unknown_keys`)."""

    kind: str
    codes: tuple[int, ...] = ()
    version: int | None = None
    keys: tuple[str, ...] = ()
    unknown_keys: tuple[str, ...] = ()
    ref_type: int | None = None
    what: str = ""


@dataclass
class Context:
    """What graders share with the examiner: the waits, the device's secret (None when the
    kit was given none), and the kit's wall clock (`wall_ms(now_ms)`)."""

    timings: KitTimings
    secret: bytes | None
    serial: str | None
    wall_at_start_ms: int
    #: How far the kit moved the device's clock with SET_TIME (ms); the kit's own "server
    #: clock" moves with it, so TIME_SYNC_REPLY and ACK agree with what it set.
    shift_ms: int = 0

    def wall_ms(self, now_ms: int) -> int:
        """The kit's server clock, Unix ms, at kit time `now_ms`."""
        return self.wall_at_start_ms + now_ms + self.shift_ms


def _code(value: int) -> str:
    return ResultCode(value).name if value in ResultCode._value2member_map_ else f"0x{value:04X}"


def _records(message: Any) -> list[Any]:
    if message.msg_type == MessageType.PUNCH:
        return [message.record]
    return list(message.records)


def _s(ms: float) -> str:
    return f"{ms / 1000:.2f} s"


def _n(count: int, noun: str) -> str:
    """'1 answer', '2 answers'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class Item:
    """Base grader. Subclasses override `observe` (and `finish` when silence decides)."""

    def __init__(self, item_id: str, ctx: Context):
        self.spec: ItemSpec = ITEMS[item_id]
        self.ctx = ctx
        self.t = ctx.timings
        self.verdict: Verdict | None = None
        self.detail = ""
        self.wirelog: list[dict[str, Any]] = []
        self.deadline_ms: int | None = None
        self.evidence = 0  # observations that count towards a pass

    @property
    def armed(self) -> bool:
        """True while the item watches something the kit set up (the examiner does not
        set up the same thing twice at once)."""
        return False

    def log(self, frame: WireFrame) -> None:
        if len(self.wirelog) < WIRELOG_LIMIT:
            self.wirelog.append(describe(frame))

    def decide(self, verdict: Verdict, detail: str) -> Verdict:
        if self.spec.level is Level.SHOULD and verdict is Verdict.FAIL:
            verdict = Verdict.NON_STRICT
        if self.spec.level is Level.INFO and verdict in (Verdict.PASS, Verdict.FAIL, Verdict.NON_STRICT):
            verdict = Verdict.INFORMATIONAL
        self.verdict, self.detail, self.deadline_ms = verdict, detail, None
        return verdict

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        return None

    def finish(self, now_ms: int) -> None:
        """Decide at the end of the run: pass with evidence, else not run."""
        if self.verdict is None:
            if self.evidence:
                self.decide(Verdict.PASS,
                            self.detail or f"{_n(self.evidence, 'observation')}, all as the document asks")
            else:
                self.decide(Verdict.NOT_RUN, self.detail or "the device never reached this item")


# --- frames and handshake ----------------------------------------------------------------------


class FrameFormat(Item):
    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Note) and event.kind == "ws_text":
            return self.decide(Verdict.FAIL, "a WebSocket text message: frames travel in binary messages (§1)")
        if not isinstance(event, Frame) or event.frame.direction != "device":
            return None
        frame = event.frame
        error = frame.error
        if error is not None and not isinstance(error, UnsupportedMessage):
            self.log(frame)
            return self.decide(Verdict.FAIL, f"unusable frame: {type(error).__name__}: {error}")
        if frame.flags is not None and frame.flags & RESERVED_FLAGS:
            self.log(frame)
            return self.decide(Verdict.FAIL, f"reserved flag bits set (flags 0x{frame.flags:02X}): send 0 (§2)")
        if self.evidence < 3:
            self.log(frame)
        self.evidence += 1
        self.detail = f"{_n(self.evidence, 'frame')}, every one well formed"
        return None


class AuthHandshake(Item):
    """Every AUTH the device sends is checked against its HELLO and the kit's nonce."""

    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.opened: dict[int, int] = {}
        self.hello: dict[int, Any] = {}
        self.nonce: dict[int, bytes] = {}

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Opened):
            self.opened[event.conn] = event.at_ms
            return None
        if not isinstance(event, Frame) or event.frame.message is None:
            return None
        frame, message = event.frame, event.frame.message
        kind = message.msg_type
        if kind == MessageType.HELLO and frame.direction == "device":
            self.hello[frame.conn] = message
            self.log(frame)
        elif kind == MessageType.CHALLENGE:
            self.nonce[frame.conn] = message.nonce
            self.log(frame)
        elif kind == MessageType.AUTH and frame.direction == "device":
            self.log(frame)
            hello, nonce = self.hello.get(frame.conn), self.nonce.get(frame.conn)
            if hello is None or nonce is None:
                return self.decide(Verdict.FAIL, "AUTH sent before HELLO and CHALLENGE")
            took = frame.at_ms - self.opened.get(frame.conn, frame.at_ms)
            if took > self.t.ms("auth_timeout_s"):
                return self.decide(Verdict.FAIL, f"AUTH came {_s(took)} after connecting: the exchange must finish "
                                                 f"within {self.t.auth_timeout_s:g} s")
            if self.ctx.secret is None:
                self.detail = "no --secret given: the HMAC could not be checked"
                return None
            if self.ctx.serial is not None and hello.serial != self.ctx.serial:
                return self.decide(Verdict.FAIL, f"HELLO names serial {hello.serial!r}, the kit was given "
                                                 f"{self.ctx.serial!r}")
            if not verify_auth(self.ctx.secret, nonce, hello, message.mac):
                return self.decide(Verdict.FAIL, "AUTH's mac is not HMAC-SHA256(secret, nonce ‖ str8(serial) ‖ "
                                                 "str8(firmware) ‖ u8(protocol_version)) of §5")
            self.evidence += 1
            if self.evidence >= 2:
                return self.decide(Verdict.PASS, f"{self.evidence} handshakes, the mac right each time, the last "
                                                 f"in {_s(took)}")
        return None

    def finish(self, now_ms: int) -> None:
        if self.verdict is None and self.evidence:
            self.decide(Verdict.PASS, f"{self.evidence} handshake with the right mac")
        elif self.verdict is None and self.ctx.secret is None and self.nonce:
            self.decide(Verdict.NOT_RUN, "no --secret given: the HMAC could not be checked; run the kit with "
                                         "--serial and --secret")
        super().finish(now_ms)


class AuthBeforeOk(Item):
    _ALLOWED = frozenset({MessageType.HELLO, MessageType.AUTH, MessageType.GOODBYE})

    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.authenticated: set[int] = set()

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if not isinstance(event, Frame):
            return None
        frame = event.frame
        if frame.direction == "kit":
            message = frame.message
            if message is not None and message.msg_type == MessageType.AUTH_RESULT and message.result == 0:
                self.authenticated.add(frame.conn)
                self.evidence += 1
                self.detail = f"{_n(self.evidence, 'session')}: nothing but HELLO and AUTH before AUTH_RESULT OK"
            return None
        if frame.conn in self.authenticated or frame.msg_type is None or frame.msg_type in self._ALLOWED:
            return None
        self.log(frame)
        name = MessageType(frame.msg_type).name if frame.msg_type in MessageType._value2member_map_ else hex(
            frame.msg_type)
        return self.decide(Verdict.FAIL, f"{name} sent before AUTH_RESULT OK: wait for it before anything else (§5)")


class ReconnectWait(Item):
    """After the kit's refusal (a Note of `kind` with the wait `min_ms`), the next
    connection must not come sooner than `min_ms`."""

    def __init__(self, item_id: str, ctx: Context, kind: str):
        super().__init__(item_id, ctx)
        self.kind = kind
        self.since: int | None = None
        self.min_ms = 0

    @property
    def armed(self) -> bool:
        return self.since is not None

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Note) and event.kind == self.kind:
            self.since, self.min_ms = event.at_ms, int(event.data["min_ms"])
            self.deadline_ms = event.at_ms + self.min_ms + self.t.ms("reconnect_wait_s")
            self.detail = event.data.get("what", "")
            if "frame" in event.data:
                self.wirelog.append(describe(event.data["frame"]))
        elif isinstance(event, Opened) and self.since is not None:
            gap = event.at_ms - self.since
            if self.spec.level is Level.INFO:
                return self.decide(Verdict.INFORMATIONAL, f"{self.detail}: the device came back after {_s(gap)}")
            need = f"{self.detail}: waited {_s(gap)}, at least {_s(self.min_ms)} needed"
            if gap + self.t.ms("slack_s") >= self.min_ms:
                return self.decide(Verdict.PASS, need)
            return self.decide(Verdict.FAIL, need)
        elif isinstance(event, Tick) and self.deadline_ms is not None and event.at_ms >= self.deadline_ms:
            return self.decide(Verdict.FAIL, f"{self.detail}: the device did not come back within "
                                             f"{_s(self.deadline_ms - (self.since or 0))}")
        return None


class BackoffGrowth(Item):
    """reconnect.backoff: the waits after connections the kit closes at once must grow."""

    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.since: int | None = None
        self.gaps: list[int] = []

    @property
    def armed(self) -> bool:
        return self.since is not None

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Note) and event.kind == "probe_abort":
            self.since = event.at_ms
            self.deadline_ms = event.at_ms + self.t.ms("reconnect_wait_s")
        elif isinstance(event, Opened) and self.since is not None:
            self.gaps.append(event.at_ms - self.since)
            self.since = None
            self.deadline_ms = None
            if len(self.gaps) >= self.t.backoff_probes:
                return self._grade()
        elif isinstance(event, Tick) and self.deadline_ms is not None and event.at_ms >= self.deadline_ms:
            return self.decide(Verdict.FAIL, f"no reconnect within {self.t.reconnect_wait_s:g} s after a failed "
                                             f"connection (waits so far: {self._waits()})")
        return None

    def _waits(self) -> str:
        return ", ".join(_s(g) for g in self.gaps) or "none"

    def _grade(self) -> Verdict:
        first, last = self.gaps[0], self.gaps[-1]
        cap = 90_000 + self.t.ms("slack_s")  # 60 s before a jitter of at most +50 %
        if max(self.gaps) > cap:
            return self.decide(Verdict.FAIL, f"waits {self._waits()}: above 90 s (the 60 s cap plus 50 % jitter)")
        if last < 2 * first:
            return self.decide(Verdict.FAIL, f"waits {self._waits()} after failed connections do not grow: back off "
                                             "exponentially (1 s, doubling, with ±50 % jitter)")
        return self.decide(Verdict.PASS, f"waits {self._waits()} after failed connections: growing")

    def finish(self, now_ms: int) -> None:
        if self.verdict is None and len(self.gaps) >= 2:
            self._grade()
        super().finish(now_ms)


# --- session -----------------------------------------------------------------------------------


class HeartbeatInterval(Item):
    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.last: dict[int, int] = {}  # conn -> time of the last heartbeat (or of AUTH_RESULT OK)
        self.limit_ms = int(self.t.heartbeat_interval_s * 1500) + self.t.ms("slack_s")

    def _rearm(self) -> None:
        self.deadline_ms = min(self.last.values()) + self.limit_ms if self.last else None

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Frame):
            frame, message = event.frame, event.frame.message
            if message is None:
                return None
            if frame.direction == "kit" and message.msg_type == MessageType.AUTH_RESULT and message.result == 0:
                self.last[frame.conn] = frame.at_ms
                self.log(frame)
            elif frame.direction == "device" and message.msg_type == MessageType.HEARTBEAT and frame.conn in self.last:
                gap = frame.at_ms - self.last[frame.conn]
                self.last[frame.conn] = frame.at_ms
                if len(self.wirelog) < 6:
                    self.log(frame)
                if gap > self.limit_ms:
                    return self.decide(Verdict.FAIL, f"{_s(gap)} between heartbeats; heartbeat_interval_s is "
                                                     f"{self.t.heartbeat_interval_s}")
                self.evidence += 1
                self.detail = f"{_n(self.evidence, 'heartbeat')}, each within {_s(gap)} of the one before"
                if self.evidence >= self.t.heartbeat_gaps:
                    return self.decide(Verdict.PASS, f"{self.evidence} heartbeats at most 1.5 intervals apart "
                                                     f"(interval {self.t.heartbeat_interval_s} s)")
            self._rearm()
        elif isinstance(event, Closed):
            self.last.pop(event.conn, None)
            self._rearm()
        elif isinstance(event, Tick) and self.deadline_ms is not None and event.at_ms >= self.deadline_ms:
            return self.decide(Verdict.FAIL, f"no HEARTBEAT for {_s(self.limit_ms)}; heartbeat_interval_s is "
                                             f"{self.t.heartbeat_interval_s}")
        return None


class SessionWindow(Item):
    """Frames waiting for an answer, per connection. A withheld frame stops counting once
    the device may have given up on it (after the retransmit wait)."""

    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.waiting: dict[int, dict[int, tuple[int, int, bytes | None]]] = {}  # conn -> seq -> (at, type, sha)
        self.most = 0

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Closed):
            self.waiting.pop(event.conn, None)
            return None
        if not isinstance(event, Frame) or event.frame.message is None:
            return None
        frame, message = event.frame, event.frame.message
        waiting = self.waiting.setdefault(frame.conn, {})
        expiry = frame.at_ms - self.t.ms("retransmit_wait_s")
        for seq in [s for s, (at, _, _) in waiting.items() if at < expiry]:
            del waiting[seq]
        kind = message.msg_type
        if frame.direction == "device" and kind in _REQUESTS:
            waiting[message.seq] = (frame.at_ms, kind, getattr(message, "photo_sha256", None))
            self.evidence += 1
            self.most = max(self.most, len(waiting))
            if len(waiting) > WINDOW:
                self.log(frame)
                return self.decide(Verdict.FAIL, f"{len(waiting)} frames waiting for an answer at once; at most "
                                                 f"{WINDOW} (§6.2)")
            self.detail = f"at most {_n(self.most, 'frame')} waited for an answer at once"
        elif frame.direction == "kit" and kind in (MessageType.ACK, MessageType.NACK):
            waiting.pop(message.ref_seq, None)
        elif frame.direction == "kit" and kind == MessageType.TIME_SYNC_REPLY:
            self._pop_oldest(waiting, lambda t, sha: t == MessageType.TIME_SYNC_REQUEST)
        elif frame.direction == "kit" and kind == MessageType.PHOTO_STATUS:
            self._pop_oldest(waiting, lambda t, sha: sha == message.photo_sha256)
        return None

    @staticmethod
    def _pop_oldest(waiting: dict[int, tuple[int, int, bytes | None]], match: Any) -> None:
        for seq, (_, kind, sha) in sorted(waiting.items(), key=lambda kv: kv[1][0]):
            if match(kind, sha):
                del waiting[seq]
                return


# --- punches -----------------------------------------------------------------------------------


class PunchAck(Item):
    """Every record the device sends is valid, and a record_no keeps its content."""

    def __init__(self, item_id: str, ctx: Context, validate: Any):
        super().__init__(item_id, ctx)
        self.validate = validate  # (record, server clock in Unix ms) -> ResultCode | None
        self.contents: dict[int, Any] = {}
        self.old = 0  # records older than the backlog the gateway takes

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if not isinstance(event, Frame) or event.frame.direction != "device":
            return None
        frame = event.frame
        if frame.message is None:
            if frame.msg_type in _PUNCHES:
                self.log(frame)
                return self.decide(Verdict.FAIL, f"a punch frame that does not decode: {frame.error}")
            return None
        if frame.message.msg_type not in _PUNCHES:
            return None
        for record in _records(frame.message):
            before = self.contents.setdefault(record.record_no, record)
            if before != record:
                self.log(frame)
                return self.decide(Verdict.FAIL, f"record_no {record.record_no} sent again with other content: a "
                                                 "record number is never reused (§4.1)")
            problem = self.validate(record, self.ctx.wall_ms(frame.at_ms))
            if problem == ResultCode.TIME_TOO_OLD:
                self.old += 1  # the server's backlog policy (30 days), not the terminal's fault
            elif problem is not None:
                self.log(frame)
                return self.decide(Verdict.FAIL, f"record {record.record_no}: {_code(problem)} (§4.1)")
        if len(self.wirelog) < 4:
            self.log(frame)
        self.evidence += 1
        self.detail = f"{_n(len(self.contents), 'record')} in {_n(self.evidence, 'frame')}, every one valid" + (
            f" ({self.old} older than the gateway's 30-day backlog: the gateway answers TIME_TOO_OLD)"
            if self.old else "")
        return None


class NoResend(Item):
    """After the kit answered records in a way that ends them (`kind` of Note
    "answered"), none of them may come again for twice the retransmit wait."""

    def __init__(self, item_id: str, ctx: Context, kind: str):
        super().__init__(item_id, ctx)
        self.kind = kind
        self.watched: dict[int, int] = {}  # record_no -> its answer's code
        self.batches = 0

    @property
    def armed(self) -> bool:
        return bool(self.watched)

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Note) and event.kind == "answered" and event.data["treatment"] == self.kind and (
                event.data["treated"]):
            self.watched.update(event.data["treated"])
            self.evidence += 1
            self.deadline_ms = event.at_ms + 2 * self.t.ms("retransmit_wait_s") + self.t.ms("slack_s")
            self.detail = ", ".join(f"record {n} answered {_code(c)}" for n, c in event.data["treated"].items())
        elif isinstance(event, Frame) and event.frame.message is not None:
            frame, message = event.frame, event.frame.message
            if frame.direction == "kit" and message.msg_type == MessageType.ACK and any(
                    r.record_no in self.watched for r in message.results):
                self.log(frame)
            if frame.direction != "device" or message.msg_type not in _PUNCHES:
                return None
            if message.msg_type == MessageType.PUNCH_BATCH:
                self.batches += 1
                if self.kind == "batch" and len(message.records) > self.t.max_batch_records:
                    self.log(frame)
                    return self.decide(Verdict.FAIL, f"a PUNCH_BATCH of {len(message.records)} records: at most "
                                                     f"max_batch_records ({self.t.max_batch_records}) of AUTH_RESULT")
            again = [r.record_no for r in _records(message) if r.record_no in self.watched]
            if again:
                self.log(frame)
                return self.decide(Verdict.FAIL, f"record {again[0]} resent after the answer "
                                                 f"{_code(self.watched[again[0]])}, which ends it (§6.2, §6.4, §8)")
            if self.watched and len(self.wirelog) < 2:
                self.log(frame)
        elif isinstance(event, Tick) and self.deadline_ms is not None and event.at_ms >= self.deadline_ms:
            extra = "" if self.kind != "batch" else (
                f"; {self.batches} PUNCH_BATCH frames seen" if self.batches else
                "; the device sent no PUNCH_BATCH, so rows were graded on PUNCH frames")
            return self.decide(Verdict.PASS, f"{self.detail}: not resent within "
                                             f"{_s(2 * self.t.ms('retransmit_wait_s'))}{extra}")
        return None


class RetransmitTimeout(Item):
    """A withheld record is resent on the same connection after the retransmit wait."""

    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.conn: int | None = None
        self.since = 0
        self.records: set[int] = set()
        self.seq: int | None = None

    @property
    def armed(self) -> bool:
        return bool(self.records)

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        wait = self.t.ms("retransmit_wait_s")
        if isinstance(event, Note) and event.kind == "withheld" and event.data["mode"] == "timeout":
            self.conn, self.since, self.seq = event.conn, event.at_ms, event.data["seq"]
            self.records = set(event.data["records"])
            self.deadline_ms = self.since + 2 * wait + self.t.ms("slack_s")
            self.wirelog.append(describe(event.data["frame"]))
        elif isinstance(event, Closed) and event.conn == self.conn and self.records:
            self.records.clear()  # broken before the wait ran out: the examiner tries again
            self.deadline_ms = None
        elif isinstance(event, Frame) and event.frame.direction == "device" and self.records and (
                event.frame.conn == self.conn and event.frame.message is not None
                and event.frame.message.msg_type in _PUNCHES):
            frame = event.frame
            again = {r.record_no for r in _records(frame.message)} & self.records
            if not again:
                return None
            self.log(frame)
            gap = frame.at_ms - self.since
            if getattr(frame.message, "seq", None) == self.seq:
                return self.decide(Verdict.FAIL, "resent with the same seq: a resend is a new frame (§6.2)")
            if gap + self.t.ms("slack_s") < wait // 2:
                return self.decide(Verdict.FAIL, f"resent after {_s(gap)}, long before the retransmit wait "
                                                 f"({self.t.retransmit_wait_s:g} s)")
            return self.decide(Verdict.PASS, f"record {min(again)} resent {_s(gap)} after its ACK was withheld "
                                             f"(wait {self.t.retransmit_wait_s:g} s)")
        elif isinstance(event, Tick) and self.deadline_ms is not None and event.at_ms >= self.deadline_ms:
            return self.decide(Verdict.FAIL, f"record {min(self.records)} not resent within "
                                             f"{_s(self.deadline_ms - self.since)} of its withheld ACK (§6.2: resend "
                                             f"after {self.t.retransmit_wait_s:g} s without an answer)")
        return None


class RetransmitReconnect(Item):
    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.conn: int | None = None
        self.records: set[int] = set()
        self.since = 0

    @property
    def armed(self) -> bool:
        return bool(self.records)

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Note) and event.kind == "withheld" and event.data["mode"] == "reconnect":
            self.conn, self.since, self.records = event.conn, event.at_ms, set(event.data["records"])
            self.deadline_ms = (self.since + self.t.ms("reconnect_wait_s") + 2 * self.t.ms("retransmit_wait_s")
                                + self.t.ms("auth_timeout_s"))
            self.wirelog.append(describe(event.data["frame"]))
        elif isinstance(event, Frame) and self.records and event.frame.direction == "device" and (
                event.frame.conn != self.conn and event.frame.message is not None
                and event.frame.message.msg_type in _PUNCHES):
            again = {r.record_no for r in _records(event.frame.message)} & self.records
            if again:
                self.log(event.frame)
                return self.decide(Verdict.PASS, f"record {min(again)}, unanswered when the kit broke the "
                                                 f"connection, resent in the next session")
        elif isinstance(event, Tick) and self.deadline_ms is not None and event.at_ms >= self.deadline_ms:
            return self.decide(Verdict.FAIL, f"record {min(self.records)}, unanswered when the kit broke the "
                                             "connection, was not resent in a later session (§6.2)")
        return None


# --- photos ------------------------------------------------------------------------------------


def _no_photo_capability(event: Event) -> bool | None:
    """From a device's HELLO: True when it announces no photo upload (capability bit 6)."""
    if isinstance(event, Frame) and event.frame.direction == "device" and event.frame.message is not None and (
            event.frame.message.msg_type == MessageType.HELLO):
        return not event.frame.message.capabilities & Capability.PHOTO_UPLOAD
    return None


class _PhotoItem(Item):
    """A photo item does not apply to a terminal that announces no photo upload in HELLO and
    sends no photo: it ends "informational" (not a MUST missed: the terminal has no camera)."""

    no_camera = False

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        answer = _no_photo_capability(event)
        if answer is not None:
            self.no_camera = answer
        return None

    def finish(self, now_ms: int) -> None:
        if self.verdict is None and self.no_camera and not self.wirelog:
            self.decide(Verdict.INFORMATIONAL, "not applicable: HELLO announces no photo upload (capability bit 6) "
                                               "and the terminal sent no photo")
        super().finish(now_ms)


class PhotoUpload(_PhotoItem):
    """Chunks follow the punch's ACK, one photo at a time, from the server's offset; a
    photo completes with its announced hash. Passes on the first photo completed."""

    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.acked: dict[int, tuple[bytes, int]] = {}  # record_no -> (sha, size) answered OK/DUPLICATE
        self.next_offset: dict[bytes, int] = {}
        self.open_photo: dict[int, bytes] = {}  # conn -> photo in progress
        self.cut: set[bytes] = set()

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        super().observe(event, now_ms)
        if isinstance(event, Note) and event.kind == "answered":
            for record_no, code in event.data["codes"].items():
                photo = event.data["photos"].get(record_no)
                if photo is not None and code in (ResultCode.OK, ResultCode.DUPLICATE):
                    self.acked[record_no] = photo
            return None
        if isinstance(event, Note) and event.kind == "photo_cut":
            self.cut.add(event.data["sha"])
            self.open_photo.pop(event.conn, None)
            return None
        if isinstance(event, Closed):
            self.open_photo.pop(event.conn, None)
            return None
        if not isinstance(event, Frame) or event.frame.message is None:
            return None
        frame, message = event.frame, event.frame.message
        kind = message.msg_type
        if frame.direction == "kit" and kind == MessageType.PHOTO_STATUS:
            self.next_offset[message.photo_sha256] = message.next_offset
            if message.photo_sha256 not in self.cut:
                self.log(frame)
            if message.result == ResultCode.PHOTO_HASH_MISMATCH:
                return self.decide(Verdict.FAIL, "the photo's bytes do not hash to the photo_sha256 of its punch")
            if message.result == ResultCode.OK and message.photo_sha256 == self.open_photo.get(frame.conn):
                total = self._total(message.photo_sha256)
                if total is not None and message.next_offset == total:
                    del self.open_photo[frame.conn]
                    if message.photo_sha256 not in self.cut:
                        return self.decide(Verdict.PASS, f"a photo of {total} bytes uploaded after its punch's ACK, "
                                                         "its SHA-256 as announced")
            return None
        if frame.direction != "device" or kind not in (MessageType.PHOTO_CHUNK, MessageType.PHOTO_QUERY):
            return None
        if message.photo_sha256 not in self.cut:
            self.log(frame)
        announced = self.acked.get(message.record_no)
        if announced is None:
            return self.decide(Verdict.FAIL, f"photo of record {message.record_no} sent before the punch was "
                                             "acknowledged (OK or DUPLICATE): upload after the ACK (§6.5)")
        if announced != (message.photo_sha256, message.total_size):
            return self.decide(Verdict.FAIL, f"photo of record {message.record_no}: sha256/size differ from what the "
                                             "punch announced")
        if kind == MessageType.PHOTO_QUERY:
            return None
        current = self.open_photo.get(frame.conn)
        if current is not None and current != message.photo_sha256:
            return self.decide(Verdict.FAIL, "a chunk of a second photo while another was unfinished: upload one "
                                             "photo at a time (§6.5)")
        expected = self.next_offset.get(message.photo_sha256, 0)
        if message.offset != expected and message.photo_sha256 not in self.cut:
            return self.decide(Verdict.FAIL, f"chunk at offset {message.offset}; the last PHOTO_STATUS said "
                                             f"{expected} (§6.5)")
        self.open_photo[frame.conn] = message.photo_sha256
        self.evidence += 1
        return None

    def _total(self, sha: bytes) -> int | None:
        for photo_sha, size in self.acked.values():
            if photo_sha == sha:
                return size
        return None

    def finish(self, now_ms: int) -> None:
        if self.verdict is None:
            self.evidence = 0  # a pass needs a photo completed
            self.detail = "no photo was completed: punch with a face snapshot (photo_size > 0)"
        super().finish(now_ms)


class PhotoResume(_PhotoItem):
    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.sha: bytes | None = None
        self.held = 0
        self.conn: int | None = None
        self.queried = False
        self.told: int | None = None
        self.total = -1

    @property
    def armed(self) -> bool:
        return self.sha is not None

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        super().observe(event, now_ms)
        if isinstance(event, Note) and event.kind == "photo_cut":
            self.sha, self.held, self.conn = event.data["sha"], event.data["held"], event.conn
            self.deadline_ms = event.at_ms + self.t.ms("reconnect_wait_s") + 2 * self.t.ms("retransmit_wait_s")
            self.wirelog.append(describe(event.data["frame"]))
            return None
        if self.sha is None or not isinstance(event, (Frame, Tick)):
            return None
        if isinstance(event, Tick):
            if self.deadline_ms is not None and event.at_ms >= self.deadline_ms:
                return self.decide(Verdict.FAIL, "the photo broken off by the kit was not completed in a later "
                                                 "session (§6.5)")
            return None
        frame, message = event.frame, event.frame.message
        if message is None or frame.conn == self.conn or getattr(message, "photo_sha256", None) != self.sha:
            return None
        self.log(frame)
        kind = message.msg_type
        if frame.direction == "device" and kind == MessageType.PHOTO_QUERY:
            self.queried = True
        elif frame.direction == "kit" and kind == MessageType.PHOTO_STATUS:
            if self.queried and self.told is None:
                self.told = message.next_offset
            if message.result == ResultCode.OK and self.told is not None and message.next_offset == self._total():
                return self.decide(Verdict.PASS, f"PHOTO_QUERY after the reconnect, resumed at the server's offset "
                                                 f"{self.told} and completed")
        elif frame.direction == "device" and kind == MessageType.PHOTO_CHUNK:
            if not self.queried:
                return self.decide(Verdict.FAIL, f"after the reconnect the device sent a chunk at offset "
                                                 f"{message.offset} without asking with PHOTO_QUERY where to resume")
            if self.told is not None and message.offset != self.told and self.evidence == 0:
                return self.decide(Verdict.FAIL, f"resumed at offset {message.offset}; PHOTO_STATUS said "
                                                 f"{self.told}")
            self.evidence += 1
            self.total = message.total_size
        return None

    def _total(self) -> int:
        return self.total

    def finish(self, now_ms: int) -> None:
        if self.verdict is None:
            self.evidence = 0
            if not self.detail:
                self.detail = ("no photo was broken off: punch with a face snapshot twice" if self.sha is None else
                               "the photo broken off was not completed")
        super().finish(now_ms)


# --- time and commands -------------------------------------------------------------------------


class TimeSync(Item):
    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.sessions = 0

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Frame) and event.frame.message is not None:
            message = event.frame.message
            if event.frame.direction == "kit" and message.msg_type == MessageType.AUTH_RESULT and message.result == 0:
                self.sessions += 1
            if event.frame.direction == "device" and message.msg_type == MessageType.TIME_SYNC_REQUEST:
                self.log(event.frame)
                return self.decide(Verdict.PASS, "TIME_SYNC_REQUEST sent")
        return None

    def finish(self, now_ms: int) -> None:
        if self.verdict is None and self.sessions:
            self.decide(Verdict.NON_STRICT, f"no TIME_SYNC_REQUEST in {self.sessions} sessions: synchronise at start "
                                            "(§6.6)")
        super().finish(now_ms)


class ReplyItem(Item):
    """Commands (Note "expect": conn, seq, Expect) answered in order with the right reply.

    A wrong answer or one out of order fails at once; a command still unanswered when the
    examiner gives up on it (Note "expect_timeout") fails; a connection that closes drops
    its commands (the kit sends them again). Passes at the end with every answer right."""

    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.pending: dict[tuple[int, int], Expect] = {}

    @property
    def armed(self) -> bool:
        return bool(self.pending)

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Note) and event.kind == "expect" and event.data["item"] == self.spec.id:
            self.pending[(event.conn, event.data["seq"])] = event.data["expect"]
            if len(self.wirelog) < WIRELOG_LIMIT:
                self.wirelog.append(describe(event.data["frame"]))
            return None
        if isinstance(event, Note) and event.kind == "expect_timeout" and (event.conn, event.data["seq"]) in (
                self.pending):
            timed_out = self.pending.pop((event.conn, event.data["seq"]))
            return self.decide(Verdict.FAIL, f"{timed_out.what}: no answer within {self.t.command_wait_s:g} s (§6.7)")
        if isinstance(event, Closed):
            for key in [k for k in self.pending if k[0] == event.conn]:
                del self.pending[key]
            return None
        if not isinstance(event, Frame) or event.frame.direction != "device" or event.frame.message is None:
            return None
        frame, message = event.frame, event.frame.message
        if message.msg_type not in _DEVICE_ANSWERS:
            return None
        ref = message.ref_seq
        key = (frame.conn, ref)
        expect = self.pending.pop(key) if key in self.pending else None
        if expect is None:
            earlier = [seq for (conn, seq) in self.pending if conn == frame.conn and seq < ref]
            if earlier:
                self.log(frame)
                what = self.pending[(frame.conn, earlier[0])].what
                return self.decide(Verdict.FAIL, f"{what} (seq {earlier[0]}) not answered before the later command "
                                                 f"seq {ref}: answer commands in order (§6.7)")
            return None
        self.log(frame)
        problem = self._check(message, expect)
        if problem:
            return self.decide(Verdict.FAIL, f"{expect.what}: {problem}")
        self.evidence += 1
        self.detail = f"{_n(self.evidence, 'answer')}, each right and in order"
        return None

    @staticmethod
    def _check(message: Any, expect: Expect) -> str | None:
        kind = message.msg_type
        if kind == MessageType.NACK:
            if expect.kind == "nack" and message.result in expect.codes:
                if expect.ref_type is not None and message.ref_type != expect.ref_type:
                    return f"NACK names type 0x{message.ref_type:04X}, the frame was 0x{expect.ref_type:04X}"
                return None
            if expect.kind == "ack" and message.result in expect.codes:
                return None
            return f"answered NACK {_code(message.result)}"
        if expect.kind == "nack":
            return f"answered {kind.name}; NACK {' or '.join(_code(c) for c in expect.codes)} expected"
        if kind == MessageType.ACK:
            return None if expect.kind == "ack" else f"answered ACK; {expect.kind.upper()} expected"
        if kind == MessageType.ROSTER_VERSION_REPLY:
            if expect.kind != "rvr":
                return "answered ROSTER_VERSION_REPLY"
            if expect.version is not None and message.roster_version != expect.version:
                return f"reports roster version {message.roster_version}, {expect.version} expected"
            return None
        if kind == MessageType.CONFIG_REPLY:
            if expect.kind != "config_reply":
                return "answered CONFIG_REPLY"
            keys = [entry.key for entry in message.entries]
            unknown = [k for k in keys if k in expect.unknown_keys]
            if unknown:
                return f"answers unknown key {unknown[0]!r}: leave unknown keys out"
            stray = [k for k in keys if k not in expect.keys]
            if stray:
                return f"answers key {stray[0]!r}, which was not asked"
            if keys != [k for k in expect.keys if k in keys]:
                return f"keys {keys} not in the order asked {list(expect.keys)}"
            return None
        return f"answered {kind.name}"

    def finish(self, now_ms: int) -> None:
        if self.verdict is None and self.pending:
            what = next(iter(self.pending.values())).what
            self.decide(Verdict.FAIL, f"{what}: unanswered when the kit stopped")
        super().finish(now_ms)


class SetTime(ReplyItem):
    """SET_TIME answered with ACK, then the device's next frame that shows its clock
    (`_device_clock`) carries the time set, within the clock tolerance."""

    def __init__(self, item_id: str, ctx: Context):
        super().__init__(item_id, ctx)
        self.target: tuple[int, int, int, int] | None = None  # conn, seq, set at, value
        self.acked_at: int | None = None
        self.records_seen: set[int] = set()

    def _device_clock(self, message: Any) -> int | None:
        """The device's clock in a frame that carries it: HEARTBEAT and TIME_SYNC_REQUEST
        (`device_time_ms`), the device's own ACK (`server_time_ms`: the sender's clock), and
        the punch time of a record not seen before (a punch made now)."""
        kind = message.msg_type
        if kind in (MessageType.HEARTBEAT, MessageType.TIME_SYNC_REQUEST):
            return int(message.device_time_ms)
        if kind == MessageType.ACK:
            return int(message.server_time_ms)
        if kind == MessageType.PUNCH and message.record_no not in self.records_seen:
            return int(message.punch_time_ms)
        return None

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Note) and event.kind == "set_time":
            self.target = (event.conn, event.data["seq"], event.at_ms, event.data["value_ms"])
            self.acked_at = None
        verdict = super().observe(event, now_ms)
        if verdict is not None or self.target is None:
            return verdict
        conn, seq, at, value = self.target
        if isinstance(event, Frame) and event.frame.direction == "device" and event.frame.conn == conn and (
                event.frame.message is not None):
            message = event.frame.message
            if message.msg_type == MessageType.ACK and message.ref_seq == seq:
                self.acked_at = event.frame.at_ms
                self.deadline_ms = self.acked_at + self.t.ms("heartbeat_interval_s") * 2 + self.t.ms("slack_s")
            elif self.acked_at is not None and (device_ms := self._device_clock(message)) is not None:
                self.log(event.frame)
                expected = value + (event.frame.at_ms - at)
                off = device_ms - expected
                if abs(off) > self.t.ms("clock_tolerance_s"):
                    return self.decide(Verdict.FAIL, f"after SET_TIME the device's clock is {off / 1000:+.1f} s off "
                                                     f"the time set (its {message.msg_type.name}; tolerance "
                                                     f"{self.t.clock_tolerance_s:g} s)")
                return self.decide(Verdict.PASS, f"SET_TIME acknowledged; the device's next {message.msg_type.name} "
                                                 f"carried the time set ({off / 1000:+.2f} s)")
            if message.msg_type == MessageType.PUNCH:
                self.records_seen.add(message.record_no)
        elif isinstance(event, Closed) and event.conn == conn:
            self.target, self.deadline_ms = None, None
        elif isinstance(event, Tick) and self.deadline_ms is not None and event.at_ms >= self.deadline_ms:
            return self.decide(Verdict.FAIL, "no frame after SET_TIME's ACK showed the device's clock (HEARTBEAT, "
                                             "TIME_SYNC_REQUEST, ACK, a new PUNCH)")
        return None

    @property
    def armed(self) -> bool:
        return self.target is not None or bool(self.pending)


class UnknownMessage(ReplyItem):
    """NACK UNSUPPORTED_MESSAGE for the unknown type; a device that closes instead fails."""

    def observe(self, event: Event, now_ms: int) -> Verdict | None:
        if isinstance(event, Closed) and any(conn == event.conn for conn, _ in self.pending) and event.by == "device":
            return self.decide(Verdict.FAIL, "the device closed the connection instead of answering an unknown "
                                             "message with NACK UNSUPPORTED_MESSAGE (§8: never disconnect for that)")
        return super().observe(event, now_ms)


def build_items(ctx: Context, validate: Any) -> dict[str, Item]:
    """One grader per catalogue item, in catalogue order."""
    items: dict[str, Item] = {
        "frame.format": FrameFormat("frame.format", ctx),
        "auth.handshake": AuthHandshake("auth.handshake", ctx),
        "auth.before_ok": AuthBeforeOk("auth.before_ok", ctx),
        "auth.refusal.auth_timeout": ReconnectWait("auth.refusal.auth_timeout", ctx, "auth_timeout"),
        "auth.refusal.server_busy": ReconnectWait("auth.refusal.server_busy", ctx, "server_busy"),
        "auth.refusal.locked_out": ReconnectWait("auth.refusal.locked_out", ctx, "locked_out"),
        "auth.refusal.unknown_device": ReconnectWait("auth.refusal.unknown_device", ctx, "unknown_device"),
        "auth.refusal.bad_signature": ReconnectWait("auth.refusal.bad_signature", ctx, "bad_signature"),
        "heartbeat.interval": HeartbeatInterval("heartbeat.interval", ctx),
        "session.window": SessionWindow("session.window", ctx),
        "punch.ack": PunchAck("punch.ack", ctx, validate),
        "punch.batch": NoResend("punch.batch", ctx, "batch"),
        "punch.retransmit_timeout": RetransmitTimeout("punch.retransmit_timeout", ctx),
        "punch.retransmit_reconnect": RetransmitReconnect("punch.retransmit_reconnect", ctx),
        "punch.duplicate": NoResend("punch.duplicate", ctx, "duplicate"),
        "extension.unknown_result_code": NoResend("extension.unknown_result_code", ctx, "unknown_code"),
        "photo.upload": PhotoUpload("photo.upload", ctx),
        "photo.resume": PhotoResume("photo.resume", ctx),
        "time.sync": TimeSync("time.sync", ctx),
        "time.set_time": SetTime("time.set_time", ctx),
        "command.unknown_message": UnknownMessage("command.unknown_message", ctx),
        "reconnect.goodbye_backoff": ReconnectWait("reconnect.goodbye_backoff", ctx, "goodbye"),
        "reconnect.backoff": BackoffGrowth("reconnect.backoff", ctx),
        "reconnect.takeover": ReconnectWait("reconnect.takeover", ctx, "takeover"),
    }
    for spec in ITEMS.values():
        if spec.id not in items:
            items[spec.id] = ReplyItem(spec.id, ctx)
    return {spec_id: items[spec_id] for spec_id in ITEMS}
