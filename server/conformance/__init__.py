"""The vendor conformance kit: a server that grades one real terminal against docs/protocol.md (issue 18).

`lmg conformance serve` (server/cli/conformance.py) runs it; docs/conformance.md is the
operator's and vendor's guide. Modules, one job each:

- `catalogue`: every item (id, section, level, what passes) and the waits graded against;
- `wire`: frames with their bytes (the report's hex), hand-built frames, masked wirelogs;
- `items`: one pure grader per item, fed events with the kit's time in ms;
- `examiner`: the pure conductor: the plan (refusals, session, reconnects) as a phase table,
  the kit's side of the protocol, the report as a dict;
- `server`: the asyncio glue (TCP or WebSocket, one timer);
- `report`: report.json (with its JSON Schema) and report.html; `doc`: the generated
  tables of docs/conformance.md.

Public entry points: `Examiner`, `KitServer`, `KitTimings`, `CATALOGUE`, `write_report`.
"""

from lmg.server.conformance.catalogue import CATALOGUE, KitTimings
from lmg.server.conformance.examiner import Examiner
from lmg.server.conformance.report import write_report
from lmg.server.conformance.server import KitServer

__all__ = ["CATALOGUE", "Examiner", "KitServer", "KitTimings", "write_report"]
