"""`lmg bench ...`: benchmarks that print a same-run baseline beside every figure."""

from __future__ import annotations

import importlib


class UsageError(Exception):
    """A mistake in a benchmark's command line: `lmg` prints it and exits 2 (it knows this
    module's UsageError, the group's; a benchmark raises this one)."""

# Each benchmark module exposes NAME, HELP, add_arguments(parser) and run(args) -> int.
BENCHMARKS = ("lmg.bench.codec", "lmg.bench.storage", "lmg.bench.memory", "lmg.bench.websocket_libs",
              "lmg.bench.forwarding", "lmg.bench.load", "lmg.bench.writer", "lmg.bench.downlink",
              "lmg.bench.supervision", "lmg.bench.photos", "lmg.bench.console", "lmg.bench.punch_months")


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark (figures are ratios against a same-run baseline)")
    group = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    group.required = True
    for name in BENCHMARKS:
        module = importlib.import_module(name)
        sub = group.add_parser(module.NAME, help=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
