"""`lmg serve`: run the gateway (uvloop, embedded SQLite store unless --store says otherwise).

Every settings key (server/settings.py) is a flag here, with its reason as help.
`--workers N` starts N gateway processes sharing the ports (server/cli/workers.py).
"""

from __future__ import annotations

import argparse
import logging

from lmg.server.cli import UsageError
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
    logging.basicConfig(level=settings.gateway.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers != 1:
        from lmg.server.cli.workers import supervise

        return supervise(flags, args.config, settings, args.workers, args.ready_file)
    import uvloop

    from lmg.server.gateway import serve, tune_collector

    tune_collector()
    try:
        return uvloop.run(serve(settings, ready_file=args.ready_file, reuse_port=args.reuse_port))
    except OSError as exc:
        raise UsageError(f"cannot start: {exc} (is another gateway already listening? change --tcp/--ws/--admin)") from None

