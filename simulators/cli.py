"""`lmg sim ...`: simulated peers. `lmg sim terminals` drives devices against a gateway."""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from server.cli import UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser("sim", help="simulated terminals and upstreams")
    group = parser.add_subparsers(dest="sim_command", metavar="SIMULATOR")
    group.required = True
    terminals = group.add_parser(
        "terminals",
        help="authenticate devices from a CSV and upload punches",
        description="Each device authenticates, sends its punches (resending unanswered ones after a "
        "reconnect, as firmware does) and disconnects. Works against any server speaking docs/protocol.md.",
    )
    terminals.add_argument("--target", required=True, help="HOST:PORT of the gateway (TCP or WebSocket listener)")
    terminals.add_argument("--devices", required=True, help="CSV of serial,secret,project (lmg device generate)")
    terminals.add_argument("--transport", choices=("tcp", "ws"), default="tcp")
    terminals.add_argument("--punches-per-device", type=int, default=10)
    terminals.add_argument("--batch-size", type=int, default=1, help="records per frame: 1 sends PUNCH, more PUNCH_BATCH")
    terminals.add_argument("--window", type=int, default=8, help="frames in flight per device (default 8)")
    terminals.add_argument("--concurrency", type=int, default=500, help="devices connected at once (default 500)")
    terminals.add_argument("--first-record", type=int, default=1, help="record_no of each device's first punch")
    terminals.add_argument("--tls", action="store_true", help="connect with TLS (no certificate check: test use)")
    terminals.add_argument("--json", action="store_true", help="print one JSON summary object")
    terminals.set_defaults(handler=run_terminals)


def run_terminals(args) -> int:
    from server.device_cli import read_devices_csv

    host, _, port = args.target.rpartition(":")
    if not port.isdigit():
        raise UsageError(f"--target {args.target!r}: use HOST:PORT")
    devices = read_devices_csv(args.devices)
    if not devices:
        raise UsageError(f"{args.devices} holds no devices")
    import uvloop

    summary = uvloop.run(_drive(args, host or "127.0.0.1", int(port), devices))
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        for key, value in summary.items():
            print(f"{key:>12}: {value}")
    return 0 if summary["errors"] == 0 and summary["acked"] + summary["duplicates"] + summary["rejected"] >= summary["records"] else 1


async def _drive(args, host: str, port: int, devices) -> dict:
    import ssl

    from simulators.terminal import DeviceCredentials, TerminalConnection, UploadTally, make_punch, upload_punches

    tls = None
    if args.tls:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    total = UploadTally()
    gate = asyncio.Semaphore(args.concurrency)
    now = int(time.time() * 1000)
    started = time.perf_counter()

    async def device(index: int, serial: str, secret: bytes, project: str) -> None:
        credentials = DeviceCredentials(serial, secret, project)
        records = [make_punch(args.first_record + i, index * 1000 + i, now - 1000 * (args.punches_per_device - i))
                   for i in range(args.punches_per_device)]

        async def connect():
            connection = TerminalConnection(credentials, host, port, transport=args.transport, tls=tls)
            await connection.open()
            try:
                await connection.authenticate()
            except BaseException:
                await connection.close()
                raise
            return connection

        async with gate:
            tally = await upload_punches(connect, records, batch_size=args.batch_size, window=args.window)
        total.add(tally)

    await asyncio.gather(*(device(i, *row) for i, row in enumerate(devices)))
    elapsed = time.perf_counter() - started
    result = total.as_dict()
    result.update({"devices": len(devices), "records": len(devices) * args.punches_per_device,
                   "elapsed_s": round(elapsed, 3)})
    return result


