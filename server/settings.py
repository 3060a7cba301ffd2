"""One settings object for a gateway node: its listeners, its sessions, its store, its forwarder.

`Settings` is four sections, each defined once, beside the code it configures:

    section   class                                          keys
    gateway   GatewaySettings (here)                         tcp, max_connections, presence_flush_s, ...
    session   SessionLimits (server/gateway/session.py)      heartbeat_interval_s, max_batch_records, ...
    store     StoreConfig (storage/config.py)                group_commit_max_records, sqlite_readers, ...
    forward   ForwarderConfig (server/forwarding/config.py)  forward_url, forward_concurrency, ...

Every field of a section is a key with one name used three ways: `heartbeat_interval_s` in
the TOML file given by `--config` (or `LMG_CONFIG`), `LMG_HEARTBEAT_INTERVAL_S` in the
environment, `--heartbeat-interval-s` on the command line. Flags win, then the
environment, then the file, then the default. A field's `why` metadata is its reason and
its help text (`lmg serve --help`, docs/settings.md, which tests/server/test_settings.py
checks against this). A key's default lives only in its field.

Rules: keys are unique across sections (checked at import); a wrong key or value stops
the start with a `SettingsError` naming the key and where the value came from; secrets
(`forward_app_secret`) are never printed. This module imports the sections, and none of
them imports it, so there is no cycle.
"""

from __future__ import annotations

import argparse
import os
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lmg.server.downlink.roster import FACE_CHUNK_OVERHEAD, MAX_FACE_CHUNK_BYTES
from lmg.server.forwarding.config import PREFIX as FORWARD_PREFIX
from lmg.server.forwarding.config import ForwarderConfig
from lmg.server.gateway.session import SessionLimits
from lmg.storage.config import StoreConfig
from lmg.storage.url import DEFAULT_DATA_DIR, DEFAULT_SQLITE_NAME


class SettingsError(ValueError):
    """A setting has a value the gateway cannot use; the message says which, whence and why."""


def key(default: Any, why: str) -> Any:
    """A settings key of this section: its default and the reason for it."""
    return field(default=default, metadata={"why": why})


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "text")  # server/logs.py has the same list


