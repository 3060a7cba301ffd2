"""Supervision of key personnel: on-site attendance of the bid-award people, tiered warnings.

Modules, and the rule each keeps (docs/supervision.md is the design):

| module | what it is |
|---|---|
| `rules` | pure: the rule codes (`RULES`, one table with descriptions and sources) and the thresholds, one TOML file (`rules.toml` packaged; the operator's copy through `supervision_rules_file`) parsed into a frozen `Rules` |
| `facts` | pure: the frozen records the evaluation reads (projects, commitments, roster holders, day aggregates, leave, stop-work, pause days), converted from store rows by the glue |
| `calendar` | pure: China days, valid days, construction days, leave within its caps, months |
| `evaluate` | pure: facts and rules to findings for a month as known on a day, each with a stable key; the scope it decided |
| `escalation` | pure: a warning's states as a table, dispositions, levels 1 -> 2 -> 3 by time (time is an input) |
| `access` | pure: who sees a warning, which bureau owns its level and who may close it (over lmg.protocol.regions) |
| `service` | the asyncio glue: loads a month's facts from the store in chunks, evaluates, applies and escalates (`evaluate_month`); the gateway's schedule (`SupervisionSchedule`) |

The pure modules import no asyncio, store, clock or logging set-up
(tests/server/supervision/test_purity.py checks it); the glue (`service`, the CLI, the
API) does the I/O and converts rows. The warning's code tables (states, the transition
table, dispositions, departments) are lmg.protocol.warning_codes, shared with the store.
"""

from typing import Any

# The public entry points for the layers above (bench, simulators: tests/test_layout.py),
# imported on first use so that importing a pure module does not load the store.
_ENTRY_POINTS = {
    "Month": "lmg.server.supervision.calendar",
    "default_rules": "lmg.server.supervision.rules",
    "load_rules": "lmg.server.supervision.rules",
    "evaluate_month": "lmg.server.supervision.service",
    "evaluation_pool": "lmg.server.supervision.service",
    "find": "lmg.server.supervision.service",
    "to_finding": "lmg.server.supervision.service",
}
__all__ = sorted(_ENTRY_POINTS)


def __getattr__(name: str) -> Any:
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module 'lmg.server.supervision' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
