"""WebSocket server libraries compared on the gateway's traffic shape, in one run.

Run: `python -m lmg.bench.websocket_libs [--json] [--quick]`.

Each candidate (`websockets`, `picows`, `aiohttp`) serves `/terminal` on 127.0.0.1 from
its own subprocess under uvloop, and answers every binary message with a fixed 34-byte
binary message (the size of our ACK frame) and does nothing else (websockets configured
as server/gateway/websocket.py runs it; the others with their defaults; `--libs` also offers
picows variants with other transport and buffer settings). The baseline is a bare
uvloop `asyncio.Protocol` that cuts the byte stream into 88-byte frames and writes a
34-byte reply per frame: the cost of the sockets and the event loop alone, so a library's
rate divided by it is what the WebSocket layer leaves of the loop's capacity.

Two figures per server, each the median over `--rounds` rounds:
  * throughput: a separate client process opens `--connections` connections, each
    keeping `--window` 88-byte messages in flight (a new one goes out per reply), and
    counts replies over `--duration` seconds after a short warm-up. The client is the
    same for every WebSocket server (picows, the fastest Python client we have, so the
    server is the side that saturates; the server's CPU share is printed to show it), and
    an equivalent raw uvloop TCP client for the baseline.
  * memory: server RSS (VmRSS) after one warm connection, then after `--idle` more idle
    connections have completed their handshakes; the difference divided by `--idle` is
    KiB per connection. Each server is fresh for this, so the throughput run's heap
    does not hide the cost.

Rules this module keeps:
  * Loopback only; every wait has a deadline; every child is killed on the way out,
    also on error or Ctrl-C, and kills itself if the parent dies or its stdin closes.
  * Within a round the servers run in rotated order, so noise from the shared 2-core
    machine falls on all of them alike; ratios are medians of per-round ratios.
  * No figure is asserted here or in tests: speed is reported, compared by a person.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

NAME = "websocket_libs"
HELP = "WebSocket server libraries: ACK rate and RSS per idle connection vs bare uvloop TCP (same run)"

MESSAGE_BYTES = 88  # a one-record PUNCH frame is 88 bytes on the wire
ACK_BYTES = 34  # an ACK frame with an empty result list is 34 bytes
PATH = "/terminal"
HOST = "127.0.0.1"

BASELINE = "tcp"
LIBRARIES = ("websockets", "picows", "aiohttp")
# Not run by default (time budget), picows variants: on uvloop's own transports instead
# of aiofastnet's (the library's share of its speed apart from the transport's), with a
# 1 KiB initial read buffer instead of 16 KiB (our frames are 30-300 bytes), and both.
EXTRA_LIBRARIES = ("picows-uvloop", "picows-rb1k", "picows-lean")
DISTRIBUTION = {"websockets": "websockets", "aiohttp": "aiohttp", **{n: "picows" for n in ("picows", *EXTRA_LIBRARIES)}}

DEFAULTS = {"connections": 200, "duration": 10.0, "idle": 2000, "window": 8, "rounds": 3, "warmup": 1.0}
QUICK = {"connections": 50, "duration": 3.0, "idle": 500, "window": 8, "rounds": 3, "warmup": 0.5}

# Above asyncio's default listen backlog of 100: the idle phase connects 64 at a time
# and a full accept queue would show up as SYN retries (1 s each), not as server cost.
LISTEN_BACKLOG = 1024
CONNECT_CONCURRENCY = 64
SERVER_START_TIMEOUT_S = 20.0
HANDSHAKES_TIMEOUT_S = 90.0  # 2000 handshakes take ~1-3 s here; 90 s only on a stalled machine
CHILD_LIFETIME_S = 600.0  # a child that outlives this has lost its parent: it exits
QUIET_CPU_TICKS = 1  # "quiet" server: at most one clock tick (10 ms) of CPU per 100 ms


# --------------------------------------------------------------------------- children


def _child_setup() -> None:
    """Die with the parent (Linux PR_SET_PDEATHSIG) and allow as many fds as the hard limit."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)
    _raise_fd_limit()


def _raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def _say(obj) -> None:
    """One JSON line to the parent on stdout (the control channel)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _until_parent_lets_go(reader: asyncio.StreamReader) -> None:
    """Return at stdin EOF (the parent closed it or died) or after CHILD_LIFETIME_S."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(reader.read(), CHILD_LIFETIME_S)


ACK = bytes(range(ACK_BYTES))


