"""The SQLite store's writer: one process that owns the only write connection.

Why a process and not a thread: a writer thread shares the GIL with the event loop.
Every SQLite call releases the GIL and must win it back from a loop that is busy
reading terminals, so a 90-row group commit that needs 2 ms of work took 8-95 ms of
wall time at 6,000 punches/s (256 terminals), and the handoffs cost the gateway ~25%
more CPU. A process has its own GIL: the loop only writes a request and later reads
the answer, both without blocking.

The protocol between `WriterProcess` (in the caller's event loop) and `main` (the
child) is length-prefixed pickle frames over a socketpair, answered strictly in order:

    request: (request_id, transactional, fn, args, commit_failure, generation, read_only)
    answer:  (request_id, ok, result or exception)

`fn` is a module-level function `fn(conn, *args)` (pickled by reference), run with
the connection, inside BEGIN IMMEDIATE ... COMMIT when `transactional`. Exceptions
travel back as they were raised (StoreUnavailable for environmental faults, which
also make the child reopen its connection; IntegrityError, DeviceExists... as is).

Lifetime: started on the first call; if it dies (killed, crashed), every call in
flight fails with StoreUnavailable and the next call starts a new one, as a dropped
connection is reopened. It exits when its socket closes (`close()`, or the owner
process dying) and, on Linux, at once when the thread that started it ends (the
kernel's parent-death signal follows the thread; a store opened on a short-lived
thread's event loop restarts its writer on the next write after that thread ends).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

from lmg.storage.config import StoreConfig
from lmg.storage.errors import StoreClosed, StoreUnavailable

_HEADER = struct.Struct(">I")
# Rows per multi-row INSERT (storage/sqlite.py). One statement is one sqlite3_step;
# 512 rows x 10 columns = 5120 parameters, well under SQLite's 32766.
ROWS_PER_STATEMENT = 512
# Statements are cached per size (sqlite3's statement cache, sized so all stay prepared).
STATEMENT_CACHE = ROWS_PER_STATEMENT + 64
_CLOSE_WAIT_S = 10.0  # close(): how long the child may take to finish and exit


class WriterFaults:
    """Test hook: make the writer behave as on a sick disk. Thread-safe.

    `fail_next_commits(n, message)` makes the next n transactions sent to the writer
    raise sqlite3.OperationalError(message) at COMMIT (after their statements ran, so
    the rollback path is real). `read_only = True` makes the writer reopen the file with
    URI mode=ro, so SQLite itself refuses writes ("attempt to write a readonly
    database"); chmod would not stop root, who runs the tests.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[str] = []
        self._read_only = False
        self.generation = 0  # bumped when the writer must reopen its connection

    def fail_next_commits(self, count: int, message: str = "disk I/O error") -> None:
        with self._lock:
            self._failures.extend([message] * count)

    @property
    def read_only(self) -> bool:
        return self._read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        with self._lock:
            if value != self._read_only:
                self._read_only = value
                self.generation += 1

    def take_commit_failure(self) -> str | None:
        """The failure the next transaction must raise at COMMIT, if one is pending."""
        with self._lock:
            return self._failures.pop(0) if self._failures else None


def unavailable(path: Path, exc: sqlite3.Error) -> StoreUnavailable:
    text = str(exc)
    if "full" in text:
        hint = "free space on the file system of the data directory"
    elif "readonly" in text or "read-only" in text:
        hint = "make the database file, its -wal/-shm files and its directory writable"
    elif "locked" in text or "busy" in text:
        hint = "another process holds the database; stop it (only one lmg may write a SQLite file)"
    elif "unable to open" in text:
        hint = "check that the data directory exists and is writable"
    else:
        hint = "check the disk (dmesg) and the database file"
    return StoreUnavailable(
        f"SQLite store {path}: {text}; nothing of this call was stored ({hint}); "
        f"devices will resend"
    )


def is_environmental(exc: BaseException) -> TypeGuard[sqlite3.DatabaseError]:
    # IntegrityError and ProgrammingError are DatabaseError subclasses but mean a bug or
    # a rejected value, not a sick disk.
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
    )


