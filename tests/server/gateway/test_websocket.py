"""The WebSocket transport with the real `websockets` client: /terminal, binary frames only."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from lmg.protocol import (Ack, Auth, AuthResult, Challenge, Goodbye, Heartbeat, Hello, Nack, Punch, PunchBatch, ResultCode,
                      decode_frame, encode)
from lmg.protocol.auth import auth_mac
from lmg.simulators.terminal import make_punch

from tests.server.conftest import WAIT_S, GatedStore, wait_for


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
        # two frames in one message are not one frame: each is refused with its own NACK
        # (before, the second was dropped without an answer), the session goes on
        await ws.send(encode(Hello("x", "v", "m", "f", 1, 0, 2)) + encode(Heartbeat(0, 0, 0, 3)))
        nacks = [decode_frame(await asyncio.wait_for(ws.recv(), WAIT_S)) for _ in range(2)]
        assert [(n.ref_seq, n.ref_type, n.result) for n in nacks] == [
            (2, Hello.msg_type, ResultCode.MALFORMED_BODY), (3, Heartbeat.msg_type, ResultCode.MALFORMED_BODY)]


async def test_a_peers_websocket_protocol_errors_are_logged_rate_limited_below_error(gw, caplog):
    # Before: picows logged every one at ERROR, so anyone could flood the log.
    import logging

    from lmg.server.gateway import websocket

    websocket._PEER_ERRORS._last.clear()
    caplog.set_level(logging.DEBUG, logger="lmg")
    for _ in range(5):
        reader, writer = await asyncio.open_connection(gw.host, gw.ws_port)
        writer.write(b"GET /terminal HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        writer.write(bytes([0x83, 0x80, 1, 2, 3, 4]))  # reserved opcode 3: a protocol error
        await asyncio.wait_for(reader.read(), WAIT_S)  # closed by the server
        writer.close()
    peer_lines = [r for r in caplog.records if "WebSocket peer error" in r.getMessage()]
    assert len(peer_lines) == 1 and peer_lines[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_unauthenticated_websocket_message_above_a_hello_is_closed_with_1009(gw):
    async with ws_connect(gw) as ws:
        await ws.send(encode(Hello("x" * 200, "v" * 255, "m" * 255, "f" * 255, 1, 0, 1)) + bytes(1000))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT_S)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009


async def test_a_window_of_punches_gets_one_message_per_ack_in_order(gw):
    # Answers are corked into one write per pass; over WebSocket each must still be its own message.
    terminal = await gw.terminal(transport="ws")
    replies = await asyncio.gather(*(terminal.request(Punch.of(make_punch(n, n, now_ms()))) for n in range(1, 9)))
    assert [r.results[0].record_no for r in replies] == list(range(1, 9))
    assert all(isinstance(r, Ack) and r.results[0].result == ResultCode.OK for r in replies)
    seqs = [r.seq for r in replies]
    assert seqs == list(range(seqs[0], seqs[0] + 8))


async def test_text_message_is_closed_with_1003(gw):
    async with ws_connect(gw) as ws:
        await ws.send("HELLO as text")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT_S)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1003


async def test_wrong_path_is_refused_with_404(gw):
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(gw, "/not-terminal"):
            pytest.fail("the wrong path was upgraded")
    assert refused.value.response.status_code == 404
    assert len(gw.gateway.links) == 0


async def test_message_above_the_maximum_frame_size_is_closed_with_1009(gw):
    limit = gw.gateway.limits.max_frame_size
    for message in (b"LM" + bytes(limit - 1), [bytes(limit // 2), bytes(limit // 2), b"LM"]):  # whole; fragmented
        async with ws_connect(gw) as ws:
            await ws.send(message)
            with pytest.raises(ConnectionClosed):
                reply = await asyncio.wait_for(ws.recv(), WAIT_S)
                pytest.fail(f"an oversize message was answered {decode_frame(reply)!r}")
            assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009
    await wait_for(lambda: len(gw.gateway.links) == 0, what="the closed links to be forgotten")


async def test_fragmented_message_is_one_frame(gw):
    hello = encode(Hello(gw.device.serial, "v", "m", "f", 1, 0, 1))
    async with ws_connect(gw) as ws:
        await ws.send([hello[:5], hello[5:20], hello[20:]])  # one message in three WebSocket frames
        assert isinstance(decode_frame(await asyncio.wait_for(ws.recv(), WAIT_S)), Challenge)


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


async def test_shutdown_acks_the_punch_in_flight_then_says_goodbye_over_websocket(start_gateway):
    gw = await start_gateway(wrap=GatedStore, shutdown_grace_s=30)
    terminal = await gw.terminal(transport="ws")
    reply = asyncio.ensure_future(terminal.request(Punch.of(make_punch(1, 1, now_ms()))))
    await asyncio.wait_for(gw.gateway.store.entered.wait(), WAIT_S)
    shutdown = asyncio.ensure_future(gw.gateway.shutdown())
    await wait_for(lambda: gw.gateway.stopping, what="shutdown to begin")
    await asyncio.sleep(0.2)  # give a premature close the chance to happen
    gw.gateway.store.release.set()
    ack = await reply
    assert isinstance(ack, Ack) and ack.results[0].result == ResultCode.OK
    goodbye = await asyncio.wait_for(terminal.unsolicited.get(), WAIT_S)
    assert isinstance(goodbye, Goodbye) and goodbye.reason == ResultCode.SHUTTING_DOWN
    await asyncio.wait_for(shutdown, WAIT_S)


async def test_peer_that_never_reads_is_closed_over_websocket(start_gateway):
    gw = await start_gateway(max_unsent_bytes=16 * 1024)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((gw.host, gw.ws_port))
    async with connect(f"ws://{gw.host}:{gw.ws_port}/terminal", sock=sock, max_queue=4, proxy=None,
                       ping_interval=None, compression=None, open_timeout=WAIT_S) as ws:
        await ws.send(encode(Hello(gw.device.serial, "v", "m", "f", 1, 0, 1)))
        challenge = decode_frame(await asyncio.wait_for(ws.recv(), WAIT_S))
        await ws.send(encode(Auth(auth_mac(gw.device.secret, challenge.nonce, gw.device.serial, "f", 1), 2)))
        assert decode_frame(await asyncio.wait_for(ws.recv(), WAIT_S)).result == ResultCode.OK
        heartbeat = encode(Heartbeat(0, 0, 0, 3))  # from now on the client never reads again
        with contextlib.suppress(ConnectionClosed):
            for _ in range(500_000):
                await asyncio.wait_for(ws.send(heartbeat), WAIT_S)
                if gw.gateway.counters["slow_reader_closed"]:
                    break
    assert gw.gateway.counters["slow_reader_closed"] == 1
    assert gw.gateway.sessions == {}
