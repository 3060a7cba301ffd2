"""The thin glue between one transport and one `Session`: carries out the session's actions.

TCP (`lmg.server.gateway.tcp`) and WebSocket (`lmg.server.gateway.websocket`) both feed a
`TerminalLink`; they only supply four primitives (write frames, close, pause reading,
resume reading) and the unsent-output size. Rules kept here:

- The session owns its state: the link calls its public methods and carries out the
  actions they return (a closed set, `session.Action`; `_execute` handles every kind and
  a type checker proves it). The gateway, in turn, asks the link (`take_over`, `tick`,
  `shut_down`), never the session.
- Answers leave in the order frames arrived: while an action that awaits the store runs,
  later items wait in `backlog`. Reading goes on until `held_frames` items are held, then
  the transport stops reading (back-pressure: a lagging store slows the terminals down
  instead of growing buffers), so at most `held_frames` plus one read's worth are held.
- Consecutive punch frames are stored together: every held frame the session counts as
  records to store (`Session.records_to_store`) joins one store call, and their ACKs go
  out together once it returns. Up to `store_calls_per_connection` calls are in flight,
  with at most one group-commit batch of records (`group_commit_max_records`) among them.
  A terminal that keeps a window of punches in flight thus pays one commit per window,
  not one per punch. A frame of any other kind ends the group and waits for it, so the
  seq numbers the session gives its answers stay in sending order.
- A punch is acknowledged only after the store's future (`Store.submit_punches`)
  resolved, i.e. after commit; if the store fails, the session answers NACK
  STORE_UNAVAILABLE and nothing is acked.
- Output is corked: the frames one pass produces leave in one `write_frames` call
  (one syscall on TCP). Unsent output above `max_unsent_bytes` means the peer does not
  read: it is closed.
- While the gateway stops, a link tells it (`Gateway.link_settled`) when its last store
  call was answered and nothing awaits, so shutdown waits on that, not on a poll.
- Downlink (server/downlink): the terminal's answers to commands go to the gateway's
  `DownlinkService` (the session's `DeviceAnswer`). At the end of a pass, if the link's
  downlink machine (`downlink`, None without downlink work: one attribute check per pass)
  has frames to send and no store call of the connection is in flight, the link asks the
  service for a turn (`request_turn`); the service writes them in a later event-loop turn
  (`write_pending`), so they never go ahead of a punch answer about to be written, and
  FACE_CHUNKs only while the unsent output is under `downlink_max_unsent_bytes`.
- Hostile input (issue 18): the decoder's limit is the session's (`Session.max_frame_size`:
  1,047 bytes until authenticated); a photo chunk or query goes to the store only when a
  stored punch of the device announces that photo (`_announced`) and the device holds one of
  its `photo_uploads_per_device` upload slots (photo_slots.py), and only in one of the
  process's `photo_store_concurrency` turns (photo_intake.py: past `photo_chunks_waiting`
  waiting frames a chunk is refused PHOTO_UPLOADS_BUSY at once); a WebSocket message holding
  several frames gets one NACK per frame; a TCP peer that half-closes (`peer_finished`)
  still gets the answers to what it sent before the connection is closed.
- Observability in plain Python only (server/metrics): with metrics on, each frame in and
  out adds one to `Gateway.frames_in` / `frames_out` under its message class, and each
  store call's time from submission to its answers being written goes into the
  `Gateway.ack_latency` tally; with metrics off, one None check per pass. A connection
  logs three lines at info on `lmg.session` (opened, authentication result, closed with
  its reason), each carrying `log_fields()`: serial, session id, peer. Nothing per punch
  at info; at debug one line per answered store call with its records.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import os
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, assert_never

from lmg.protocol import FrameDecoder, PhotoChunk, PhotoQuery, ProtocolError, ResultCode, decode_frame, encode
from lmg.protocol.errors import NotAFrame
from lmg.protocol.schema import HEADER_SIZE
from lmg.server.gateway.session import (
    Action,
    AppendPhoto,
    Authenticated,
    AuthFailed,
    Close,
    Count,
    DeviceAnswer,
    DeviceView,
    LoadDevice,
    QueryPhoto,
    Send,
    Session,
    State,
    StatusReported,
    StorePunches,
)
from lmg.storage import (
    STORED,
    Outcome,
    PhotoHashMismatch,
    PhotoOffsetMismatch,
    PhotoTooLarge,
    PunchIn,
    StoreClosed,
    StoreError,
)

if TYPE_CHECKING:
    from lmg.server.downlink.device import DeviceDownlink
    from lmg.server.gateway.gateway import Gateway

log = logging.getLogger("lmg.link")
session_log = logging.getLogger("lmg.session")  # opened and closed here; the auth result in gateway.py

_OUTCOME_CODES = {Outcome.STORED: int(ResultCode.OK), Outcome.DUPLICATE: int(ResultCode.DUPLICATE)}
_OK = int(ResultCode.OK)
_DUPLICATE = int(ResultCode.DUPLICATE)
I64_MAX = 2**63 - 1  # the store's time columns are signed 64-bit


def _code_label(code: int) -> str:
    """A result code's name in lower case, for the debug line of an answered store call."""
    try:
        return ResultCode(code).name.lower()
    except ValueError:
        return str(code)


