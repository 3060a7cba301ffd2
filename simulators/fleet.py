"""A fleet of simulated terminals for load: scenarios, processes, source addresses, totals.

`lmg sim terminals --scenario ...` and `lmg bench load` run this. One `Fleet` is one event
loop holding up to ~15,000 terminals (a process may hold 20,000 descriptors); `run_fleet`
spreads larger fleets over several processes (`python -m lmg.simulators.fleet`, a spec on
stdin, JSON lines out) and over loopback source addresses, since one (source, destination)
address pair offers only ~28,000 ephemeral ports.

Each terminal behaves as docs/protocol.md asks of firmware: HELLO/CHALLENGE/AUTH,
HEARTBEAT every interval, at most `window` frames waiting for an answer, records kept in an
offline buffer until an ACK row answers them, unanswered records resent (same record_no,
new seq) after 15 s or a lost connection, NACKs meaning "try later" retried after a pause,
reconnect with exponential back-off (1 s doubling to 60 s, each wait randomised by +-50 %)
or after a GOODBYE's `reconnect_after_s`. Connections are asyncio Protocols fed by the
loop; the only task per terminal is its connect/reconnect loop, and heartbeats, pacing and
answer timeouts are three process-wide tickers, not a timer per terminal.

Commands from the server (§6.7: roster pushes with faces, SET_TIME, CONFIG_GET, ...) are
carried out on a `TerminalDevice` per terminal (simulators/device.py) and answered at once,
so a benchmark can push a roster to the fleet while it punches. The device is made at the
first command (a storm of 20,000 terminals that get none pays nothing), lives across the
terminal's connections, and keeps faces as hashes only (no bytes). The punch path pays
nothing for it: ACK and NACK are matched first, and only other frames are looked up in
COMMAND_TYPES, one set lookup. The summary gives the spread of roster versions and sizes.

Photos (section 6.5, `photo_share` of the punches, `photo_bytes` each): the punch announces
the photo's size and SHA-256; once an ACK row answers it OK or DUPLICATE the photo joins the
terminal's queue, and the terminal uploads one photo at a time, one frame of it in flight
(simulators/photo_upload.py makes the frames and reads the PHOTO_STATUS answers), in chunks
of at most `photo_chunk_bytes` that fit AUTH_RESULT's `max_frame_size`. A photo frame takes
a place in the window ahead of punches, or a closed loop would never leave it one. After a
lost connection or an unanswered frame the upload asks with PHOTO_QUERY where to resume.
Photo bytes are made again from (serial, record_no) for every chunk (`synthetic_photo`), so
hours of punches cost 32-byte hashes, not photos. The summary counts photos announced,
started, confirmed and refused, and photo bytes sent and confirmed.

Frames the fleet cannot decode (a bad checksum, an unknown type) are counted (`bad_frames`)
and answered with NACK when their seq is readable, on TCP and WebSocket alike.

Dialects, so one fleet drives each server of the load benchmark with the same behaviour:
`lmg` (the gateway), `bare` (the baseline server: no handshake, answers matched in order,
which the protocol guarantees, section 6.2) and `mqtt` (QoS 1 PUBLISH of the same punch
frame bytes, PUBACK by packet id, see simulators/mqtt.py).

Latencies go into log-bucketed histograms (2 % wide buckets, 1,024 counters) so a process
reports a bounded object however many answers it timed, and processes' histograms add.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import os
import random
import resource
import socket
import ssl
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

import orjson

from lmg.protocol import (
    Ack,
    Auth,
    AuthResult,
    Challenge,
    MAX_FRAME_SIZE,
    FrameDecoder,
    Goodbye,
    Heartbeat,
    Hello,
    MessageType,
    Nack,
    PhotoChunk,
    PhotoStatus,
    ProtocolError,
    Punch,
    PunchBatch,
    PunchRecord,
    ResultCode,
    decode_frame,
    encode,
)
from lmg.protocol.auth import auth_mac
from lmg.protocol.codes import Capability
from lmg.simulators import mqtt
from lmg.simulators.device import COMMAND_TYPES, TerminalDevice
from lmg.simulators.photo_upload import DEFAULT_CHUNK_BYTES, PhotoUpload, Step, chunk_limit
from lmg.simulators.reconnect import BackoffPolicy, backoff_s
from lmg.simulators.terminal import worker_id_for

if TYPE_CHECKING:
    from picows import WSListener, WSTransport

SCENARIOS = ("rush", "idle", "backlog", "storm", "chaos")
DIALECTS = ("lmg", "bare", "mqtt")
FIRMWARE = "fleet-1.0"
# NACKs that mean "nothing was stored, try again later" (docs/protocol.md 6.2).
RETRY_LATER = frozenset({ResultCode.STORE_UNAVAILABLE, ResultCode.SERVER_BUSY, ResultCode.RATE_LIMITED,
                         ResultCode.SHUTTING_DOWN})
# After a "try later" answer the terminal waits the §6.8 back-off (1 s doubling to 60 s,
# ±50 %), reset by the next answer that stored something (§6.2). A fixed 1 s pause made
# 10,000 terminals resend 150,000 records a second at a gateway already behind, and the
# refusals alone kept it behind (issue 17's outage run).
TRY_LATER_BACKOFF = BackoffPolicy()
WORKERS_PER_SITE = 1000  # distinct worker IDs a terminal's punches cycle through
CHAOS_KINDS = ("garbage", "oversize", "silent", "deaf")
# Per-terminal cap on records generated for closed-loop load, so a fleet is bounded even if
# the server acknowledges faster than expected: 2^31 record numbers are far away.
RECORD_NO_LIMIT = (1 << 31) - 1
# The counter each command type adds to, named once rather than formatted per frame.
COMMAND_COUNTERS = {kind: f"command_{MessageType(kind).name.lower()}" for kind in COMMAND_TYPES}
# The summary's "photos" object: its key -> the counter it reads.
PHOTO_COUNTERS = {"announced": "photos_announced", "started": "photos_started", "confirmed": "photos_confirmed",
                  "refused": "photos_refused", "bytes_sent": "photo_bytes_sent",
                  "bytes_confirmed": "photo_bytes_confirmed", "chunks_sent": "photo_chunks_sent",
                  "queries": "photo_queries", "retries": "photo_retries"}
# What an in-flight entry holds instead of records when the frame is a PHOTO_CHUNK or PHOTO_QUERY.
PHOTO_FRAME = "photo"
PHOTO_MAX_BYTES = 2 << 20  # the server's default photo limit (docs/protocol.md 4.1); larger is refused
ACCEPTED = frozenset({ResultCode.OK, ResultCode.DUPLICATE})  # a punch whose photo may be uploaded (6.5)


@functools.lru_cache(maxsize=4)
def _photo_fill(size: int) -> bytes:
    # incompressible, as a JPEG is: PostgreSQL's TOAST compression must not flatter the figures
    return random.Random(size).randbytes(size)


def synthetic_photo(serial: str, record_no: int, size: int) -> bytes:
    """A `size`-byte face snapshot for punch `record_no` of `serial`: a JPEG start marker and
    the two names, then random bytes shared by all photos of that size. Unique per punch
    (photos are stored once per SHA-256) and made again on demand, so a terminal holding
    hours of punches keeps 32-byte hashes, not photos."""
    head = b"\xff\xd8\xff\xe0" + f"{serial}:{record_no}:".encode()
    return (head + _photo_fill(size))[:size]


def fleet_secret(serial: str, seed: str = "lmg-fleet") -> bytes:
    """The 32-byte secret `lmg bench load` provisions for `serial`: derived, so the fleet's
    processes need only serials, not a CSV of secrets. Test use only."""
    return hashlib.sha256(f"{seed}:{serial}".encode()).digest()


class Histogram:
    """Latencies in log buckets: bucket i holds [e^(i/50), e^((i+1)/50)) microseconds."""

    SCALE = 50.0  # buckets per e-fold: each 2 % wide, so quantiles are within 1 %
    SIZE = 1024  # e^(1024/50) us = 12.7 min: anything longer lands in the last bucket

    __slots__ = ("counts", "n", "max_s")

    def __init__(self) -> None:
        self.counts = [0] * self.SIZE
        self.n = 0
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        us = seconds * 1e6
        index = int(math.log(us) * self.SCALE) if us > 1.0 else 0
        self.counts[index if index < self.SIZE else self.SIZE - 1] += 1
        self.n += 1
        if seconds > self.max_s:
            self.max_s = seconds

    def merge(self, other: "Histogram") -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.n += other.n
        self.max_s = max(self.max_s, other.max_s)

    def quantile_ms(self, q: float) -> float | None:
        if not self.n:
            return None
        target, seen = q * self.n, 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= target and count:
                return round(math.exp((index + 0.5) / self.SCALE) / 1000, 3)
        return round(self.max_s * 1000, 3)

    def summary(self) -> dict:
        return {"count": self.n, "p50_ms": self.quantile_ms(0.5), "p99_ms": self.quantile_ms(0.99),
                "p999_ms": self.quantile_ms(0.999), "max_ms": round(self.max_s * 1000, 3)}

    def to_json(self) -> dict:
        return {"n": self.n, "max_s": self.max_s, "buckets": {str(i): c for i, c in enumerate(self.counts) if c}}

    @classmethod
    def from_json(cls, data: dict) -> "Histogram":
        hist = cls()
        for index, count in data["buckets"].items():
            hist.counts[int(index)] = count
        hist.n, hist.max_s = data["n"], data["max_s"]
        return hist


@dataclass
class FleetSpec:
    """What one fleet process does. Durations in seconds, rates in punches per second."""

    host: str
    port: int
    devices: list  # [serial, secret hex]
    scenario: str = "rush"
    dialect: str = "lmg"
    transport: str = "tcp"  # tcp | ws (lmg only)
    tls: bool = False
    duration_s: float = 10.0  # measured time after every terminal is connected (storm/backlog: a cap)
    warmup_s: float = 0.0  # after the connect phase, before measuring
    rate: float = 0.0  # punches/s from this process; 0 = closed loop, every window kept full
    punches_per_device: int = 0  # 0 = no limit (until the duration ends)
    batch_size: int = 1
    window: int = 8  # frames in flight per terminal (the protocol's maximum)
    heartbeat_s: float = 0.0  # 0 = what AUTH_RESULT says; < 0 = none
    backlog_records: int = 1000  # backlog: records each terminal holds when it comes back
    backlog_span_s: float = 0.0  # backlog: punch times spread over this many seconds before now (the outage)
    photo_share: float = 0.0  # share of punches with a face snapshot (lmg dialect), uploaded after their ACK
    photo_bytes: int = 30 * 1024  # size of each snapshot
    photo_chunk_bytes: int = DEFAULT_CHUNK_BYTES  # data per PHOTO_CHUNK, capped by AUTH_RESULT's max_frame_size
    chaos_share: float = 0.2  # chaos: this share of terminals misbehave
    source_addresses: list = field(default_factory=list)
    connect_concurrency: int = 256  # handshakes in flight: beyond the listen backlog SYNs are dropped
    connect_phase_s: float = 60.0  # cap on the connect phase before measuring starts anyway
    reconnect_base_s: float = 1.0
    reconnect_max_s: float = 60.0
    ack_timeout_s: float = 15.0
    first_record: int = 1
    progress_s: float = 1.0
    wait_for_go: bool = False  # storm, backlog: wait for "go" on stdin (several processes start together)

    def __post_init__(self) -> None:
        """Raise ValueError naming the field and what to do."""
        if not 0.0 <= self.photo_share <= 1.0:
            raise ValueError(f"photo share must be between 0 and 1 (a share of punches), not {self.photo_share}")
        if self.photo_share and self.dialect != "lmg":
            raise ValueError(f"photos are uploaded in the lmg dialect only, not {self.dialect!r}: use photo share 0")
        if self.photo_share and not 1 <= self.photo_bytes <= PHOTO_MAX_BYTES:
            raise ValueError(f"a photo must be 1..{PHOTO_MAX_BYTES} bytes (the server's default limit), "
                             f"not {self.photo_bytes}")
        if self.photo_chunk_bytes < 1:
            raise ValueError(f"photo chunks must carry at least 1 byte, not {self.photo_chunk_bytes}")


# Linux: bind() picks no port until connect(). A bind(ip, 0) otherwise searches for a port
# no bound socket uses, which with 10,000 sockets on one source address took seconds of
# kernel time per thousand connects (a 20,000-terminal storm did not finish in 60 s).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def connected_socket(host: str, port: int, source: str) -> socket.socket:
    """A non-blocking TCP socket from `source` (an address, any port) connected to host:port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class Refused(Exception):
    def __init__(self, code: int):
        super().__init__(ResultCode(code).name if code in ResultCode._value2member_map_ else str(code))
        self.code = code


