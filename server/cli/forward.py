"""`lmg forward ...`: run the forwarder alone, and look after its outbox.

    lmg forward [run] --forward-url URL --forward-app-key K --forward-app-secret S
    lmg forward status [--json]          pending, oldest_age_s, dead_letters
    lmg forward dead-letters [--json]    records the province rejected, with its reason
    lmg forward retry ID ... | --all     make dead letters pending again

`run` works on the same store as `lmg serve` (same --data-dir / --store), beside it or
on another machine; several forwarders on one PostgreSQL store share the work. Every
`forward_*` key comes from flags, LMG_FORWARD_* variables or the TOML file given by
--config (see server/forwarding/config.py for the keys and their defaults). `status`,
`dead-letters` and `retry` work on an existing store and never create one: a wrong
--data-dir says there is no database there (exit 2).
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from lmg.server.cli import UsageError, add_store_options, open_store_from, run_on_store, store_settings
from lmg.server.settings import KEYS, add_flags

FORWARD_KEYS = tuple(name for name, spec in KEYS.items() if spec.section == "forward")
RUN_KEYS = ("log_level", "log_format", *FORWARD_KEYS)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "forward", help="forward stored punches to the provincial system; outbox status and dead letters",
        description="Without an action: run the forwarder (same as `lmg forward run`).")
    _run_options(parser, suppress=False)
    parser.set_defaults(handler=run)
    group = parser.add_subparsers(dest="forward_command", metavar="ACTION")

    sub = group.add_parser("run", help="forward until SIGTERM/SIGINT")
    _run_options(sub, suppress=True)
    sub.set_defaults(handler=run)

    sub = group.add_parser("status", help="outbox: pending, oldest_age_s, dead_letters")
    add_store_options(sub, suppress=True)
    sub.set_defaults(handler=lambda a: run_on_store(_status, a, create=False))

    sub = group.add_parser("dead-letters", help="records the province rejected as invalid, with its reason")
    sub.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    add_store_options(sub, suppress=True)
    sub.set_defaults(handler=lambda a: run_on_store(_dead_letters, a, create=False))

    sub = group.add_parser("retry", help="send dead letters again (after fixing the cause)")
    sub.add_argument("ids", nargs="*", type=int, metavar="ID", help="outbox ids from `lmg forward dead-letters`")
    sub.add_argument("--all", action="store_true", help="every dead letter")
    add_store_options(sub, suppress=True)
    sub.set_defaults(handler=lambda a: run_on_store(_retry, a, create=False))


def _run_options(parser, suppress: bool) -> None:
    """The store location, --config and every forward_* key (`lmg forward` and `lmg forward run`)."""
    add_store_options(parser, json=False, suppress=suppress)
    add_flags(parser, RUN_KEYS, suppress=suppress)


async def _status(store, args) -> int:
    from lmg.storage.api import wall_clock_ms

    status = await store.outbox_status(wall_clock_ms())
    data = {"pending": status.pending, "oldest_age_s": round(status.oldest_age_s, 3),
            "dead_letters": status.dead_letters}
    if args.json:
        print(orjson.dumps(data).decode())
    else:
        for key, value in data.items():
            print(f"{key:>13}: {value}")
    return 0


async def _dead_letters(store, args) -> int:
    from lmg.server.forwarding import summarize

    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    rows = summarize(await store.list_dead_letters(limit=args.limit))
    if args.json:
        print(orjson.dumps(rows).decode())
    elif not rows:
        print("no dead letters")
    else:
        for row in rows:
            print(f"{row['id']:>10}  {row['record_id']:<32} {row['reason']}")
        print(f"{len(rows)} dead letter(s); `lmg forward retry ID ...` or `--all` sends them again")
    return 0


async def _retry(store, args) -> int:
    if bool(args.ids) == bool(args.all):
        raise UsageError("give dead-letter ids (see `lmg forward dead-letters`) or --all, not both")
    count = await store.retry_dead_letters(None if args.all else args.ids)
    await store.audit("dead_letters_retried", "outbox", {"ids": "all" if args.all else args.ids, "count": count})
    if args.json:
        print(orjson.dumps({"retried": count}).decode())
    else:
        print(f"{count} dead letter(s) pending again")
    if args.ids and count < len(args.ids):
        print(f"{len(args.ids) - count} id(s) were not dead letters (already retried, forwarded, or unknown)")
    return 0


def run(args) -> int:
    settings = store_settings(args, RUN_KEYS)
    if not settings.forward.enabled():
        raise UsageError("nothing to forward to: give --forward-url (or LMG_FORWARD_URL, or forward_url in --config)")
    from lmg.server.logs import setup_logging  # JSON lines or key=value, masked (server/logs.py)
    setup_logging(settings.gateway.log_level, settings.gateway.log_format)
    import uvloop

    return uvloop.run(_run(args, settings.forward))


async def _run(args, config) -> int:
    import signal

    from lmg.server.forwarding import run_forwarder

    store = await open_store_from(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        stats = await run_forwarder(store, config, stop)
        logging.getLogger("lmg.forward").info("stopped: %s", stats)
    finally:
        await store.close()
    return 0