async def _start_tcp_server():
    loop = asyncio.get_running_loop()

    class AckProtocol(asyncio.Protocol):
        __slots__ = ("transport", "pending")

        def connection_made(self, transport):
            self.transport = transport
            self.pending = b""

        def data_received(self, data):
            buf = self.pending + data if self.pending else data
            write = self.transport.write
            end = len(buf) - len(buf) % MESSAGE_BYTES
            for pos in range(0, end, MESSAGE_BYTES):
                # Each frame becomes its own object, as a WebSocket library hands one over.
                _ = buf[pos : pos + MESSAGE_BYTES]
                write(ACK)
            self.pending = buf[end:]

    server = await loop.create_server(AckProtocol, HOST, 0, backlog=LISTEN_BACKLOG)
    return server.sockets[0].getsockname()[1]


async def _start_websockets_server():
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    async def terminal(ws):
        if ws.request.path != PATH:
            await ws.close(1008)
            return
        with contextlib.suppress(ConnectionClosed):
            async for _message in ws:
                await ws.send(ACK)

    # As server/gateway/websocket.py runs it: no keepalive pings (the protocol's HEARTBEAT is the
    # liveness check; a ping task per connection would cost memory the other two servers,
    # whose pings are off by default, do not pay) and no compression; max_queue=16 and
    # write_limit=32 KiB are the library's defaults.
    server = await serve(terminal, HOST, 0, backlog=LISTEN_BACKLOG, ping_interval=None, compression=None)
    return server.sockets[0].getsockname()[1]


async def _start_picows_server(**options):
    from picows import WSListener, WSMsgType, ws_create_server

    binary = WSMsgType.BINARY

    class Terminal(WSListener):
        def on_ws_frame(self, transport, frame):
            if frame.msg_type == binary:
                transport.send(binary, ACK)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    path = PATH.encode()  # picows hands the request line over as bytes

    def route(request):
        return Terminal() if request.path == path else None

    server = await ws_create_server(route, HOST, 0, backlog=LISTEN_BACKLOG, **options)
    return server.sockets[0].getsockname()[1]


async def _start_aiohttp_server():
    from aiohttp import WSMsgType, web

    async def terminal(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(ACK)
        return ws

    app = web.Application()
    app.router.add_get(PATH, terminal)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, backlog=LISTEN_BACKLOG)
    await site.start()
    return runner.addresses[0][1]


SERVER_STARTERS = {
    "tcp": _start_tcp_server,
    "websockets": _start_websockets_server,
    "picows": _start_picows_server,
    "picows-uvloop": lambda: _start_picows_server(use_aiofastnet=False),
    "picows-rb1k": lambda: _start_picows_server(read_buffer_init_size=1024),
    "picows-lean": lambda: _start_picows_server(use_aiofastnet=False, read_buffer_init_size=1024),
    "aiohttp": _start_aiohttp_server,
}


async def _serve(target: str) -> None:
    port = await SERVER_STARTERS[target]()
    reader = await _stdin_reader()
    _say({"port": port, "pid": os.getpid()})
    await _until_parent_lets_go(reader)


class _Counter:
    """Replies seen by one client process; `sending` False stops new messages."""

    __slots__ = ("replies", "wrong", "sending")

    def __init__(self):
        self.replies = 0
        self.wrong = 0
        self.sending = True


MESSAGE = bytes(i % 251 for i in range(MESSAGE_BYTES))


def _ws_listener_class(counter: _Counter, window: int):
    from picows import WSListener, WSMsgType

    binary = WSMsgType.BINARY

    class Device(WSListener):
        """One simulated terminal: `window` messages in flight, one more per reply."""

        def __init__(self):
            self.acked = asyncio.get_running_loop().create_future()

        def on_ws_connected(self, transport):
            for _ in range(window):
                transport.send(binary, MESSAGE)

        def on_ws_frame(self, transport, frame):
            if frame.msg_type == binary:
                if frame.payload_size == ACK_BYTES:
                    counter.replies += 1
                else:
                    counter.wrong += 1
                if not self.acked.done():
                    self.acked.set_result(None)
                if counter.sending:
                    transport.send(binary, MESSAGE)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()

    return Device


