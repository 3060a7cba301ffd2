"""The regions tree: the GB/T 2260 rows for Gansu, the two supervisory units, scopes and bureaus."""

from __future__ import annotations

import pickle
from collections import Counter

import pytest

from lmg.protocol import regions
from lmg.protocol.regions import Level, Origin, UnknownRegion


def test_the_tree_holds_the_province_14_prefectures_86_counties_and_two_supervisory_units():
    nodes = list(regions.all_regions())
    standard = Counter(r.level for r in nodes if r.origin is Origin.GB2260)
    assert standard == {Level.PROVINCE: 1, Level.PREFECTURE: 14, Level.COUNTY: 86}
    extra = {r.code: (r.name, r.level, r.parent, r.origin) for r in nodes if r.origin is not Origin.GB2260}
    assert extra == {
        "620171": ("兰州新区", Level.PREFECTURE, "620000", Origin.STATISTICAL),
        "629900": ("甘肃矿区", Level.PREFECTURE, "620000", Origin.LOCAL),
    }
    assert [r.code for r in nodes] == sorted(r.code for r in nodes)


def test_every_parent_exists_one_level_up():
    up = {Level.COUNTY: Level.PREFECTURE, Level.PREFECTURE: Level.PROVINCE}
    for node in regions.all_regions():
        if node.level is Level.PROVINCE:
            assert node.parent is None and node.code == regions.PROVINCE
        else:
            assert regions.region(node.parent).level is up[node.level], node


def test_the_local_code_is_outside_every_gb2260_range():
    # 3rd-4th digits: 01-20 and 51-70 cities, 21-50 prefectures, 90 province-administered.
    allocated = {0} | set(range(1, 71)) | {90}  # 00: the province itself
    for node in regions.all_regions():
        assert (int(node.code[2:4]) in allocated) != regions.is_local(node.code), node
    assert regions.is_local("629900") and not regions.is_local("620171")


def test_lookups_and_the_error_for_an_unknown_code():
    assert regions.region("620102").name == "城关区"
    assert regions.is_known("620100") and not regions.is_known("610102") and not regions.is_known(620100)
    with pytest.raises(UnknownRegion, match=r"region code '610102' is not a region of Gansu: lmg ships the GB/T "
                                             r"2260 tree for Gansu") as refused:
        regions.region("610102")
    assert isinstance(refused.value, ValueError)
    assert str(pickle.loads(pickle.dumps(refused.value))) == str(refused.value)


def test_county_city_children_and_ancestors():
    assert regions.county_of("620102") == "620102" and regions.county_of("620100") is None
    assert [regions.city_of(c) for c in ("620102", "620100", "620171", "629900", "620000")] == [
        "620100", "620100", "620171", "629900", None]
    assert [r.code for r in regions.ancestors("620102")] == ["620100", "620000"]
    assert regions.ancestors("620000") == ()
    assert [r.name for r in regions.children("620100")] == [
        "城关区", "七里河区", "西固区", "安宁区", "红古区", "永登县", "皋兰县", "榆中县"]
    assert regions.children("620200") == () and regions.children("620171") == ()
    province_children = {r.code for r in regions.children("620000")}
    assert len(province_children) == 16 and {"620171", "629900"} <= province_children


@pytest.mark.parametrize("scope, region, covered", [
    ("620000", "620000", True), ("620000", "620102", True), ("620000", "620171", True),
    ("620000", "629900", True), ("620100", "620100", True), ("620100", "620102", True),
    ("620100", "620171", False),  # 兰州新区 starts with 6201 but is its own node
    ("620100", "620502", False), ("620100", "620000", False), ("620102", "620102", True),
    ("620102", "620103", False), ("620102", "620100", False), ("620171", "620171", True),
    ("620171", "620100", False), ("629900", "629900", True), ("629900", "620000", False),
    ("620000", "610102", False), ("620100", "6201", False),
])
def test_covers(scope, region, covered):
    assert regions.covers(scope, region) is covered
    assert (region in regions.covered_codes(scope)) is covered


def test_an_unknown_scope_is_an_error_not_an_empty_scope():
    with pytest.raises(UnknownRegion):
        regions.covers("629901", "620102")


@pytest.mark.parametrize("registered, owners", [
    ("620102", ("620102", "620100", "620000")),  # a county
    ("620100", ("620100", "620100", "620000")),  # a city, no county given
    ("620200", ("620200", "620200", "620000")),  # 嘉峪关市 has no counties
    ("620171", ("620171", "620171", "620000")),  # 兰州新区 owns its projects
    ("629900", ("629900", "629900", "620000")),  # 甘肃矿区 too
    ("620000", ("620000", "620000", "620000")),  # a provincial project
])
def test_the_bureau_that_owns_a_warning_at_each_level(registered, owners):
    assert tuple(regions.bureau_for(registered, level).code for level in (1, 2, 3)) == owners
    for level in (1, 2, 3):  # the owner always covers the project
        assert regions.covers(regions.bureau_for(registered, level).code, registered)


def test_bureau_for_refuses_a_level_outside_1_to_3():
    for level in (0, 4):
        with pytest.raises(ValueError, match="use 1 \\(county\\), 2 \\(city\\) or 3 \\(province\\)"):
            regions.bureau_for("620102", level)


def test_a_project_file_refuses_a_region_outside_the_tree():
    from lmg.protocol.roster_file import parse_projects

    text = "code,name,region\nP1,兰州某住宅楼,620102\nP2,西安某楼,610102\nP3,新区厂房,620171\n"
    good, errors = parse_projects(text.splitlines(keepends=True), "p.csv")
    assert [p.code for p in good] == ["P1", "P3"]
    assert [(e.line, e.reason.split(" is ")[0]) for e in errors] == [(3, "region code '610102'")]
