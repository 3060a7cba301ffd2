"""`lmg conformance serve`: grade one terminal against docs/protocol.md (the vendor conformance kit).

    lmg conformance serve --listen HOST:PORT --report DIR [--serial S --secret HEX]
                          [--time-limit S] [--transport tcp|ws] [--wait NAME=SECONDS ...]

A server modelled on Autobahn's fuzzing server: point one terminal at it, follow the lines
it prints (power the terminal on, punch cards), and read DIR/report.json and
DIR/report.html when it stops. It is not the gateway: nothing is stored, nothing forwarded.
Without --secret the HMAC cannot be checked and auth.handshake is "not run", so the device
cannot be graded "conforms". `--wait` changes one of the waits graded against
(server/conformance/catalogue.py `KitTimings`, the document's values by default), e.g. for
a terminal whose heartbeat interval is configured shorter. docs/conformance.md explains
the items and the report.

Exit status: 0 the device conforms, 1 it does not (or the run was cut by the time limit
with MUST items not run), 2 usage (bad flags, a port in use, an unwritable DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from lmg.server.cli import UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("conformance", help="vendor conformance kit: grade one terminal")
    group = parser.add_subparsers(dest="conformance_command", metavar="ACTION")
    group.required = True
    serve = group.add_parser(
        "serve", help="listen for one terminal, drive it through every item, write a report",
        description="Grade one terminal against docs/protocol.md. Point the terminal at --listen, power it on, "
        "and follow the prompts (punch cards when asked). Ends when every item is graded or at --time-limit.")
    serve.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on (port 0: any)")
    serve.add_argument("--report", required=True, metavar="DIR", help="directory for report.json and report.html")
    serve.add_argument("--serial", help="the terminal's serial (checked against its HELLO)")
    serve.add_argument("--secret", metavar="HEX", help="the terminal's 32-byte secret, 64 hex characters (checks "
                       "the HMAC of AUTH; without it auth.handshake is not run)")
    serve.add_argument("--time-limit", type=float, default=1800.0, metavar="S",
                       help="stop after this many seconds; items not reached are 'not run' (default 1800)")
    serve.add_argument("--transport", choices=("tcp", "ws"), default="tcp",
                       help="tcp (a byte stream) or ws (WebSocket, path /terminal) (default tcp)")
    serve.add_argument("--wait", action="append", default=[], metavar="NAME=SECONDS",
                       help="change a wait the kit grades against; names: "
                       + ", ".join(f.name for f in dataclasses.fields(_timings_class())))
    serve.add_argument("--ready-file", help=argparse.SUPPRESS)  # tests: the bound address as HOST:PORT
    serve.set_defaults(handler=run_serve)


def _timings_class() -> Any:
    from lmg.server.conformance.catalogue import KitTimings

    return KitTimings


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r}: write HOST:PORT, e.g. 0.0.0.0:9100")
    return host.strip("[]"), int(port)


def parse_secret(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise UsageError("--secret must be 64 hex characters (the terminal's 32-byte secret)") from None
    if len(secret) != 32:
        raise UsageError(f"--secret is {len(secret)} bytes; it must be 32 (64 hex characters)")
    return secret


def parse_waits(pairs: list[str]) -> Any:
    cls = _timings_class()
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in known:
            raise UsageError(f"--wait {pair!r}: write NAME=SECONDS with NAME one of {', '.join(known)}")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--wait {pair!r}: {value!r} is not a number") from None
        if known[name].type in ("int", int):
            if not number.is_integer():
                raise UsageError(f"--wait {pair!r}: {name} is a whole number")
            values[name] = int(number)
        else:
            values[name] = number
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--wait: {exc}") from None


def run_serve(args: argparse.Namespace) -> int:
    from lmg.server.conformance.examiner import Examiner
    from lmg.server.conformance.report import summary_lines, write_report
    from lmg.server.conformance.server import KitServer

    host, port = parse_listen(args.listen)
    secret = parse_secret(args.secret)
    timings = parse_waits(args.wait)
    if args.time_limit <= 0:
        raise UsageError("--time-limit must be above 0 seconds")
    directory = Path(args.report)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".lmg-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--report {directory}: cannot write there ({exc.strerror})") from None
    examiner = Examiner(timings, secret=secret, serial=args.serial, wall_at_start_ms=time.time_ns() // 1_000_000)

    def say(line: str) -> None:
        print(line, flush=True)

    async def main() -> dict[str, Any]:
        kit = KitServer(examiner, host, port, transport=args.transport, time_limit_s=args.time_limit, say=say)
        try:
            bound = await kit.start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from None
        if args.ready_file:
            Path(args.ready_file).write_text(f"{bound[0]}:{bound[1]}")
        say(f"listening on {bound[0]}:{bound[1]} ({args.transport}); point the terminal here and power it on "
            "(or restart it). The first connections are refused on purpose.")
        return await kit.wait()

    report = asyncio.run(main())
    json_path, html_path = write_report(report, directory)
    for line in summary_lines(report):
        print(line)
    print(f"report: {json_path} and {html_path}")
    sys.stdout.flush()
    return 0 if report["summary"]["verdict"] == "conforms" else 1