def _tcp_protocol_class(counter: _Counter, window: int):
    class Device(asyncio.Protocol):
        """Raw TCP twin of the WebSocket device: same window, one new message per reply.

        The new messages go out in one write per read: this client does per-message work
        in Python like the baseline server does, and must not become the limit."""

        def __init__(self):
            self.acked = asyncio.get_running_loop().create_future()
            self.pending = 0

        def connection_made(self, transport):
            self.transport = transport
            for _ in range(window):
                transport.write(MESSAGE)

        def data_received(self, data):
            self.pending += len(data)
            replies, self.pending = divmod(self.pending, ACK_BYTES)
            counter.replies += replies
            if replies and not self.acked.done():
                self.acked.set_result(None)
            if counter.sending and replies:
                self.transport.write(MESSAGE * replies)

    return Device


async def _open_devices(target: str, port: int, count: int, counter: _Counter, window: int) -> list:
    """Open `count` connections, CONNECT_CONCURRENCY at a time; returns the devices."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    if target == BASELINE:
        device_class = _tcp_protocol_class(counter, window)

        async def one():
            async with gate:
                _transport, device = await loop.create_connection(device_class, HOST, port)
                return device

    else:
        from picows import ws_connect

        device_class = _ws_listener_class(counter, window)
        url = f"ws://{HOST}:{port}{PATH}"

        async def one():
            async with gate:
                _transport, device = await ws_connect(device_class, url)
                return device

    return await asyncio.gather(*(one() for _ in range(count)))


async def _load(target: str, port: int, connections: int, window: int, warmup: float, duration: float) -> None:
    """Throughput client: prints {"measuring"} at the window's start, then the counts."""
    loop = asyncio.get_running_loop()
    counter = _Counter()
    await _open_devices(target, port, connections, counter, window)
    await asyncio.sleep(warmup)
    start_replies, start, cpu_start = counter.replies, loop.time(), time.process_time()
    _say({"measuring": True})
    await asyncio.sleep(duration)
    replies, elapsed = counter.replies - start_replies, loop.time() - start
    counter.sending = False
    # The client's own CPU, measured here: once this line is out the process may exit and
    # be reaped before the parent could read /proc/<pid>/stat (a flaky FileNotFoundError).
    _say({"replies": replies, "seconds": elapsed, "wrong": counter.wrong, "connections": connections,
          "cpu_s": time.process_time() - cpu_start})


async def _hold(target: str, port: int, idle: int) -> None:
    """Idle client: one warm connection (one message, one ACK), "warm"; on "go" from the
    parent, `idle` more connections that send nothing, "ready"; then holds them."""
    reader = await _stdin_reader()
    counter = _Counter()
    (warm,) = await _open_devices(target, port, 1, counter, window=1)
    await asyncio.wait_for(warm.acked, 10)
    counter.sending = False
    _say({"warm": True})
    await asyncio.wait_for(reader.readline(), HANDSHAKES_TIMEOUT_S)
    await _open_devices(target, port, idle, counter, window=0)
    _say({"ready": idle})
    await _until_parent_lets_go(reader)


def _child_main(args) -> int:
    _child_setup()
    import uvloop

    if args.role == "server":
        coro = _serve(args.target)
    elif args.role == "load":
        coro = _load(args.target, args.port, args.connections, args.window, args.warmup, args.duration)
    else:
        coro = _hold(args.target, args.port, args.idle)
    uvloop.run(coro)
    sys.stdout.flush()
    # Thousands of open sockets: let the kernel close them rather than a slow teardown.
    os._exit(0)


# --------------------------------------------------------------------------- parent


class BenchError(RuntimeError):
    """A child failed or missed a deadline; the message says which and shows its stderr."""


class _ProcInfo:
    """Readings of a live process from /proc (Linux)."""

    TICK_S = 1 / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def rss_kib(pid: int) -> int:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise BenchError(f"no VmRSS for pid {pid}")

    @staticmethod
    def cpu_ticks(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])  # utime + stime


@dataclass
class _Child:
    proc: asyncio.subprocess.Process
    role: str
    target: str
    stderr_path: str

    def stderr_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError), open(self.stderr_path, errors="replace") as f:
            return f.read()[-chars:]
        return ""


