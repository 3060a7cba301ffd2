"""A county supervisor reaches nothing of another county: not its project, warning, photo or
export, neither by a link on a page nor by editing the URL. Each refusal is a 403 page and an
audit row."""

from __future__ import annotations

from tests.server.console.browser import (  # noqa: F401
    B, P_A, P_B, PEOPLE, audit_rows, browser, console, warning_ids,
)

# What of county B must never reach county A's pages: its project's name, its people's names
# and ID numbers (the codes may appear where the page repeats the URL the visitor typed).
B_MARKERS = ("七里河区第一中学", *(name for _, name in PEOPLE[B].values()), *(who for who, _ in PEOPLE[B].values()),
             *(who[-4:] for who, _ in PEOPLE[B].values()))


async def test_a_county_supervisor_cannot_reach_another_countys_things(console):
    month = console.month_text
    # what county B's own links are: read from the province's pages, as a link could be shared
    province = await console.signed_in("province")
    await console.goto(province, f"/console/projects/{P_B}?month={month}")
    b_photo = await province.page.locator("a[data-photo-link]").first.get_attribute("href")
    assert b_photo and "/console/punches/" in b_photo
    b_warning = (await warning_ids(console.store, P_B))[0]

    tab = await console.signed_in("county-a")
    page = tab.page
    # by link: nothing on the county's pages leads to county B
    for path in ("/console/", "/console/warnings", f"/console/projects/{P_A}?month={month}"):
        await console.goto(tab, path)
        hrefs = await page.locator("a[href]").evaluate_all("links => links.map(a => a.getAttribute('href'))")
        assert not [h for h in hrefs if P_B in h or f"region={B}" in h or h.endswith(f"/warnings/{b_warning}")], \
            (path, hrefs)
        content = await page.content()
        assert P_B not in content and not [m for m in B_MARKERS if m in content], path
    await console.goto(tab, "/console/warnings")
    shown = {int(i) for i in await page.locator("table#warnings tr[data-warning-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.warningId)")}
    assert shown and shown <= set(await warning_ids(console.store, P_A)), shown

    # by editing the URL: each is a 403 page, and audited with its path
    edited = [f"/console/projects/{P_B}?month={month}", f"/console/warnings/{b_warning}", b_photo,
              f"/console/reports/monthly.csv?month={month}&region={B}",
              f"/console/reports/monthly.xlsx?month={month}&region={B}",
              f"/console/warnings?region={B}"]
    for path in edited:
        before = len(await audit_rows(console.store, "county-a", "console_forbidden"))
        await console.goto(tab, path, status=403)
        assert (await page.locator("h1").first.inner_text()).strip() == "403", path
        content = await page.content()
        assert not [m for m in B_MARKERS if m in content], path  # the page may repeat the URL, nothing of B
        refused = await audit_rows(console.store, "county-a", "console_forbidden")
        assert len(refused) == before + 1 and refused[0].detail["path"] == path.split("?")[0], \
            (path, [(r.event, r.detail) for r in refused[:3]])
    await console.screenshot(tab, "forbidden")
    # and its own things are there
    await console.goto(tab, f"/console/warnings/{(await warning_ids(console.store, P_A))[0]}")
    await page.locator("dl#warning-figures").wait_for()


async def test_a_photo_needs_the_pii_permission(console):
    month = console.month_text
    with_pii = await console.signed_in("county-a")
    await console.goto(with_pii, f"/console/projects/{P_A}?month={month}")
    link = with_pii.page.locator("a[data-photo-link]").first
    href = await link.get_attribute("href")
    assert href and "/console/punches/" in href
    before = len(await audit_rows(console.store, "county-a"))
    response = await console.goto(with_pii, href)
    assert response.headers["content-type"].startswith("image/jpeg")
    assert len(await audit_rows(console.store, "county-a")) == before + 1, "viewing a photo is audited"
    # 人社's supervisor of the same county has no pii: no link, and the URL is refused
    labour = await console.signed_in("labour")
    await console.goto(labour, f"/console/projects/{P_A}?month={month}")
    assert await labour.page.locator("a[data-photo-link]").count() == 0
    await console.goto(labour, href, status=403)  # the same county: only the permission differs
