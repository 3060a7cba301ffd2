"""The `lmg` command: one entry point, one subcommand group per layer.

Each group lives next to the code it drives and exposes `register(subparsers)`; this
module only wires them together, so adding a command never touches another layer.
Errors a person caused (bad flags, missing files) exit with status 2 and a sentence
saying what to do; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, what it adds). Imported lazily by name so `lmg --help` stays fast and a
# missing optional dependency only breaks the command that needs it.
COMMAND_GROUPS = (
    "lmg.server.cli.serve",
    "lmg.server.cli.punches",
    "lmg.server.cli.device",
    "lmg.server.cli.forward",
    "lmg.simulators.cli",
    "lmg.bench.cli",
)


class UsageError(Exception):
    """A mistake in how the command was called; the message says how to fix it."""


def optional_modules(names):
    """Import each module named; skip one that does not exist yet, re-raise anything else."""
    for name in names:
        try:
            yield importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmg",
        description="陇明公 terminal gateway: attendance terminals, durable punches, forwarding.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in optional_modules(COMMAND_GROUPS):
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except UsageError as exc:
        print(f"lmg: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