def punch_rows(serial: str, group: list[StorePunches]) -> list[PunchIn]:
    """The PunchIn records of a group of StorePunches, in order.

    Built with tuple.__new__, without PunchIn's argument check (a fifth of the event
    loop's time on backlog upload): every value comes from a decoded frame, whose schema
    bounds it, and the session set a reject reason wherever its validation found a value
    the store would refuse. tests/server/gateway/test_link_records.py checks, for any decodable
    batch, that the checked constructor accepts every record built here.
    """
    new = tuple.__new__
    rows: list[PunchIn] = []
    append = rows.append
    for action in group:
        for r, reason in action.records:
            t = r.punch_time_ms
            if t > I64_MAX:  # a u64 on the wire, refused as TIME_IN_FUTURE; kept as the column's largest
                t = I64_MAX
            append(new(PunchIn, (serial, r.record_no, r.worker_id, t, r.direction, r.verify_mode,
                                 r.temperature_dc, r.photo_sha256 if r.photo_size else None, r.photo_size,
                                 None if reason is None else int(reason))))
    return rows


class StoreGroup:
    """One store call of a link: the StorePunches it holds, their record count, and the
    store's answer once known (a list of result codes, or the exception)."""

    __slots__ = ("requests", "records", "outcome", "submitted")

    def __init__(self, requests: list[StorePunches], records: int, submitted: float):
        self.requests = requests
        self.records = records
        self.outcome: list[int] | BaseException | None = None
        self.submitted = submitted  # Gateway.ack_clock() when it went to the store (0.0: metrics off)