# --- wires: bytes in and out for one connection ---------------------------------------------


class Wire(Protocol):
    """What a terminal needs of its connection: a TcpWire or a WsWire."""

    def write(self, data: bytes) -> None: ...

    def close(self, abort: bool = False) -> None: ...


class TcpWire(asyncio.Protocol):
    __slots__ = ("terminal", "transport", "decoder", "mqtt_reader")

    def __init__(self, terminal: "Terminal"):
        self.terminal = terminal
        # None only until connection_made, which the loop calls before any other callback
        # and before create_connection hands the wire to the terminal.
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.decoder = FrameDecoder() if terminal.fleet.spec.dialect != "mqtt" else None
        self.mqtt_reader = mqtt.PacketReader() if self.decoder is None else None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        terminal = self.terminal
        if self.decoder is not None:
            for item in self.decoder.feed(data):
                terminal.on_frame(item)
        else:
            try:
                packets = self.mqtt_reader.feed(data)  # type: ignore[union-attr]  # set when decoder is None
            except mqtt.MqttError:
                self.transport.abort()
                return
            for kind, body in packets:
                terminal.on_mqtt(kind, body)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self, abort: bool = False) -> None:
        self.transport.abort() if abort else self.transport.close()

    def connection_lost(self, exc) -> None:
        self.terminal.on_lost()


