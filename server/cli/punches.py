"""`lmg punches ...`: stored punches for operators, read straight from the store.

    lmg punches count   [STORE]                                   how many punches are stored
    lmg punches list    [STORE] [FILTERS] [--limit N] [--after ID] [--pii] [--json]
    lmg punches export  [STORE] [FILTERS] [--format csv|json|jsonl] [--out FILE] [--pii]

    STORE    --data-dir DIR | --store URL | --config FILE (or LMG_DATA_DIR, LMG_STORE, LMG_CONFIG)
    FILTERS  --project CODE --device SERIAL --worker ID_NUMBER --since TIME --until TIME

The filters are the admin API's (`GET /api/v1/punches`): all given must match; `--since`
is inclusive and `--until` exclusive, on the punch time, each Unix milliseconds or an
ISO 8601 time with its offset (2026-11-24T08:00+08:00); `--worker` takes the full resident
ID number (it finds records, it shows nothing). Rows come in the order stored (`id`, the
cursor) with the API's fields and names.

Rules:
- Read-only: the store is opened with create=False, so a mistyped --data-dir says there
  is no database (exit 2) instead of creating one.
- Streaming: rows are written as each page of `--page-size` arrives (`Store.list_punches`
  pages by id), never the whole result in memory. `csv` has a header row; `json` is one
  JSON array written incrementally (`[`, rows separated by commas, `]`); `jsonl` is one
  JSON object per line. `list` prints a table (or JSON lines with --json) of at most
  --limit rows and says on stderr how to go on.
- Personal data: resident ID numbers are masked (620102********4516) unless `--pii` is
  given, as the API masks them without the `pii` scope. A `--pii` list or export is
  written to the audit log (`punches_exported`: who ran it, the command, the format, the
  filters with the worker masked, where it went) before the first row; if the audit log
  cannot be written, nothing is shown.
- `--out FILE` is created owner-only (0600) and never overwritten: rows go to
  FILE.partial, linked to FILE when the export is complete and removed if it fails, so
  FILE exists only whole.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import orjson

from lmg.server.cli import CommandFailed, UsageError, actor, add_store_options, open_store_from, run_on_store

if TYPE_CHECKING:
    from lmg.storage import PunchListing, Store

# The fields of one row, named as the API's PunchOut (server/admin/punches.py; a test keeps
# them equal).
FIELDS = ("id", "device", "project", "record_no", "worker_id", "punch_time_ms", "direction", "verify_mode",
          "temperature_dc", "photo_sha256", "photo_size", "received_at_ms")
# Rows per store read: one read is one query (on SQLite a hop to a reader thread, ~50 µs,
# then ~1 µs a row), so 1,000 rows keep the reads' overhead near 5% while a page is well
# under 1 MB of Python objects. The store allows up to MAX_PUNCH_PAGE (10,000).
PAGE_ROWS = 1000
LIST_LIMIT = 100  # rows `lmg punches list` shows unless told: a screenful or two
WORKER_ID = re.compile(r"^\d{17}[\dX]$")  # as the API's worker filter
FORMATS = ("csv", "json", "jsonl")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("punches", help="count, list and export stored punches")
    group = parser.add_subparsers(dest="punches_command", metavar="COMMAND")
    group.required = True

    count = group.add_parser("count", help="print the number of stored punches")
    add_store_options(count)
    count.set_defaults(handler=lambda a: run_on_store(_count, a, create=False))

    lst = group.add_parser("list", help="show stored punches, oldest first (ID numbers masked unless --pii)",
                           description="Stored punches in the order stored, as a table; --json prints JSON lines.")
    _filter_options(lst)
    lst.add_argument("--limit", type=int, default=LIST_LIMIT,
                     help=f"at most this many rows; 0 for all (default {LIST_LIMIT})")
    lst.add_argument("--after", type=int, default=0, metavar="ID",
                     help="start after this id (the cursor the previous list printed)")
    add_store_options(lst)
    lst.set_defaults(handler=list_punches)

    export = group.add_parser("export", help="write every matching punch as CSV or JSON, streamed",
                              description="Every matching punch, in the order stored, written as each page is "
                                          "read: csv (with a header), json (one array) or jsonl (one object a "
                                          "line).")
    _filter_options(export)
    export.add_argument("--format", choices=FORMATS, default="csv", help="default csv")
    export.add_argument("--out", metavar="FILE",
                        help="write to FILE (created 0600, never overwritten; FILE.partial until complete) "
                             "instead of standard output")
    export.add_argument("--page-size", type=int, default=PAGE_ROWS, metavar="N",
                        help=f"rows per store read: memory against round trips (default {PAGE_ROWS}, at most "
                             "10000)")
    add_store_options(export, json=False)
    export.set_defaults(handler=export_punches)


def _filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", help="project code (项目编码) of the punch's device")
    parser.add_argument("--device", metavar="SERIAL", help="device serial")
    parser.add_argument("--worker", metavar="ID_NUMBER", help="full resident ID number (18 characters)")
    parser.add_argument("--since", metavar="TIME",
                        help="punch time from (inclusive): Unix ms or ISO 8601 with offset, 2026-11-24T00:00+08:00")
    parser.add_argument("--until", metavar="TIME", help="punch time to (exclusive), as --since")
    parser.add_argument("--pii", action="store_true",
                        help="show full resident ID numbers (written to the audit log with your user name)")


# --- filters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """The keyword arguments of `Store.list_punches` other than the cursor and the limit."""

    project_code: str | None = None
    device_serial: str | None = None
    worker_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def query(self) -> dict[str, Any]:
        """As keyword arguments of `Store.list_punches`."""
        return {"project_code": self.project_code, "device_serial": self.device_serial,
                "worker_id": self.worker_id, "since_ms": self.since_ms, "until_ms": self.until_ms}

    def for_audit(self) -> dict[str, Any]:
        """The filters given, the worker's ID number masked (the audit log is readable
        with the `read` scope)."""
        from lmg.protocol.identity import mask_id_number

        shown = {"project": self.project_code, "device": self.device_serial,
                 "worker": mask_id_number(self.worker_id) if self.worker_id else None,
                 "since_ms": self.since_ms, "until_ms": self.until_ms}
        return {name: value for name, value in shown.items() if value is not None}


def filters_from(args: argparse.Namespace) -> Filters:
    """The filters of the command line, checked; UsageError saying what a good one is."""
    if args.worker is not None and not WORKER_ID.match(args.worker):
        raise UsageError("--worker takes the full 18-character resident ID number (17 digits, then a digit "
                         "or X); a masked or partial number matches nothing")
    for flag, value in (("--project", args.project), ("--device", args.device)):
        if value is not None and not 1 <= len(value) <= 64:
            raise UsageError(f"{flag} must be 1 to 64 characters")
    since = time_ms("--since", args.since)
    until = time_ms("--until", args.until)
    if since is not None and until is not None and until <= since:
        raise UsageError("--until must be after --since (--since is inclusive, --until exclusive)")
    return Filters(args.project, args.device, args.worker, since, until)


def time_ms(flag: str, text: str | None) -> int | None:
    """`text` (Unix ms, or ISO 8601 with an offset) as Unix ms; UsageError if neither."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: give Unix milliseconds (1795478400000) or an ISO 8601 time with "
                         "its offset (2026-11-24T08:00+08:00)") from None
    if moment.tzinfo is None:
        raise UsageError(f"{flag} {text!r} has no UTC offset, so it could mean any time zone: add one "
                         "(2026-11-24T08:00+08:00 for China Standard Time, or Z for UTC)")
    return int(moment.timestamp() * 1000)


