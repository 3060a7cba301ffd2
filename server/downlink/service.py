"""The downlink's asyncio glue: one per gateway, driving the sessions' downlink machines.

`DownlinkService` owns a `DeviceDownlink` (device.py) per authenticated link that has
downlink work (`link.downlink`; None when there is none, so an idle connection pays one
attribute), carries out the actions the machines return, and feeds them what they asked
for. Rules kept here:

- **Who starts what**: a session that authenticates gets a machine when its device is in a
  project that exists (the roster sync starts with ROSTER_VERSION_QUERY) or may have
  commands waiting (`with_commands`: the serials with queued or sent commands, read once
  at start and kept up to date by the store's COMMAND signals, so a session start costs
  no store read for a device without commands). A COMMAND signal has the device's machine
  read its pending commands; a ROSTER signal starts a new sync on every terminal of the
  project connected here. A machine with nothing left to do is dropped.
- **Punches first**: at the end of a pass, after its answers are written, a link whose
  machine has frames to send and no punches at the store asks for a turn
  (`request_turn`). Turns run one per event-loop iteration (`call_soon`, so the loop polls
  the sockets and answers punches between them); each fills the windows of the links
  waiting, in order, until `downlink_turn_bytes` were written, and at most
  `downlink_bytes_per_s` are written a second (a token bucket of one turn). A FACE_CHUNK is
  written only while the connection's unsent output is under `downlink_max_unsent_bytes`
  (`chunk_room`). At most `downlink_window` frames are unanswered, so at most that many
  chunks sit between a new punch answer and the terminal.
- **Store writes are few**: a command's sends and outcome are written as they happen, in
  order per device (`_Chain`); the roster version of a completed sync (`RosterAcked`, the
  terminal's `synced` of its next session) goes into the presence book
  (`PresenceBook.note`), whose one batched write every `presence_flush_s` stores it for
  every device together, not a commit per device (on SQLite each commit is a writer round
  trip and an fsync queued with the punches'); the progress of a
  face is written only when a session ends in the middle of it (`set_face_progress`), and
  forgotten when the next session completes it. A gateway that crashes loses at most one
  face's progress (the terminal gets it again from offset 0) and `presence_flush_s` of
  roster versions.
- **Faces** are read through `FaceCache` (`face_cache_bytes`, least recently used out): the
  terminals of a project are sent the same faces, and concurrent reads of one face share
  one store read.
- **Timers**: one loop ticks the machines with frames in flight (resends, giving up), at a
  quarter of `command_timeout_s` or every second; one sweep marks expired commands
  (`command_expiry_sweep_s`), one applies workers' entry and exit dates
  (`roster_dates_sweep_s`, today in China Standard Time from the gateway's clock). Time
  comes from `Gateway.now_ms`, so tests drive it.
- **Logs**: one info line per command outcome (`lmg.downlink`: serial, id, type, result,
  sends) and per roster sync ended (versions, steps, faces, bytes, seconds); a failed
  sync is a warning. Worker IDs are never logged at info.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import OrderedDict, deque
from functools import partial
from collections.abc import Awaitable, Callable, Coroutine
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, assert_never

from lmg.protocol import FaceChunk, ResultCode, RosterAdd, RosterRemove, RosterUpdate
from lmg.server.downlink.device import (
    Action,
    CommandDone,
    DeviceDownlink,
    DownlinkLimits,
    FaceProgress,
    LoadChanges,
    LoadCommands,
    LoadFace,
    LoadProject,
    MarkSent,
    RosterAcked,
    RosterState,
    SyncDone,
    SyncFailed,
)
from lmg.server.downlink.roster import REMOVE_ALL_WORKER_ID
from lmg.server.gateway.session import Send, State
from lmg.storage import CommandState, StoreError

if TYPE_CHECKING:
    from lmg.server.gateway.gateway import Gateway
    from lmg.server.gateway.link import TerminalLink

log = logging.getLogger("lmg.downlink")

CHINA = timezone(timedelta(hours=8))  # China Standard Time: no daylight saving since 1991
TICK_MAX_S = 1.0  # the timer loop's period at most: resends are due in tens of seconds
PRUNE_INTERVAL_S = 3600.0  # retention is counted in days: an hourly delete keeps the tables near their bound
# construct (the encoder of the §4.5 messages until they get generated fast codecs, as the
# punch path has) leaves 3 cyclic objects per frame built. With the gateway's young-generation
# threshold of 50,000 (server/gateway/collector.py) a push piled ~45,000 of them into one
# collection: a 37 ms pause of the event loop, the punches' p99.9 up 9x. A turn that leaves
# more than this many young objects collects them itself: the same freeing, in pauses of ~3 ms.
GC_STEP_OBJECTS = 4_000
COMMAND_PAGE = 10_000  # commands read per call when listing the serials with pending commands


def china_today(now_ms: int) -> date:
    """The date in China Standard Time (UTC+8) at `now_ms`: the day roster dates are read in."""
    return datetime.fromtimestamp(now_ms / 1000, CHINA).date()


class FaceCache:
    """Face photos by SHA-256, least recently used out past `max_bytes`; concurrent reads of one
    face share one store read. A face missing from the store is not cached."""

    def __init__(self, read: Callable[[bytes], Awaitable[bytes | None]], max_bytes: int):
        self.read = read
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._faces: OrderedDict[bytes, bytes] = OrderedDict()
        self._reading: dict[bytes, asyncio.Future[bytes | None]] = {}

    async def get(self, sha256: bytes) -> bytes | None:
        data = self._faces.get(sha256)
        if data is not None:
            self._faces.move_to_end(sha256)
            self.hits += 1
            return data
        pending = self._reading.get(sha256)
        if pending is not None:
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._reading[sha256] = future
        try:
            data = await self.read(sha256)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a reader that came and went must not warn
            raise
        finally:
            self._reading.pop(sha256, None)
        future.set_result(data)
        if data is not None and len(data) <= self.max_bytes:
            self._faces[sha256] = data
            self.bytes += len(data)
            while self.bytes > self.max_bytes:
                _, old = self._faces.popitem(last=False)
                self.bytes -= len(old)
        return data


class _Chain:
    """A device's command store calls, one after another in the order given (a send is
    recorded before its outcome; a read of pending commands sees the outcomes before it)."""

    def __init__(self) -> None:
        self.calls: deque[Callable[[], Coroutine[Any, Any, Any]]] = deque()
        self.task: asyncio.Task[Any] | None = None  # the task working through `calls`


class DownlinkService:
    """The downlink of one gateway process (see the module docstring)."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.store = gateway.store
        settings = gateway.settings.gateway
        self.settings = settings
        self.limits = DownlinkLimits(settings.downlink_window, max(1, int(settings.command_timeout_s * 1000)),
                                     settings.command_max_sends, settings.face_chunk_bytes)
        self.max_unsent = settings.downlink_max_unsent_bytes
        self.faces = FaceCache(lambda sha256: self.store.get_face(sha256), settings.face_cache_bytes)
        self.with_commands: set[str] = set()  # serials that may have queued or sent commands
        self.projects: dict[str, bool] = {}  # project code -> exists (cached; a ROSTER signal says yes)
        self._project_reads: set[str] = set()  # projects being looked up
        self.by_project: dict[str, set[TerminalLink]] = {}  # authenticated links by their device's project
        self.active: set[TerminalLink] = set()  # links with a machine
        self._chains: dict[str, _Chain] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.turn_bytes = settings.downlink_turn_bytes
        self.rate_bytes_s = settings.downlink_bytes_per_s
        self._tokens = float(self.turn_bytes)  # the byte rate's allowance (a token bucket of one turn)
        self._tokens_at = 0.0
        self._waiting: dict[TerminalLink, None] = {}  # links asking for a turn, in order (a set that keeps it)
        self._turn_scheduled = False

    # -- start and stop -----------------------------------------------------------------------
    async def start(self) -> None:
        """Read which devices have commands waiting (once; signals keep it up to date). Call it
        after the signal follower noted where the signals stand: a command queued in between
        is then both listed here and signalled, never neither."""
        for state in (CommandState.QUEUED, CommandState.SENT):
            after = 0
            while True:
                page = await self.store.list_commands(state=state, after_id=after, limit=COMMAND_PAGE)
                self.with_commands.update(command.device_serial for command in page)
                if len(page) < COMMAND_PAGE:
                    break
                after = page[-1].id

    def tasks(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
        """The timer loop and the sweeps, as tasks of `loop`; the gateway cancels them at shutdown."""
        s = self.settings
        self._tasks = [loop.create_task(self._tick_loop()),
                       loop.create_task(self._every(s.command_expiry_sweep_s, self.expire_commands)),
                       loop.create_task(self._every(s.roster_dates_sweep_s, self.apply_roster_dates)),
                       loop.create_task(self._every(PRUNE_INTERVAL_S, self.prune))]
        return self._tasks

    async def close(self, timeout_s: float) -> None:
        """At shutdown, after the sessions ended: finish the store calls under way (commands'
        outcomes, faces' progress), for at most `timeout_s`. Roster versions go with the
        gateway's last presence flush."""
        await asyncio.wait_for(self._drain(), timeout_s)

    async def _drain(self) -> None:
        running = [chain.task for chain in self._chains.values() if chain.task is not None]
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    # -- sessions -------------------------------------------------------------------------------
    def session_started(self, link: TerminalLink) -> None:
        """`link` authenticated: start its roster sync (if its project exists) and read its
        commands (if any may wait)."""
        serial, project = link.serial, link.project_code
        if serial is None:
            return
        if project is not None:
            self.by_project.setdefault(project, set()).add(link)
        if serial in self.with_commands:
            self._run(link, self._machine(link).want_commands())
        if project is not None:
            known = self.projects.get(project)
            if known:
                self._start_roster(link)
            elif known is None and project not in self._project_reads:  # one read for a storm of sessions
                self._project_reads.add(project)
                self.gateway.spawn(self._check_project(project))

    def session_ended(self, link: TerminalLink) -> None:
        """`link` closed: record where its face stood, write its roster version, forget it."""
        serial, project = link.serial, link.project_code
        if project is not None:
            links = self.by_project.get(project)
            if links is not None:
                links.discard(link)
                if not links:
                    del self.by_project[project]
        machine = link.downlink
        if machine is None or serial is None:
            return
        link.downlink = None
        self.active.discard(link)
        if machine.known_commands or machine.loading_commands or machine.more_commands:
            self.with_commands.add(serial)  # what was not answered is still pending: read it next session
        face = machine.partial_face()
        if face is not None:
            self._chain(serial, partial(self.store.set_face_progress, serial, face.sha256, face.offset))

    def _machine(self, link: TerminalLink) -> DeviceDownlink:
        machine = link.downlink
        if machine is None:
            machine = link.downlink = DeviceDownlink(self.limits, self.gateway.now_ms(), link.project_code,
                                                     link.roster_synced)
            self.active.add(link)
        return machine

    def _start_roster(self, link: TerminalLink) -> None:
        """Start (or restart) the roster sync of `link`; its frames go out at the link's next
        flush (the caller's, outside a pass)."""
        machine = self._machine(link)
        self._run(link, machine.start_roster(self.gateway.now_ms()))

    async def _check_project(self, project: str) -> None:
        """Whether `project` exists (one store read for all the links waiting on it, marked in
        `_project_reads` by the caller); start the roster sync of its links if it does."""
        try:
            exists = await self.store.get_project(project) is not None
        except StoreError as exc:
            self.gateway.repeats.warning(log, "downlink_read", "reading project %s failed: %s", project, exc)
            return  # the next session of the project asks again
        finally:
            self._project_reads.discard(project)
        exists = exists or self.projects.get(project, False)  # a ROSTER signal meanwhile says it exists
        self.projects[project] = exists
        if exists:
            for link in list(self.by_project.get(project, ())):
                if not link.closed:
                    self._start_roster(link)
                    link.flush_downlink()

    # -- signals ----------------------------------------------------------------------------------
    def command_signal(self, serial: str) -> None:
        """A command was queued for `serial` (a COMMAND signal)."""
        self.with_commands.add(serial)
        link = self.gateway.sessions.get(serial)
        if link is not None and not link.closed:
            self._run(link, self._machine(link).want_commands())
            link.flush_downlink()

    def roster_signal(self, project: str, version: int) -> None:
        """The roster of `project` changed to `version` (a ROSTER signal)."""
        self.projects[project] = True
        for link in list(self.by_project.get(project, ())):
            if not link.closed:
                machine = link.downlink
                if machine is not None and machine.device_version == version and not machine.again \
                        and machine.roster is RosterState.IN_SYNC:
                    continue  # it holds this version already
                self._start_roster(link)
                link.flush_downlink()

    # -- turns: the downlink's share of the event loop ---------------------------------------------
    def request_turn(self, link: TerminalLink) -> None:
        """`link`'s machine has frames to send (the link asks at the end of a pass): queue it for
        the next downlink turn."""
        self._waiting[link] = None
        if not self._turn_scheduled:
            self._schedule_turn()

    def _schedule_turn(self) -> None:
        """The next turn: in the next event-loop iteration, or when the byte rate allows."""
        self._turn_scheduled = True
        loop = asyncio.get_running_loop()
        rate = self.rate_bytes_s
        if rate:
            now = loop.time()
            self._tokens = min(self.turn_bytes, self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            if self._tokens <= 0:
                loop.call_later(-self._tokens / rate + 0.001, self._turn)
                return
        loop.call_soon(self._turn)

    def _turn(self) -> None:
        """One event-loop turn of downlink work: fill the windows of waiting links, in the order
        they asked, until `downlink_turn_bytes` of frames were written (or the byte rate's
        allowance is spent); the rest wait for the next turn, after the loop has polled the
        sockets again (punches in between)."""
        self._turn_scheduled = False
        waiting = self._waiting
        budget = self.turn_bytes
        if self.rate_bytes_s:
            now = asyncio.get_running_loop().time()
            self._tokens = min(self.turn_bytes, self._tokens + (now - self._tokens_at) * self.rate_bytes_s)
            self._tokens_at = now
            budget = int(self._tokens)
        spent = 0
        while waiting and spent < budget:
            link = next(iter(waiting))
            del waiting[link]
            machine = link.downlink
            if machine is None or not machine.ready or link.closed or link.groups \
                    or link.session.state is not State.AUTHENTICATED:
                continue  # its next pass asks again
            room = self.max_unsent - link.unsent_bytes() - link.pending_bytes()
            self._run(link, machine.pump(self.gateway.now_ms(), link.session.send_command, room))
            written = link.pending_bytes()
            link.write_pending()
            spent += written
            if written and link.downlink is machine and machine.ready:
                waiting[link] = None  # more to send: to the back of the line
        self._tokens -= spent
        if spent and gc.get_count()[0] > GC_STEP_OBJECTS and gc.isenabled():
            gc.collect(0)
        if waiting:
            self._schedule_turn()

    # -- what the link asks -----------------------------------------------------------------------
    def answer(self, link: TerminalLink, message: Any) -> None:
        """The terminal answered a command (the session's DeviceAnswer)."""
        machine = link.downlink
        if machine is None:
            self.gateway.count("downlink_answers_unmatched")
            return
        before = machine.unmatched
        self._run(link, machine.answer(message, self.gateway.now_ms()))
        if machine.unmatched != before:
            self.gateway.count("downlink_answers_unmatched")

    # -- carrying out -------------------------------------------------------------------------------
    def _run(self, link: TerminalLink, actions: list[Action]) -> None:
        """Carry out a machine's actions for `link`; forget the machine once it is idle."""
        machine = link.downlink
        serial = link.serial or ""
        for action in actions:
            if isinstance(action, Send):
                self._send(link, action.message)
            elif isinstance(action, MarkSent):
                self._chain(serial, partial(self.store.mark_command_sent, action.command_id, action.seq,
                                            action.now_ms))
            elif isinstance(action, CommandDone):
                self._command_done(serial, action)
            elif isinstance(action, LoadCommands):
                self._chain(serial, partial(self._load_commands, link, action.limit))
            elif isinstance(action, LoadProject):
                self.gateway.spawn(self._load(link, machine, action.sync, self._read_project(link, action)))
            elif isinstance(action, LoadChanges):
                self.gateway.spawn(self._load(link, machine, action.sync, self._read_changes(link, action)))
            elif isinstance(action, LoadFace):
                self.gateway.spawn(self._load(link, machine, action.sync, self._read_face(link, action)))
            elif isinstance(action, RosterAcked):
                # the next machine of this session starts from it; the presence book's batched
                # write (every presence_flush_s) stores it for the next sessions: one statement
                # for every device, not a commit per device queued with the punches' commits
                link.roster_synced = action.version
                self.gateway.presence.note(serial, self.gateway.now_ms(), True, roster_version=action.version)
            elif isinstance(action, FaceProgress):
                self._chain(serial, partial(self.store.clear_face_progress, serial, action.sha256))
            elif isinstance(action, SyncDone):
                self._sync_ended(link, action.summary, None)
            elif isinstance(action, SyncFailed):
                self._sync_ended(link, action.summary, action.reason)
            else:
                assert_never(action)
        if machine is not None and link.downlink is machine and machine.idle():
            link.downlink = None
            self.active.discard(link)

    def _send(self, link: TerminalLink, message: Any) -> None:
        link.queue_frame(message)
        counters = self.gateway.counters
        kind = type(message)
        if kind is FaceChunk:
            counters["downlink_face_bytes"] += len(message.data)
        elif kind is RosterAdd:
            counters["downlink_roster_steps_add"] += 1
        elif kind is RosterUpdate:
            counters["downlink_roster_steps_update"] += 1
        elif kind is RosterRemove:
            counters["downlink_roster_steps_" + ("remove_all" if message.worker_id == REMOVE_ALL_WORKER_ID
                                                 else "remove")] += 1

    def _command_done(self, serial: str, done: CommandDone) -> None:
        state = "failed" if done.failed else "acked"
        self.gateway.count(f"downlink_commands_{state}")
        if done.result_code is None:
            result = "no_answer" if done.error and done.error.startswith("no answer") else "not_sent"
        else:
            result = _code_label(done.result_code)
        log.info("command %s", state, extra={"serial": serial, "command": done.command_id, "type": done.type_name,
                                             "result": result, "error": done.error, "sends": done.sends})

        self._chain(serial, partial(self.store.complete_command, done.command_id, done.result_code,
                                    failed=done.failed, error=done.error, reply=done.reply))

    def _sync_ended(self, link: TerminalLink, summary: Any, reason: str | None) -> None:
        serial = link.serial or ""
        fields = {"serial": serial, "project": link.project_code, "kind": summary.kind,
                  "from_version": summary.from_version, "to_version": summary.to_version,
                  "project_version": summary.project_version, "steps": summary.steps, "faces": summary.faces,
                  "face_bytes": summary.face_bytes, "faces_missing": summary.faces_missing or None,
                  "face_restarts": summary.face_restarts or None, "seconds": round(summary.duration_ms / 1000, 3)}
        if reason is None:
            self.gateway.count("downlink_roster_syncs_done")
            log.info("roster sync done", extra=fields)
        else:
            self.gateway.count("downlink_roster_syncs_failed")
            log.warning("roster sync stopped: %s", reason, extra=fields)

    # -- store calls --------------------------------------------------------------------------------
    def _chain(self, serial: str, call: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        chain = self._chains.get(serial)
        if chain is None:
            chain = self._chains[serial] = _Chain()
        chain.calls.append(call)
        if chain.task is None:
            chain.task = self.gateway.spawn(self._run_chain(serial, chain))

    async def _run_chain(self, serial: str, chain: _Chain) -> None:
        try:
            while chain.calls:
                call = chain.calls.popleft()
                try:
                    await call()
                except StoreError as exc:
                    self.gateway.count("downlink_store_failures")
                    self.gateway.repeats.warning(log, "downlink_write", "downlink store call failed: %s", exc,
                                                 extra={"serial": serial})
                except Exception:  # noqa: BLE001 - a bug in one call must not stop the device's others
                    log.exception("downlink store call failed", extra={"serial": serial})
        finally:
            chain.task = None
            if self._chains.get(serial) is chain:
                del self._chains[serial]  # a call added after the last one ran starts a new chain

    async def _load_commands(self, link: TerminalLink, limit: int) -> None:
        serial = link.serial or ""
        machine = link.downlink
        try:
            rows = await self.store.pending_commands(serial, limit)
        except StoreError as exc:
            self.gateway.repeats.warning(log, "downlink_read", "reading pending commands failed: %s", exc,
                                         extra={"serial": serial})
            if machine is not None and link.downlink is machine:
                self._run(link, machine.commands_failed_to_load())
            return
        if not rows:
            self.with_commands.discard(serial)  # none pending; a COMMAND signal puts it back
        if machine is not None and link.downlink is machine and not link.closed:
            self._run(link, machine.commands_loaded(rows, self.gateway.now_ms()))
            link.flush_downlink()

    async def _load(self, link: TerminalLink, machine: DeviceDownlink | None, sync: int,
                    read: Coroutine[Any, Any, Callable[[DeviceDownlink, int], list[Action]]]) -> None:
        """Run a roster read; hand its result to the machine that asked, if it is still the
        link's (a closed link or a new machine drops it)."""
        answer: Callable[[DeviceDownlink, int], list[Action]]
        try:
            answer = await read
        except StoreError as exc:
            self.gateway.repeats.warning(log, "downlink_read", "reading the roster failed: %s", exc,
                                         extra={"serial": link.serial})
            answer = partial(_load_failed, str(exc), sync)
        if machine is None or link.downlink is not machine or link.closed:
            return
        self._run(link, answer(machine, self.gateway.now_ms()))
        link.flush_downlink()

    async def _read_project(self, link: TerminalLink, load: LoadProject) -> Callable[[DeviceDownlink, int],
                                                                                      list[Action]]:
        project = await self.store.get_project(link.project_code or "")
        if project is None:
            return lambda m, now: m.project_loaded(False, 0, 0, now, sync=load.sync)
        return lambda m, now: m.project_loaded(True, project.roster_version, project.roster_floor, now,
                                               sync=load.sync)

    async def _read_changes(self, link: TerminalLink, load: LoadChanges) -> Callable[[DeviceDownlink, int],
                                                                                     list[Action]]:
        rows = await self.store.roster_changes(link.project_code or "", after_version=load.after_version,
                                               limit=load.limit)
        return lambda m, now: m.changes_loaded(rows, now, sync=load.sync)

    async def _read_face(self, link: TerminalLink, load: LoadFace) -> Callable[[DeviceDownlink, int], list[Action]]:
        data = await self.faces.get(load.sha256)
        resume = 0
        if load.resume and data is not None:
            resume = await self.store.face_progress(link.serial or "", load.sha256)
        if data is None:
            self.gateway.repeats.warning(log, "face_missing", "a face announced on the roster is not in the store; "
                                         "the worker is sent without it", extra={"serial": link.serial})
        return lambda m, now: m.face_loaded(load.sha256, data, resume, now, sync=load.sync)

    # -- timers -------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        period = min(TICK_MAX_S, self.settings.command_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            self.tick()

    def tick(self) -> None:
        """Resend what is overdue and give up on what was sent too often, on every link."""
        now = self.gateway.now_ms()
        for link in list(self.active):
            machine = link.downlink
            if machine is None or link.closed:
                self.active.discard(link)
                continue
            deadline = machine.deadline_ms()
            if deadline is not None and now >= deadline and link.session.state is State.AUTHENTICATED:
                before = sum(len(entry.seqs) for entry in machine.flight)
                self._run(link, machine.tick(now, link.session.send_command))
                after = sum(len(entry.seqs) for entry in machine.flight)
                if after > before:
                    self.gateway.count("downlink_resends", after - before)
                link.flush_downlink()

    async def _every(self, interval_s: float, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await work()

    async def expire_commands(self) -> int:
        """Mark the commands past their expiry as expired (every command_expiry_sweep_s)."""
        try:
            expired = await self.store.expire_commands(self.gateway.now_ms())
        except StoreError as exc:
            self.gateway.repeats.warning(log, "downlink_sweep", "expiring commands failed: %s", exc)
            return 0
        if expired:
            self.gateway.count("downlink_commands_expired", expired)
            log.info("%d commands expired before their devices answered", expired)
        return expired

    async def prune(self) -> tuple[int, int]:
        """Delete signals older than `signal_retention_s` and departed workers' rows older
        than `roster_tombstone_retention_days` (every PRUNE_INTERVAL_S); return both counts.
        Every process may run it: each delete is idempotent."""
        now_ms = self.gateway.now_ms()
        s = self.settings
        try:
            signals = await self.store.prune_signals(now_ms - int(s.signal_retention_s * 1000))
            tombstones = await self.store.prune_roster_tombstones(
                now_ms - s.roster_tombstone_retention_days * 86_400_000, today=china_today(now_ms))
        except StoreError as exc:
            self.gateway.repeats.warning(log, "downlink_sweep", "pruning signals and tombstones failed: %s", exc)
            return 0, 0
        if signals or tombstones:
            log.info("pruned %d signals and %d departed workers' rows", signals, tombstones)
        return signals, tombstones

    async def apply_roster_dates(self) -> list[str]:
        """Put on or take off the roster the workers whose entry or exit date today reached
        (every roster_dates_sweep_s); the store signals each changed project."""
        today = china_today(self.gateway.now_ms())
        try:
            changed = await self.store.apply_roster_dates(today)
        except StoreError as exc:
            self.gateway.repeats.warning(log, "downlink_sweep", "applying roster dates failed: %s", exc)
            return []
        if changed:
            log.info("roster dates of %s applied: %d projects changed", today.isoformat(), len(changed),
                     extra={"projects": changed[:20]})
        return changed


def _code_label(code: int) -> str:
    try:
        return ResultCode(code).name.lower()
    except ValueError:
        return str(code)


def _load_failed(reason: str, sync: int, machine: DeviceDownlink, now_ms: int) -> list[Action]:
    return machine.load_failed(reason, now_ms, sync=sync)
