"""Who sees a warning and who may close it, over the real region tree."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmg.protocol import regions
from lmg.server.supervision.access import CLOSING_DEPARTMENT, Supervisor, can_see, may_close, owner
from lmg.storage.api import Department

CHENGGUAN, QILIHE, LANZHOU = "620102", "620103", "620100"  # two counties of 兰州市, and the city
BAIYIN_DISTRICT, NEW_AREA, MINING, JIAYUGUAN, GANSU = "620402", "620171", "629900", "620200", "620000"
HOUSING, LABOUR = Department.CONSTRUCTION, Department.LABOUR


@pytest.mark.parametrize(("scope", "region", "seen"), [
    (CHENGGUAN, CHENGGUAN, True),
    (CHENGGUAN, QILIHE, False),  # another county
    (LANZHOU, CHENGGUAN, True),
    (LANZHOU, BAIYIN_DISTRICT, False),  # another city's county
    (LANZHOU, NEW_AREA, False),  # 620171 starts with 6201 but is its own node
    (NEW_AREA, NEW_AREA, True),
    (NEW_AREA, CHENGGUAN, False),
    (MINING, MINING, True),
    (GANSU, MINING, True),
    (GANSU, BAIYIN_DISTRICT, True),
    (CHENGGUAN, "999999", False),  # an unknown region is nobody's
])
def test_who_sees_a_warning(scope, region, seen):
    assert can_see(scope, region) is seen


@pytest.mark.parametrize(("region", "level", "bureau"), [
    (CHENGGUAN, 1, CHENGGUAN), (CHENGGUAN, 2, LANZHOU), (CHENGGUAN, 3, GANSU),
    (NEW_AREA, 1, NEW_AREA), (NEW_AREA, 2, NEW_AREA), (NEW_AREA, 3, GANSU),
    (JIAYUGUAN, 1, JIAYUGUAN),  # a city without counties owns its projects' warnings from level 1
])
def test_the_owner_of_each_level(region, level, bureau):
    assert owner(region, level) == bureau


@pytest.mark.parametrize(("department", "scope", "region", "level", "allowed"), [
    (HOUSING, CHENGGUAN, CHENGGUAN, 1, True),
    (HOUSING, CHENGGUAN, CHENGGUAN, 2, False),  # it rose to the city: the county no longer closes it
    (HOUSING, LANZHOU, CHENGGUAN, 1, True),  # a city closes its counties' warnings
    (HOUSING, LANZHOU, CHENGGUAN, 2, True),
    (HOUSING, LANZHOU, CHENGGUAN, 3, False),
    (HOUSING, GANSU, CHENGGUAN, 3, True),
    (HOUSING, QILIHE, CHENGGUAN, 1, False),  # another county
    (HOUSING, LANZHOU, NEW_AREA, 1, False),  # 兰州新区 is not 兰州市's
    (HOUSING, NEW_AREA, NEW_AREA, 2, True),
    (LABOUR, CHENGGUAN, CHENGGUAN, 1, False),  # 人社 sees figures, closes nothing
    (LABOUR, GANSU, CHENGGUAN, 3, False),
])
def test_who_may_close(department, scope, region, level, allowed):
    assert may_close(Supervisor(department, scope), region, level) is allowed


def test_the_closing_department_is_the_stores_construction():
    assert Department(CLOSING_DEPARTMENT) is Department.CONSTRUCTION
    assert may_close(Supervisor("construction", GANSU), CHENGGUAN, 1)  # a code works as well as the member


def test_an_unknown_scope_is_an_error_not_a_refusal():
    with pytest.raises(regions.UnknownRegion):
        can_see("999999", CHENGGUAN)


CODES = [r.code for r in regions.all_regions()]


@given(st.sampled_from(CODES), st.sampled_from(CODES), st.integers(1, 3))
def test_whoever_may_close_a_warning_sees_it(scope, region, level):
    if may_close(Supervisor(HOUSING, scope), region, level):
        assert can_see(scope, region)
    # and whoever sees it at level 1 may close it then
    if can_see(scope, region):
        assert may_close(Supervisor(HOUSING, scope), region, 1)
