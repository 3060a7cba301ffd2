"""An operator sends a time sync from the devices page and sees it acknowledged by a simulated
terminal (simulators/terminal.py with its TerminalDevice, over the gateway's TCP listener).

The page is reloaded until the command shows `acked`, a bounded number of times: the
terminal answers on its own connection, so the outcome comes when it comes."""

from __future__ import annotations

from lmg.protocol import MessageType
from tests.server.console.browser import D_A, browser, console, poll  # noqa: F401

RELOADS = 50  # x 0.2 s: 10 s, generous for a loaded 2-core box; an ACK takes a few ms


async def test_an_operator_sends_a_time_sync_and_sees_it_acknowledged(console):
    terminal = await console.gw.terminal(console.devices[D_A])
    tab = await console.signed_in("operator")
    page = tab.page
    await console.goto(tab, "/console/devices")
    row = page.locator(f"table#devices tr[data-device-sn='{D_A}']")
    await row.wait_for()
    await row.locator("form.time-sync").locator("button, input[type=submit]").first.click()
    await page.wait_for_url(f"**/console/devices/{D_A}")
    commands = page.locator("table#device-commands tbody tr")
    assert await commands.count() >= 1

    async def acked() -> bool:
        await page.reload()
        return "acked" in await commands.first.inner_text()

    await poll(acked, attempts=RELOADS, what="the time sync shown acked on the device page")
    assert [h.msg_type for h in terminal.device.history if h.msg_type == MessageType.SET_TIME], \
        "the terminal received SET_TIME"
    await console.screenshot(tab, "device-acked")
    stored = [c for c in await console.store.list_commands(device_serial=D_A)
              if c.command_type == MessageType.SET_TIME]
    assert len(stored) == 1 and stored[0].state.value == "acked"



async def test_an_operator_requeues_a_dead_letter_from_the_forwarding_page(console):
    tab = await console.signed_in("operator")
    page = tab.page
    await console.goto(tab, "/console/forwarding")
    assert (await page.locator("dl#outbox dd.dead").inner_text()).strip() == "1"
    letter = page.locator("table#dead-letters tr[data-dead-letter-id]")
    assert await letter.count() == 1
    dead_id = int(await letter.get_attribute("data-dead-letter-id"))
    assert [d.id for d in await console.store.list_dead_letters()] == [dead_id]
    await letter.locator("form.requeue button[type=submit]").click()
    await page.wait_for_url("**/console/forwarding*")
    await page.wait_for_load_state("load")
    assert await page.locator("table#dead-letters tr[data-dead-letter-id]").count() == 0
    assert await console.store.list_dead_letters() == []
    assert (await page.locator("dl#outbox dd.dead").inner_text()).strip() == "0"
    await console.screenshot(tab, "requeued")
