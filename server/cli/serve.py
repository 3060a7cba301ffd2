"""`lmg serve`: run the gateway (uvloop, embedded SQLite store unless --store says otherwise)."""

from __future__ import annotations

import argparse
import logging

from lmg.server.cli import UsageError
from lmg.server.settings import KEYS, ConfigError, load_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gateway (TCP, WebSocket and admin listeners)",
        description="Run the gateway. Every option can also be set in the TOML file given by --config "
        "(same key names, underscores) or as LMG_<KEY> environment variables; flags win, then the "
        "environment, then the file, then the defaults shown here.",
    )
    parser.add_argument("--config", help="TOML file with gateway keys (also LMG_CONFIG)")
    parser.add_argument("--ready-file", help="write the bound addresses as JSON to this file once listening")
    parser.add_argument("--workers", type=int, default=1,
                        help="gateway processes sharing the ports (SO_REUSEPORT); more than 1 needs a PostgreSQL "
                        "--store (see server/workers.py) (default: 1)")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set by the supervisor
    defaults = {name: field.default for name, field in KEYS.items()}
    for name, default in defaults.items():
        flag = "--" + name.replace("_", "-")
        kind = field_type(name)
        parser.add_argument(flag, dest=name, type=kind, default=None, metavar=name.upper(),
                            help=f"(default: {default!r})")
    parser.set_defaults(handler=run)


def field_type(name: str):
    kind = KEYS[name].type
    return {"int": int, "float": float, "str": str}.get(kind, kind) if isinstance(kind, str) else kind


def run(args) -> int:
    flags = {name: getattr(args, name) for name in KEYS}
    try:
        config = load_config(flags, config_file=args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    forwarding = None
    if config.forward_url:
        from lmg.server.forwarding.config import for_gateway

        try:
            forwarding = for_gateway(config, config_file=args.config)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers != 1:
        from lmg.server.gateway.workers import supervise

        return supervise(flags, args.config, config, args.workers, args.ready_file)
    import uvloop

    from lmg.server.gateway.collector import tune_collector
    from lmg.server.gateway.gateway import serve

    tune_collector()
    try:
        return uvloop.run(serve(config, ready_file=args.ready_file, reuse_port=args.reuse_port,
                                forwarding=forwarding))
    except OSError as exc:
        raise UsageError(f"cannot start: {exc} (is another gateway already listening? change --tcp/--ws/--admin)") from None