# --- reading ---------------------------------------------------------------------------------


async def matching(store: Store, filters: Filters, *, after_id: int = 0, limit: int | None = None,
                   page_rows: int = PAGE_ROWS) -> AsyncIterator[PunchListing]:
    """The punches `filters` match with id > `after_id`, in id order, at most `limit`
    (None: all), read `page_rows` at a time: one page in memory at once."""
    after, left = after_id, limit
    while left is None or left > 0:
        size = page_rows if left is None else min(page_rows, left)
        page = await store.list_punches(**filters.query(), after_id=after, limit=size)
        for row in page:
            yield row
        if len(page) < size:
            return
        after = page[-1].id
        if left is not None:
            left -= len(page)


def row_values(row: PunchListing, pii: bool) -> tuple[Any, ...]:
    """One punch as the values of FIELDS; the ID number masked unless `pii`."""
    from lmg.protocol.identity import mask_id_number

    p = row.punch
    return (row.id, p.device_serial, row.project_code, p.record_no,
            p.worker_id if pii else mask_id_number(p.worker_id), p.punch_time_ms, p.direction, p.verify_mode,
            p.temperature_dc, p.photo_sha256.hex() if p.photo_sha256 else None, p.photo_size, p.received_at_ms)


# --- writing ---------------------------------------------------------------------------------


