"""The outage-recovery phase of `lmg bench load`: a region's terminals come back at once.

`outage_devices` terminals (full run: 10,000, on `--workers 2` over PostgreSQL; --quick: 200)
each come back with `outage_hours` (2) of punches at the design rate of one punch per
terminal per minute (docs/operations.md: 10,000 terminals punching once a minute), punch
times spread over the outage, `outage_photo_share` (30 %) of them with a 30 KB face
snapshot. They connect together (the fleet's processes start on one "go"), upload the
punches in PUNCH_BATCHes, then each photo in chunks (simulators/fleet.py). The gateway
forwards everything to the province simulator (its own process, as in `lmg bench
forwarding`).

Figures:
- `acked_s`: from the go until every punch is acknowledged;
- `photos_s`: until every photo is stored (the gateway confirmed its last byte);
- `forwarded_s`: until the province simulator holds every punch and every photo;
- `photo_mb_per_s`: photo bytes stored / `photos_s` (MB = 10^6 bytes), or, when the cap
  cut the run (`complete` false), the rate reached until then;
- `peak_rss_mib`: the gateway's resident memory, all its processes (supervisor, workers,
  writer), sampled every second;
- beside it, the same run's `disk_photo_mb_per_s`: 30 KB files written and fsync'd one by
  one in a directory on the filesystem that holds the store, the physical limit of this box
  for durable photos. On PostgreSQL the photos are bytea rows: each is written to the WAL
  first (and the table later, by the checkpointer); `wal_mb` is the WAL the server wrote
  during the phase, all databases together (on a shared server, other users' writes too).

Bounded: the fleet and the wait for the province share one cap (`outage_cap_s`; a figure
not reached by then is null, with what was held), the fleet stops by itself, loopback only,
each fleet process holds fewer than 20,000 descriptors, and the PostgreSQL schema the phase
made (photos included) is dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path

from lmg.bench.pg_schema import drop_schemas

DESIGN_PUNCHES_PER_MINUTE = 1.0  # per terminal: docs/operations.md's design load
PHOTO_KB = 30
DISK_FILE_BYTES = PHOTO_KB * 1024
MB = 1e6
PROVINCE_POLL_S = 1.0  # one read-only count of the simulator's tables a second
PROGRESS_LOG_S = 30.0  # a line on stderr this often while the terminals upload
# fleet counters the progress line shows, in this order
PROGRESS_KEYS = ("online", "acked", "duplicates", "nacks", "answer_timeouts", "reconnects", "photos_confirmed",
                 "photo_retries", "photos_refused")


def disk_photo_rate(directory: str, files: int, size: int = DISK_FILE_BYTES) -> dict:
    """Write `files` files of `size` random bytes in `directory`, each fsync'd before the
    next (and the directory at the end), as a store that acknowledges only durable photos
    must; returns MB/s and files/s. The files are removed afterwards."""
    payload = os.urandom(size)
    folder = Path(tempfile.mkdtemp(prefix="lmg-disk-", dir=directory))
    try:
        started = time.perf_counter()
        for n in range(files):
            fd = os.open(folder / f"{n:06d}.jpg", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        elapsed = time.perf_counter() - started
    finally:
        for entry in folder.iterdir():
            entry.unlink()
        folder.rmdir()
    return {"files": files, "file_bytes": size, "seconds": round(elapsed, 3),
            "mb_per_s": round(files * size / MB / elapsed, 2), "files_per_s": round(files / elapsed, 1)}


async def pg_data_directory(dsn: str) -> str | None:
    """PostgreSQL's data directory, when this role may read it (a superuser or pg_read_all_settings)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SHOW data_directory")
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


