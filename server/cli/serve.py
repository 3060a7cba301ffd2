"""`lmg serve`: run the gateway (uvloop, embedded SQLite store unless --store says otherwise).

Every settings key (server/settings.py) is a flag here, with its reason as help.
`--workers N` starts N gateway processes sharing the ports (server/cli/workers.py).
Exit status: 2 for what the command must change (bad settings, a port in use, a bad
store URL), 1 when the store cannot be opened or reached (systemd restarts on 1 and not
on 2: docs/ops/lmg.service).
"""

from __future__ import annotations

import argparse

from lmg.server.cli import CommandFailed, UsageError
from lmg.server.settings import SettingsError, add_flags, flag_values, load_settings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gateway (TCP, WebSocket and admin listeners)",
        description="Run the gateway. Every option can also be set in the TOML file given by --config "
        "(same key names, underscores) or as LMG_<KEY> environment variables; flags win, then the "
        "environment, then the file, then the defaults shown here. docs/settings.md lists them all.",
    )
    parser.add_argument("--config", help="TOML file with settings keys (also LMG_CONFIG)")
    parser.add_argument("--ready-file", help="write the bound addresses as JSON to this file once listening")
    parser.add_argument("--workers", type=int, default=1,
                        help="gateway processes sharing the ports (SO_REUSEPORT); more than 1 needs a PostgreSQL "
                        "--store (see server/cli/workers.py) (default: 1)")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set by the supervisor
    add_flags(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    flags = flag_values(args)
    try:
        settings = load_settings(flags, config_file=args.config)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    if settings.gateway.supervision:  # a bad rules file stops the start, every problem listed
        from lmg.server.supervision.rules import RulesError, load_rules

        try:
            load_rules(settings.gateway.supervision_rules_file)
        except RulesError as exc:
            raise UsageError(str(exc)) from None
    from lmg.server.logs import setup_logging  # JSON lines or key=value, masked (server/logs.py)
    setup_logging(settings.gateway.log_level, settings.gateway.log_format)
    if args.workers != 1:
        from lmg.server.cli.workers import supervise

        return supervise(flags, args.config, settings, args.workers, args.ready_file)
    import uvloop

    from lmg.server.admin.app import AdminRefused
    from lmg.server.gateway import serve, tune_collector
    from lmg.storage import StoreError, StoreUrlError

    tune_collector()
    try:
        return uvloop.run(serve(settings, ready_file=args.ready_file, reuse_port=args.reuse_port))
    except AdminRefused as exc:
        raise UsageError(str(exc)) from None
    except StoreUrlError as exc:
        raise UsageError(str(exc)) from None
    except StoreError as exc:  # unreachable, unwritable or a newer schema: not the command's fault
        raise CommandFailed(f"cannot start: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot start: {exc} (is another gateway already listening? change --tcp/--ws/--admin)") from None

