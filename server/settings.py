"""Gateway configuration: one flat set of keys, from defaults < TOML file < LMG_* env < flags.

Every key has the same name everywhere: `heartbeat_interval_s` in the TOML file,
`LMG_HEARTBEAT_INTERVAL_S` in the environment, `--heartbeat-interval-s` on the command
line. Every limit the server enforces lives here with its default and the reason for it.
A wrong key or value stops the start with a message that names the key and its source.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from lmg.server.gateway.session import SessionLimits
from lmg.storage.config import StoreConfig


class ConfigError(ValueError):
    """A configuration key has a value the gateway cannot use; the message says which and why."""


@dataclass(frozen=True)
class GatewayConfig:
    # where things are
    data_dir: str = "./lmg-data"  # SQLite database, photos; created if missing
    store: str = ""  # store URL; empty = sqlite:///<data_dir>/lmg.db
    # listeners: HOST:PORT; an empty value turns the listener off
    tcp: str = "0.0.0.0:9100"
    ws: str = "0.0.0.0:9101"  # WebSocket, path /terminal
    admin: str = "127.0.0.1:9180"  # /healthz and /readyz; loopback unless asked otherwise
    tls_cert: str = ""  # PEM certificate chain; with tls_key turns TLS on for TCP and WebSocket
    tls_key: str = ""
    # session rules (told to terminals, see docs/protocol.md)
    auth_timeout_s: float = 10.0
    heartbeat_interval_s: int = 30
    max_frame_size: int = 65536
    max_batch_records: int = 500
    max_future_skew_s: int = 300  # terminal clocks drift; 5 min is generous for NTP-less devices
    max_punch_age_days: int = 30  # an outage of weeks must still upload its backlog
    malformed_limit: int = 20  # malformed frames per minute before a session is closed
    # connection limits
    max_connections: int = 100_000  # all listeners together; also bounded by the fd limit
    max_connections_per_address: int = 5_000  # a site behind NAT has tens of terminals; load tools more
    accept_rate: float = 5_000.0  # new connections per second (token bucket); 20k reconnects in 4 s
    accept_burst: int = 10_000
    max_unsent_bytes: int = 256 * 1024  # per connection: ~7,000 unread ACKs, then the peer is closed
    # the store's group commit (reasons for the defaults: storage/config.py). Raise the
    # batch for a fleet coming back from an outage (2000: +10-20% backlog records/s in
    # `lmg bench load`); keep it where it is for the lowest ack latency on live traffic.
    group_commit_max_records: int = 500
    group_commit_max_delay_ms: float = 2.0
    # background work
    presence_flush_s: float = 5.0  # online/last-seen written in batches this often, not per heartbeat
    shutdown_grace_s: float = 10.0  # SIGTERM: in-flight commits and goodbyes get this long
    log_level: str = "info"
    # forwarding to the provincial system (docs/province-api.md); empty forward_url = off.
    # The forwarder's tuning keys (batch size, concurrency, backoff) have the defaults in
    # server/forwarding/config.py; `lmg forward run` takes them all as flags.
    forward_url: str = ""
    forward_app_key: str = ""
    forward_app_secret: str = field(default="", repr=False)  # never logged

    def store_url(self) -> str:
        return self.store or f"sqlite:///{Path(self.data_dir).resolve() / 'lmg.db'}"

    def session_limits(self) -> SessionLimits:
        return SessionLimits(
            auth_timeout_ms=int(self.auth_timeout_s * 1000),
            heartbeat_interval_s=self.heartbeat_interval_s,
            max_frame_size=self.max_frame_size,
            max_batch_records=self.max_batch_records,
            max_future_skew_ms=self.max_future_skew_s * 1000,
            max_punch_age_ms=self.max_punch_age_days * 86_400_000,
            malformed_limit=self.malformed_limit,
        )

    def store_config(self) -> StoreConfig:
        return StoreConfig(group_commit_max_records=self.group_commit_max_records,
                           group_commit_max_delay_ms=self.group_commit_max_delay_ms)

    def tls_enabled(self) -> bool:
        return bool(self.tls_cert or self.tls_key)


KEYS = {f.name: f for f in fields(GatewayConfig)}


def _coerce(keys: dict, name: str, value, source: str):
    kind = keys[name].type
    kind = {"str": str, "int": int, "float": float}.get(kind, kind) if isinstance(kind, str) else kind
    try:
        if kind is int and not isinstance(value, bool):
            return int(value)
        if kind is float and not isinstance(value, bool):
            return float(value)
        if kind is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{name} = {value!r} from {source}: expected {kind.__name__}")


def gather_keys(keys: dict, flags: dict | None, env, config_file: str | None, *,
                in_file=lambda key: True, known_elsewhere: frozenset = frozenset()) -> dict:
    """Coerced values of `keys` (name -> dataclass Field) from the TOML file < LMG_* < flags.

    `in_file` selects the file keys this reader owns; a selected key that is neither in
    `keys` nor `known_elsewhere` (another reader's) is refused with the list of keys.
    """
    values: dict = {}
    config_file = config_file or env.get("LMG_CONFIG") or None
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in data.items():
            if not in_file(key) or (key in known_elsewhere and key not in keys):
                continue
            if key not in keys:
                raise ConfigError(f"config file {path}: unknown key {key!r}; known keys: {', '.join(keys)}")
            values[key] = _coerce(keys, key, value, f"config file {path}")
    for key in keys:
        env_name = f"LMG_{key.upper()}"
        if env_name in env:
            values[key] = _coerce(keys, key, env[env_name], f"environment variable {env_name}")
    for key, value in (flags or {}).items():
        if value is not None and key in keys:
            values[key] = _coerce(keys, key, value, f"--{key.replace('_', '-')}")
    return values


def parse_host_port(name: str, value: str) -> tuple[str, int] | None:
    """'HOST:PORT' -> (host, port); '' -> None (listener off)."""
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} = {value!r}: use HOST:PORT, for example 0.0.0.0:9100 (or '' to turn it off)")
    return host.strip("[]") or "0.0.0.0", int(port)


def load_config(flags: dict | None = None, env: dict | None = None, config_file: str | None = None) -> GatewayConfig:
    """Merge defaults, the TOML file, LMG_* variables and flags (later wins); validate.

    The file may also hold the forwarder's tuning keys (forward_*), read by `lmg forward`.
    """
    from lmg.server.forwarding.config import KEYS as FORWARDER_KEYS

    env = os.environ if env is None else env
    values = gather_keys(KEYS, flags, env, config_file, known_elsewhere=frozenset(FORWARDER_KEYS))
    config = dataclasses.replace(GatewayConfig(), **values)
    validate(config)
    return config


def validate(config: GatewayConfig) -> None:
    for name in ("tcp", "ws", "admin"):
        parse_host_port(name, getattr(config, name))
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("tls_cert and tls_key go together: give both paths (PEM) or neither")
    positive = ("auth_timeout_s", "heartbeat_interval_s", "max_batch_records", "max_connections",
                "max_connections_per_address", "accept_rate", "accept_burst", "max_unsent_bytes",
                "presence_flush_s", "shutdown_grace_s", "malformed_limit")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be greater than 0, got {getattr(config, name)!r}")
    try:
        config.store_config()
    except ValueError as exc:
        raise ConfigError(f"{exc} (group_commit_* keys)") from None
    if not 1024 <= config.max_frame_size <= 1 << 24:
        raise ConfigError(f"max_frame_size must be between 1024 and 16777216 bytes, got {config.max_frame_size}")
    if config.max_batch_records * 70 + 22 > config.max_frame_size:
        raise ConfigError(
            f"max_batch_records = {config.max_batch_records} cannot fit in max_frame_size = {config.max_frame_size}: "
            "lower the batch size or raise the frame size"
        )
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level must be debug, info, warning or error, got {config.log_level!r}")
    if config.forward_url:
        from lmg.server.forwarding.config import ForwarderConfig

        ForwarderConfig.from_mapping(config)  # raises ConfigError naming the key
