"""The WebSocket transport with the real `websockets` client: /terminal, binary frames only."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol import Ack, AuthResult, Challenge, Hello, Nack, Punch, PunchBatch, ResultCode, decode_frame, encode
from simulators.terminal import make_punch

from .conftest import WAIT_S


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ws_connect(gw, path: str = "/terminal"):
    return connect(f"ws://{gw.host}:{gw.ws_port}{path}", ping_interval=None, compression=None, proxy=None,
                   open_timeout=WAIT_S)


async def test_terminal_authenticates_and_gets_acks_over_websocket(gw):
    terminal = await gw.terminal(transport="ws")
    assert terminal.auth_result.result == ResultCode.OK
    reply = await terminal.request(Punch.of(make_punch(1, 1, now_ms())))
    assert isinstance(reply, Ack) and [r.result for r in reply.results] == [ResultCode.OK]
    reply = await terminal.request(PunchBatch(tuple(make_punch(n, n, now_ms()) for n in (1, 2, 3))))
    assert [(r.record_no, r.result) for r in reply.results] == [
        (1, ResultCode.DUPLICATE), (2, ResultCode.OK), (3, ResultCode.OK)]
    assert await gw.store.count_punches(gw.device.serial) == 3


async def test_one_frame_per_binary_message(gw):
    async with ws_connect(gw) as ws:
        await ws.send(encode(Hello(gw.device.serial, "v", "m", "f", 1, 0, 1)))
        assert isinstance(decode_frame(await asyncio.wait_for(ws.recv(), WAIT_S)), Challenge)
        # two frames in one message are not one frame: refused, the session goes on
        await ws.send(encode(Hello("x", "v", "m", "f", 1, 0, 2)) * 2)
        nack = decode_frame(await asyncio.wait_for(ws.recv(), WAIT_S))
        assert isinstance(nack, Nack) and nack.result == ResultCode.MALFORMED_BODY


async def test_text_message_is_closed_with_1003(gw):
    async with ws_connect(gw) as ws:
        await ws.send("HELLO as text")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT_S)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1003


async def test_wrong_path_is_refused(gw):
    try:
        async with ws_connect(gw, "/not-terminal") as ws:
            with pytest.raises(ConnectionClosed):
                reply = await asyncio.wait_for(ws.recv(), WAIT_S)
                pytest.fail(f"the wrong path answered {decode_frame(reply)!r}")
            assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1008
    except InvalidStatus as exc:  # refusing the upgrade outright is as good
        assert exc.response.status_code == 404
    assert len(gw.gateway.links) == 0


async def test_refused_authentication_over_websocket_closes(start_gateway):
    gw = await start_gateway(shutdown_grace_s=60)
    async with ws_connect(gw) as ws:
        await ws.send(encode(Hello("GS-NOBODY", "v", "m", "f", 1, 0, 1)))
        result = decode_frame(await asyncio.wait_for(ws.recv(), WAIT_S))
        assert isinstance(result, AuthResult) and result.result == ResultCode.UNKNOWN_DEVICE
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT_S)
    # the server's handler for that connection has returned: nothing holds shutdown up
    # (it is bounded by WAIT_S here, far below the 60 s grace a stuck handler would use)
    await asyncio.wait_for(gw.gateway.shutdown(), WAIT_S)
