"""A simulated attendance terminal: the client side of docs/protocol.md.

Used by the tests, by `lmg sim terminals`, and by vendors who want to see a conforming
peer. It behaves as the spec asks of real firmware: HELLO/CHALLENGE/AUTH, heartbeats,
punches kept until an ACK row answers them, resend of unanswered records (same
record_no) after a reconnect with the back-off of simulators/reconnect.py (server-named waits
honoured), a bounded window of frames in flight, GOODBYE TERMINAL_LEAVING when it leaves
(`close(leaving=True)`). The long-lived terminal with timers and a state file is
simulators/firmware.py.

Commands from the server (§6.7) are answered at any time, also while the terminal's own
requests wait: the reader hands every command frame (and every frame it cannot decode) to
`connection.device`, a `TerminalDevice` (simulators/device.py), and writes its answers at
once, numbered in the connection's own sequence. Answers from the server are matched to
requests by `ref_seq` as before; the terminal's own answers take sequence numbers too, which
the server never names in a `ref_seq` of its own answers, so the two never mix. The device
outlives the connection: pass it to the next one (`TerminalConnection(..., device=old.device)`)
to reconnect with the same roster, as a terminal's flash would.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lmg.protocol import (
    Auth,
    AuthResult,
    Challenge,
    DeviceStatus,
    FrameDecoder,
    Goodbye,
    Heartbeat,
    Hello,
    MessageType,
    Nack,
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
from lmg.protocol.identity import check_digit
from lmg.simulators.device import COMMAND_TYPES, TerminalDevice
from lmg.simulators.reconnect import LOST, BackoffPolicy, Ending, reconnect_wait_s
from lmg.simulators.photo_upload import DEFAULT_CHUNK_BYTES, PhotoUpload, Step

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection


class TerminalError(Exception):
    """The server refused or dropped the terminal; `code` is the protocol's reason if known,
    `wait_s` the seconds the server asked it to wait (AUTH_RESULT `retry_after_s`, GOODBYE
    `reconnect_after_s`; 0 when none)."""

    def __init__(self, message: str, code: ResultCode | None = None, wait_s: int = 0):
        super().__init__(message)
        self.code = code
        self.wait_s = wait_s

    def ending(self) -> Ending:
        """How the attempt ended, for the reconnect schedule (simulators/reconnect.py)."""
        return LOST if self.code is None else Ending(int(self.code), self.wait_s)


@dataclass(frozen=True)
class DeviceCredentials:
    serial: str
    secret: bytes
    project: str = ""


def worker_id_for(n: int) -> str:
    """A valid resident ID number (Lanzhou, born 1985) for simulated worker `n`."""
    first17 = f"620102198503{n % 100000:05d}"
    return first17 + check_digit(first17)


def make_punch(record_no: int, worker: int, now_ms: int, photo: bytes | None = None) -> PunchRecord:
    sha = hashlib.sha256(photo).digest() if photo else bytes(32)
    return PunchRecord(record_no, now_ms, worker_id_for(worker), 1 + record_no % 2, 1, 365, len(photo or b""), sha)


class TerminalConnection:
    """One connection of a simulated terminal; `request` sends a frame and awaits its answer.

    `device` is the terminal's downlink state (a new, empty `TerminalDevice` when None);
    every command the server sends goes to it and its answers go out at once."""

    def __init__(self, credentials: DeviceCredentials, host: str, port: int, *, transport: str = "tcp",
                 tls: ssl.SSLContext | None = None, firmware: str = "sim-1.0", timeout_s: float = 15.0,
                 local_addr: str | None = None, device: TerminalDevice | None = None):
        self.credentials = credentials
        self.host, self.port = host, port
        self.transport = transport
        self.tls = tls
        self.firmware = firmware
        self.timeout_s = timeout_s
        self.local_addr = local_addr
        self.seq = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.photo_waiters: dict[bytes, asyncio.Future[PhotoStatus]] = {}
        self.unsolicited: asyncio.Queue = asyncio.Queue()
        self.auth_result: AuthResult | None = None
        self.closed_reason: ResultCode | None = None
        self.reconnect_after_s = 0  # from the server's GOODBYE, when it named a wait
        self._reader_task: asyncio.Task | None = None
        self._writer: asyncio.StreamWriter | None = None  # tcp
        self._ws: ClientConnection | None = None  # ws
        self._ws_sends: set[asyncio.Task] = set()
        self.device = device if device is not None else TerminalDevice()
        # (predicate on the device, future) of each `wait_until`; checked after every command
        self._device_waiters: list[tuple[Callable[[TerminalDevice], bool], asyncio.Future[None]]] = []

    # -- wire --------------------------------------------------------------------------
    async def open(self) -> None:
        if self.transport == "tcp":
            local = (self.local_addr, 0) if self.local_addr else None
            reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.tls, local_addr=local), self.timeout_s
            )
            self._reader_task = asyncio.get_running_loop().create_task(self._read_tcp(reader))
        elif self.transport == "ws":
            from websockets.asyncio.client import connect

            scheme = "wss" if self.tls else "ws"
            self._ws = await asyncio.wait_for(
                connect(f"{scheme}://{self.host}:{self.port}/terminal", ssl=self.tls, max_size=1 << 20,
                        ping_interval=None, compression=None),
                self.timeout_s,
            )
            self._reader_task = asyncio.get_running_loop().create_task(self._read_ws(self._ws))
        else:
            raise ValueError(f"transport must be tcp or ws, not {self.transport!r}")

    def send(self, message) -> int:
        # Once the reader has ended nothing can answer: fail now, not after timeout_s. (A TCP
        # writer is not closing after the server's FIN, and a WebSocket send fails in a task.)
        if self._reader_task is not None and self._reader_task.done():
            raise TerminalError("connection closed", self.closed_reason)
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        frame = encode(message._replace(seq=self.seq))
        if self._writer is not None:
            if self._writer.is_closing():
                raise TerminalError("connection closed", self.closed_reason)
            self._writer.write(frame)
        else:
            assert self._ws is not None, "open() first"
            task = asyncio.get_running_loop().create_task(self._ws.send(frame))
            self._ws_sends.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._ws_sent)
        return self.seq

    def _ws_sent(self, task: asyncio.Task) -> None:
        self._ws_sends.discard(task)
        if not task.cancelled():
            task.exception()  # a send on a closing connection: the reader reports the close

    async def _read_tcp(self, reader) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for item in decoder.feed(data):
                    self._dispatch(item)
        except (ConnectionError, OSError):
            pass
        finally:
            self._fail_all("connection closed")

    async def _read_ws(self, ws: ClientConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in ws:
                if isinstance(message, str):
                    continue  # a text message is no frame (frames are binary): dropped like a bad one
                try:
                    self._dispatch(decode_frame(message))
                except ProtocolError as exc:
                    self._dispatch(exc)
        except ConnectionClosed:
            pass
        finally:
            self._fail_all("connection closed")

    def _dispatch(self, item) -> None:
        if isinstance(item, ProtocolError):
            self._answer(item)  # NACK of its code when its seq could be read (section 6.9)
            return
        kind = item.msg_type
        if kind in COMMAND_TYPES:
            self._answer(item)
            return
        if kind in (MessageType.ACK, MessageType.NACK):
            future = self.pending.pop(item.ref_seq, None)
        elif kind is MessageType.PHOTO_STATUS:
            future = self.photo_waiters.pop(item.photo_sha256, None)
        elif kind in (MessageType.CHALLENGE, MessageType.AUTH_RESULT):
            future = self.pending.pop(-1, None)
        else:
            future = None
        if kind is MessageType.GOODBYE:
            self.closed_reason = ResultCode(item.reason) if item.reason in ResultCode._value2member_map_ else None
            self.reconnect_after_s = item.reconnect_after_s
        if future is not None and not future.done():
            future.set_result(item)
        elif future is None:
            self.unsolicited.put_nowait(item)

    def _answer(self, item) -> None:
        """Carry out a command on the device and write its answers; wake the device waiters."""
        for reply in self.device.handle(item, time.time_ns() // 1_000_000):
            try:
                self.send(reply)
            except TerminalError:
                break  # closing: the server sends the command again in the next session
        for predicate, future in self._device_waiters:
            if not future.done() and predicate(self.device):
                future.set_result(None)

    def _fail_all(self, why: str) -> None:
        waiting = [future for _, future in self._device_waiters]
        for future in list(self.pending.values()) + list(self.photo_waiters.values()) + waiting:
            if not future.done():
                future.set_exception(TerminalError(why, self.closed_reason))
        self.pending.clear()
        self.photo_waiters.clear()

    async def _await(self, key, table) -> object:
        future = asyncio.get_running_loop().create_future()
        table[key] = future
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        finally:
            table.pop(key, None)

    async def request(self, message):
        """Send and wait for the ACK/NACK naming this frame's seq."""
        future = asyncio.get_running_loop().create_future()
        seq = (self.seq + 1) & 0xFFFFFFFF
        self.pending[seq] = future
        self.send(message)
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        finally:
            self.pending.pop(seq, None)

    # -- the device side ----------------------------------------------------------------
    async def wait_until(self, predicate: Callable[[TerminalDevice], bool], *, timeout_s: float | None = None,
                         what: str = "a device condition") -> None:
        """Return once `predicate(self.device)` holds, checked now and after every command this
        connection carries out. Raises TimeoutError naming `what` after `timeout_s` (default
        the connection's `timeout_s`), TerminalError if the connection ends first."""
        if predicate(self.device):
            return
        if self._reader_task is not None and self._reader_task.done():
            raise TerminalError("connection closed", self.closed_reason)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        entry = (predicate, asyncio.get_running_loop().create_future())
        self._device_waiters.append(entry)
        try:
            await asyncio.wait_for(entry[1], timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{what} not reached within {timeout} s (roster version "
                               f"{self.device.roster_version}, {self.device.worker_count} workers)") from None
        finally:
            self._device_waiters.remove(entry)

    async def wait_for_roster_version(self, version: int, *, exact: bool = False,
                                      timeout_s: float | None = None) -> int:
        """Wait until the device holds roster `version` (or a later one, unless `exact`: a full
        resync may lower it); returns the version held. Bounded as `wait_until`."""
        if exact:
            await self.wait_until(lambda d: d.roster_version == version, timeout_s=timeout_s,
                                  what=f"roster version {version}")
        else:
            await self.wait_until(lambda d: d.roster_version >= version, timeout_s=timeout_s,
                                  what=f"roster version {version} or later")
        return self.device.roster_version

    async def report_status(self, *, uptime_s: int = 0, pending_records: int = 0):
        """DEVICE_STATUS with the device's roster version and size; returns the server's answer."""
        device = self.device
        return await self.request(DeviceStatus(uptime_s, 1 << 20, pending_records, 0, device.roster_version,
                                               device.worker_count, 0, 0, 250))

    # -- the protocol ------------------------------------------------------------------
    async def authenticate(self) -> AuthResult:
        creds = self.credentials
        hello = Hello(creds.serial, "simulator", "sim", self.firmware, 1, int(Capability.FACE | Capability.PHOTO_UPLOAD))
        waiter = asyncio.get_running_loop().create_future()
        self.pending[-1] = waiter
        self.send(hello)
        reply = await asyncio.wait_for(waiter, self.timeout_s)
        if isinstance(reply, AuthResult):  # refused before the challenge
            raise TerminalError(f"authentication refused: {ResultCode(reply.result).name}", ResultCode(reply.result),
                                reply.retry_after_s)
        assert isinstance(reply, Challenge)
        waiter = asyncio.get_running_loop().create_future()
        self.pending[-1] = waiter
        self.send(Auth(auth_mac(creds.secret, reply.nonce, creds.serial, self.firmware, 1)))
        result = await asyncio.wait_for(waiter, self.timeout_s)
        if result.result != ResultCode.OK:
            raise TerminalError(f"authentication refused: {ResultCode(result.result).name}", ResultCode(result.result),
                                result.retry_after_s)
        self.auth_result = result
        return result

    async def heartbeat(self, pending_records: int = 0):
        return await self.request(Heartbeat(int(time.time() * 1000), pending_records, 0))

    async def upload_photo(self, record_no: int, photo: bytes, chunk_size: int = DEFAULT_CHUNK_BYTES,
                           resume: bool = True) -> PhotoStatus:
        """Upload `photo` for `record_no` (its punch acknowledged) as §6.5 says, first asking
        where to resume when `resume`. Raises TerminalError on any result but OK and
        PHOTO_OFFSET_MISMATCH, asyncio.TimeoutError when an answer does not come."""
        upload = PhotoUpload(record_no, hashlib.sha256(photo).digest(), len(photo), chunk_size)
        if resume:
            upload.restart()
        while True:
            waiter = asyncio.get_running_loop().create_future()
            self.photo_waiters[upload.sha256] = waiter
            self.send(upload.next_frame(photo))
            status = await asyncio.wait_for(waiter, self.timeout_s)
            step = upload.on_status(status)
            if step is Step.DONE:
                return status
            if status.result not in (ResultCode.OK, ResultCode.PHOTO_OFFSET_MISMATCH):
                raise TerminalError(f"photo refused: {ResultCode(status.result).name}", ResultCode(status.result))

    def ending(self) -> Ending:
        """How this connection ended, for the reconnect schedule: the server's GOODBYE reason
        and wait, or LOST when it gave none."""
        return LOST if self.closed_reason is None else Ending(int(self.closed_reason), self.reconnect_after_s)

    async def close(self, *, leaving: bool = False) -> None:
        """Close the connection. `leaving`: an authenticated terminal says GOODBYE
        TERMINAL_LEAVING first (§6.8), so the server knows the close was meant."""
        if leaving and self.auth_result is not None and self.closed_reason is None:
            try:
                self.send(Goodbye(ResultCode.TERMINAL_LEAVING, 0))
            except TerminalError:
                pass  # the server closed first
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        if self._ws is not None:
            await self._ws.close()
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)