def _ws_wire_class() -> Callable[[Terminal], WSListener]:
    from picows import WSListener, WSMsgType

    class WsWire(WSListener):
        """One protocol frame per binary WebSocket message, as server/gateway/websocket.py expects."""

        def __init__(self, terminal: "Terminal"):
            self.terminal = terminal
            # None only until on_ws_connected, which picows calls before ws_connect returns
            self.transport: WSTransport = None  # type: ignore[assignment]

        def on_ws_connected(self, transport) -> None:
            self.transport = transport

        def on_ws_frame(self, transport, frame) -> None:
            if frame.msg_type is WSMsgType.BINARY:
                try:
                    item = decode_frame(frame.get_payload_as_bytes())
                except ProtocolError as exc:  # counted and answered as on TCP (section 6.9)
                    item = exc
                self.terminal.on_frame(item)
            elif frame.msg_type is WSMsgType.CLOSE:
                transport.disconnect()

        def on_ws_disconnected(self, transport) -> None:
            self.terminal.on_lost()

        def write(self, data: bytes) -> None:
            self.transport.send(WSMsgType.BINARY, data)

        def close(self, abort: bool = False) -> None:
            self.transport.disconnect(graceful=not abort)

    return WsWire


# --- one terminal ----------------------------------------------------------------------------


