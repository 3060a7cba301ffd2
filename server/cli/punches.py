"""`lmg punches ...`: storage commands for operators.

    lmg punches count [--data-dir DIR] [--store URL]   print how many punches are stored

Problems a person can fix (no database there, unreachable server, newer schema) print
one `lmg: ...` line saying what to do and exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from lmg.storage.errors import StoreError
from lmg.storage.url import DEFAULT_DATA_DIR, open_store, parse_store_url


def register(subparsers) -> None:
    parser = subparsers.add_parser("punches", help="inspect stored punches")
    group = parser.add_subparsers(dest="punches_command", metavar="COMMAND")
    group.required = True
    count = group.add_parser("count", help="print the number of stored punches")
    count.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                       help=f"data directory (default ./{DEFAULT_DATA_DIR}); holds lmg.db and photos")
    count.add_argument("--store", default=None,
                       help="store URL: sqlite:///path/lmg.db or postgresql://host/db[?schema=s] "
                            "(default: SQLite in the data directory)")
    count.set_defaults(handler=count_punches)


def count_punches(args: argparse.Namespace) -> int:
    try:
        location = parse_store_url(args.store, args.data_dir)
        if location.dialect == "sqlite" and not location.sqlite_path.exists():
            print(f"lmg: no database at {location.sqlite_path}; pass the --data-dir or --store "
                  f"the server uses", file=sys.stderr)
            return 2
        print(asyncio.run(_count(args.store, args.data_dir)))
    except StoreError as exc:
        print(f"lmg: {exc}", file=sys.stderr)
        return 2
    return 0


async def _count(url: str | None, data_dir: str) -> int:
    store = await open_store(url, data_dir=data_dir)
    try:
        return await store.count_punches()
    finally:
        await store.close()
