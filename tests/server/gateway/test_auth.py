"""Authentication over real sockets: outcomes, the auth timeout, lockout, audit, takeover."""

from __future__ import annotations

import os
import time

from lmg.protocol import Ack, Challenge, Goodbye, Heartbeat, Hello, Nack, Punch, ResultCode
from lmg.simulators.terminal import DeviceCredentials, make_punch



async def test_right_secret_authenticates_and_tells_the_session_limits(start_gateway):
    gw = await start_gateway(heartbeat_interval_s=7, max_batch_records=40)
    client = await gw.raw()
    result = await client.authenticate(gw.device)
    assert result.result == ResultCode.OK
    assert (result.heartbeat_interval_s, result.max_batch_records) == (7, 40)
    assert result.max_frame_size == gw.config.session.max_frame_size
    client.send(Heartbeat(0, 0, 0))
    ack = await client.expect(Ack)
    assert ack.ref_type == Heartbeat.msg_type and ack.results == ()
    assert gw.gateway.sessions.keys() == {gw.device.serial}


async def test_wrong_secret_gets_bad_signature_then_close(gw):
    client = await gw.raw()
    result = await client.authenticate(DeviceCredentials(gw.device.serial, os.urandom(32)))
    assert result.result == ResultCode.BAD_SIGNATURE
    assert await client.closed_after() == []
    assert gw.gateway.sessions == {}


async def test_unknown_serial_gets_unknown_device_then_close(gw):
    client = await gw.raw()
    result = await client.authenticate(DeviceCredentials("GS-NOBODY", os.urandom(32)))
    assert result.result == ResultCode.UNKNOWN_DEVICE
    assert await client.closed_after() == []


async def test_disabled_device_gets_device_disabled(gw):
    await gw.store.disable_device(gw.device.serial)
    client = await gw.raw()
    result = await client.authenticate(gw.device)
    assert result.result == ResultCode.DEVICE_DISABLED
    assert await client.closed_after() == []
    await gw.store.enable_device(gw.device.serial)
    assert (await (await gw.raw()).authenticate(gw.device)).result == ResultCode.OK


async def test_no_hello_within_the_auth_timeout_closes(start_gateway):
    gw = await start_gateway(auth_timeout_s=0.5)  # the deadline wheel ticks each second: closed within ~2 s
    silent = await gw.raw()
    goodbye = Goodbye(ResultCode.AUTH_TIMEOUT, 0, seq=1)
    assert await silent.closed_after() == [goodbye]  # told why, then closed
    # half an exchange is no better: HELLO answered, AUTH never sent
    halfway = await gw.raw()
    halfway.send(Hello(gw.device.serial, "t", "m", "f", 1, 0))
    assert isinstance(await halfway.receive(), Challenge)
    assert await halfway.closed_after() == [goodbye._replace(seq=2)]
    assert len(gw.gateway.links) == 0


async def test_messages_before_auth_get_auth_required(gw):
    client = await gw.raw()
    seq = client.send(Heartbeat(0, 0, 0))
    nack = await client.expect(Nack)
    assert (nack.ref_seq, nack.ref_type, nack.result) == (seq, Heartbeat.msg_type, ResultCode.AUTH_REQUIRED)
    seq = client.send(Punch.of(make_punch(1, 1, 0)))
    nack = await client.expect(Nack)
    assert (nack.ref_seq, nack.result) == (seq, ResultCode.AUTH_REQUIRED)
    assert await gw.store.count_punches() == 0
    # still allowed to authenticate afterwards
    assert (await client.authenticate(gw.device)).result == ResultCode.OK


async def test_repeated_failures_lock_the_serial_at_its_address_only(gw):
    """Lockout is per (serial, address): the failing serial is locked here, the other
    terminals at this address and the same serial elsewhere are not (test_lockout.py has
    the rest: the address scope, retry-after, audit)."""
    other = await gw.add_device("GS-TEST-000002")
    wrong = DeviceCredentials(gw.device.serial, os.urandom(32))
    threshold = gw.gateway.guard.pair_failures
    for _ in range(threshold):
        client = await gw.raw()
        assert (await client.authenticate(wrong)).result == ResultCode.BAD_SIGNATURE
        await client.closed_after()
    locked_until = gw.gateway.guard.locked_until("127.0.0.1", gw.device.serial, gw.gateway.now_ms())
    assert locked_until > 0
    client = await gw.raw()
    refused = await client.authenticate(gw.device)  # the right secret no longer helps, here
    assert refused.result == ResultCode.LOCKED_OUT and refused.retry_after_s > 0
    assert await client.closed_after() == []
    # retrying while locked out does not lengthen the lock
    assert gw.gateway.guard.locked_until("127.0.0.1", gw.device.serial, gw.gateway.now_ms()) == locked_until
    assert (await (await gw.raw()).authenticate(other)).result == ResultCode.OK  # same address, other serial
    elsewhere = await gw.raw(local_addr="127.0.0.2")
    assert (await elsewhere.authenticate(gw.device)).result == ResultCode.OK  # same serial, other address


async def test_second_session_takes_over_the_first(gw):
    first = await gw.raw_authenticated()
    second = await gw.raw_authenticated()
    received = await first.closed_after()
    assert received and isinstance(received[-1], Goodbye), received
    assert received[-1].reason == ResultCode.TAKEOVER
    # the newer session keeps working and is the registered one
    seq = second.send(Punch.of(make_punch(5, 5, _now())))
    ack = await second.expect(Ack)
    assert ack.ref_seq == seq and [r.result for r in ack.results] == [ResultCode.OK]
    assert gw.gateway.sessions[gw.device.serial] is not None
    assert len(gw.gateway.sessions) == 1
    assert await gw.store.count_punches(gw.device.serial) == 1


def _now() -> int:
    return time.time_ns() // 1_000_000
