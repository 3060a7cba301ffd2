"""The simulated terminal (simulators/terminal.py) against the real gateway: what a vendor would copy."""

from __future__ import annotations

import asyncio

import pytest

from lmg.protocol import Heartbeat, ResultCode
from lmg.simulators.terminal import TerminalError

from tests.server.conftest import WAIT_S, wait_for


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_request_on_a_connection_the_server_closed_fails_at_once(gw, transport):
    first = await gw.terminal(transport=transport, timeout_s=120)  # a hang would outlast WAIT_S
    await gw.terminal(transport=transport)  # takes the serial over: the server closes `first`
    await wait_for(lambda: first.closed_reason == ResultCode.TAKEOVER, what="GOODBYE TAKEOVER")
    await asyncio.sleep(0.1)  # let the close arrive too
    with pytest.raises(TerminalError) as caught:
        await asyncio.wait_for(first.request(Heartbeat(0, 0, 0)), WAIT_S)
    assert caught.value.code == ResultCode.TAKEOVER

