"""`lmg sim device` (simulators/firmware.py) against the real gateway: a long-lived terminal's
punches, photos, reconnects, state file, clock and leaving, over TCP and WebSocket."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from lmg.protocol import ResultCode
from lmg.simulators.firmware import FirmwareConfig, Phase, SimulatedDevice, make_photo
from lmg.simulators.reconnect import BackoffPolicy

from tests.server.conftest import WAIT_S, GatedStore, wait_for

#: Waits shrunk so a test runs in seconds: the document's 1 s back-off base and 15 s resend.
FAST = BackoffPolicy(base_s=0.05, cap_s=0.2)


def device_for(gw, *, transport: str = "tcp", state_path=None, **config) -> SimulatedDevice:
    port = gw.tcp_port if transport == "tcp" else gw.ws_port
    settings = {"backoff": FAST, "ack_timeout_s": 2.0, **config}
    return SimulatedDevice(FirmwareConfig(gw.device.serial, gw.device.secret, **settings), gw.host, port,
                           transport=transport, state_path=state_path, rng=random.Random(7))


async def running(device: SimulatedDevice) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(device.run(duration_s=60))
    await wait_for(lambda: device.core.phase is Phase.ONLINE, what="the device online")
    return task


async def finish(device: SimulatedDevice, task: asyncio.Task) -> dict:
    await device.stop()
    return await asyncio.wait_for(task, WAIT_S)


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_punches_and_photos_are_acknowledged_and_uploaded(gw, transport):
    device = device_for(gw, transport=transport)
    task = await running(device)
    photo = make_photo(random.Random(1), 40_000)  # three 16 KiB chunks
    numbers = [device.punch(), device.punch(photo=photo), device.punch()]
    await wait_for(lambda: device.core.pending_records == 0 and device.core.pending_photos == 0,
                   what="every punch acknowledged and the photo uploaded")
    summary = await finish(device, task)
    assert await gw.store.count_punches(gw.device.serial) == 3
    stored = await gw.store.get_punch(gw.device.serial, numbers[1])
    assert stored is not None
    assert summary["acked"] == 3 and summary["photos_uploaded"] == 1


async def test_unanswered_punches_are_resent_after_a_forced_disconnect(start_gateway):
    gw = await start_gateway(wrap=GatedStore)
    device = device_for(gw)
    task = await running(device)
    first = [device.punch() for _ in range(3)]
    store = gw.gateway.store  # the GatedStore: the records reach it and wait there unanswered
    await asyncio.wait_for(store.entered.wait(), WAIT_S)
    assert device.core.pending_records == 3
    sessions = device.core.sessions
    assert device._writer is not None
    device._writer.transport.abort()  # the network drops: no GOODBYE, no FIN handshake
    await wait_for(lambda: device.core.sessions > sessions and device.core.phase is Phase.ONLINE,
                   what="a new session")
    store.release.set()
    await wait_for(lambda: device.core.pending_records == 0, what="every record answered")
    summary = await finish(device, task)
    assert await gw.store.count_punches(gw.device.serial) == 3
    assert summary["resent"] >= 3  # each went again on the new connection, same record_no
    assert summary.get("acked", 0) + summary.get("duplicates", 0) == 3  # each answered once
    assert sorted(first) == list(range(first[0], first[0] + 3))


async def test_the_state_file_survives_a_restart_and_its_records_are_resent(start_gateway, tmp_path):
    gw = await start_gateway(wrap=GatedStore)
    state = tmp_path / "device.json"
    device = device_for(gw, state_path=state)
    task = await running(device)
    numbers = [device.punch(photo=make_photo(random.Random(2), 3000)), device.punch()]
    await asyncio.wait_for(gw.gateway.store.entered.wait(), WAIT_S)
    await device.stop()  # the process ends with both records unanswered
    await asyncio.wait_for(task, WAIT_S)
    assert state.exists()

    gw.gateway.store.release.set()
    again = device_for(gw, state_path=state)  # a new process: only the file remembers
    assert again.core.pending_records == 2 and again.core.flash.next_record_no == numbers[-1] + 1
    task = await running(again)
    later = again.punch()
    assert later == numbers[-1] + 1  # never reused
    await wait_for(lambda: again.core.pending_records == 0 and again.core.pending_photos == 0,
                   what="the saved records answered and the photo uploaded")
    await finish(again, task)
    assert await gw.store.count_punches(gw.device.serial) == 3
    third = device_for(gw, state_path=state)
    assert third.core.pending_records == 0 and third.core.flash.next_record_no == later + 1


async def test_a_stopping_device_says_terminal_leaving(gw, monkeypatch):
    from lmg.server.gateway import session as session_module

    reasons: list[int] = []
    real = session_module.Session.receive

    def spy(self, item, *args, **kwargs):
        if getattr(item, "msg_type", None) == 0x0006:
            reasons.append(item.reason)
        return real(self, item, *args, **kwargs)

    monkeypatch.setattr(session_module.Session, "receive", spy)
    device = device_for(gw)
    task = await running(device)
    await finish(device, task)
    assert reasons == [ResultCode.TERMINAL_LEAVING]


async def test_set_time_moves_the_clock_of_every_later_frame(start_gateway):
    from tests.server.downlink.test_e2e import FAST as DOWNLINK_FAST, queue

    gw = await start_gateway(**DOWNLINK_FAST)
    device = device_for(gw)
    task = await running(device)
    behind_ms = 3_600_000  # an hour behind: still inside the backlog the gateway accepts
    command = await queue(gw.store, gw.device.serial, "set-time", f"time_ms={device.clock_ms() - behind_ms}")
    await wait_for(lambda: _acked(gw.store, command), what="SET_TIME acknowledged")
    record_no = device.punch()
    await wait_for(lambda: device.core.pending_records == 0, what="the punch answered")
    await finish(device, task)
    stored = await gw.store.get_punch(gw.device.serial, record_no)
    assert stored is not None
    assert stored.punch_time_ms < time.time_ns() // 1_000_000 - behind_ms // 2  # taken on the corrected clock


async def _acked(store, command_id: int) -> bool:
    from lmg.storage import CommandState

    return (await store.get_command(command_id)).state is CommandState.ACKED


# --- the short-lived simulator (simulators/terminal.py) keeps the same rules ----------------------


async def test_terminal_connection_says_terminal_leaving_when_it_leaves():
    from lmg.protocol import Goodbye
    from lmg.simulators.terminal import DeviceCredentials, TerminalConnection

    from tests.simulators.server_end import accept_terminal, listener

    async with listener() as (port, accepted):
        connection = TerminalConnection(DeviceCredentials("GS-SIM-1", bytes(32)), "127.0.0.1", port, timeout_s=WAIT_S)
        await connection.open()
        end = await asyncio.wait_for(accepted.get(), WAIT_S)
        await asyncio.gather(connection.authenticate(), accept_terminal(end))
        await connection.close(leaving=True)
        goodbye = await end.expect(Goodbye)
        assert (goodbye.reason, goodbye.reconnect_after_s) == (ResultCode.TERMINAL_LEAVING, 0)
        assert await end.receive() is None  # then the close


async def test_upload_punches_waits_what_locked_out_and_goodbye_name(gw, monkeypatch):
    from lmg.simulators import terminal as terminal_module
    from lmg.simulators.reconnect import Ending
    from lmg.simulators.terminal import TerminalError, make_punch, upload_punches

    endings: list[Ending] = []

    def recorded(policy, failures, u, ending):
        endings.append(ending)
        return 0.0

    monkeypatch.setattr(terminal_module, "reconnect_wait_s", recorded)
    attempts = 0

    async def connect():
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise TerminalError("authentication refused: LOCKED_OUT", ResultCode.LOCKED_OUT, 42)
        return await gw.terminal()

    now = time.time_ns() // 1_000_000
    tally = await upload_punches(connect, [make_punch(1, 1, now)])
    assert tally.acked == 1 and endings == [Ending(ResultCode.LOCKED_OUT, 42)]


# --- the command line -----------------------------------------------------------------------------


async def lmg_sim_device(*args: str) -> tuple[int, str, str]:
    from tests.server.conftest import LMG, REPO

    proc = await asyncio.create_subprocess_exec(LMG, "sim", "device", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, cwd=REPO)
    out, err = await asyncio.wait_for(proc.communicate(), 6 * WAIT_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_lmg_sim_device_runs_punches_and_leaves_its_state(gw, tmp_path):
    import orjson

    state = tmp_path / "state.json"
    code, out, err = await lmg_sim_device(
        "--target", f"{gw.host}:{gw.tcp_port}", "--serial", gw.device.serial, "--secret", gw.device.secret.hex(),
        "--punch-every", "0.2", "--photo-share", "0.5", "--photo-kb", "4", "--duration", "2", "--state", str(state),
        "--first-record", "1000", "--json")
    assert code == 0, err
    summary = orjson.loads(out)
    assert summary["phase"] == "stopped" and summary["sessions"] == 1 and summary["punches"] >= 1
    stored = await gw.store.count_punches(gw.device.serial)
    assert stored == summary["punches"] - summary["pending_records"]  # everything answered was stored
    saved = orjson.loads(state.read_bytes())
    assert saved["next_record_no"] == 1000 + summary["punches"] and len(saved["records"]) == summary["pending_records"]


@pytest.mark.parametrize("args, message", [
    (["--misbehave", "no_such"], "--misbehave no_such: unknown; choose from bad_hmac, "),
    (["--secret", "00"], "--secret must be 64 hex characters"),
    (["--target", "nowhere"], "--target 'nowhere': use HOST:PORT"),
    (["--photo-share", "2"], "--photo-share 2.0: use a share between 0 and 1"),
])
async def test_lmg_sim_device_refuses_bad_arguments_saying_why(args, message):
    base = {"--target": "127.0.0.1:9", "--serial": "GS-X", "--secret": "00" * 32}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    code, _, err = await lmg_sim_device(*[word for pair in base.items() for word in pair])
    assert code == 2 and message in err
