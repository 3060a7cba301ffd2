"""Photos shared between gateway nodes on one PostgreSQL database (issue 17).

Two PostgreSQL stores over one schema with different data directories are two nodes:
what one node stored, another node's forwarder must be able to deliver. The photo bytes
used to live under each node's own `<data dir>/photos/` while the `photos` table is
shared, so node B found "file is missing" and its late-photo sweep marked the photo
forwarded: it never reached the province.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from lmg.simulators.province import report
from lmg.storage import PunchIn, open_store
from tests.server.forwarding.conftest import WAIT_S, drained, fast_config
from tests.storage.conftest import PG_DSN, drop_schema, require_postgres
from tests.waiting import wait_for

pytestmark = pytest.mark.postgres


@pytest.fixture
async def two_nodes(tmp_path):
    """(node A, node B): two PostgreSQL stores on one fresh schema, each with its own data dir."""
    require_postgres()
    schema = f"t_{os.urandom(6).hex()}"
    url = f"{PG_DSN}?schema={schema}"
    node_a = await open_store(url, data_dir=tmp_path / "node-a")
    node_b = await open_store(url, data_dir=tmp_path / "node-b")
    try:
        yield node_a, node_b
    finally:
        await node_a.close()
        await node_b.close()
        await drop_schema(schema)


async def store_punch_with_photo(node, serial: str) -> bytes:
    """What a terminal does on `node`: a punch naming a photo, then the photo in chunks."""
    photo = os.urandom(30_000)
    sha = hashlib.sha256(photo).digest()
    await node.add_device(serial, project_code="P-1", region_code="620100")
    await node.store_punches([PunchIn(serial, 1, "620102198503000011", time.time_ns() // 1_000_000, 1, 1,
                                      365, sha, len(photo))])
    for offset in range(0, len(photo), 16_384):
        await node.photo_append(serial, sha, len(photo), offset, photo[offset:offset + 16_384])
    return sha


async def test_a_photo_stored_on_one_node_is_delivered_by_another_nodes_forwarder(two_nodes, province, forwarding):
    node_a, node_b = two_nodes
    sha = await store_punch_with_photo(node_a, "GS-NODE-A-1")
    assert await node_b.get_photo(sha) is not None, "node B cannot read the photo node A stored"
    sim = await province()
    running = forwarding(node_b, fast_config(sim.url, late_photo_s=0.1))
    await drained(node_b)

    async def settled() -> bool:  # at the province, or (the bug) marked forwarded without it
        return report(sim.data_dir)["photos"] == 1 or not await node_b.unforwarded_photos(2**62, 10)

    await wait_for(settled, WAIT_S, "the photo sent or marked forwarded by node B")
    assert report(sim.data_dir)["photos"] == 1, "node B marked the photo forwarded without sending it"
    assert running.forwarder.stats.photos_sent == 1


async def test_a_photo_file_from_before_version_7_is_left_pending_by_other_nodes_and_sent_by_its_own(
        two_nodes, province, forwarding, caplog):
    # Photos stored before migration 0007 are files in one node's data dir. Node B cannot
    # read them: it must leave them pending (it used to mark them forwarded), and node A,
    # which reads its own files after the table, sends them.
    node_a, node_b = two_nodes
    photo = os.urandom(5_000)
    sha = hashlib.sha256(photo).digest()
    await node_a.blobs.fallback.put(sha.hex(), photo)  # as version 6 wrote it: a file on node A
    await node_a._record_photo(sha, len(photo))
    await node_a._execute("UPDATE photos SET stored_at_ms = stored_at_ms - 3600000")  # an hour ago
    assert await node_a.get_photo(sha) == photo and await node_b.get_photo(sha) is None
    sim = await province()
    on_b = forwarding(node_b, fast_config(sim.url, late_photo_s=600))
    await wait_for(lambda: on_b.forwarder._session is not None, WAIT_S, "node B's HTTP session")
    assert await on_b.forwarder.send_late_photos() == 0
    assert await node_b.unforwarded_photos(2**62, 10) == [sha], "node B marked a photo it could not read"
    assert on_b.forwarder.stats.failures["photo_unreadable"] == 1
    assert "unreadable on this node" in caplog.text
    await on_b.stop()

    on_a = forwarding(node_a, fast_config(sim.url, late_photo_s=600))
    await wait_for(lambda: on_a.forwarder._session is not None, WAIT_S, "node A's HTTP session")
    assert await on_a.forwarder.send_late_photos() == 1
    assert report(sim.data_dir)["photos"] == 1
    assert await node_b.unforwarded_photos(2**62, 10) == []
