"""Each fleet scenario against a real `lmg serve` subprocess with a handful of devices: the
summary's counts are right. Counts only; no timing is asserted."""

from __future__ import annotations

import asyncio
import csv

import orjson
import pytest

from lmg.bench.load import provision, start_gateway
from lmg.simulators.fleet import PHOTO_FRAME, Fleet, FleetSpec, Histogram, merge_summaries, run_fleet, split_spec
from lmg.simulators.photo_upload import PhotoUpload

pytestmark = pytest.mark.timeout(60)
DEVICES = 8


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-gw")
    devices = asyncio.run(provision(None, str(work), "SC", DEVICES))
    with start_gateway(str(work), extra=("--auth-timeout-s", "1")) as server:
        yield server, devices, work


def spec(gateway, **kw) -> FleetSpec:
    server, devices, _ = gateway
    return FleetSpec(host="127.0.0.1", port=server.port, devices=devices, reconnect_base_s=0.2, **kw)


async def test_rush_delivers_every_punch_once(gateway):
    s = await run_fleet(spec(gateway, scenario="rush", punches_per_device=5, duration_s=20, first_record=1))
    assert (s["sent"], s["acked"], s["duplicates"], s["rejected"], s["nacks"]) == (40, 40, 0, 0, 0)
    assert s["latency_ms"]["count"] == 40 and s["unexpected_disconnects"] == 0


async def test_rush_at_a_rate_over_two_processes(gateway):
    s = await run_fleet(spec(gateway, scenario="rush", rate=40, duration_s=1.0, first_record=100,
                             source_addresses=["127.0.0.2", "127.0.0.3"]), processes=2)
    assert s["processes"] == 2 and s["devices"] == DEVICES and s["peak_online"] == DEVICES
    assert s["acked"] > 0 and s["acked"] + s["duplicates"] <= s["sent"] and s["unexpected_disconnects"] == 0


async def test_idle_holds_connections_with_heartbeats(gateway):
    s = await run_fleet(spec(gateway, scenario="idle", duration_s=2.5, heartbeat_s=1))
    assert s["peak_online"] == s["online_at_end"] == DEVICES and s["sent"] == 0 and s["unexpected_disconnects"] == 0
    assert s["heartbeats_sent"] >= DEVICES and s["heartbeats_acked"] >= DEVICES


async def test_backlog_uploads_every_stored_record_in_batches(gateway):
    s = await run_fleet(spec(gateway, scenario="backlog", backlog_records=120, batch_size=50, duration_s=30,
                             first_record=1000))
    assert s["backlog_records"] == DEVICES * 120
    assert (s["acked"], s["duplicates"], s["rejected"]) == (DEVICES * 120, 0, 0)
    assert s["backlog_records_per_s"] > 0
    again = await run_fleet(spec(gateway, scenario="backlog", backlog_records=120, batch_size=50, duration_s=30,
                                 first_record=1000))
    assert (again["acked"], again["duplicates"]) == (0, DEVICES * 120)


async def test_storm_brings_every_device_back(gateway):
    s = await run_fleet(spec(gateway, scenario="storm", duration_s=20))
    assert s["storm_complete"] and s["storm_s"] is not None
    assert s["reconnects"] == DEVICES and s["unexpected_disconnects"] == 0


async def test_storm_over_two_processes_drops_together(gateway):
    s = await run_fleet(spec(gateway, scenario="storm", duration_s=20), processes=2)
    assert s["processes"] == 2 and s["storm_complete"] and s["reconnects"] == DEVICES


async def test_chaos_clients_do_not_disturb_the_well_behaved(gateway):
    s = await run_fleet(spec(gateway, scenario="chaos", chaos_share=0.5, rate=20, duration_s=2.5,
                             first_record=5000))
    assert s["well_behaved"] == DEVICES // 2 and s["unexpected_disconnects"] == 0
    chaos = s["chaos"]
    assert {chaos[f"{kind}_clients"] for kind in ("garbage", "oversize", "silent", "deaf")} == {1}
    assert chaos["oversize_closed_by_server"] >= 1  # FRAME_TOO_LARGE closes the connection
    assert chaos["silent_closed_by_server"] >= 1  # auth timeout (1 s here)
    assert s["acked"] > 0


async def test_cli_scenario_json_summary(gateway, tmp_path):
    _, devices, _ = gateway
    path = tmp_path / "devices.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["serial", "secret", "project"])
        writer.writerows([serial, secret, "BENCH"] for serial, secret in devices)
    proc = await asyncio.create_subprocess_exec(
        "lmg", "sim", "terminals", "--target", f"127.0.0.1:{gateway[0].port}", "--devices", str(path),
        "--scenario", "idle", "--duration", "0.5", "--processes", "2", "--source-addresses", "127.0.0.1-127.0.0.2",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**__import__("os").environ, "PATH": __import__("os").path.dirname(__import__("sys").executable) + ":" +
             __import__("os").environ.get("PATH", "")})
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err
    summary = orjson.loads(out)
    assert (summary["devices"], summary["peak_online"], summary["processes"], summary["source_addresses"]) == (
        DEVICES, DEVICES, 2, 2)


def test_histograms_merge_and_split_deals_devices():
    a, b = Histogram(), Histogram()
    for ms in range(1, 101):
        (a if ms % 2 else b).add(ms / 1000)
    a.merge(Histogram.from_json(orjson.loads(orjson.dumps(b.to_json()))))
    assert a.n == 100 and 48 <= a.quantile_ms(0.5) <= 52 and 97 <= a.quantile_ms(0.99) <= 101
    parts = split_spec(FleetSpec(host="h", port=1, devices=[[str(i), "00"] for i in range(5)], rate=10), 2)
    assert [len(p.devices) for p in parts] == [3, 2] and [p.rate for p in parts] == [5, 5]
    assert merge_summaries([], parts[0], 0)["acks_per_s"] is None


async def test_a_heartbeat_or_photo_in_flight_does_not_hold_back_punches_settled():
    """The outage benchmark's "every punch acknowledged" waited for a moment when none of
    5,000 terminals had a heartbeat in flight: acked_s read 79 s for punches acked by 30."""
    fleet = Fleet(FleetSpec(host="h", port=1, devices=[["GS-1", "00" * 32]], scenario="backlog"))
    terminal = fleet.terminals[0]
    terminal.supply = 0
    terminal.inflight[1] = (None, 0.0)  # a heartbeat
    assert terminal.settled() == (True, True)
    terminal.inflight[2] = (PHOTO_FRAME, 0.0)
    terminal.photo_seq, terminal.upload = 2, PhotoUpload(1, bytes(32), 100)
    assert terminal.settled() == (True, False)
    terminal.inflight[3] = ([object()], 0.0)  # a punch batch
    assert terminal.settled() == (False, False)


async def test_a_handshake_the_server_never_answers_times_out_and_is_retried():
    """The fleet's handshake bound (ack_timeout_s) against a listener that accepts and stays silent."""
    accepted = []

    async def silent(reader, writer):
        accepted.append(writer)
        await reader.read()  # until the fleet gives up and closes

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        s = await run_fleet(FleetSpec(host="127.0.0.1", port=port, devices=[["SC000001", "00" * 32]],
                                      scenario="idle", duration_s=0.1, connect_phase_s=1.5, ack_timeout_s=0.3,
                                      reconnect_base_s=0.1, reconnect_max_s=0.1))
    finally:
        server.close()
    assert s["connect_failures"] >= 2 and len(accepted) >= 2  # gave up, then tried again
    assert s["peak_online"] == 0
