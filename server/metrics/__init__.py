"""Prometheus metrics of a gateway node (prometheus-client), served at the admin listener's /metrics.

Rules this package keeps:

- Names start with `lmg_`, and every family has help text saying what is counted and in
  what unit (seconds, bytes, records). `fold.Families` is the one list of them.
- The hot path never calls prometheus-client. The gateway, the links and the store count
  in plain Python: `Gateway.count` into `Gateway.counters`, per-frame counts into
  `Gateway.frames_in` / `frames_out` (message class -> frames), latencies into a `Tally`
  (tally.py: a bisect and two additions). A fold (`GatewayMetrics.fold`) moves those
  figures into the prometheus-client objects once a second, from a loop-wide task, and
  at every scrape. The fold costs the same whether a node holds ten terminals or 20,000.
- Histograms are observed where the work happens and no more often: the group-commit
  batch size and commit time once per committed batch (the store owner's observer on
  `storage.group_commit.GroupCommit`), the ack latency once per store call of a link
  (submitted to answers written), the event-loop lag four times a second.
- The store is read on a timer, never per scrape: the outbox figures
  (`store.outbox_status`) and the downlink's command counts (`count_commands_by_state`)
  at most every 10 s; the queue depths are attribute reads.
- `metrics = false` turns all of it off: no prometheus-client import, no per-frame
  counting, no timing, no tasks (`Gateway.metrics` is None). `Gateway.counters` is kept
  either way (connection events; tests read it).
- `lmg serve --workers N`: the supervisor gives its workers an empty
  PROMETHEUS_MULTIPROC_DIR (server/cli/workers.py) and prometheus-client's multiprocess
  mode adds the processes' figures up, so any worker's /metrics shows the node's totals
  (each worker's part at most one fold interval old). Gauges say how they combine:
  `livesum` for what each process holds, `mostrecent` for what each reads from the
  shared store. One `lmg serve` uses an ordinary registry of its own.

Entry points: `exposition(gateway) -> (body, content type)` for the /metrics route, and
`GatewayMetrics` (fold.py), which the gateway creates when `metrics` is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmg.server.gateway.gateway import Gateway

__all__ = ["GatewayMetrics", "exposition", "TEXT_CONTENT_TYPE"]

# for the one-line page of a node with metrics off (prometheus-client is not loaded then)
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


def exposition(gateway: Gateway) -> tuple[bytes, str]:
    """The body and content type of GET /metrics for `gateway`: its figures folded up to now,
    rendered in Prometheus' text format (in multiprocess mode, the sum over the workers).
    With `metrics = false` the body is a single comment line saying so."""
    metrics = gateway.metrics
    if metrics is None:
        return b"# metrics are turned off on this node (setting metrics = false)\n", TEXT_CONTENT_TYPE
    metrics.fold()
    return metrics.render(), metrics.content_type


def __getattr__(name: str) -> Any:
    if name == "GatewayMetrics":
        from lmg.server.metrics.fold import GatewayMetrics

        return GatewayMetrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