class Terminal:
    """One simulated device across its connections: buffer, window, handshake, reconnects."""

    def __init__(self, fleet: "Fleet", index: int, serial: str, secret: bytes):
        self.fleet = fleet
        self.index = index
        self.serial = serial
        self.secret = secret
        # None until the first connect, then the latest connection's. In state handshake or
        # online it is the live one: the senders that run only then use it unchecked.
        self.wire: Wire | None = None
        self.state = "offline"  # offline | handshake | online
        self.seq = 0
        self.buffer: deque = deque()  # records not yet answered and not in flight
        self.inflight: dict = {}  # seq -> (records or None for a heartbeat, monotonic send time)
        self.next_record = fleet.spec.first_record
        self.supply = 0  # closed loop: records this terminal may still create (-1: no limit)
        self.waiter: asyncio.Future | None = None
        self.lost: asyncio.Future | None = None
        self.dropping = False  # we closed it on purpose (storm, end of run)
        self.reconnect_after_s: float | None = None
        self.sessions = 0
        self.heartbeat_s = 30.0
        self.worker_ids = fleet.worker_ids
        self._device: TerminalDevice | None = None  # made by the first command; see `device`
        # Photos (section 6.5): acknowledged punches' (record_no, sha256) waiting to upload, the
        # one upload under way, the seq of its frame in flight (at most one), a pause after
        # "try later" (a call_later handle), and the chunk size AUTH_RESULT allows.
        self.photos: deque = deque()
        self.upload: PhotoUpload | None = None
        self.photo_seq: int | None = None
        self.photo_pause: asyncio.TimerHandle | None = None
        self.try_later = 0  # "try later" answers since the last that stored something (the back-off's failures)
        self.punch_pause: asyncio.TimerHandle | None = None  # no punch is sent while it runs
        self.chunk_bytes = min(fleet.spec.photo_chunk_bytes, chunk_limit(MAX_FRAME_SIZE))

    @property
    def device(self) -> TerminalDevice:
        """The terminal's roster, faces and settings: made on first use, kept across connections."""
        if self._device is None:
            self._device = TerminalDevice(keep_faces=False, history_limit=0)
        return self._device

    # -- records ---------------------------------------------------------------------------
    def new_record(self, at_ms: int | None = None) -> PunchRecord:
        """The next punch (at `at_ms`, Unix ms; now by default), with a photo for `photo_share` of them."""
        record_no = self.next_record
        self.next_record += 1
        worker = self.worker_ids[(self.index * 7 + record_no) % len(self.worker_ids)]
        at = time.time_ns() // 1_000_000 if at_ms is None else at_ms
        fleet = self.fleet
        if fleet.photo_share and fleet.rng.random() < fleet.photo_share:
            size = fleet.spec.photo_bytes
            sha = hashlib.sha256(synthetic_photo(self.serial, record_no, size)).digest()
            fleet.stats["photos_announced"] += 1
            return PunchRecord(record_no, at, worker, 1 + record_no % 2, 1, 365, size, sha)
        return PunchRecord(record_no, at, worker, 1 + record_no % 2, 1, 365, 0, bytes(32))

    def offer(self) -> None:
        """A worker passed the turnstile: one new record into the offline buffer."""
        self.buffer.append(self.new_record())
        self.pump()

    def pump(self) -> None:
        """Send buffered records while the window allows; a photo frame goes first, as a
        closed loop would otherwise keep the window full of punches and starve the photos."""
        if self.state != "online":
            return
        spec = self.fleet.spec
        window, batch = spec.window, spec.batch_size
        if self.photo_seq is None and self.photo_pause is None and (self.upload or self.photos) \
                and len(self.inflight) < window:
            self._send_photo()
        buffer = self.buffer
        while len(self.inflight) < window and self.punch_pause is None:
            if not buffer:
                if self.supply == 0 or self.next_record >= RECORD_NO_LIMIT:
                    return
                if self.supply > 0:
                    self.supply -= 1
                buffer.append(self.new_record())
            records = [buffer.popleft() for _ in range(min(batch, len(buffer)))]
            self._send_records(records)

    def _next_seq(self) -> int:
        limit = 0xFFFF if self.fleet.spec.dialect == "mqtt" else 0xFFFFFFFF
        self.seq = self.seq % limit + 1
        return self.seq

    def _send_records(self, records: list) -> None:
        seq = self._next_seq()
        dialect = self.fleet.spec.dialect
        if len(records) == 1:
            frame = encode(Punch.of(records[0], seq))
        else:
            frame = encode(PunchBatch(tuple(records), seq))
        if dialect == "mqtt":
            frame = mqtt.publish_packet(self.fleet.topic, seq, frame)
        self.inflight[seq] = (records, time.monotonic())
        self.fleet.busy.add(self)
        self.fleet.stats["sent"] += len(records)
        try:
            self.wire.write(frame)  # type: ignore[union-attr]  # online: connected
        except (RuntimeError, OSError):  # the transport is closing: on_lost puts the records back
            pass

    # -- photos ----------------------------------------------------------------------------
    def _queue_photos(self, records: list, results: list) -> None:
        """Punches answered OK or DUPLICATE that announce a photo: their photos go up next."""
        for record, result in zip(records, results):
            if record.photo_size and result in ACCEPTED:
                self.photos.append((record.record_no, record.photo_sha256))

    def _send_photo(self) -> None:
        """The current upload's next frame (starting the next photo's upload if none is under way)."""
        stats = self.fleet.stats
        upload = self.upload
        if upload is None:
            record_no, sha = self.photos.popleft()
            upload = self.upload = PhotoUpload(record_no, sha, self.fleet.spec.photo_bytes, self.chunk_bytes)
            stats["photos_started"] += 1
        upload.chunk_size = self.chunk_bytes  # this session's AUTH_RESULT may allow another size
        frame = upload.next_frame(synthetic_photo(self.serial, upload.record_no, upload.total_size))
        seq = self._next_seq()
        self.inflight[seq] = (PHOTO_FRAME, time.monotonic())
        self.photo_seq = seq
        self.fleet.busy.add(self)
        if isinstance(frame, PhotoChunk):
            stats["photo_chunks_sent"] += 1
            stats["photo_bytes_sent"] += len(frame.data)
        else:
            stats["photo_queries"] += 1
        try:
            self.wire.write(encode(frame._replace(seq=seq)))  # type: ignore[union-attr]  # online: connected
        except (RuntimeError, OSError):  # the transport is closing: on_lost restarts the upload
            pass

    def _photo_answered(self, status: PhotoStatus) -> None:
        upload = self.upload
        if upload is None or self.photo_seq is None or status.photo_sha256 != upload.sha256:
            return  # the answer to a frame already given up on (answer timeout)
        self._photo_frame_done()
        stats = self.fleet.stats
        before = upload.confirmed
        step = upload.on_status(status)
        stats["photo_bytes_confirmed"] += upload.confirmed - before
        if upload.confirmed > before:  # bytes stored: the store keeps up again
            self.try_later = 0
        if step is Step.DONE:
            stats["photos_confirmed"] += 1
            self.upload = None
        elif step is Step.GIVE_UP:
            stats["photos_refused"] += 1
            stats[f"photo_refused_{_code_name(status.result).lower()}"] += 1
            self.upload = None
        elif step is Step.RETRY_LATER:
            self._photo_later(status.result)

    def _photo_nacked(self, code: int) -> None:
        """A NACK answered the photo frame: try later, or drop the photo (a final refusal)."""
        self._photo_frame_done()
        if code in RETRY_LATER:
            self._photo_later(code)
        else:
            self.fleet.stats["photos_refused"] += 1
            self.fleet.stats[f"photo_refused_{_code_name(code).lower()}"] += 1
            self.upload = None

    def _photo_frame_done(self) -> None:
        self.inflight.pop(self.photo_seq, None)
        self.photo_seq = None
        if not self.inflight:
            self.fleet.busy.discard(self)

    def _photo_later(self, code: int) -> None:
        self.fleet.stats["photo_retries"] += 1
        self.fleet.stats[f"photo_retry_{_code_name(code).lower()}"] += 1
        self.photo_pause = asyncio.get_running_loop().call_later(self._try_later_s(), self._photo_resume)

    def _punch_resume(self) -> None:
        self.punch_pause = None
        self.pump()

    def _photo_resume(self) -> None:
        self.photo_pause = None
        self.pump()

    def settled(self) -> tuple[bool, bool]:
        """(every punch answered, every photo uploaded or refused): nothing left to send."""
        # Heartbeats and the photo frame in flight are not punches: counting a heartbeat made
        # 5,000 terminals' "all answered" wait for a moment with none in flight (+49 s).
        punches = not self.buffer and self.supply == 0 and all(
            records is None or records is PHOTO_FRAME for records, _ in self.inflight.values())
        return punches, punches and not self.photos and self.upload is None

    def heartbeat(self) -> None:
        if self.state != "online" or self.fleet.spec.dialect != "lmg":
            return
        seq = self._next_seq()
        self.inflight[seq] = (None, time.monotonic())
        self.fleet.busy.add(self)
        self.fleet.stats["heartbeats_sent"] += 1
        pending = len(self.buffer)
        frame = encode(Heartbeat(time.time_ns() // 1_000_000, pending, 0, seq))
        self.wire.write(frame)  # type: ignore[union-attr]  # online: connected

    # -- answers -----------------------------------------------------------------------------
    def on_frame(self, item) -> None:
        if isinstance(item, ProtocolError):
            self.fleet.stats["bad_frames"] += 1
            if self.fleet.spec.dialect == "lmg":
                self._command(item)  # NACK of its code when its seq could be read (section 6.9)
            return
        if isinstance(item, (Ack, Nack)):
            if self.fleet.spec.dialect == "bare":
                seq = next(iter(self.inflight), None)  # answers come in order (6.2)
            else:
                seq = item.ref_seq
            entry = self.inflight.pop(seq, None) if seq is not None else None
            if entry is None:
                return  # an answer to a frame already given up on and resent
            if not self.inflight:
                self.fleet.busy.discard(self)
            records, sent_at = entry
            if records is None:
                self.fleet.stats["heartbeats_acked"] += 1
            elif records is PHOTO_FRAME:  # only a NACK answers a photo frame by its seq
                self.inflight[seq] = entry  # _photo_nacked takes it out
                self._photo_nacked(item.result if isinstance(item, Nack) else ResultCode.MALFORMED_BODY)
            elif isinstance(item, Nack):
                self._nacked(records, item.result)
            elif self.fleet.spec.dialect == "bare":
                self.fleet.answered(records, [ResultCode.OK] * len(records), sent_at)
            else:
                results = [row.result for row in item.results]
                self.try_later = 0
                self.fleet.answered(records, results, sent_at)
                if self.fleet.photo_share:
                    self._queue_photos(records, results)
            self.pump()
        elif type(item) is PhotoStatus:
            self._photo_answered(item)
            self.pump()
        elif item.msg_type in COMMAND_TYPES:
            self._command(item)
        elif isinstance(item, Challenge):
            if self.state == "handshake":
                auth = Auth(auth_mac(self.secret, item.nonce, self.serial, FIRMWARE, 1), self._next_seq())
                self.wire.write(encode(auth))  # type: ignore[union-attr]  # handshake: connected
        elif isinstance(item, AuthResult):
            if self.waiter is not None and not self.waiter.done():
                if item.result == ResultCode.OK:
                    self.heartbeat_s = item.heartbeat_interval_s
                    self.chunk_bytes = min(self.fleet.spec.photo_chunk_bytes, chunk_limit(item.max_frame_size))
                    self.waiter.set_result(True)
                else:
                    self.waiter.set_exception(Refused(item.result))
        elif isinstance(item, Goodbye):
            self.fleet.stats["goodbyes"] += 1
            self.fleet.stats[f"goodbye_{_code_name(item.reason).lower()}"] += 1
            self.reconnect_after_s = item.reconnect_after_s

    def _command(self, item) -> None:
        """Carry out a command (or answer an undecodable frame) and write the answers at once."""
        if self.wire is None or self.state == "offline":
            return
        stats = self.fleet.stats
        if not isinstance(item, ProtocolError):
            stats["commands"] += 1
            stats[COMMAND_COUNTERS[item.msg_type]] += 1
        for reply in self.device.handle(item, time.time_ns() // 1_000_000):
            if isinstance(reply, Nack):
                stats["command_nacks"] += 1
            try:
                self.wire.write(encode(reply._replace(seq=self._next_seq())))
            except (RuntimeError, OSError):  # the transport is closing: the server sends it again
                return

    def on_mqtt(self, kind: int, body: bytes) -> None:
        if kind == mqtt.CONNACK:
            if self.waiter is not None and not self.waiter.done():
                code = mqtt.connack_code(body)
                self.waiter.set_result(True) if code == 0 else self.waiter.set_exception(Refused(code))
        elif kind == mqtt.PUBACK:
            entry = self.inflight.pop(mqtt.puback_id(body), None)
            if entry is None:
                return
            if not self.inflight:
                self.fleet.busy.discard(self)
            self.fleet.answered(entry[0], [ResultCode.OK] * len(entry[0]), entry[1])
            self.pump()

    def _nacked(self, records: list, code: int) -> None:
        stats = self.fleet.stats
        stats["nacks"] += 1
        stats[f"nack_{_code_name(code).lower()}"] += 1
        if code in RETRY_LATER:
            self.buffer.extendleft(reversed(records))
            # One pause for the refusals of one window: before, every answer's pump() resent at
            # once and the timer only added a pump, so a gateway behind saw each record again
            # within milliseconds (26 million refused for 315,000 stored, issue 17).
            if self.punch_pause is None:
                self.punch_pause = asyncio.get_running_loop().call_later(self._try_later_s(), self._punch_resume)
        else:
            stats["records_refused"] += len(records)

    def _try_later_s(self) -> float:
        """Seconds to wait after one more "try later" answer (the §6.8 back-off)."""
        self.try_later += 1
        return backoff_s(TRY_LATER_BACKOFF, self.try_later, random.random())

    def requeue_inflight(self) -> int:
        """Put unanswered records back at the front of the buffer (they are resent); an
        unanswered photo frame makes the upload ask where to resume (PHOTO_QUERY)."""
        records = [r for entry in self.inflight.values() if type(entry[0]) is list for r in entry[0]]
        self.inflight.clear()
        self.fleet.busy.discard(self)
        if self.photo_seq is not None:
            self.photo_seq = None
            if self.upload is not None:
                self.upload.restart()
        if records:
            records.sort(key=lambda r: r.record_no)
            self.buffer.extendleft(reversed(records))
        return len(records)

    def on_lost(self) -> None:
        was_online = self.state == "online"
        self.state = "offline"
        if was_online:
            self.fleet.went_offline(self)
        if self.upload is not None:
            self.upload.restart()  # the next session asks where to resume (6.5)
        resent = self.requeue_inflight()
        if not self.fleet.stopping:  # at the end of a run they stay in the buffer, unsent
            self.fleet.stats["resends"] += resent
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    # -- the connect/reconnect loop ---------------------------------------------------------------
    async def _connect(self) -> None:
        fleet, spec = self.fleet, self.fleet.spec
        loop = asyncio.get_running_loop()
        source = fleet.source_for(self.index) if spec.source_addresses else None
        self.waiter = loop.create_future()
        self.lost = loop.create_future()
        self.reconnect_after_s = None
        if spec.transport == "ws":
            from picows import ws_connect

            scheme = "wss" if spec.tls else "ws"
            factory = (lambda url: connected_socket(spec.host, spec.port, source)) if source else None
            _, listener = await ws_connect(lambda: fleet.ws_wire(self), f"{scheme}://{spec.host}:{spec.port}/terminal",
                                           ssl_context=fleet.tls, socket_factory=factory, read_buffer_init_size=1024)
            self.wire = cast(Wire, listener)  # the WsWire made by fleet.ws_wire
        elif source:
            sock = await connected_socket(spec.host, spec.port, source)
            _, self.wire = await loop.create_connection(lambda: TcpWire(self), sock=sock, ssl=fleet.tls,
                                                        server_hostname=spec.host if fleet.tls else None)
        else:
            _, self.wire = await loop.create_connection(lambda: TcpWire(self), spec.host, spec.port, ssl=fleet.tls)
        self.state = "handshake"
        if spec.dialect == "lmg":
            hello = Hello(self.serial, "simulator", "fleet", FIRMWARE, 1,
                          int(Capability.FACE | Capability.PHOTO_UPLOAD), self._next_seq())
            self.wire.write(encode(hello))
        elif spec.dialect == "mqtt":
            self.wire.write(mqtt.connect_packet(self.serial))
        else:
            self.waiter.set_result(True)
        await self.waiter

    async def run(self) -> None:
        fleet, spec = self.fleet, self.fleet.spec
        attempt = 0
        while not fleet.stopping:
            if attempt:
                wait = self.reconnect_after_s if self.reconnect_after_s else \
                    min(spec.reconnect_max_s, spec.reconnect_base_s * 2 ** (attempt - 1))
                await asyncio.sleep(wait * random.uniform(0.5, 1.5))
                if fleet.stopping:
                    break
            started = time.monotonic()
            try:
                # asyncio.timeout, not wait_for: wait_for wraps the handshake in a task of its
                # own, ~10% of the fleet's time in a storm of 20,000 handshakes
                async with fleet.connect_gate, asyncio.timeout(spec.ack_timeout_s):
                    await self._connect()
            except (OSError, asyncio.TimeoutError, ConnectionError, Refused) as exc:
                fleet.stats["connect_failures"] += 1
                if isinstance(exc, Refused):
                    fleet.stats[f"auth_refused_{str(exc).lower()}"] += 1
                if self.wire is not None and self.state != "offline":
                    self.wire.close(abort=True)
                attempt += 1
                continue
            except Exception as exc:  # noqa: BLE001 - an unexpected client fault is counted, not fatal
                fleet.stats["connect_failures"] += 1
                fleet.stats[f"client_error_{type(exc).__name__}"] += 1
                attempt += 1
                continue
            fleet.auth_latency.add(time.monotonic() - started)
            if self.sessions:
                fleet.stats["reconnects"] += 1
            self.sessions += 1
            self.state = "online"
            self.dropping = False
            fleet.came_online(self)
            self.pump()
            assert self.lost is not None  # set by _connect
            await self.lost
            if fleet.stopping:
                break
            if not self.dropping:
                fleet.stats["unexpected_disconnects"] += 1
            attempt = 1

    def drop(self) -> None:
        """Lose the connection as a network blip would (no GOODBYE, no FIN handshake)."""
        if self.wire is not None and self.state != "offline":
            self.dropping = True
            self.wire.close(abort=True)


def _code_name(code: int) -> str:
    return ResultCode(code).name if code in ResultCode._value2member_map_ else f"code_{code}"


# --- the fleet (one process) -----------------------------------------------------------------


class Fleet:
    def __init__(self, spec: FleetSpec, *, emit=None, go: asyncio.Event | None = None):
        if spec.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, not {spec.scenario!r}")
        if spec.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {spec.dialect!r}")
        self.spec = spec
        self.emit = emit or (lambda kind, data: None)
        self.go = go
        self.photo_share = spec.photo_share
        self.rng = random.Random()  # which punches carry a photo
        self.stats: Counter = Counter()
        self.latency = Histogram()  # punch/batch ACK latency, measured window only
        self.auth_latency = Histogram()  # connect + handshake
        self.stopping = False
        self.measuring = False
        self.measure_started = self.measure_ended = 0.0
        self.busy: set = set()
        self.online = 0
        self.peak_online = 0
        self.online_at_end = 0
        self.connect_gate = asyncio.Semaphore(spec.connect_concurrency)
        self.topic = "lmg/punch"
        self.worker_ids = [worker_id_for(n) for n in range(WORKERS_PER_SITE)]
        self.tls = None
        if spec.tls:
            self.tls = ssl.create_default_context()
            self.tls.check_hostname = False
            self.tls.verify_mode = ssl.CERT_NONE
        self._ws_class: Callable[[Terminal], WSListener] | None = None
        self.terminals: list[Terminal] = []
        self.chaos: list[tuple[str, str, bytes]] = []
        chaos_n = int(len(spec.devices) * spec.chaos_share) if spec.scenario == "chaos" else 0
        for index, (serial, secret_hex) in enumerate(spec.devices):
            if index < chaos_n:
                self.chaos.append((CHAOS_KINDS[index % len(CHAOS_KINDS)], serial, bytes.fromhex(secret_hex)))
            else:
                self.terminals.append(Terminal(self, index, serial, bytes.fromhex(secret_hex)))
        self._all_online = asyncio.Event()
        self._drained = asyncio.Event()
        self.storm_t0: float | None = None
        self.storm_last: float | None = None
        self.backlog_done_s: float | None = None
        # wall clock (time.time()) when a drained run started and when its punches, then its
        # photos, were all answered: processes' spans are taken from the earliest start
        self.drain_t0: float | None = None
        self.punches_done_wall: float | None = None
        self.photos_done_wall: float | None = None
        self.started = 0.0

    def ws_wire(self, terminal: Terminal) -> WSListener:
        if self._ws_class is None:
            self._ws_class = _ws_wire_class()
        return self._ws_class(terminal)

    def source_for(self, index: int) -> str:
        return self.spec.source_addresses[index % len(self.spec.source_addresses)]

    # -- bookkeeping called by terminals -----------------------------------------------------------
    def came_online(self, terminal: Terminal) -> None:
        self.online += 1
        self.peak_online = max(self.peak_online, self.online)
        self.stats["authenticated"] += 1
        if self.online == len(self.terminals):
            self._all_online.set()
            if self.storm_t0 is not None and self.storm_last is None:
                self.storm_last = time.time()

    def went_offline(self, terminal: Terminal) -> None:
        self.online -= 1
        self._all_online.clear()

    def answered(self, records: list, results: list, sent_at: float) -> None:
        stats = self.stats
        for result in results:
            if result == ResultCode.OK:
                stats["acked"] += 1
            elif result == ResultCode.DUPLICATE:
                stats["duplicates"] += 1
            else:
                stats["rejected"] += 1
        if self.measuring:
            now = time.monotonic()
            self.latency.add(now - sent_at)
            stats["measured_records"] += len(records)

    # -- process-wide tickers ----------------------------------------------------------------------
    async def _heartbeats(self) -> None:
        """Each terminal heartbeats in the one-second bucket its index falls in: one pass a second
        over 1/interval of the fleet, not a timer per terminal."""
        if self.spec.heartbeat_s < 0 or self.spec.dialect != "lmg":
            return
        tick = 0
        while True:
            await asyncio.sleep(1.0)
            tick += 1
            for terminal in self.terminals:
                interval = int(self.spec.heartbeat_s or terminal.heartbeat_s) or 30
                if (terminal.index + tick) % interval == 0:
                    terminal.heartbeat()

    async def _answer_timeouts(self) -> None:
        """Records unanswered for ack_timeout_s are resent on the same connection (6.2)."""
        while True:
            await asyncio.sleep(1.0)
            limit = time.monotonic() - self.spec.ack_timeout_s
            for terminal in list(self.busy):
                if terminal.inflight and min(t for _, t in terminal.inflight.values()) < limit:
                    self.stats["answer_timeouts"] += 1
                    self.stats["resends"] += terminal.requeue_inflight()
                    terminal.pump()

    async def _pacer(self, rate: float) -> None:
        """Open loop: `rate` punches per second spread round-robin over the terminals."""
        issued, started, cursor = 0, time.monotonic(), 0
        terminals = self.terminals
        while terminals:
            await asyncio.sleep(0.01)
            due = int((time.monotonic() - started) * rate) - issued
            for _ in range(due):
                terminals[cursor].offer()
                cursor = (cursor + 1) % len(terminals)
            issued += max(due, 0)

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(self.spec.progress_s)
            self.emit("progress", self.snapshot())

    def snapshot(self) -> dict:
        return {"online": self.online, "devices": len(self.terminals) + len(self.chaos),
                "elapsed_s": round(time.monotonic() - self.started, 1), **self.stats,
                "p99_ms": self.latency.quantile_ms(0.99)}

    # -- chaos clients --------------------------------------------------------------------------------
    async def _chaos_client(self, index: int, kind: str, serial: str) -> None:
        """A misbehaving client, reconnecting after the server closes it; counts how often it did."""
        spec = self.spec
        source = self.source_for(index) if spec.source_addresses else None
        self.stats[f"chaos_{kind}_clients"] += 1
        while not self.stopping:
            try:
                if source:
                    sock = await asyncio.wait_for(connected_socket(spec.host, spec.port, source), spec.ack_timeout_s)
                    opened = asyncio.open_connection(sock=sock, ssl=self.tls,
                                                     server_hostname=spec.host if self.tls else None)
                else:
                    opened = asyncio.open_connection(spec.host, spec.port, ssl=self.tls)
                reader, writer = await asyncio.wait_for(opened, spec.ack_timeout_s)
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(1.0)
                continue
            self.stats[f"chaos_{kind}_connects"] += 1
            try:
                if kind == "garbage":
                    while not reader.at_eof():
                        writer.write(os.urandom(64))
                        await asyncio.sleep(0.1)
                        await asyncio.wait_for(reader.read(65536), 0.4) if not reader.at_eof() else None
                elif kind == "oversize":
                    header = bytearray(encode(Heartbeat(0, 0, 0, 1))[:14])
                    header[10:14] = (16 << 20).to_bytes(4, "big")  # announces a 16 MiB body
                    writer.write(bytes(header) + bytes(1024))
                    while await reader.read(65536):
                        pass
                elif kind == "silent":
                    while await reader.read(65536):
                        pass
                else:  # deaf: a HELLO, then frames, never reading an answer
                    cast(asyncio.Transport, writer.transport).pause_reading()  # a socket's: it reads too
                    writer.write(encode(Hello(serial, "simulator", "fleet", FIRMWARE, 1, 0, 1)))
                    seq = 2
                    while not writer.is_closing() and not self.stopping:
                        writer.write(encode(Heartbeat(0, 0, 0, seq)))
                        seq += 1
                        await asyncio.sleep(0.05)
                        if writer.transport.get_write_buffer_size() > 1 << 20:
                            break  # the server stopped reading us: it may close us any time
            except asyncio.TimeoutError:
                continue
            except (OSError, ConnectionError):
                pass
            finally:
                writer.close()
            if not self.stopping:
                self.stats[f"chaos_{kind}_closed_by_server"] += 1
                await asyncio.sleep(1.0 * random.uniform(0.5, 1.5))

    # -- the run ------------------------------------------------------------------------------------
    async def run(self) -> dict:
        spec = self.spec
        loop = asyncio.get_running_loop()
        self.started = time.monotonic()
        wall_started = time.time()
        if spec.scenario == "backlog":
            now_ms, n = time.time_ns() // 1_000_000, spec.backlog_records
            step_ms = spec.backlog_span_s * 1000 / n if n else 0.0
            for terminal in self.terminals:  # punches spread over the outage, the newest now
                terminal.buffer.extend(terminal.new_record(now_ms - int((n - 1 - k) * step_ms)) for k in range(n))
            if spec.wait_for_go and self.go is not None:  # several processes come back together
                self.emit("ready", {"online": 0})
                await self.go.wait()
            self.started = time.monotonic()
        tasks = [loop.create_task(t.run()) for t in self.terminals]
        tasks += [loop.create_task(self._chaos_client(i, kind, serial)) for i, (kind, serial, _) in enumerate(self.chaos)]
        tickers = [loop.create_task(self._heartbeats()), loop.create_task(self._answer_timeouts()),
                   loop.create_task(self._progress())]
        connect_s = None
        try:
            if spec.scenario == "backlog":
                self.measuring = True
                self.measure_started = time.monotonic()
                await self._wait_drained(spec.duration_s)
                if self.punches_done_wall is not None:
                    self.backlog_done_s = self.punches_done_wall - self.drain_t0  # type: ignore[operator]  # set by _wait_drained
            else:
                await self._wait_all_online(spec.connect_phase_s)
                connect_s = time.monotonic() - self.started
                self.emit("ready", {"online": self.online})
                if spec.scenario == "storm":
                    await self._storm()
                else:
                    await asyncio.sleep(spec.warmup_s)
                    self.measuring = True
                    self.measure_started = time.monotonic()
                    if spec.scenario in ("rush", "chaos"):
                        if spec.rate > 0:
                            tickers.append(loop.create_task(self._pacer(spec.rate)))
                        else:
                            for terminal in self.terminals:
                                terminal.supply = spec.punches_per_device or -1
                                terminal.pump()
                    if spec.scenario == "rush" and spec.punches_per_device and not spec.rate:
                        await self._wait_drained(spec.duration_s)
                    else:
                        await asyncio.sleep(spec.duration_s)
            self.measure_ended = time.monotonic()
            self.measuring = False
            self.online_at_end = self.online  # before the run closes its own connections below
        finally:
            self.stopping = True
            for ticker in tickers:
                ticker.cancel()
            for terminal in self.terminals:
                if terminal.wire is not None and terminal.state != "offline":
                    terminal.wire.close(abort=True)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, *tickers, return_exceptions=True)
        return self.summary(connect_s, wall_started)

    async def _wait_all_online(self, cap_s: float) -> None:
        try:
            await asyncio.wait_for(self._all_online.wait(), cap_s)
        except asyncio.TimeoutError:
            self.stats["connect_phase_timeouts"] += 1

    async def _wait_drained(self, cap_s: float) -> None:
        """Until every terminal has had a session and has nothing left to send (punches
        answered, then photos uploaded), or `cap_s`; notes when each came true."""
        self.drain_t0 = time.time()
        deadline = time.monotonic() + cap_s
        while time.monotonic() < deadline:
            if all(t.sessions for t in self.terminals):
                states = [t.settled() for t in self.terminals]
                if self.punches_done_wall is None and all(p for p, _ in states):
                    self.punches_done_wall = time.time()
                if all(photos for _, photos in states):
                    self.photos_done_wall = time.time()
                    return
            await asyncio.sleep(0.05)
        self.stats["drain_timeouts"] += 1

    async def _storm(self) -> None:
        if self.go is not None:
            await self.go.wait()
        self.storm_t0 = time.time()
        self.storm_last = None
        self.measure_started = time.monotonic()
        for terminal in self.terminals:
            terminal.drop()
        # everyone back, or the cap: the first drop makes `online` fall, so wait for that first
        await asyncio.sleep(0)
        await self._wait_all_online(self.spec.duration_s)
        if self.storm_last is None:
            self.stats["storm_incomplete"] += 1

    def roster_spread(self) -> dict:
        """Lowest and highest roster version and size over the terminals (0 for one that got
        no command)."""
        devices = [t._device for t in self.terminals]
        versions = [d.roster_version if d is not None else 0 for d in devices]
        sizes = [d.worker_count if d is not None else 0 for d in devices]
        return {"version_min": min(versions, default=0), "version_max": max(versions, default=0),
                "workers_min": min(sizes, default=0), "workers_max": max(sizes, default=0)}

    def summary(self, connect_s: float | None, wall_started: float) -> dict:
        measured_s = max(self.measure_ended - self.measure_started, 1e-9)
        return {
            "scenario": self.spec.scenario, "dialect": self.spec.dialect, "transport": self.spec.transport,
            "devices": len(self.terminals) + len(self.chaos), "well_behaved": len(self.terminals),
            "online_at_end": self.online_at_end, "peak_online": self.peak_online,
            "counters": dict(self.stats), "measured_s": measured_s, "connect_s": connect_s,
            "latency": self.latency.to_json(), "auth_latency": self.auth_latency.to_json(),
            "storm_t0": self.storm_t0, "storm_last": self.storm_last, "backlog_s": self.backlog_done_s,
            "records_backlog": len(self.terminals) * self.spec.backlog_records if self.spec.scenario == "backlog" else 0,
            "wall_started": wall_started, "roster": self.roster_spread(),
            "drain_t0": self.drain_t0, "punches_done_wall": self.punches_done_wall,
            "photos_done_wall": self.photos_done_wall,
        }


# --- several processes ---------------------------------------------------------------------------


def merge_summaries(parts: list[dict], spec: FleetSpec, processes: int) -> dict:
    """One summary object for a run made of per-process parts (counters add, histograms merge)."""
    counters: Counter = Counter()
    latency, auth = Histogram(), Histogram()
    for part in parts:
        counters.update(part["counters"])
        latency.merge(Histogram.from_json(part["latency"]))
        auth.merge(Histogram.from_json(part["auth_latency"]))
    measured = [p["measured_s"] for p in parts if p["measured_s"] > 1e-6]
    measured_s = sum(measured) / len(measured) if measured else 0.0
    out = {
        "scenario": spec.scenario, "dialect": spec.dialect, "transport": spec.transport, "processes": processes,
        "source_addresses": len(spec.source_addresses) or 1,
        "devices": sum(p["devices"] for p in parts), "well_behaved": sum(p["well_behaved"] for p in parts),
        "online_at_end": sum(p["online_at_end"] for p in parts), "peak_online": sum(p["peak_online"] for p in parts),
        "sent": counters["sent"], "acked": counters["acked"], "duplicates": counters["duplicates"],
        "rejected": counters["rejected"], "nacks": counters["nacks"], "resends": counters["resends"],
        "answer_timeouts": counters["answer_timeouts"], "reconnects": counters["reconnects"],
        "connect_failures": counters["connect_failures"], "unexpected_disconnects": counters["unexpected_disconnects"],
        "heartbeats_sent": counters["heartbeats_sent"], "heartbeats_acked": counters["heartbeats_acked"],
        "bad_frames": counters["bad_frames"],
        "photos": {"share": spec.photo_share, "bytes_each": spec.photo_bytes if spec.photo_share else 0,
                   **{key: counters[name] for key, name in PHOTO_COUNTERS.items()}},
        "measured_s": round(measured_s, 3),
        "acks_per_s": round(counters["measured_records"] / measured_s, 1) if measured_s else None,
        "latency_ms": latency.summary(), "auth_latency_ms": auth.summary(),
        "connect_s": max((p["connect_s"] for p in parts if p["connect_s"] is not None), default=None),
        "commands": counters["commands"], "command_nacks": counters["command_nacks"],
        "roster": {
            "version_min": min((p["roster"]["version_min"] for p in parts), default=0),
            "version_max": max((p["roster"]["version_max"] for p in parts), default=0),
            "workers_min": min((p["roster"]["workers_min"] for p in parts), default=0),
            "workers_max": max((p["roster"]["workers_max"] for p in parts), default=0),
        },
        "counters": dict(sorted(counters.items())),
    }
    if spec.scenario == "storm":
        t0 = [p["storm_t0"] for p in parts if p["storm_t0"]]
        last = [p["storm_last"] for p in parts]
        complete = bool(t0) and all(x is not None for x in last)
        out["storm_s"] = round(max(last) - min(t0), 3) if complete else None
        out["storm_complete"] = complete
    if spec.scenario == "backlog":
        records = sum(p["records_backlog"] for p in parts)
        # processes run side by side, from the earliest start to the last one done
        span = _span(parts, "punches_done_wall")
        out["backlog_records"] = records
        out["backlog_s"] = round(span, 3) if span is not None else None
        out["backlog_records_per_s"] = round(records / span, 1) if span else None
        starts = [p["drain_t0"] for p in parts if p.get("drain_t0") is not None]
        out["drain_t0"] = min(starts) if starts else None  # wall clock: when the terminals came back
        photos_span = _span(parts, "photos_done_wall")
        out["backlog_photos_s"] = round(photos_span, 3) if photos_span is not None else None
    if spec.scenario == "chaos":
        out["chaos"] = {k[len("chaos_"):]: v for k, v in sorted(counters.items()) if k.startswith("chaos_")}
    return out


def _span(parts: list[dict], done: str) -> float | None:
    """Seconds from the earliest `drain_t0` to the latest `done` wall time; None if a part never got there."""
    ends = [p.get(done) for p in parts]
    starts = [p["drain_t0"] for p in parts if p.get("drain_t0") is not None]
    if not parts or not starts or any(end is None for end in ends):
        return None
    return max(ends) - min(starts)  # type: ignore[type-var]  # None ruled out above


def split_spec(spec: FleetSpec, processes: int) -> list[FleetSpec]:
    """Deal devices (and rate) out to `processes` parts; each part keeps every source address."""
    processes = max(1, min(processes, len(spec.devices) or 1))
    parts = []
    for p in range(processes):
        part = FleetSpec(**{**asdict(spec), "devices": spec.devices[p::processes], "rate": spec.rate / processes})
        parts.append(part)
    return parts


async def run_fleet(spec: FleetSpec, processes: int = 1, on_progress=None, in_process: bool | None = None) -> dict:
    """Run the fleet and return the merged summary. `on_progress(dict)` gets a fleet-wide
    snapshot about every `progress_s`. One process runs in this loop unless `in_process` is False."""
    parts = split_spec(spec, processes)
    if in_process is None:
        in_process = len(parts) == 1
    if in_process and len(parts) == 1:
        fleet = Fleet(parts[0], emit=lambda kind, data: on_progress and kind == "progress" and on_progress(
            {**data, "processes": 1}))
        return merge_summaries([await fleet.run()], spec, 1)
    return await _run_processes(spec, parts, on_progress)


async def _run_processes(spec: FleetSpec, parts: list[FleetSpec], on_progress) -> dict:
    procs = []
    latest: list[dict] = [{} for _ in parts]
    ready = [False] * len(parts)
    summaries: list[dict | None] = [None] * len(parts)
    together = spec.scenario in ("storm", "backlog") and len(parts) > 1  # started by one "go"
    for part in parts:
        if together:
            part.wait_for_go = True
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lmg.simulators.fleet", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 26)
        assert proc.stdin is not None  # a pipe, as asked
        proc.stdin.write(orjson.dumps(asdict(part)) + b"\n")
        await proc.stdin.drain()
        procs.append(proc)

    async def follow(i: int, proc) -> None:
        async for line in proc.stdout:
            message = orjson.loads(line)
            kind = message["kind"]
            if kind == "progress":
                latest[i] = message["data"]
                if on_progress:
                    merged: Counter = Counter()
                    for snap in latest:
                        merged.update({k: v for k, v in snap.items() if isinstance(v, (int, float)) and k != "p99_ms"})
                    merged["elapsed_s"] = max((s.get("elapsed_s", 0) for s in latest), default=0)
                    p99 = [s["p99_ms"] for s in latest if s.get("p99_ms")]
                    on_progress({**merged, "p99_ms": max(p99) if p99 else None, "processes": len(parts)})
            elif kind == "ready":
                ready[i] = True
                if together and all(ready):
                    for other in procs:
                        assert other.stdin is not None  # a pipe, as asked
                        other.stdin.write(b"go\n")
                        await other.stdin.drain()
            elif kind == "summary":
                summaries[i] = message["data"]
        await proc.wait()

    try:
        await asyncio.gather(*(follow(i, p) for i, p in enumerate(procs)))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    missing = [i for i, s in enumerate(summaries) if s is None]
    if missing:
        raise RuntimeError(f"fleet processes {missing} ended without a summary (see their stderr)")
    return merge_summaries([s for s in summaries if s is not None], spec, len(parts))


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _worker_main() -> None:
    """`python -m lmg.simulators.fleet`: a FleetSpec as one JSON line on stdin; JSON lines out."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 28)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = FleetSpec(**orjson.loads(await reader.readline()))
    out = sys.stdout.buffer

    def emit(kind: str, data: dict) -> None:
        out.write(orjson.dumps({"kind": kind, "data": data}) + b"\n")
        out.flush()

    go = asyncio.Event()
    if spec.wait_for_go:
        async def listen() -> None:
            while line := await reader.readline():
                if line.strip() == b"go":
                    go.set()
        control = loop.create_task(listen())
    else:
        go.set()
        control = None
    summary = await Fleet(spec, emit=emit, go=go).run()
    emit("summary", summary)
    if control is not None:
        control.cancel()


if __name__ == "__main__":
    raise_fd_limit()
    import uvloop

    from lmg.server.gateway import tune_collector

    tune_collector()  # the measuring tool's own GC pauses must not show up as server latency

    uvloop.run(_worker_main())