@dataclass
class _Children:
    """Every child started by this run, so that all are killed whatever happens."""

    live: list[_Child] = field(default_factory=list)
    repo: Path = Path(__file__).resolve().parents[1]
    stderr_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="ws-bench-"))

    async def start(self, role: str, target: str, *extra: str) -> _Child:
        fd, stderr_path = tempfile.mkstemp(prefix=f"{role}-{target}-", suffix=".stderr", dir=self.stderr_dir)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lmg.bench.websocket_libs", "--role", role, "--target", target, *extra,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=fd, cwd=self.repo,
            )  # fmt: skip
        finally:
            os.close(fd)
        child = _Child(proc, role, target, stderr_path)
        self.live.append(child)
        return child

    async def line(self, child: _Child, timeout: float) -> dict:
        """Next JSON line from `child`, or BenchError (with its stderr) on EOF or timeout."""
        assert child.proc.stdout is not None  # started with a pipe
        try:
            raw = await asyncio.wait_for(child.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raise BenchError(
                f"{child.role} for {child.target}: no answer in {timeout:.0f} s\n{child.stderr_tail()}"
            ) from None
        if not raw:
            await asyncio.wait_for(child.proc.wait(), 5)
            raise BenchError(
                f"{child.role} for {child.target} exited with {child.proc.returncode}\n{child.stderr_tail()}"
            )
        return json.loads(raw)

    async def stop(self, child: _Child, grace: float = 3.0) -> None:
        """Close its stdin (its cue to exit); SIGKILL it if it is still there after `grace`
        seconds. It stays listed until it has exited, so kill_all covers a cancelled stop."""
        with contextlib.suppress(Exception):
            assert child.proc.stdin is not None  # started with a pipe
            child.proc.stdin.close()
        try:
            await asyncio.wait_for(child.proc.wait(), grace)
        except asyncio.TimeoutError:
            self.kill(child)
            await asyncio.wait_for(child.proc.wait(), 5)
        self.live.remove(child)
        with contextlib.suppress(OSError):
            os.unlink(child.stderr_path)

    @staticmethod
    def kill(child: _Child) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.proc.kill()

    def kill_all(self) -> None:
        """Synchronous last resort (error, Ctrl-C, SIGTERM): SIGKILL every child still
        listed and remove the stderr files."""
        for child in self.live:
            self.kill(child)
        self.live.clear()
        shutil.rmtree(self.stderr_dir, ignore_errors=True)


async def _wait_quiet(pid: int, limit_s: float) -> None:
    """Wait until the server burns at most QUIET_CPU_TICKS per 100 ms, or `limit_s` passes."""
    deadline = time.monotonic() + limit_s
    last = _ProcInfo.cpu_ticks(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = _ProcInfo.cpu_ticks(pid)
        if now - last <= QUIET_CPU_TICKS:
            return
        last = now


async def _start_server(children: _Children, target: str) -> tuple[_Child, int, int]:
    """A fresh server for `target`; returns (child, port, pid)."""
    server = await children.start("server", target)
    hello = await children.line(server, SERVER_START_TIMEOUT_S)
    return server, hello["port"], hello["pid"]


async def _idle_rss_per_conn(children: _Children, target: str, cfg: dict) -> float:
    """KiB of server RSS per idle connection, measured on a fresh server."""
    server, port, pid = await _start_server(children, target)
    try:
        holder = await children.start("hold", target, "--port", str(port), "--idle", str(cfg["idle"]))
        try:
            await children.line(holder, SERVER_START_TIMEOUT_S)
            await _wait_quiet(pid, 2.0)
            before = _ProcInfo.rss_kib(pid)
            assert holder.proc.stdin is not None  # started with a pipe
            holder.proc.stdin.write(b"go\n")
            await holder.proc.stdin.drain()
            await children.line(holder, HANDSHAKES_TIMEOUT_S)
            # The client has all its 101 responses; let the server finish its side.
            await _wait_quiet(pid, 3.0)
            after = _ProcInfo.rss_kib(pid)
        finally:
            await children.stop(holder)
    finally:
        await children.stop(server)
    return (after - before) / cfg["idle"]


async def _throughput(children: _Children, target: str, cfg: dict) -> dict:
    """Replies per second and the server's CPU over the client's measuring window."""
    server, port, pid = await _start_server(children, target)
    try:
        load = await children.start(
            "load", target, "--port", str(port), "--connections", str(cfg["connections"]),
            "--window", str(cfg["window"]), "--warmup", str(cfg["warmup"]), "--duration", str(cfg["duration"]),
        )  # fmt: skip
        try:
            await children.line(load, HANDSHAKES_TIMEOUT_S + cfg["warmup"])
            cpu_start = _ProcInfo.cpu_ticks(pid)
            counts = await children.line(load, cfg["duration"] + 30)
            cpu_s = (_ProcInfo.cpu_ticks(pid) - cpu_start) * _ProcInfo.TICK_S
            client_cpu_s = counts["cpu_s"]
        finally:
            await children.stop(load)
    finally:
        await children.stop(server)
    if counts["wrong"]:
        raise BenchError(f"{target}: {counts['wrong']} replies were not {ACK_BYTES}-byte binary messages")
    if not counts["replies"]:
        raise BenchError(f"{target}: no replies in {counts['seconds']:.1f} s")
    return {
        "replies": counts["replies"],
        "msgs_per_s": counts["replies"] / counts["seconds"],
        "server_cpu_share": cpu_s / counts["seconds"],  # 1.0 = one core busy all the time
        "client_cpu_share": client_cpu_s / counts["seconds"],
        "msgs_per_server_cpu_s": counts["replies"] / cpu_s if cpu_s else float("nan"),
    }


def _version(target: str) -> str:
    if target == BASELINE:
        return "uvloop " + metadata.version("uvloop")
    return metadata.version(DISTRIBUTION[target])


def _median(values) -> float:
    return statistics.median(values)


def _summarise(per_round: dict[str, list[dict]], cfg: dict, started: float) -> dict:
    """Medians over rounds; ratios are medians of per-round ratios to the same round's baseline."""
    base = per_round[BASELINE]
    libraries = {}
    for target, rounds in per_round.items():
        if target == BASELINE:
            continue
        libraries[target] = {
            "version": _version(target),
            "msgs_per_s": round(_median(r["msgs_per_s"] for r in rounds)),
            "ratio_to_tcp_baseline": round(_median(r["msgs_per_s"] / b["msgs_per_s"] for r, b in zip(rounds, base)), 3),
            "rss_per_conn_kib": round(_median(r["rss_per_conn_kib"] for r in rounds), 2),
            "msgs_per_server_cpu_s": round(_median(r["msgs_per_server_cpu_s"] for r in rounds)),
            "cpu_ratio_to_tcp_baseline": round(
                _median(r["msgs_per_server_cpu_s"] / b["msgs_per_server_cpu_s"] for r, b in zip(rounds, base)), 3
            ),
            "server_cpu_share": round(_median(r["server_cpu_share"] for r in rounds), 2),
            "client_cpu_share": round(_median(r["client_cpu_share"] for r in rounds), 2),
            "rounds_msgs_per_s": [round(r["msgs_per_s"]) for r in rounds],
            "rounds_rss_per_conn_kib": [round(r["rss_per_conn_kib"], 2) for r in rounds],
        }
    return {
        "libraries": libraries,
        "tcp_baseline_msgs_per_s": round(_median(b["msgs_per_s"] for b in base)),
        "tcp_baseline_rss_per_conn_kib": round(_median(b["rss_per_conn_kib"] for b in base), 2),
        "tcp_baseline_msgs_per_server_cpu_s": round(_median(b["msgs_per_server_cpu_s"] for b in base)),
        "tcp_baseline_server_cpu_share": round(_median(b["server_cpu_share"] for b in base), 2),
        "tcp_baseline_client_cpu_share": round(_median(b["client_cpu_share"] for b in base), 2),
        "tcp_baseline_rounds_msgs_per_s": [round(b["msgs_per_s"]) for b in base],
        "tcp_baseline": _version(BASELINE) + ", asyncio.Protocol, one write per 88-byte frame",
        "rounds": cfg["rounds"],
        "connections": cfg["connections"],
        "window": cfg["window"],
        "duration_s": cfg["duration"],
        "warmup_s": cfg["warmup"],
        "idle_connections": cfg["idle"],
        "message_bytes": MESSAGE_BYTES,
        "ack_bytes": ACK_BYTES,
        "client": f"picows {metadata.version('picows')} for every WebSocket server; raw uvloop TCP for the baseline",
        "server_loop": "uvloop " + metadata.version("uvloop"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared; compare ratios, not absolutes)",
        "date": datetime.date.today().isoformat(),
        "elapsed_s": round(time.monotonic() - started, 1),
    }


async def _measure(libraries: tuple[str, ...], cfg: dict) -> dict:
    started = time.monotonic()
    _raise_fd_limit()
    targets = (BASELINE, *libraries)
    per_round: dict[str, list[dict]] = {t: [] for t in targets}
    children = _Children()
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, through the finally below.
    this_task = asyncio.current_task()
    assert this_task is not None  # a coroutine runs in a task
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this_task.cancel)
    try:
        for index in range(cfg["rounds"]):
            # Rotate the order each round: no server always runs first (cold caches,
            # TIME_WAIT sockets left by the one before) or last.
            shift = index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                figures = await _throughput(children, target, cfg)
                figures["rss_per_conn_kib"] = await _idle_rss_per_conn(children, target, cfg)
                per_round[target].append(figures)
    finally:
        children.kill_all()
    return _summarise(per_round, cfg, started)


def measure(libraries: tuple[str, ...] = LIBRARIES, **overrides) -> dict:
    """Run the benchmark; `overrides` replace DEFAULTS keys (connections, duration in s,
    idle, window, rounds, warmup in s). Raises BenchError if a server or client fails."""
    unknown = set(libraries) - set(SERVER_STARTERS) - {BASELINE}
    if unknown:
        raise BenchError(f"unknown libraries {sorted(unknown)}; choose from {LIBRARIES + EXTRA_LIBRARIES}")
    cfg = {**DEFAULTS, **overrides}
    return asyncio.run(_measure(tuple(libraries), cfg))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="50 connections, 3 s, 500 idle connections")
    parser.add_argument("--rounds", type=int, help="rounds; every figure is the median (default 3)")
    parser.add_argument("--connections", type=int, help="busy connections (default 200)")
    parser.add_argument("--window", type=int, help="messages in flight per connection (default 8)")
    parser.add_argument("--duration", type=float, help="seconds of measured load per run (default 10)")
    parser.add_argument("--idle", type=int, help="idle connections for the memory figure (default 2000)")
    parser.add_argument(
        "--libs", default=",".join(LIBRARIES),
        help=f"comma-separated, from {', '.join(LIBRARIES + EXTRA_LIBRARIES)} (default: {','.join(LIBRARIES)})",
    )  # fmt: skip
    # Internal: how the parent starts its children.
    for name, kind in (("--role", str), ("--target", str), ("--port", int), ("--warmup", float)):
        parser.add_argument(name, type=kind, help=argparse.SUPPRESS)


