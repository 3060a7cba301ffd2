"""`lmg bench photos`: photo bytes in PostgreSQL (`PostgresBlobStore`) against files
(`FileBlobStore`) in the same run.

Baseline: `FileBlobStore` on a fresh directory of this disk: temp file, fsync, rename,
directory fsync per put; one read per get. It is what a single node (and SQLite) uses.

Measured: `PostgresBlobStore` through a PostgreSQL store's pool on a throw-away schema
(LMG_TEST_PG_DSN, default postgresql://127.0.0.1:5432/test): one autocommitted INSERT per
put (the commit's WAL fsync), one SELECT per get. Also the whole completed upload as the
gateway does it, `store.photo_append` of one 30 KB chunk (partial file, hash check, blob,
`photos` row), on a SQLite store and a PostgreSQL store.

`--concurrency` puts or gets run at once (default 8: many terminals upload at the same
time; PostgreSQL's group commit of concurrent transactions and the file store's
to_thread fsyncs both profit). Phases alternate over `--rounds`; figures are medians of
per-operation latency and total MB/s over all rounds, with PostgreSQL's ratio to files.

`layouts` (the measurement behind migration 0007's choice): on one connection, the same
photos put and got as bytea in a table (TOAST's default, and STORAGE EXTERNAL, which skips
trying to compress JPEGs) and as large objects (`lo_from_bytea` / `lo_get`), with the
space each takes on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import orjson

NAME = "photos"
HELP = "photo bytes: PostgreSQL blob table vs files (same run)"
DEFAULT_PG_DSN = "postgresql://127.0.0.1:5432/test"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--count", type=int, default=300, help="photos per phase and round (default 300)")
    parser.add_argument("--size", type=int, default=30_000, help="bytes per photo (default 30,000: a face capture)")
    parser.add_argument("--concurrency", type=int, default=8, help="operations at once (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the phases (default 3)")
    parser.add_argument("--quick", action="store_true", help="100 photos, 2 rounds")
    parser.add_argument("--dir", default=None, help="where the temporary files and database go (default: $TMPDIR)")


async def _timed(ops: list[Callable[[], Awaitable[object]]], concurrency: int) -> tuple[list[float], float]:
    """Run `ops` with at most `concurrency` at once: (per-op seconds, wall seconds)."""
    latencies: list[float] = []
    queue = iter(ops)

    async def worker() -> None:
        for op in queue:
            started = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


class Phase:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.seconds = 0.0
        self.bytes = 0

    def add(self, latencies: list[float], seconds: float, size: int) -> None:
        self.latencies += latencies
        self.seconds += seconds
        self.bytes += size * len(latencies)

    def figures(self) -> dict:
        return {"median_ms": round(statistics.median(self.latencies) * 1000, 3),
                "mb_per_s": round(self.bytes / self.seconds / 1e6, 2),
                "per_s": round(len(self.latencies) / self.seconds, 1)}


async def bench(args: argparse.Namespace) -> dict:
    from lmg.storage import Store, open_store
    from lmg.storage.backend import BackendStore
    from lmg.storage.blobs import BlobStore, FileBlobStore

    count, rounds = (100, 2) if args.quick else (args.count, args.rounds)
    dsn = os.environ.get("LMG_TEST_PG_DSN", DEFAULT_PG_DSN)
    schema = f"bench_photos_{uuid.uuid4().hex[:8]}"
    phases: dict[str, Phase] = {}
    with tempfile.TemporaryDirectory(prefix="lmg-bench-photos-", dir=args.dir) as tmp:
        files = FileBlobStore(Path(tmp) / "files")
        pg = await open_store(f"{dsn}?schema={schema}", data_dir=Path(tmp) / "pg")
        lite = await open_store(f"sqlite:///{tmp}/lite.db", data_dir=Path(tmp) / "lite")
        try:
            assert isinstance(pg, BackendStore)
            blobs: dict[str, BlobStore] = {"file": files, "postgres": pg.blobs}
            stores: dict[str, Store] = {"sqlite_store": lite, "postgres_store": pg}
            for round_no in range(rounds):
                photos = [os.urandom(args.size) for _ in range(count)]
                keys = [hashlib.sha256(p).hexdigest() for p in photos]
                order = list(blobs.items()) if round_no % 2 == 0 else list(reversed(blobs.items()))
                for name, blob_store in order:
                    puts: list[Callable[[], Awaitable[object]]] = [
                        partial(blob_store.put, k, p) for k, p in zip(keys, photos, strict=True)]
                    gets: list[Callable[[], Awaitable[object]]] = [partial(blob_store.get, k) for k in keys]
                    for verb, ops in (("put", puts), ("get", gets)):
                        latencies, seconds = await _timed(ops, args.concurrency)
                        phases.setdefault(f"{name}_{verb}", Phase()).add(latencies, seconds, args.size)
                uploads = [os.urandom(args.size) for _ in range(count)]
                for name, store in (stores.items() if round_no % 2 == 0 else reversed(stores.items())):
                    appends: list[Callable[[], Awaitable[object]]] = [
                        partial(store.photo_append, f"BENCH-{n % 64}", hashlib.sha256(p).digest(), len(p), 0, p)
                        for n, p in enumerate(uploads)]
                    latencies, seconds = await _timed(appends, args.concurrency)
                    phases.setdefault(f"{name}_upload", Phase()).add(latencies, seconds, args.size)
        finally:
            await lite.close()
            await pg.close()
            import asyncpg

            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
    result: dict = {"size_bytes": args.size, "photos_per_phase": count * rounds, "concurrency": args.concurrency}
    for name, phase in phases.items():
        result[name] = phase.figures()
    for verb in ("put", "get"):
        result[f"postgres_to_file_{verb}_ratio"] = round(
            result[f"postgres_{verb}"]["mb_per_s"] / result[f"file_{verb}"]["mb_per_s"], 2)
    result["postgres_to_sqlite_upload_ratio"] = round(
        result["postgres_store_upload"]["mb_per_s"] / result["sqlite_store_upload"]["mb_per_s"], 2)
    result["layouts"] = await compare_layouts(dsn, count, args.size)
    return result


async def compare_layouts(dsn: str, count: int, size: int) -> dict:
    """bytea (default and STORAGE EXTERNAL) against large objects: medians and bytes on disk."""
    import asyncpg

    schema = f"bench_layouts_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    result: dict = {}
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"')
        await conn.execute("CREATE TABLE b_main (sha256 bytea PRIMARY KEY, data bytea NOT NULL)")
        await conn.execute("CREATE TABLE b_ext (sha256 bytea PRIMARY KEY, data bytea NOT NULL);"
                           "ALTER TABLE b_ext ALTER COLUMN data SET STORAGE EXTERNAL")
        await conn.execute("CREATE TABLE b_lo (sha256 bytea PRIMARY KEY, loid oid NOT NULL)")
        photos = [os.urandom(size) for _ in range(count)]
        keys = [hashlib.sha256(p).digest() for p in photos]
        lo_before = await conn.fetchval("SELECT pg_total_relation_size('pg_largeobject')")
        for name, put, get, table in (
                ("bytea", "INSERT INTO b_main VALUES ($1, $2)", "SELECT data FROM b_main WHERE sha256 = $1", "b_main"),
                ("bytea_external", "INSERT INTO b_ext VALUES ($1, $2)", "SELECT data FROM b_ext WHERE sha256 = $1",
                 "b_ext"),
                ("large_object", "INSERT INTO b_lo VALUES ($1, lo_from_bytea(0, $2))",
                 "SELECT lo_get(loid) FROM b_lo WHERE sha256 = $1", None)):
            puts, gets = [], []
            for key, photo in zip(keys, photos, strict=True):
                started = time.perf_counter()
                await conn.execute(put, key, photo)
                puts.append(time.perf_counter() - started)
            for key in keys:
                started = time.perf_counter()
                await conn.fetchval(get, key)
                gets.append(time.perf_counter() - started)
            if table is None:
                disk = await conn.fetchval("SELECT pg_total_relation_size('pg_largeobject')") - lo_before
            else:
                disk = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
            result[name] = {"put_median_ms": round(statistics.median(puts) * 1000, 3),
                            "get_median_ms": round(statistics.median(gets) * 1000, 3),
                            "disk_bytes_per_photo_byte": round(disk / (count * size), 3)}
    finally:
        if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".b_lo') is not None:
            await conn.execute(f'SELECT lo_unlink(loid) FROM "{schema}".b_lo')  # they outlive DROP SCHEMA
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    return result


def run(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(bench(args))
    except OSError as exc:
        print(f"lmg bench photos: cannot reach PostgreSQL ({exc}); set LMG_TEST_PG_DSN", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(result).decode())
        return 0
    print(f"{result['photos_per_phase']} photos of {result['size_bytes']:,} bytes per phase, "
          f"{result['concurrency']} at once")
    print(f"{'phase':24s} {'median ms':>10s} {'photos/s':>10s} {'MB/s':>8s}")
    for name, figures in result.items():
        if isinstance(figures, dict) and "median_ms" in figures:
            print(f"{name:24s} {figures['median_ms']:>10.2f} {figures['per_s']:>10.1f} {figures['mb_per_s']:>8.2f}")
    print(f"PostgreSQL / files: put {result['postgres_to_file_put_ratio']}x, get {result['postgres_to_file_get_ratio']}x; "
          f"whole upload, PostgreSQL store / SQLite store: {result['postgres_to_sqlite_upload_ratio']}x")
    print("layouts, one connection:", ", ".join(
        f"{name} put {f['put_median_ms']:.2f} ms get {f['get_median_ms']:.2f} ms "
        f"disk {f['disk_bytes_per_photo_byte']:.2f}x" for name, f in result["layouts"].items()))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="lmg bench photos", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
