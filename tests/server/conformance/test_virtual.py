"""The whole examination against the simulated firmware, over a fake wire in virtual time.

With the document's own waits (KitTimings() and FirmwareConfig() defaults): the
well-behaved device passes every MUST, and each misbehaviour of simulators/firmware.py
`MISBEHAVIOURS` fails its item and no other. A misbehaviour added there is graded here
without a change to this file.
"""

from __future__ import annotations

import random

import pytest

from lmg.server.conformance.catalogue import ITEMS, CATALOGUE, KitTimings, Level
from lmg.server.conformance.examiner import Examiner
from lmg.server.conformance.report import REPORT_SCHEMA, schema_errors
from lmg.simulators.firmware import MISBEHAVIOURS, FirmwareConfig, FirmwareCore, Flash
from tests.server.conformance.virtual import WALL0, VirtualRun

SECRET = bytes(range(32))
SERIAL = "GS-LZ-000123"
HOUR_MS = 3_600_000


def examine(misbehave: frozenset[str] = frozenset(), seed: int = 1, secret: bytes | None = SECRET,
            punch_every_ms: int = 5_000) -> tuple[dict, VirtualRun]:
    examiner = Examiner(KitTimings(), secret=secret, serial=SERIAL, wall_at_start_ms=WALL0,
                        entropy=random.Random(seed).randbytes)
    core = FirmwareCore(FirmwareConfig(SERIAL, SECRET, misbehave=misbehave), Flash(), rng=random.Random(seed + 1),
                        now_ms=WALL0)
    run = VirtualRun(examiner, core, punch_every_ms=punch_every_ms, photo_share=0.5, photo_bytes=40_000,
                     seed=seed + 2)
    return run.run(HOUR_MS), run


def verdicts(report: dict) -> dict[str, str]:
    return {item["id"]: item["verdict"] for item in report["items"]}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_well_behaved_device_conforms(seed):
    report, run = examine(seed=seed)
    must = {s.id for s in CATALOGUE if s.level is Level.MUST}
    assert {i: v for i, v in verdicts(report).items() if i in must and v != "pass"} == {}
    assert report["summary"]["verdict"] == "conforms"
    assert report["summary"]["not run"] == 0 and report["summary"]["not_reached"] == []
    assert run.examiner.done and run.now < HOUR_MS  # ended by its plan, not by the limit
    assert schema_errors(report, REPORT_SCHEMA) == []


@pytest.mark.parametrize("kind", sorted(MISBEHAVIOURS))
def test_each_misbehaviour_fails_its_item_and_only_that_one(kind):
    item_id, _ = MISBEHAVIOURS[kind]
    report, _ = examine(frozenset({kind}))
    failed = sorted(i for i, v in verdicts(report).items() if v in ("fail", "non-strict"))
    assert failed == [item_id], f"{kind}: expected only {item_id} to fail"
    assert report["summary"]["verdict"] == "does not conform"


def test_every_misbehaviour_names_an_item_of_the_catalogue():
    assert {item for item, _ in MISBEHAVIOURS.values()} <= set(ITEMS)


def test_without_the_secret_the_handshake_is_not_run_and_the_device_cannot_conform():
    report, _ = examine(secret=None)
    assert verdicts(report)["auth.handshake"] == "not run"
    assert report["summary"]["verdict"] == "does not conform"


def test_a_device_that_never_punches_leaves_the_punch_items_not_run_and_the_kit_moves_on():
    report, run = examine(punch_every_ms=10 * HOUR_MS)
    v = verdicts(report)
    assert v["punch.retransmit_timeout"] == v["photo.upload"] == "not run"
    assert v["reconnect.goodbye_backoff"] == "pass"  # the reconnect phase still ran, after punch_idle_s
    assert "punch.duplicate" in report["summary"]["not_reached"]
    assert any("punch" in line.lower() for line in run.said)  # the operator was told to punch
