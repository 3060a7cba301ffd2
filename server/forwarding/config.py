"""The forwarder's section of the settings (`ForwarderConfig`): every limit, and why.

Each field `x` is the settings key `forward_x` (server/settings.py derives the TOML key,
the `LMG_FORWARD_X` variable and the `--forward-x` flag from it); its `why` metadata is
the help text `lmg serve --help` and `lmg forward run --help` print. Construction checks
every value and raises ValueError naming the key and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lmg.protocol import province as api

PREFIX = "forward_"  # the section's keys in the settings


def key(default: Any, why: str, **extra: Any) -> Any:
    """A settings key of this section: its default and the reason for it."""
    return field(default=default, metadata={"why": why, **extra})


@dataclass(frozen=True)
class ForwarderConfig:
    url: str = key("", "base URL of the provincial system, e.g. https://prov.example/lmg; empty turns forwarding off")
    app_key: str = key("", "the application key the province issued")
    app_secret: str = field(default="", repr=False, metadata={
        "why": "the secret the province issued: signs requests and derives the resident-ID key; never logged",
        "secret": True})
    batch_records: int = key(api.MAX_BATCH_RECORDS, "records per request: 500 is the province's limit and the fewest requests")
    batch_bytes: int = key(api.MAX_BATCH_BYTES, "bytes per request body: 1 MiB is the province's limit")
    concurrency: int = key(4, "requests in flight at once: 4 x 500 records per ~50 ms round trip is ~40,000 records/s, "
                              "240x the design load of 10,000 terminals x 1 punch/min, while a struggling province sees "
                              "at most 4 requests from us at a time")
    timeout_s: float = key(10.0, "seconds for a whole request; a 500-record batch is answered in well under 1 s when healthy")
    lease_s: float = key(60.0, "seconds a claimed item is ours; must outlast (concurrency + 1) x timeout_s = 50 s with the "
                               "defaults; after a crash, claimed items wait this long before being sent again")
    idle_poll_s: float = key(1.0, "outbox empty: look again after this many seconds (one indexed query a second)")
    retry_base_s: float = key(1.0, "first retry after 0.5-1 s (exponential backoff with jitter)")
    retry_cap_s: float = key(30.0, "no item waits longer than 15-30 s between tries")
    breaker_failures: int = key(5, "consecutive failed requests that open the circuit breaker")
    breaker_open_s: float = key(1.0, "first pause while the province is down, doubled per failed probe")
    breaker_max_open_s: float = key(15.0, "longest pause of the breaker: a recovery is noticed within 15 s")
    status_interval_s: float = key(60.0, "seconds between device online/offline snapshots to the province; 0 turns them off")
    late_photo_s: float = key(5.0, "terminals upload a photo after its punch, so the record has often gone by then; a photo "
                                   "the province has not confirmed this many seconds after it was stored is sent on its own "
                                   "(long enough that one whose record is still queued goes with it instead, not twice)")
    warning_interval_s: float = key(5.0, "seconds between looks for supervision warnings not yet confirmed by the "
                                         "province (one indexed query); they change at most a few times a day, "
                                         "after punches, which go first; 0 turns warning forwarding off")
    project_cache: int = key(50_000, "device -> project code entries kept (~100 bytes each: 5 MB for 5x the design fleet)")

    def __post_init__(self) -> None:
        validate(self)

    def enabled(self) -> bool:
        return bool(self.url)

    def endpoint(self, path: str) -> tuple[str, str]:
        """(full URL, signed target) for one API path under the base URL."""
        base = self.url.rstrip("/")
        prefix = urlsplit(base).path
        return base + path, prefix + path


def validate(config: ForwarderConfig) -> None:
    """Raise ValueError naming the key and what to do."""
    if config.url:
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"forward_url = {config.url!r}: use http(s)://HOST[:PORT][/PATH] of the provincial system")
        if not config.app_key or not config.app_secret:
            raise ValueError("forward_url is set but forward_app_key / forward_app_secret are missing: "
                             "give the key and secret the province issued (or LMG_FORWARD_APP_KEY / "
                             "LMG_FORWARD_APP_SECRET)")
    if not 1 <= config.batch_records <= api.MAX_BATCH_RECORDS:
        raise ValueError(f"forward_batch_records must be 1..{api.MAX_BATCH_RECORDS} (the province's limit), "
                         f"got {config.batch_records}")
    if not 4096 <= config.batch_bytes <= api.MAX_BATCH_BYTES:
        raise ValueError(f"forward_batch_bytes must be 4096..{api.MAX_BATCH_BYTES} (one record is ~400 bytes; "
                         f"the province accepts at most 1 MiB), got {config.batch_bytes}")
    for name in ("concurrency", "breaker_failures", "project_cache"):
        if getattr(config, name) < 1:
            raise ValueError(f"forward_{name} must be at least 1, got {getattr(config, name)}")
    for name in ("timeout_s", "lease_s", "idle_poll_s", "retry_base_s", "retry_cap_s", "breaker_open_s",
                 "breaker_max_open_s", "late_photo_s"):
        if getattr(config, name) <= 0:
            raise ValueError(f"forward_{name} must be greater than 0, got {getattr(config, name)}")
    if config.status_interval_s < 0:
        raise ValueError(f"forward_status_interval_s must be 0 (off) or more, got {config.status_interval_s}")
    if config.warning_interval_s < 0:
        raise ValueError(f"forward_warning_interval_s must be 0 (off) or more, got {config.warning_interval_s}")
    if config.retry_base_s > config.retry_cap_s:
        raise ValueError("forward_retry_base_s must not exceed forward_retry_cap_s")
    if config.breaker_open_s > config.breaker_max_open_s:
        raise ValueError("forward_breaker_open_s must not exceed forward_breaker_max_open_s")
    need = (config.concurrency + 1) * config.timeout_s
    if config.lease_s < need:
        raise ValueError(
            f"forward_lease_s = {config.lease_s} is shorter than (forward_concurrency + 1) x forward_timeout_s = "
            f"{need:g}: a claimed item could be claimed again while its request is still waiting; "
            "raise the lease or lower the timeout"
        )
