"""Storage soak: the crash probe of tests/storage for longer, stopping by itself.

    python -m lmg.bench.soak_storage [--cycles 500] [--minutes 10] [--store URL] [--max-run-s 1.0]

Kills a writing process with SIGKILL at random moments, `--cycles` times or until
`--minutes` have passed (whichever first; both are bounded), checking after every
restart that each acknowledged punch is present, intact and stored once, and at the end
all of them plus SQLite's integrity_check. Exit status 0 only if nothing was wrong.
Without --store it uses a fresh SQLite database in a temporary directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from lmg.storage.crash_probe import run_cycles

MAX_CYCLES = 100_000  # a soak is a long test, not a service: it must end
MAX_MINUTES = 24 * 60


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmg.bench.soak_storage", description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=500, help=f"kill cycles (default 500, at most {MAX_CYCLES})")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help=f"stop after this long (default 10, at most {MAX_MINUTES})")
    parser.add_argument("--store", default=None, help="store URL (default: SQLite in a temporary directory)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: temporary)")
    parser.add_argument("--max-run-s", type=float, default=1.0,
                        help="longest a writer runs after its first ack before the kill (default 1.0)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    if not 0 < args.cycles <= MAX_CYCLES or not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--cycles must be 1..{MAX_CYCLES} and --minutes 0..{MAX_MINUTES}")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="lmg-soak-")
    url = args.store or f"sqlite:///{data_dir}/lmg.db"
    print(f"soak: {url}, up to {args.cycles} cycles / {args.minutes} min, seed {args.seed}")
    started = time.monotonic()
    report = run_cycles(url, data_dir, cycles=args.cycles, max_run_s=args.max_run_s, seed=args.seed,
                        deadline_s=args.minutes * 60, log=None if args.quiet else print)
    elapsed = time.monotonic() - started
    print(f"soak: {report.cycles} kill cycles in {elapsed:.0f} s, {report.acknowledged} acknowledged "
          f"records checked, {len(report.failures)} problems")
    for failure in report.failures:
        print(f"  {failure}", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
