"""Migrations: an older database upgrades in place; a newer one is refused untouched."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import asyncpg
import pytest

from lmg.protocol import MessageType
from lmg.storage import CommandState, Outcome, SchemaTooNew
from lmg.storage.blobs import FileBlobStore
from lmg.storage.migrations import load_migrations
from lmg.storage.postgres import PostgresStore
from lmg.storage.sqlite import SqliteStore
from lmg.storage.url import parse_store_url
from test_store_contract import punch
from test_store_operations import raw_sql

# As in conftest.py; not imported from there, as other test folders have a conftest too.
PG_DSN = os.environ.get("LMG_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")


async def _open_with(backend, migrations):
    if backend.name == "sqlite":
        return await SqliteStore.open(parse_store_url(backend.url).sqlite_path,
                                      data_dir=backend.data_dir, migrations=migrations)
    # Before version 7 a PostgreSQL node kept photo bytes as files under its data dir.
    files = FileBlobStore(backend.data_dir / "photos") if len(migrations) < 7 else None
    return await PostgresStore.open(parse_store_url(backend.url), data_dir=backend.data_dir,
                                    migrations=migrations, blobs=files)


RECEIVED_MS = 1_795_000_000_000  # 2026-11-18: when the gateway of before version 9 received them


async def store_punches_as_before_9(backend, old, records) -> None:
    """Store punches (and their outbox rows) in a database older than version 9 as the
    gateway of its time did: today's PostgreSQL insert path needs punch_keys (version 9)."""
    if backend.name == "sqlite":
        await old.store_punches(records)
        return
    await raw_sql(backend, "", "".join(
        f'WITH p AS (INSERT INTO "{{schema}}".punches (device_serial, record_no, worker_id, punch_time_ms, direction, '
        f"verify_mode, temperature_dc, photo_size, received_at_ms) VALUES ('{r.device_serial}', {r.record_no}, "
        f"'{r.worker_id}', {r.punch_time_ms}, {r.direction}, {r.verify_mode}, {r.temperature_dc}, 0, {RECEIVED_MS}) "
        f"RETURNING id) "
        f'INSERT INTO "{{schema}}".outbox (punch_id, device_serial, next_attempt_at_ms, created_at_ms) '
        f"SELECT id, '{r.device_serial}', 0, 0 FROM p;" for r in records))


async def test_version_1_database_upgrades_in_place_and_keeps_its_data(backend):
    dialect = "sqlite" if backend.name == "sqlite" else "postgres"
    full = load_migrations(dialect)
    assert len(full) >= 2
    old = await _open_with(backend, full[:1])
    assert await old.schema_version() == 1
    await store_punches_as_before_9(backend, old, [punch(record_no=n) for n in range(5)])
    await old.add_device("LMG0001", project_code="P", region_code="620102")
    await old.close()

    new = await backend.open()  # the full set: upgrades 1 -> N at open
    backend.opened.append(new)
    assert await new.schema_version() == full[-1].version
    assert await new.count_punches() == 5
    assert (await new.get_device("LMG0001")).region_code == "620102"
    assert await new.enqueue_command("LMG0001", MessageType.REBOOT, b'{"delay_s": 0}') > 0  # migration 2
    assert (await new.store_punches([punch(record_no=4)]))[0].status is Outcome.DUPLICATE  # dedup kept (9)
    assert (await new.outbox_status(2**62)).pending == 5


async def test_photos_stored_before_version_3_count_as_forwarded(backend):
    """Migration 3 adds photos.forwarded_at_ms: photos an older gateway held were sent
    before their records, so the late-photo sweep must not send them all again."""
    dialect = "sqlite" if backend.name == "sqlite" else "postgres"
    full = load_migrations(dialect)
    old = await _open_with(backend, full[:2])
    photo = os.urandom(64)
    sha = hashlib.sha256(photo).digest()
    assert await old.photo_append("LMG0001", sha, len(photo), 0, photo) == len(photo)
    await old.close()

    new = await backend.open()
    backend.opened.append(new)
    assert await new.get_photo(sha) == photo
    assert await new.unforwarded_photos(2**62, 10) == []


async def test_photo_files_of_before_version_7_are_still_read_and_purged(backend):
    """Migration 7 puts PostgreSQL photo bytes in `photo_blobs`; files an older node
    wrote stay on its disk and are read after the table (nothing is copied at upgrade)."""
    dialect = "sqlite" if backend.name == "sqlite" else "postgres"
    full = load_migrations(dialect)
    old = await _open_with(backend, full[:6])
    photo = os.urandom(64)
    sha = hashlib.sha256(photo).digest()
    assert await old.photo_append("LMG0001", sha, len(photo), 0, photo) == len(photo)
    await old.close()

    new = await backend.open()
    backend.opened.append(new)
    assert await new.schema_version() == full[-1].version
    assert await new.get_photo(sha) == photo and await new.unforwarded_photos(2**62, 10) == [sha]
    await new.mark_photos_forwarded([sha], 1)
    assert await new.purge_forwarded_photos(2**62) == 1
    assert await new.get_photo(sha) is None
    assert not [p for p in (backend.data_dir / "photos").rglob("*") if p.is_file()]  # the file went too


