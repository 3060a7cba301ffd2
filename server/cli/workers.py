"""`lmg serve --workers N`: N gateway processes sharing the listening ports (SO_REUSEPORT).

One process holds at most as many terminals as it may open descriptors (20,000 on the
reference machine) and uses one core; N workers each bind the same TCP and WebSocket
ports with SO_REUSEPORT and the kernel spreads new connections over them.

Rules this supervisor keeps:
- The store must be PostgreSQL. The embedded SQLite store has one writer per database
  file (storage/sqlite.py relies on it: group commit, the outbox claim); N processes
  writing one file would break that, so `--workers` with SQLite is refused.
- A port of 0 cannot be shared (each worker would get its own), so the supervisor picks
  one free port first. Each worker's admin listener (/healthz, /readyz) gets its own
  ephemeral port, listed in the ready file, so a probe can ask every worker.
- The ready file (`--ready-file`) is written once every worker has written its own
  (`<ready-file>.worker<i>`): `tcp`, `ws` as for one process, `pid` of the supervisor and
  `workers`: [{pid, admin}].
- SIGTERM/SIGINT are forwarded to every worker; the supervisor exits when they have.
  If one worker exits on its own, the others are stopped too and its status is returned:
  a half-strength gateway that looks healthy is worse than a restart.
- Metrics (unless `metrics = false`): the workers get an empty PROMETHEUS_MULTIPROC_DIR
  of their own (`<run dir>/metrics`, whatever the environment said), so prometheus-client's
  multiprocess mode adds their figures up and every worker's /metrics shows the totals.
  The supervisor removes it at exit. No worker outlives another (see above), so no
  dead worker's gauges linger in it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from lmg.server.cli import UsageError
from lmg.server.settings import Settings, parse_host_port

START_TIMEOUT_S = 60.0  # a worker migrates nothing (the supervisor's store did), but PostgreSQL may be slow


def check(settings: Settings, workers: int) -> None:
    """Raise UsageError if `workers` processes cannot serve this configuration."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if workers > 1 and not settings.store_url().startswith(("postgresql:", "postgres:")):
        raise UsageError(
            f"--workers {workers} needs a PostgreSQL store (--store postgresql://HOST:5432/DB): the embedded "
            "SQLite store has one writer per database file, so several processes cannot share it. "
            "Run one process on SQLite, or several on PostgreSQL."
        )


def _fixed_port(value: str, name: str) -> str:
    """'HOST:0' -> 'HOST:<a free port>' (a shared port must be known before the workers bind it)."""
    parsed = parse_host_port(name, value)
    if not parsed or parsed[1]:
        return value
    host = parsed[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return f"{'[' + host + ']' if family == socket.AF_INET6 else host}:{sock.getsockname()[1]}"


def worker_argv(flags: dict, config_file: str | None, settings: Settings, ready: str) -> list[str]:
    """The `lmg serve` command line of one worker: the user's flags, fixed ports (`settings`
    has them), own admin port."""
    out = ["--config", config_file] if config_file else []
    for name, value in flags.items():
        if value is not None and name not in ("tcp", "ws", "admin"):
            out += ["--" + name.replace("_", "-"), str(value)]
    gateway = settings.gateway
    admin = parse_host_port("admin", gateway.admin)
    out += ["--tcp", gateway.tcp, "--ws", gateway.ws, "--admin", f"{admin[0]}:0" if admin else "",
            "--ready-file", ready, "--reuse-port"]
    return [sys.executable, "-m", "lmg.server.cli", "serve", *out]


def _migrate(settings: Settings) -> None:
    """Open (create, migrate) the store once here, so N workers do not race to migrate it."""
    import asyncio

    from lmg.storage import StoreError, open_store

    async def once() -> None:
        store = await open_store(settings.store_url(), data_dir=settings.gateway.data_dir, config=settings.store)
        await store.close()

    try:
        asyncio.run(once())
    except (StoreError, OSError) as exc:
        raise UsageError(f"cannot open the store {settings.store_url()}: {exc}") from None


def supervise(flags: dict, config_file: str | None, settings: Settings, workers: int,
              ready_file: str | None) -> int:
    """Start `workers` gateway processes and wait for them; returns the exit status."""
    import dataclasses

    check(settings, workers)
    _migrate(settings)
    gateway = settings.gateway
    settings = dataclasses.replace(settings, gateway=dataclasses.replace(
        gateway, tcp=_fixed_port(gateway.tcp, "tcp"), ws=_fixed_port(gateway.ws, "ws")))
    run_dir = tempfile.mkdtemp(prefix="lmg-workers-")
    readies = [os.path.join(run_dir, f"ready.worker{i}") for i in range(workers)]
    env = dict(os.environ)
    metrics_dir = os.path.join(run_dir, "metrics")
    if settings.gateway.metrics:
        os.mkdir(metrics_dir)  # empty: prometheus-client's multiprocess mode needs a fresh directory per run
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    else:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    children: list[subprocess.Popen] = []
    stopping = False

    def forward(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for ready in readies:
        children.append(subprocess.Popen(worker_argv(flags, config_file, settings, ready), env=env))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(os.path.exists(r) for r in readies):
            if stopping or any(c.poll() is not None for c in children) or time.monotonic() > deadline:
                raise UsageError("a worker did not start (see its log above)")
            time.sleep(0.05)
        infos = []
        for ready in readies:
            with open(ready, encoding="utf-8") as fh:
                infos.append(json.load(fh))
        if ready_file:
            combined = {k: v for k, v in infos[0].items() if k in ("tcp", "ws")}
            combined |= {"pid": os.getpid(), "workers": [{"pid": i["pid"], "admin": i.get("admin")} for i in infos]}
            with open(ready_file + ".tmp", "w", encoding="utf-8") as fh:
                json.dump(combined, fh)
            os.replace(ready_file + ".tmp", ready_file)
        status = 0
        while True:
            exited = [c for c in children if c.poll() is not None]
            if exited:
                status = status or exited[0].returncode
                if not stopping:  # one died on its own: stop the rest (see the module docstring)
                    forward(signal.SIGTERM, None)
            if len(exited) == len(children):
                return status if not stopping or status not in (-signal.SIGTERM, -signal.SIGINT) else 0
            time.sleep(0.1)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for ready in readies:
            if os.path.exists(ready):
                os.unlink(ready)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.rmdir(run_dir)
