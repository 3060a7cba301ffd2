"""When to try the provincial system again: backoff with jitter and a circuit breaker.

Pure: time is an argument (Unix ms), and so is the random source, so tests can pin
every decision. The forwarder asks `RetryPolicy.next_attempt_at_ms` what to write into
the outbox after a failed batch, and asks the `CircuitBreaker` whether it may send at
all; it reports each request's outcome back to the breaker.

What counts as what (decided by the forwarder, recorded here):

- a failure for the breaker: connection refused or reset, timeout, HTTP 5xx, 401/403
  (nothing we send can succeed until someone fixes a key, a clock or an allowlist);
- neutral: 429 (the province is up and asked us to slow down: Retry-After says when);
- a success: any answer with per-record results, including ones rejecting records.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lmg.protocol import province as api


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with "equal jitter": half fixed, half random.

    The fixed half keeps a storm of failed batches from coming back at once sooner than
    the base delay; the random half spreads them so 10,000 devices' items that failed
    together do not retry together. attempt 1 waits 0.5-1 s, attempt 7 and later
    (with the defaults) 15-30 s.
    """

    base_ms: int = 1_000  # first retry after 0.5-1 s: a lost connection is usually back by then
    cap_ms: int = 30_000  # longest wait: bounds the delay after the province recovers to 30 s
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.base_ms <= self.cap_ms:
            raise ValueError(f"retry base {self.base_ms} ms must be > 0 and <= the cap {self.cap_ms} ms")
        if self.multiplier < 1.0:
            raise ValueError(f"retry multiplier {self.multiplier} must be >= 1")

    def delay_ms(self, attempt: int, random: Callable[[], float]) -> int:
        """Wait after the `attempt`-th failed try (1 = the first), jitter from random() in [0, 1)."""
        exponent = min(max(attempt, 1) - 1, 62)  # 2**62 overflows nothing and exceeds any cap
        ceiling = min(self.cap_ms, self.base_ms * self.multiplier ** exponent)
        return int(ceiling / 2 + ceiling / 2 * random())

    def next_attempt_at_ms(self, attempt: int, now_ms: int, random: Callable[[], float],
                           retry_after_ms: int | None = None) -> int:
        """When to try again: the backoff, or the province's Retry-After if that is later."""
        at = now_ms + self.delay_ms(attempt, random)
        if retry_after_ms is not None:
            at = max(at, now_ms + retry_after_ms)
        return at


class BreakerState(enum.Enum):
    CLOSED = "closed"  # sending normally, counting consecutive failures
    OPEN = "open"  # not sending until the probe time
    HALF_OPEN = "half_open"  # one probe request in flight; its outcome decides


