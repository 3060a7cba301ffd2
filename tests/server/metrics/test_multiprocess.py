"""Multiprocess mode without sockets: two processes fold into one PROMETHEUS_MULTIPROC_DIR
and the second one's page shows the totals; gauges combine as their mode says.

(tests/server/metrics/test_workers.py does the same through `lmg serve --workers 2` and
each worker's GET /metrics, on PostgreSQL.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import REPO

# One "worker": a fake gateway with the figures given as JSON, one fold, optionally its page.
WORKER = """
import json, sys
from collections import Counter, defaultdict
from types import SimpleNamespace
from lmg.protocol import Ack, Punch
from lmg.server.metrics.fold import GatewayMetrics
from lmg.storage import OutboxStatus

figures = json.loads(sys.argv[1])
gateway = SimpleNamespace(store=None, forward_stats=None, now_ms=lambda: 0,
                          counters=Counter(figures["counters"]),
                          connections=Counter({("tcp", "authenticated"): figures["connections"]}),
                          frames_in=defaultdict(int, {Punch: figures["punch_frames"]}),
                          frames_out=defaultdict(int, {Ack: figures["punch_frames"]}))
metrics = GatewayMetrics(gateway)
assert metrics.multiprocess and metrics.registry is None
for latency in figures["ack_latencies"]:
    metrics.ack_latency.observe(latency)
metrics.outbox = OutboxStatus(figures["pending"], 1.5, 0)
metrics.fold()
if figures.get("render"):
    sys.stdout.write(metrics.render().decode())
"""


def run_worker(directory, **figures) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(figures)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_two_processes_pages_show_the_sum(tmp_path):
    run_worker(tmp_path, counters={"punches_stored": 5, "closed_peer_closed": 1}, connections=3, punch_frames=5,
               ack_latencies=[0.003, 0.004], pending=10)
    page = run_worker(tmp_path, counters={"punches_stored": 7, "refused_server_busy": 2}, connections=4,
                      punch_frames=7, ack_latencies=[0.2], pending=12, render=True)
    samples = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))): s.value
               for family in text_string_to_metric_families(page) for s in family.samples}
    assert samples[("lmg_punches_stored_total", ())] == 12
    assert samples[("lmg_frames_in_total", (("type", "punch"),))] == 12
    assert samples[("lmg_connections_closed_total", (("reason", "peer_closed"),))] == 1
    assert samples[("lmg_connections_refused_total", (("reason", "server_busy"),))] == 2
    # what each process holds adds up (livesum) ...
    assert samples[("lmg_connections", (("state", "authenticated"), ("transport", "tcp")))] == 7
    # ... what each reads from the shared store does not (mostrecent: the later reading)
    assert samples[("lmg_outbox_pending", ())] == 12
    assert samples[("lmg_ack_latency_seconds_count", ())] == 3
    assert samples[("lmg_ack_latency_seconds_bucket", (("le", "0.005"),))] == 2
    assert abs(samples[("lmg_ack_latency_seconds_sum", ())] - 0.207) < 1e-9
    assert samples[("lmg_downlink_commands", (("state", "queued"),))] == 0