@dataclass(frozen=True)
class GatewaySettings:
    """Where a node keeps its data, what it listens on, and the limits of its connections."""

    data_dir: str = key("./" + DEFAULT_DATA_DIR, "data directory: the SQLite database and photos; created if missing")
    store: str = key("", "store URL; empty means SQLite at data_dir/lmg.db; postgresql://HOST/DB?schema=NAME for "
                         "several nodes")
    tcp: str = key("0.0.0.0:9100", "TCP listener for terminals, HOST:PORT; empty turns it off")
    ws: str = key("0.0.0.0:9101", "WebSocket listener for terminals (path /terminal), HOST:PORT; empty turns it off")
    admin: str = key("127.0.0.1:9180", "admin HTTP listener (/healthz, /readyz), HOST:PORT; loopback unless asked "
                                       "otherwise; empty turns it off")
    tls_cert: str = key("", "PEM certificate chain; with tls_key turns TLS on for TCP and WebSocket")
    tls_key: str = key("", "PEM private key of tls_cert")
    # Behind HAProxy in TCP mode every terminal has the balancer's address; the header
    # (send-proxy-v2) carries the terminal's, for the per-address limits, lockouts and logs.
    tcp_proxy_protocol: bool = key(False, "every TCP connection starts with a PROXY protocol header (v1 or v2, "
                                          "HAProxy send-proxy-v2) whose source address is the terminal's; only "
                                          "where nothing but the balancer reaches the TCP listener")
    max_connections: int = key(100_000, "connections on all listeners together (also bounded by the fd limit)")
    max_connections_per_address: int = key(5_000, "connections from one address: a site behind NAT has tens of "
                                                   "terminals, load tools more")
    accept_rate: float = key(5_000.0, "new connections per second (token bucket): 20,000 reconnects in 4 s")
    accept_burst: int = key(10_000, "new connections taken at once before accept_rate applies")
    # --- lockout of failed authentications (server/gateway/lockout.py, docs/protocol.md 5.2) ---
    # A terminal with a mistyped secret fails at every reconnect (every 1-60 s); five tries
    # are enough to rule out a glitch, and the lock is of that serial at that address only.
    lockout_pair_failures: int = key(5, "failed authentications in a row of one serial from one address before "
                                        "that serial is locked out at that address (never elsewhere, never another "
                                        "serial)")
    # A locked terminal's retries are not counted, so one bad terminal adds ~5-10 failures
    # an hour; 50 in 10 min is a scan of serials or secrets, not a site's mistakes.
    lockout_address_failures: int = key(50, "failed authentications from one address within lockout_address_window_s "
                                            "before the address is locked out (serials that authenticated from it "
                                            "before are spared)")
    lockout_address_window_s: float = key(600.0, "seconds over which failures from one address are counted")
    lockout_base_s: float = key(60.0, "seconds of a first lockout; each further lockout of the same key doubles it")
    # An hour at most: a device fixed on site recovers within the same shift.
    lockout_max_s: float = key(3600.0, "longest lockout, seconds (the doubling stops here)")
    # Repeated failures from one address are written as one audit row per window with a
    # count: 600 HELLOs in 0.7 s were 600 rows before.
    auth_audit_window_s: float = key(60.0, "seconds over which failed authentications from one address are "
                                           "aggregated into one audit row with a count")
    max_unsent_bytes: int = key(256 * 1024, "bytes of answers a terminal may leave unread (~7,000 ACKs); past it "
                                            "the connection is closed")
    # A terminal's window of punches (8 in our simulator, a few in real firmware) fits, a
    # flood does not.
    held_frames: int = key(64, "frames held per connection while the store works before reading pauses "
                               "(back-pressure)")
    # Frames of a window arrive over several reads; with one call at a time each read after
    # the first waited a whole commit cycle. Records in flight per connection stay within
    # one group-commit batch (one frame may exceed it alone), so an offline backlog in big
    # batches gets no more of the store's shared queue than before and 100 terminals
    # uploading at once are not nacked.
    store_calls_per_connection: int = key(4, "store calls one connection may have in flight (its punches in "
                                             "flight stay within one group-commit batch)")
    presence_flush_s: float = key(5.0, "seconds between batched writes of online state and last-seen times (not "
                                       "one write per heartbeat)")
    # A terminal uploads one photo at a time; 4 x photo_max_bytes (8 MiB) is what one device
    # can make a node hold in partial uploads through new chunks (server/gateway/photo_slots.py).
    photo_uploads_per_device: int = key(4, "photo uploads one device may have in progress at once; a chunk of "
                                           "another photo is refused PHOTO_UPLOADS_BUSY")
    photo_upload_idle_s: float = key(600.0, "seconds without a chunk after which an upload no longer holds one of "
                                            "its device's photo_uploads_per_device slots")
    # Each photo frame is two quick reads on the shared PostgreSQL pool (pg_pool_max less the
    # punches' own, 6), then a share of one photo transaction (many photos each): 16 at once
    # make batches of up to 16 and leave room for presence, signals and the forwarder. 512
    # waiting chunks (at most 32 MiB) are about 2 s of work at the outage run's rate. 10,000
    # terminals x 2 h stored every photo in 631-726 s over three runs whatever the queue
    # (512 or 2,048, with or without a time bound): no setting won beyond that spread
    # (server/gateway/photo_intake.py).
    photo_store_concurrency: int = key(16, "photo chunks and queries one process has in the store at once; the "
                                           "others wait their turn")
    photo_chunks_waiting: int = key(512, "photo chunks and queries that may wait for a turn (at most 32 MiB of "
                                         "32 KiB chunks); past that one is refused PHOTO_UPLOADS_BUSY and the "
                                         "terminal tries later")
    # Terminals resend what is unanswered after 15 s (docs/protocol.md 6.2), as for punches:
    # a backstop for a store slowed below ~50 photos/s a process, where 512 would wait longer.
    photo_chunk_max_wait_s: float = key(10.0, "seconds the oldest waiting photo frame may have waited before new "
                                              "ones are refused PHOTO_UPLOADS_BUSY at once (an answer after the "
                                              "terminal's 15-s timeout makes it send the chunk again)")
    partial_photo_sweep_s: float = key(3600.0, "seconds between deletions of partial photo uploads older than "
                                               "photo_partial_ttl_ms")
    shutdown_grace_s: float = key(10.0, "seconds SIGTERM gives in-flight commits, their ACKs and the GOODBYEs")
    # Another process (`lmg device disable`, `lmg command send`, a roster import, another
    # worker or node) writes a signal in the store; PostgreSQL also notifies at once,
    # SQLite has only this poll (one indexed read).
    signal_poll_s: float = key(1.0, "seconds between reads of the store's signals (sessions to end, commands "
                                    "queued, rosters changed) made by another process; they take effect within this")
    # With several processes on PostgreSQL a device that reconnects elsewhere must lose its
    # old session here within a second (issue 17). One signal per authentication would
    # serialize a reconnect storm on the signals lock (one commit each, ~4 ms: 250 a second
    # for the whole cluster); one signal per process every 0.1 s carries them all.
    session_announce_s: float = key(0.1, "seconds between the signals that tell other processes and nodes which "
                                         "devices authenticated here (PostgreSQL only), so they end older sessions")
    # --- the downlink (docs/downlink.md) ---
    # docs/protocol.md 6.7 promises terminals at most 4 unanswered commands; a terminal
    # processes them in order, so a deeper window only queues more on its side.
    downlink_window: int = key(4, "commands and roster frames unanswered per terminal at once (docs/protocol.md "
                                  "6.7 promises terminals at most 4)")
    command_timeout_s: float = key(30.0, "seconds without an answer before a command or roster frame is sent again "
                                         "(docs/protocol.md 6.7)")
    # Three sends over 90 s outlast a terminal's reconnect (back-off up to 60 s); a command
    # that makes a terminal drop the connection every time fails instead of looping, as the
    # sends count across sessions.
    command_max_sends: int = key(3, "sends of a command before it fails with no answer, counted across sessions; "
                                    "a roster sync stops after as many")
    command_ttl_s: float = key(86_400.0, "seconds a queued command waits for its device before it expires, unless "
                                         "the operator gives another expiry (a day: a site offline overnight still "
                                         "gets it)")
    command_expiry_sweep_s: float = key(60.0, "seconds between marking commands past their expiry as expired in "
                                              "the store (one indexed update)")
    # 16 KiB: a 30 KB face is two chunks, and a chunk in flight delays a punch answer
    # behind it by 16 KiB of link time (0.8 s at 20 KB/s on 2G, 3 ms at 5 MB/s).
    face_chunk_bytes: int = key(16_384, "bytes of face photo per FACE_CHUNK (at most 65,535, and the frame must "
                                        "fit max_frame_size)")
    # Punches first: a FACE_CHUNK is written only while less than this is queued unsent on
    # the connection, so a punch answer never waits behind more than this and one chunk.
    downlink_max_unsent_bytes: int = key(65_536, "bytes of unsent output on a connection above which no FACE_CHUNK "
                                                 "is written (punch answers go ahead of faces)")
    # Punches first, across connections: downlink frames are written in turns of their own,
    # one per event-loop iteration, each at most this many bytes over all connections; a
    # punch arriving meanwhile waits behind one turn (64 KiB: ~0.5 ms of encoding and
    # writing on the 2-core VM of the benchmarks), not behind a whole roster push.
    downlink_turn_bytes: int = key(65_536, "bytes of downlink frames (faces, roster changes, commands) written per "
                                           "event-loop turn over all connections; punches are read and answered "
                                           "between turns")
    # A push costs the gateway ~17 ms of CPU per MB on the 2-core benchmark VM (construct
    # encoding, CRC, loopback writes) and the terminals as much to take in. 20 terminals
    # taking 500 faces of 30 KB while punching 200/s (`lmg bench downlink`, docs/downlink.md):
    # unlimited, 74 MB/s and the punch p99 3.6x the same run's baseline; 16 MiB/s, 550
    # faces/s (the push in 18 s) and 1.8x; 8 MiB/s, 277 faces/s and 1.2x.
    downlink_bytes_per_s: int = key(16 << 20, "bytes of downlink frames per second this process writes at most over "
                                              "all connections (0: no limit); caps the CPU a roster push takes from "
                                              "punches")
    # All terminals of a project are sent the same faces: one read of each serves them all.
    # 32 MiB holds 1,000 faces of 30 KB, a large site's whole roster.
    face_cache_bytes: int = key(32 << 20, "bytes of face photos kept in memory while being pushed to terminals "
                                          "(least recently used out); 0 reads every face from the store")
    # Entry and exit dates are days in China Standard Time: a worker joins or leaves the
    # roster within this after midnight (UTC+8). One indexed read when nothing changed.
    roster_dates_sweep_s: float = key(300.0, "seconds between checks of workers' entry and exit dates against "
                                             "today (China Standard Time)")
    # A gateway reads signals from the newest id at start, so a signal only needs to outlive
    # a poll interval and a listener restart; a day is generous and keeps the table small.
    signal_retention_s: float = key(86_400.0, "seconds a store signal (session end, command queued, roster "
                                              "changed) is kept before the hourly sweep deletes it")
    # A tombstone lets a terminal that was offline get a delta with the worker's removal;
    # once pruned, a terminal below the project's floor is emptied and sent the whole roster.
    roster_tombstone_retention_days: int = key(90, "days a departed worker's row is kept for deltas; terminals "
                                                   "offline longer get a full resync")
    # The largest body the API takes is a requeue of 10,000 ids (~70 KB); 1 MiB leaves room
    # and bounds what one request can make the node buffer.
    api_max_body_bytes: int = key(1024 * 1024, "largest request body the admin API reads, bytes")
    # --- the supervision console on the admin listener (docs/console.md) ---
    # 5 failures then 60 s, doubling to 1 h: a person who mistypes is back within a minute,
    # while guessing gets ~5 tries an hour once the window is at its cap (the gateway's own
    # terminal lockout, lockout_base_s/lockout_max_s, uses the same doubling).
    console_lockout_threshold: int = key(5, "consecutive failed console logins that lock the account")
    console_lockout_base_s: float = key(60.0, "first console lockout, seconds; each further lock doubles it")
    console_lockout_max_s: float = key(3600.0, "longest console lockout, seconds")
    # 30 minutes idle as the usual government-system rule; 12 h absolute: one working day,
    # after which a stolen cookie is worthless even if kept busy.
    console_session_idle_s: float = key(1800.0, "a console session ends after this many seconds without a request")
    console_session_max_s: float = key(43200.0, "a console session ends this many seconds after login, busy or not")
    console_secure_cookies: bool = key(False, "mark console cookies Secure even when the request came over plain "
                                              "HTTP (TLS ended at a proxy in front); under TLS they are always")
    # --- supervision of key personnel (docs/supervision.md) ---
    supervision: bool = key(True, "evaluate key-personnel warnings (issue 15) on a schedule in this process; off "
                                  "leaves it to `lmg supervision evaluate` (cron) or another node")
    supervision_rules_file: str = key("", "TOML rules file of the supervision of key personnel; empty means the "
                                          "packaged defaults (docs/supervision.md)")
    # A day's punches arrive all day and late backlogs at any time; an hour bounds how long a
    # disproved warning stays open and how late a level rises (escalation keeps due times,
    # so a late run gives the same levels). One run of a province month costs tens of
    # seconds of one core (bench/results/supervision-*.md), well under 1% at an hour.
    supervision_evaluate_s: float = key(3600.0, "seconds between evaluation runs (the month to date, the month just "
                                                "over, the months late backlogs touched) and escalations")
    log_level: str = key("info", "debug, info, warning or error")
    log_format: str = key("auto", "json (one JSON object per line, for a log collector), text (key=value, for a "
                                  "person) or auto: text when stderr is a terminal, JSON lines otherwise")
    # Measured in `lmg bench load` (metrics on against off in one run): within 5% of the
    # acks per server CPU-second; off is for that comparison and for nodes nobody scrapes.
    metrics: bool = key(True, "Prometheus metrics at the admin listener's /metrics; counting costs the hot path "
                              "a few dict additions per frame")

    def __post_init__(self) -> None:
        for name in ("tcp", "ws", "admin"):
            parse_host_port(name, getattr(self, name))
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: give both paths (PEM) or neither")
        if self.tcp_proxy_protocol and self.tls_cert:
            raise ValueError("tcp_proxy_protocol with tls_cert is not supported: the header comes before the TLS "
                             "handshake; end TLS at the balancer (then the gateway reads the header), or keep TLS "
                             "here and the balancer in plain TCP mode without send-proxy")
        for name in ("max_connections", "max_connections_per_address", "accept_rate", "accept_burst",
                     "lockout_pair_failures", "lockout_address_failures", "lockout_address_window_s",
                     "lockout_base_s", "lockout_max_s", "auth_audit_window_s", "photo_uploads_per_device",
                     "photo_upload_idle_s", "photo_store_concurrency", "photo_chunk_max_wait_s",
                     "max_unsent_bytes", "held_frames", "store_calls_per_connection", "presence_flush_s",
                     "partial_photo_sweep_s", "shutdown_grace_s", "signal_poll_s", "session_announce_s",
                     "api_max_body_bytes", "console_lockout_threshold", "console_lockout_base_s",
                     "console_lockout_max_s", "console_session_idle_s", "console_session_max_s",
                     "downlink_window", "command_timeout_s", "command_max_sends", "command_ttl_s",
                     "command_expiry_sweep_s", "face_chunk_bytes", "downlink_max_unsent_bytes", "roster_dates_sweep_s",
                     "signal_retention_s", "roster_tombstone_retention_days",
                     "downlink_turn_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0, got {getattr(self, name)!r}")
        if self.lockout_max_s < self.lockout_base_s:
            raise ValueError(f"lockout_max_s ({self.lockout_max_s}) must not be below lockout_base_s "
                             f"({self.lockout_base_s})")
        if self.console_lockout_max_s < self.console_lockout_base_s:
            raise ValueError(f"console_lockout_max_s ({self.console_lockout_max_s}) must not be below "
                             f"console_lockout_base_s ({self.console_lockout_base_s})")
        if self.supervision_evaluate_s <= 0:
            raise ValueError(f"supervision_evaluate_s must be greater than 0, got {self.supervision_evaluate_s!r}")
        if self.face_chunk_bytes > MAX_FACE_CHUNK_BYTES:
            raise ValueError(f"face_chunk_bytes must be at most {MAX_FACE_CHUNK_BYTES} (a FACE_CHUNK's data length is "
                             f"a u16), got {self.face_chunk_bytes}")
        if self.downlink_bytes_per_s < 0:
            raise ValueError(f"downlink_bytes_per_s must not be negative (0: no limit), got {self.downlink_bytes_per_s}")
        if self.photo_chunks_waiting < 0:
            raise ValueError(f"photo_chunks_waiting must not be negative (0: refuse when every turn is taken), "
                             f"got {self.photo_chunks_waiting}")
        if self.face_cache_bytes < 0:
            raise ValueError(f"face_cache_bytes must not be negative, got {self.face_cache_bytes}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level must be {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}, "
                             f"got {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be auto, json or text, got {self.log_format!r}")


