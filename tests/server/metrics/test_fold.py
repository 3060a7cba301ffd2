"""The gateway's metrics: what a session's frames, punches and failures show at /metrics,
every family named and described, every counter of the gateway mapped, the fold exact,
and metrics off meaning nothing is counted per frame."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from pathlib import Path

import pytest
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

from lmg.protocol import Ack, Heartbeat, Nack, Punch, PunchBatch, ResultCode, encode
from lmg.server.metrics import exposition
from lmg.server.metrics.fold import COUNTER_NAMES, COUNTER_PREFIXES, _add_tally, outbox_interval_s, update_document
from lmg.server.metrics.tally import LATENCY_BUCKETS_S, Tally
from lmg.simulators.terminal import make_punch
from lmg.storage import StoreUnavailable

from tests.server.conftest import StoreProxy, wait_for

SERVER = Path(__file__).resolve().parents[3] / "server"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def scrape(gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of the gateway's /metrics page."""
    body, content_type = exposition(gateway)
    assert content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_sessions_frames_punches_and_answers_show_in_the_metrics(gw):
    client = await gw.raw_authenticated()
    t = now_ms()
    client.send(Punch.of(make_punch(1, 1, t)))
    await client.expect(Ack)
    client.send(Punch.of(make_punch(1, 1, t)))  # again: a duplicate
    await client.expect(Ack)
    bad = make_punch(2, 2, t)._replace(worker_id="620102198503000010")  # wrong check digit
    client.send(PunchBatch((make_punch(3, 3, t), bad)))
    await client.expect(Ack)
    client.send(Heartbeat(0, 0, 0))
    await client.expect(Ack)
    frame = bytearray(encode(Heartbeat(0, 0, 0, 9)))
    frame[-1] ^= 0xFF  # a broken checksum: NACKed, the session goes on
    client.send_bytes(bytes(frame))
    await client.expect(Nack)
    await gw.gateway.metrics.read_outbox()

    m = scrape(gw.gateway)
    assert value(m, "lmg_connections", transport="tcp", state="authenticated") == 1
    assert value(m, "lmg_connections", transport="tcp", state="unauthenticated") == 0
    assert value(m, "lmg_connections_opened_total", transport="tcp") == 1
    assert value(m, "lmg_authentications_total", result="ok") == 1
    assert value(m, "lmg_punches_stored_total") == 2
    assert value(m, "lmg_punches_duplicate_total") == 1
    assert value(m, "lmg_punches_rejected_total", reason="invalid_worker_id") == 1
    assert value(m, "lmg_frames_in_total", type="hello") == 1 and value(m, "lmg_frames_in_total", type="auth") == 1
    assert value(m, "lmg_frames_in_total", type="punch") == 2 and value(m, "lmg_frames_in_total", type="punch_batch") == 1
    assert value(m, "lmg_frames_in_total", type="heartbeat") == 1
    assert value(m, "lmg_decode_errors_total", kind="bad_checksum") == 1
    assert value(m, "lmg_frames_out_total", type="ack") == 4 and value(m, "lmg_frames_out_total", type="nack") == 1
    assert value(m, "lmg_frames_out_total", type="challenge") == 1
    assert value(m, "lmg_frames_out_total", type="auth_result") == 1
    # one ack-latency observation per store call, one batch observation per commit
    assert value(m, "lmg_ack_latency_seconds_count") == 3
    assert value(m, "lmg_group_commit_batch_records_count") >= 1
    assert value(m, "lmg_group_commit_batch_records_sum") == 4  # every record goes through a commit
    assert value(m, "lmg_group_commit_seconds_count") == value(m, "lmg_group_commit_batch_records_count")
    assert value(m, "lmg_outbox_pending") == 2 and value(m, "lmg_outbox_dead_letters") == 0
    assert value(m, "lmg_downlink_commands", state="queued") == 0
    assert value(m, "lmg_group_commit_queued_records") == 0 and value(m, "lmg_sqlite_writer_queue_depth") == 0
    assert value(m, "lmg_gateway_events_total") == 0 and not [k for k in m if k[0] == "lmg_gateway_events_total"]

    await client.close()
    await wait_for(lambda: not gw.gateway.links, what="the connection to close")
    m = scrape(gw.gateway)
    assert value(m, "lmg_connections", transport="tcp", state="authenticated") == 0
    assert value(m, "lmg_connections_closed_total", reason="peer_closed") == 1


