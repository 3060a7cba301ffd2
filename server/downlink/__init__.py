"""The downlink: rosters, faces and operator commands from the gateway to the terminals.

Modules, and the rule each keeps (docs/downlink.md is the design):

| module | what it is |
|---|---|
| `commands` | pure: the operator command types, one table (name, message, arguments, reply); argument parsing for the CLI and the API; the message built at send time |
| `roster` | pure: a roster sync planned from versions (delta or full resync), worker rows to ROSTER_ADD/UPDATE/REMOVE, faces to FACE_CHUNKs |
| `device` | pure: one session's downlink state machine (the window, answers by `ref_seq`, resends, the roster sync states, faces in flight); time is an input, actions out |
| `service` | the asyncio glue, one per gateway: owns the sessions' machines, loads from the store, writes outcomes, follows the store's signals |

The pure modules import no asyncio, storage I/O, clock or logging set-up; the glue is the
only one that awaits.
"""
