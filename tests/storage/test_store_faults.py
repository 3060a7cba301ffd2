"""Faults: the callers of a failed batch get StoreUnavailable, nothing uncommitted is
reported stored, and the store heals by itself when the fault clears.

SQLite faults are injected three honest ways: OperationalError raised at COMMIT by the
writer's hook (after the batch's statements ran, so the rollback is real); a real
SQLITE_FULL from PRAGMA max_page_count; and a real "readonly database" by reopening the
writer with URI mode=ro (chmod would not stop root, who runs these tests). PostgreSQL
faults come from a TCP proxy the test cuts and restores.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from lmg.storage import (
    STORED, DeviceExists, Outcome, PhotoHashMismatch, PhotoOffsetMismatch, PhotoTooLarge, PunchIn,
    SchemaTooNew, StoreClosed, StoreConfig, StoreUnavailable, UnknownDevice, open_store,
)
from lmg.storage.sqlite import _scalar
from storage_fault_proxy import FaultProxy

T0 = 1_700_000_000_000


def punch(record_no: int, serial: str = "LMG1") -> PunchIn:
    return PunchIn(serial, record_no, "620102199001011234", T0 + record_no, 1, 1, 365, None, 0)


@pytest.fixture
async def sqlite_store(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path / 'lmg.db'}", data_dir=tmp_path)
    yield store
    await store.close()


@pytest.mark.parametrize("message", ["disk I/O error", "database or disk is full"])
async def test_sqlite_failed_commit_fails_the_whole_batch_then_recovers(sqlite_store, message):
    store = sqlite_store
    await store.store_punches([punch(0)])
    store.faults.fail_next_commits(1, message)
    results = await asyncio.gather(*(store.store_punches([punch(n)]) for n in range(1, 6)),
                                   return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) and message in str(r) for r in results)
    assert await store.count_punches() == 1  # rolled back: nothing of that batch
    assert (await store.outbox_status(T0)).pending == 1
    # fault gone: the devices resend and everything is stored, each once
    outcomes = await asyncio.gather(*(store.store_punches([punch(n)]) for n in range(1, 6)))
    assert outcomes == [[STORED]] * 5
    assert await store.count_punches() == 6 and (await store.outbox_status(T0)).pending == 6


async def test_sqlite_real_disk_full_from_max_page_count(sqlite_store):
    store = sqlite_store
    await store.store_punches([punch(0)])
    pages = await store._writer.run(_scalar, "PRAGMA page_count")
    await store._writer.run(_scalar, f"PRAGMA max_page_count={pages}")
    big = [punch(n) for n in range(1, 3000)]
    with pytest.raises(StoreUnavailable, match="full.*free space"):
        await store.store_punches(big)
    assert await store.count_punches() == 1
    # the writer reopened its connection, which lifts the per-connection limit: as if
    # the operator freed space. The same records now go in.
    outcomes = await store.store_punches(big)
    assert {o.status for o in outcomes} == {Outcome.STORED}
    assert await store.count_punches() == 3000


async def test_sqlite_read_only_database_then_writable_again(sqlite_store):
    store = sqlite_store
    await store.store_punches([punch(0)])
    store.faults.read_only = True
    with pytest.raises(StoreUnavailable, match="readonly"):
        await store.store_punches([punch(1)])
    with pytest.raises(StoreUnavailable):
        await store.add_device("LMG9", project_code="P", region_code="620100")
    assert await store.count_punches() == 1  # reads still work
    store.faults.read_only = False
    assert await store.store_punches([punch(1)]) == [STORED]


async def test_sqlite_unopenable_path_is_reported_clearly(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot create the directory"):
        await open_store(f"sqlite:///{blocker}/sub/lmg.db", data_dir=tmp_path)


@pytest.mark.postgres
async def test_postgres_cut_connection_fails_batch_and_store_reconnects(pg_urls, tmp_path):
    url = pg_urls()
    parts = urlsplit(url)
    proxy = await FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    proxied = urlunsplit((parts.scheme, f"{parts.username + '@' if parts.username else ''}"
                          f"127.0.0.1:{proxy.port}", parts.path, parts.query, ""))
    config = StoreConfig(pg_command_timeout_ms=3000, pg_connect_timeout_ms=2000)
    store = await open_store(proxied, data_dir=tmp_path, config=config)
    try:
        assert await store.store_punches([punch(0)]) == [STORED]
        proxy.cut()
        results = await asyncio.gather(*(store.store_punches([punch(n)]) for n in range(1, 4)),
                                       return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        with pytest.raises(StoreUnavailable, match="reconnects by itself"):
            await store.count_punches()
        proxy.restore()
        assert await store.store_punches([punch(n) for n in range(1, 4)]) == [STORED] * 3
        assert await store.count_punches() == 4
        assert (await store.outbox_status(T0)).pending == 4
    finally:
        await store.close()
        await proxy.close()


async def test_postgres_unreachable_at_open_says_how_to_fix(tmp_path):
    proxy = await FaultProxy("127.0.0.1", 9).start()
    proxy.cut()
    try:
        with pytest.raises(StoreUnavailable, match="cannot open the PostgreSQL store.*start"):
            await open_store(f"postgresql://127.0.0.1:{proxy.port}/test?schema=t_none",
                             data_dir=tmp_path, config=StoreConfig(pg_connect_timeout_ms=2000))
    finally:
        await proxy.close()


async def test_sqlite_writer_process_killed_fails_its_callers_then_restarts(sqlite_store, tmp_path):
    """The writer is a process of its own: if it dies, what was in flight gets
    StoreUnavailable (resendable), and the next write starts a new writer."""
    store = sqlite_store
    await store.store_punches([punch(0)])
    pid = store._writer.pid
    assert pid is not None and pid != os.getpid()
    # Another connection holds the write lock, so the next batch is surely in flight
    # (its BEGIN IMMEDIATE waits) when the writer is killed.
    blocker = sqlite3.connect(tmp_path / "lmg.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    in_flight = asyncio.ensure_future(store.store_punches([punch(1), punch(2)]))
    while not store._writer._channel.pending:
        await asyncio.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StoreUnavailable, match="writer process .* exited"):
        await in_flight
    blocker.execute("ROLLBACK")
    blocker.close()
    assert await store.store_punches([punch(9)]) == [STORED]
    assert store._writer.pid not in (None, pid)
    # resending what failed is safe: stored once (here: not stored before the kill)
    assert await store.store_punches([punch(1), punch(2)]) == [STORED, STORED]
    assert await store.count_punches() == 4
    assert (await store.outbox_status(T0)).pending == 4


async def test_sqlite_close_stops_the_writer_process(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path / 'lmg.db'}", data_dir=tmp_path)
    await store.store_punches([punch(0)])
    pid = store._writer.pid
    await store.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped, not a zombie


def test_store_errors_survive_pickling():
    """The writer process sends errors back pickled: each must arrive with its message."""
    errors = [StoreUnavailable("disk"), StoreClosed("closed"), SchemaTooNew(9, 3, "/x.db"),
              UnknownDevice("LMG1"), DeviceExists("LMG1"), PhotoTooLarge("big"),
              PhotoOffsetMismatch("ab" * 32, 10, 0), PhotoHashMismatch("ab" * 32, "cd" * 32)]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and vars(copy) == vars(error)


def test_sqlite_writer_process_dies_with_its_owner(tmp_path):
    """A gateway killed with SIGKILL leaves no SQLite writer behind (parent-death signal)."""
    script = (
        "import asyncio, os, sys\n"
        "from storage import open_store\n"
        "async def main():\n"
        f"    store = await open_store('sqlite:///{tmp_path / 'lmg.db'}', data_dir={str(tmp_path)!r})\n"
        "    print(store._writer.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        writer_pid = int(owner.stdout.readline())
        os.kill(writer_pid, 0)  # running
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(writer_pid, 0)
        except ProcessLookupError:
            return  # gone
        if _zombie(writer_pid):
            return  # dead, waiting for init to reap it
        time.sleep(0.01)
    pytest.fail(f"writer {writer_pid} outlived its owner")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
