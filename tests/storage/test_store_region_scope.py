"""The region scope of the operators' listings, on every backend: devices, projects, punches
and commands keep what a node of lmg.protocol.regions covers, never a code prefix."""

from __future__ import annotations

import pytest

from lmg.protocol.regions import UnknownRegion
from test_store_contract import punch

# 城关区 and 七里河区 under 兰州市; 兰州新区 starts with 6201 but is a node of its own.
PLACES = {"620102": "CG", "620103": "QLH", "620171": "LZXQ", "620502": "TS"}


@pytest.fixture
async def spread(store):
    for code, tag in PLACES.items():
        await store.add_project(f"P-{tag}", name=tag, region_code=code)
        await store.add_device(f"D-{tag}", project_code=f"P-{tag}", region_code=code)
        await store.store_punches([punch(f"D-{tag}", 1)])
        await store.enqueue_command(f"D-{tag}", 0x020B, b"{}", expires_at_ms=None, created_by="t")
    return store


@pytest.mark.parametrize(("scope", "tags"), [
    (None, {"CG", "QLH", "LZXQ", "TS"}),
    ("620000", {"CG", "QLH", "LZXQ", "TS"}),
    ("620100", {"CG", "QLH"}),  # not 兰州新区 (620171), though its code starts with 6201
    ("620102", {"CG"}),
    ("620171", {"LZXQ"}),
    ("620500", {"TS"}),
    ("620200", set()),
])
async def test_each_listing_keeps_what_the_scope_covers(spread, scope, tags):
    store = spread
    devices = await store.list_devices(region_scope=scope)
    assert {d.serial[2:] for d in devices} == tags
    projects = await store.list_projects(region_scope=scope)
    assert {p.code[2:] for p in projects} == tags
    punches = await store.list_punches(region_scope=scope)
    assert {p.punch.device_serial[2:] for p in punches} == tags
    commands = await store.list_commands(region_scope=scope)
    assert {c.device_serial[2:] for c in commands} == tags


async def test_a_scope_outside_the_tree_is_refused(spread):
    with pytest.raises(UnknownRegion):
        await spread.list_devices(region_scope="620199")