async def pg_wal_lsn(dsn: str) -> int:
    """The server's current WAL position, bytes."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
    finally:
        await conn.close()


async def drop_schema(dsn: str, schema: str) -> None:
    await drop_schemas(dsn, schema)


async def pg_reachable(dsn: str) -> str | None:
    """None when PostgreSQL answers at `dsn`, else why not (for the report)."""
    import asyncpg

    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), 5.0)
    except Exception as exc:  # noqa: BLE001 - any failure means: not here
        return f"PostgreSQL not reachable at {dsn} ({type(exc).__name__}: {exc})"
    await conn.close()
    return None


def same_filesystem(a: str | None, b: str) -> bool | None:
    if a is None:
        return None
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:  # not readable by this user: PostgreSQL's directory usually is not
        return None


async def stored_punches(store_url: str | None, data_dir: str) -> int:
    """Punches the gateway's store holds: beside the fleet's ACK count it tells records stored
    but answered too late (after the terminal's 15-s resend) from records never stored."""
    from lmg.storage import open_store

    store = await open_store(store_url, data_dir=data_dir)
    try:
        return await store.count_punches()
    finally:
        await store.close()


async def wait_forwarded(province_dir: Path, records: int, photos: int, cap_s: float) -> dict:
    """Poll the province simulator's database until it holds `records` records and `photos`
    photos, or `cap_s`; returns when (wall clock) and what it held last."""
    from lmg.simulators.province import report

    deadline = time.monotonic() + cap_s
    held: dict = {"unique": 0, "photos": 0}
    while True:
        try:
            held = report(province_dir)
        except FileNotFoundError:
            pass  # the simulator has not made its database yet
        except (sqlite3.Error, OSError) as exc:  # the simulator is writing (locked) or making its tables
            held = {**held, "read_error": type(exc).__name__}
        if held["unique"] >= records and held["photos"] >= photos:
            return {"at": time.time(), "held_records": held["unique"], "held_photos": held["photos"]}
        if time.monotonic() >= deadline:
            return {"at": None, "held_records": held["unique"], "held_photos": held["photos"]}
        await asyncio.sleep(PROVINCE_POLL_S)


async def outage_run(sizes: dict, *, log) -> dict:
    """The phase; sizes: outage_devices, outage_hours, outage_photo_share, outage_batch,
    outage_workers, outage_store ("postgres", "sqlite" or "auto": PostgreSQL when it answers),
    outage_fleet_processes, outage_cap_s, disk_files."""
    from lmg.bench.forwarding import APP_KEY, APP_SECRET, Province
    from lmg.bench.load import DEFAULT_PG_DSN, TERMINALS_PER_FLEET_PROCESS, TERMINALS_PER_SOURCE_ADDRESS, \
        fleet_run, provision, start_gateway

    count, hours = sizes["outage_devices"], sizes["outage_hours"]
    records = max(1, round(hours * 60 * DESIGN_PUNCHES_PER_MINUTE))
    dsn = os.environ.get("LMG_TEST_PG_DSN", DEFAULT_PG_DSN)
    kind = sizes.get("outage_store", "auto")
    why_not_pg = await pg_reachable(dsn) if kind in ("auto", "postgres") else "SQLite asked for"
    if kind == "postgres" and why_not_pg:
        raise RuntimeError(why_not_pg)
    postgres = why_not_pg is None
    workers = sizes.get("outage_workers", 2) if postgres else 1  # --workers needs PostgreSQL
    schema = f"bench_outage_{secrets.token_hex(4)}"
    store = f"{dsn}?schema={schema}" if postgres else ""
    processes = max(sizes.get("outage_fleet_processes", 1), -(-count // TERMINALS_PER_FLEET_PROCESS))
    sources = [f"127.0.0.{i}" for i in range(1, max(2, -(-count // TERMINALS_PER_SOURCE_ADDRESS)) + 1)]
    result: dict = {"devices": count, "hours": hours, "punches_per_device": records,
                    "photo_share": sizes["outage_photo_share"], "photo_bytes": PHOTO_KB * 1024,
                    "store": "postgresql" if postgres else "sqlite", "workers": workers,
                    "store_note": "photos are bytea rows in PostgreSQL: written to its WAL, then its table"
                    if postgres else f"photos are files in the data directory ({why_not_pg})",
                    "fleet_processes": processes, "batch_records": sizes["outage_batch"], "cap_s": sizes["outage_cap_s"]}
    with tempfile.TemporaryDirectory(prefix="lmg-bench-outage-") as work:
        province = Province(Path(work))
        try:
            data_dir = os.path.join(work, "gateway")
            log(f"outage: provisioning {count} devices ({result['store']})")
            devices = await provision(store or None, data_dir, "OG", count)
            extra = ("--forward-url", province.url, "--forward-app-key", APP_KEY, "--forward-app-secret", APP_SECRET)
            wal_before = await pg_wal_lsn(dsn) if postgres else 0
            with start_gateway(data_dir, store=store, workers=workers, extra=extra) as gateway:
                peak = {"kib": gateway.rss_kib()}
                stop = asyncio.Event()

                async def sample_rss() -> None:
                    while not stop.is_set():
                        peak["kib"] = max(peak["kib"], gateway.rss_kib())
                        try:
                            await asyncio.wait_for(stop.wait(), 1.0)
                        except asyncio.TimeoutError:
                            pass

                sampler = asyncio.create_task(sample_rss())
                last_line = [time.monotonic()]

                def progress(snap: dict) -> None:
                    if time.monotonic() - last_line[0] >= PROGRESS_LOG_S:
                        last_line[0] = time.monotonic()
                        log("  " + ", ".join(f"{key} {snap.get(key, 0):,}" for key in PROGRESS_KEYS))

                log(f"outage: {count} terminals come back with {records} punches each, "
                    f"{sizes['outage_photo_share']:.0%} with {PHOTO_KB} KB photos ({processes} fleet processes)")
                cpu_before = gateway.cpu_s()
                ends = time.monotonic() + sizes["outage_cap_s"]  # one cap for the fleet and the forwarding
                try:
                    fleet = await fleet_run(
                        gateway, devices, scenario="backlog", backlog_records=records,
                        backlog_span_s=hours * 3600, batch_size=sizes["outage_batch"], window=8,
                        photo_share=sizes["outage_photo_share"], photo_bytes=PHOTO_KB * 1024,
                        duration_s=sizes["outage_cap_s"], processes=processes, source_addresses=sources,
                        connect_concurrency=512, progress_s=5.0, on_progress=progress)
                    log(f"  punches acknowledged in {fleet['backlog_s']} s, photos stored in "
                        f"{fleet['backlog_photos_s']} s; waiting for the province")
                    photos = fleet["photos"]
                    forwarded = await wait_forwarded(Path(work) / "province", fleet["acked"] + fleet["duplicates"],
                                                     photos["confirmed"], max(1.0, ends - time.monotonic()))
                    stored = await stored_punches(store or None, data_dir)
                finally:
                    stop.set()
                    await sampler
                cpu = gateway.cpu_s() - cpu_before
            wal_mb = round((await pg_wal_lsn(dsn) - wal_before) / MB, 1) if postgres else None
        finally:
            province.close()
            if postgres:
                await drop_schema(dsn, schema)
        t0 = fleet.get("drain_t0")
        photos_s = fleet["backlog_photos_s"]
        photo_mb = photos["bytes_confirmed"] / MB
        # all uploaded: the photos' time; cut by the cap: the rate reached until then
        upload_s = photos_s if photos_s else fleet["measured_s"]
        store_dir = await pg_data_directory(dsn) if postgres else data_dir
        log(f"outage: {sizes['disk_files']} fsync'd {PHOTO_KB} KB files, the disk's rate")
        disk = disk_photo_rate(work, sizes["disk_files"])
        result["disk"] = {**disk, "directory_same_filesystem_as_store": same_filesystem(store_dir, work)}
    result.update({
        "records": fleet["backlog_records"], "acked": fleet["acked"], "duplicates": fleet["duplicates"],
        "rejected": fleet["rejected"], "nacks": fleet["nacks"], "resends": fleet["resends"],
        "reconnects": fleet["reconnects"], "unexpected_disconnects": fleet["unexpected_disconnects"],
        "connect_failures": fleet["connect_failures"], "bad_frames": fleet["bad_frames"], "photos": photos,
        "acked_s": fleet["backlog_s"], "photos_s": photos_s,
        "forwarded_s": round(forwarded["at"] - t0, 3) if forwarded["at"] and t0 else None,
        "gateway_stored_punches": stored, "province_records": forwarded["held_records"], "province_photos": forwarded["held_photos"],
        "complete": fleet["counters"].get("drain_timeouts", 0) == 0 and forwarded["at"] is not None,
        "counters": fleet["counters"],
        "photo_mb": round(photo_mb, 1), "photo_mb_per_s": round(photo_mb / upload_s, 2) if upload_s else None,
        "peak_rss_mib": round(peak["kib"] / 1024, 1), "server_cpu_s": round(cpu, 1), "wal_mb": wal_mb,
        "wal_per_photo_byte": round(wal_mb / photo_mb, 2) if wal_mb is not None and photo_mb else None,
        "disk_photo_mb_per_s": disk["mb_per_s"],
        "photo_to_disk": round(photo_mb / upload_s / disk["mb_per_s"], 3) if upload_s else None,
    })
    log(f"  forwarded in {result['forwarded_s']} s; photos {result['photo_mb_per_s']} MB/s against the disk's "
        f"{disk['mb_per_s']} MB/s; peak RSS {result['peak_rss_mib']} MiB")
    return result
