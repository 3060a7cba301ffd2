"""Every page as every role, with no JavaScript error in the browser's console; and the
screenshots of the overview and the project page that docs/console.md shows.

Refresh the documentation's images with:
    LMG_UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest tests/server/console -k screenshot
"""

from __future__ import annotations

from tests.server.console.browser import (  # noqa: F401
    ACCOUNTS, CITY, D_A, D_B, P_A, P_B, A, B, browser, console, warning_ids,
)

ROLES = tuple(ACCOUNTS)


def expected(who: str, page: str) -> int:
    """The status each role gets from each page: supervisors their region's pages, the
    operator the devices and forwarding (and the overview of the province)."""
    department, region, role, pii = ACCOUNTS[who]
    sees_a = region in (A, CITY, "620000")
    sees_b = region in (B, CITY, "620000")
    table = {
        "overview": 200,
        "warnings": 200,
        "warning A": 200 if sees_a else 403,
        "warning B": 200 if sees_b else 403,
        "project A": 200 if sees_a else 403,
        "project B": 200 if sees_b else 403,
        "photo A": 200 if sees_a and pii else 403,
        "devices": 200 if role == "operator" else 403,
        "device A": 200 if role == "operator" else 403,
        "forwarding": 200 if role == "operator" else 403,
    }
    return table[page]


async def _paths(console) -> dict[str, str]:
    month = console.month_text
    province = await console.signed_in("province")
    await console.goto(province, f"/console/projects/{P_A}?month={month}")
    photo = await province.page.locator("a[data-photo-link]").first.get_attribute("href")
    return {
        "overview": "/console/",
        "warnings": "/console/warnings",
        "warning A": f"/console/warnings/{(await warning_ids(console.store, P_A))[0]}",
        "warning B": f"/console/warnings/{(await warning_ids(console.store, P_B))[0]}",
        "project A": f"/console/projects/{P_A}?month={month}",
        "project B": f"/console/projects/{P_B}?month={month}",
        "photo A": photo,
        "devices": "/console/devices",
        "device A": f"/console/devices/{D_A}",
        "forwarding": "/console/forwarding",
    }


async def test_no_javascript_error_on_any_page_as_any_role(console):
    paths = await _paths(console)
    seen = []
    for who in ROLES:
        tab = await console.signed_in(who)
        for name, path in paths.items():
            status = expected(who, name)
            await console.goto(tab, path, status=status)
            if status == 200 and not name.startswith("photo"):
                await tab.page.wait_for_load_state("networkidle")  # htmx and the charts have run
                assert await tab.page.locator("html").get_attribute("lang") == "zh-CN"
                assert (await tab.page.locator("span#account").inner_text()).strip().startswith(who)
            seen.append((who, name, status))
        await console.screenshot(tab, f"last-page-{who}")
        assert not tab.errors, tab.errors
    assert len(seen) == len(ROLES) * len(paths)


async def test_screenshot_of_the_overview_and_the_project_page(console):
    tab = await console.signed_in("city")
    page = tab.page
    await page.locator("div#trend-chart canvas, div#trend-chart svg").first.wait_for()  # ECharts drew the trend
    await page.wait_for_load_state("networkidle")
    links = await page.locator("table#warnings-by-level-region a[href]").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))")
    assert any(f"region={A}" in h for h in links) and any(f"region={B}" in h for h in links), links
    await console.screenshot(tab, "overview")
    county = await console.signed_in("county-a")
    await console.goto(county, f"/console/projects/{P_A}?month={console.month_text}")
    cells = county.page.locator("table#bid-vs-site tr.mismatch")
    assert await cells.count() >= 1, "the technical lead on site is not the awarded one"
    assert await county.page.locator("div.calendar-heatmap").count() >= 3  # one per key person
    await county.page.wait_for_load_state("networkidle")
    await console.screenshot(county, "project")
