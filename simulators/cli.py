"""`lmg sim ...`: simulated peers. `lmg sim terminals` drives devices against a gateway.

Registered into the `lmg` command (server/cli) by name; the simulators depend on the
protocol, the storage layer and the server's public entry points only, so mistakes in
the command line raise this module's own `UsageError` (the `lmg` command treats it as
its own: exit status 2, one sentence).
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from lmg.simulators.fleet import DIALECTS, SCENARIOS


class UsageError(Exception):
    """A mistake in how `lmg sim` was called; the message says how to fix it."""


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
    fleet = terminals.add_argument_group(
        "fleet", "with --scenario the devices stay connected as a fleet (simulators/fleet.py) instead of "
        "uploading --punches-per-device and leaving")
    fleet.add_argument("--scenario", choices=SCENARIOS,
                       help="rush: punches at --rate (or every window kept full); idle: heartbeats only; backlog: "
                       "each device comes back with --backlog-records stored punches; storm: all drop and reconnect "
                       "at once; chaos: a share of clients send garbage, oversize frames, never authenticate or read")
    fleet.add_argument("--duration", type=float, default=30.0, help="seconds measured after all are connected "
                       "(storm, backlog: the cap) (default 30)")
    fleet.add_argument("--rate", type=float, default=0.0, help="punches/s from the whole fleet; 0 = closed loop")
    fleet.add_argument("--processes", type=int, default=1, help="fleet processes (each holds < 20,000 sockets)")
    fleet.add_argument("--source-addresses", default="",
                       help="loopback source addresses, e.g. 127.0.0.1-127.0.0.8 (~28k ports per address pair)")
    fleet.add_argument("--backlog-records", type=int, default=1000, help="backlog: stored punches per device")
    fleet.add_argument("--chaos-share", type=float, default=0.2, help="chaos: share of misbehaving clients")
    fleet.add_argument("--photo-share", type=float, default=0.0,
                       help="share of punches with a face snapshot, uploaded in PHOTO_CHUNKs after the ACK (default 0)")
    fleet.add_argument("--photo-kb", type=float, default=30.0, help="size of each snapshot in KiB (default 30)")
    fleet.add_argument("--heartbeat-s", type=float, default=0.0, help="heartbeat interval; 0 = as the server says")
    fleet.add_argument("--reconnect-base-s", type=float, default=1.0, help="first reconnect wait (doubles to 60 s)")
    fleet.add_argument("--dialect", choices=DIALECTS, default="lmg",
                       help="lmg (the gateway), bare (baseline server), mqtt (QoS 1 broker)")
    terminals.set_defaults(handler=run_terminals)
    _register_device(group)
    from lmg.simulators.province_cli import register_province

    register_province(group)


def _register_device(group) -> None:
    from lmg.simulators.firmware import MISBEHAVIOURS

    kinds = "; ".join(f"{kind}: {item}" for kind, (item, _) in MISBEHAVIOURS.items())
    device = group.add_parser(
        "device",
        help="one long-lived terminal that behaves as firmware should (or misbehaves on purpose)",
        description="A simulated terminal that stays connected: reconnects with back-off, keeps unanswered punches "
        "(in --state across restarts), uploads and resumes photos, answers every command and keeps its roster, "
        "as docs/protocol.md asks. --misbehave breaks one rule, graded by one item of `lmg conformance serve`.",
    )
    device.add_argument("--target", required=True, help="HOST:PORT of the gateway or of the conformance kit")
    device.add_argument("--serial", required=True, help="the device's serial, as provisioned")
    device.add_argument("--secret", required=True, help="the device's 32-byte secret, 64 hex characters")
    device.add_argument("--ws", action="store_true", help="connect over WebSocket (path /terminal) instead of TCP")
    device.add_argument("--tls", action="store_true", help="connect with TLS (no certificate check: test use)")
    device.add_argument("--misbehave", action="append", default=[], metavar="KIND",
                        help=f"break one rule on purpose (repeat for several). Kinds and the item each fails: {kinds}")
    device.add_argument("--punch-every", type=float, default=10.0, metavar="S",
                        help="a worker punches every S seconds (default 10; 0: never)")
    device.add_argument("--photo-share", type=float, default=0.5, metavar="F",
                        help="share of punches with a face snapshot, 0-1 (default 0.5)")
    device.add_argument("--photo-kb", type=int, default=24, metavar="N", help="snapshot size in KiB (default 24)")
    device.add_argument("--duration", type=float, default=0.0, metavar="S",
                        help="stop after S seconds, saying GOODBYE TERMINAL_LEAVING (default 0: until Ctrl-C)")
    device.add_argument("--state", metavar="FILE",
                        help="JSON file holding the record counter and the unanswered punches and photos across "
                        "runs (the terminal's flash); without it record numbers start at --first-record")
    device.add_argument("--first-record", type=int, default=None, metavar="N",
                        help="record_no of the first punch when there is no state (default: the Unix time in "
                        "seconds, above any earlier run's numbers unless that run punched faster than once a second)")
    device.add_argument("--ack-timeout", type=float, default=15.0, metavar="S",
                        help="resend a record unanswered for S seconds (default 15, the document's)")
    device.add_argument("--backoff-base", type=float, default=1.0, metavar="S",
                        help="first reconnect wait, doubling after each failed attempt (default 1)")
    device.add_argument("--backoff-cap", type=float, default=60.0, metavar="S",
                        help="reconnect back-off cap before jitter, also the wait after BAD_SIGNATURE (default 60)")
    device.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    device.set_defaults(handler=run_device)


def run_device(args) -> int:
    """`lmg sim device`: run one simulated terminal until --duration or Ctrl-C; print its summary."""
    from pathlib import Path

    from lmg.simulators.firmware import MISBEHAVIOURS, FirmwareConfig, SimulatedDevice, StateError
    from lmg.simulators.reconnect import BackoffPolicy

    host, _, port = args.target.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--target {args.target!r}: use HOST:PORT")
    unknown = [kind for kind in args.misbehave if kind not in MISBEHAVIOURS]
    if unknown:
        raise UsageError(f"--misbehave {', '.join(unknown)}: unknown; choose from {', '.join(MISBEHAVIOURS)}")
    try:
        secret = bytes.fromhex(args.secret)
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise UsageError("--secret must be 64 hex characters (the 32-byte secret `lmg device add` printed)")
    if not 0.0 <= args.photo_share <= 1.0:
        raise UsageError(f"--photo-share {args.photo_share}: use a share between 0 and 1")
    if args.punch_every < 0 or args.duration < 0 or args.photo_kb < 0 or args.ack_timeout <= 0:
        raise UsageError("--punch-every, --duration and --photo-kb must not be negative, --ack-timeout above 0")
    if args.photo_kb > 2048:
        raise UsageError(f"--photo-kb {args.photo_kb}: the gateway refuses photos above 2048 KiB (PHOTO_TOO_LARGE)")
    if not 0.01 <= args.backoff_base <= args.backoff_cap <= 3600:
        raise UsageError(f"--backoff-base {args.backoff_base} and --backoff-cap {args.backoff_cap}: use "
                         "0.01 <= base <= cap <= 3600 seconds")
    first = args.first_record if args.first_record is not None else int(time.time())
    if not 1 <= first <= 0xFFFFFFFF:
        raise UsageError(f"--first-record {first}: record numbers are 1 to 4294967295")
    try:
        config = FirmwareConfig(args.serial, secret, misbehave=frozenset(args.misbehave),
                                ack_timeout_s=args.ack_timeout,
                                backoff=BackoffPolicy(base_s=args.backoff_base, cap_s=args.backoff_cap))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tls = None
    if args.tls:
        import ssl

        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    try:
        device = SimulatedDevice(config, host or "127.0.0.1", int(port), transport="ws" if args.ws else "tcp",
                                 tls=tls, state_path=Path(args.state) if args.state else None, first_record_no=first,
                                 punch_every_s=args.punch_every, photo_share=args.photo_share,
                                 photo_bytes=args.photo_kb * 1024)
    except StateError as exc:
        raise UsageError(str(exc)) from None
    import logging

    handler = logging.StreamHandler(sys.stderr)  # what the device does, line by line; the summary goes to stdout
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    device_log = logging.getLogger("lmg.simulators.firmware")
    device_log.addHandler(handler)
    device_log.setLevel(logging.INFO)
    summary = asyncio.run(_run_device(device, args.duration or None))
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        for key, value in summary.items():
            print(f"{key:>22}: {value}")
    return 0


async def _run_device(device, duration_s: float | None) -> dict:
    """Run until `duration_s` or SIGINT/SIGTERM, then leave as firmware does (GOODBYE first)."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, lambda: loop.create_task(device.stop()))
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    return await device.run(duration_s=duration_s)


