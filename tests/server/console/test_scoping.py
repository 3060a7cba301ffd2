"""A county supervisor cannot reach another county's project, warning, photo or export, by
link or by editing the URL: 403 pages, each audited. What it may see, it sees."""

from __future__ import annotations

import re

from tests.server.console.conftest import B, CITY, D_B, P_A, P_B, W_B


async def test_county_a_gets_403_for_county_b_and_each_refusal_is_audited(world):
    await world.login("county-a")
    b_photo = world.punches[f"{D_B}/1"]
    refused = [f"/console/projects/{P_B}", f"/console/warnings/{world.warnings['b']}", f"/console/punches/{b_photo}/photo",
               f"/console/reports/monthly.csv?month={world.today:%Y-%m}&region={B}",
               f"/console/reports/monthly.xlsx?month={world.today:%Y-%m}&region={B}",
               f"/console/warnings?region={B}"]
    for path in refused:
        response = await world.get(path)
        text = await response.text()
        assert response.status == 403, path
        # the page may repeat what was asked for (the code in the URL), never what B holds
        assert "<h1>403</h1>" in text and "辖区" in text, path
        assert not [m for m in (W_B, "七里河", "项目620103", "甘肃某建工集团") if m in text], path
    response = await world.post(f"/console/warnings/{world.warnings['b']}/close",
                                {"disposition": "interview", "note": "x"})
    assert response.status == 403
    audit = await world.audit("console_forbidden")
    assert len(audit) == len(refused) + 1 and {e.subject for e in audit} == {"account:county-a"}
    assert {e.detail["path"] for e in audit} >= {f"/console/projects/{P_B}", f"/console/punches/{b_photo}/photo"}
    assert (await world.store.get_warning(world.warnings["b"])).state.value == "open"


async def test_lists_and_figures_hold_only_the_account_region(world):
    await world.login("county-a")
    for path in ("/console/", "/console/warnings", f"/console/warnings?region={CITY}", "/console/projects",
                 f"/console/reports/monthly.csv?month={world.today:%Y-%m}"):
        response = await world.get(path)
        text = await response.text()
        assert response.status == 200, path
        assert P_B not in text and W_B not in text and "620103" not in re.sub(r"<select.*?</select>", "", text,
                                                                               flags=re.S), path
    assert f'href="/console/projects/{P_A}"' in (await world.page("/console/projects"))[1]


async def test_the_city_sees_both_counties(world):
    await world.login("city")
    text = (await world.page("/console/warnings"))[1]
    assert sorted(map(int, re.findall(r'data-warning-id="(\d+)"', text))) == sorted(world.warnings.values())
    assert (await world.get(f"/console/projects/{P_B}")).status == 200
    assert (await world.get(f"/console/warnings/{world.warnings['b']}")).status == 200
