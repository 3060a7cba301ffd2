"""`lmg sim terminals --json` against a running gateway: one summary object with true counts."""

from __future__ import annotations

import asyncio

import orjson

from lmg.server.cli import main

from tests.server.conftest import LMG, REPO, WAIT_S

DEVICES, PUNCHES = 3, 5


async def sim(gw, devices_csv, *extra: str) -> tuple[int, dict]:
    proc = await asyncio.create_subprocess_exec(
        LMG, "sim", "terminals", "--target", f"{gw.host}:{gw.tcp_port if 'ws' not in extra else gw.ws_port}",
        "--devices", str(devices_csv), "--punches-per-device", str(PUNCHES), "--json", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 6 * WAIT_S)
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1, (out, err)
    return proc.returncode, orjson.loads(lines[0])


async def test_second_run_of_the_same_records_is_all_duplicates(gw, tmp_path):
    devices_csv = tmp_path / "devices.csv"
    code = await asyncio.to_thread(main, ["device", "generate", "--count", str(DEVICES), "--prefix", "GS-SIM-",
                                          "--project", "P-SIM", "--out", str(devices_csv),
                                          "--data-dir", gw.config.gateway.data_dir])
    assert code == 0
    total = DEVICES * PUNCHES
    code, first = await sim(gw, devices_csv)
    assert code == 0, first
    assert {k: first[k] for k in ("sent", "acked", "duplicates", "rejected", "errors")} == {
        "sent": total, "acked": total, "duplicates": 0, "rejected": 0, "errors": 0}
    assert await gw.store.count_punches() == total

    code, second = await sim(gw, devices_csv)
    assert code == 0, second
    assert {k: second[k] for k in ("sent", "acked", "duplicates", "rejected", "errors")} == {
        "sent": total, "acked": 0, "duplicates": total, "rejected": 0, "errors": 0}

    code, over_ws = await sim(gw, devices_csv, "--transport", "ws", "--first-record", "100", "--batch-size", "5")
    assert code == 0, over_ws
    assert (over_ws["acked"], over_ws["duplicates"], over_ws["errors"]) == (total, 0, 0)
    assert await gw.store.count_punches() == 2 * total