async def test_refusals_store_failures_and_slow_paths_are_counted(start_gateway):
    class Failing(StoreProxy):
        async def store_punches(self, records):
            raise StoreUnavailable("injected: disk is full")

    gw = await start_gateway(wrap=Failing)
    client = await gw.raw_authenticated()
    client.send(Punch.of(make_punch(1, 1, now_ms())))
    await client.expect(Nack)
    wrong = await gw.raw()
    reply = await wrong.authenticate(dataclasses.replace(gw.device, secret=bytes(32)))
    assert reply.result == ResultCode.BAD_SIGNATURE
    await wrong.closed_after()
    m = scrape(gw.gateway)
    assert value(m, "lmg_store_failures_total", operation="store_punches") == 1
    assert value(m, "lmg_authentications_total", result="bad_signature") == 1
    assert value(m, "lmg_connections_closed_total", reason="bad_signature") == 1
    assert value(m, "lmg_ack_latency_seconds_count") == 1  # the NACK's store call is answered too
    assert value(m, "lmg_punches_stored_total") == 0


async def test_the_forwarders_figures_are_folded(gw):
    from lmg.server.forwarding.forwarder import ForwarderStats

    stats = ForwarderStats(acked=7, retried=3, held_back=2, dead_lettered=1, photos_sent=4)
    stats.attempts.update({"ok": 5, "http_500": 2, "timeout": 1})
    stats.warning("accepted", 3)
    stats.warning("retried")
    gw.gateway.forward_stats = stats
    m = scrape(gw.gateway)
    assert value(m, "lmg_forward_attempts_total", result="ok") == 5
    assert value(m, "lmg_forward_warnings_total", result="accepted") == 3
    assert value(m, "lmg_forward_warnings_total", result="retried") == 1
    assert value(m, "lmg_forward_attempts_total", result="http_500") == 2
    assert value(m, "lmg_forward_records_total", result="accepted") == 7
    assert value(m, "lmg_forward_records_total", result="held_back") == 2
    assert value(m, "lmg_forward_dead_letters_total") == 1 and value(m, "lmg_forward_photos_sent_total") == 4
    stats.acked += 10  # the fold adds what is new, once
    m = scrape(gw.gateway)
    m = scrape(gw.gateway)
    assert value(m, "lmg_forward_records_total", result="accepted") == 17


async def test_every_family_is_prefixed_and_described(gw):
    body, _ = exposition(gw.gateway)
    families = list(text_string_to_metric_families(body.decode()))
    assert len(families) >= 30
    for family in families:
        assert family.name.startswith("lmg_"), family.name
        assert len(family.documentation) > 20, family.name


def test_every_counter_the_gateway_keeps_has_a_family():
    # Gateway.counters is written in many places; a name the fold does not map would land
    # in lmg_gateway_events_total. Every literal name (or prefix) in the server's code:
    found: set[str] = set()
    for path in SERVER.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found |= set(re.findall(r"""(?:\.count\(|counters\[)\s*f?["']([a-z_]+)""", text))
    assert {"authenticated", "store_failures", "closed_", "refused_", "punches_stored"} <= found
    prefixes = tuple(prefix for prefix, _, _ in COUNTER_PREFIXES)
    unmapped = sorted(name for name in found if name not in COUNTER_NAMES and not name.startswith(prefixes))
    assert unmapped == []


