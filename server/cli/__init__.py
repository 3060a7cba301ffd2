"""The `lmg` command: one entry point, one subcommand group per module.

Each group is a module with `register(subparsers)`; `COMMANDS` maps the command name to
it. Only the group of the command given is imported, so `lmg serve` never loads the
simulators, the benchmarks or their libraries (`lmg --help` loads them all to list
them). Commands that only open the store share one way to say which
(`add_store_options`, `open_store_from`): `--data-dir` / `--store`, else `LMG_DATA_DIR` /
`LMG_STORE`, else the settings' defaults (server/settings.py), and `--json` for machine
output.

Errors a person caused (bad flags, missing files, bad settings) exit with status 2 and a
sentence saying what to do; a traceback means a bug. A group raises `UsageError` for
them; a group outside server/ (the simulators, the benchmarks) may define its own
`UsageError` class, which is treated the same way.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Any

COMMANDS = {
    "serve": "lmg.server.cli.serve",
    "device": "lmg.server.cli.device",
    "punches": "lmg.server.cli.punches",
    "forward": "lmg.server.cli.forward",
    "sim": "lmg.simulators.cli",
    "bench": "lmg.bench.cli",
}


class UsageError(Exception):
    """A mistake in how the command was called; the message says how to fix it."""


def _command_in(argv: list[str]) -> str | None:
    """The command word of `argv` (its first argument not starting with '-'), if known."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, list[ModuleType]]:
    """The parser with the group of the command in `argv` (every group if none is named)."""
    parser = argparse.ArgumentParser(
        prog="lmg",
        description="陇明公 terminal gateway: attendance terminals, durable punches, forwarding.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    command = _command_in(sys.argv[1:] if argv is None else argv)
    modules = [importlib.import_module(COMMANDS[name]) for name in ([command] if command else COMMANDS)]
    for module in modules:
        module.register(subparsers)
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser(argv)
    args = parser.parse_args(argv)
    usage_errors = (UsageError, *(m.UsageError for m in modules if isinstance(getattr(m, "UsageError", None), type)))
    try:
        result = args.handler(args)
    except usage_errors as exc:
        print(f"lmg: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


# --- what commands on the store share -------------------------------------------------------


def add_store_options(parser: Any, *, json: bool = True, suppress: bool = False) -> None:
    """`--data-dir`, `--store` (the settings keys data_dir and store) and `--json`.

    `suppress`: leave the attributes unset when not given, for a subcommand whose parent
    parser takes the same options (`lmg forward` and `lmg forward run`).
    """
    from lmg.server.settings import LOCATION_KEYS, add_flags

    add_flags(parser, LOCATION_KEYS, suppress=suppress)
    if json:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table or sentence")


def store_settings(args: argparse.Namespace, names: tuple[str, ...] = ()) -> Any:
    """The Settings for a command: the store location keys (and `names`) from its flags,
    the environment and `--config` if the command has one; UsageError if one is bad."""
    from lmg.server.settings import LOCATION_KEYS, SettingsError, flag_values, load_settings

    keys = LOCATION_KEYS + names
    try:
        return load_settings(flag_values(args, keys), config_file=getattr(args, "config", None), names=keys)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


async def open_store_from(args: argparse.Namespace) -> Any:
    """Open the store the command's options name; UsageError saying what to check if it cannot."""
    from lmg.storage import StoreError, open_store

    settings = store_settings(args)
    try:
        return await open_store(settings.store_url(), data_dir=settings.gateway.data_dir)
    except (StoreError, ValueError, OSError) as exc:
        raise UsageError(f"cannot open the store: {exc} (check --data-dir / --store)") from None


if __name__ == "__main__":
    sys.exit(main())
