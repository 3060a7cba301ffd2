"""The gateway's Prometheus metrics: every family, and the fold that fills them.

`GatewayMetrics(gateway)` creates the families (`Families`, each with its help text) and
moves the gateway's plain-Python figures into them in `fold()`: once a second from a
loop-wide task and again at every scrape (`lmg.server.metrics.exposition`). The sources:

| source | kept by | folded into |
|---|---|---|
| `Gateway.counters` (a Counter of event names) | gateway, links, on connection events | the counters named in `COUNTER_NAMES` / `COUNTER_PREFIXES` |
| `Gateway.connections` ((transport, state) -> open now) | gateway | `lmg_connections` |
| `Gateway.frames_in` / `frames_out` (message class -> frames) | link, per frame | `lmg_frames_in_total`, `lmg_frames_out_total`, `lmg_decode_errors_total` |
| `Tally`s: ack latency, commit batch size and time, loop lag | link, the group commit's observer, `_lag_loop` | the histograms |
| the store's group commit and SQLite writer | storage | the queue gauges, read at fold time |
| `store.outbox_status(now)` | `_outbox_loop`, every `OUTBOX_READ_S` or less often | the outbox gauges (cached, never read per scrape) |
| `store.count_commands_by_state()` | `_commands_loop`, as the outbox | `lmg_downlink_commands` (cached) |
| `ForwarderStats` | the forwarder inside `lmg serve` | `lmg_forward_*` |

Counters fold by difference: the fold remembers what it already added for each source key
and adds the rest, so the sources are never reset and tests can read them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import disable_created_metrics
from prometheus_client.multiprocess import MultiProcessCollector

from lmg.protocol import ProtocolError
from lmg.server.logs import RepeatedWarnings
from lmg.server.metrics.tally import BATCH_RECORDS_BUCKETS, LATENCY_BUCKETS_S, LOOP_LAG_BUCKETS_S, BatchTally, Tally
from lmg.storage import CommandState, OutboxStatus, StoreError

if TYPE_CHECKING:
    from lmg.server.gateway.gateway import Gateway

log = logging.getLogger("lmg.metrics")

# `_created` series would double the page; Prometheus sees a restart as a counter reset anyway.
disable_created_metrics()

FOLD_INTERVAL_S = 1.0  # a scrape folds anyway; between scrapes the figures are at most this old
LAG_INTERVAL_S = 0.25  # four samples a second: a stall of 50 ms shows, and the wake-ups cost nothing
OUTBOX_READ_S = 10.0  # the outbox count scans the pending rows: at most this often, never per scrape
# ... and at most 1/OUTBOX_COST_FACTOR of the time: counting 300,000 pending rows on SQLite
# took 70 ms of CPU (2-core VM), so a backlog of millions is read every ~30 s or more
# instead of costing the node several percent of a core.
OUTBOX_COST_FACTOR = 200
OUTBOX_READ_TIMEOUT_S = 5.0  # a store this slow keeps the last figures rather than piling up reads
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Families:
    """Every metric family of a gateway process, with its help text.

    `registry` None: multiprocess mode (values go to files under PROMETHEUS_MULTIPROC_DIR
    and `MultiProcessCollector` adds them up); gauges then say how: `livesum` for what each
    process holds (connections, its queues), `mostrecent` for what every process reads
    from the shared store (the outbox).
    """

    def __init__(self, registry: CollectorRegistry | None):
        r = registry

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, list(labels), registry=r)

        def gauge(name: str, doc: str, labels: Iterable[str] = (), mode: str = "livesum") -> Gauge:
            return Gauge(name, doc, list(labels), registry=r, multiprocess_mode=mode)  # type: ignore[arg-type]

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, registry=r, buckets=buckets)

        # connections and sessions
        self.connections = gauge(
            "lmg_connections", "Terminal connections open now, by transport (tcp, ws) and state (unauthenticated: "
            "before a successful AUTH; authenticated).", ("transport", "state"))
        self.connections_opened = counter(
            "lmg_connections_opened", "Terminal connections accepted, by transport.", ("transport",))
        self.connections_closed = counter(
            "lmg_connections_closed", "Terminal connections closed, by reason: the session's result code in lower "
            "case (heartbeat_timeout, takeover, bad_signature, ...), peer_closed when the terminal or the network "
            "closed first, websocket_* (websocket_message_too_big, ...) for WebSocket protocol violations.", ("reason",))
        self.connections_refused = counter(
            "lmg_connections_refused", "Connections refused before a session, by reason (server_busy: connection "
            "limits; rate_limited: accept rate; shutting_down).", ("reason",))
        self.slow_readers_closed = counter(
            "lmg_slow_readers_closed", "Connections closed because the terminal left more than max_unsent_bytes "
            "of answers unread (also counted in lmg_connections_closed as server_busy).")
        self.takeovers = counter(
            "lmg_takeovers", "Sessions ended because a newer session of the same device authenticated.")
        self.sessions_ended = counter(
            "lmg_sessions_ended", "Sessions ended by an operator or another process (device disabled, secret "
            "rotated, closed), by reason.", ("reason",))
        self.authentications = counter(
            "lmg_authentications", "Authentication results: ok, or the refusal (bad_signature, unknown_device, "
            "device_disabled, locked_out).", ("result",))
        self.lockouts = counter(
            "lmg_lockouts", "Lockouts started by failed authentications, by scope (pair: one serial at one address; "
            "address: every serial from an address but those that authenticated from it before).", ("scope",))
        self.audit_rows = counter(
            "lmg_audit_rows", "Audit rows the gateway wrote, by event: auth_failed (at most two per source "
            "address and auth_audit_window_s, with a count), auth_lockout (one per lockout), punch_conflict (record "
            "numbers reused with other content, one per store call).", ("event",))
        # frames
        self.frames_in = counter(
            "lmg_frames_in", "Whole, checksum-verified frames decoded from terminals, by message type.", ("type",))
        self.frames_out = counter(
            "lmg_frames_out", "Frames sent to terminals, by message type.", ("type",))
        self.decode_errors = counter(
            "lmg_decode_errors", "Frames that could not be decoded, by kind (bad_checksum, frame_too_large, "
            "malformed_body, not_a_frame, unsupported_message, unsupported_version; websocket_* for a WebSocket "
            "message that is not a frame).", ("kind",))
        # punches and photos
        self.punches_stored = counter(
            "lmg_punches_stored", "Punch records committed to the store for the first time (and entered in the "
            "outbox).")
        self.punches_duplicate = counter(
            "lmg_punches_duplicate", "Punch records a terminal sent again that the store already held "
            "(acknowledged as DUPLICATE, not stored again).")
        self.punches_rejected = counter(
            "lmg_punches_rejected", "Punch records refused, by reason (the result code in the ACK: invalid_worker_id, "
            "time_in_future, time_too_old, invalid_direction, invalid_verify_mode, invalid_temperature).",
            ("reason",))
        self.punches_conflicting = counter(
            "lmg_punches_conflicting", "Punch records answered DUPLICATE whose content differs from the stored record "
            "of that number (a terminal reusing record numbers: the new content is not stored); each store call's "
            "conflicts are also an audit row, punch_conflict.")
        self.photo_bytes_stored = counter(
            "lmg_photo_bytes_stored", "Bytes of photo chunks appended to uploads (chunks that advanced an upload).")
        self.photos_stored = counter(
            "lmg_photos_stored", "Photos completed and verified against their SHA-256.")
        self.photo_refusals = counter(
            "lmg_photo_refusals", "PHOTO_CHUNKs and PHOTO_QUERYs refused before the store, by reason "
            "(photo_not_announced: no stored punch of the device announces that photo; photo_too_large; "
            "photo_uploads_busy: the device has photo_uploads_per_device uploads in progress).", ("reason",))
        self.partial_photos_pruned = counter(
            "lmg_partial_photos_pruned", "Partial photo uploads deleted after photo_partial_ttl_ms without progress.")
        # the store
        self.group_commit_batch_records = histogram(
            "lmg_group_commit_batch_records", "Records per group-commit batch, observed once per committed batch.",
            BATCH_RECORDS_BUCKETS)
        self.group_commit_seconds = histogram(
            "lmg_group_commit_seconds", "Seconds one group-commit batch took to write and commit (one transaction; "
            "SQLite: one round trip to the writer process, fsync included), observed once per committed batch.",
            LATENCY_BUCKETS_S)
        self.ack_latency_seconds = histogram(
            "lmg_ack_latency_seconds", "Seconds from a connection submitting a store call (the punch frames one "
            "read brought, grouped) to writing that call's answers (ACKs, or NACKs if the store failed); observed "
            "once per store call, not per punch.", LATENCY_BUCKETS_S)
        self.group_commit_queued_records = gauge(
            "lmg_group_commit_queued_records", "Punch records waiting for a group-commit batch (bounded by "
            "max_queued_records).")
        self.sqlite_writer_queue_depth = gauge(
            "lmg_sqlite_writer_queue_depth", "Requests sent to the SQLite writer process and not yet answered "
            "(0 on PostgreSQL).")
        self.store_failures = counter(
            "lmg_store_failures", "Store calls that failed, by operation (store_punches: answered NACK "
            "STORE_UNAVAILABLE; device_lookup; presence_flush; audit; downlink: a command's send or outcome, or a face's "
            "progress, not written).", ("operation",))
        self.presence_flushes = counter(
            "lmg_presence_flushes", "Batched writes of online state and last-seen times.")
        # the outbox and forwarding
        self.outbox_pending = gauge(
            "lmg_outbox_pending", "Punches in the outbox not yet accepted by the provincial system (read from the "
            "store every 10 s, less often while counting them is slow).", mode="mostrecent")
        self.outbox_oldest_age_seconds = gauge(
            "lmg_outbox_oldest_age_seconds", "Age in seconds of the oldest punch in the outbox when it was last read "
            "(every 10 s or less often, as lmg_outbox_pending; 0 when empty).", mode="mostrecent")
        self.outbox_dead_letters = gauge(
            "lmg_outbox_dead_letters", "Outbox records the provincial system rejected as invalid, kept for "
            "`lmg forward dead-letters` (read with lmg_outbox_pending).", mode="mostrecent")
        self.forward_attempts = counter(
            "lmg_forward_attempts", "Requests to the provincial system by this node's forwarder, by result (ok: "
            "HTTP 200; http_STATUS such as http_500; timeout; connection).", ("result",))
        self.forward_records = counter(
            "lmg_forward_records", "Outbox records the forwarder settled, by result (accepted: the province holds "
            "it; retried: failed back with a backoff; held_back: not sent after an earlier punch of its device "
            "failed).", ("result",))
        self.forward_dead_letters = counter(
            "lmg_forward_dead_letters", "Records this node's forwarder made dead letters (rejected as invalid by "
            "the province).")
        self.forward_photos_sent = counter(
            "lmg_forward_photos_sent", "Photos sent to the provincial system.")
        self.forward_warnings = counter(
            "lmg_forward_warnings", "Versions of supervision warnings the forwarder settled, by result (accepted: the "
            "province holds it; rejected: refused as invalid or not sendable, logged as an error and not sent again "
            "until the warning changes; retried: its request failed and is tried again).", ("result",))
        # downlink, the event loop, everything else
        self.downlink_commands = gauge(
            "lmg_downlink_commands", "Operator commands in the store by state (queued, sent, acked, failed, expired, "
            "cancelled), all devices; read from the store every 10 s or less often, never per scrape.", ("state",),
            mode="mostrecent")
        self.downlink_command_outcomes = counter(
            "lmg_downlink_command_outcomes", "Operator commands this node settled, by state: acked (the terminal's "
            "reply), failed (a NACK, no answer after command_max_sends sends, or arguments that could not be "
            "built), expired (marked by this node's sweep).", ("state",))
        self.downlink_resends = counter(
            "lmg_downlink_resends", "Commands and roster frames sent again after command_timeout_s without an "
            "answer.")
        self.downlink_roster_steps = counter(
            "lmg_downlink_roster_steps", "Roster changes sent to terminals, by kind (add, update, remove; remove_all: "
            "the first step of a full resync); resends included.", ("kind",))
        self.downlink_face_bytes = counter(
            "lmg_downlink_face_bytes", "Bytes of face photos sent to terminals in FACE_CHUNKs (data only; resends "
            "included).")
        self.downlink_roster_syncs = counter(
            "lmg_downlink_roster_syncs", "Roster syncs of a terminal that ended, by result (done: the terminal holds "
            "the project's version; failed: a refusal or no answer stopped it until the next change or session).",
            ("result",))
        self.downlink_answers_unmatched = counter(
            "lmg_downlink_answers_unmatched", "Answers from terminals (ACK, NACK, replies) whose ref_seq named no "
            "command in flight: late answers to a command given up or answered already.")
        self.event_loop_lag_seconds = histogram(
            "lmg_event_loop_lag_seconds", "Seconds a timer of the event loop fired late (a task sleeping 0.25 s "
            "observes its overshoot): how long every connection's work had to wait.", LOOP_LAG_BUCKETS_S)
        self.events = counter(
            "lmg_gateway_events", "Gateway events without a family of their own, by name (none is expected: a name "
            "here means a counter was added without a metric).", ("event",))


# --- where each of Gateway.counters goes ---------------------------------------------------------

# (family attribute, labels) per exact counter name; None: not exported on purpose.
COUNTER_NAMES: dict[str, tuple[str, dict[str, str]] | None] = {
    "authenticated": ("authentications", {"result": "ok"}),
    "takeovers": ("takeovers", {}),
    "session_announcements": None,  # about 10 a second per process on PostgreSQL: a cost, not an event to watch
    "slow_reader_closed": ("slow_readers_closed", {}),
    "punches_stored": ("punches_stored", {}),
    "punches_duplicate": ("punches_duplicate", {}),
    "punches_conflicting": ("punches_conflicting", {}),
    "punches_committed": None,  # the sum of lmg_punches_{stored,duplicate,rejected}_total: not twice
    "photo_bytes_stored": ("photo_bytes_stored", {}),
    "photos_stored": ("photos_stored", {}),
    "store_failures": ("store_failures", {"operation": "store_punches"}),
    "device_lookup_failures": ("store_failures", {"operation": "device_lookup"}),
    "presence_flush_failures": ("store_failures", {"operation": "presence_flush"}),
    "audit_failures": ("store_failures", {"operation": "audit"}),
    "presence_flushes": ("presence_flushes", {}),
    "partial_photos_pruned": ("partial_photos_pruned", {}),
    "downlink_store_failures": ("store_failures", {"operation": "downlink"}),
    "downlink_resends": ("downlink_resends", {}),
    "downlink_face_bytes": ("downlink_face_bytes", {}),
    "downlink_answers_unmatched": ("downlink_answers_unmatched", {}),
}
# (prefix, family attribute, label): the rest of the name is the label's value.
COUNTER_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("connections_opened_", "connections_opened", "transport"),
    ("closed_", "connections_closed", "reason"),
    ("refused_", "connections_refused", "reason"),
    ("auth_failed_", "authentications", "result"),
    ("lockouts_", "lockouts", "scope"),
    ("audit_rows_", "audit_rows", "event"),
    ("photo_refused_", "photo_refusals", "reason"),
    ("sessions_ended_", "sessions_ended", "reason"),
    ("decode_error_", "decode_errors", "kind"),
    ("punches_rejected_", "punches_rejected", "reason"),
    ("downlink_commands_", "downlink_command_outcomes", "state"),
    ("downlink_roster_steps_", "downlink_roster_steps", "kind"),
    ("downlink_roster_syncs_", "downlink_roster_syncs", "result"),
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _store_parts(store: Any) -> tuple[Any, Any]:
    """The store's group commit and SQLite writer process, or None for what it has not.

    A reach into storage/backend.py (`_group`) and storage/sqlite.py (`_writer`), read by
    duck type: the `Store` API has no accessor for them yet, and those files are the
    storage layer's to change. Wrappers that delegate attributes (tests) are seen through.
    """
    group = getattr(store, "_group", None)
    writer = getattr(store, "_writer", None)
    return (group if hasattr(group, "queued_records") else None,
            writer if hasattr(writer, "queue_depth") else None)


class GatewayMetrics:
    """The Prometheus side of one gateway process; `fold()` and `render()` are what a scrape does."""

    def __init__(self, gateway: Gateway, *, multiprocess: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.gateway = gateway
        self.multiprocess = MULTIPROC_ENV in os.environ if multiprocess is None else multiprocess
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=False)
        self.families = Families(self.registry)
        self.clock = clock
        # plain-Python accumulators the hot path writes (tally.py)
        self.ack_latency = Tally(LATENCY_BUCKETS_S)
        self.commit_records = Tally(BATCH_RECORDS_BUCKETS)
        self.commit_seconds = Tally(LATENCY_BUCKETS_S)
        self.loop_lag = Tally(LOOP_LAG_BUCKETS_S)
        self.outbox: OutboxStatus | None = None  # the last figures read (_outbox_loop)
        self.commands: dict[CommandState, int] | None = None  # the last command counts read (_commands_loop)
        self.repeats = RepeatedWarnings()
        self._folded: dict[Any, float] = {}  # source key -> amount already added to its counter
        self._children: dict[Any, Any] = {}  # source key -> the counter child it folds into
        self._group, self._writer = _store_parts(gateway.store)
        if self._group is not None:
            self._group.observer = BatchTally(self.commit_records, self.commit_seconds)
        for state in CommandState:
            self.families.downlink_commands.labels(state.value).set(0)
        for transport in ("tcp", "ws"):  # present from the start, so a dashboard shows 0, not nothing
            for connection_state in ("unauthenticated", "authenticated"):
                self.families.connections.labels(transport, connection_state).set(0)

    def close(self) -> None:
        """Stop observing the store (it may outlive the gateway)."""
        if self._group is not None and isinstance(self._group.observer, BatchTally):
            self._group.observer = None

    # -- the fold -------------------------------------------------------------------------
    def fold(self) -> None:
        """Move every figure accumulated since the last fold into the families."""
        gateway, f = self.gateway, self.families
        for (transport, state), count in gateway.connections.items():
            f.connections.labels(transport, state).set(count)
        for name, value in list(gateway.counters.items()):
            self._add(("counter", name), value, self._counter_child)
        for source, family in ((gateway.frames_in, f.frames_in), (gateway.frames_out, f.frames_out)):
            if source is not None:
                for cls, value in list(source.items()):
                    self._add((family, cls), value, self._frame_child)
        stats = gateway.forward_stats
        if stats is not None:
            for result, value in list(stats.attempts.items()):
                self._add(("forward_attempt", result), value, lambda key: f.forward_attempts.labels(key[1]))
            for result, value in (("accepted", stats.acked), ("retried", stats.retried),
                                  ("held_back", stats.held_back)):
                self._add(("forward_records", result), value, lambda key: f.forward_records.labels(key[1]))
            self._add(("forward_dead_letters",), stats.dead_lettered, lambda key: f.forward_dead_letters)
            self._add(("forward_photos_sent",), stats.photos_sent, lambda key: f.forward_photos_sent)
            for result, value in list(stats.warnings.items()):
                self._add(("forward_warnings", result), value, lambda key: f.forward_warnings.labels(key[1]))
        _add_tally(f.ack_latency_seconds, self.ack_latency)
        _add_tally(f.group_commit_batch_records, self.commit_records)
        _add_tally(f.group_commit_seconds, self.commit_seconds)
        _add_tally(f.event_loop_lag_seconds, self.loop_lag)
        f.group_commit_queued_records.set(self._group.queued_records if self._group is not None else 0)
        f.sqlite_writer_queue_depth.set(self._writer.queue_depth if self._writer is not None else 0)
        outbox = self.outbox
        if outbox is not None:
            f.outbox_pending.set(outbox.pending)
            f.outbox_oldest_age_seconds.set(outbox.oldest_age_s)
            f.outbox_dead_letters.set(outbox.dead_letters)
        commands = self.commands
        if commands is not None:
            for state, count in commands.items():
                f.downlink_commands.labels(state.value).set(count)

    def _add(self, key: Any, value: float, child_for: Callable[[Any], Any]) -> None:
        done = self._folded.get(key, 0)
        if value > done:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = child_for(key)
            if child is not None:
                child.inc(value - done)
            self._folded[key] = value

    def _counter_child(self, key: tuple[str, str]) -> Any:
        name = key[1]
        f = self.families
        if name in COUNTER_NAMES:
            target = COUNTER_NAMES[name]
            if target is None:
                return None
            family, labels = target
            metric = getattr(f, family)
            return metric.labels(**labels) if labels else metric
        for prefix, family, label in COUNTER_PREFIXES:
            if name.startswith(prefix):
                return getattr(f, family).labels(**{label: name[len(prefix):]})
        return f.events.labels(name)

    def _frame_child(self, key: tuple[Counter, type]) -> Any:
        family, cls = key
        if issubclass(cls, ProtocolError):
            return self.families.decode_errors.labels(_snake(cls.__name__))
        msg_type = getattr(cls, "msg_type", None)
        return family.labels(msg_type.name.lower() if msg_type is not None else _snake(cls.__name__))

    # -- rendering ------------------------------------------------------------------------
    def render(self) -> bytes:
        """The text exposition: this process's families, or in multiprocess mode the sum
        over every process writing to PROMETHEUS_MULTIPROC_DIR."""
        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry)
        return generate_latest(registry)

    content_type = CONTENT_TYPE_LATEST

    # -- loop-wide tasks ------------------------------------------------------------------
    def tasks(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
        """The fold, the event-loop lag sampler and the outbox reader, as tasks of `loop`;
        the gateway cancels them at shutdown."""
        return [loop.create_task(self._fold_loop()), loop.create_task(self._lag_loop()),
                loop.create_task(self._outbox_loop()), loop.create_task(self._commands_loop())]

    async def _fold_loop(self) -> None:
        while True:
            await asyncio.sleep(FOLD_INTERVAL_S)
            self.fold()

    async def _lag_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_INTERVAL_S)
            self.loop_lag.observe(max(0.0, loop.time() - start - LAG_INTERVAL_S))

    async def _outbox_loop(self) -> None:
        while True:
            started = self.clock()
            await self.read_outbox()
            await asyncio.sleep(outbox_interval_s(self.clock() - started))

    async def _commands_loop(self) -> None:
        while True:
            started = self.clock()
            await self.read_commands()
            await asyncio.sleep(outbox_interval_s(self.clock() - started))

    async def read_commands(self) -> None:
        """Read the command counts by state now (the loop calls this as often as the outbox
        figures: the count scans the commands table); on a store failure the last counts stay."""
        try:
            self.commands = await asyncio.wait_for(self.gateway.store.count_commands_by_state(),
                                                   OUTBOX_READ_TIMEOUT_S)
        except (StoreError, asyncio.TimeoutError) as exc:
            self.repeats.warning(log, "commands", "command counts not read (the metrics keep the last ones): %s",
                                 exc or "timed out")

    async def read_outbox(self) -> None:
        """Read the outbox figures now (the loop calls this every OUTBOX_READ_S); on a store
        failure the last figures stay."""
        try:
            self.outbox = await asyncio.wait_for(self.gateway.store.outbox_status(self.gateway.now_ms()),
                                                 OUTBOX_READ_TIMEOUT_S)
        except (StoreError, asyncio.TimeoutError) as exc:
            self.repeats.warning(log, "outbox", "outbox figures not read (the metrics keep the last ones): %s",
                                 exc or "timed out")


def outbox_interval_s(read_s: float) -> float:
    """Seconds until the next outbox read after one that took `read_s`: OUTBOX_READ_S, or
    longer when reading is slow, so the reads take at most 1/OUTBOX_COST_FACTOR of the time."""
    return max(OUTBOX_READ_S, read_s * OUTBOX_COST_FACTOR)


def families_table() -> str:
    """The README's table of every family: name as exposed, type, labels, help text."""
    rows = ["| metric | type | labels | what it counts |", "|---|---|---|---|"]
    for metric in vars(Families(CollectorRegistry(auto_describe=False))).values():
        (family,) = metric.describe()
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = ", ".join(f"`{label}`" for label in metric._labelnames)  # noqa: SLF001 - not in describe()
        rows.append(f"| `{name}` | {family.type} | {labels} | {family.documentation} |")
    return "\n".join(rows) + "\n"


TABLE_START, TABLE_END = "<!-- metrics table: generated -->", "<!-- end of metrics table -->"


def update_document(text: str) -> str:
    """`text` with the table between its markers rendered anew."""
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_START}\n{families_table()}{TABLE_END}{tail}"


def _add_tally(histogram: Histogram, tally: Tally) -> None:
    """Add what `tally` accumulated to `histogram`, bucket by bucket.

    Uses prometheus-client's per-bucket values (`_buckets`, non-cumulative, +Inf last, as
    `Tally.counts`) and `_sum`: there is no public call that adds many observations at
    once, and one `observe` per sample is the cost the tally exists to avoid.
    tests/server/metrics/test_fold.py checks the result equals observing each value.
    """
    counts, total = tally.take()
    buckets = histogram._buckets  # noqa: SLF001 - see the docstring
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)
    if total:
        histogram._sum.inc(total)  # noqa: SLF001


if __name__ == "__main__":  # python -m lmg.server.metrics.fold README.md
    import sys
    from pathlib import Path

    target = Path(sys.argv[1])
    target.write_text(update_document(target.read_text(encoding="utf-8")), encoding="utf-8")