class BreakerEvent(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMER = "timer"  # now_ms reached the probe time


# (state, event) -> next state; "FAILURE in CLOSED" goes to OPEN only at the threshold,
# decided in `record_failure`. Anything missing is an event that changes nothing.
TRANSITIONS: dict[tuple[BreakerState, BreakerEvent], BreakerState] = {
    (BreakerState.CLOSED, BreakerEvent.SUCCESS): BreakerState.CLOSED,
    (BreakerState.CLOSED, BreakerEvent.FAILURE): BreakerState.CLOSED,  # or OPEN at the threshold
    (BreakerState.OPEN, BreakerEvent.TIMER): BreakerState.HALF_OPEN,
    (BreakerState.OPEN, BreakerEvent.SUCCESS): BreakerState.CLOSED,  # a late answer from before it opened
    (BreakerState.OPEN, BreakerEvent.FAILURE): BreakerState.OPEN,  # late failures keep it open, no longer
    (BreakerState.HALF_OPEN, BreakerEvent.SUCCESS): BreakerState.CLOSED,
    (BreakerState.HALF_OPEN, BreakerEvent.FAILURE): BreakerState.OPEN,
}


@dataclass(slots=True)
class CircuitBreaker:
    """Stops sending while the province is down; one probe at a time finds out when it is back.

    Opens after `failure_threshold` consecutive failures. While open, `allow` says no
    until the probe time; then it lets exactly one request through (half-open). That
    probe's success closes the breaker; its failure reopens it for twice as long, up to
    `max_open_ms`. A down province thus sees at most one request per open period
    instead of `concurrency` requests per backoff step.
    """

    failure_threshold: int = 5  # 5 in a row: 20% random 5xx gives that by chance once in 3,125 tries
    open_ms: int = 1_000  # first pause; doubled on each failed probe
    max_open_ms: int = 15_000  # longest pause: the province's recovery is noticed within 15 s
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    current_open_ms: int = 0
    probe_at_ms: int = 0
    probe_in_flight: bool = False

    def allow(self, now_ms: int) -> bool:
        """May a request be sent now? In half-open, True once; the caller must report its outcome."""
        if self.state is BreakerState.OPEN and now_ms >= self.probe_at_ms:
            self.state = TRANSITIONS[(BreakerState.OPEN, BreakerEvent.TIMER)]
            self.probe_in_flight = False
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True
            return True
        return False

    def next_allowed_at_ms(self, now_ms: int) -> int:
        """The earliest time `allow` may say yes (now if it may already)."""
        if self.state is BreakerState.OPEN:
            return max(now_ms, self.probe_at_ms)
        return now_ms

    def record_success(self, now_ms: int) -> None:
        self.state = TRANSITIONS[(self.state, BreakerEvent.SUCCESS)]
        self.failures = 0
        self.current_open_ms = 0
        self.probe_in_flight = False

    def record_neutral(self, now_ms: int) -> None:
        """An answer that says nothing about health (429): a half-open probe may be sent again."""
        self.probe_in_flight = False

    def record_failure(self, now_ms: int) -> None:
        previous = self.state
        self.state = TRANSITIONS[(previous, BreakerEvent.FAILURE)]
        self.failures += 1
        if previous is BreakerState.HALF_OPEN:
            self._open(now_ms, min(self.max_open_ms, max(self.open_ms, self.current_open_ms * 2)))
        elif previous is BreakerState.CLOSED and self.failures >= self.failure_threshold:
            self._open(now_ms, self.open_ms)

    def _open(self, now_ms: int, duration_ms: int) -> None:
        self.state = BreakerState.OPEN
        self.current_open_ms = duration_ms
        self.probe_at_ms = now_ms + duration_ms
        self.probe_in_flight = False


# ------------------------------------------------------------ judging one batch's answer


class Health(enum.Enum):
    """What one answer says about the province, for the breaker."""

    UP = "up"
    DOWN = "down"
    NEUTRAL = "neutral"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with each record of one batch after the province answered (or did not).

    `accepted`: ack (the province holds them); `rejected`: dead-letter with the reason
    (record id -> "province <code>: <reason>"); `retry`: fail with backoff, `error`
    saying why; `retry_after_ms` from a 429/503; `health` for the breaker.
    """

    accepted: tuple[str, ...]
    rejected: dict[str, str]
    retry: tuple[str, ...]
    error: str
    retry_after_ms: int | None
    health: Health
    duplicates: int = 0  # how many of `accepted` the province already held


_AUTH_HINTS = {
    1001: "check --forward-app-key and --forward-app-secret against what the province issued",
    1002: "the gateway's clock is off: synchronise it (NTP)",
    1003: "a nonce was reused: the gateway's random source is broken",
    1004: "the province does not know this app key: check --forward-app-key",
    1101: "the app key lacks permission for this interface: ask the province to grant it",
    1102: "the province does not accept this gateway's address: ask it to add the address to the allowlist",
}


def failed_verdict(record_ids, error: str, health: Health, retry_after_ms: int | None = None) -> Verdict:
    """Every record is to be retried (no answer, or an answer about the whole request)."""
    return Verdict((), {}, tuple(record_ids), error, retry_after_ms, health)


def judge_answer(status: int, body: bytes, retry_after: str | None, record_ids, now_ms: int) -> Verdict:
    """Decide per record from an HTTP answer to an attendance batch. Pure.

    200 with results: stored/duplicate -> accepted, invalid (2xxx) -> rejected, a record
    missing from the results -> retry. 429 -> retry after Retry-After (neutral). 5xx ->
    retry (down). 401/403 -> retry (down) with a hint for the operator: no record is at
    fault. Any other 4xx, or a 200 without the documented shape -> retry (down): it
    means the two ends disagree about the interface, and hammering will not fix it.
    """
    record_ids = tuple(record_ids)
    retry_after_ms = api.parse_retry_after_ms(retry_after, now_ms)
    if status == 200:
        try:
            results = api.parse_batch_results(body)
        except ValueError as exc:
            return failed_verdict(record_ids, f"province answered 200 without valid results: {exc}", Health.DOWN)
        accepted, rejected, retry, duplicates = [], {}, [], 0
        for rid in record_ids:
            row = results.get(rid)
            if row is None:
                retry.append(rid)
            elif row.accepted:
                accepted.append(rid)
                duplicates += row.result == api.RECORD_DUPLICATE
            else:
                rejected[rid] = f"province {row.code}: {row.reason}"
        error = f"province left {len(retry)} record(s) out of its results" if retry else ""
        return Verdict(tuple(accepted), rejected, tuple(retry), error, None, Health.UP, duplicates)
    code, message = api.parse_error(body)
    label = f"HTTP {status}" + (f" code {code}" if code is not None else "") + (f": {message}" if message else "")
    if status == 429:
        return failed_verdict(record_ids, label, Health.NEUTRAL, retry_after_ms if retry_after_ms is not None else 1_000)
    if status >= 500:
        return failed_verdict(record_ids, label, Health.DOWN, retry_after_ms)
    hint = _AUTH_HINTS.get(code or 0)
    return failed_verdict(record_ids, label + (f" ({hint})" if hint else ""), Health.DOWN, retry_after_ms)


def warning_key(warning_id: int, version: int) -> str:
    """How a warning version is named in a Verdict (`<id>@<version>`)."""
    return f"{warning_id}@{version}"


def judge_warnings_answer(status: int, body: bytes, retry_after: str | None,
                          keys: Sequence[tuple[int, int]], now_ms: int) -> Verdict:
    """Decide per warning version from an HTTP answer to a warnings batch. Pure; the
    Verdict names each version `warning_key(id, version)`.

    As `judge_answer`, with one difference: 403 code 1101 (this app key lacks the
    `warnings` permission) is neutral for the breaker. It is about this endpoint only,
    while the punches, which share the breaker, may well be going through: a province that
    has not granted warnings yet must not stop attendance. The warnings wait and retry.
    """
    names = tuple(warning_key(w, v) for w, v in keys)
    if status == 200:
        try:
            results = api.parse_warning_results(body)
        except ValueError as exc:
            return failed_verdict(names, f"province answered 200 without valid results: {exc}", Health.DOWN)
        accepted, rejected, retry, duplicates = [], {}, [], 0
        for key, name in zip(keys, names, strict=True):
            row = results.get(key)
            if row is None:
                retry.append(name)
            elif row.accepted:
                accepted.append(name)
                duplicates += row.result == api.RECORD_DUPLICATE
            else:
                rejected[name] = f"province {row.code}: {row.reason}"
        error = f"province left {len(retry)} warning(s) out of its results" if retry else ""
        return Verdict(tuple(accepted), rejected, tuple(retry), error, None, Health.UP, duplicates)
    verdict = judge_answer(status, body, retry_after, names, now_ms)
    if status == 403 and api.parse_error(body)[0] == api.ProvinceCode.NO_PERMISSION:
        return failed_verdict(names, verdict.error, Health.NEUTRAL, verdict.retry_after_ms)
    return verdict