# ------------------------------------------------------------------ the caller's side


class _Channel(asyncio.Protocol):
    """The socket to one writer process: requests out, answers in, in order."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.next_id = 0
        self.buffer = bytearray()
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        end = len(buffer)
        while end - start >= 4:
            (size,) = _HEADER.unpack_from(buffer, start)
            if end - start - 4 < size:
                break
            request_id, ok, payload = pickle.loads(memoryview(buffer)[start + 4:start + 4 + size])
            start += 4 + size
            future = self.pending.pop(request_id, None)
            if future is None or future.done():
                continue  # its caller was cancelled; the writer finished the work anyway
            if ok:
                future.set_result(payload)
            else:
                future.set_exception(payload)
        if start:
            del buffer[:start]

    def connection_lost(self, exc) -> None:
        self.lost = True
        code = self.proc.poll()
        died = StoreUnavailable(
            f"the SQLite writer process {self.proc.pid} exited"
            + (f" (exit code {code})" if code is not None else "")
            + " before answering; it is restarted on the next write. A punch batch may or "
              "may not have been committed: resending it is safe (duplicates are detected)")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(died)
        self.pending.clear()

    def request(self, message: tuple) -> asyncio.Future:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        data = pickle.dumps((self.next_id, *message), pickle.HIGHEST_PROTOCOL)
        # set by connection_made, which runs before _spawn hands the channel out
        self.transport.write(_HEADER.pack(len(data)) + data)  # type: ignore[union-attr]
        return future


class WriterProcess:
    """The caller's handle on the writer process. Use from one event loop."""

    def __init__(self, path: Path, config: StoreConfig, faults: WriterFaults) -> None:
        self.path = path
        self.config = config
        self.faults = faults
        self._channel: _Channel | None = None
        self._starting: asyncio.Future | None = None
        self._closed = False

    @property
    def queue_depth(self) -> int:
        """Requests sent to the writer process and not yet answered (a dict's length: cheap
        enough to read on every metrics fold)."""
        channel = self._channel
        return len(channel.pending) if channel is not None and not channel.lost else 0

    @property
    def pid(self) -> int | None:
        """The running writer process, if one is running (tests kill it)."""
        channel = self._channel
        return channel.proc.pid if channel is not None and not channel.lost else None

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(conn, *args) in one transaction in the writer process; one round trip."""
        return await self._request(True, fn, args)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(conn, *args) in the writer process without a surrounding transaction."""
        return await self._request(False, fn, args)

    async def _request(self, transactional: bool, fn: Callable[..., Any], args: tuple) -> Any:
        channel = self._channel
        if channel is None or channel.lost:
            channel = await self._start()
        faults = self.faults
        failure = faults.take_commit_failure() if transactional else None
        return await channel.request((transactional, fn, args, failure, faults.generation, faults.read_only))

    async def _start(self) -> _Channel:
        if self._closed:
            raise StoreClosed("the store is closed")
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._spawn())
        starting = self._starting
        try:
            return await asyncio.shield(starting)
        finally:
            if starting.done() and self._starting is starting:
                self._starting = None

    async def _spawn(self) -> _Channel:
        old = self._channel
        if old is not None:
            await _reap(old.proc)
        ours, theirs = socket.socketpair()
        settings = {"path": str(self.path), "synchronous": self.config.sqlite_synchronous,
                    "busy_timeout_ms": int(self.config.sqlite_busy_timeout_ms), "parent": os.getpid()}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from lmg.storage.sqlite_writer import main; main()",
                 str(theirs.fileno()), json.dumps(settings)],
                pass_fds=(theirs.fileno(),), env=env, start_new_session=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            raise StoreUnavailable(f"cannot start the SQLite writer process: {exc}") from exc
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        _, channel = await loop.connect_accepted_socket(lambda: _Channel(proc), ours)
        self._channel = channel
        return channel

    async def close(self) -> None:
        """Let the writer finish what it was sent, then stop it. Idempotent."""
        self._closed = True
        if self._starting is not None:
            try:
                await asyncio.shield(self._starting)
            except Exception:  # noqa: BLE001 - nothing started, nothing to stop
                pass
        channel, self._channel = self._channel, None
        if channel is None:
            return
        if channel.pending:
            await asyncio.gather(*channel.pending.values(), return_exceptions=True)
        if channel.transport is not None:
            channel.transport.close()  # EOF: the child closes its connection and exits
        await _reap(channel.proc)


