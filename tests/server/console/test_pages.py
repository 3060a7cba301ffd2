"""The console's pages through an HTTP client: sign-in, sessions, cookies, headers, every
page's contract (ids and selectors the browser tests use), closing a warning, device
commands and requeues. Both store backends."""

from __future__ import annotations

import hashlib
import re
import ssl

import pytest

from lmg.server.console.app import COOKIE, LOGIN_COOKIE
from tests.server.console.conftest import (
    CITY, D_A, D_B, P_A, P_B, PASSWORD, PHOTO, W_A, W_STRANGER, add_accounts, csrf_in,
)


def cookie_header(response, name: str) -> str:
    found = [v for v in response.headers.getall("Set-Cookie", []) if v.startswith(name + "=")]
    assert found, response.headers
    return found[-1]


async def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session(world):
    response = await world.get("/console/warnings?level=1")  # not signed in: sent to the login page
    assert response.status == 303 and response.headers["Location"].startswith("/console/login?next=/console/warnings")
    response = await world.get("/console/login")
    login_cookie = cookie_header(response, LOGIN_COOKIE)
    assert "HttpOnly" in login_cookie and "SameSite=Strict" in login_cookie and "Path=/console/" in login_cookie
    html = await response.text()
    assert 'form id="login"' in html and 'name="name"' in html and 'name="password"' in html
    response = await world.login("county-a", next_path="/console/warnings?level=1")
    assert response.status == 303 and response.headers["Location"] == "/console/warnings?level=1"
    cookie = cookie_header(response, COOKIE)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
    assert "Secure" not in cookie  # plain HTTP, setting off
    value = re.match(COOKIE + r"=([^;]+)", cookie).group(1)
    assert await world.store.get_console_session(hashlib.sha256(value.encode()).digest()) is not None
    status, text = await world.page("/console/")
    assert status == 200 and '<span id="account">county-a</span>' in text and 'lang="zh-CN"' in text
    await world.logout()
    assert await world.store.get_console_session(hashlib.sha256(value.encode()).digest()) is None
    assert (await world.get("/console/")).status == 303
    events = [e.event for e in await world.store.list_audit(limit=20)]
    assert "console_login" in events and "console_logout" in events


async def test_next_never_leaves_the_console(world):
    for wanted in ("https://evil.example/", "//evil.example/console/", "/api/v1/devices"):
        response = await world.login("county-a", next_path=wanted)
        assert response.headers["Location"] == "/console/"


