"""`lmg sim province serve|report`: the provincial-system simulator (simulators/province.py).

`register_province(sim_subparsers)` adds the `province` action to `lmg sim`.
"""

from __future__ import annotations

import os
import sys

import orjson

from lmg.simulators.cli import UsageError


def register_province(subparsers) -> None:
    parser = subparsers.add_parser(
        "province", help="a provincial system speaking docs/province-api.md, with fault injection",
        description="Simulates the provincial system the gateway forwards to: authenticates, decrypts, validates, "
        "deduplicates by record id and keeps what it received in <data dir>/province.db.")
    group = parser.add_subparsers(dest="province_command", metavar="ACTION")
    group.required = True

    serve = group.add_parser("serve", help="run the simulator until SIGTERM/SIGINT")
    serve.add_argument("--listen", default="127.0.0.1:9200", help="HOST:PORT to listen on (default 127.0.0.1:9200)")
    serve.add_argument("--data-dir", required=True, help="where province.db is kept (created if missing)")
    serve.add_argument("--app-key", default=os.environ.get("LMG_FORWARD_APP_KEY"),
                       help="the one app key it accepts (default LMG_FORWARD_APP_KEY)")
    serve.add_argument("--app-secret", default=os.environ.get("LMG_FORWARD_APP_SECRET"),
                       help="its secret (default LMG_FORWARD_APP_SECRET)")
    serve.add_argument("--allow", action="append", metavar="CIDR",
                       help="accept requests only from these addresses (repeatable; default any)")
    serve.add_argument("--permissions", default="attendance,devices,photos,warnings",
                       help="interfaces the app key may use (default attendance,devices,photos,warnings)")
    serve.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 500")
    serve.add_argument("--timeout-rate", type=float, default=0.0, help="share of requests that hang past any timeout")
    serve.add_argument("--latency-ms", type=int, default=0, help="delay before every answer")
    serve.add_argument("--rate-limit-rate", type=float, default=0.0, help="share answered 429 with Retry-After")
    serve.add_argument("--drop-rate", type=float, default=0.0, help="share whose connection is closed mid-request")
    serve.add_argument("--down-for", type=float, default=0.0, metavar="SECONDS",
                       help="refuse connections for this long (an outage) ...")
    serve.add_argument("--down-after", type=float, default=0.0, metavar="SECONDS",
                       help="... starting this long after start (default 0: at once)")
    serve.add_argument("--hang-s", type=float, default=120.0, help="how long a hung request hangs (default 120)")
    serve.add_argument("--seed", type=int, default=None, help="seed of the fault dice (reproducible runs)")
    serve.add_argument("--ready-file", help="write the bound address as JSON to this file once listening")
    serve.set_defaults(handler=run_serve)

    report = group.add_parser("report", help="print what the simulator received")
    report.add_argument("--data-dir", required=True)
    report.add_argument("--json", action="store_true", help="one JSON object")
    report.set_defaults(handler=run_report)


def run_serve(args) -> int:
    import logging

    from lmg.simulators.province import PERMISSIONS, Access, Faults, parse_allow, serve

    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--listen {args.listen!r}: use HOST:PORT, for example 127.0.0.1:9200")
    if not args.app_key or not args.app_secret:
        raise UsageError("give --app-key and --app-secret (or LMG_FORWARD_APP_KEY / LMG_FORWARD_APP_SECRET): "
                         "the same pair the gateway forwards with")
    permissions = frozenset(p.strip() for p in args.permissions.split(",") if p.strip())
    unknown = permissions - set(PERMISSIONS)
    if unknown:
        raise UsageError(f"--permissions: unknown {', '.join(sorted(unknown))}; use {', '.join(PERMISSIONS)}")
    try:
        faults = Faults(error_rate=args.error_rate, timeout_rate=args.timeout_rate, latency_ms=args.latency_ms,
                        rate_limit_rate=args.rate_limit_rate, drop_rate=args.drop_rate,
                        down_after_s=args.down_after, down_for_s=args.down_for, hang_s=args.hang_s)
        access = Access(args.app_key, args.app_secret, parse_allow(args.allow), permissions)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvloop

    try:
        return uvloop.run(serve(host or "127.0.0.1", int(port), args.data_dir, access, faults, seed=args.seed,
                                ready_file=args.ready_file))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.listen}: {exc} (choose another --listen)") from None


def run_report(args) -> int:
    from lmg.simulators.province import report

    try:
        summary = report(args.data_dir)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        for key, value in summary.items():
            print(f"{key:>16}: {value}")
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m lmg.simulators.province_cli serve|report ...`: the same actions without `lmg sim`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lmg.simulators.province_cli")
    register_province(parser.add_subparsers(dest="sim_command", metavar="SIMULATOR", required=True))
    args = parser.parse_args(["province", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        print(f"lmg sim province: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
