"""Admission: connection limits refuse with GOODBYE before any session starts."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from lmg.protocol import Goodbye, ResultCode, decode_frame

from tests.server.conftest import WAIT_S, wait_for


async def test_connections_above_the_per_address_limit_are_refused_with_goodbye(start_gateway):
    gw = await start_gateway(max_connections_per_address=2)
    first = await gw.raw_authenticated()
    await gw.raw()
    refused = await gw.raw()
    received = await refused.closed_after()
    assert [(type(m), m.reason) for m in received] == [(Goodbye, ResultCode.SERVER_BUSY)]
    async with connect(f"ws://{gw.host}:{gw.ws_port}/terminal", proxy=None, open_timeout=WAIT_S) as ws:
        goodbye = decode_frame(await asyncio.wait_for(ws.recv(), WAIT_S))
        assert isinstance(goodbye, Goodbye) and goodbye.reason == ResultCode.SERVER_BUSY
    await first.close()
    await wait_for(lambda: len(gw.gateway.links) == 1, what="the closed connection to be forgotten")
    assert (await (await gw.raw()).authenticate(gw.device)).result == ResultCode.OK