async def test_cookies_are_secure_under_tls(start_console, certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    console = await start_console(ssl=context)
    await add_accounts(console.store)
    response = await console.get("/console/login", ssl=False)
    assert "Secure" in cookie_header(response, LOGIN_COOKIE)
    csrf = csrf_in(await response.text())
    response = await console.client.post("/console/login", data={"name": "county-a", "password": PASSWORD,
                                                                 "csrf": csrf}, allow_redirects=False, ssl=False)
    assert response.status == 303 and "Secure" in cookie_header(response, COOKIE)


async def test_cookies_are_secure_when_the_setting_says_tls_ended_before_us(start_console):
    console = await start_console(console_secure_cookies=True)
    assert "Secure" in cookie_header(await console.get("/console/login"), LOGIN_COOKIE)


async def test_a_session_ends_after_idle_time_and_after_twelve_hours(world):
    assert (await world.login("county-a")).status == 303
    world.clock.now_ms += 29 * 60_000
    assert (await world.get("/console/")).status == 200  # 29 min idle: alive, and moved on
    world.clock.now_ms += 29 * 60_000
    assert (await world.get("/console/")).status == 200
    world.clock.now_ms += 31 * 60_000
    response = await world.get("/console/")
    assert response.status == 303 and "why=expired" in response.headers["Location"]
    assert "会话已过期" in (await world.page(response.headers["Location"]))[1]
    assert "anything" not in (await world.page("/console/login?why=anything"))[1]  # no text from the link
    assert (await world.login("county-a")).status == 303
    for _ in range(25):  # busy all day: every 29 minutes
        world.clock.now_ms += 29 * 60_000
        if (await world.get("/console/")).status != 200:
            break
    assert (await world.get("/console/")).status == 303  # 12 h after login, however busy
    assert len(await world.store.list_audit(event="console_login", limit=10)) == 2


async def test_five_failures_lock_with_the_generic_message_and_a_time(world):
    for _ in range(4):
        response = await world.login("county-a", "wrong password!")
        text = await response.text()
        assert response.status == 200 and 'class="flash error"' in text and "用户名或密码错误" in text
        assert "后再试" not in text
    text = await (await world.login("county-a", "wrong password!")).text()
    assert "后再试" in text and "try again after" in text
    # the right password while locked: refused the same way
    response = await world.login("county-a", PASSWORD)
    assert response.status == 200 and "try again after" in await response.text()
    unknown = await (await world.login("nobody-here", "wrong password!")).text()
    assert "用户名或密码错误" in unknown and "try again" not in unknown
    world.clock.now_ms += 61_000
    assert (await world.login("county-a", PASSWORD)).status == 303
    account = await world.store.get_console_account("county-a")
    assert (account.failed_logins, account.locked_until_ms, account.lockout_level) == (0, None, 0)
    failures = await world.audit("console_login_failed")
    assert len(failures) == 6
    # an unknown name is not written down: it may be a password typed into the wrong field
    assert [(e.subject, e.detail["reason"]) for e in failures if e.detail["reason"] == "unknown account"] == [
        ("-", "unknown account")]
    assert all("nobody-here" not in str(e) for e in failures)
    assert [e.subject for e in await world.audit("console_locked")] == ["account:county-a"]
    assert (await world.audit("console_login_refused"))[0].detail["reason"] == "locked"


async def test_a_disabled_account_is_signed_out_at_its_next_request(world):
    assert (await world.login("county-a")).status == 303
    await world.store.update_console_account("county-a", disabled=True)
    assert (await world.get("/console/")).status == 303
    text = await (await world.login("county-a")).text()
    assert "用户名或密码错误" in text


async def test_every_page_has_the_security_headers_and_no_external_url(world):
    assert (await world.login("ops")).status == 303
    for path in ("/console/", "/console/warnings", f"/console/warnings/{world.warnings['a']}", "/console/projects",
                 f"/console/projects/{P_A}", "/console/devices", f"/console/devices/{D_A}", "/console/forwarding",
                 "/console/login", "/console/no-such-page"):
        response = await world.get(path)
        text = await response.text()
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'"), path
        assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
        assert 'lang="zh-CN"' in text and "http://" not in text and "https://" not in text, path
        assert not re.search(r"\son[a-z]+=", text), path  # no inline event handler
        assert "<script>" not in text and "style=" not in text, path
    missing = await world.get("/console/no-such-page")
    assert missing.status == 404 and "<h1>404</h1>" in await missing.text()
    assert missing.headers["Content-Type"].startswith("text/html")


async def test_static_assets_are_served_locally(world):
    for path in ("/console/static/vendor/htmx.min.js", "/console/static/vendor/echarts.min.js",
                 "/console/static/console.js", "/console/static/console.css"):
        response = await world.get(path)
        assert response.status == 200 and len(await response.read()) > 500, path


async def test_overview_counts_by_level_and_region_with_links_and_the_trend(world):
    assert (await world.login("city")).status == 303
    status, text = await world.page("/console/")
    assert status == 200 and 'id="warnings-by-level-region"' in text and 'id="trend-chart"' in text
    assert 'href="/console/warnings?level=1&amp;region=620102&amp;state=open">2<' in text  # a and a2
    assert 'href="/console/warnings?level=1&amp;region=620103&amp;state=open">1<' in text
    assert 'data-export="csv"' in text and 'data-export="xlsx"' in text
    # early in a month the one before is the report people want: both are offered (NOW_MS is in 2026-09)
    assert 'href="/console/reports/monthly.csv?month=2026-09"' in text
    assert 'data-export="csv-previous" href="/console/reports/monthly.csv?month=2026-08"' in text
    assert "device-health" not in text  # a supervisor sees no device figures
    months = re.search(r'data-months="([^"]+)"', text).group(1).replace("&#34;", '"')
    assert months.count('"') == 12  # six months
    await world.logout()
    assert (await world.login("ops")).status == 303
    text = (await world.page("/console/"))[1]
    assert 'id="offline-devices"' in text and "<strong>2</strong>" in text


async def test_warnings_filter_and_page_on_the_server(world):
    assert (await world.login("county-a")).status == 303
    status, text = await world.page("/console/warnings")
    ids = re.findall(r'data-warning-id="(\d+)"', text)
    assert status == 200 and sorted(map(int, ids)) == sorted([world.warnings["a"], world.warnings["a2"]])
    assert 'form id="warning-filters"' in text and 'hx-get="/console/warnings"' in text
    status, text = await world.page("/console/warnings?rule=consecutive-absence")
    assert re.findall(r'data-warning-id="(\d+)"', text) == [str(world.warnings["a2"])]
    status, text = await world.page(f"/console/warnings?month={world.today:%Y-%m}&state=open&level=1")
    assert len(re.findall(r'data-warning-id="(\d+)"', text)) == 2
    status, text = await world.page("/console/warnings?month=2001-01")
    assert 'data-warning-id' not in text
    # htmx asks for the table only
    response = await world.get("/console/warnings?level=1", headers={"HX-Request": "true"})
    fragment = await response.text()
    assert fragment.startswith('<div id="warnings-block">') and "<html" not in fragment
    restore = await world.get("/console/warnings?level=1", headers={"HX-Request": "true",
                                                                    "HX-History-Restore-Request": "true"})
    assert "<html" in await restore.text()  # Back after htmx's history cache missed: the whole page
    assert (await world.get("/console/warnings?level=9")).status == 400
    assert (await world.get("/console/warnings?month=2026-13")).status == 400


async def test_pagination_walks_forward_and_back(world):
    from tests.server.console.conftest import _warning
    from datetime import timedelta

    first = world.today.replace(day=1)
    rules = ("not-committed", "committed-absent", "double-post")
    for n in range(3):
        for rule in rules:
            await _warning(world.store, P_A, W_A, rule, first - timedelta(days=40 * (n + 1)), world.clock.now_ms)
    await world.login("county-a")
    from lmg.server.console import pages

    pages_before = pages.PAGE
    pages.PAGE = 4
    try:
        text = (await world.page("/console/warnings"))[1]
        seen = re.findall(r'data-warning-id="(\d+)"', text)
        assert 'rel="prev"' not in text
        while 'rel="next"' in text:
            nxt = re.search(r'rel="next" href="([^"]+)"', text).group(1).replace("&amp;", "&")
            text = (await world.page(nxt))[1]
            seen += re.findall(r'data-warning-id="(\d+)"', text)
            assert 'rel="prev"' in text
        assert len(seen) == 11 and len(set(seen)) == 11
        prev = re.search(r'rel="prev" href="([^"]+)"', text).group(1).replace("&amp;", "&")
        back = re.findall(r'data-warning-id="(\d+)"', (await world.page(prev))[1])
        assert back == seen[4:8]
    finally:
        pages.PAGE = pages_before


async def test_close_a_warning_and_see_it_in_the_history(world):
    await world.login("county-a")
    path = f"/console/warnings/{world.warnings['a']}"
    status, text = await world.page(path)
    assert status == 200 and 'id="warning-figures"' in text and 'id="warning-history"' in text
    assert 'form id="close-warning"' in text and 'value="false-alarm"' in text and "约谈" in text
    assert "有效出勤天数 valid days</dt><dd>3" in text and "15.0%" in text
    # a false alarm needs its reason
    response = await world.post(path + "/close", {"disposition": "false-alarm", "note": ""}, page=path)
    assert response.status == 400 and 'class="flash error"' in await response.text()
    response = await world.post(path + "/close", {"disposition": "interview", "note": "已约谈\r\n项目经理"}, page=path)
    assert response.status == 303 and response.headers["Location"] == path
    text = (await world.page(path))[1]
    assert 'data-event="closed"' in text and "account:county-a" in text and 'form id="close-warning"' not in text
    stored = await world.store.get_warning(world.warnings["a"])
    assert (stored.state.value, stored.disposition, stored.note, stored.closed_by) == (
        "closed", "interview", "已约谈 项目经理", "account:county-a")
    assert (await world.audit("warning_closed"))[0].detail["by"] == "account:county-a"
    # closed is final
    response = await world.post(path + "/close", {"disposition": "interview", "note": "x"}, page=path)
    assert response.status == 409


async def test_labour_and_operators_read_warnings_but_close_none(world):
    path = f"/console/warnings/{world.warnings['a']}"
    for name in ("labour-a", "ops"):
        await world.login(name)
        status, text = await world.page(path)
        assert status == 200 and 'form id="close-warning"' not in text
        response = await world.post(path + "/close", {"disposition": "interview", "note": "x"}, page=path)
        assert response.status == 403 and "<h1>403</h1>" in await response.text()
        await world.logout()
    assert (await world.store.get_warning(world.warnings["a"])).state.value == "open"


async def test_the_project_page_sets_the_bid_award_beside_the_site(world):
    await world.login("county-a")
    status, text = await world.page(f"/console/projects/{P_A}")
    assert status == 200 and 'id="bid-vs-site"' in text
    rows = re.findall(r'<tr class="(match|mismatch)" data-post="([a-z-]+)"', text)
    assert rows == [("match", "project-manager"), ("mismatch", "technical-lead")]
    assert re.search(r'class="calendar-heatmap" data-person="620102\*{8}\d{3}[\dX]"', text)
    assert W_STRANGER in text  # county-a has pii: full numbers
    photo_links = re.findall(r'data-photo-link href="/console/punches/(\d+)/photo"', text)
    assert photo_links == [str(world.punches[f"{D_A}/1"])]
    response = await world.get(f"/console/punches/{photo_links[0]}/photo")
    assert response.status == 200 and await response.read() == PHOTO
    assert (await world.audit("console_photo_viewed"))[0].detail["punch"] == int(photo_links[0])
    await world.logout()
    await world.login("city")  # no pii: masked numbers, no photo link, photo refused
    text = (await world.page(f"/console/projects/{P_A}"))[1]
    assert W_A not in text and W_STRANGER not in text and "data-photo-link" not in text
    response = await world.get(f"/console/punches/{photo_links[0]}/photo")
    assert response.status == 403
    assert (await world.audit("console_forbidden"))[0].detail["path"].endswith("/photo")
    assert (await world.get("/console/projects/NO-SUCH")).status == 404
    assert (await world.get(f"/console/projects?code={P_A}")).headers["Location"] == f"/console/projects/{P_A}"


async def test_an_operator_sends_a_time_sync_and_sees_it_pending(world):
    await world.login("ops")
    status, text = await world.page("/console/devices?state=offline")
    assert status == 200 and f'data-device-sn="{D_A}"' in text and 'class="time-sync"' in text
    assert 'class="roster-resync"' in text
    response = await world.post(f"/console/devices/{D_A}/time-sync", page="/console/devices")
    assert response.status == 303 and response.headers["Location"] == f"/console/devices/{D_A}"
    response = await world.post(f"/console/devices/{D_A}/roster-resync", page="/console/devices")
    assert response.status == 303
    commands = await world.store.list_commands(device_serial=D_A)
    assert [(c.state.value, c.created_by) for c in commands] == [("queued", "account:ops")] * 2
    text = (await world.page(f"/console/devices/{D_A}"))[1]
    assert 'id="device-commands"' in text and text.count('data-state="queued"') == 2
    assert "set-time" in text and "roster-version-query" in text
    text = (await world.page("/console/devices"))[1]
    row = re.search(rf'data-device-sn="{D_A}".*?</tr>', text, re.S).group(0)
    assert "<td>2</td>" in row  # two pending commands
    assert (await world.audit("console_device_command"))[0].detail["type"] == "roster-version-query"
    assert (await world.get("/console/devices?state=sideways")).status == 400


async def test_supervisors_get_no_device_or_forwarding_pages(world):
    await world.login("county-a")
    for path in ("/console/devices", f"/console/devices/{D_A}", "/console/forwarding"):
        response = await world.get(path)
        assert response.status == 403 and "<h1>403</h1>" in await response.text()
    response = await world.post(f"/console/devices/{D_A}/time-sync")
    assert response.status == 403 and await world.store.list_commands(device_serial=D_A) == []


async def test_a_county_operator_sees_its_devices_only_and_no_forwarding(world):
    await world.login("ops-a")
    text = (await world.page("/console/devices"))[1]
    assert f'data-device-sn="{D_A}"' in text and D_B not in text
    assert (await world.get(f"/console/devices/{D_B}")).status == 403
    assert (await world.get("/console/forwarding")).status == 403
    assert (await world.get(f"/console/devices?region={CITY}")).status == 403


async def test_forwarding_shows_the_outbox_and_requeues_dead_letters(world):
    store = world.store
    items = await store.claim_outbox(10, world.clock.now_ms, lease_ms=60_000)
    await store.dead_letter([items[0].id, items[1].id], "province refused: bad record")
    await world.login("ops")
    status, text = await world.page("/console/forwarding")
    assert status == 200 and 'id="outbox"' in text and 'id="dead-letters"' in text and 'form id="requeue-all"' in text
    ids = re.findall(r'data-dead-letter-id="(\d+)"', text)
    assert len(ids) == 2 and text.count('class="requeue"') == 2
    response = await world.post(f"/console/forwarding/dead-letters/{ids[0]}/requeue", page="/console/forwarding")
    assert response.status == 303 and response.headers["Location"] == "/console/forwarding"
    assert len(await store.list_dead_letters(limit=10)) == 1
    response = await world.post("/console/forwarding/dead-letters/requeue-all", page="/console/forwarding")
    assert response.status == 303 and await store.list_dead_letters(limit=10) == []
    assert [e.detail["count"] for e in await world.audit("console_requeue")] == [1, 1]


async def test_an_enabled_account_lets_the_admin_listener_face_a_network(console):
    from lmg.server.admin.app import AdminRefused, start_admin

    with pytest.raises(AdminRefused, match="no console account is enabled"):
        await start_admin(console.gateway, "0.0.0.0", 0)
    await add_accounts(console.store)
    for name in ("county-a", "county-b", "city", "labour-a", "ops"):
        await console.store.update_console_account(name, disabled=True)
    server = await start_admin(console.gateway, "0.0.0.0", 0)  # ops-a is still enabled
    server.close()
    await server.wait_closed()


async def test_the_browser_asks_for_an_icon_and_gets_one(console):
    response = await console.get("/favicon.ico")
    assert response.status == 200 and response.headers["Content-Type"] == "image/svg+xml"


async def test_the_device_region_filter_holds_the_counties_below_and_pages_by_serial(world):
    from lmg.server.console import pages

    await world.login("ops")
    text = (await world.page(f"/console/devices?region={CITY}"))[1]
    assert f'data-device-sn="{D_A}"' in text and f'data-device-sn="{D_B}"' in text
    text = (await world.page("/console/devices?region=620102"))[1]
    assert f'data-device-sn="{D_A}"' in text and f'data-device-sn="{D_B}"' not in text
    for n in range(5):  # serials may hold any printable character: the cursors are encoded
        await world.store.add_device(f"D.X,{n}%", project_code=P_A, region_code="620102")
    pages_before, pages.PAGE = pages.PAGE, 2
    try:
        text = (await world.page("/console/devices?region=620102"))[1]
        seen = re.findall(r'data-device-sn="([^"]+)"', text)
        while 'rel="next"' in text:
            nxt = re.search(r'rel="next" href="([^"]+)"', text).group(1).replace("&amp;", "&")
            text = (await world.page(nxt))[1]
            seen += re.findall(r'data-device-sn="([^"]+)"', text)
        assert seen == sorted([D_A, *(f"D.X,{n}%" for n in range(5))])
        prev = re.search(r'rel="prev" href="([^"]+)"', text).group(1).replace("&amp;", "&")
        # six devices, two a page: the third page is full, so a fourth (empty) one ends the walk
        assert re.findall(r'data-device-sn="([^"]+)"', (await world.page(prev))[1]) == seen[4:6]
    finally:
        pages.PAGE = pages_before
