"""The downlink end to end: the real gateway over real sockets, the real store (SQLite), and the
simulator's terminal (simulators/device.py behind `TerminalConnection`) answering as firmware would.

Every wait is bounded (tests/waiting.py); nothing sleeps to let time pass: the command timeouts
are short settings, and the tests wait for the store or the terminal to show the outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from datetime import date

import pytest

from lmg.protocol import MessageType, ResultCode
from lmg.protocol.roster_file import china_date
from lmg.server.cli.device import _list as device_list
from lmg.server.downlink.commands import COMMAND_TYPES, encode_arguments, parse_arguments
from lmg.simulators.device import TerminalDevice
from lmg.simulators.terminal import worker_id_for
from lmg.storage import CommandState, WorkerIn
from tests.server.conftest import PROJECT, wait_for

TODAY = date(2025, 11, 24)
PHOTO = b"\xff\xd8\xff\xe0"  # a JPEG's first bytes: the store takes JPEG or PNG only


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def photo(n: int, size: int = 30_000) -> bytes:
    body = f"face-of-worker-{n}-".encode() * (size // 16 + 1)
    return (PHOTO + body)[:size]


async def add_project(store, workers: int = 0, *, faces: bool = True, size: int = 30_000, first: int = 1) -> list:
    if await store.get_project(PROJECT) is None:
        await store.add_project(PROJECT, name="测试项目", region_code="620100")
    rows = []
    for n in range(first, first + workers):
        sha = await store.put_face(photo(n, size)) if faces else None
        rows.append(WorkerIn(worker_id_for(n), f"工人{n}", card_no=f"C{n}", entry_date=date(2025, 1, 1),
                             face_sha256=sha))
    if rows:
        await store.import_workers(PROJECT, rows, today=TODAY)
    return rows


async def queue(store, serial: str, name: str, *words: str, expires_ms: int | None = None) -> int:
    spec = COMMAND_TYPES[name]
    expires = expires_ms if expires_ms is not None else now_ms() + 3_600_000
    return await store.enqueue_command(serial, int(spec.message_type), encode_arguments(parse_arguments(name, words)),
                                       expires_at_ms=expires, created_by="test")


async def state_of(store, command_id: int) -> CommandState:
    return (await store.get_command(command_id)).state


def handled(device: TerminalDevice, kind: MessageType) -> list:
    return [h for h in device.history if h.msg_type == kind]


def roster(device: TerminalDevice) -> dict:
    return {wid: (e.name, e.face_sha256) for wid, e in device.workers.items()}


async def stored_roster(store) -> dict:
    return {w.worker_id: (w.name, w.face_sha256) for w in await store.list_workers(PROJECT)}


FAST = dict(signal_poll_s=0.05, presence_flush_s=0.1)


# --- rosters ----------------------------------------------------------------------------------------


async def test_a_roster_reaches_a_new_terminal_with_its_faces_and_its_version_is_stored(start_gateway, capsys):
    gw = await start_gateway(**FAST)
    await add_project(gw.store, 5)
    terminal = await gw.terminal()
    await terminal.wait_for_roster_version(5)
    device = terminal.device
    assert roster(device) == await stored_roster(gw.store)
    assert all(device.face_of(wid) == photo(n) for n, wid in enumerate(sorted(device.workers), 1))
    await wait_for(lambda: _device_version(gw, 5), what="the acknowledged version in the store")
    capsys.readouterr()
    assert await device_list(gw.store, argparse.Namespace(json=False)) == 0  # what `lmg device list` prints
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[5] == "roster" and row.split()[0] == gw.device.serial and row.split()[5] == "5"


async def _device_version(gw, version: int) -> bool:
    return (await gw.store.get_device(gw.device.serial)).roster_version == version


async def test_a_roster_change_reaches_an_online_terminal(start_gateway):
    gw = await start_gateway(**FAST)
    await add_project(gw.store, 2)
    terminal = await gw.terminal()
    await terminal.wait_for_roster_version(2)
    await add_project(gw.store, 1, first=3)  # a signal of kind roster: the online terminal is asked again
    await terminal.wait_for_roster_version(3)
    assert roster(terminal.device) == await stored_roster(gw.store)


async def test_a_roster_delta_after_reconnect_sends_only_what_changed(start_gateway):
    gw = await start_gateway(**FAST)
    await add_project(gw.store, 4)
    terminal = await gw.terminal()
    await terminal.wait_for_roster_version(4)
    device = terminal.device
    await wait_for(lambda: _device_version(gw, 4), what="the complete sync recorded")
    await terminal.close()
    # offline: one worker renamed, one gone, one new
    await gw.store.import_workers(PROJECT, [WorkerIn(worker_id_for(2), "改名", card_no="C2",
                                                     entry_date=date(2025, 1, 1))], today=TODAY)
    assert await gw.store.remove_worker(PROJECT, worker_id_for(3), exit_date=TODAY, today=TODAY)
    await add_project(gw.store, 1, first=5)
    before = len(device.history)
    terminal = await gw.terminal(device=device)
    await terminal.wait_for_roster_version(7)
    sent = [h.msg_type for h in list(device.history)[before:]]
    assert sent == [MessageType.ROSTER_VERSION_QUERY, MessageType.ROSTER_UPDATE, MessageType.ROSTER_REMOVE,
                    MessageType.ROSTER_ADD, MessageType.FACE_CHUNK, MessageType.FACE_CHUNK]
    assert roster(device) == await stored_roster(gw.store)


async def test_a_terminal_holding_an_unknown_higher_version_is_resynced_from_nothing(start_gateway):
    gw = await start_gateway(**FAST)
    await add_project(gw.store, 3, faces=False)
    device = TerminalDevice()
    from lmg.protocol import RosterAdd

    device.handle(RosterAdd(500, worker_id_for(99), "另一个平台", "", 1, 0, bytes(32), seq=1))
    terminal = await gw.terminal(device=device)
    await terminal.wait_for_roster_version(3, exact=True)
    assert roster(device) == await stored_roster(gw.store)  # the stranger is gone
    first = [h.msg_type for h in list(device.history)[1:3]]
    assert first == [MessageType.ROSTER_VERSION_QUERY, MessageType.ROSTER_REMOVE]


async def test_a_face_is_resumed_after_a_dropped_connection(start_gateway):
    gw = await start_gateway(face_chunk_bytes=1024, **FAST)
    size = 100 * 1024
    await add_project(gw.store, 1, size=size)
    sha = hashlib.sha256(photo(1, size)).digest()
    terminal = await gw.terminal()
    await terminal.wait_until(lambda d: (d.face_progress(sha) or 0) >= 8 * 1024, what="8 KiB of the face")
    device = terminal.device
    await terminal.close()  # mid-face: the gateway records how far the terminal acknowledged it
    resume = await wait_for(lambda: gw.store.face_progress(gw.device.serial, sha), what="the recorded progress")
    assert 0 < resume < size and resume % 1024 == 0
    assert device.roster_version == 0  # not adopted: the face is not complete
    first_session = len(handled(device, MessageType.FACE_CHUNK))
    terminal = await gw.terminal(device=device)
    await terminal.wait_for_roster_version(1)
    assert device.face_of(worker_id_for(1)) == photo(1, size)
    second_session = len(handled(device, MessageType.FACE_CHUNK)) - first_session
    assert second_session == (size - resume) // 1024  # from where it stood, not from 0
    await wait_for(lambda: _progress_cleared(gw, sha), what="the progress forgotten once the face is in")


async def _progress_cleared(gw, sha: bytes) -> bool:
    return await gw.store.face_progress(gw.device.serial, sha) == 0


# --- commands ---------------------------------------------------------------------------------------


async def test_commands_of_every_type_are_answered_and_acked(start_gateway):
    gw = await start_gateway(**FAST)
    await add_project(gw.store, 2, faces=False)
    terminal = await gw.terminal()
    await terminal.wait_for_roster_version(2)
    serial = gw.device.serial
    ids = {
        "set-time": await queue(gw.store, serial, "set-time", "time_ms=1893456000000"),
        "config-get": await queue(gw.store, serial, "config-get", "keys=volume,relay_ms"),
        "config-set": await queue(gw.store, serial, "config-set", "volume=3"),
        "reboot": await queue(gw.store, serial, "reboot", "delay_s=10"),
        "door-open": await queue(gw.store, serial, "door-open", "door=2", "duration_s=8"),
        "roster-version-query": await queue(gw.store, serial, "roster-version-query"),
    }
    for name, command_id in ids.items():
        await wait_for(lambda: _is(gw.store, command_id, CommandState.ACKED), what=f"{name} acked")
    device = terminal.device
    assert device.config["volume"] == "3" and device.reboots == [10] and device.door_opens == [(2, 8)]
    assert abs(device.clock_ms(now_ms()) - 1893456000000) < 60_000
    config = await gw.store.get_command(ids["config-get"])
    assert json.loads(config.reply) == {"volume": "7", "relay_ms": "3000"}  # read before the config-set
    query = await gw.store.get_command(ids["roster-version-query"])
    assert json.loads(query.reply) == {"roster_version": 2, "worker_count": 2}
    assert (config.result_code, config.attempts) == (ResultCode.OK, 1)


async def _is(store, command_id: int, state: CommandState) -> bool:
    return await state_of(store, command_id) is state


async def test_a_command_the_terminal_refuses_fails_with_its_code(start_gateway):
    gw = await start_gateway(**FAST)
    terminal = await gw.terminal()
    terminal.device.fail(MessageType.DOOR_OPEN, code=ResultCode.COMMAND_FAILED)
    command_id = await queue(gw.store, gw.device.serial, "door-open")
    await wait_for(lambda: _is(gw.store, command_id, CommandState.FAILED), what="the command failed")
    command = await gw.store.get_command(command_id)
    assert (command.result_code, command.attempts) == (ResultCode.COMMAND_FAILED, 1)


async def test_a_command_for_an_offline_device_waits_and_one_past_its_expiry_expires(start_gateway):
    gw = await start_gateway(command_expiry_sweep_s=0.05, **FAST)
    serial = gw.device.serial
    waiting = await queue(gw.store, serial, "reboot")
    doomed = await queue(gw.store, serial, "door-open", expires_ms=now_ms() + 200)
    await wait_for(lambda: _is(gw.store, doomed, CommandState.EXPIRED), what="the command expired")
    assert await state_of(gw.store, waiting) is CommandState.QUEUED
    terminal = await gw.terminal()
    await wait_for(lambda: _is(gw.store, waiting, CommandState.ACKED), what="the waiting command delivered")
    assert terminal.device.door_opens == []


async def test_the_hourly_sweep_prunes_old_signals_and_tombstones_past_their_retention(start_gateway):
    moment = [now_ms()]
    gw = await start_gateway(clock_ms=lambda: moment[0], **FAST)
    store = gw.store
    await add_project(store, 2, faces=False)
    today = china_date(moment[0])
    assert await store.remove_worker(PROJECT, worker_id_for(2), exit_date=today, today=today)
    gone = await store.get_worker(PROJECT, worker_id_for(2))
    assert not gone.on_roster and (await store.get_project(PROJECT)).roster_floor == 0

    moment[0] += 86_400_000 + 1_000  # a day and a second: the signals, not the tombstone (90 days)
    signals, tombstones = await gw.gateway.downlink.prune()
    assert signals >= 2 and tombstones == 0  # the import's and the removal's ROSTER signals at least
    assert await store.get_worker(PROJECT, worker_id_for(2)) is not None
    moment[0] += 90 * 86_400_000
    assert await gw.gateway.downlink.prune() == (0, 1)
    assert await store.get_worker(PROJECT, worker_id_for(2)) is None
    assert (await store.get_project(PROJECT)).roster_floor == gone.version  # below it: a full resync
    assert await store.get_worker(PROJECT, worker_id_for(1)) is not None  # on the roster: never pruned


async def test_no_answer_is_sent_again_and_fails_after_command_max_sends(start_gateway):
    gw = await start_gateway(command_timeout_s=0.2, command_max_sends=3, **FAST)
    terminal = await gw.terminal()
    terminal.device.never_answer(MessageType.REBOOT)
    command_id = await queue(gw.store, gw.device.serial, "reboot")
    await wait_for(lambda: _is(gw.store, command_id, CommandState.FAILED), what="the command given up")
    command = await gw.store.get_command(command_id)
    assert (command.attempts, command.result_code, command.error) == (3, None, "no answer after 3 sends")
    assert [h.result for h in handled(terminal.device, MessageType.REBOOT)] == [None, None, None]
    assert terminal.device.reboots == []


async def test_a_late_answer_after_a_resend_still_acks(start_gateway):
    gw = await start_gateway(command_timeout_s=0.2, command_max_sends=3, **FAST)
    terminal = await gw.terminal()
    terminal.device.never_answer(MessageType.REBOOT, times=1)  # the first send is lost, the second answered
    command_id = await queue(gw.store, gw.device.serial, "reboot", "delay_s=1")
    await wait_for(lambda: _is(gw.store, command_id, CommandState.ACKED), what="acked on the second send")
    assert (await gw.store.get_command(command_id)).attempts == 2 and terminal.device.reboots == [1]


# --- punches first --------------------------------------------------------------------------------


async def test_downlink_frames_wait_while_punches_are_at_the_store_and_go_after_their_answer(start_gateway):
    from lmg.protocol import Ack, DoorOpen, Punch
    from lmg.simulators.terminal import make_punch
    from tests.server.conftest import GatedStore

    gw = await start_gateway(wrap=GatedStore, **FAST)
    client = await gw.raw_authenticated()
    gated = gw.gateway.store
    client.send(Punch.of(make_punch(1, 1, now_ms())))
    await asyncio.wait_for(gated.entered.wait(), 10)  # the punch is at the store
    command_id = await queue(gw.store, gw.device.serial, "door-open")
    link = gw.gateway.sessions[gw.device.serial]
    await wait_for(lambda: link.downlink is not None and link.downlink.commands, what="the command loaded")
    await client.nothing_within(0.2)  # held: a punch answer is about to be written
    gated.release.set()
    first, second = await client.receive(), await client.receive()
    assert isinstance(first, Ack) and first.ref_type == MessageType.PUNCH
    assert isinstance(second, DoorOpen)
    assert await state_of(gw.store, command_id) in (CommandState.QUEUED, CommandState.SENT)


async def test_face_chunks_wait_for_the_connection_to_drain(start_gateway):
    from lmg.protocol import Ack, FaceChunk, Heartbeat, RosterAdd, RosterVersionQuery, RosterVersionReply

    gw = await start_gateway(**FAST)
    await add_project(gw.store, 1)
    client = await gw.raw_authenticated()
    link = gw.gateway.sessions[gw.device.serial]
    link.unsent_bytes = lambda: gw.config.gateway.downlink_max_unsent_bytes  # as if the terminal read nothing
    query = await client.expect(RosterVersionQuery)
    client.send(RosterVersionReply(query.seq, 0, 0))
    add = await client.expect(RosterAdd)
    client.send(Ack(add.seq, MessageType.ROSTER_ADD, now_ms(), ()))
    await client.nothing_within(0.2)  # the announcement went; its face waits for room
    del link.unsent_bytes  # drained
    client.send(Heartbeat(now_ms(), 0, 0))  # any pass of the link looks again
    kinds = [type(await client.receive()) for _ in range(3)]
    assert kinds.count(FaceChunk) == 2 and Ack in kinds


# --- a restart, several processes ----------------------------------------------------------------------


async def test_commands_in_flight_survive_a_gateway_crash(tmp_path, server_process):
    from lmg.simulators.terminal import TerminalConnection
    from lmg.storage import open_store
    from tests.server.conftest import HOST, WAIT_S, provision

    data_dir = tmp_path / "node"
    (credentials,) = await provision(data_dir, ["GS-CRASH-01"])
    flags = ("--signal-poll-s", "0.05", "--command-timeout-s", "60")
    server = await server_process(data_dir, *flags)
    device = TerminalDevice()
    device.never_answer(MessageType.DOOR_OPEN)  # carried out by nobody: the command stays sent
    terminal = TerminalConnection(credentials, HOST, server.ports["tcp"], timeout_s=WAIT_S, device=device)
    await terminal.open()
    await terminal.authenticate()
    store = await open_store(None, data_dir=data_dir)
    try:
        command_id = await queue(store, credentials.serial, "door-open", "door=3")
        await wait_for(lambda: _is(store, command_id, CommandState.SENT), what="the command sent")
        await server.kill()  # SIGKILL: nothing is written at shutdown
        await terminal.close()
        server = await server_process(data_dir, *flags)
        device.clear_faults()
        terminal = TerminalConnection(credentials, HOST, server.ports["tcp"], timeout_s=WAIT_S, device=device)
        await terminal.open()
        await terminal.authenticate()
        await wait_for(lambda: _is(store, command_id, CommandState.ACKED), what="acked by the new process")
        assert (await store.get_command(command_id)).attempts == 2 and device.door_opens == [(3, 5)]
        await terminal.close()
    finally:
        await store.close()


async def test_a_push_in_the_smallest_turns_and_a_low_rate_still_completes(start_gateway):
    # one link's window per event-loop turn, and 400 KB/s in all: the push is paced, never stuck
    gw = await start_gateway(downlink_turn_bytes=1, downlink_bytes_per_s=400_000, **FAST)
    await add_project(gw.store, 3, size=20_000)
    terminals = [await gw.terminal()]
    terminals.append(await gw.terminal(await gw.add_device("GS-TEST-000002")))
    for terminal in terminals:
        await terminal.wait_for_roster_version(3)
        assert roster(terminal.device) == await stored_roster(gw.store)


# --- the sweeps, the clock, the metrics ----------------------------------------------------------------


def test_today_is_the_date_in_china_standard_time():
    from lmg.server.downlink.service import china_today

    midnight_cst = 1_763_913_600_000  # 2025-11-23T16:00:00Z = 2025-11-24T00:00:00+08:00
    assert china_today(midnight_cst - 1) == date(2025, 11, 23)
    assert china_today(midnight_cst) == date(2025, 11, 24)


async def test_a_worker_whose_entry_date_comes_joins_the_roster_on_that_day_in_china(start_gateway):
    from datetime import timedelta

    gw = await start_gateway(**FAST)
    await add_project(gw.store, 1, faces=False)
    tomorrow = TODAY + timedelta(days=1)
    await gw.store.import_workers(PROJECT, [WorkerIn(worker_id_for(2), "明天来", entry_date=tomorrow)], today=TODAY)
    assert (await gw.store.get_project(PROJECT)).roster_version == 1
    gateway = gw.gateway
    real_clock = gateway.now_ms
    gateway.now_ms = lambda: 1_763_913_600_000 + 86_400_000 - 1  # 23:59:59.999 on TODAY in China
    try:
        assert await gateway.downlink.apply_roster_dates() == []
        gateway.now_ms = lambda: 1_763_913_600_000 + 86_400_000  # midnight: tomorrow has come
        assert await gateway.downlink.apply_roster_dates() == [PROJECT]
    finally:
        gateway.now_ms = real_clock
    terminal = await gw.terminal()
    await terminal.wait_for_roster_version(2)
    assert worker_id_for(2) in terminal.device.workers


async def test_the_metrics_count_commands_by_state_and_the_push(start_gateway):
    from prometheus_client.parser import text_string_to_metric_families

    from lmg.server.metrics import exposition

    gw = await start_gateway(**FAST)
    await add_project(gw.store, 2)
    terminal = await gw.terminal()
    await terminal.wait_for_roster_version(2)
    command_id = await queue(gw.store, gw.device.serial, "door-open")
    await wait_for(lambda: _is(gw.store, command_id, CommandState.ACKED), what="acked")
    await queue(gw.store, gw.device.serial, "reboot", expires_ms=now_ms() - 1)  # never sent
    await gw.gateway.metrics.read_commands()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(exposition(gw.gateway)[0].decode())
               for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("lmg_downlink_commands", state="acked") == 1
    assert value("lmg_downlink_commands", state="queued") == 1
    assert value("lmg_downlink_command_outcomes_total", state="acked") == 1
    assert value("lmg_downlink_roster_steps_total", kind="add") == 2
    assert value("lmg_downlink_face_bytes_total") == 2 * 30_000
    assert value("lmg_downlink_roster_syncs_total", result="done") == 1
    assert value("lmg_gateway_events_total", event="downlink_commands_acked") == 0  # every name has a family


def test_a_face_chunk_must_fit_the_frame_size():
    from lmg.server.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="lower face_chunk_bytes to at most 4036"):
        Settings.from_keys({"max_frame_size": 4096, "max_batch_records": 50})
    settings = Settings.from_keys({"max_frame_size": 4096, "max_batch_records": 50, "face_chunk_bytes": 4036})
    assert settings.gateway.face_chunk_bytes == 4036
    with pytest.raises(SettingsError, match="face_chunk_bytes must be at most 65535"):
        Settings.from_keys({"face_chunk_bytes": 65536, "max_frame_size": 1 << 20})


async def test_a_broken_first_session_does_not_lose_a_renamed_worker_s_face(start_gateway):
    """The gateway side of tests/simulators/test_device_properties.py's finding: worker 1 joins
    with a face (v1), worker 2 joins (v2), worker 1 is renamed (v3). In the first session
    worker 1's face is lost on the way and the connection breaks: the terminal holds worker
    2 and reports 2. The next delta (rows above 2) must announce worker 1's face again: it
    is decided against the last complete sync (none), not the 2 reported."""
    gw = await start_gateway(**FAST)
    await add_project(gw.store, 1)  # worker 1, with a face: v1
    await gw.store.import_workers(PROJECT, [WorkerIn(worker_id_for(2), "工人2", entry_date=date(2025, 1, 1))],
                                  today=TODAY)  # v2
    face1 = (await gw.store.get_worker(PROJECT, worker_id_for(1))).face_sha256
    await gw.store.import_workers(PROJECT, [WorkerIn(worker_id_for(1), "改名", card_no="C1", entry_date=date(2025, 1, 1),
                                                     face_sha256=face1)], today=TODAY)  # v3
    device = TerminalDevice()
    device.never_answer(MessageType.FACE_CHUNK)
    terminal = await gw.terminal(device=device)
    await terminal.wait_until(lambda d: handled(d, MessageType.FACE_CHUNK), what="worker 1's face sent")
    await terminal.close()
    assert device.roster_version == 2 and device.face_of(worker_id_for(1)) is None
    device.clear_faults()
    terminal = await gw.terminal(device=device)
    await terminal.wait_for_roster_version(3)
    assert device.workers[worker_id_for(1)].face_sha256 == face1 and device.workers[worker_id_for(1)].name == "改名"
