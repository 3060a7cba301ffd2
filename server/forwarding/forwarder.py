"""The forwarder: outbox -> provincial system, losing nothing and flooding nothing.

Thin asyncio glue around the pure pieces (`province_api`, `policy`):

    claim_outbox -> pack into batches (records and bytes limits) -> [photos PUT] ->
    POST batch -> per-record verdict -> ack_outbox / dead_letter / fail_outbox

and beside it the late-photo sweep: unforwarded_photos -> PUT -> mark_photos_forwarded,
and the warnings sweep: warnings_to_forward -> POST warnings batch -> mark_warnings_forwarded.

Rules it keeps:

- At least once, never lost: an item leaves the outbox only by `ack_outbox` after the
  province answered it stored or duplicate, or by `dead_letter` after the province
  rejected that record as invalid (kept, with the province's reason). Everything else
  is `fail_outbox` with a backoff time; a crash leaves leases that run out, and the
  items are claimed again after a restart. The province deduplicates on the record id.
- In order per device: the store hands out a device's items only after its earlier
  ones are settled; within one claim, a batch holding a device's later items waits for
  the batch holding its earlier ones, and is not sent for that device if that failed.
- Bounded memory: at most `concurrency x batch_records` claimed items are held,
  whatever the backlog; caches (project codes, photos already sent) are bounded LRUs.
- Every stored photo reaches the province: a photo PUT with its record is marked
  forwarded; one still unmarked `late_photo_s` after it was stored is PUT by the sweep:
  at least once, perhaps twice. Terminals upload a photo after its punch (PHOTO_CHUNK
  follows PUNCH), so with a prompt outbox most photos take the sweep. A photo whose
  bytes this node cannot read (a pre-version-7 file on another PostgreSQL node's disk,
  or a file deleted by hand) is never marked forwarded: it stays pending, is logged as
  an error and counted (`photo_unreadable`) on every sweep, and the node that holds it
  sends it. Marking it, as this once did, lost it for good.
- Gentle with the province: at most `concurrency` requests at once; 429 holds every
  request until Retry-After; while it is down the circuit breaker lets one probe
  through per open period.
- Punches first: supervision warnings (rare, a few KB each) go every
  `warning_interval_s`, one request at a time through the same request slots, the same
  breaker and the same 429 hold; a sweep starts only at a moment with no punch in flight
  and gives way again before each request if punches were claimed meanwhile (unless it
  has waited WARNING_MAX_DEFER_S). Each version is sent whole with its history and marked
  forwarded only once the province answered it stored or duplicate, so a warning that
  changed in flight (its version moved) is sent again. There is no lease: two nodes may
  send the same version, which the province takes once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random as random_module
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from lmg.protocol import province as api
from lmg.server.forwarding.config import ForwarderConfig
from lmg.server.forwarding.policy import (
    BreakerState,
    CircuitBreaker,
    Health,
    RetryPolicy,
    Verdict,
    failed_verdict,
    judge_answer,
    judge_warnings_answer,
    warning_key,
)
from lmg.server.logs import RepeatedWarnings
from lmg.storage import OutboxItem, Store, StoreError, WarningRecord
from lmg.storage.api import wall_clock_ms

log = logging.getLogger("lmg.forward")

# PUT answers that no retry can change: 400 (the bytes do not hash to the id: the stored
# file is damaged) and 413 (larger than the province takes).
PHOTO_REFUSED_FOR_GOOD = frozenset({400, 413})
PHOTOS_SENT_CACHE = 10_000  # hashes of photos the province confirmed; 64 bytes each, 1 MB at most
STOP_GRACE_S_EXTRA = 1.0  # on stop, requests in flight get timeout_s plus this to finish
# A warnings sweep waits for a moment with no punch in flight, but no longer than this:
# an hour's backlog of the design load drains in ~45 s (docs/province-api.md §9.1), and a
# warning a minute late is still on time for a bureau that works in days.
WARNING_MAX_DEFER_S = 60.0


@dataclass
class ForwarderStats:
    """Counters since start, for logs, tests and `lmg bench forwarding`."""

    requests: int = 0
    acked: int = 0  # records the province holds (stored or duplicate)
    duplicates: int = 0
    dead_lettered: int = 0
    retried: int = 0  # records failed back to the outbox with a backoff
    held_back: int = 0  # records not sent because an earlier punch of their device failed
    photos_sent: int = 0
    late_photos_sent: int = 0  # of photos_sent, those the late-photo sweep sent
    failures: dict = field(default_factory=dict)  # kind -> count
    # every request by its result: ok (HTTP 200), http_<status>, timeout, connection
    # (the gateway's metrics export it as lmg_forward_attempts_total)
    attempts: dict = field(default_factory=dict)
    # warning versions by result: accepted (the province holds it), rejected (refused as
    # invalid, or not sendable: logged and marked), retried (lmg_forward_warnings_total)
    warnings: dict = field(default_factory=dict)

    def note(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def attempt(self, result: str) -> None:
        self.attempts[result] = self.attempts.get(result, 0) + 1

    def warning(self, result: str, count: int = 1) -> None:
        self.warnings[result] = self.warnings.get(result, 0) + count


@dataclass(slots=True)
class _Entry:
    item: OutboxItem
    rid: str
    encoded: bytes


class _LRU:
    """A bounded mapping: the least recently used entry goes when `limit` is reached."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data: OrderedDict = OrderedDict()

    def get(self, key):
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.limit:
            self.data.popitem(last=False)


