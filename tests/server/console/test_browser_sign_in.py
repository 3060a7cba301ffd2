"""Signing in and out of the console in a real browser, and the lockout after failed logins.

The lockout's window is the gateway's clock (`Clock`, moved by the test): no sleeping."""

from __future__ import annotations

from tests.server.console.browser import PASSWORD, audit_rows, browser, console, login  # noqa: F401

HOUR_MS = 3_600_000


async def test_log_in_and_out(console):
    tab = await console.page("county-a")
    page = tab.page
    await page.goto(console.url("/console/"))
    assert page.url.startswith(console.url("/console/login")), "an anonymous visitor is sent to the login page"
    assert await page.locator("html").get_attribute("lang") == "zh-CN"
    assert await page.locator("form#login input[name=csrf]").get_attribute("type") == "hidden"
    await login(page, console.base, "county-a", "not-the-password-1")
    assert page.url.startswith(console.url("/console/login"))
    assert await page.locator(".flash.error").count() == 1
    await login(page, console.base, "county-a", PASSWORD)
    await page.wait_for_url(console.url("/console/"))
    assert (await page.locator("span#account").inner_text()).strip().startswith("county-a")
    await page.locator("table#warnings-by-level-region").wait_for()
    cookies = await page.context.cookies()
    assert cookies, "no session cookie"
    assert all(c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies), cookies
    await console.screenshot(tab, "signed-in")
    await page.locator("form#logout").locator("button, input[type=submit]").first.click()
    await page.wait_for_url(console.url("/console/login") + "*")
    await page.goto(console.url("/console/"))
    assert page.url.startswith(console.url("/console/login")), "the session ended with the logout"
    events = [r.event for r in await audit_rows(console.store, "county-a")]
    assert events[:3] == ["console_logout", "console_login", "console_login_failed"], events  # newest first
    await console.screenshot(tab, "signed-out")


async def test_five_wrong_passwords_lock_the_account_until_the_window_passes(console):
    tab = await console.page("county-b")
    page = tab.page
    messages = []
    for n in range(5):
        await login(page, console.base, "county-b", f"wrong-password-{n}")
        messages.append((await page.locator(".flash.error").inner_text()).strip())
    assert len(set(messages[:4])) == 1, messages  # the same words for every wrong password
    account = await console.store.get_console_account("county-b")
    assert account.locked_until_ms is not None and account.locked_until_ms > console.clock()
    await login(page, console.base, "county-b", PASSWORD)
    assert page.url.startswith(console.url("/console/login")), "the right password is refused while locked"
    locked = (await page.locator(".flash.error").inner_text()).strip()
    assert locked != messages[0] and "try again after" in locked, locked  # when to try again, not "wrong password"
    assert messages[4] == locked, "the fifth failure already says when to try again"
    await console.screenshot(tab, "locked")
    console.clock.advance(account.locked_until_ms - console.clock() + 1_000)  # past the lock, without sleeping
    await login(page, console.base, "county-b", PASSWORD)
    await page.wait_for_url(console.url("/console/"))
    assert (await console.store.get_console_account("county-b")).failed_logins == 0
    events = [r.event for r in await audit_rows(console.store, "county-b")][::-1]  # oldest first
    assert events == ["console_login_failed"] * 4 + ["console_login_failed", "console_locked",
                                                     "console_login_refused", "console_login"], events
