"""TLS on the TCP and WebSocket listeners, with a self-signed certificate (the `certificate`
fixture of tests/server/conftest.py)."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from lmg.protocol import Punch, ResultCode
from lmg.simulators.terminal import make_punch

from tests.server.conftest import WAIT_S, RawClient

@pytest.fixture
async def tls_gw(start_gateway, certificate):
    cert, key = certificate
    gw = await start_gateway(tls_cert=str(cert), tls_key=str(key))
    gw.client_tls = ssl.create_default_context(cafile=str(cert))
    return gw


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_punch_acked_over_tls(tls_gw, transport):
    terminal = await tls_gw.terminal(transport=transport, tls=tls_gw.client_tls)
    assert terminal.auth_result.result == ResultCode.OK
    reply = await terminal.request(Punch.of(make_punch(1, 1, time.time_ns() // 1_000_000)))
    assert [r.result for r in reply.results] == [ResultCode.OK]
    assert await tls_gw.store.count_punches(tls_gw.device.serial) == 1


async def test_untrusted_certificate_is_refused_by_the_client(tls_gw):
    with pytest.raises(ssl.SSLCertVerificationError):
        await RawClient.connect(tls_gw.host, tls_gw.tcp_port, ssl=ssl.create_default_context())


async def test_plain_tcp_to_a_tls_listener_gets_no_session(tls_gw):
    client = await tls_gw.raw()
    client.send_bytes(b"LM" + bytes(100))
    received = await client.closed_after()
    assert received == []
    assert tls_gw.gateway.sessions == {}


async def test_tls_listener_is_really_tls(tls_gw):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(tls_gw.host, tls_gw.tcp_port, ssl=tls_gw.client_tls), WAIT_S)
    assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), WAIT_S)