class Forwarder:
    """One forwarding loop over one store. `run(stop)` returns after `stop` is set."""

    def __init__(self, store: Store, config: ForwarderConfig, *, clock_ms: Callable[[], int] = wall_clock_ms,
                 random: Callable[[], float] = random_module.random, stats: ForwarderStats | None = None):
        if not config.enabled():
            raise ValueError("ForwarderConfig.url is empty: nothing to forward to")
        self.store = store
        self.config = config
        self.clock_ms = clock_ms
        self.random = random
        self.policy = RetryPolicy(int(config.retry_base_s * 1000), int(config.retry_cap_s * 1000))
        self.breaker = CircuitBreaker(config.breaker_failures, int(config.breaker_open_s * 1000),
                                      int(config.breaker_max_open_s * 1000))
        self.cipher = api.WorkerIdCipher.for_app(config.app_secret, config.app_key)
        self.stats = stats if stats is not None else ForwarderStats()
        self.repeats = RepeatedWarnings()
        self.capacity = config.batch_records * config.concurrency
        self.held = 0  # claimed items in memory; never above `capacity`
        self.max_held = 0
        self.hold_until_ms = 0  # a 429 told us to wait until then
        self._projects = _LRU(config.project_cache)
        self._photos_sent = _LRU(PHOTOS_SENT_CACHE)
        # device -> failed sends in a row: the backoff exponent. Not the outbox's `attempts`,
        # which also counts claims that were held back or given back unsent.
        self._streaks = _LRU(config.project_cache)
        self._sending = asyncio.Semaphore(config.concurrency)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._session: aiohttp.ClientSession | None = None
        self._batch_seq = 0
        self._next_due_ms = 0  # earliest retry time written and not yet reached (0 = none)
        self._warning_streak = 0  # failed warning requests in a row: the backoff exponent
        self._warnings_due_ms = 0  # no warnings sweep before this (a backoff after a failure)

    # -- the loop ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        # one connection per concurrent request, plus one for the device-status snapshot
        connector = aiohttp.TCPConnector(limit=self.config.concurrency + 1)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            status = asyncio.create_task(self._status_loop(stop)) if self.config.status_interval_s else None
            photos = asyncio.create_task(self._late_photo_loop(stop))
            warnings = asyncio.create_task(self._warning_loop(stop)) if self.config.warning_interval_s else None
            try:
                await self._claim_loop(stop)
            finally:
                if status is not None:
                    status.cancel()
                if warnings is not None:
                    warnings.cancel()
                photos.cancel()
                await self._finish_in_flight()
        self._session = None

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        lease_ms = int(self.config.lease_s * 1000)
        idle_s = self.config.idle_poll_s
        while not stop.is_set():
            now = self.clock_ms()
            wait_until = max(self.hold_until_ms, self.breaker.next_allowed_at_ms(now))
            if wait_until > now:
                await self._pause((wait_until - now) / 1000, stop)
                continue
            room = self.capacity - self.held
            if room <= 0:
                await self._pause(idle_s, stop)
                continue
            half_open = self.breaker.state is not BreakerState.CLOSED
            if half_open:
                if self.held or not self.breaker.allow(now):
                    await self._pause(idle_s, stop)  # the probe's answer wakes us
                    continue
                room = min(room, self.config.batch_records)
            try:
                items = await self.store.claim_outbox(room, now, lease_ms)
            except StoreError as exc:
                log.warning("cannot read the outbox (%s); trying again in %.0f s", exc, idle_s)
                if half_open:
                    self.breaker.record_neutral(now)
                await self._pause(idle_s, stop)
                continue
            if not items:
                if half_open:
                    self.breaker.record_neutral(now)
                await self._pause(idle_s, stop)
                continue
            self.held += len(items)
            self.max_held = max(self.max_held, self.held)
            await self._dispatch(items, now + lease_ms)
            if len(items) < room:
                # Drained what is claimable now: look again when a batch finishes, when the
                # earliest retry we scheduled falls due, or after idle_poll_s (new punches).
                now = self.clock_ms()
                if self._next_due_ms and self._next_due_ms > now:
                    await self._pause(min(idle_s, (self._next_due_ms - now) / 1000 + 0.005), stop)
                else:
                    self._next_due_ms = 0
                    await self._pause(idle_s, stop)

    async def _pause(self, seconds: float, stop: asyncio.Event) -> None:
        """Sleep up to `seconds`, waking early when a batch finishes or on stop."""
        self._wake.clear()
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _finish_in_flight(self) -> None:
        if not self._tasks:
            return
        done, pending = await asyncio.wait(set(self._tasks), timeout=self.config.timeout_s + STOP_GRACE_S_EXTRA)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # -- batching ---------------------------------------------------------------------------
    async def _dispatch(self, items: list[OutboxItem], lease_deadline_ms: int) -> None:
        """Pack claimed items into batches and start one task per batch, chained per device."""
        entries = []
        size = api.GCM_NONCE_BYTES
        nonces = os.urandom(size * len(items))  # one system call for the claim, a fresh 12 bytes per value
        for i, item in enumerate(items):
            project = self._projects.get(item.punch.device_serial) or await self._project_code(item.punch.device_serial)
            record = api.attendance_record(item.punch, project, self.cipher, nonces[i * size:(i + 1) * size])
            entries.append(_Entry(item, record["record_id"], api.encode_record(record)))
        lanes: dict[str, asyncio.Future] = {}  # device -> future of the last batch holding its items
        for batch in self._pack(entries):
            devices = {e.item.punch.device_serial for e in batch}
            prior = {lanes[d] for d in devices if d in lanes}
            done = asyncio.get_running_loop().create_future()
            for device in devices:
                lanes[device] = done
            task = asyncio.create_task(self._run_batch(batch, prior, done, lease_deadline_ms))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pack(self, entries: list[_Entry]) -> list[list[_Entry]]:
        """Split in claim (id) order so that no batch exceeds batch_records or batch_bytes."""
        limit_records, limit_bytes = self.config.batch_records, self.config.batch_bytes
        id_room = api.BATCH_ID_MAX_CHARS
        batches: list[list[_Entry]] = []
        current: list[_Entry] = []
        size = 0
        for entry in entries:
            grown = api.batch_body_size("x" * id_room, size + len(entry.encoded), len(current) + 1)
            if current and (len(current) >= limit_records or grown > limit_bytes):
                batches.append(current)
                current, size = [], 0
            current.append(entry)
            size += len(entry.encoded)
        if current:
            batches.append(current)
        return batches

    async def _project_code(self, serial: str) -> str:
        cached = self._projects.get(serial)
        if cached is not None:
            return cached
        try:
            device = await self.store.get_device(serial)
        except StoreError:
            device = None
        project = device.project_code if device is not None else ""
        if device is not None:
            self._projects.put(serial, project)
        return project

    # -- one batch --------------------------------------------------------------------------
    async def _run_batch(self, batch: list[_Entry], prior: set[asyncio.Future], done: asyncio.Future,
                         lease_deadline_ms: int) -> None:
        """Settle every item of `batch`; resolve `done` with {device: retry time} for devices that failed."""
        failed: dict[str, int] = {}
        try:
            blocked: dict[str, int] = {}
            for earlier in prior:
                blocked.update(await asyncio.shield(earlier))
            held_back = [e for e in batch if e.item.punch.device_serial in blocked]
            if held_back:
                await self._hold_back(held_back, blocked)
                failed.update({e.item.punch.device_serial: blocked[e.item.punch.device_serial] for e in held_back})
            to_send = [e for e in batch if e.item.punch.device_serial not in blocked]
            if to_send:
                failed.update(await self._send_and_settle(to_send, lease_deadline_ms))
        except BaseException:
            later = self.clock_ms() + self.policy.base_ms
            failed.update({e.item.punch.device_serial: later for e in batch})
            await asyncio.shield(self._give_back(batch, "forwarder stopped before the answer", later))
            raise
        finally:
            if not done.done():
                done.set_result(failed)
            self.held -= len(batch)
            self._wake.set()

    async def _hold_back(self, entries: list[_Entry], blocked: dict[str, int]) -> None:
        self.stats.held_back += len(entries)
        by_time: dict[int, list[int]] = {}
        for e in entries:
            by_time.setdefault(blocked[e.item.punch.device_serial], []).append(e.item.id)
        for at, ids in by_time.items():
            await self._store_call(self.store.fail_outbox, ids, "held back: an earlier punch of this device "
                                   "was not accepted yet", at)
            self._note_due(at)

    def _note_due(self, at_ms: int) -> None:
        if not self._next_due_ms or at_ms < self._next_due_ms:
            self._next_due_ms = at_ms

    async def _give_back(self, entries: list[_Entry], error: str, at_ms: int) -> None:
        try:
            await self.store.fail_outbox([e.item.id for e in entries], error, at_ms)
        except (StoreError, asyncio.CancelledError):
            pass  # the leases run out instead

    async def _send_and_settle(self, entries: list[_Entry], lease_deadline_ms: int) -> dict[str, int]:
        async with self._sending:
            now = self.clock_ms()
            if self.breaker.state is BreakerState.OPEN or now < self.hold_until_ms:
                verdict = failed_verdict([e.rid for e in entries], "not sent: the province is down or asked us "
                                         "to wait", Health.NEUTRAL)
                return await self._settle(entries, verdict, retry_at=max(self.hold_until_ms,
                                                                          self.breaker.next_allowed_at_ms(now)))
            if now + self.config.timeout_s * 1000 > lease_deadline_ms:
                # our lease could run out mid-request and another forwarder send these too
                verdict = failed_verdict([e.rid for e in entries], "not sent: lease nearly over", Health.NEUTRAL)
                return await self._settle(entries, verdict, retry_at=now)
            photo_failure = await self._send_photos(entries)
            verdict = photo_failure if photo_failure is not None else await self._post_batch(entries)
        self._report_health(verdict.health)
        return await self._settle(entries, verdict)

    def _report_health(self, health: Health) -> None:
        now = self.clock_ms()
        if health is Health.UP:
            self.breaker.record_success(now)
        elif health is Health.DOWN:
            was = self.breaker.state
            self.breaker.record_failure(now)
            if self.breaker.state is BreakerState.OPEN and was is not BreakerState.OPEN:
                log.warning("provincial system unreachable or failing; pausing %.1f s before one probe",
                            self.breaker.current_open_ms / 1000)
        else:
            self.breaker.record_neutral(now)

    async def _request(self, method: str, path: str, body: bytes, content_type: str):
        """(status, body, Retry-After) or a Verdict-ready failure description as (None, error, None)."""
        url, target = self.config.endpoint(path)
        headers = api.signed_headers(self.config.app_key, self.config.app_secret, method, target, body,
                                     timestamp_ms=self.clock_ms(), nonce=os.urandom(16).hex())
        headers["Content-Type"] = content_type
        self.stats.requests += 1
        assert self._session is not None, "requests are made only while run() holds a session"
        try:
            async with self._session.request(method, url, data=body, headers=headers) as response:
                answer = response.status, await response.read(), response.headers.get("Retry-After")
        except asyncio.TimeoutError:
            self.stats.note("timeout")
            self.stats.attempt("timeout")
            return None, f"no answer within {self.config.timeout_s:g} s", None
        except aiohttp.ClientError as exc:
            self.stats.note("connection")
            self.stats.attempt("connection")
            return None, f"connection failed: {type(exc).__name__}: {exc}", None
        self.stats.attempt("ok" if answer[0] == 200 else f"http_{answer[0]}")
        return answer

    async def _post_batch(self, entries: list[_Entry]) -> Verdict:
        self._batch_seq += 1
        batch_id = f"{self.config.app_key[:20]}-{entries[0].item.id}-{self._batch_seq}"[: api.BATCH_ID_MAX_CHARS]
        body = api.attendance_batch_body(batch_id, [e.encoded for e in entries])
        rids = [e.rid for e in entries]
        status, answer, retry_after = await self._request("POST", api.PATH_ATTENDANCE, body, "application/json")
        if status is None:
            return failed_verdict(rids, answer, Health.DOWN)
        if status != 200:
            self.stats.note(f"http_{status}")
        verdict = judge_answer(status, answer, retry_after, rids, self.clock_ms())
        self.stats.duplicates += verdict.duplicates
        return verdict

    async def _send_photos(self, entries: list[_Entry]) -> Verdict | None:
        """PUT the photos the province may lack before the records naming them. None = all sent.
        Each photo settled (taken, or refused for good) is marked forwarded: the late-photo
        sweep skips it."""
        settled: list[bytes] = []
        try:
            return await self._put_photos(entries, settled)
        finally:
            if settled:
                await self._store_call(self.store.mark_photos_forwarded, settled, self.clock_ms())

    async def _put_photos(self, entries: list[_Entry], settled: list[bytes]) -> Verdict | None:
        for entry in entries:
            punch = entry.item.punch
            if not punch.photo_size or punch.photo_sha256 is None:
                continue
            sha = punch.photo_sha256.hex()
            if self._photos_sent.get(sha):
                continue
            try:
                photo = await self.store.get_punch_photo(punch.device_serial, punch.record_no)
            except StoreError as exc:
                return failed_verdict([e.rid for e in entries], f"cannot read photo {sha[:12]}: {exc}", Health.NEUTRAL)
            if photo is None:
                continue  # not uploaded by the terminal yet: the record carries the reference only
            status, answer, retry_after = await self._put_photo(punch.photo_sha256, photo)
            if status == 200 or status in PHOTO_REFUSED_FOR_GOOD:
                settled.append(punch.photo_sha256)  # the record goes on, naming the photo either way
                continue
            if status is None:
                return failed_verdict([e.rid for e in entries], f"photo {sha[:12]}: {answer}", Health.DOWN)
            verdict = judge_answer(status, answer, retry_after, [e.rid for e in entries], self.clock_ms())
            return failed_verdict([e.rid for e in entries], f"photo {sha[:12]}: {verdict.error}", verdict.health,
                                  verdict.retry_after_ms)
        return None

    async def _settle(self, entries: list[_Entry], verdict: Verdict, retry_at: int | None = None) -> dict[str, int]:
        """Write the verdict to the outbox; return {device: retry time} for devices with a retried record."""
        by_rid = {e.rid: e for e in entries}
        now = self.clock_ms()
        if verdict.retry_after_ms is not None and verdict.health is Health.NEUTRAL and retry_at is None:
            self.hold_until_ms = max(self.hold_until_ms, now + verdict.retry_after_ms)
        if verdict.accepted:
            await self._store_call(self.store.ack_outbox, [by_rid[r].item.id for r in verdict.accepted])
            self.stats.acked += len(verdict.accepted)
        if verdict.rejected:
            by_reason: dict[str, list[int]] = {}
            for rid, reason in verdict.rejected.items():
                by_reason.setdefault(reason, []).append(by_rid[rid].item.id)
            for reason, ids in by_reason.items():
                await self._store_call(self.store.dead_letter, ids, reason)
            self.stats.dead_lettered += len(verdict.rejected)
            self.repeats.warning(log, "rejected", "province rejected %d record(s) as invalid; see "
                                 "`lmg forward dead-letters`", len(verdict.rejected))
        failed: dict[str, int] = {}
        for rid in verdict.accepted:
            self._streaks.data.pop(by_rid[rid].item.punch.device_serial, None)
        if verdict.retry:
            retry = [by_rid[r] for r in verdict.retry]
            by_time: dict[int, list[int]] = {}
            at_streak: dict[int, int] = {}  # one jitter draw per streak length: one outbox write each
            for entry in retry:
                device = entry.item.punch.device_serial
                if device not in failed:
                    if retry_at is not None:
                        failed[device] = retry_at
                    else:
                        streak = (self._streaks.get(device) or 0) + 1
                        self._streaks.put(device, streak)
                        if streak not in at_streak:
                            at_streak[streak] = self.policy.next_attempt_at_ms(streak, now, self.random,
                                                                               verdict.retry_after_ms)
                        failed[device] = at_streak[streak]
                by_time.setdefault(failed[device], []).append(entry.item.id)
            for at, ids in by_time.items():
                await self._store_call(self.store.fail_outbox, ids, verdict.error[:500], at)
                self._note_due(at)
            self.stats.retried += len(retry)
            log.debug("%d record(s) to retry: %s", len(retry), verdict.error)
        return failed

    async def _store_call(self, method, *args) -> None:
        """An outbox write; on a store fault the lease runs out and the item is sent again (duplicate at most)."""
        try:
            await method(*args)
        except StoreError as exc:
            self.repeats.warning(log, "outbox", "outbox update failed (%s); the items will be sent again after "
                                 "their lease", exc)

    # -- late photos ----------------------------------------------------------------------
    async def _late_photo_loop(self, stop: asyncio.Event) -> None:
        """Every late_photo_s, send the photos still unconfirmed late_photo_s after they were stored."""
        async for _ in _every(self.config.late_photo_s, stop):
            if self.breaker.state is not BreakerState.CLOSED or self.clock_ms() < self.hold_until_ms:
                continue  # the claim loop probes the province; photos wait for it to be back
            try:
                await self.send_late_photos()
            except StoreError as exc:
                log.warning("late photos not sent: cannot read the photo store (%s)", exc)

    async def send_late_photos(self, page: int = 100) -> int:
        """PUT every photo stored over late_photo_s ago and not confirmed, `page` at a time
        and up to `concurrency` at once; mark each the province took. A page with a failed
        PUT ends the sweep (the next one tries again). Photos this node cannot read stay
        unmarked and are stepped over (each later page asks for that many more). Returns how
        many were sent."""
        sent = 0
        skipped: set[bytes] = set()  # unreadable here: 32 bytes each, for this sweep only
        while True:
            now = self.clock_ms()
            listed = await self.store.unforwarded_photos(now - int(self.config.late_photo_s * 1000),
                                                         page + len(skipped))
            late = [sha for sha in listed if sha not in skipped]
            if not late:
                return sent
            outcomes = await asyncio.gather(*(self._put_late_photo(sha) for sha in late))
            settled = [sha for sha, outcome in zip(late, outcomes, strict=True) if isinstance(outcome, bool)]
            unreadable = [sha for sha, outcome in zip(late, outcomes, strict=True) if outcome is None]
            if unreadable:
                log.error("%d photo(s) recorded as stored but unreadable on this node (first %s): left pending, "
                          "not marked forwarded; a pre-version-7 file on another node is sent by that node's "
                          "forwarder; a file deleted by hand is lost on this gateway",
                          len(unreadable), unreadable[0].hex()[:12])
                skipped.update(unreadable)
            sent += outcomes.count(True)
            if settled:
                try:
                    await self.store.mark_photos_forwarded(settled, self.clock_ms())
                except StoreError as exc:  # they would come back in the next page: stop here
                    log.warning("late photos sent but not marked (%s); they may be sent again", exc)
                    return sent
            failed = [error for error in outcomes if isinstance(error, str)]
            if failed:
                log.warning("%d late photo(s) not accepted, next try in %g s: %s", len(failed),
                            self.config.late_photo_s, failed[0])
            if failed or len(listed) < page + len(skipped) - len(unreadable):
                return sent

    async def _put_late_photo(self, sha: bytes) -> bool | str | None:
        """True: the province took it. False: settled without sending (sent earlier by this
        process and only the mark was lost, or the province refused it for good); marked
        all the same. A string: why the PUT failed; left unmarked for the next sweep.
        None: this node cannot read the photo's bytes; left unmarked (the data-loss rule
        in the module docstring)."""
        if self._photos_sent.get(sha.hex()):
            return False
        photo = await self.store.get_photo(sha)
        if photo is None:
            self.stats.note("photo_unreadable")
            return None
        async with self._sending:
            status, answer, _ = await self._put_photo(sha, photo)
        if status == 200:
            self.stats.late_photos_sent += 1
            return True
        if status in PHOTO_REFUSED_FOR_GOOD:
            return False
        return f"photo {sha.hex()[:12]}: " + (answer if status is None else
                                              f"HTTP {status}: {api.parse_error(answer)[1]}")

    async def _put_photo(self, sha: bytes, photo: bytes):
        """PUT one photo: (status, answer, Retry-After) as `_request`. A photo the province
        refuses for good (PHOTO_REFUSED_FOR_GOOD) is logged as an error: retrying cannot help,
        and waiting for it would hold back everything behind it."""
        status, answer, retry_after = await self._request("PUT", api.photo_target(sha.hex()), photo, "image/jpeg")
        if status == 200:
            self._photos_sent.put(sha.hex(), True)
            self.stats.photos_sent += 1
        elif status in PHOTO_REFUSED_FOR_GOOD:
            self.stats.note("photo_refused")
            log.error("the province refused photo %s for good (HTTP %s: %s); it will not be sent again",
                      sha.hex()[:12], status, api.parse_error(answer)[1])
        return status, answer, retry_after

    # -- warnings ---------------------------------------------------------------------------
    async def _warning_loop(self, stop: asyncio.Event) -> None:
        """Every warning_interval_s, send the warning versions the province has not confirmed."""
        deferred_since: float | None = None
        loop = asyncio.get_running_loop()
        async for _ in _every(self.config.warning_interval_s, stop):
            now = self.clock_ms()
            if self.breaker.state is not BreakerState.CLOSED or now < self.hold_until_ms \
                    or now < self._warnings_due_ms:
                continue  # the claim loop probes the province; a failed sweep waits its backoff
            deferred_since = deferred_since if deferred_since is not None else loop.time()
            overdue = loop.time() - deferred_since >= WARNING_MAX_DEFER_S
            if self.held and not overdue:  # punches are claimed and on their way: they go first
                continue
            try:
                if await self.send_warnings(yield_to_punches=not overdue) is not None:
                    deferred_since = None
            except StoreError as exc:
                self.repeats.warning(log, "warnings", "warnings not sent: cannot read them from the store (%s)", exc)

    async def send_warnings(self, page: int = api.MAX_WARNING_BATCH, *, yield_to_punches: bool = False) -> int | None:
        """Send every warning version the province has not confirmed, `page` at a time, one
        request at a time; mark each it holds. Ends at the first failed request (a backoff
        delays the next sweep) or when a page settles nothing; with `yield_to_punches`, also
        before a page while punches are in flight (None then: the sweep is not done).
        Returns the versions the province took. Raises StoreError if the warnings cannot
        be read."""
        accepted = 0
        while True:
            if yield_to_punches and self.held:
                return None
            due = await self.store.warnings_to_forward(page)
            if not due:
                return accepted
            entries, unsendable = await self._warning_entries(due)
            settled: list[tuple[int, int]] = [(w.id, w.version) for w in unsendable]
            failed, moved = False, 0
            for batch in self._pack_warnings(entries):
                if yield_to_punches and self.held:  # punches claimed while the page was read
                    failed = True
                    break
                taken, rejected, ok = await self._post_warnings(batch)
                settled += taken + rejected
                accepted += len(taken)
                if not ok:
                    failed = True
                    break
            if settled:
                try:
                    moved = await self.store.mark_warnings_forwarded(settled)
                except StoreError as exc:
                    log.warning("warnings sent but not marked (%s); they will be sent again", exc)
                    return accepted
            if yield_to_punches and self.held:
                return None
            if failed or not settled or len(due) < page or not moved:
                return accepted

    async def _warning_entries(self, due: Sequence[WarningRecord]) -> tuple[list[tuple[WarningRecord, bytes]],
                                                                            list[WarningRecord]]:
        """(warning, encoded) for each sendable warning, and the warnings that cannot be sent
        (logged as errors and counted rejected: sending them again would not help)."""
        names = await self._worker_names(due)
        nonces = os.urandom(api.GCM_NONCE_BYTES * len(due))
        limit = api.MAX_BATCH_BYTES - api.warnings_body_size("x" * api.BATCH_ID_MAX_CHARS, 0, 1)
        entries, unsendable = [], []
        for i, warning in enumerate(due):
            history = await self.store.warning_history(warning.id)
            nonce = nonces[i * api.GCM_NONCE_BYTES:(i + 1) * api.GCM_NONCE_BYTES]
            try:
                name = names.get((warning.project_code, warning.worker_id or ""), "")
                encoded = api.encode_warning(api.warning_record(warning, history, name, self.cipher, nonce),
                                             warning.worker_id)
                if len(encoded) > limit:
                    raise ValueError(f"warning {warning.id} is {len(encoded)} bytes with its history; a request "
                                     f"holds at most {api.MAX_BATCH_BYTES}")
            except ValueError as exc:
                log.error("warning %d version %d not sent to the province: %s", warning.id, warning.version, exc)
                self.stats.warning("rejected")
                unsendable.append(warning)
                continue
            entries.append((warning, encoded))
        return entries, unsendable

    async def _worker_names(self, due: Sequence[WarningRecord]) -> dict[tuple[str, str], str]:
        """The name of each warning's person: the bid award's (or change's) for the period,
        else the project roster's; absent when neither knows the number."""
        wanted = {(w.project_code, w.worker_id) for w in due if w.worker_id}
        if not wanted:
            return {}
        names: dict[tuple[str, str], str] = {}
        first = min(w.period_start for w in due if w.worker_id)
        last = max(w.period_end for w in due if w.worker_id)
        for commitment in await self.store.key_personnel({p for p, _ in wanted}, first, last):
            if (commitment.project_code, commitment.id_number) in wanted:
                names[(commitment.project_code, commitment.id_number)] = commitment.name
        for project, worker_id in wanted - names.keys():
            worker = await self.store.get_worker(project, worker_id)
            if worker is not None:
                names[(project, worker_id)] = worker.name
        return names

    def _pack_warnings(self, entries: list[tuple[WarningRecord, bytes]]) -> list[list[tuple[WarningRecord, bytes]]]:
        """Split in id order: at most MAX_WARNING_BATCH warnings and batch_bytes per request
        (a warning larger than batch_bytes goes alone; none is over the province's limit)."""
        batches: list[list[tuple[WarningRecord, bytes]]] = []
        current: list[tuple[WarningRecord, bytes]] = []
        size = 0
        for entry in entries:
            grown = api.warnings_body_size("x" * api.BATCH_ID_MAX_CHARS, size + len(entry[1]), len(current) + 1)
            if current and (len(current) >= api.MAX_WARNING_BATCH or grown > self.config.batch_bytes):
                batches.append(current)
                current, size = [], 0
            current.append(entry)
            size += len(entry[1])
        if current:
            batches.append(current)
        return batches

    async def _post_warnings(self, batch: list[tuple[WarningRecord, bytes]]
                             ) -> tuple[list[tuple[int, int]], list[tuple[int, int]], bool]:
        """POST one batch: (versions the province holds, versions it rejected, whether the
        request succeeded). On failure the next sweep waits the backoff."""
        keys = [(w.id, w.version) for w, _ in batch]
        self._batch_seq += 1
        batch_id = f"{self.config.app_key[:20]}-w{keys[0][0]}-{self._batch_seq}"[: api.BATCH_ID_MAX_CHARS]
        body = api.warnings_batch_body(batch_id, [encoded for _, encoded in batch])
        async with self._sending:
            now = self.clock_ms()
            if self.breaker.state is BreakerState.OPEN or now < self.hold_until_ms:
                return [], [], False  # the province went down or asked us to wait meanwhile: not sent
            status, answer, retry_after = await self._request("POST", api.PATH_WARNINGS, body, "application/json")
        if status is None:
            verdict = failed_verdict([warning_key(*k) for k in keys], answer, Health.DOWN)
        else:
            if status != 200:
                self.stats.note(f"http_{status}")
            verdict = judge_warnings_answer(status, answer, retry_after, keys, self.clock_ms())
        self._report_health(verdict.health)
        by_name = {warning_key(*k): k for k in keys}
        if verdict.rejected:
            for name, reason in verdict.rejected.items():
                log.error("the province rejected warning %s as invalid (%s); it is sent again when it next "
                          "changes", name, reason)
            self.stats.warning("rejected", len(verdict.rejected))
        self.stats.warning("accepted", len(verdict.accepted))
        now = self.clock_ms()
        if verdict.retry:
            self.stats.warning("retried", len(verdict.retry))
            self._warning_streak += 1
            self._warnings_due_ms = self.policy.next_attempt_at_ms(self._warning_streak, now, self.random,
                                                                   verdict.retry_after_ms)
            if verdict.retry_after_ms is not None and verdict.health is Health.NEUTRAL and status == 429:
                self.hold_until_ms = max(self.hold_until_ms, now + verdict.retry_after_ms)
            self.repeats.warning(log, "warnings_retry", "%d warning(s) not accepted, next try in %.1f s: %s",
                                 len(verdict.retry), (self._warnings_due_ms - now) / 1000, verdict.error)
        else:
            self._warning_streak = 0
        return ([by_name[n] for n in verdict.accepted], [by_name[n] for n in verdict.rejected],
                not verdict.retry)

    # -- device status --------------------------------------------------------------------
    async def _status_loop(self, stop: asyncio.Event) -> None:
        """Send an online/offline snapshot of every device each status_interval_s (best effort)."""
        async for _ in _every(self.config.status_interval_s, stop):
            if self.breaker.state is BreakerState.OPEN:
                continue
            try:
                await self.send_device_status()
            except StoreError as exc:
                log.warning("device status not sent: cannot list devices (%s)", exc)

    async def send_device_status(self) -> int:
        """One snapshot, in pages of MAX_DEVICE_STATUS; returns devices the province accepted."""
        after, sent = "", 0
        while True:
            page = await self.store.list_devices(after_serial=after, limit=api.MAX_DEVICE_STATUS)
            if not page:
                return sent
            status, answer, _ = await self._request("POST", api.PATH_DEVICE_STATUS, api.device_status_body(page),
                                                    "application/json")
            if status != 200:
                log.warning("device status not accepted: %s", answer if status is None else f"HTTP {status}: "
                            f"{api.parse_error(answer)[1]}")
                return sent
            sent += len(page)
            after = page[-1].serial


