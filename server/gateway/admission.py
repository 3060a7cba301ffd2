"""Admission of new connections: the connection limits and the accept rate, in one place.

A connection is refused, with a GOODBYE saying why and no session, when the gateway is
stopping (SHUTTING_DOWN), when all listeners together hold `max_connections` or its
address holds `max_connections_per_address` (SERVER_BUSY), or when new connections come
faster than the token bucket allows (`accept_rate` per second, bursts of `accept_burst`;
RATE_LIMITED). The bucket smooths a reconnect storm after an outage instead of letting
20,000 handshakes hit the store in the same second. Pure: time is an argument.
"""

from __future__ import annotations

from collections import Counter

from lmg.protocol import ResultCode


class AcceptRate:
    """Token bucket for new connections: `rate` per second, bursts of `burst`."""

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Admission:
    def __init__(self, max_connections: int, max_per_address: int, rate: AcceptRate):
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.rate = rate
        self.per_address: Counter[str] = Counter()
        self.connections = 0

    def refusal(self, peer_host: str, stopping: bool, now_s: float) -> ResultCode | None:
        """None if a new connection from `peer_host` may proceed, else the reason to give."""
        if stopping:
            return ResultCode.SHUTTING_DOWN
        if self.connections >= self.max_connections or self.per_address[peer_host] >= self.max_per_address:
            return ResultCode.SERVER_BUSY
        if not self.rate.take(now_s):
            return ResultCode.RATE_LIMITED
        return None

    def opened(self, peer_host: str) -> None:
        self.connections += 1
        self.per_address[peer_host] += 1

    def closed(self, peer_host: str) -> None:
        self.connections -= 1
        self.per_address[peer_host] -= 1
        if self.per_address[peer_host] <= 0:
            del self.per_address[peer_host]
