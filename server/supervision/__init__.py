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

The pure modules import no asyncio, store, clock or logging set-up
(tests/server/supervision/test_purity.py checks it); the glue (schedule, CLI, API) does
the I/O and converts rows.
"""