async def _every(seconds: float, stop: asyncio.Event):
    """Yield every `seconds` (after the work of the previous turn) until `stop` is set."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), seconds)
            return
        except asyncio.TimeoutError:
            yield


async def run_forwarder(store: Store, config: ForwarderConfig, stop_event: asyncio.Event, *,
                        clock_ms: Callable[[], int] = wall_clock_ms,
                        random: Callable[[], float] = random_module.random,
                        stats: ForwarderStats | None = None) -> ForwarderStats:
    """Forward the outbox of `store` until `stop_event` is set; returns the counters
    (`stats` if given: the gateway passes its own, which its metrics read meanwhile).

    Requests in flight at stop get `timeout_s` (+1 s) to finish; items still unsettled
    are given back to the outbox (due at once) or, if even that fails, their lease runs
    out. Safe to run beside `lmg serve` on the same store, and on several nodes.
    """
    forwarder = Forwarder(store, config, clock_ms=clock_ms, random=random, stats=stats)
    log.info("forwarding to %s as app key %s (batches of %d, %d in flight)", config.url, config.app_key,
             config.batch_records, config.concurrency)
    await forwarder.run(stop_event)
    return forwarder.stats


def summarize(items: Sequence[OutboxItem]) -> list[dict]:
    """Dead letters (or any outbox items) as JSON-ready dicts, for `lmg forward dead-letters`."""
    return [{
        "id": item.id, "record_id": api.record_id(item.punch.device_serial, item.punch.record_no),
        "device_serial": item.punch.device_serial, "record_no": item.punch.record_no,
        "punch_time_ms": item.punch.punch_time_ms, "attempts": item.attempts, "reason": item.last_error,
        "created_at_ms": item.created_at_ms,
    } for item in items]