class TerminalLink(abc.ABC):
    """One connection's session driver; subclasses implement the transport primitives."""

    _paused = False  # reading is paused; kept by the subclasses' pause_reading/resume_reading
    transport_name = ""  # "tcp", "ws": the label of this transport in metrics and logs
    # Class defaults: a connection without downlink work stores nothing for them.
    project_code: str | None = None  # the device's project, once its lookup answered
    roster_synced = 0  # the version of the terminal's last complete roster sync (Device.roster_version)
    downlink: DeviceDownlink | None = None  # its downlink machine while it has work (server/downlink)

    def __init__(self, gateway: Gateway, peer_host: str, peer: str):
        self.gateway = gateway
        self.peer_host = peer_host
        now = gateway.now_ms()
        self.session = Session(peer=peer, nonce=os.urandom(16), connected_ms=now, limits=gateway.limits,
                               max_photo_bytes=gateway.photo_max_bytes)
        # Small until authenticated (session.PRE_AUTH_MAX_FRAME_SIZE); raised in `_execute`.
        self.decoder = FrameDecoder(self.session.max_frame_size)
        self.wheel_buckets: list[int] = []  # deadline-wheel buckets this link is filed under (Gateway)
        self.peer_done = False  # the peer half-closed: answer what it sent, then close
        self.backlog: list[Any] = []  # items held while busy; a list is 56 B, a deque 600+
        self.out: list[bytes] | None = None  # frames of the current pass, written by _flush
        self.groups: list[StoreGroup] = []  # store calls in flight, oldest first (see _pump)
        self.busy = False
        self.closed = False
        gateway.link_opened(self)
        if session_log.isEnabledFor(logging.INFO):
            session_log.info("session opened", extra={**self.log_fields(), "transport": self.transport_name})

    # -- transport primitives (subclasses) -----------------------------------------------
    @abc.abstractmethod
    def write_frames(self, frames: list[bytes]) -> None:
        """Queue whole frames (bytes), in order, for the peer; never blocks."""

    @abc.abstractmethod
    def unsent_bytes(self) -> int:
        """Bytes written but not yet taken by the kernel."""

    @abc.abstractmethod
    def close_transport(self, abort: bool = False) -> None:
        """Close after flushing (abort=True: drop unsent output at once)."""

    @abc.abstractmethod
    def pause_reading(self) -> None:
        """Stop taking bytes from the peer until `resume_reading`."""

    @abc.abstractmethod
    def resume_reading(self) -> None:
        """Take bytes from the peer again."""

    # -- what the gateway asks of a link -------------------------------------------------
    @property
    def serial(self) -> str | None:
        """The device's serial once it said HELLO."""
        return self.session.serial

    @property
    def session_id(self) -> str:
        """A short id of this connection for logs: 8 hex digits of the session's random
        nonce, derived when asked (an idle connection stores nothing more for it)."""
        return self.session.nonce[:4].hex()

    def log_fields(self) -> dict[str, Any]:
        """The context of a log line about this connection (`extra=`): serial (None until
        HELLO, then left out), session id, peer address."""
        return {"serial": self.session.serial, "session": self.session_id, "peer": self.session.peer}

    @property
    def connected_ms(self) -> int:
        """When the connection was made (the gateway's clock, ms)."""
        return self.session.connected_ms

    def deadline_ms(self) -> int:
        """When `tick` must next be called (the session's auth or heartbeat deadline)."""
        return self.session.deadline_ms()

    def tick(self, now_ms: int) -> None:
        """The deadline wheel's call: the session closes itself if its deadline passed."""
        self.execute(self.session.tick(now_ms))

    def take_over(self) -> None:
        """A newer session of the same device authenticated: GOODBYE TAKEOVER, close."""
        self.execute(self.session.taken_over())

    def shut_down(self) -> None:
        """The gateway stops: GOODBYE SHUTTING_DOWN, close."""
        self.execute(self.session.shutdown())

    def revoke(self, reason: ResultCode) -> None:
        """An operator disabled the device, rotated its secret or closed the session."""
        self.execute(self.session.revoked(reason))

    def settled(self) -> bool:
        """No store call in flight and no async action awaited: every frame taken so far
        has been answered."""
        return not self.groups and not self.busy

    # -- input from the transport ------------------------------------------------------
    def bytes_received(self, data: bytes) -> None:
        """TCP: any slice of the byte stream."""
        self._process(self.decoder.feed(data))

    def frame_received(self, data: bytes) -> None:
        """WebSocket: one binary message, which must be exactly one frame.

        A message holding several whole frames is refused frame by frame: each gets NACK
        MALFORMED_BODY with its own seq and type, none is carried out (docs/protocol.md
        section 1), so no frame of it is dropped without an answer."""
        items: list[Any]
        try:
            items = [decode_frame(data, max_frame_size=self.decoder.max_frame_size)]
        except NotAFrame as exc:
            items = [exc]
            if exc.seq is not None and len(data) > HEADER_SIZE:
                split = FrameDecoder(self.decoder.max_frame_size).feed(data)
                if len(split) > 1:
                    items = [NotAFrame(f"frame {i + 1} of {len(split)} in one WebSocket message",
                                       seq=getattr(item, "seq", 0), msg_type=getattr(item, "msg_type", 0))
                             for i, item in enumerate(split)]
        except ProtocolError as exc:
            items = [exc]
        self._process(items)

    def peer_finished(self) -> None:
        """TCP: the peer half-closed (FIN) after its last frame. What it sent is still
        answered (a punch stored gets its ACK); the connection closes once nothing is in
        flight."""
        self.peer_done = True
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        if self.peer_done and not self.closed and self.settled() and not self.backlog:
            self._flush()
            if not self.closed:
                self.close_transport()
                self.transport_lost("peer_closed", "the terminal half-closed; its frames were answered")

    def transport_lost(self, reason: str | None = None, detail: str | None = None) -> None:
        """The connection is gone. `reason` (lower case, for logs and metrics) defaults to
        the session's close reason, or peer_closed if the session had not ended."""
        if self.closed:
            return
        self.closed = True
        session = self.session
        session.connection_lost()
        self.backlog.clear()
        self.groups.clear()
        self.out = None
        if reason is None:
            reason = session.close_reason.name.lower() if session.close_reason is not None else "peer_closed"
        if session_log.isEnabledFor(logging.INFO):
            duration_s = round((self.gateway.now_ms() - session.connected_ms) / 1000, 3)
            session_log.info("session closed", extra={**self.log_fields(), "reason": reason, "detail": detail,
                                                      "duration_s": duration_s})
        self.gateway.link_closed(self, reason)

    # -- the loop over items -------------------------------------------------------------
    def _process(self, items: list[Any]) -> None:
        frames_in = self.gateway.frames_in
        if frames_in is not None:
            for item in items:
                frames_in[item.__class__] += 1  # a message class, or a ProtocolError subclass
        backlog = self.backlog
        backlog.extend(items)
        if not self.busy:
            self._pump()
        elif len(backlog) > self.gateway.held_frames:
            self.pause_reading()
        self._flush()

    def _pump(self) -> None:
        """Feed held items to the session until one of them must wait for an async answer.

        Store requests join a new group (stored in one call) while fewer than
        `store_calls_per_connection` groups are in flight; any other item waits until every
        group before it was answered.
        """
        backlog, session, groups, gateway = self.backlog, self.session, self.groups, self.gateway
        records_to_store = session.records_to_store
        now = gateway.now_ms()
        group: list[StorePunches] = []
        records = done = 0
        in_flight = sum([g.records for g in groups]) if groups else 0
        for item in backlog:
            size = records_to_store(item)
            if size:
                if len(groups) >= gateway.store_calls_per_connection or (
                        (records or in_flight) and in_flight + records + size > gateway.group_records):
                    break  # at most one group's worth of records at the store (one frame may exceed it)
                group.append(session.store_request(item, now))
                records += size
                continue
            if group or groups:
                break  # its answer must follow the groups' ACKs
            done += 1
            if self._execute(session.receive(item, now)) or self.closed:
                break
        if self.closed:
            return
        if group:
            done += len(group)
            entry = StoreGroup(group, records, gateway.ack_clock() if gateway.ack_latency is not None else 0.0)
            groups.append(entry)
            future: asyncio.Future[Any]
            try:
                future = gateway.submit_punches(punch_rows(session.serial or "", group))
            except Exception as exc:  # noqa: BLE001 - a bug: answer the group, never leave it in flight
                future = asyncio.get_running_loop().create_future()
                future.set_exception(exc)
            future.add_done_callback(functools.partial(self._group_stored, entry))
        if done:
            del backlog[:done]
            serial = session.serial
            if serial is not None and session.state is State.AUTHENTICATED:
                gateway.seen(serial, now)
        if len(backlog) > gateway.held_frames or gateway.stopping:
            self.pause_reading()
        elif self._paused:
            self.resume_reading()

    def _execute(self, actions: list[Action]) -> bool:
        """Carry out `actions`; True when one of them started async work (the link is busy)."""
        for action in actions:
            if isinstance(action, Send):
                self._send(action.message)
            elif isinstance(action, Close):
                self._close(action)
            elif isinstance(action, LoadDevice):
                self._start(self._load_device(action))
            elif isinstance(action, Authenticated):
                self.decoder.set_max_frame_size(self.session.max_frame_size)
                self.gateway.authenticated(self, action)
            elif isinstance(action, AuthFailed):
                self.gateway.auth_failed(self, action)
            elif isinstance(action, AppendPhoto):
                self._start(self._append_photo(action))
            elif isinstance(action, QueryPhoto):
                self._start(self._query_photo(action))
            elif isinstance(action, StatusReported):
                self.gateway.status_reported(self.session.serial, action.status)
            elif isinstance(action, DeviceAnswer):
                self.gateway.downlink.answer(self, action.answer)
            elif isinstance(action, Count):
                self.gateway.count(action.name)
            elif isinstance(action, StorePunches):
                # Only items `records_to_store` counts make these, and _pump groups them
                # itself; one here means the two disagree, a bug.
                raise TypeError(f"StorePunches outside a store group: {action!r}")
            else:
                assert_never(action)
        return self.busy

    def execute(self, actions: list[Action]) -> None:
        """Run actions produced outside `receive` (takeover, shutdown, deadlines)."""
        if not self.closed:
            self._execute(actions)
            self._flush()

    def queue_frame(self, message: Any) -> None:
        """Queue a message (numbered by the session) to be written with this pass's frames."""
        self._send(message)

    def pending_bytes(self) -> int:
        """Bytes of the frames this pass produced, not written yet."""
        out = self.out
        return sum(map(len, out)) if out else 0

    def flush_downlink(self) -> None:
        """Outside a pass (a store read answered, a signal, a timer): ask for a downlink turn if
        the machine has frames to send, and write what is queued."""
        if not self.closed:
            self._flush()

    def write_pending(self) -> None:
        """Write the queued frames now (the downlink's turn), without asking for another turn."""
        self._write_out()

    def _send(self, message: Any) -> None:
        if self.closed:
            return
        frame = encode(message, max_frame_size=self.decoder.max_frame_size)
        frames_out = self.gateway.frames_out
        if frames_out is not None:
            frames_out[message.__class__] += 1
        if self.out is None:
            self.out = [frame]
        else:
            self.out.append(frame)

    def _flush(self) -> None:
        """Write the frames the current pass produced; if the downlink has frames to send and no
        punches are at the store, ask for a downlink turn (a later event-loop turn writes them,
        after this pass's answers). Close a peer that does not read."""
        downlink = self.downlink
        if downlink is not None and downlink.ready and not self.groups and not self.closed:
            self.gateway.downlink.request_turn(self)
        frames = self.out  # the body of _write_out, inline: this runs on every pass
        if frames is None or self.closed:
            return
        self.out = None
        self.write_frames(frames)
        if self.unsent_bytes() > self.gateway.max_unsent_bytes:
            self.gateway.count("slow_reader_closed")
            self._execute(self.session.too_slow_reader())

    def _write_out(self) -> None:
        frames = self.out
        if frames is None or self.closed:
            return
        self.out = None
        self.write_frames(frames)
        if self.unsent_bytes() > self.gateway.max_unsent_bytes:
            self.gateway.count("slow_reader_closed")
            self._execute(self.session.too_slow_reader())

    def _close(self, action: Close) -> None:
        if self.closed:
            return
        self._flush()  # answers produced before the close go first (a GOODBYE, an AUTH_RESULT)
        if self.closed:  # the flush found a peer that does not read and closed it
            return
        abort = action.reason is ResultCode.SERVER_BUSY  # a non-reader would never drain a graceful close
        self.close_transport(abort=abort)
        self.transport_lost(action.reason.name.lower(), action.detail)

    # -- async actions -------------------------------------------------------------------
    def _start(self, coroutine: Any) -> None:
        self.busy = True
        self.gateway.spawn(self._finish(coroutine))

    async def _finish(self, coroutine: Any) -> None:
        try:
            actions = await coroutine
        except Exception:  # noqa: BLE001 - a bug in one action must not kill the server
            self.gateway.repeats.log(log, logging.ERROR, "action", "action failed", extra=self.log_fields(),
                                     exc_info=True)
            actions = self.session.abort(ResultCode.SERVER_BUSY, "internal error")
        self.busy = False
        if not self.closed:
            self._execute(actions)
            self._pump()
            self._flush()
        self._report_if_settled()

    def _report_if_settled(self) -> None:
        """While the gateway stops, tell it once nothing of this link is in flight; close a
        half-closed peer once all it sent is answered."""
        if self.peer_done:
            self._close_if_drained()
        if self.gateway.stopping and (self.closed or self.settled()):
            self.gateway.link_settled(self)

    async def _load_device(self, action: LoadDevice) -> list[Action]:
        gateway = self.gateway
        locked_until = gateway.guard.locked_until(self.peer_host, action.serial, gateway.now_ms())
        device = None
        if not locked_until:
            try:
                stored = await gateway.lookup_device(action.serial)
            except StoreError:  # logged by the gateway, once per interval
                return self.session.abort(ResultCode.STORE_UNAVAILABLE, "device lookup failed")
            if stored is not None:
                device = DeviceView(stored.serial, stored.secret, stored.enabled)
                self.project_code = stored.project_code or None
                self.roster_synced = stored.roster_version
        return self.session.device_loaded(device, locked_until, gateway.now_ms())

    def _group_stored(self, entry: StoreGroup, future: asyncio.Future[Any]) -> None:
        """The store answered a group: answer every group whose turn has come (answers are
        made in group order, so their seq numbers are too), then go on with held items."""
        gateway = self.gateway
        serial = self.session.serial or ""
        if future.cancelled():
            entry.outcome = StoreClosed("the store was closed before this group was written")
        elif (exc := future.exception()) is not None:
            if not isinstance(exc, StoreError):  # a bug; StoreErrors are logged by the gateway
                gateway.repeats.log(log, logging.ERROR, "store_bug", "storing punches failed",
                                    extra=self.log_fields(), exc_info=exc)
            entry.outcome = exc
            gateway.punches_settled(entry.records, serial, exc)
        else:
            outcomes = future.result()
            if outcomes.count(STORED) == len(outcomes):  # the common case: one shared outcome object
                entry.outcome = [_OK] * len(outcomes)
                gateway.punches_settled(entry.records, serial, None)
            else:
                entry.outcome = codes = [o.reject_reason if o.status is Outcome.REJECTED
                                         else _OUTCOME_CODES[o.status] for o in outcomes]
                gateway.punches_settled(entry.records, serial, None, codes)
                if _DUPLICATE in codes:  # a reused record_no with other content must not vanish
                    records = [record for request in entry.requests for record, _ in request.records]
                    gateway.check_duplicates(serial, [r for r, code in zip(records, codes) if code == _DUPLICATE],
                                             self.peer_host)
        if not self.closed:
            groups = self.groups
            latency = gateway.ack_latency
            debug = log.isEnabledFor(logging.DEBUG)
            answered: list[StoreGroup] | None = [] if latency is not None or debug else None
            while groups and groups[0].outcome is not None and not self.closed:
                done = groups.pop(0)
                self._execute(self._answer_group(done))
                if answered is not None:
                    answered.append(done)
            if not self.closed and not self.busy and self.backlog:  # nothing held: nothing to pump
                self._pump()
            self._flush()
            if answered:
                if latency is not None:  # the answers are written: one observation per store call
                    now = gateway.ack_clock()
                    counts, bounds = latency.counts, latency.bounds
                    for done in answered:  # Tally.observe, inlined: this runs once per store call
                        seconds = now - done.submitted
                        counts[bisect_left(bounds, seconds)] += 1
                        latency.sum += seconds
                if debug:
                    self._log_answered(answered)
        self._report_if_settled()

    def _log_answered(self, groups: list[StoreGroup]) -> None:
        """Debug: one line per answered store call, with each record's number, worker (the
        formatter masks the ID number) and result."""
        for group in groups:
            outcome = group.outcome
            records = [record for request in group.requests for record, _ in request.records]
            if isinstance(outcome, list):
                results = [_code_label(code) for code in outcome]
            else:
                results = ["nack_store_unavailable"] * len(records)
            log.debug("store call answered: %d records", len(records), extra={
                **self.log_fields(),
                "records": [{"no": r.record_no, "worker": r.worker_id, "result": result}
                            for r, result in zip(records, results)]})

    def _answer_group(self, group: StoreGroup) -> list[Action]:
        session, outcome = self.session, group.outcome
        if isinstance(outcome, StoreError):
            return [answer for request in group.requests for answer in session.store_failed(request)]
        if outcome is None or isinstance(outcome, BaseException):
            return session.abort(ResultCode.SERVER_BUSY, "internal error")
        now = self.gateway.now_ms()
        answers: list[Action] = []
        start = 0
        for request in group.requests:
            end = start + len(request.records)
            answers += session.punches_stored(request, outcome[start:end], now)
            start = end
        return answers

    async def _announced(self, record_no: int, sha256: bytes, total_size: int) -> bool:
        """True if a stored punch of this device, `record_no`, announces exactly this photo.
        Raises StoreError. One indexed read per chunk: chunks are 32 KiB, punches 70 B."""
        punch = await self.gateway.store.get_punch(self.session.serial or "", record_no)
        return punch is not None and punch.photo_sha256 == sha256 and punch.photo_size == total_size

    def _photo_refused(self, sha256: bytes, result: ResultCode, next_offset: int) -> list[Action]:
        self.gateway.count("photo_refused_" + result.name.lower())
        return self.session.photo_result(sha256, result, next_offset)

    def _photo_busy(self, sha256: bytes, next_offset: int) -> list[Action]:
        """The process's photo turns and queue are full: PHOTO_UPLOADS_BUSY on the wire (try
        later), counted apart from a device's own slots as reason `store_busy`."""
        self.gateway.count("photo_refused_store_busy")
        return self.session.photo_result(sha256, ResultCode.PHOTO_UPLOADS_BUSY, next_offset)

    async def _append_photo(self, action: AppendPhoto) -> list[Action]:
        chunk = action.chunk
        intake = self.gateway.photo_intake
        if intake.full():
            return self._photo_busy(chunk.photo_sha256, chunk.offset)
        async with intake.turn():
            return await self._append_photo_now(chunk)

    async def _append_photo_now(self, chunk: PhotoChunk) -> list[Action]:
        serial = self.session.serial or ""
        gateway = self.gateway
        sha = chunk.photo_sha256
        try:
            if not await self._announced(chunk.record_no, sha, chunk.total_size):
                return self._photo_refused(sha, ResultCode.PHOTO_NOT_ANNOUNCED, 0)
            if not gateway.photo_slots.admit(serial, sha, gateway.now_ms()):
                return self._photo_refused(sha, ResultCode.PHOTO_UPLOADS_BUSY, chunk.offset)
            next_offset = await gateway.store.photo_append(serial, sha, chunk.total_size, chunk.offset, chunk.data)
            result = ResultCode.OK
            if next_offset == chunk.offset + len(chunk.data):  # this chunk advanced the upload
                gateway.count("photo_bytes_stored", len(chunk.data))
                if next_offset == chunk.total_size:
                    gateway.count("photos_stored")
            if next_offset >= chunk.total_size:
                gateway.photo_slots.done(serial, sha)
        except PhotoOffsetMismatch as exc:
            result, next_offset = ResultCode.PHOTO_OFFSET_MISMATCH, exc.expected_offset
        except PhotoHashMismatch:
            gateway.photo_slots.done(serial, sha)
            result, next_offset = ResultCode.PHOTO_HASH_MISMATCH, 0
        except PhotoTooLarge:
            gateway.photo_slots.done(serial, sha)
            result, next_offset = ResultCode.PHOTO_TOO_LARGE, 0
        except StoreError:
            result, next_offset = ResultCode.STORE_UNAVAILABLE, chunk.offset
        return self.session.photo_result(sha, result, next_offset)

    async def _query_photo(self, action: QueryPhoto) -> list[Action]:
        query = action.query
        intake = self.gateway.photo_intake
        if intake.full():  # 0: the device asks again after its back-off and resumes from the answer
            return self._photo_busy(query.photo_sha256, 0)
        async with intake.turn():
            return await self._query_photo_now(query)

    async def _query_photo_now(self, query: PhotoQuery) -> list[Action]:
        try:
            if not await self._announced(query.record_no, query.photo_sha256, query.total_size):
                return self._photo_refused(query.photo_sha256, ResultCode.PHOTO_NOT_ANNOUNCED, 0)
            next_offset = await self.gateway.store.photo_status(self.session.serial or "", query.photo_sha256)
            result = ResultCode.OK
        except StoreError:
            result, next_offset = ResultCode.STORE_UNAVAILABLE, 0
        return self.session.photo_result(query.photo_sha256, result, next_offset)