def test_folding_a_tally_equals_observing_each_value():
    # _add_tally writes prometheus-client's per-bucket values directly; it must come out
    # exactly as one observe() per value would.
    from prometheus_client import CollectorRegistry, generate_latest

    values = [0.0, 0.0004, 0.0005, 0.0007, 0.003, 0.02, 1.0, 7.5, 0.0005]
    pages = []
    for fold in (False, True):
        registry = CollectorRegistry()
        histogram = Histogram("lmg_test_seconds", "test", registry=registry, buckets=LATENCY_BUCKETS_S)
        if fold:
            tally = Tally(LATENCY_BUCKETS_S)
            for v in values[:4]:
                tally.observe(v)
            _add_tally(histogram, tally)
            for v in values[4:]:
                tally.observe(v)
            _add_tally(histogram, tally)
            _add_tally(histogram, tally)  # nothing new: nothing added
        else:
            for v in values:
                histogram.observe(v)
        pages.append(generate_latest(registry))
    assert pages[0] == pages[1]


async def test_event_loop_lag_is_observed_from_an_overshooting_sleep(gw):
    def late() -> float:  # samples above 0.25 s
        m = scrape(gw.gateway)
        return value(m, "lmg_event_loop_lag_seconds_count") - value(m, "lmg_event_loop_lag_seconds_bucket", le="0.25")

    assert late() == 0
    time.sleep(0.6)  # the stimulus: the loop is blocked, so the sampler's 0.25 s sleep ends >= 0.35 s late
    await wait_for(lambda: late() >= 1, what="a lag sample above 0.25 s")


async def test_metrics_off_counts_nothing_per_frame_and_says_so(start_gateway):
    gw = await start_gateway(metrics=False)
    client = await gw.raw_authenticated()
    client.send(Punch.of(make_punch(1, 1, now_ms())))
    await client.expect(Ack)
    gateway = gw.gateway
    assert gateway.metrics is None and gateway.frames_in is None and gateway.ack_latency is None
    assert gateway.counters["punches_stored"] == 1  # the plain counters are kept either way
    body, _ = exposition(gateway)
    assert body.startswith(b"# metrics are turned off")


async def test_the_outbox_is_read_on_a_timer_not_per_scrape(gw):
    metrics = gw.gateway.metrics
    await wait_for(lambda: metrics.outbox is not None, what="the first outbox read, at start")
    calls = []
    real = gw.gateway.store.outbox_status

    async def counting(now_ms):
        calls.append(now_ms)
        return await real(now_ms)

    gw.gateway.store.outbox_status = counting
    for _ in range(5):
        scrape(gw.gateway)
        await asyncio.sleep(0)
    assert calls == []  # the next read is OUTBOX_READ_S after the first


async def test_a_store_with_a_group_commit_reports_each_batch(gw):
    group = gw.store._group
    assert group.observer is not None
    client = await gw.raw_authenticated()
    client.send(PunchBatch(tuple(make_punch(n, n, now_ms()) for n in range(1, 11))))
    await client.expect(Ack)
    m = scrape(gw.gateway)
    assert value(m, "lmg_group_commit_batch_records_count") == 1
    assert value(m, "lmg_group_commit_batch_records_sum") == 10
    assert value(m, "lmg_group_commit_batch_records_bucket", le="10.0") == 1
    assert value(m, "lmg_group_commit_batch_records_bucket", le="5.0") == 0
    await gw.gateway.shutdown()
    assert group.observer is None  # the store may outlive the gateway


@pytest.mark.parametrize("value_,bucket", [(0.0, 0), (0.0005, 0), (0.00051, 1), (5.0, 12), (5.1, 13)])
def test_a_tally_puts_a_value_equal_to_a_bound_in_that_bucket(value_, bucket):
    tally = Tally(LATENCY_BUCKETS_S)
    tally.observe(value_)
    assert tally.counts.index(1) == bucket


def test_the_readme_lists_every_family():
    readme = (SERVER.parent / "README.md").read_text(encoding="utf-8")
    assert update_document(readme) == readme, "run `python -m lmg.server.metrics.fold README.md`"


def test_a_slow_outbox_read_is_made_less_often():
    assert outbox_interval_s(0.002) == 10.0  # an outbox of a few thousand rows: every 10 s
    assert outbox_interval_s(0.14) == pytest.approx(28.0)  # 600,000 pending rows on SQLite: 0.5% of the time
