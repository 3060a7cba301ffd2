"""Failed authentications, audited in bounded form: one row per source per window, with a count.

Pure (time is an argument). Every failed login used to write its own audit row, holding the
serial as sent: 600 HELLOs in 0.7 s made 600 rows with 240-character serials, NUL bytes and
all. Now, per source address and window of `window_ms`:

- the first failure opens the window and is written at once (count 1), so an operator sees
  a problem as soon as it starts;
- the failures after it are counted and written as one row when the window ends (`due`),
  with their count, the count per reason and at most `MAX_SERIALS` of the serials tried.

So one source writes at most two rows per window, whatever it sends. At most `max_sources`
windows are open; past that the oldest is closed early (its row written), so memory stays
bounded under a scan from many addresses. Every string stored is sanitised (`clean`):
control and other unprintable characters become `?`, and it is cut to `MAX_TEXT` characters.
Lockouts are not aggregated: each is written as its own row by the gateway (there are few).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MAX_TEXT = 64  # characters of a serial kept in the audit: real serials are at most 32
MAX_SERIALS = 5  # distinct serials listed per aggregated row


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """`text` made safe to store and show: unprintable characters (NUL, escapes, line
    breaks, ...) replaced by `?`, cut to `limit` characters with `…` marking the cut."""
    safe = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


class AuditRow(NamedTuple):
    event: str
    subject: str
    detail: dict[str, Any]
    address: str


@dataclass
class _Window:
    start_ms: int
    count: int = 0  # failures after the first (the first was written at once)
    reasons: Counter[str] = field(default_factory=Counter)
    serials: list[str] = field(default_factory=list)


class FailureAudit:
    def __init__(self, window_ms: int, max_sources: int = 10_000):
        self.window_ms = window_ms
        self.max_sources = max_sources
        self._open: OrderedDict[str, _Window] = OrderedDict()  # address -> window, oldest first

    def __len__(self) -> int:
        return len(self._open)

    def failed(self, address: str, serial: str, reason: str, now_ms: int) -> list[AuditRow]:
        """A failed authentication; returns the rows to write now (possibly none)."""
        rows = self.due(now_ms)
        window = self._open.get(address)
        subject = clean(serial)
        if window is None:
            self._open[address] = _Window(now_ms)
            while len(self._open) > self.max_sources:
                rows += self._close(*self._open.popitem(last=False))
            rows.append(AuditRow("auth_failed", subject, {"reason": reason, "count": 1}, address))
            return rows
        window.count += 1
        window.reasons[reason] += 1
        if subject not in window.serials and len(window.serials) < MAX_SERIALS:
            window.serials.append(subject)
        return rows

    def due(self, now_ms: int) -> list[AuditRow]:
        """Rows of the windows that ended by `now_ms` (called by a timer and by `failed`)."""
        rows: list[AuditRow] = []
        while self._open:
            address, window = next(iter(self._open.items()))
            if now_ms - window.start_ms < self.window_ms:
                break  # opened in order: the rest are younger
            del self._open[address]
            rows += self._close(address, window)
        return rows

    def flush(self) -> list[AuditRow]:
        """Every open window's row (shutdown)."""
        rows = [row for address, window in self._open.items() for row in self._close(address, window)]
        self._open.clear()
        return rows

    def _close(self, address: str, window: _Window) -> list[AuditRow]:
        if not window.count:
            return []
        subject = window.serials[0] if len(window.serials) == 1 else f"{len(window.serials)} serials"
        detail = {"reason": window.reasons.most_common(1)[0][0], "count": window.count,
                  "reasons": dict(window.reasons), "serials": window.serials,
                  "window_start_ms": window.start_ms, "window_s": self.window_ms / 1000}
        return [AuditRow("auth_failed", subject, detail, address)]