def _print_table(result: dict) -> None:
    print(
        f"WebSocket servers under uvloop: {result['connections']} connections x {result['window']} in flight, "
        f"{result['message_bytes']}-byte messages -> {result['ack_bytes']}-byte replies, "
        f"{result['duration_s']:g} s per run, median of {result['rounds']} rounds"
    )
    print(f"client: {result['client']}; {result['machine']}; Python {result['python']}; {result['date']}")
    header = (
        "server", "version", "msgs/s", "x TCP", "msgs/CPU-s", "x TCP", "srv CPU", "cli CPU",
        f"KiB/idle conn ({result['idle_connections']})",
    )  # fmt: skip
    base = {
        "version": result["tcp_baseline"].split(",")[0],
        "msgs_per_s": result["tcp_baseline_msgs_per_s"],
        "ratio_to_tcp_baseline": 1.0,
        "msgs_per_server_cpu_s": result["tcp_baseline_msgs_per_server_cpu_s"],
        "cpu_ratio_to_tcp_baseline": 1.0,
        "server_cpu_share": result["tcp_baseline_server_cpu_share"],
        "client_cpu_share": result["tcp_baseline_client_cpu_share"],
        "rss_per_conn_kib": result["tcp_baseline_rss_per_conn_kib"],
    }
    rows = [
        (
            name, lib["version"], f"{lib['msgs_per_s']:,}", f"{lib['ratio_to_tcp_baseline']:.2f}",
            f"{lib['msgs_per_server_cpu_s']:,}", f"{lib['cpu_ratio_to_tcp_baseline']:.2f}",
            f"{lib['server_cpu_share']:.0%}", f"{lib['client_cpu_share']:.0%}", f"{lib['rss_per_conn_kib']:.2f}",
        )
        for name, lib in (("bare TCP (baseline)", base), *result["libraries"].items())
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        # Names left-aligned, figures right-aligned.
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print(
        "srv/cli CPU: share of one core used by the server / the client while measured "
        "(server near 100%: the server is the limit)"
    )


def run(args) -> int:
    if args.role:
        return _child_main(args)
    cfg = dict(QUICK if args.quick else DEFAULTS)
    for key in ("rounds", "connections", "window", "duration", "idle"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    libraries = tuple(name.strip() for name in args.libs.split(",") if name.strip())
    try:
        result = measure(libraries, **cfg)
    except BenchError as exc:
        print(f"websocket benchmark failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every server and client process was stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmg.bench.websocket_libs", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
