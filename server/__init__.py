"""The server side of the 陇明公 gateway: everything that does I/O, one folder per subsystem.

| package | subsystem |
|---|---|
| `gateway/` | terminals in: listeners and transports, link, session, registry, admission, presence, timers |
| `forwarding/` | punches out to the provincial system (docs/province-api.md) |
| `admin/` | the admin HTTP side: health and readiness (the operations API grows here) |
| `cli/` | the `lmg` command: one module per command group |
| `metrics/` | Prometheus metrics: plain-Python counting on the hot path, folded into prometheus-client |
| `logs.py` | structured logs (JSON lines or key=value), masked ID numbers, rate-limited repeats |
| `settings.py` | the one settings object of a node, with every key's default and reason |

Rules: a subsystem's package root names its public entry points; another subsystem, the
simulators and the benchmarks use those, not its modules' internals. The pure cores the
server drives live in `lmg.protocol` (terminal protocol, province access interface) and
persistence in `lmg.storage`; nothing there imports `lmg.server`. Later subsystems
(downlink and rosters, supervision, the web console) take a folder of their own here.
"""
