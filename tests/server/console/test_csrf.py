"""CSRF: every POST needs the session's synchronizer token (form field or htmx header);
the login form needs its double-submit cookie. Refusals are 403 pages and audit rows."""

from __future__ import annotations

import pytest

from lmg.server.console.app import LOGIN_COOKIE
from tests.server.console.conftest import D_A, PASSWORD, csrf_in

POSTS = ["/console/logout", "/console/warnings/{a}/close", "/console/devices/" + D_A + "/time-sync",
         "/console/devices/" + D_A + "/roster-resync", "/console/forwarding/dead-letters/1/requeue",
         "/console/forwarding/dead-letters/requeue-all"]


@pytest.mark.parametrize("token", [None, "", "x" * 43, "wrong"])
async def test_a_post_without_the_session_token_is_refused_and_audited(world, token):
    await world.login("ops")
    for template in POSTS:
        path = template.format(a=world.warnings["a"])
        response = await world.post(path, {"disposition": "interview", "note": "x"}, csrf=token)
        assert response.status == 403, path
        assert "<h1>403</h1>" in await response.text()
    refused = await world.audit("console_forbidden")
    assert len(refused) == len(POSTS)
    assert {e.detail["reason"] for e in refused} == {"csrf token missing or wrong"}
    assert {e.subject for e in refused} == {"account:ops"}
    # nothing happened: still signed in, nothing queued or closed
    assert (await world.get("/console/")).status == 200
    assert await world.store.list_commands(device_serial=D_A) == []
    assert (await world.store.get_warning(world.warnings["a"])).state.value == "open"


async def test_the_token_of_another_session_does_not_pass(world):
    await world.login("ops")
    mine = await world.csrf_of("/console/")
    await world.logout()
    await world.login("ops")
    response = await world.post(f"/console/devices/{D_A}/time-sync", csrf=mine)
    assert response.status == 403 and await world.store.list_commands(device_serial=D_A) == []


async def test_htmx_sends_the_token_as_a_header(world):
    await world.login("ops")
    text = (await world.page("/console/"))[1]
    token = csrf_in(text)
    assert f'hx-headers=\'{{"X-CSRF-Token": "{token}"}}\'' in text
    response = await world.client.post(f"/console/devices/{D_A}/time-sync", headers={"X-CSRF-Token": token},
                                       allow_redirects=False)
    assert response.status == 303 and len(await world.store.list_commands(device_serial=D_A)) == 1


async def test_login_csrf_needs_the_cookie_and_the_form_to_agree(world):
    # a forged login form posted from elsewhere: no cookie of ours
    response = await world.client.post("/console/login", data={"name": "county-a", "password": PASSWORD,
                                                               "csrf": "forged"}, allow_redirects=False)
    assert response.status == 403
    text = (await world.page("/console/login"))[1]
    response = await world.client.post("/console/login", data={"name": "county-a", "password": PASSWORD,
                                                               "csrf": csrf_in(text) + "x"}, allow_redirects=False)
    assert response.status == 403
    world.client.session.cookie_jar.clear(lambda cookie: cookie.key == LOGIN_COOKIE)
    response = await world.client.post("/console/login", data={"name": "county-a", "password": PASSWORD,
                                                               "csrf": csrf_in(text)}, allow_redirects=False)
    assert response.status == 403
    reasons = [e.detail["reason"] for e in await world.audit("console_forbidden")]
    assert reasons == ["login csrf cookie missing or different"] * 3
    assert await world.audit("console_login") == []
