"""Lockout of a console account after failed logins: pure, time is an argument.

Rules (docs/console.md "Sign-in"; the numbers are settings, server/settings.py):

- `threshold` consecutive failures (default 5) lock the account for `base_ms` (60 s); each
  further lock doubles the window, up to `max_ms` (1 h). The doubling counts the locks in a
  row (`level`), so a guesser who waits out each lock gets ~5 tries an hour at the cap.
- A success clears everything: the failures, a running lock (there is none: a locked
  account cannot succeed) and the level.
- A login while locked is refused without checking the password and is not counted: a
  person retrying during the lock neither lengthens it nor learns whether the password was
  right. The page says the same as for a wrong password, plus when to try again.

The state is the account's (`ConsoleAccount.failed_logins`, `locked_until_ms`,
`lockout_level`); the glue reads it, calls `failed`/`succeeded` and writes the result back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    threshold: int  # consecutive failures that lock
    base_ms: int  # the first lock
    max_ms: int  # the longest lock

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.base_ms < 1 or self.max_ms < self.base_ms:
            raise ValueError(f"lockout policy {self}: threshold and base_ms from 1, max_ms not below base_ms")

    def window_ms(self, level: int) -> int:
        """The length of the `level`-th lock in a row (1: the first)."""
        return min(self.base_ms << min(level - 1, 40), self.max_ms)  # 2**40 x 1 ms is far past any max


@dataclass(frozen=True, slots=True)
class LockoutState:
    failed: int = 0  # consecutive failures since the last lock or success
    locked_until_ms: int | None = None
    level: int = 0  # locks in a row since the last success

    def locked(self, now_ms: int) -> bool:
        return self.locked_until_ms is not None and now_ms < self.locked_until_ms


CLEAR = LockoutState()


def failed(state: LockoutState, policy: LockoutPolicy, now_ms: int) -> LockoutState:
    """The state after a wrong password at `now_ms` (the caller does not call this while
    `state.locked(now_ms)`). Reaching the threshold starts the next, doubled lock."""
    count = state.failed + 1
    if count < policy.threshold:
        return LockoutState(count, state.locked_until_ms, state.level)
    level = state.level + 1
    return LockoutState(0, now_ms + policy.window_ms(level), level)


def succeeded(state: LockoutState) -> LockoutState:
    """The state after a right password: clear."""
    return CLEAR
