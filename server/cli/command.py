"""`lmg command send|list|show|cancel`: operator commands to terminals, queued and tracked.

    lmg command send SERIAL TYPE [key=value ...] [--expires SECONDS]
    lmg command list [--device SERIAL] [--status STATE] [--limit N] [--json]
    lmg command show ID [--json]
    lmg command cancel ID

TYPE is one of the command types of lmg.server.downlink.commands (`set-time`,
`config-get`, `config-set`, `reboot`, `door-open`, `roster-version-query`), named after
their messages; `lmg command send SERIAL TYPE --help-type` lists each type's arguments.
A command waits in the store until the device's session takes it (at once if it is
online: the gateway is signalled) or until it expires. States: queued, sent, acked,
failed (with the terminal's result code), expired, cancelled (docs/downlink.md).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson

from lmg.server.cli import UsageError, actor, add_store_options, run_on_store


def register(subparsers: Any) -> None:
    from lmg.server.downlink.commands import COMMAND_TYPES

    parser = subparsers.add_parser("command", help="operator commands to terminals: send, list, show, cancel")
    group = parser.add_subparsers(dest="command_command", metavar="ACTION")
    group.required = True

    send = group.add_parser("send", help="queue a command for a device",
                            description="Types and their arguments: " + "; ".join(
                                f"{name} {' '.join(_usage(spec))}".strip() for name, spec in COMMAND_TYPES.items()))
    send.add_argument("serial")
    send.add_argument("type", choices=list(COMMAND_TYPES), metavar="TYPE", help=", ".join(COMMAND_TYPES))
    send.add_argument("arguments", nargs="*", metavar="key=value")
    send.add_argument("--expires", type=float, metavar="SECONDS",
                      help="give up if not delivered by then (default: the command_ttl_s setting, one day)")
    add_store_options(send)
    send.set_defaults(handler=lambda a: run_on_store(_send, a, create=False))

    lst = group.add_parser("list", help="commands, newest last")
    lst.add_argument("--device", help="only this device's")
    lst.add_argument("--status", choices=("queued", "sent", "acked", "failed", "expired", "cancelled"))
    lst.add_argument("--limit", type=int, default=100)
    add_store_options(lst)
    lst.set_defaults(handler=lambda a: run_on_store(_list, a, create=False))

    show = group.add_parser("show", help="one command")
    show.add_argument("id", type=int)
    add_store_options(show)
    show.set_defaults(handler=lambda a: run_on_store(_show, a, create=False))

    cancel = group.add_parser("cancel", help="cancel a command not answered yet")
    cancel.add_argument("id", type=int)
    add_store_options(cancel)
    cancel.set_defaults(handler=lambda a: run_on_store(_cancel, a, create=False))


def _usage(spec: Any) -> list[str]:
    return [f"{arg.name}=<{arg.form}>" + ("" if arg.required else " (optional)") for arg in spec.arguments]


async def _send(store: Any, args: argparse.Namespace) -> int:
    from lmg.server.downlink.commands import COMMAND_TYPES, encode_arguments, parse_arguments
    from lmg.server.settings import KEYS
    from lmg.storage import UnknownDevice

    try:
        arguments = parse_arguments(args.type, args.arguments)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.expires is not None and args.expires <= 0:
        raise UsageError("--expires must be a number of seconds above 0")
    ttl_s = args.expires if args.expires is not None else KEYS["command_ttl_s"].default
    now = time.time_ns() // 1_000_000
    try:
        command_id = await store.enqueue_command(args.serial, int(COMMAND_TYPES[args.type].message_type),
                                                 encode_arguments(arguments), expires_at_ms=now + int(ttl_s * 1000),
                                                 created_by=f"cli:{actor()}")
    except UnknownDevice:
        raise UsageError(f"no device {args.serial}; see `lmg device list`") from None
    await store.audit("command_queued", args.serial, {"id": command_id, "type": args.type, "by": actor()})
    if args.json:
        print(orjson.dumps({"id": command_id, "status": "queued"}).decode())
    else:
        print(f"command {command_id} ({args.type}) queued for {args.serial}; `lmg command show {command_id}` follows it")
    return 0


async def _list(store: Any, args: argparse.Namespace) -> int:
    from lmg.storage import CommandState

    if not 1 <= args.limit <= 10_000:
        raise UsageError("--limit must be 1..10000")
    commands = await store.list_commands(device_serial=args.device,
                                         state=CommandState(args.status) if args.status else None, limit=args.limit)
    from lmg.server.downlink.commands import command_view

    rows = [command_view(c) for c in commands]
    if args.json:
        print(orjson.dumps(rows).decode())
        return 0
    if not rows:
        print("no commands")
        return 0
    print(f"{'id':>8}  {'device':<20} {'type':<22} {'status':<10} result")
    for row in rows:
        print(f"{row['id']:>8}  {row['device']:<20} {row['type']:<22} {row['status']:<10} {row['result'] or ''}")
    return 0


async def _show(store: Any, args: argparse.Namespace) -> int:
    command = await store.get_command(args.id)
    if command is None:
        raise UsageError(f"no command {args.id}; `lmg command list` shows them")
    from lmg.server.downlink.commands import command_view

    row = command_view(command)
    if args.json:
        print(orjson.dumps(row).decode())
    else:
        for key, value in row.items():
            print(f"{key:>15}: {value}")
    return 0


async def _cancel(store: Any, args: argparse.Namespace) -> int:
    if not await store.cancel_command(args.id):
        command = await store.get_command(args.id)
        if command is None:
            raise UsageError(f"no command {args.id}; `lmg command list` shows them")
        raise UsageError(f"command {args.id} is {command.state.value} already; only queued or sent commands can be "
                         "cancelled")
    await store.audit("command_cancelled", str(args.id), {"by": actor()})
    print(orjson.dumps({"id": args.id, "status": "cancelled"}).decode() if args.json else f"command {args.id} cancelled")
    return 0
