"""Forwarders on two gateway nodes on one PostgreSQL outbox (issue 17 §2): no record is
sent by both at once, each device's records arrive in order, and the photos stored on
either node reach the province."""

from __future__ import annotations

import pytest

from lmg.simulators.province import report
from tests.server.forwarding.conftest import WAIT_S, add_punches, drained, fast_config
from tests.server.forwarding.test_forwarder import arrival_order_per_device, held
from tests.server.forwarding.test_shared_photos import store_punch_with_photo, two_nodes  # noqa: F401 - fixture
from tests.waiting import wait_for

pytestmark = pytest.mark.postgres


async def test_two_nodes_forward_the_shared_outbox_once_and_in_order(two_nodes, province, forwarding):  # noqa: F811
    node_a, node_b = two_nodes
    # A province answering in 20 ms keeps the outbox's 58 batches of 7 in hand for ~0.6 s with
    # 2 requests at a time: without it one node could drain everything before the other's first
    # claim (seen once the partitioned claim took 14 ms instead of 677), and "both nodes worked"
    # would depend on scheduling rather than on the shared outbox.
    sim = await province(latency_ms=20)
    sent = await add_punches(node_a, devices=10, per_device=40)
    photo_shas = [await store_punch_with_photo(node, f"GS-PHOTO-{name}") for node, name in ((node_a, "A"),
                                                                                            (node_b, "B"))]
    on_a = forwarding(node_a, fast_config(sim.url, batch_records=7, late_photo_s=0.1))
    on_b = forwarding(node_b, fast_config(sim.url, batch_records=7, late_photo_s=0.1))
    await drained(node_a)
    summary = report(sim.data_dir)
    assert held(sim) >= set(sent)
    assert summary["duplicates"] == 0, "a record was sent by both nodes"
    for serial, numbers in arrival_order_per_device(sim).items():
        assert numbers == sorted(numbers), serial
    assert on_a.forwarder.stats.acked > 0 and on_b.forwarder.stats.acked > 0, "one node did all the work"
    assert on_a.forwarder.stats.acked + on_b.forwarder.stats.acked == len(sent) + len(photo_shas)

    async def photos_there() -> bool:
        return report(sim.data_dir)["photos"] == 2 and not await node_b.unforwarded_photos(2**62, 10)

    await wait_for(photos_there, WAIT_S, "both nodes' photos at the province, marked forwarded")
