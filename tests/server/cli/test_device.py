"""`lmg device ...` against the running gateway's store: what it prints, what it changes, its errors."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import stat

import orjson

from lmg.protocol import ResultCode
from lmg.server.cli import main
from lmg.simulators.terminal import DeviceCredentials

HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


async def lmg(capsys, gw, *argv: str) -> tuple[int, str, str]:
    """Run `lmg ARGV --data-dir <the gateway's>` in a thread (it runs its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, [*argv, "--data-dir", gw.config.gateway.data_dir])
    out, err = capsys.readouterr()
    return code, out, err


async def auth(gw, serial: str, secret: bytes) -> ResultCode:
    client = await gw.raw()
    return ResultCode((await client.authenticate(DeviceCredentials(serial, secret))).result)


async def test_add_prints_the_secret_once_and_list_never_shows_it(gw, capsys):
    code, out, _ = await lmg(capsys, gw, "device", "add", "GS-CLI-000001", "--project", "P-CLI")
    assert code == 0
    secrets = HEX64.findall(out)
    assert len(secrets) == 1, out
    assert await auth(gw, "GS-CLI-000001", bytes.fromhex(secrets[0])) == ResultCode.OK
    for argv in (["device", "list"], ["device", "list", "--json"]):
        code, out, _ = await lmg(capsys, gw, *argv)
        assert code == 0 and "GS-CLI-000001" in out
        assert secrets[0] not in out and not HEX64.search(out)
        assert gw.device.secret.hex() not in out
    listed = orjson.loads(out)
    assert {d["serial"] for d in listed} == {gw.device.serial, "GS-CLI-000001"}
    assert all("secret" not in d for d in listed)
    code, _, err = await lmg(capsys, gw, "device", "add", "GS-CLI-000001", "--project", "P-CLI")
    assert code == 2 and "already exists" in err and "rotate-secret" in err


async def test_generate_writes_an_owner_only_csv_that_authenticates(gw, capsys, tmp_path):
    out_file = tmp_path / "devices.csv"
    code, out, _ = await lmg(capsys, gw, "device", "generate", "--count", "3", "--prefix", "GS-GEN-",
                             "--project", "P-GEN", "--out", str(out_file))
    assert code == 0 and not HEX64.search(out)
    assert stat.S_IMODE(os.stat(out_file).st_mode) == 0o600
    rows = list(csv.reader(out_file.open()))
    assert rows[0] == ["serial", "secret", "project"]
    assert [r[0] for r in rows[1:]] == ["GS-GEN-000001", "GS-GEN-000002", "GS-GEN-000003"]
    assert await auth(gw, rows[2][0], bytes.fromhex(rows[2][1])) == ResultCode.OK
    code, _, err = await lmg(capsys, gw, "device", "generate", "--count", "1", "--prefix", "GS-GEN2-",
                             "--project", "P-GEN", "--out", str(out_file))
    assert code == 2 and "exists" in err
    assert len(list(csv.reader(out_file.open()))) == 4  # not overwritten


async def test_import_adds_new_devices_and_leaves_existing_ones(gw, capsys, tmp_path):
    secret = os.urandom(32)
    source = tmp_path / "import.csv"
    source.write_text(f"serial,secret,project\nGS-IMP-000001,{secret.hex()},P-IMP\n"
                      f"{gw.device.serial},{os.urandom(32).hex()},P-IMP\n")
    code, out, _ = await lmg(capsys, gw, "device", "import", str(source))
    assert code == 0 and "imported 1 devices (1 already present" in out
    assert await auth(gw, "GS-IMP-000001", secret) == ResultCode.OK
    assert await auth(gw, gw.device.serial, gw.device.secret) == ResultCode.OK  # unchanged
    bad = tmp_path / "bad.csv"
    bad.write_text("GS-IMP-000002,not-hex,P-IMP\n")
    code, _, err = await lmg(capsys, gw, "device", "import", str(bad))
    assert code == 2 and f"{bad}:1" in err and "hex" in err


async def test_disable_enable_and_rotate_secret(gw, capsys):
    serial, old = gw.device.serial, gw.device.secret
    assert (await lmg(capsys, gw, "device", "disable", serial))[0] == 0
    assert await auth(gw, serial, old) == ResultCode.DEVICE_DISABLED
    assert (await lmg(capsys, gw, "device", "enable", serial))[0] == 0
    assert await auth(gw, serial, old) == ResultCode.OK
    code, out, _ = await lmg(capsys, gw, "device", "rotate-secret", serial, "--json")
    assert code == 0
    new = bytes.fromhex(orjson.loads(out)["secret"])
    assert new != old and len(new) == 32
    assert await auth(gw, serial, old) == ResultCode.BAD_SIGNATURE
    assert await auth(gw, serial, new) == ResultCode.OK
    changes = [e.event for e in await gw.store.list_audit(limit=20)]
    assert {"device_disable", "device_enable", "device_rotate_secret"} <= set(changes)


async def test_unknown_serial_exits_2_with_a_clear_message(gw, capsys):
    for action in ("disable", "enable", "rotate-secret"):
        code, out, err = await lmg(capsys, gw, "device", action, "GS-NOBODY")
        assert code == 2, action
        assert out == "" and "no device GS-NOBODY" in err and "lmg device list" in err


async def test_disabling_or_rotating_from_another_process_ends_the_open_session(start_gateway, capsys):
    # `lmg device disable` used to leave the device's open session acked for up to 60 s;
    # the gateway now follows the store's session ends (every signal_poll_s on SQLite).
    from lmg.protocol import Goodbye

    gw = await start_gateway(signal_poll_s=0.1)
    client = await gw.raw_authenticated()
    code, _, _ = await lmg(capsys, gw, "device", "rotate-secret", gw.device.serial)
    assert code == 0
    assert [(type(m), m.reason) for m in await client.closed_after()] == [(Goodbye, ResultCode.CREDENTIALS_CHANGED)]
    other = await gw.add_device("GS-CLI-000009")
    client = await gw.raw_authenticated(other)
    code, _, _ = await lmg(capsys, gw, "device", "disable", other.serial)
    assert code == 0
    assert [(type(m), m.reason) for m in await client.closed_after()] == [(Goodbye, ResultCode.DEVICE_DISABLED)]