async def test_version_3_devices_upgrade_with_no_address_and_nothing_to_end(backend):
    """Migration 4 adds api_tokens, session_ends and devices.last_address to a database
    that has devices and punches already."""
    dialect = "sqlite" if backend.name == "sqlite" else "postgres"
    full = load_migrations(dialect)
    assert [m.name for m in full][3] == "operations"
    old = await _open_with(backend, full[:3])
    await old.add_device("LMG0001", project_code="P", region_code="620102")
    await store_punches_as_before_9(backend, old, [punch("LMG0001", n) for n in range(3)])
    await old.audit("device_added", "LMG0001")
    await old.close()

    new = await backend.open()
    backend.opened.append(new)
    assert await new.schema_version() == full[-1].version
    device = await new.get_device("LMG0001")
    assert device.last_address is None and device.enabled
    assert await new.last_session_end_id() == 0 and await new.list_api_tokens() == []
    assert [p.punch.record_no for p in await new.list_punches(project_code="P")] == [0, 1, 2]
    assert [e.event for e in await new.list_audit(subject="LMG0001")] == ["device_added"]
    await new.disable_device("LMG0001")
    assert len(await new.session_ends_after(0)) == 1


async def test_version_4_commands_and_session_ends_upgrade_to_signals_and_new_states(backend):
    """Migration 5 rebuilds commands (new states and columns; 'done' becomes 'acked'; on
    SQLite the AUTOINCREMENT counter moves with the table) and replaces session_ends by
    signals."""
    dialect = "sqlite" if backend.name == "sqlite" else "postgres"
    full = load_migrations(dialect)
    assert [m.name for m in full][4] == "downlink"
    old = await _open_with(backend, full[:4])
    await old.add_device("LMG0001", project_code="P", region_code="620102")
    await old.close()
    # rows as lmg of version 4 wrote them (this code writes signals); session_ends never
    # shipped and is dropped
    columns = "device_serial, command_type, payload, state, seq, result_code, created_at_ms, sent_at_ms"
    await raw_sql(
        backend,
        "INSERT INTO session_ends (device_serial, reason, created_at_ms) VALUES ('LMG0001', 'disabled', 1); "
        f"INSERT INTO commands ({columns}) VALUES ('LMG0001', 523, X'7B7D', 'done', 7, 0, 1, 2), "
        f"('LMG0001', 523, X'7B7D', 'queued', NULL, NULL, 1, NULL), "
        f"('LMG0001', 523, X'7B7D', 'sent', 8, NULL, 1, 2), ('LMG0001', 523, X'7B7D', 'queued', NULL, NULL, 1, NULL); "
        f"DELETE FROM commands WHERE id = 4;",
        'INSERT INTO "{schema}".session_ends (device_serial, reason, created_at_ms) '
        "VALUES ('LMG0001', 'disabled', 1); "
        f'INSERT INTO "{{schema}}".commands ({columns}) VALUES '
        f"('LMG0001', 523, '\\x7b7d', 'done', 7, 0, 1, 2), ('LMG0001', 523, '\\x7b7d', 'queued', NULL, NULL, 1, NULL), "
        f"('LMG0001', 523, '\\x7b7d', 'sent', 8, NULL, 1, 2), ('LMG0001', 523, '\\x7b7d', 'queued', NULL, NULL, 1, NULL); "
        f'DELETE FROM "{{schema}}".commands WHERE id = 4;')

    new = await backend.open()
    backend.opened.append(new)
    assert await new.schema_version() == full[-1].version
    done, queued, sent = [await new.get_command(n) for n in (1, 2, 3)]
    assert (done.state, done.result_code, done.attempts, done.created_by, done.reply) == (
        CommandState.ACKED, 0, 1, "", None)
    assert (queued.state, queued.attempts, sent.state, sent.seq, sent.attempts) == (
        CommandState.QUEUED, 0, CommandState.SENT, 8, 1)
    assert await new.enqueue_command("LMG0001", MessageType.REBOOT, b"{}") == 5  # 4 is never handed out again
    assert await new.last_session_end_id() == 0 and [s.kind for s in await new.signals_after(0)] == ["command"]
    assert await new.list_projects() == [] and await new.devices_of_project("P") == ["LMG0001"]


async def test_database_newer_than_the_code_is_refused(backend):
    store = await backend.open()
    await store.store_punches([punch()])
    await store.close()
    known = load_migrations("sqlite")[-1].version
    if backend.name == "sqlite":
        conn = sqlite3.connect(parse_store_url(backend.url).sqlite_path)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'from_the_future', 0)", (known + 4,))
        conn.commit()
        conn.close()
    else:
        schema = backend.url.rsplit("schema=", 1)[1]
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'INSERT INTO "{schema}".schema_migrations VALUES ($1, $2, 0)',
                           known + 4, "from_the_future")
        await conn.close()
    with pytest.raises(SchemaTooNew) as refused:
        await backend.open()
    message = str(refused.value)
    assert f"version {known + 4} but this lmg knows up to {known}" in message
    assert "upgrade lmg or point --store at another database" in message


def test_both_dialects_have_the_same_versions():
    assert [(m.version, m.name) for m in load_migrations("sqlite")] == [
        (m.version, m.name) for m in load_migrations("postgres")]
