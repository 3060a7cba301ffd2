"""The terminal gateway: terminals in over TCP and WebSocket, punches to the store, ACKs out.

Modules, and the rule each keeps:

| module | what it is |
|---|---|
| `session` | one terminal session, sans-I/O: a table of (state, message) -> handler returning actions; time is an argument |
| `link` | the glue between a transport and a session: carries out the actions, groups punch frames into store calls, back-pressure |
| `tcp`, `websocket` | thin transports (asyncio Protocol, picows listener) supplying write, close, pause and resume to a link |
| `gateway` | the process: listeners, the registry of authenticated sessions (takeover), the loop-wide timers, ordered shutdown |
| `admission` | connection limits and the accept-rate token bucket |
| `lockout` | the authentication-failure guard |
| `devices` | device lookups of concurrent HELLOs shared in one store read |
| `deadlines` | coarse deadline buckets: one timer for all sessions |
| `presence` | online state and last-seen times, written in batches |
| `signals` | following the store's signals (sessions to end, commands queued, rosters changed): LISTEN/NOTIFY and a poll |
| `collector` | garbage-collector thresholds for busy processes |

Public entry points (the simulators and benchmarks use these and nothing else of the
server): `Gateway`, `serve`, `tune_collector`. They load on first use, so importing the
session or the settings does not load the listeners.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Gateway", "serve", "tune_collector"]


def __getattr__(name: str) -> Any:
    if name in ("Gateway", "serve"):
        from lmg.server.gateway import gateway

        return getattr(gateway, name)
    if name == "tune_collector":
        from lmg.server.gateway.collector import tune_collector

        return tune_collector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
