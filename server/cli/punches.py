"""`lmg punches ...`: storage commands for operators.

    lmg punches count [--data-dir DIR] [--store URL] [--json]   how many punches are stored

Problems a person can fix (no database there, unreachable server, newer schema) print
one `lmg: ...` line saying what to do and exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson

from lmg.server.cli import UsageError, add_store_options, open_store_from, store_settings
from lmg.storage import StoreError, parse_store_url


def register(subparsers) -> None:
    parser = subparsers.add_parser("punches", help="inspect stored punches")
    group = parser.add_subparsers(dest="punches_command", metavar="COMMAND")
    group.required = True
    count = group.add_parser("count", help="print the number of stored punches")
    add_store_options(count)
    count.set_defaults(handler=count_punches)


def count_punches(args: argparse.Namespace) -> int:
    settings = store_settings(args)
    try:
        location = parse_store_url(settings.store_url(), settings.gateway.data_dir)
        if location.dialect == "sqlite" and location.sqlite_path is not None and not location.sqlite_path.exists():
            raise UsageError(f"no database at {location.sqlite_path}; pass the --data-dir or --store the server uses")
        count = asyncio.run(_count(args))
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    print(orjson.dumps({"punches": count}).decode() if args.json else count)
    return 0


async def _count(args: argparse.Namespace) -> int:
    store = await open_store_from(args)
    try:
        return await store.count_punches()
    finally:
        await store.close()