def source_addresses(text: str) -> list[str]:
    """'127.0.0.1-127.0.0.8' or '127.0.0.1,127.0.0.2' -> the addresses."""
    import ipaddress

    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        try:
            start = ipaddress.IPv4Address(first)
            end = ipaddress.IPv4Address(last) if last else start
        except ValueError:
            raise UsageError(f"--source-addresses {text!r}: use 127.0.0.1-127.0.0.8 or a comma list") from None
        if end < start or int(end) - int(start) > 255:
            raise UsageError(f"--source-addresses {part!r}: the range must go up and hold at most 256 addresses")
        out += [str(ipaddress.IPv4Address(n)) for n in range(int(start), int(end) + 1)]
    return out


def run_terminals(args) -> int:
    from lmg.protocol.credentials import CredentialsError, parse_credentials

    host, _, port = args.target.rpartition(":")
    if not port.isdigit():
        raise UsageError(f"--target {args.target!r}: use HOST:PORT")
    try:
        with open(args.devices, newline="", encoding="utf-8") as fh:
            devices = parse_credentials(fh, args.devices)
    except OSError as exc:
        raise UsageError(f"cannot read {args.devices}: {exc.strerror}") from None
    except CredentialsError as exc:
        raise UsageError(str(exc)) from None
    if not devices:
        raise UsageError(f"{args.devices} holds no devices")
    import uvloop

    if args.scenario:
        return run_fleet_cli(args, host or "127.0.0.1", int(port), devices)
    if args.photo_share:
        raise UsageError("--photo-share needs --scenario: the fleet uploads photos, the one-shot upload does not")

    summary = uvloop.run(_drive(args, host or "127.0.0.1", int(port), devices))
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        for key, value in summary.items():
            print(f"{key:>12}: {value}")
    return 0 if summary["errors"] == 0 and summary["acked"] + summary["duplicates"] + summary["rejected"] >= summary["records"] else 1


