"""The gateway process: listeners, the session registry, timers, presence and shutdown.

`Gateway` owns everything shared by the connections; `TerminalLink`s (one per
connection, see link.py) call back into it, and it asks them (never their sessions) to
time out, hand over or say goodbye. Its parts, each in a module of its own:
admission (connection limits, accept rate), the lockout guard, the device lookup, the
deadline wheel and the presence book. Timers are loop-wide tasks (deadline wheel,
presence flush, partial-photo sweep), not one per connection.

Ordered shutdown, all within `shutdown_grace_s`: stop accepting and stop the forwarder;
stop reading; let in-flight store calls finish and send their ACKs (the links report when
they have settled, no polling); tell every session GOODBYE SHUTTING_DOWN; flush presence;
close the listeners.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import resource
import signal
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from lmg.protocol import DeviceStatus, Goodbye, ResultCode, encode
from lmg.server.gateway.admission import AcceptRate, Admission
from lmg.server.gateway.deadlines import DeadlineWheel
from lmg.server.gateway.devices import DeviceLookup
from lmg.server.gateway.lockout import AuthGuard
from lmg.server.gateway.presence import PresenceBook
from lmg.server.gateway.session import Authenticated, AuthFailed
from lmg.server.settings import Settings, parse_host_port
from lmg.storage import Device, Store, StoreError, open_store

if TYPE_CHECKING:
    from lmg.server.gateway.link import TerminalLink

log = logging.getLogger("lmg.gateway")

STORE_FAILURE_LOG_S = 5.0  # at most one "store failed" warning this often


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Gateway:
    def __init__(self, settings: Settings, store: Store, *, clock_ms: Callable[[], int] = wall_ms):
        self.settings = settings
        self.store = store
        self.now_ms = clock_ms
        self.limits = settings.session
        gateway = settings.gateway
        # Read by every link on every pass: kept as plain attributes.
        self.max_unsent_bytes = gateway.max_unsent_bytes
        self.held_frames = gateway.held_frames
        self.store_calls_per_connection = gateway.store_calls_per_connection
        self.group_records = settings.store.group_commit_max_records
        self.admission = Admission(gateway.max_connections, gateway.max_connections_per_address,
                                   AcceptRate(gateway.accept_rate, gateway.accept_burst, time.monotonic()))
        self.guard = AuthGuard()
        self.wheel = DeadlineWheel()
        self.presence = PresenceBook()
        self.sessions: dict[str, TerminalLink] = {}  # serial -> authenticated link
        self.links: set[TerminalLink] = set()
        self.counters: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.servers: list[Any] = []
        self.listening: dict[str, tuple[str, int]] = {}
        self.store_writable = True
        self._store_failure_logged = -STORE_FAILURE_LOG_S  # monotonic s of the last warning
        self._store_failures_unlogged = 0
        self.stopping = False
        self._unsettled: set[TerminalLink] = set()  # links shutdown waits for
        self._settled: asyncio.Future[None] | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._forwarder: asyncio.Task[Any] | None = None
        self._forward_stop = asyncio.Event()
        self.reuse_port = False  # SO_REUSEPORT: several `lmg serve --workers` processes share the ports

    # -- bookkeeping called by links -------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def admit(self, peer_host: str) -> ResultCode | None:
        """None if a new connection from `peer_host` may proceed, else why not."""
        return self.admission.refusal(peer_host, self.stopping, time.monotonic())

    def refusal(self, reason: ResultCode) -> bytes:
        """The GOODBYE a refused connection gets before it is closed."""
        self.count(f"refused_{reason.name.lower()}")
        return encode(Goodbye(reason, 10, 1))

    def link_opened(self, link: TerminalLink) -> None:
        self.links.add(link)
        self.admission.opened(link.peer_host)
        self.count("connections_opened")
        self.wheel.add(link, link.deadline_ms())

    def link_closed(self, link: TerminalLink) -> None:
        self.links.discard(link)
        self.admission.closed(link.peer_host)
        serial = link.serial
        if serial and self.sessions.get(serial) is link:
            del self.sessions[serial]
            self.presence.note(serial, self.now_ms(), False)
        self.link_settled(link)

    def link_settled(self, link: TerminalLink) -> None:
        """While stopping: `link` has nothing in flight any more (or is closed)."""
        self._unsettled.discard(link)
        if not self._unsettled and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    def authenticated(self, link: TerminalLink, action: Authenticated) -> None:
        older = self.sessions.get(action.serial)
        if older is not None and older is not link:
            self.count("takeovers")
            older.take_over()
        self.sessions[action.serial] = link
        # the heartbeat grace may end before the auth deadline the link is filed under
        self.wheel.add(link, link.deadline_ms())
        self.guard.succeeded(link.peer_host, action.serial)
        self.presence.note(action.serial, self.now_ms(), True, firmware=action.firmware)
        self.count("authenticated")

    def auth_failed(self, link: TerminalLink, action: AuthFailed) -> None:
        now = self.now_ms()
        # a terminal retrying while locked out is audited but does not lengthen its own lock
        newly_locked = [] if action.reason is ResultCode.LOCKED_OUT else self.guard.failed(link.peer_host, action.serial, now)
        self.count(f"auth_failed_{action.reason.name.lower()}")
        detail = {"reason": action.reason.name, "locked": [k for k, _ in newly_locked]}
        self.spawn(self._audit("auth_failed", action.serial, detail, link.peer_host))

    def seen(self, serial: str, now_ms: int) -> None:
        """An authenticated terminal was heard at `now_ms` (every pass of every link)."""
        self.presence.seen(serial, now_ms)

    def status_reported(self, serial: str | None, status: DeviceStatus) -> None:
        if serial is not None:
            self.presence.note(serial, self.now_ms(), True, roster_version=status.roster_version)

    def submit_punches(self, records: list[Any]) -> asyncio.Future[Any]:
        """Join the store's group commit; a future of one outcome per record (or the
        StoreError). No task per call: a busy gateway stores tens of thousands of small
        groups a second. The link reports the outcome back through `punches_settled`
        (one done-callback per group, not two), and shutdown waits for the links to settle."""
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

    async def lookup_device(self, serial: str) -> Device | None:
        """The provisioned device (storage `Device`) or None; raises StoreError.

        Lookups arriving together share one store read (devices.py); nothing is cached,
        so a device disabled or rotated meanwhile is seen at its next HELLO.
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

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _audit(self, event: str, subject: str, detail: dict[str, Any], address: str) -> None:
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
                link.tick(now)
                if not link.closed:
                    self.wheel.add(link, link.deadline_ms())

    async def _every(self, interval_s: float, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await work()

    async def flush_presence(self) -> None:
        if not self.presence:
            return
        batch = self.presence.take()
        try:
            await self.store.update_presence(batch)
            self.count("presence_flushes")
        except StoreError as exc:
            log.warning("presence flush of %d devices failed: %s", len(batch), exc)
            self.presence.give_back(batch)

    async def prune_partial_photos(self) -> int:
        """Delete partial photo uploads nobody continued for `photo_partial_ttl_ms`."""
        try:
            pruned = await self.store.prune_partial_photos(self.now_ms())
        except StoreError as exc:
            log.warning("pruning partial photo uploads failed: %s", exc)
            return 0
        if pruned:
            log.info("deleted %d partial photo uploads older than %d h", pruned,
                     self.settings.store.photo_partial_ttl_ms // 3_600_000)
            self.count("partial_photos_pruned", pruned)
        return pruned

    # -- listeners ------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext | None:
        gateway = self.settings.gateway
        if not self.settings.tls_enabled():
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(gateway.tls_cert, gateway.tls_key)
        return context

    async def start(self) -> None:
        from lmg.server.admin.http import start_admin
        from lmg.server.gateway.tcp import TcpLink
        from lmg.server.gateway.websocket import start_websocket

        raise_fd_limit()
        settings = self.settings.gateway
        context = self.ssl_context()
        loop = asyncio.get_running_loop()
        tcp = parse_host_port("tcp", settings.tcp)
        if tcp:
            server = await loop.create_server(lambda: TcpLink(self), tcp[0], tcp[1], ssl=context, backlog=4096,
                                              reuse_port=self.reuse_port)
            self.servers.append(server)
            self.listening["tcp"] = server.sockets[0].getsockname()[:2]
        ws = parse_host_port("ws", settings.ws)
        if ws:
            server = await start_websocket(self, ws[0], ws[1], context)
            self.servers.append(server)
            self.listening["ws"] = server.sockets[0].getsockname()[:2]
        admin = parse_host_port("admin", settings.admin)
        if admin:
            server = await start_admin(self, admin[0], admin[1])
            self.servers.append(server)
            self.listening["admin"] = server.sockets[0].getsockname()[:2]
        self._background = [
            loop.create_task(self._deadline_loop()),
            loop.create_task(self._every(settings.presence_flush_s, self.flush_presence)),
            loop.create_task(self._every(settings.partial_photo_sweep_s, self.prune_partial_photos)),
        ]
        if self.settings.forward.enabled():
            from lmg.server.forwarding import run_forwarder

            self._forwarder = loop.create_task(run_forwarder(self.store, self.settings.forward, self._forward_stop))

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
        deadline = time.monotonic() + self.settings.gateway.shutdown_grace_s

        def remaining() -> float:
            return max(0.1, deadline - time.monotonic())

        for server in self.servers:
            server.close()
        if self._forwarder is not None:
            self._forward_stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._forwarder), remaining())
            except asyncio.TimeoutError:
                self._forwarder.cancel()  # its claimed items return to the outbox when the lease ends
        # Nothing more is read; every frame already received is answered (its commit
        # finishes, held frames are stored after it) before anyone is told goodbye.
        for link in list(self.links):
            link.pause_reading()
        self._unsettled = {link for link in self.links if not link.settled()}
        if self._unsettled:
            self._settled = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._settled), deadline - time.monotonic())
            except asyncio.TimeoutError:
                log.warning("%d connections still had punches at the store when shutdown_grace_s ended",
                            len(self._unsettled))
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=remaining())
        for link in list(self.links):
            link.shut_down()
        for task in self._background:
            task.cancel()
        try:
            await asyncio.wait_for(self.flush_presence(), remaining())
        except asyncio.TimeoutError:
            log.warning("presence flush did not finish before the shutdown deadline")
        for server in self.servers:
            try:
                await asyncio.wait_for(server.wait_closed(), remaining())
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


async def serve(settings: Settings, *, ready_file: str | None = None, reuse_port: bool = False) -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the exit status."""
    os.makedirs(settings.gateway.data_dir, exist_ok=True)
    store = await open_store(settings.store_url(), data_dir=settings.gateway.data_dir, config=settings.store)
    gateway = Gateway(settings, store)
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
