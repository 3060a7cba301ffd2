"""`lmg device ...`: provisioning terminals, working on the store directly.

Secrets are shown once, when created or rotated (`add`, `generate` writes them to the
CSV file for simulators, `rotate-secret`); `list` never shows them. Every change is
written to the audit log. `add`, `generate` and `import` create the store if it is
missing (provisioning the first devices of a new node); `list`, `disable`, `enable` and
`rotate-secret` need it to exist, so a wrong --data-dir says there is no database there
(exit 2) rather than creating one. A store that fails while a command runs exits 1
(server/cli/__init__.py).
"""

from __future__ import annotations

import csv
import os

import orjson

from lmg.protocol.credentials import CredentialsError, format_credentials, parse_credentials
from lmg.server.cli import CommandFailed, UsageError, actor, add_store_options, run_on_store


def register(subparsers) -> None:
    parser = subparsers.add_parser("device", help="provision and manage terminals")
    group = parser.add_subparsers(dest="device_command", metavar="ACTION")
    group.required = True

    add = group.add_parser("add", help="provision one device and print its secret once")
    add.add_argument("serial")
    add.add_argument("--project", required=True, help="project code (项目编码)")
    add.add_argument("--region", default="620000", help="GB/T 2260 region code (default 620000, Gansu)")
    add_store_options(add)
    add.set_defaults(handler=lambda a: run_on_store(_add, a, create=True))

    gen = group.add_parser("generate", help="provision N devices and write serial,secret,project rows")
    gen.add_argument("--count", type=int, required=True)
    gen.add_argument("--prefix", required=True, help="serials are PREFIX000001, PREFIX000002, …")
    gen.add_argument("--project", required=True)
    gen.add_argument("--region", default="620000")
    gen.add_argument("--out", required=True, help="CSV file to write (serial,secret,project)")
    add_store_options(gen, json=False)
    gen.set_defaults(handler=lambda a: run_on_store(_generate, a, create=True))

    imp = group.add_parser("import", help="provision devices from a serial,secret,project CSV")
    imp.add_argument("file")
    imp.add_argument("--region", default="620000")
    add_store_options(imp, json=False)
    imp.set_defaults(handler=lambda a: run_on_store(_import, a, create=True))

    lst = group.add_parser("list", help="list devices (never their secrets)")
    add_store_options(lst)
    lst.set_defaults(handler=lambda a: run_on_store(_list, a, create=False))

    for name, text in (("disable", "refuse the device's connections"), ("enable", "accept the device again"),
                       ("rotate-secret", "give the device a new secret and print it once")):
        sub = group.add_parser(name, help=text)
        sub.add_argument("serial")
        add_store_options(sub)
        sub.set_defaults(handler=lambda a: run_on_store(_change, a, create=False))



async def _add(store, args) -> int:
    from lmg.storage import DeviceExists

    try:
        device = await store.add_device(args.serial, project_code=args.project, region_code=args.region)
    except DeviceExists:
        raise UsageError(f"device {args.serial} already exists; use `lmg device rotate-secret {args.serial}` for a new secret") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    await store.audit("device_added", device.serial, {"project": args.project, "by": actor()})
    if args.json:
        print(orjson.dumps({"serial": device.serial, "secret": device.secret.hex(), "project": device.project_code,
                            "region": device.region_code}).decode())
    else:
        print(f"device {device.serial} added to project {device.project_code}")
        print(f"secret (shown once, configure it on the terminal): {device.secret.hex()}")
    return 0


async def _generate(store, args) -> int:
    if args.count <= 0:
        raise UsageError("--count must be at least 1")
    if os.path.exists(args.out):
        raise UsageError(f"{args.out} exists; choose another --out (it would hold secrets of other devices)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UsageError(f"the directory of {args.out} does not exist; create it or choose another --out")
    rows = []
    try:
        for i in range(1, args.count + 1):
            device = await store.add_device(f"{args.prefix}{i:06d}", project_code=args.project, region_code=args.region)
            rows.append((device.serial, device.secret, device.project_code))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if rows:
            try:
                _write_csv(args.out, rows)
            except OSError as exc:
                raise CommandFailed(f"cannot write {args.out}: {exc.strerror}; {len(rows)} devices were "
                                    "provisioned and their secrets are lost: rotate them with "
                                    "`lmg device rotate-secret SERIAL`") from None
    await store.audit("devices_generated", args.prefix, {"count": len(rows), "project": args.project, "by": actor()})
    print(f"provisioned {len(rows)} devices; credentials in {args.out}")
    return 0


def _write_csv(path: str, rows) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # secrets: owner only
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(format_credentials(rows))


def _read_csv(path: str) -> list[tuple[str, bytes, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return parse_credentials(fh, path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except CredentialsError as exc:
        raise UsageError(str(exc)) from None


async def _import(store, args) -> int:
    from lmg.storage import DeviceExists

    added = skipped = 0
    for serial, secret, project in _read_csv(args.file):
        try:
            await store.add_device(serial, project_code=project, region_code=args.region, secret=secret)
            added += 1
        except DeviceExists:
            skipped += 1
        except ValueError as exc:
            raise UsageError(f"{args.file}: {exc}") from None
    await store.audit("devices_imported", args.file, {"added": added, "skipped": skipped, "by": actor()})
    print(f"imported {added} devices ({skipped} already present, left unchanged)")
    return 0


async def _list(store, args) -> int:
    devices, after = [], ""
    while True:
        page = await store.list_devices(after_serial=after, limit=1000)
        devices += page
        if len(page) < 1000:
            break
        after = page[-1].serial
    if args.json:
        print(orjson.dumps([{"serial": d.serial, "project": d.project_code, "region": d.region_code,
                             "enabled": d.enabled, "online": d.online, "last_seen_ms": d.last_seen_ms,
                             "firmware": d.firmware, "roster_version": d.roster_version} for d in devices]).decode())
        return 0
    # roster: the version of the terminal's last complete roster sync (docs/downlink.md)
    print(f"{'serial':<24} {'project':<16} {'region':<7} {'enabled':<8} {'online':<7} {'roster':>6}  firmware")
    for d in devices:
        print(f"{d.serial:<24} {d.project_code:<16} {d.region_code:<7} {str(d.enabled):<8} {str(d.online):<7} "
              f"{d.roster_version:>6}  {d.firmware}")
    return 0


async def _change(store, args) -> int:
    from lmg.storage import UnknownDevice

    action = args.device_command  # disable, enable or rotate-secret
    try:
        if action == "disable":
            await store.disable_device(args.serial)
            result = {"serial": args.serial, "enabled": False}
        elif action == "enable":
            await store.enable_device(args.serial)
            result = {"serial": args.serial, "enabled": True}
        else:
            secret = await store.rotate_device_secret(args.serial)
            result = {"serial": args.serial, "secret": secret.hex()}
    except UnknownDevice:
        raise UsageError(f"no device {args.serial}; see `lmg device list`") from None
    await store.audit(f"device_{action.replace('-', '_')}", args.serial, {"by": actor()})
    if args.json:
        print(orjson.dumps(result).decode())
    elif action == "rotate-secret":
        print(f"new secret for {args.serial} (shown once): {result['secret']}")
    else:
        print(f"device {args.serial} {action}d")
    return 0