async def _reap(proc: subprocess.Popen) -> None:
    deadline = asyncio.get_running_loop().time() + _CLOSE_WAIT_S
    while proc.poll() is None:
        if asyncio.get_running_loop().time() > deadline:
            proc.kill()
            deadline = float("inf")
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------ the writer process


class _Connection:
    """The one write connection, reopened after an environmental fault."""

    def __init__(self, path: Path, synchronous: str, busy_timeout_ms: int) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.conn: sqlite3.Connection | None = None
        self.generation = -1

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        if read_only:
            conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True,
                                   isolation_level=None, cached_statements=STATEMENT_CACHE)
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=STATEMENT_CACHE)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL (got {mode})")
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def connection(self, generation: int, read_only: bool) -> sqlite3.Connection:
        if self.conn is not None and self.generation != generation:
            self.drop()
        if self.conn is None:
            try:
                self.conn = self._connect(read_only)
            except sqlite3.Error as exc:
                raise unavailable(self.path, exc) from exc
            self.generation = generation
        return self.conn

    def drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def call(self, transactional: bool, fn: Callable[..., Any], args: tuple,
             commit_failure: str | None, generation: int, read_only: bool) -> Any:
        conn = self.connection(generation, read_only)
        try:
            if not transactional:
                return fn(conn, *args)
            conn.execute("BEGIN IMMEDIATE")
            result = fn(conn, *args)
            if commit_failure is not None:
                raise sqlite3.OperationalError(commit_failure)
            conn.execute("COMMIT")
            return result
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if is_environmental(exc):
                self.drop()  # reopen on the next call: no half-broken connection survives
                raise unavailable(self.path, exc) from exc
            raise


def _answer(request_id: int, ok: bool, payload: Any) -> bytes:
    try:
        data = pickle.dumps((request_id, ok, payload), pickle.HIGHEST_PROTOCOL)
        if not ok:
            pickle.loads(data)  # an exception whose constructor wants more than its message
    except Exception as exc:  # noqa: BLE001 - an answer that cannot travel is still an answer
        error = payload if not ok else exc
        data = pickle.dumps((request_id, False, RuntimeError(
            f"the SQLite writer could not send back {type(error).__name__}: {error}")),
            pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the thread that started it ends (its process dying
    ends it too), so a killed gateway leaves no writer behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere: the socket's EOF still ends this process
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def main() -> None:
    """`python -c "from lmg.storage.sqlite_writer import main; main()" FD SETTINGS_JSON`."""
    fd = int(sys.argv[1])
    settings = json.loads(sys.argv[2])
    _die_with_parent(settings["parent"])
    # Interrupts are the parent's to handle: a half-done transaction would only roll back,
    # but a shutdown that drains its groups needs this process until the socket closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    stream = sock.makefile("rb", buffering=1 << 16)
    writer = _Connection(Path(settings["path"]), settings["synchronous"], settings["busy_timeout_ms"])
    try:
        while True:
            header = stream.read(4)
            if len(header) < 4:
                return  # the owner closed the store or died
            (size,) = _HEADER.unpack(header)
            body = stream.read(size)
            if len(body) < size:
                return
            request_id, *request = pickle.loads(body)
            try:
                answer = _answer(request_id, True, writer.call(*request))
            except BaseException as exc:  # noqa: BLE001 - every error goes back to the caller
                answer = _answer(request_id, False, exc)
            sock.sendall(answer)
    except (BrokenPipeError, ConnectionResetError):
        return
    finally:
        writer.drop()
