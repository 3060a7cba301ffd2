"""When a terminal reconnects: the back-off schedule of docs/protocol.md §5.2 and §6.8, as pure code.

One function, `reconnect_wait_s(policy, failures, u, ending)`, answers "how long do I wait
before the next connection attempt" from how the last one ended; the simulators'
connection loops (simulators/terminal.py `upload_punches`, simulators/firmware.py) sleep
what it says. No clock and no random source: `u` is a number drawn uniformly from [0, 1)
by the caller, so a test pins the jitter and reads the schedule off a table.

Rules it keeps:

- Own back-off (§6.8): the base wait starts at `base_s` (1 s) and doubles after each failed
  attempt, capped at `cap_s` (60 s) **before** the jitter; the wait is the base randomised
  by ±`jitter` (±50 %): at most 90 s, at least 0.5 s. `failures` counts the attempts that
  ended without an authenticated session since the last one that authenticated (a session
  that authenticated and then dropped counts as 1: the base is reset to 1 s).
- A wait the server names (GOODBYE `reconnect_after_s`, AUTH_RESULT `retry_after_s`, not
  0) replaces the own back-off and is waited in full, plus up to `jitter` more (§6.8: "wait
  that long instead, plus up to 50 % jitter"): never less than the server asked, and not
  all terminals of a site at the same second.
- Refusals (§5.2 table, `AFTER_REFUSAL`): UNKNOWN_DEVICE, BAD_SIGNATURE, TAKEOVER and
  CREDENTIALS_CHANGED wait the maximum interval; DEVICE_DISABLED `disabled_s` (10 minutes);
  UNSUPPORTED_VERSION `unsupported_s` (an hour); SERVER_BUSY, RATE_LIMITED and
  SHUTTING_DOWN what the server named, else the own back-off. These "at least" waits get
  jitter upwards only (×1 to ×1.5), so no draw of `u` ever retries sooner than the document
  allows; when the server names a wait as well, the longer of the two is taken.
- CLOSED_BY_OPERATOR may reconnect at once (§6.8): the first step of the own back-off.
- Anything else (a lost connection, HEARTBEAT_TIMEOUT, AUTH_TIMEOUT, TOO_MANY_ERRORS, an
  unknown code: §8 reads an unknown code as "try again later") takes the own back-off.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lmg.protocol import ResultCode


@dataclass(frozen=True)
class BackoffPolicy:
    """The numbers of the schedule, seconds. The defaults are the document's; tests and the
    conformance kit shrink them (a kit run cannot wait an hour)."""

    base_s: float = 1.0  # §6.8: "the base wait starts at 1 s"
    cap_s: float = 60.0  # §6.8: "capped at 60 s before the jitter"; §5.2's "maximum interval"
    jitter: float = 0.5  # §6.8: "randomised by ±50 %"
    disabled_s: float = 600.0  # §5.2 DEVICE_DISABLED: "retry at most every 10 minutes"
    unsupported_s: float = 3600.0  # §5.2 UNSUPPORTED_VERSION: "retry at most hourly"

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"back-off base {self.base_s} s must be above 0 and at most the cap {self.cap_s} s")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter {self.jitter} must be in [0, 1): a wait of 0 is no back-off")
        if self.disabled_s < 0 or self.unsupported_s < 0:
            raise ValueError("refusal waits must not be negative")


class Rule(enum.Enum):
    """How long to wait after a given refusal or GOODBYE reason."""

    BACKOFF = "own back-off"  # doubling from base_s, capped, ±jitter
    FIRST_STEP = "first step of the own back-off"  # base_s ±jitter, whatever the failures
    MAX_INTERVAL = "the maximum interval"  # cap_s, +0..jitter
    DISABLED = "the disabled interval"  # disabled_s, +0..jitter
    UNSUPPORTED = "the unsupported-version interval"  # unsupported_s, +0..jitter


#: Reason (AUTH_RESULT result or GOODBYE reason) -> the wait it asks for (§5.2, §6.8).
#: A code not listed takes the own back-off; a server-named wait is honoured on top of any.
AFTER_REFUSAL: dict[int, Rule] = {
    ResultCode.UNKNOWN_DEVICE: Rule.MAX_INTERVAL,
    ResultCode.BAD_SIGNATURE: Rule.MAX_INTERVAL,
    ResultCode.TAKEOVER: Rule.MAX_INTERVAL,  # §6.8: "back off to the maximum interval"
    ResultCode.CREDENTIALS_CHANGED: Rule.MAX_INTERVAL,
    ResultCode.DEVICE_DISABLED: Rule.DISABLED,
    ResultCode.UNSUPPORTED_VERSION: Rule.UNSUPPORTED,
    ResultCode.CLOSED_BY_OPERATOR: Rule.FIRST_STEP,
    ResultCode.LOCKED_OUT: Rule.BACKOFF,  # retry_after_s carries the lock's end
    ResultCode.SERVER_BUSY: Rule.BACKOFF,  # reconnect_after_s (10 s) carries the wait
    ResultCode.RATE_LIMITED: Rule.BACKOFF,
    ResultCode.SHUTTING_DOWN: Rule.BACKOFF,
}


@dataclass(frozen=True)
class Ending:
    """How a connection attempt ended: `code` is the AUTH_RESULT refusal or the GOODBYE
    reason (None for a connection lost without one), `server_wait_s` the AUTH_RESULT
    `retry_after_s` or GOODBYE `reconnect_after_s` (0: none named)."""

    code: int | None = None
    server_wait_s: int = 0

    def rule(self) -> Rule:
        return Rule.BACKOFF if self.code is None else AFTER_REFUSAL.get(self.code, Rule.BACKOFF)


LOST = Ending()  # a connection that broke, or could not be opened, without a word from the server


def backoff_s(policy: BackoffPolicy, failures: int, u: float) -> float:
    """The own back-off after `failures` (>= 1) failed attempts: min(cap, base x 2^(failures-1))
    randomised by ±jitter with `u` in [0, 1). The cap applies before the jitter (§6.8)."""
    if failures < 1:
        raise ValueError(f"failures must be at least 1, got {failures}")
    _check_u(u)
    # 2**63 would not fit a float's exponent quickly: past 64 doublings every base is the cap
    base = policy.cap_s if failures > 64 else min(policy.cap_s, policy.base_s * 2.0 ** (failures - 1))
    return base * (1.0 + policy.jitter * (2.0 * u - 1.0))


def at_least_s(wait_s: float, policy: BackoffPolicy, u: float) -> float:
    """`wait_s` plus up to `jitter` of it more: a wait never shorter than asked (§6.8)."""
    _check_u(u)
    return wait_s * (1.0 + policy.jitter * u)


def reconnect_wait_s(policy: BackoffPolicy, failures: int, u: float, ending: Ending = LOST) -> float:
    """Seconds to wait before the next attempt, after `failures` (>= 1) failed attempts of
    which the last ended as `ending`. See the module docstring for the rules."""
    rule = ending.rule()
    named = at_least_s(float(ending.server_wait_s), policy, u) if ending.server_wait_s > 0 else None
    if named is not None and rule in (Rule.BACKOFF, Rule.FIRST_STEP):
        return named  # §6.8: "wait that long instead"
    if rule is Rule.BACKOFF:
        wait = backoff_s(policy, failures, u)
    elif rule is Rule.FIRST_STEP:
        wait = backoff_s(policy, 1, u)
    elif rule is Rule.MAX_INTERVAL:
        wait = at_least_s(policy.cap_s, policy, u)
    elif rule is Rule.DISABLED:
        wait = at_least_s(policy.disabled_s, policy, u)
    else:
        wait = at_least_s(policy.unsupported_s, policy, u)
    return wait if named is None else max(wait, named)


def _check_u(u: float) -> None:
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must be drawn from [0, 1), got {u}")
