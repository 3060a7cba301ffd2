"""The `lmg` command: one entry point, one subcommand group per module.

Each group is a module with `register(subparsers)`; `COMMANDS` maps the command name to
it. Only the group of the command given is imported, so `lmg serve` never loads the
simulators, the benchmarks or their libraries (`lmg --help` loads them all to list
them; `lmg --version` loads none). Commands that only open the store share one way to
say which (`add_store_options`, `open_store_from`, `run_on_store`): `--data-dir` /
`--store`, else `LMG_DATA_DIR` / `LMG_STORE`, else the TOML file of `--config` /
`LMG_CONFIG`, else the settings' defaults (server/settings.py), and `--json` for machine
output.

Exit statuses, the rules every group keeps:

- 0: done.
- 2, `UsageError`: the person must change the command (bad flags, a missing input
  file, bad settings, no database at the --data-dir given). A group outside server/
  (the simulators, the benchmarks) may define its own `UsageError`, treated the same way.
- 1, `CommandFailed`: the command was right but the work failed (the store cannot be
  reached or fails, a write is refused, the reader of our output went away).
- 130: interrupted (Ctrl-C).

Either error prints one `lmg: ...` line saying what was wrong and what to do; a
traceback means a bug. Only commands that provision (`lmg device add|generate|import`,
`lmg token create`) and `lmg serve` / `lmg forward run` create a store; every other
command opens it with `create=False` (every read-only one, and changes to what must
exist already), so a mistyped --data-dir says there is no database there (exit 2)
instead of creating an empty one.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmg.storage import Store

COMMANDS = {
    "serve": "lmg.server.cli.serve",
    "device": "lmg.server.cli.device",
    "punches": "lmg.server.cli.punches",
    "forward": "lmg.server.cli.forward",
    "token": "lmg.server.cli.token",
    "config": "lmg.server.cli.config",
    "project": "lmg.server.cli.project",
    "roster": "lmg.server.cli.roster",
    "command": "lmg.server.cli.command",
    "bid": "lmg.server.cli.bid",
    "warnings": "lmg.server.cli.warnings",
    "supervision": "lmg.server.cli.supervision",
    "conformance": "lmg.server.cli.conformance",
    "account": "lmg.server.cli.account",
    "sim": "lmg.simulators.cli",
    "bench": "lmg.bench.cli",
}
DISTRIBUTION = "longminggong-gateway"  # pyproject.toml's [project] name


class UsageError(Exception):
    """A mistake in how the command was called (exit 2); the message says how to fix it."""


class CommandFailed(Exception):
    """The command was right but its work failed (exit 1): the store could not be reached
    or failed, a write was refused. The message says what failed and what to check."""


def actor() -> str:
    """Who runs the command, for the audit log: the operating-system user."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _command_in(argv: list[str]) -> str | None:
    """The command word of `argv` (its first argument not starting with '-'), if known."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def version() -> str:
    """The installed distribution's version, or a sentence saying it is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:
        return f"unknown (the {DISTRIBUTION} distribution is not installed: pip install -e .)"


class _PrintVersion(argparse.Action):
    """`--version`: the version is looked up only when asked for (it reads the installed
    distribution's metadata)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"lmg {version()}")
        parser.exit()


def build_parser(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, list[ModuleType]]:
    """The parser with the group of the command in `argv` (every group if none is named,
    none for `lmg --version`)."""
    parser = argparse.ArgumentParser(
        prog="lmg",
        description="陇明公 terminal gateway: attendance terminals, durable punches, forwarding.",
        epilog="Exit status: 0 done, 1 the work failed (store unreachable, write refused), "
               "2 the command must change (usage), 130 interrupted.",
    )
    parser.add_argument("--version", action=_PrintVersion, help="print the installed version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    words = sys.argv[1:] if argv is None else argv
    command = _command_in(words)
    if command:
        names = [command]
    else:
        names = [] if "--version" in words else list(COMMANDS)
    modules = [importlib.import_module(COMMANDS[name]) for name in names]
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
    except CommandFailed as exc:
        print(f"lmg: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`lmg punches export | head`). As Python's
        # signal docs advise: point stdout at /dev/null so the flush at exit does not
        # raise again, and fail quietly (the output is incomplete).
        _silence_stdout()
        return 1
    return int(result or 0)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a file (a test's capture): nothing will flush to a closed pipe


# --- what commands on the store share -------------------------------------------------------


def add_store_options(parser: Any, *, json: bool = True, suppress: bool = False) -> None:
    """`--data-dir`, `--store` (the settings keys data_dir and store), `--config` (a TOML
    file with those keys, as `lmg serve` reads it) and `--json`.

    `suppress`: leave the attributes unset when not given, for a subcommand whose parent
    parser takes the same options (`lmg forward` and `lmg forward run`).
    """
    from lmg.server.settings import LOCATION_KEYS, add_flags

    add_flags(parser, LOCATION_KEYS, suppress=suppress)
    parser.add_argument("--config", default=argparse.SUPPRESS if suppress else None,
                        help="TOML file with settings keys, the one `lmg serve` uses (also LMG_CONFIG)")
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


async def open_store_from(args: argparse.Namespace, *, create: bool = True) -> Store:
    """Open the store the command's options name.

    `create=False`: the command works on an existing store (it reads, or changes what
    must exist), so nothing is created: no database there is a UsageError naming the
    path. A bad URL is a UsageError; a store that cannot be reached or opened is
    CommandFailed.
    """
    from lmg.storage import StoreError, StoreNotFound, StoreUrlError, open_store

    settings = store_settings(args)
    try:
        return await open_store(settings.store_url(), data_dir=settings.gateway.data_dir, create=create)
    except (StoreNotFound, StoreUrlError) as exc:
        raise UsageError(str(exc)) from None
    except (StoreError, OSError) as exc:
        raise CommandFailed(f"cannot open the store: {exc}") from None


def run_on_store(work: Callable[[Store, argparse.Namespace], Awaitable[int]], args: argparse.Namespace, *,
                 create: bool) -> int:
    """Open the store (`open_store_from`), run `work(store, args)` on a new event loop,
    close the store. A store error `work` lets through is CommandFailed: at run time the
    store, not the command, failed (a group handles the errors that are the person's,
    such as an unknown serial, itself)."""
    from lmg.storage import StoreError

    async def with_store() -> int:
        store = await open_store_from(args, create=create)
        try:
            return await work(store, args)
        finally:
            await store.close()

    try:
        return asyncio.run(with_store())
    except StoreError as exc:
        raise CommandFailed(f"the store failed: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