@dataclass(frozen=True)
class Settings:
    """All settings of one node; build it with `load_settings` or `Settings.from_keys`."""

    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    session: SessionLimits = field(default_factory=SessionLimits)
    store: StoreConfig = field(default_factory=StoreConfig)
    forward: ForwarderConfig = field(default_factory=ForwarderConfig)

    def __post_init__(self) -> None:
        live_ms = self.session.heartbeat_interval_s * self.session.heartbeat_misses * 1000 \
            + int(self.gateway.presence_flush_s * 1000)
        if self.store.presence_stale_ms < live_ms:
            raise ValueError(f"presence_stale_ms = {self.store.presence_stale_ms} would show live devices offline: "
                             f"they are heard every heartbeat_interval_s and written every presence_flush_s; set it "
                             f"to at least heartbeat_interval_s x heartbeat_misses + presence_flush_s = {live_ms} ms")
        frame = self.gateway.face_chunk_bytes + FACE_CHUNK_OVERHEAD
        if frame > self.session.max_frame_size:
            raise ValueError(f"face_chunk_bytes = {self.gateway.face_chunk_bytes} makes {frame}-byte FACE_CHUNK frames, "
                             f"above max_frame_size = {self.session.max_frame_size}: lower face_chunk_bytes to at "
                             f"most {self.session.max_frame_size - FACE_CHUNK_OVERHEAD}")

    @classmethod
    def from_keys(cls, values: Mapping[str, Any]) -> Settings:
        """Settings from flat keys (`{"tcp": "127.0.0.1:0", "heartbeat_interval_s": 5}`),
        the rest at their defaults. Raises SettingsError for an unknown key or a bad value."""
        by_section: dict[str, dict[str, Any]] = {section.name: {} for section in SECTIONS}
        for name, value in values.items():
            spec = KEYS.get(name)
            if spec is None:
                raise SettingsError(f"unknown setting {name!r}; known settings: {', '.join(KEYS)}")
            by_section[spec.section][spec.field] = value
        built = {}
        for section in SECTIONS:
            try:
                built[section.name] = section.cls(**by_section[section.name])
            except (TypeError, ValueError) as exc:
                raise SettingsError(str(exc)) from None
        try:
            return cls(**built)
        except ValueError as exc:  # a rule across sections
            raise SettingsError(str(exc)) from None

    def store_url(self) -> str:
        return self.gateway.store or f"sqlite:///{Path(self.gateway.data_dir).resolve() / DEFAULT_SQLITE_NAME}"

    def tls_enabled(self) -> bool:
        return bool(self.gateway.tls_cert)