@dataclass
class UploadTally:
    sent: int = 0  # records put on the wire (resends count again)
    acked: int = 0  # records answered OK
    duplicates: int = 0  # records answered DUPLICATE
    rejected: int = 0  # records answered with a rejection code
    errors: int = 0  # frames NACKed, timeouts, lost connections
    reconnects: int = 0
    rejections: dict = field(default_factory=dict)

    def add(self, other: "UploadTally") -> None:
        for name in ("sent", "acked", "duplicates", "rejected", "errors", "reconnects"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for code, n in other.rejections.items():
            self.rejections[code] = self.rejections.get(code, 0) + n

    def as_dict(self) -> dict:
        return {"sent": self.sent, "acked": self.acked, "duplicates": self.duplicates, "rejected": self.rejected,
                "errors": self.errors, "reconnects": self.reconnects, "rejections": self.rejections}


async def upload_punches(connect, records: list[PunchRecord], *, batch_size: int = 1, window: int = 8,
                         max_attempts: int = 5, backoff_s: float = 0.2) -> UploadTally:
    """Deliver `records` until every one is answered, reconnecting as firmware would.

    `connect()` returns an authenticated TerminalConnection. Unanswered records are resent
    (same record_no) on the next connection. Waits follow docs/protocol.md §5.2/§6.8
    (simulators/reconnect.py) with the base `backoff_s` and the cap 60 x `backoff_s` (the
    document's 1 s and 60 s scaled for a test tool); a wait the server names
    (`retry_after_s`, `reconnect_after_s`) is waited in full. Each connection ends with
    GOODBYE TERMINAL_LEAVING.
    """
    import random

    policy = BackoffPolicy(base_s=backoff_s, cap_s=60 * backoff_s)
    tally = UploadTally()
    outstanding = list(records)
    attempt = failures = 0
    while outstanding and attempt < max_attempts:
        attempt += 1
        try:
            connection = await connect()
        except (TerminalError, OSError, asyncio.TimeoutError) as exc:
            tally.errors += 1
            failures += 1
            if attempt < max_attempts:
                ending = exc.ending() if isinstance(exc, TerminalError) else LOST
                await asyncio.sleep(reconnect_wait_s(policy, failures, random.random(), ending))
            continue
        if attempt > 1:
            tally.reconnects += 1
        failures = 0
        try:
            outstanding = await _send_all(connection, outstanding, batch_size, window, tally)
        finally:
            await connection.close(leaving=True)
        if outstanding:
            failures = 1  # an authenticated session that ended: the base starts again (§6.8)
            await asyncio.sleep(reconnect_wait_s(policy, failures, random.random(), connection.ending()))
    return tally


async def _send_all(connection, records, batch_size, window, tally) -> list[PunchRecord]:
    """Send in a window; return the records still unanswered when the connection ended."""
    chunks = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    answered: set[int] = set()
    semaphore = asyncio.Semaphore(window)

    async def one(chunk):
        async with semaphore:
            message = Punch.of(chunk[0]) if batch_size == 1 else PunchBatch(tuple(chunk))
            tally.sent += len(chunk)
            try:
                reply = await connection.request(message)
            except (TerminalError, asyncio.TimeoutError, ConnectionError):
                tally.errors += 1
                return
            if isinstance(reply, Nack):
                tally.errors += 1
                return
            for row in reply.results:
                answered.add(row.record_no)
                if row.result == ResultCode.OK:
                    tally.acked += 1
                elif row.result == ResultCode.DUPLICATE:
                    tally.duplicates += 1
                else:
                    tally.rejected += 1
                    name = ResultCode(row.result).name if row.result in ResultCode._value2member_map_ else str(row.result)
                    tally.rejections[name] = tally.rejections.get(name, 0) + 1

    await asyncio.gather(*(one(chunk) for chunk in chunks))
    return [r for r in records if r.record_no not in answered]
