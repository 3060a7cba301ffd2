"""The PROXY protocol behind a TCP load balancer (tcp_proxy_protocol, proxy_header.py).

Behind HAProxy every terminal had the balancer's address: the per-address connection limit
and lockout counted the whole fleet as one client, and the logs named the balancer. The
header's address now stands in for the socket's, checked at the parser, at the gateway, and
through a real HAProxy with send-proxy-v2."""

from __future__ import annotations

import asyncio
import subprocess
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from proxyprotocol.result import ProxyResultIPv4, ProxyResultIPv6, ProxyResultLocal
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from lmg.protocol import Goodbye, ResultCode
from lmg.server.gateway.proxy_header import MAX_HEADER_BYTES, ProxyHeader, ProxyHeaderError, read_proxy_header
from lmg.server.settings import Settings

from tests.server.conftest import BASE_CONFIG, WAIT_S, wait_for
from tests.server.test_haproxy_failover import free_port, haproxy_binary, haproxy_config

V4 = ProxyResultIPv4((IPv4Address("10.1.2.3"), 40001), (IPv4Address("10.0.0.1"), 9100))
V6 = ProxyResultIPv6((IPv6Address("2001:db8::7"), 40002), (IPv6Address("2001:db8::1"), 9100))


def header(result=V4, version: int = 2) -> bytes:
    return (ProxyProtocolV2() if version == 2 else ProxyProtocolV1()).pack(result)


@pytest.mark.parametrize("version", [1, 2])
def test_the_header_gives_the_terminals_address_and_where_its_frames_start(version):
    for result, host, port in ((V4, "10.1.2.3", 40001), (V6, "2001:db8::7", 40002)):
        data = header(result, version)
        assert read_proxy_header(data + b"\x4c\x4d first frame") == ProxyHeader((host, port), len(data))
    local = ProxyProtocolV2().pack(ProxyResultLocal())  # HAProxy's own health check
    assert read_proxy_header(local) == ProxyHeader(None, 16)


@given(st.sampled_from([1, 2]), st.data())
def test_a_header_arriving_in_pieces_is_read_only_once_whole(version, data):
    whole = header(V4, version)
    cut = data.draw(st.integers(0, len(whole) - 1))
    assert read_proxy_header(whole[:cut]) is None  # NEED_MORE
    assert read_proxy_header(whole) == ProxyHeader(("10.1.2.3", 40001), len(whole))


@pytest.mark.parametrize("data, says", [
    (b"\x4c\x4d\x00\x01 a terminal's frame", "does not start with a PROXY"),
    (b"GET / HTTP/1.1\r\n", "does not start with a PROXY"),
    (b"PROXY TCP4 nonsense\r\n", "malformed"),
    (b"PROXY " + b"9" * 120, "longer than 107"),
    (b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12), "version 3"),
    (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff", f"at most {MAX_HEADER_BYTES}"),
])
def test_anything_else_is_refused_with_the_reason(data, says):
    with pytest.raises(ProxyHeaderError, match=says):
        read_proxy_header(data)


def test_the_setting_refuses_tls_at_the_gateway():
    with pytest.raises(ValueError, match="tcp_proxy_protocol with tls_cert"):
        Settings.from_keys({**BASE_CONFIG, "tcp_proxy_protocol": True, "tls_cert": "c.pem", "tls_key": "k.pem"})


async def test_the_gateway_counts_connections_and_sessions_by_the_headers_address(start_gateway):
    gw = await start_gateway(tcp_proxy_protocol=True, max_connections_per_address=1)
    first = await gw.raw()
    whole = header(V4)
    first.send_bytes(whole[:10])  # in two pieces, the second with the HELLO behind it
    await asyncio.sleep(0)
    first.send_bytes(whole[10:])
    assert (await first.authenticate(gw.device)).result == ResultCode.OK
    link = gw.gateway.sessions[gw.device.serial]
    assert (link.peer_host, link.session.peer) == ("10.1.2.3", "10.1.2.3:40001")
    # the limit of one connection per address is the terminal's, not the socket's 127.0.0.1
    same = await gw.raw()
    same.send_bytes(header(V4))
    refused = await same.receive()
    assert isinstance(refused, Goodbye) and refused.reason == ResultCode.SERVER_BUSY
    other = await gw.raw()
    other.send_bytes(header(V6))
    assert (await other.authenticate(await gw.add_device("GS-TEST-000077"))).result == ResultCode.OK
    # a client without a header is closed, counted and never reaches a session
    direct = await gw.raw()
    direct.send_bytes(b"\x4c\x4d" + bytes(30))
    assert await direct.receive() is None
    assert gw.gateway.counters["refused_proxy_header"] == 1


async def test_a_silent_connection_is_closed_after_the_authentication_timeout(start_gateway):
    gw = await start_gateway(tcp_proxy_protocol=True, auth_timeout_s=0.2)
    silent = await gw.raw()
    assert await silent.receive() is None
    assert gw.gateway.counters["refused_proxy_header"] == 1


async def test_through_haproxy_with_send_proxy_v2_the_gateway_sees_the_terminals_address(start_gateway, tmp_path):
    haproxy = haproxy_binary()
    gw = await start_gateway(tcp_proxy_protocol=True)
    listen = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(listen, [gw.tcp_port], send_proxy=True))
    with open(tmp_path / "haproxy.log", "wb") as log:
        balancer = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        from tests.server.conftest import RawClient

        async def connected() -> bool:
            try:
                probe = await RawClient.connect("127.0.0.1", listen, local_addr="127.0.0.7")
            except OSError:
                return False
            await probe.close()
            return True

        await wait_for(connected, what="HAProxy listening")
        client = await RawClient.connect("127.0.0.1", listen, local_addr="127.0.0.9")
        gw.clients.append(client)
        assert (await client.authenticate(gw.device)).result == ResultCode.OK
        # HAProxy connects to the gateway from 127.0.0.1; the header names 127.0.0.9
        assert gw.gateway.sessions[gw.device.serial].peer_host == "127.0.0.9"
    finally:
        balancer.terminate()
        balancer.wait(WAIT_S)
