"""The gateway process: listeners, the session registry, timers, presence and shutdown.

`Gateway` owns everything shared by the connections; `TerminalLink`s (one per
connection, see server/link.py) call back into it. Timers are two loop-wide tasks (the
deadline wheel and the presence flush), not one per connection. Ordered shutdown:
stop accepting, let in-flight store calls finish and send their ACKs, tell every session
GOODBYE SHUTTING_DOWN, flush presence, close the store, all within `shutdown_grace_s`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import resource
import signal
import ssl
import time
from collections import Counter

from lmg.protocol import DeviceStatus, Goodbye, ResultCode, encode
from lmg.server.settings import GatewayConfig, parse_host_port
from lmg.server.gateway.deadlines import DeadlineWheel
from lmg.server.gateway.devices import DeviceLookup
from lmg.server.gateway.lockout import AuthGuard
from lmg.server.gateway.session import Authenticated, AuthFailed
from lmg.storage import Presence, Store, StoreError, open_store

log = logging.getLogger("lmg.gateway")

STORE_FAILURE_LOG_S = 5.0  # at most one "store failed" warning this often
SHUTDOWN_POLL_S = 0.01  # how often shutdown checks that the links' commits are done


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class AcceptRate:
    """Token bucket for new connections: `rate` per second, bursts of `burst`."""

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Gateway:
    def __init__(self, config: GatewayConfig, store: Store, *, clock_ms=wall_ms, forwarding=None):
        """`forwarding`: the ForwarderConfig to run when config.forward_url is set (`lmg
        serve` reads its tuning keys, see forwarding.config.for_gateway); None: built from
        `config` alone, the tuning keys at their defaults."""
        self.config = config
        self.forwarding = forwarding
        self.store = store
        self.now_ms = clock_ms
        self.limits = config.session_limits()
        self.guard = AuthGuard()
        self.wheel = DeadlineWheel()
        self.sessions: dict[str, object] = {}  # serial -> authenticated link
        self.links: set = set()
        self.per_address: Counter = Counter()
        self.accept_rate = AcceptRate(config.accept_rate, config.accept_burst, time.monotonic())
        self.counters: Counter = Counter()
        self.presence: dict[str, Presence] = {}  # state changes since the last flush
        self.heard: dict[str, int] = {}  # serial -> ms last heard since the last flush (see `seen`)
        self.firmware: dict[str, str] = {}
        self.tasks: set[asyncio.Task] = set()
        self.servers: list = []
        self.listening: dict[str, tuple[str, int]] = {}
        self.store_writable = True
        self._store_failure_logged = -STORE_FAILURE_LOG_S  # monotonic s of the last warning
        self._store_failures_unlogged = 0
        self.stopping = False
        self._background: list[asyncio.Task] = []
        self._forwarder: asyncio.Task | None = None
        self._forward_stop = asyncio.Event()
        self.reuse_port = False  # SO_REUSEPORT: several `lmg serve --workers` processes share the ports

    # -- bookkeeping called by links -------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def admit(self, peer_host: str) -> ResultCode | None:
        """None if a new connection from `peer_host` may proceed, else why not."""
        if self.stopping:
            return ResultCode.SHUTTING_DOWN
        if len(self.links) >= self.config.max_connections:
            return ResultCode.SERVER_BUSY
        if self.per_address[peer_host] >= self.config.max_connections_per_address:
            return ResultCode.SERVER_BUSY
        if not self.accept_rate.take(time.monotonic()):
            return ResultCode.RATE_LIMITED
        return None

    def refusal(self, reason: ResultCode) -> bytes:
        """The GOODBYE a refused connection gets before it is closed."""
        self.count(f"refused_{reason.name.lower()}")
        return encode(Goodbye(reason, 10, 1))

    def link_opened(self, link) -> None:
        self.links.add(link)
        self.per_address[link.peer_host] += 1
        self.count("connections_opened")
        self.wheel.add(link, link.session.deadline_ms())

    def link_closed(self, link) -> None:
        self.links.discard(link)
        self.per_address[link.peer_host] -= 1
        if self.per_address[link.peer_host] <= 0:
            del self.per_address[link.peer_host]
        serial = link.session.serial
        if serial and self.sessions.get(serial) is link:
            del self.sessions[serial]
            self._note_presence(serial, self.now_ms(), False)

    def authenticated(self, link, action: Authenticated) -> None:
        older = self.sessions.get(action.serial)
        if older is not None and older is not link:
            self.count("takeovers")
            older.execute(older.session.taken_over())
        self.sessions[action.serial] = link
        # the heartbeat grace may end before the auth deadline the link is filed under
        self.wheel.add(link, link.session.deadline_ms())
        self.guard.succeeded(link.peer_host, action.serial)
        self.firmware[action.serial] = action.firmware
        self._note_presence(action.serial, self.now_ms(), True, firmware=action.firmware)
        self.count("authenticated")

    def auth_failed(self, link, action: AuthFailed) -> None:
        now = self.now_ms()
        # a terminal retrying while locked out is audited but does not lengthen its own lock
        newly_locked = [] if action.reason is ResultCode.LOCKED_OUT else self.guard.failed(link.peer_host, action.serial, now)
        self.count(f"auth_failed_{action.reason.name.lower()}")
        detail = {"reason": action.reason.name, "locked": [k for k, _ in newly_locked]}
        self.spawn(self._audit("auth_failed", action.serial, detail, link.peer_host))

    def seen(self, serial: str, now_ms: int) -> None:
        """An authenticated terminal was heard at `now_ms`. Called on every pass of every
        link, so it only stores the time; the Presence is built at the flush."""
        self.heard[serial] = now_ms

    def status_reported(self, link, status: DeviceStatus) -> None:
        self._note_presence(link.session.serial, self.now_ms(), True, roster_version=status.roster_version)

    def _note_presence(self, serial: str, now_ms: int, online: bool, firmware: str | None = None,
                       roster_version: int | None = None) -> None:
        """Queue presence for the next flush, keeping the firmware/roster version not flushed yet."""
        pending = self.presence.get(serial)
        if pending is not None:
            firmware = pending.firmware if firmware is None else firmware
            roster_version = pending.roster_version if roster_version is None else roster_version
        self.presence[serial] = Presence(serial, now_ms, online, firmware, roster_version)

    def submit_punches(self, records) -> asyncio.Future:
        """Join the store's group commit; a future of one outcome per record (or the
        StoreError). No task per call: a busy gateway stores tens of thousands of small
        groups a second. The link reports the outcome back through `punches_settled`
        (one done-callback per group, not two). Shutdown waits for these through the
        links' `groups`."""
        return self.store.submit_punches(records)

    def punches_settled(self, count: int, serial: str, exc: BaseException | None) -> None:
        """A group of `count` records from `serial` was committed (exc None) or failed."""
        if exc is None:
            self.store_writable = True
            self.counters["punches_committed"] += count
        elif isinstance(exc, StoreError):
            self.store_writable = False
            self.count("store_failures")
            self.warn_store_failure(f"store failed for {count} records from {serial}: {exc}")

    async def lookup_device(self, serial: str):
        """The provisioned device (storage `Device`) or None; raises StoreError.

        Lookups arriving together share one store read (server/devices.py); nothing is
        cached, so a device disabled or rotated meanwhile is seen at its next HELLO.
        """
        try:
            return await self.device_lookup.get(serial)
        except StoreError as exc:
            self.count("device_lookup_failures")
            self.warn_store_failure(f"device lookup failed for {serial}: {exc}")
            raise

    @functools.cached_property
    def device_lookup(self) -> DeviceLookup:
        return DeviceLookup(self.store)

    def warn_store_failure(self, message: str) -> None:
        """Log `message` unless a store failure was logged in the last STORE_FAILURE_LOG_S;
        the next warning says how many were left out. An overloaded, full or unreachable
        store fails every connection's commit or lookup at once and must not flood the log."""
        now = time.monotonic()
        if now - self._store_failure_logged < STORE_FAILURE_LOG_S:
            self._store_failures_unlogged += 1
            return
        more = self._store_failures_unlogged
        self._store_failure_logged, self._store_failures_unlogged = now, 0
        log.warning("%s%s", message, f" ({more} more store failures since the last warning)" if more else "")

    def spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _audit(self, event: str, subject: str, detail: dict, address: str) -> None:
        try:
            await self.store.audit(event, subject, detail, address)
        except StoreError as exc:
            log.warning("audit write failed (%s %s): %s", event, subject, exc)

    # -- loop-wide timers -----------------------------------------------------------------
    async def _deadline_loop(self) -> None:
        resolution = self.wheel.resolution_ms / 1000
        while True:
            await asyncio.sleep(resolution)
            now = self.now_ms()
            for link in dict.fromkeys(self.wheel.due(now)):  # filed twice after auth: handle and refile once
                if link.closed:
                    continue
                link.execute(link.session.tick(now))
                if not link.closed:
                    self.wheel.add(link, link.session.deadline_ms())

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.presence_flush_s)
            await self.flush_presence()

    def _take_presence(self) -> list[Presence]:
        """What the next flush writes: the state changes, with the times terminals were
        heard since (`seen`) merged in; a device gone offline stays offline."""
        heard, self.heard = self.heard, {}
        pending, self.presence = self.presence, {}
        for serial, heard_ms in heard.items():
            change = pending.get(serial)
            if change is None:
                pending[serial] = Presence(serial, heard_ms, True)
            elif change.online and heard_ms > change.last_seen_ms:
                pending[serial] = dataclasses.replace(change, last_seen_ms=heard_ms)
        return list(pending.values())

    async def flush_presence(self) -> None:
        if not self.presence and not self.heard:
            return
        batch = self._take_presence()
        try:
            await self.store.update_presence(batch)
            self.count("presence_flushes")
        except StoreError as exc:
            log.warning("presence flush of %d devices failed: %s", len(batch), exc)
            for item in batch:  # keep the newest state for the next try
                self.presence.setdefault(item.serial, item)

    # -- listeners ------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls_enabled():
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    async def start(self) -> None:
        from lmg.server.admin.http import start_admin
        from lmg.server.gateway.tcp import TcpLink
        from lmg.server.gateway.websocket import start_websocket

        raise_fd_limit()
        context = self.ssl_context()
        loop = asyncio.get_running_loop()
        tcp = parse_host_port("tcp", self.config.tcp)
        if tcp:
            server = await loop.create_server(lambda: TcpLink(self), tcp[0], tcp[1], ssl=context, backlog=4096,
                                              reuse_port=self.reuse_port)
            self.servers.append(server)
            self.listening["tcp"] = server.sockets[0].getsockname()[:2]
        ws = parse_host_port("ws", self.config.ws)
        if ws:
            server = await start_websocket(self, ws[0], ws[1], context)
            self.servers.append(server)
            self.listening["ws"] = server.sockets[0].getsockname()[:2]
        admin = parse_host_port("admin", self.config.admin)
        if admin:
            server = await start_admin(self, admin[0], admin[1])
            self.servers.append(server)
            self.listening["admin"] = server.sockets[0].getsockname()[:2]
        self._background = [loop.create_task(self._deadline_loop()), loop.create_task(self._presence_loop())]
        if self.config.forward_url:
            from lmg.server.forwarding.config import ForwarderConfig
            from lmg.server.forwarding.forwarder import run_forwarder

            forwarding = self.forwarding or ForwarderConfig.from_mapping(self.config)
            self._forwarder = loop.create_task(run_forwarder(self.store, forwarding, self._forward_stop))

    async def ready(self) -> tuple[bool, str]:
        """Readiness: listeners up and the store answering and writable."""
        if self.stopping:
            return False, "shutting down"
        if not self.servers or not all(s.is_serving() for s in self.servers):
            return False, "listeners not up"
        try:
            await asyncio.wait_for(self.store.schema_version(), 2.0)
        except (StoreError, asyncio.TimeoutError) as exc:
            return False, f"store not answering: {exc}"
        if not self.store_writable:
            return False, "the last store write failed"
        return True, "ready"

    async def shutdown(self) -> None:
        """Ordered stop, bounded by shutdown_grace_s."""
        if self.stopping:
            return
        self.stopping = True
        deadline = time.monotonic() + self.config.shutdown_grace_s
        for server in self.servers:
            server.close()
        if self._forwarder is not None:
            self._forward_stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._forwarder), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                self._forwarder.cancel()  # its claimed items return to the outbox when the lease ends
        # Nothing more is read; every frame already received is answered (its commit
        # finishes, held frames are stored after it) before anyone is told goodbye.
        for link in list(self.links):
            link.pause_reading()
        while time.monotonic() < deadline and any(link.groups or link.busy for link in self.links):
            await asyncio.sleep(SHUTDOWN_POLL_S)
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.1, deadline - time.monotonic()))
        for link in list(self.links):
            link.execute(link.session.shutdown())
        for task in self._background:
            task.cancel()
        try:
            await asyncio.wait_for(self.flush_presence(), max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            log.warning("presence flush did not finish before the shutdown deadline")
        for server in self.servers:
            try:
                await asyncio.wait_for(server.wait_closed(), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                log.warning("a listener did not finish closing within shutdown_grace_s; exiting anyway")
        leftover = [t for t in self.tasks if not t.done()]
        for task in leftover:
            task.cancel()


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one: each terminal is a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def serve(config: GatewayConfig, *, ready_file: str | None = None, reuse_port: bool = False,
                forwarding=None) -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the exit status. `forwarding`: see Gateway."""
    os.makedirs(config.data_dir, exist_ok=True)
    store = await open_store(config.store_url(), data_dir=config.data_dir, config=config.store_config())
    gateway = Gateway(config, store, forwarding=forwarding)
    gateway.reuse_port = reuse_port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
        for name, (host, port) in gateway.listening.items():
            log.info("listening: %s on %s:%s", name, host, port)
        if ready_file:
            import json

            with open(ready_file + ".tmp", "w", encoding="utf-8") as fh:
                json.dump({k: list(v) for k, v in gateway.listening.items()} | {"pid": os.getpid()}, fh)
            os.replace(ready_file + ".tmp", ready_file)
        await stop.wait()
        log.info("shutting down")
        await gateway.shutdown()
    finally:
        await store.close()
    return 0