async def _drive(args, host: str, port: int, devices) -> dict:
    import ssl

    from lmg.simulators.terminal import DeviceCredentials, TerminalConnection, UploadTally, make_punch, upload_punches

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




def run_fleet_cli(args, host: str, port: int, devices) -> int:
    """`--scenario`: run the fleet; a live display on a terminal, one JSON object with --json."""
    import uvloop

    from lmg.simulators.fleet import FleetSpec, raise_fd_limit, run_fleet

    if args.processes < 1:
        raise UsageError("--processes must be at least 1")
    raise_fd_limit()
    from lmg.server.gateway import tune_collector

    tune_collector()
    try:
        spec = FleetSpec(host=host, port=port, devices=[[serial, secret.hex()] for serial, secret, _ in devices],
                         scenario=args.scenario, dialect=args.dialect, transport=args.transport, tls=args.tls,
                         duration_s=args.duration, rate=args.rate, batch_size=args.batch_size, window=args.window,
                         heartbeat_s=args.heartbeat_s, backlog_records=args.backlog_records,
                         chaos_share=args.chaos_share, source_addresses=source_addresses(args.source_addresses),
                         first_record=args.first_record, reconnect_base_s=args.reconnect_base_s,
                         photo_share=args.photo_share, photo_bytes=round(args.photo_kb * 1024))
    except ValueError as exc:
        raise UsageError(f"--photo-share/--photo-kb: {exc}") from None
    live = None
    if not args.json and sys.stdout.isatty():
        live = _live_display(args.scenario)
    try:
        if live is not None:
            live[0].start()
        summary = uvloop.run(run_fleet(spec, args.processes, on_progress=live[1] if live else None))
    finally:
        if live is not None:
            live[0].stop()
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        summary.pop("counters", None)
        for key, value in summary.items():
            print(f"{key:>22}: {value}")
    well = args.scenario != "storm" or summary.get("storm_complete")
    return 0 if well and summary["unexpected_disconnects"] == 0 else 1


def _live_display(scenario: str):
    """(rich Live, on_progress): a table refreshed from the fleet's progress snapshots."""
    from rich.live import Live
    from rich.table import Table

    live = Live(Table(), auto_refresh=False, transient=False)

    def on_progress(snap: dict) -> None:
        table = Table(title=f"lmg sim terminals --scenario {scenario}", show_header=True)
        for name in ("elapsed_s", "online", "devices", "sent", "acked", "duplicates", "nacks", "reconnects",
                     "unexpected_disconnects", "heartbeats_acked", "p99_ms"):
            table.add_column(name.replace("_", " "), justify="right")
        table.add_row(*(str(snap.get(name, 0) if snap.get(name) is not None else "-") for name in (
            "elapsed_s", "online", "devices", "sent", "acked", "duplicates", "nacks", "reconnects",
            "unexpected_disconnects", "heartbeats_acked", "p99_ms")))
        live.update(table, refresh=True)

    return live, on_progress
