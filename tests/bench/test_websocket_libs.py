"""Smoke test of the WebSocket library benchmark: the machinery runs end to end against
one library, counts replies and reports every key. No timing is asserted (see bench/)."""

from __future__ import annotations

import json

import pytest

from lmg.bench import websocket_libs

pytestmark = pytest.mark.timeout(60)

# The benchmark's client is picows and this test's server is websockets: skip, saying
# which, where the environment lacks either (neither is a core dependency yet).
pytest.importorskip("picows", reason="the benchmark client needs picows: pip install picows")
pytest.importorskip("websockets", reason="the server under test needs websockets: pip install websockets")


def test_quickest_run_against_websockets_counts_replies_and_reports_every_key():
    result = websocket_libs.measure(
        ("websockets",), rounds=1, connections=4, window=2, duration=1.0, warmup=0.2, idle=20
    )
    json.dumps(result)  # the --json output is this object
    for key in ("libraries", "tcp_baseline_msgs_per_s", "rounds", "connections", "idle_connections", "client"):
        assert key in result
    assert set(result["libraries"]) == {"websockets"}
    lib = result["libraries"]["websockets"]
    for key in ("msgs_per_s", "ratio_to_tcp_baseline", "rss_per_conn_kib", "msgs_per_server_cpu_s", "version"):
        assert key in lib
    # Replies were counted, through the WebSocket server and the TCP baseline alike.
    assert lib["msgs_per_s"] > 0
    assert result["tcp_baseline_msgs_per_s"] > 0
    assert lib["ratio_to_tcp_baseline"] > 0
    assert result["rounds"] == 1 and result["connections"] == 4


def test_unknown_library_is_refused_before_anything_starts():
    with pytest.raises(websocket_libs.BenchError, match="unknown libraries"):
        websocket_libs.measure(("nosuchlib",), rounds=1)
