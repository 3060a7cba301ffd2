"""The gateway process: listeners, the session registry, timers, presence and shutdown.

`Gateway` owns everything shared by the connections; `TerminalLink`s (one per
connection, see link.py) call back into it, and it asks them (never their sessions) to
time out, hand over or say goodbye. Its parts, each in a module of its own:
admission (connection limits, accept rate), the lockout guard, the device lookup, the
deadline wheel and the presence book; the store's signals are followed by `signals`, and
the downlink (rosters, faces, operator commands) is `downlink`, a `DownlinkService`
(server/downlink). Timers are loop-wide tasks (deadline wheel, presence flush,
partial-photo sweep, the signal poll, the downlink's timer and sweeps, the metrics fold),
not one per connection.

Observability (server/metrics, server/logs.py): events are counted in plain Python
(`count` into `counters`, `connections` by transport and state, and with metrics on the
per-frame counts and the ack-latency tally the links write); `metrics` (a
`GatewayMetrics`, None when the `metrics` setting is off) folds them into Prometheus
families. A session logs three lines at info on `lmg.session` (opened, authentication
result, closed with its reason); repeated warnings go through `repeats`.

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
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from lmg.protocol import DeviceStatus, Goodbye, PunchRecord, ResultCode, encode
from lmg.server.downlink.service import DownlinkService
from lmg.server.gateway.admission import AcceptRate, Admission
from lmg.server.gateway.auth_audit import AuditRow, FailureAudit, clean
from lmg.server.gateway.deadlines import DeadlineWheel
from lmg.server.gateway.devices import DeviceLookup
from lmg.server.gateway.lockout import AuthGuard
from lmg.server.gateway.photo_intake import PhotoIntake
from lmg.server.gateway.photo_slots import UploadSlots
from lmg.server.gateway.presence import PresenceBook
from lmg.server.gateway.session import Authenticated, AuthFailed
from lmg.server.gateway.signals import GOODBYE_REASONS, SignalFollower, SignalHandlers
from lmg.server.logs import RepeatedWarnings
from lmg.server.settings import Settings, parse_host_port
from lmg.storage import Device, Punch, SessionEndReason, Store, StoreError, open_store
from lmg.storage.api import PunchMonths

if TYPE_CHECKING:
    from lmg.server.forwarding.forwarder import ForwarderStats
    from lmg.server.gateway.link import TerminalLink
    from lmg.server.metrics.fold import GatewayMetrics
    from lmg.server.metrics.tally import Tally

log = logging.getLogger("lmg.gateway")
session_log = logging.getLogger("lmg.session")  # the three lines of a session's life at info

STORE_FAILURE_LOG_S = 5.0  # at most one "store failed" warning this often (RepeatedWarnings)
# Months of punches are created months ahead and dropped after at least 90 days
# (storage/postgres_partitions.py): hourly is plenty, and is what every node may afford.
PUNCH_MONTHS_INTERVAL_S = 3600.0
UNAUTHENTICATED, AUTHENTICATED = "unauthenticated", "authenticated"  # states of `connections`


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
        self.guard = AuthGuard(pair_failures=gateway.lockout_pair_failures,
                               address_failures=gateway.lockout_address_failures,
                               address_window_ms=int(gateway.lockout_address_window_s * 1000),
                               base_ms=int(gateway.lockout_base_s * 1000), max_ms=int(gateway.lockout_max_s * 1000))
        self.failure_audit = FailureAudit(int(gateway.auth_audit_window_s * 1000))
        self.photo_max_bytes = settings.store.photo_max_bytes  # checked at the punch, the query and the chunk
        self.photo_slots = UploadSlots(gateway.photo_uploads_per_device, int(gateway.photo_upload_idle_s * 1000))
        self.photo_intake = PhotoIntake(gateway.photo_store_concurrency, gateway.photo_chunks_waiting,
                                        gateway.photo_chunk_max_wait_s)
        self.wheel = DeadlineWheel()
        self.presence = PresenceBook()
        self.sessions: dict[str, TerminalLink] = {}  # serial -> authenticated link
        # Sessions authenticated here since the last announcement (serial -> token, auth ms),
        # for other processes to end their older ones; only where several can share the
        # store (PostgreSQL): one SQLite store has one gateway process.
        self.announcing = getattr(store, "dialect", "") == "postgres"
        self._announce: dict[str, tuple[str, int]] = {}
        self._moved_away: set[TerminalLink] = set()  # ended because the device is online on another node
        self.links: set[TerminalLink] = set()
        self.counters: Counter[str] = Counter()  # event name -> count; folded into the metrics
        self.connections: Counter[tuple[str, str]] = Counter()  # (transport, state) -> open now
        # Per-frame counts (message class -> frames) and the ack-latency tally, written by the
        # links on every pass; None with metrics off, so the links skip them.
        self.frames_in: defaultdict[type, int] | None = None
        self.frames_out: defaultdict[type, int] | None = None
        self.ack_latency: Tally | None = None
        self.ack_clock: Callable[[], float] = time.perf_counter  # seconds, for ack latency
        self.forward_stats: ForwarderStats | None = None  # the forwarder's, when it runs in this process
        self.metrics: GatewayMetrics | None = None
        if gateway.metrics:
            from lmg.server.metrics.fold import GatewayMetrics

            self.metrics = GatewayMetrics(self)
            self.frames_in, self.frames_out = defaultdict(int), defaultdict(int)
            self.ack_latency = self.metrics.ack_latency
        self.tasks: set[asyncio.Task[Any]] = set()
        self.servers: list[Any] = []
        self.listening: dict[str, tuple[str, int]] = {}
        self.store_writable = True
        self.repeats = RepeatedWarnings(STORE_FAILURE_LOG_S)
        self.stopping = False
        self._unsettled: set[TerminalLink] = set()  # links shutdown waits for
        self._settled: asyncio.Future[None] | None = None
        self._background: list[asyncio.Task[Any]] = []
        self.signals: SignalFollower | None = None
        self.supervision: Any = None  # a SupervisionSchedule when the gateway evaluates warnings
        self.downlink = DownlinkService(self)
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
        if self.frames_out is not None:
            self.frames_out[Goodbye] += 1
        return encode(Goodbye(reason, 10, 1))

    def proxy_header_refused(self, peer: str, why: str) -> None:
        """A TCP connection without a valid PROXY header (tcp_proxy_protocol) was closed."""
        self.count("refused_proxy_header")
        self.repeats.warning(log, "proxy_header", "closed a connection from %s: %s (tcp_proxy_protocol is on: "
                             "only the balancer may reach the TCP listener)", peer, why)

    def link_opened(self, link: TerminalLink) -> None:
        self.links.add(link)
        self.admission.opened(link.peer_host)
        transport = link.transport_name
        self.count("connections_opened_" + transport)
        self.connections[(transport, UNAUTHENTICATED)] += 1
        link.wheel_buckets.append(self.wheel.add(link, link.deadline_ms()))

    def link_closed(self, link: TerminalLink, reason: str) -> None:
        """`link` is gone; `reason` is the session's close reason in lower case, or
        peer_closed (counted as closed_<reason>)."""
        self.links.discard(link)
        self.admission.closed(link.peer_host)
        for bucket in link.wheel_buckets:  # released now, not when its deadline comes
            self.wheel.discard(link, bucket)
        link.wheel_buckets.clear()
        self.count("closed_" + reason)
        serial = link.serial
        if serial and self.sessions.get(serial) is link:
            del self.sessions[serial]
            if link in self._moved_away:  # online on the other node: writing offline here would undo that
                self._moved_away.discard(link)
            else:
                self.presence.note(serial, self.now_ms(), False)
            self.connections[(link.transport_name, AUTHENTICATED)] -= 1
        else:
            self.connections[(link.transport_name, UNAUTHENTICATED)] -= 1
        self.downlink.session_ended(link)
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
        transport = link.transport_name
        self.connections[(transport, UNAUTHENTICATED)] -= 1
        self.connections[(transport, AUTHENTICATED)] += 1
        # the heartbeat grace may end before the auth deadline the link is filed under
        link.wheel_buckets.append(self.wheel.add(link, link.deadline_ms()))
        self.guard.succeeded(link.peer_host, action.serial)
        self.presence.note(action.serial, self.now_ms(), True, firmware=action.firmware, address=link.peer_host)
        if self.announcing:
            self._announce[action.serial] = (link.session.nonce.hex(), self.now_ms())
        self.count("authenticated")
        if session_log.isEnabledFor(logging.INFO):
            session_log.info("authenticated", extra={**link.log_fields(), "result": "ok", "firmware": action.firmware})
        self.downlink.session_started(link)

    async def announce_sessions(self) -> None:
        """Tell the other processes and nodes which devices authenticated here since the
        last call (one TAKEOVER signal), so they end their older sessions of them. A failed
        write keeps the sessions for the next call, without overwriting newer ones."""
        if not self._announce:
            return
        batch, self._announce = self._announce, {}
        try:
            await self.store.announce_sessions(batch)
            self.count("session_announcements")
        except StoreError as exc:
            self.repeats.warning(log, "announce", "announcing %d new sessions to other nodes failed: %s",
                                 len(batch), exc)
            self._announce = {**batch, **self._announce}

    def sessions_taken_over(self, sessions: dict[str, list], signalled_ms: int) -> None:
        """Another process announced sessions ({serial: [token, authenticated at ms]}): end
        with GOODBYE TAKEOVER each local session of those devices that connected before
        the new one authenticated (ours announced, and a newer one here, are left alone)."""
        for serial, (token, authenticated_ms) in sessions.items():
            link = self.sessions.get(serial)
            if link is None or link.closed or link.session.nonce.hex() == token:
                continue
            if link.connected_ms >= authenticated_ms:
                continue  # the device came back here after: this session is the newer
            self.count("takeovers")  # the same event as a takeover within this process
            self._moved_away.add(link)
            link.take_over()

    def end_device_session(self, serial: str, reason: SessionEndReason, before_ms: int | None = None) -> bool:
        """End the local session of `serial` that connected before `before_ms` (default: now)
        with the GOODBYE for `reason`; True if there was one. Called for the store's session
        end signals (signals.py) and directly by the admin API."""
        link = self.sessions.get(serial)
        if link is None or link.closed:
            return False
        if before_ms is not None and link.connected_ms >= before_ms:
            return False  # it reconnected after the change: the new session stands
        log.info("ending the session of %s: %s", serial, reason.value)
        self.count(f"sessions_ended_{reason.value}")
        link.revoke(GOODBYE_REASONS[reason])
        return True

    def auth_failed(self, link: TerminalLink, action: AuthFailed) -> None:
        """A refused authentication: counted, fed to the lockout guard, audited in bounded
        form (auth_audit.py: one row per source and window, with a count) and every lockout
        it starts audited on its own (`auth_lockout`)."""
        now = self.now_ms()
        # a terminal retrying while locked out neither lengthens its own lock nor counts
        # towards its address's (docs/protocol.md 5.2)
        started = [] if action.reason is ResultCode.LOCKED_OUT else self.guard.failed(link.peer_host, action.serial, now)
        self.count(f"auth_failed_{action.reason.name.lower()}")
        # an unauthenticated peer's doing: at info, and at most one line per interval (a
        # flood of HELLOs is one line saying how many were left out; the audit counts them all)
        self.repeats.log(session_log, logging.INFO, "auth_refused", "authentication refused",
                         extra={**link.log_fields(), "serial": clean(action.serial), "result": action.reason.name.lower(),
                                "locked": [lock.scope for lock in started] or None})
        rows = self.failure_audit.failed(link.peer_host, action.serial, action.reason.name, now)
        for lock in started:
            self.count(f"lockouts_{lock.scope}")
            rows.append(AuditRow("auth_lockout", clean(lock.serial), {
                "scope": lock.scope, "failures": lock.failures, "until_ms": lock.until_ms,
                "retry_after_s": -(-(lock.until_ms - now) // 1000)}, lock.address))
        self._write_audit(rows)

    def _write_audit(self, rows: list[AuditRow]) -> None:
        for row in rows:
            self.count("audit_rows_" + row.event)
            self.spawn(self._audit(row.event, row.subject, row.detail, row.address))

    async def flush_failure_audit(self) -> None:
        """Write the aggregated rows of the failure windows that ended (a loop-wide timer)."""
        self._write_audit(self.failure_audit.due(self.now_ms()))

    def seen(self, serial: str, now_ms: int) -> None:
        """An authenticated terminal was heard at `now_ms` (every pass of every link)."""
        self.presence.seen(serial, now_ms)

    def status_reported(self, serial: str | None, status: DeviceStatus) -> None:
        """A DEVICE_STATUS. Its `roster_version` is not recorded: the device's row holds the
        version of the terminal's last complete roster sync, which the downlink's deltas are
        decided against (docs/downlink.md), and a terminal mid-sync reports a later one."""
        if serial is not None:
            self.presence.note(serial, self.now_ms(), True)

    def submit_punches(self, records: list[Any]) -> asyncio.Future[Any]:
        """Join the store's group commit; a future of one outcome per record (or the
        StoreError). No task per call: a busy gateway stores tens of thousands of small
        groups a second. The link reports the outcome back through `punches_settled`
        (one done-callback per group, not two), and shutdown waits for the links to settle."""
        return self.store.submit_punches(records)

    def punches_settled(self, count: int, serial: str, exc: BaseException | None,
                        results: list[int] | None = None) -> None:
        """A group of `count` records from `serial` was committed (exc None) or failed.

        `results`: the result code of each record when not all were stored (OK, DUPLICATE
        or the rejection); None when all were (the common case costs two additions)."""
        counters = self.counters
        if exc is None:
            self.store_writable = True
            counters["punches_committed"] += count
            if results is None:
                counters["punches_stored"] += count
            else:
                for code in results:
                    if code == _OK:
                        counters["punches_stored"] += 1
                    elif code == _DUPLICATE:
                        counters["punches_duplicate"] += 1
                    else:
                        counters["punches_rejected_" + _code_name(code)] += 1
        elif isinstance(exc, StoreError):
            self.store_writable = False
            self.count("store_failures")
            self.repeats.warning(log, "store", "store failed for %d records: %s", count, exc,
                                 extra={"serial": serial or None})

    def check_duplicates(self, serial: str, records: list[PunchRecord], address: str) -> None:
        """Records answered DUPLICATE: compare them with what the store holds, off the hot
        path, so a record number reused with other content (a terminal that lost its counter)
        is visible to operators: `lmg_punches_conflicting_total` and one `punch_conflict`
        audit row per store call. The terminal still gets DUPLICATE (docs/protocol.md 6.4)."""
        self.spawn(self._check_duplicates(serial, records[:MAX_DUPLICATE_CHECKS], address))

    async def _check_duplicates(self, serial: str, records: list[PunchRecord], address: str) -> None:
        conflicts: list[int] = []
        for record in records:
            try:
                stored = await self.store.get_punch(serial, record.record_no)
            except StoreError:
                return  # a sick store is reported by the punches themselves
            if stored is not None and not _same_punch(stored, record):
                conflicts.append(record.record_no)
        if conflicts:
            self.count("punches_conflicting", len(conflicts))
            self.repeats.warning(log, "punch_conflict", "%d record numbers reused with other content",
                                 len(conflicts), extra={"serial": serial})
            self._write_audit([AuditRow("punch_conflict", serial, {"record_nos": conflicts[:20],
                                                                   "count": len(conflicts)}, address)])

    async def lookup_device(self, serial: str) -> Device | None:
        """The provisioned device (storage `Device`) or None; raises StoreError.

        Lookups arriving together share one store read (devices.py); nothing is cached,
        so a device disabled or rotated meanwhile is seen at its next HELLO.
        """
        try:
            return await self.device_lookup.get(serial)
        except StoreError as exc:
            self.count("device_lookup_failures")
            # the same key as failed commits: one sick store, one line per interval
            self.repeats.warning(log, "store", "device lookup failed: %s", exc, extra={"serial": serial})
            raise

    @functools.cached_property
    def device_lookup(self) -> DeviceLookup:
        return DeviceLookup(self.store)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _audit(self, event: str, subject: str, detail: dict[str, Any], address: str) -> None:
        try:
            await self.store.audit(event, subject, detail, address)
        except StoreError as exc:
            self.count("audit_failures")
            self.repeats.warning(log, "audit", "audit write failed (%s): %s", event, exc, extra={"serial": subject})

    # -- loop-wide timers -----------------------------------------------------------------
    async def _deadline_loop(self) -> None:
        resolution = self.wheel.resolution_ms / 1000
        while True:
            await asyncio.sleep(resolution)
            now = self.now_ms()
            current = self.wheel.current_bucket(now)
            for link in dict.fromkeys(self.wheel.due(now)):  # filed twice after auth: handle and refile once
                link.wheel_buckets[:] = [b for b in link.wheel_buckets if b > current]  # the rest were emptied
                if link.closed:
                    continue
                link.tick(now)
                if not link.closed:
                    link.wheel_buckets.append(self.wheel.add(link, link.deadline_ms()))

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
            self.count("presence_flush_failures")
            self.repeats.warning(log, "presence", "presence flush of %d devices failed: %s", len(batch), exc)
            self.presence.give_back(batch)

    async def prune_partial_photos(self) -> int:
        """Delete partial photo uploads nobody continued for `photo_partial_ttl_ms`."""
        try:
            pruned = await self.store.prune_partial_photos(self.now_ms())
        except StoreError as exc:
            self.repeats.warning(log, "prune", "pruning partial photo uploads failed: %s", exc)
            return 0
        if pruned:
            log.info("deleted %d partial photo uploads older than %d h", pruned,
                     self.settings.store.photo_partial_ttl_ms // 3_600_000)
            self.count("partial_photos_pruned", pruned)
        await self.purge_forwarded_photos()
        await self.adopt_local_photos()
        return pruned

    async def maintain_punch_months(self) -> PunchMonths | None:
        """PostgreSQL: create the punch months ahead and drop those past punch_retention_days
        whose every punch the province confirmed (hourly, on every node; SQLite: nothing).
        A month past retention that still has punches in the outbox is held and named in a
        warning: the province has not confirmed them, so they are not the gateway's to drop."""
        try:
            done = await self.store.maintain_punch_months(self.now_ms())
        except StoreError as exc:
            self.repeats.warning(log, "punch_months", "creating or dropping months of punches failed: %s", exc)
            return None
        if done.created or done.dropped:
            log.info("punch months: %d created, dropped %s", done.created,
                     ", ".join(m.strftime("%Y-%m") for m in done.dropped) or "none")
        if done.held:
            log.warning("punch months %s are past punch_retention_days but kept: some of their punches are not yet "
                        "confirmed by the province (see `lmg forward status`)",
                        ", ".join(m.strftime("%Y-%m") for m in done.held))
        return done

    async def adopt_local_photos(self) -> int:
        """PostgreSQL: move the photo files this node wrote before version 7 into the
        database, 1000 at a time until none is left (one insert each, ~4 ms: 250 a second
        on one connection beside the punches); SQLite: nothing. Runs with the partial-upload
        sweep; the first one after an upgrade moves the backlog."""
        adopted = 0
        while True:
            try:
                batch = await self.store.adopt_local_photos(1000)
            except StoreError as exc:
                self.repeats.warning(log, "adopt", "moving photo files into the database failed: %s", exc)
                break
            adopted += batch
            if batch < 1000:
                break
        if adopted:
            log.info("moved %d photo files of before version 7 into the database, where every node reads them",
                     adopted)
        return adopted

    async def purge_forwarded_photos(self) -> int:
        """Delete the bytes of photos forwarded over `photo_forwarded_retention_ms` ago,
        1000 at a time until none is left; runs with the partial-upload sweep. Every node
        may run it: the rows it reads are the same, a second delete finds nothing."""
        purged = 0
        while True:
            try:
                batch = await self.store.purge_forwarded_photos(self.now_ms(), 1000)
            except StoreError as exc:
                self.repeats.warning(log, "purge", "deleting forwarded photos past their retention failed: %s", exc)
                break
            purged += batch
            if batch < 1000:
                break
        if purged:
            log.info("deleted the bytes of %d forwarded photos older than %d days", purged,
                     self.settings.store.photo_forwarded_retention_ms // 86_400_000)
        return purged

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
        from lmg.server.admin.app import start_admin
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
            admin_server = await start_admin(self, admin[0], admin[1])
            self.servers.append(admin_server)
            self.listening["admin"] = admin_server.sockets[0].getsockname()[:2]
        handlers = SignalHandlers(self.end_device_session, self.downlink.command_signal, self.downlink.roster_signal,
                                  self.sessions_taken_over)
        self.signals = SignalFollower(self.store, handlers, settings.signal_poll_s)
        await self.signals.start()  # first: where the signals stand, then what is pending (no gap)
        await self.downlink.start()
        self._background = [
            loop.create_task(self.signals.run()),
            *self.downlink.tasks(loop),
            loop.create_task(self._deadline_loop()),
            loop.create_task(self._every(settings.presence_flush_s, self.flush_presence)),
            loop.create_task(self._every(settings.partial_photo_sweep_s, self.prune_partial_photos)),
            loop.create_task(self._every(PUNCH_MONTHS_INTERVAL_S, self.maintain_punch_months)),
            *([loop.create_task(self._every(settings.session_announce_s, self.announce_sessions))]
              if self.announcing else []),
            loop.create_task(self._every(max(1.0, settings.auth_audit_window_s / 4), self.flush_failure_audit)),
        ]
        if self.metrics is not None:
            self._background += self.metrics.tasks(loop)
        if settings.supervision:  # key-personnel warnings (server/supervision/service.py)
            from lmg.server.supervision.rules import load_rules
            from lmg.server.supervision.service import SupervisionSchedule, evaluation_pool

            self.supervision = SupervisionSchedule(self.store, load_rules(settings.supervision_rules_file),
                                                   clock_ms=self.now_ms, interval_s=settings.supervision_evaluate_s,
                                                   executor=evaluation_pool())
            self._background.append(loop.create_task(self.supervision.run_every()))
        if self.settings.forward.enabled():
            from lmg.server.forwarding import run_forwarder
            from lmg.server.forwarding.forwarder import ForwarderStats

            self.forward_stats = ForwarderStats()
            self._forwarder = loop.create_task(run_forwarder(self.store, self.settings.forward, self._forward_stop,
                                                             stats=self.forward_stats))

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
        self._write_audit(self.failure_audit.flush())  # the open windows' counts, before the store closes
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=remaining())
        for link in list(self.links):
            link.shut_down()
        for task in self._background:
            task.cancel()
        if self.metrics is not None:
            self.metrics.close()
        if self.signals is not None:
            await self.signals.close()
        try:
            await self.downlink.close(remaining())
        except asyncio.TimeoutError:
            log.warning("downlink writes (command outcomes, roster versions) did not finish before the shutdown "
                        "deadline")
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


_OK, _DUPLICATE = int(ResultCode.OK), int(ResultCode.DUPLICATE)
# Duplicates compared with the store per store call: a resent window is 8, a re-uploaded
# backlog batch up to 500; 50 reads show a conflict without doubling a backlog's store work.
MAX_DUPLICATE_CHECKS = 50


def _same_punch(stored: Punch, record: PunchRecord) -> bool:
    """True if the stored punch holds what `record` says (the fields a terminal sends)."""
    sha = record.photo_sha256 if record.photo_size else None
    return (stored.worker_id == record.worker_id and stored.punch_time_ms == min(record.punch_time_ms, 2**63 - 1)
            and stored.direction == record.direction and stored.verify_mode == record.verify_mode
            and stored.temperature_dc == record.temperature_dc and stored.photo_size == record.photo_size
            and stored.photo_sha256 == sha)


@functools.cache
def _code_name(code: int) -> str:
    """A result code's name in lower case (its number if it is not one of ours)."""
    try:
        return ResultCode(code).name.lower()
    except ValueError:
        return str(code)


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