class RowWriter:
    """Writes rows to a text stream as they come: `begin()`, `row(values)` per punch, `end()`."""

    def __init__(self, out: IO[str]):
        self.out = out

    def begin(self) -> None: ...

    def row(self, values: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def end(self) -> None: ...


class CsvWriter(RowWriter):
    """RFC 4180 CSV with a header row; no photo hash is an empty field."""

    def __init__(self, out: IO[str]):
        super().__init__(out)
        self.csv = csv.writer(out, lineterminator="\r\n")

    def begin(self) -> None:
        self.csv.writerow(FIELDS)

    def row(self, values: tuple[Any, ...]) -> None:
        self.csv.writerow("" if value is None else value for value in values)


class JsonLinesWriter(RowWriter):
    """One JSON object per line."""

    def row(self, values: tuple[Any, ...]) -> None:
        self.out.write(orjson.dumps(dict(zip(FIELDS, values))).decode() + "\n")


class JsonArrayWriter(RowWriter):
    """One JSON array, written as the rows come: `[`, then the rows one a line, then `]`."""

    def __init__(self, out: IO[str]):
        super().__init__(out)
        self.separator = "\n"  # before the first row; ",\n" before the others

    def begin(self) -> None:
        self.out.write("[")

    def row(self, values: tuple[Any, ...]) -> None:
        self.out.write(self.separator + orjson.dumps(dict(zip(FIELDS, values))).decode())
        self.separator = ",\n"

    def end(self) -> None:
        self.out.write("\n]\n" if self.separator == ",\n" else "]\n")


class TableWriter(RowWriter):
    """For a person: aligned columns, the punch time in this machine's time zone."""

    def begin(self) -> None:
        self.out.write(f"{'id':>10}  {'device':<20} {'project':<16} {'record':>8}  {'worker':<18}  "
                       f"{'punch time':<25} {'dir':<3} {'mode':<8} temp\n")

    def row(self, values: tuple[Any, ...]) -> None:
        id_, device, project, record_no, worker, time_ms_, direction, mode, temperature = values[:9]
        when = datetime.fromtimestamp(time_ms_ / 1000).astimezone().isoformat(timespec="seconds")
        shown_temperature = f"{temperature / 10:.1f}" if temperature else "-"
        self.out.write(f"{id_:>10}  {device:<20} {project:<16} {record_no:>8}  {worker:<18}  {when:<25} "
                       f"{DIRECTIONS.get(direction, direction)!s:<3} {MODES.get(mode, mode)!s:<8} "
                       f"{shown_temperature}\n")


DIRECTIONS = {1: "in", 2: "out"}
MODES = {1: "face", 2: "card", 3: "id-card", 4: "finger"}
WRITERS: dict[str, Callable[[IO[str]], RowWriter]] = {
    "csv": CsvWriter, "json": JsonArrayWriter, "jsonl": JsonLinesWriter, "table": TableWriter}



async def _audit_pii(store: Store, command: str, filters: Filters, target: str, output: str) -> None:
    """Record a disclosure of full ID numbers before it happens (`target`: "stdout" or the
    file's absolute path; `output`: the format); CommandFailed if the audit log cannot be
    written (then nothing is shown)."""
    from lmg.storage import StoreError

    try:
        await store.audit("punches_exported", target, {"by": actor(), "command": command, "format": output,
                                                       "filters": filters.for_audit()})
    except StoreError as exc:
        raise CommandFailed(f"nothing was shown: the audit log, which records every --pii read, could not be "
                            f"written ({exc})") from None


# --- the commands ------------------------------------------------------------------------------


async def _count(store: Store, args: argparse.Namespace) -> int:
    count = await store.count_punches()
    print(orjson.dumps({"punches": count}).decode() if args.json else count)
    return 0


def list_punches(args: argparse.Namespace) -> int:
    filters = filters_from(args)
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    if args.after < 0:
        raise UsageError("--after takes an id printed by an earlier list (0 or more)")

    async def work(store: Store, args: argparse.Namespace) -> int:
        if args.pii:
            await _audit_pii(store, "list", filters, "stdout", "jsonl" if args.json else "table")
        writer = WRITERS["jsonl" if args.json else "table"](sys.stdout)
        limit = args.limit or None
        writer.begin()
        shown, last = 0, args.after
        async for row in matching(store, filters, after_id=args.after, limit=limit):
            writer.row(row_values(row, args.pii))
            shown, last = shown + 1, row.id
        writer.end()
        if limit is not None and shown == limit and await _any_after(store, filters, last):
            print(f"more punches match: add --after {last} for the next ones (or --limit 0 for all)",
                  file=sys.stderr)
        elif not args.json and shown == 0:
            print("no punches match", file=sys.stderr)
        return 0

    return run_on_store(work, args, create=False)


async def _any_after(store: Store, filters: Filters, after_id: int) -> bool:
    return bool(await store.list_punches(**filters.query(), after_id=after_id, limit=1))


def export_punches(args: argparse.Namespace) -> int:
    from lmg.storage import MAX_PUNCH_PAGE

    filters = filters_from(args)
    if not 1 <= args.page_size <= MAX_PUNCH_PAGE:
        raise UsageError(f"--page-size must be 1 to {MAX_PUNCH_PAGE}")
    out = None if args.out in (None, "-") else args.out
    if out is not None:
        if os.path.exists(out):
            raise UsageError(f"{out} exists; choose another --out (an export never overwrites a file)")
        if os.path.exists(out + ".partial"):
            raise UsageError(f"{out}.partial exists: an earlier export to {out} was interrupted or is running; "
                             "remove it, or choose another --out")
        if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise UsageError(f"the directory of {out} does not exist; create it or choose another --out")
    return asyncio.run(_export(args, filters, out))


async def _export(args: argparse.Namespace, filters: Filters, out: str | None) -> int:
    from lmg.storage import StoreError

    store = await open_store_from(args, create=False)
    try:
        if args.pii:
            await _audit_pii(store, "export", filters, os.path.abspath(out) if out else "stdout", args.format)
        if out is None:
            count = await _write(store, filters, args, sys.stdout)
        else:
            count = await _write_file(store, filters, args, out)
    except StoreError as exc:
        raise CommandFailed(f"the export stopped: the store failed ({exc})"
                            + (f"; {out} was not written" if out else "")) from None
    finally:
        await store.close()
    if out is not None:
        print(f"{count} punches written to {out}", file=sys.stderr)
    return 0


async def _write(store: Store, filters: Filters, args: argparse.Namespace, stream: IO[str]) -> int:
    """Write every matching punch to `stream`, flushing after each page; return how many."""
    writer = WRITERS[args.format](stream)
    writer.begin()
    count = 0
    async for row in matching(store, filters, page_rows=args.page_size):
        writer.row(row_values(row, args.pii))
        count += 1
        if count % args.page_size == 0:
            stream.flush()  # a consumer (a pipe, `tail -f`) sees each page as it is read
    writer.end()
    stream.flush()
    return count


async def _write_file(store: Store, filters: Filters, args: argparse.Namespace, out: str) -> int:
    partial = out + ".partial"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # personal data: owner only
    except OSError as exc:
        raise CommandFailed(f"cannot create {partial}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as stream:
            count = await _write(store, filters, args, stream)
            os.fsync(stream.fileno())
        os.link(partial, out)  # not rename: a file that appeared at `out` meanwhile is not replaced
        return count
    except FileExistsError:
        raise CommandFailed(f"{out} appeared while the export ran; it was left alone and the export "
                            "discarded: run it again with another --out") from None
    except OSError as exc:
        raise CommandFailed(f"writing {out} failed: {exc.strerror or exc}; nothing was left behind") from None
    finally:
        try:
            os.unlink(partial)  # done: FILE is its other name; failed: incomplete
        except FileNotFoundError:
            pass
