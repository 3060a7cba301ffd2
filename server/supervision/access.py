"""Who sees a warning and who may close it: scopes, departments, the bureau that owns a level.

Rules (issue 15, "Who sees what"; the region tree is lmg.protocol.regions):

- A supervisor (an API token or a console account) has a department, 住建 or 人社, and a
  region: a county sees its county, a city itself and its counties, the province
  everything; 兰州新区 and 甘肃矿区 are nodes of their own. `can_see` is `regions.covers`.
- 人社 sees attendance and roster figures but closes no warning: every warning here is
  about key personnel (现场管理人员), whose supervision is 住建's.
- 住建 closes a warning **whose current owner its region covers**: at level 1 the county
  and above, at level 2 the city and above, at level 3 the province only. A county still
  sees a warning that rose to the city but can no longer close it: closing it there would
  undo the escalation, which exists because the county did not act.
- The owner of a level is `regions.bureau_for(project region, level)`.

Departments are lmg.protocol.warning_codes' `Department` (a StrEnum: `construction` 住建,
`labour` 人社; the store keeps the code, a person may type either), the one table the store,
the API and this core share.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmg.protocol import regions
from lmg.protocol.warning_codes import CLOSING_DEPARTMENT, Department  # noqa: F401 - the core's names


@dataclass(frozen=True, slots=True)
class Supervisor:
    """Who acts: a department (a `Department`, or its code) and the region it supervises
    (a code of lmg.protocol.regions)."""

    department: Department | str
    region: str


def can_see(scope_region: str, warning_region: str) -> bool:
    """Whether a supervisor of `scope_region` sees a warning about a project in
    `warning_region`. UnknownRegion for an unknown scope; False for an unknown warning region."""
    return regions.covers(scope_region, warning_region)


def owner(warning_region: str, level: int) -> str:
    """The region code of the bureau that owns a warning at `level` (1-3) about a project in
    `warning_region`."""
    return regions.bureau_for(warning_region, level).code


def may_close(supervisor: Supervisor, warning_region: str, level: int) -> bool:
    """Whether `supervisor` may close a warning at `level` about a project in `warning_region`
    (the module's rules). Whether the warning can be closed at all (not closed already) is
    escalation.close's check. UnknownRegion for a region the tree does not hold."""
    if supervisor.department != CLOSING_DEPARTMENT:
        return False
    return regions.covers(supervisor.region, owner(warning_region, level))
