"""Counting on the hot path in plain Python, for the metrics fold to pick up.

A link answers tens of thousands of store calls a second; one prometheus-client call per
call (a lock, and in multiprocess mode a write to a memory-mapped file) would cost more
than the rest of the accounting together. So the hot path observes into a `Tally`, a
plain list of bucket counts and a float sum, and the fold (`lmg.server.metrics.fold`)
moves what accumulated into the prometheus-client histogram once a second and at scrape
time. Nothing here imports prometheus-client: with `metrics = false` it is never loaded.

The bucket bounds used by the histograms are defined here, beside the code that counts
into them, and `fold.py` gives the same bounds to prometheus-client.
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds. From a 2 ms group-commit window with a sub-millisecond commit to a sick disk's
# multi-second fsync: p99 targets are in tens of ms (README: ack p99 <= 25 ms).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Records per group-commit batch: 1 (a lone punch) to the 500-record limit (one 500-record
# PUNCH_BATCH frame may exceed it alone, hence the buckets above it).
BATCH_RECORDS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 200, 300, 400, 500, 1000, 2500)
# Seconds an event-loop wake-up came late: under 1 ms is an idle loop; 10-100 ms is a
# loop busy enough to show in ack latency; over 1 s is a stall.
LOOP_LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Tally:
    """A histogram's worth of plain counts: `observe(value)` is a bisect and two additions.

    `counts[i]` counts observations in (bounds[i-1], bounds[i]] (not cumulative), the last
    slot those above every bound (+Inf): the same split prometheus-client keeps internally,
    so a fold adds each slot to its bucket as it is.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"bucket bounds must be increasing, got {bounds}")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le="bound")
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def take(self) -> tuple[list[int], float]:
        """What accumulated since the last take (counts per slot, sum); starts afresh."""
        counts, total = self.counts, self.sum
        self.counts, self.sum = [0] * (len(self.bounds) + 1), 0.0
        return counts, total


class BatchTally:
    """The group commit's observer (`GroupCommit.observer`): one call per committed batch
    with its records and its commit time, into two tallies."""

    __slots__ = ("records", "seconds")

    def __init__(self, records: Tally, seconds: Tally):
        self.records, self.seconds = records, seconds

    def __call__(self, records: int, seconds: float) -> None:
        self.records.observe(records)
        self.seconds.observe(seconds)