# --- the keys, derived from the sections ------------------------------------------------------


@dataclass(frozen=True)
class Section:
    name: str  # the attribute of Settings
    cls: type
    prefix: str  # prepended to a field's name to make its key


SECTIONS = (
    Section("gateway", GatewaySettings, ""),
    Section("session", SessionLimits, ""),
    Section("store", StoreConfig, ""),
    Section("forward", ForwarderConfig, FORWARD_PREFIX),
)

_TYPES: dict[Any, type] = {str: str, int: int, float: float, bool: bool}


@dataclass(frozen=True)
class Key:
    """One settings key: where it lives, its type, its default and why."""

    name: str
    section: str
    field: str
    type: type
    default: Any
    why: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "LMG_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def shown_default(self) -> str:
        return "<hidden>" if self.secret else repr(self.default)

    def coerce(self, value: Any, source: str) -> Any:
        """`value` as this key's type; SettingsError naming the key and `source` if it is not one."""
        kind = self.type
        try:
            if isinstance(value, bool) and kind is not bool:
                raise TypeError
            if kind is bool and isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                return lowered in ("1", "true", "yes", "on")
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return kind(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{self.name} = {value!r} from {source}: expected {kind.__name__}") from None


def _keys() -> dict[str, Key]:
    keys: dict[str, Key] = {}
    for section in SECTIONS:
        hints = typing.get_type_hints(section.cls)
        for spec in fields(section.cls):
            if not spec.init:
                continue  # derived from other fields
            name = section.prefix + spec.name
            if name in keys:
                raise RuntimeError(f"settings key {name!r} is defined in sections {keys[name].section} and "
                                   f"{section.name}")
            if "why" not in spec.metadata:
                raise RuntimeError(f"settings key {name!r} ({section.cls.__name__}.{spec.name}) has no reason (why)")
            keys[name] = Key(name, section.name, spec.name, _TYPES[hints[spec.name]], spec.default,
                             spec.metadata["why"], bool(spec.metadata.get("secret")))
    return keys


KEYS = _keys()
LOCATION_KEYS = ("data_dir", "store")  # what a command that only opens the store reads


def gather(flags: Mapping[str, Any] | None, env: Mapping[str, str], config_file: str | None,
           names: Iterable[str] = KEYS) -> dict[str, Any]:
    """Coerced values of the keys `names` from the TOML file < LMG_* < flags (None = not given).

    Every key of the file must be a known key, even one not in `names`.
    """
    wanted = set(names)
    values: dict[str, Any] = {}
    config_file = config_file or env.get("LMG_CONFIG") or None
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except OSError as exc:
            raise SettingsError(f"config file {path} cannot be read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
        for name, value in data.items():
            if name not in KEYS:
                raise SettingsError(f"config file {path}: unknown key {name!r}; `lmg serve --help` lists the keys")
            if name in wanted:
                values[name] = KEYS[name].coerce(value, f"config file {path}")
    for name in wanted:
        spec = KEYS[name]
        if spec.env in env:
            values[name] = spec.coerce(env[spec.env], f"environment variable {spec.env}")
    for name, value in (flags or {}).items():
        if value is not None and name in wanted:
            values[name] = KEYS[name].coerce(value, KEYS[name].flag)
    return values


def load_settings(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                  config_file: str | None = None, *, names: Iterable[str] = KEYS) -> Settings:
    """Defaults < TOML file < LMG_* variables < flags, for the keys `names` (the others
    keep their defaults); validated. Raises SettingsError."""
    env = os.environ if env is None else env
    return Settings.from_keys(gather(flags, env, config_file, names))


def add_flags(parser: argparse.ArgumentParser | Any, names: Iterable[str] = KEYS, *, suppress: bool = False) -> None:
    """One flag per key, its help the key's reason and default; values are left as given
    (strings) for `gather` to check and name. `suppress`: no attribute when not given
    (a subcommand repeating its parent's flags)."""
    for name in names:
        spec = KEYS[name]
        parser.add_argument(spec.flag, dest=name, default=argparse.SUPPRESS if suppress else None,
                            metavar=spec.type.__name__.upper(),
                            help=f"{spec.why} (default: {spec.shown_default()}; {spec.env})".replace("%", "%%"))


def flag_values(args: argparse.Namespace, names: Iterable[str] = KEYS) -> dict[str, Any]:
    """The key flags given on the command line (None for those not given)."""
    return {name: getattr(args, name, None) for name in names}


def parse_host_port(name: str, value: str) -> tuple[str, int] | None:
    """'HOST:PORT' -> (host, port); '' -> None (listener off). ValueError names the key."""
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{name} = {value!r}: use HOST:PORT, for example 0.0.0.0:9100 (or '' to turn it off)")
    return host.strip("[]") or "0.0.0.0", int(port)


def settings_table() -> str:
    """docs/settings.md's table: every key, its default, its variable and its reason."""
    rows = ["| key | default | environment | meaning |", "|---|---|---|---|"]
    for section in SECTIONS:
        rows.append(f"| **{section.name}** | | | |")
        for spec in KEYS.values():
            if spec.section == section.name:
                default = "(secret)" if spec.secret else f"`{spec.default!r}`"
                rows.append(f"| `{spec.name}` | {default} | `{spec.env}` | {spec.why} |")
    return "\n".join(rows) + "\n"


TABLE_START, TABLE_END = "<!-- settings table: generated -->", "<!-- end of settings table -->"


def update_document(text: str) -> str:
    """`text` (docs/settings.md) with the table between its markers rendered anew."""
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_START}\n{settings_table()}{TABLE_END}{tail}"


# --- where each value came from (`lmg config show`) -------------------------------------------


@dataclass(frozen=True)
class Sourced:
    """A key's effective value and where it came from: `source` is "default", "file",
    "environment" or "flag"; `where` is the file's path, the variable or the flag ("" for
    the default)."""

    value: Any
    source: str
    where: str = ""

    def __str__(self) -> str:
        return f"{self.source} {self.where}" if self.where else self.source


def explain(flags: Mapping[str, Any] | None, env: Mapping[str, str], config_file: str | None,
            names: Iterable[str] = KEYS) -> dict[str, Sourced]:
    """Per key of `names`, in KEYS order: the value `gather` would give it and its source.

    `gather` is asked once per layer (the file alone, the environment alone, the flags
    alone), so the coercion, the file's checks and their SettingsErrors are its own; the
    last layer holding a key wins, as in `gather`.
    """
    chosen = set(names)
    wanted = [name for name in KEYS if name in chosen]
    config_file = config_file or env.get("LMG_CONFIG") or None
    plain_env = {name: value for name, value in env.items() if name != "LMG_CONFIG"}
    layers = (("file", gather(None, {}, config_file, wanted)),
              ("environment", gather(None, plain_env, None, wanted)),
              ("flag", gather(flags, {}, None, wanted)))
    result = {name: Sourced(KEYS[name].default, "default") for name in wanted}
    for source, values in layers:
        for name, value in values.items():
            where = {"file": str(config_file), "environment": KEYS[name].env, "flag": KEYS[name].flag}[source]
            result[name] = Sourced(value, source, where)
    return result


if __name__ == "__main__":  # python -m lmg.server.settings docs/settings.md
    import sys

    target = Path(sys.argv[1])
    target.write_text(update_document(target.read_text(encoding="utf-8")), encoding="utf-8")
