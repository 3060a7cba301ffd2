"""The forwarder's configuration: `ForwarderConfig`, with every limit and why.

Each field `x` is the key `forward_x` everywhere: `forward_url` in the TOML file,
`LMG_FORWARD_URL` in the environment, `--forward-url` on the command line (flags win,
then the environment, then the file, then the defaults). The same keys can sit in the
gateway's config file; `from_mapping` picks them out of any object or dict holding them,
so `lmg serve` can build one from its own config once the keys are added there.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from lmg.server.settings import ConfigError, gather_keys
from lmg.protocol import province as api

PREFIX = "forward_"


@dataclass(frozen=True)
class ForwarderConfig:
    url: str = ""  # base URL of the provincial system, e.g. https://prov.example/lmg; empty = off
    app_key: str = ""
    app_secret: str = field(default="", repr=False)  # signs requests, derives the ID key; never logged
    batch_records: int = api.MAX_BATCH_RECORDS  # 500: the province's limit, fewest requests
    batch_bytes: int = api.MAX_BATCH_BYTES  # 1 MiB: the province's limit
    # Requests in flight at once. 4 x 500 records per ~50 ms round trip is ~40,000
    # records/s of capacity, 240x the design load of 10,000 terminals x 1 punch/min,
    # while a struggling province sees at most 4 requests from us at a time.
    concurrency: int = 4
    timeout_s: float = 10.0  # whole request; a 500-record batch is answered in well under 1 s when healthy
    # How long a claimed item is ours. It must outlast the wait behind earlier batches of
    # the same claim plus our own request: (concurrency + 1) x timeout_s = 50 s with the
    # defaults. After a crash, claimed items wait this long before being sent again.
    lease_s: float = 60.0
    idle_poll_s: float = 1.0  # outbox empty: look again after this; one indexed query a second
    retry_base_s: float = 1.0  # first retry after 0.5-1 s
    retry_cap_s: float = 30.0  # no item waits longer than 15-30 s between tries
    breaker_failures: int = 5  # consecutive failed requests that open the breaker
    breaker_open_s: float = 1.0  # first pause while the province is down, doubled per failed probe
    breaker_max_open_s: float = 15.0  # recovery is noticed within 15 s
    status_interval_s: float = 60.0  # device online/offline snapshot this often; 0 turns it off
    # Terminals upload a photo after its punch, so the record has often gone by then. A
    # photo the province has not confirmed this long after it was stored is sent on its
    # own; the sweep looks this often and sends all it finds (`concurrency` at once). Short
    # enough that photos follow their records within seconds, long enough that one whose
    # record is still in the outbox goes with that record instead (not twice).
    late_photo_s: float = 5.0
    project_cache: int = 50_000  # device -> project code entries kept (~100 bytes each: 5 MB for 5x the design fleet)

    def enabled(self) -> bool:
        return bool(self.url)

    def endpoint(self, path: str) -> tuple[str, str]:
        """(full URL, signed target) for one API path under the base URL."""
        base = self.url.rstrip("/")
        prefix = urlsplit(base).path
        return base + path, prefix + path

    @classmethod
    def from_mapping(cls, source) -> ForwarderConfig:
        """Pick `forward_*` keys from a dict or an object (e.g. the gateway's config)."""
        get = source.get if isinstance(source, dict) else (lambda name, default=None: getattr(source, name, default))
        values = {f.name: get(PREFIX + f.name) for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if v is not None})
        validate(config)
        return config


KEYS = {PREFIX + f.name: f for f in fields(ForwarderConfig)}


def load_forwarder_config(flags: dict | None = None, env: dict | None = None,
                          config_file: str | None = None) -> ForwarderConfig:
    """Defaults < TOML file (only its forward_* keys) < LMG_FORWARD_* < flags; validated."""
    env = os.environ if env is None else env
    values = gather_keys(KEYS, flags, env, config_file, in_file=lambda key: key.startswith(PREFIX))
    config = dataclasses.replace(ForwarderConfig(), **{k[len(PREFIX):]: v for k, v in values.items()})
    validate(config)
    return config


def for_gateway(gateway, env: dict | None = None, config_file: str | None = None) -> ForwarderConfig:
    """The forwarder `lmg serve` runs: url, key and secret from the gateway's config
    (`gateway`, a GatewayConfig, whose flags and sources already won), every tuning key
    from the same TOML file's forward_* keys and LMG_FORWARD_* variables."""
    own = {PREFIX + name: getattr(gateway, PREFIX + name) for name in ("url", "app_key", "app_secret")}
    return load_forwarder_config(own, env=env, config_file=config_file)


def validate(config: ForwarderConfig) -> None:
    """Raise ConfigError naming the key and what to do."""
    if config.url:
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"forward_url = {config.url!r}: use http(s)://HOST[:PORT][/PATH] of the provincial system")
        if not config.app_key or not config.app_secret:
            raise ConfigError("forward_url is set but forward_app_key / forward_app_secret are missing: "
                              "give the key and secret the province issued (or LMG_FORWARD_APP_KEY / "
                              "LMG_FORWARD_APP_SECRET)")
    if not 1 <= config.batch_records <= api.MAX_BATCH_RECORDS:
        raise ConfigError(f"forward_batch_records must be 1..{api.MAX_BATCH_RECORDS} (the province's limit), "
                          f"got {config.batch_records}")
    if not 4096 <= config.batch_bytes <= api.MAX_BATCH_BYTES:
        raise ConfigError(f"forward_batch_bytes must be 4096..{api.MAX_BATCH_BYTES} (one record is ~400 bytes; "
                          f"the province accepts at most 1 MiB), got {config.batch_bytes}")
    for name in ("concurrency", "breaker_failures", "project_cache"):
        if getattr(config, name) < 1:
            raise ConfigError(f"forward_{name} must be at least 1, got {getattr(config, name)}")
    for name in ("timeout_s", "lease_s", "idle_poll_s", "retry_base_s", "retry_cap_s", "breaker_open_s",
                 "breaker_max_open_s", "late_photo_s"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"forward_{name} must be greater than 0, got {getattr(config, name)}")
    if config.status_interval_s < 0:
        raise ConfigError(f"forward_status_interval_s must be 0 (off) or more, got {config.status_interval_s}")
    if config.retry_base_s > config.retry_cap_s:
        raise ConfigError("forward_retry_base_s must not exceed forward_retry_cap_s")
    if config.breaker_open_s > config.breaker_max_open_s:
        raise ConfigError("forward_breaker_open_s must not exceed forward_breaker_max_open_s")
    need = (config.concurrency + 1) * config.timeout_s
    if config.lease_s < need:
        raise ConfigError(
            f"forward_lease_s = {config.lease_s} is shorter than (forward_concurrency + 1) x forward_timeout_s = "
            f"{need:g}: a claimed item could be claimed again while its request is still waiting; "
            "raise the lease or lower the timeout"
        )
