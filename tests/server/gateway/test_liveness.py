"""Heartbeats, the silence timeout, and presence written in batches (not per heartbeat)."""

from __future__ import annotations

import asyncio

from lmg.protocol import Ack, DeviceStatus, Goodbye, Heartbeat, ResultCode

from tests.server.conftest import StoreProxy, wait_for


class PresenceSpy(StoreProxy):
    """Counts `update_presence` calls and keeps what they wrote."""

    def __init__(self, inner):
        super().__init__(inner)
        self.presence_calls: list[list] = []

    async def update_presence(self, updates):
        self.presence_calls.append(list(updates))
        return await self.inner.update_presence(updates)


async def test_heartbeats_are_acked_with_their_seq(gw):
    client = await gw.raw_authenticated()
    for _ in range(3):
        seq = client.send(Heartbeat(1, 2, 3))
        ack = await client.expect(Ack)
        assert (ack.ref_seq, ack.ref_type, ack.results) == (seq, Heartbeat.msg_type, ())


async def test_silent_session_is_closed_after_three_intervals(start_gateway):
    # a long auth timeout: the session's deadline moves earlier when it authenticates
    gw = await start_gateway(heartbeat_interval_s=1, auth_timeout_s=60)
    silent = await gw.raw_authenticated()
    talking = await gw.raw_authenticated(await gw.add_device("GS-TEST-000002"))
    acked = 0

    async def keep_talking():
        nonlocal acked
        while True:
            talking.send(Heartbeat(0, 0, 0))
            await talking.expect(Ack)
            acked += 1
            await asyncio.sleep(0.3)

    talker = asyncio.get_running_loop().create_task(keep_talking())
    try:
        received = await silent.closed_after()  # bounded by WAIT_S, well under the 60 s auth timeout
    finally:
        talker.cancel()
    assert acked > 0
    assert [type(m) for m in received] == [Goodbye]
    assert received[0].reason == ResultCode.HEARTBEAT_TIMEOUT
    talking.send(Heartbeat(0, 0, 0))
    assert isinstance(await talking.receive(), Ack)
    assert set(gw.gateway.sessions) == {"GS-TEST-000002"}


async def test_presence_reaches_the_store_in_batches_not_per_heartbeat(start_gateway):
    gw = await start_gateway(wrap=PresenceSpy, presence_flush_s=0.3)
    spy = gw.gateway.store
    serial = gw.device.serial
    assert (await gw.store.get_device(serial)).online is False
    client = await gw.raw_authenticated()
    heartbeats = 200
    for _ in range(heartbeats):
        client.send(Heartbeat(0, 0, 0))
    for _ in range(heartbeats):
        await client.expect(Ack)

    async def online():
        device = await gw.store.get_device(serial)
        return device.online and device.last_seen_ms is not None and device.firmware == "test-1.0"

    await wait_for(online, what="online, last_seen and firmware in the store")
    calls = len(spy.presence_calls)
    assert 1 <= calls < heartbeats / 10, f"{calls} presence writes for {heartbeats} heartbeats"
    assert all(len({p.serial for p in batch}) == len(batch) for batch in spy.presence_calls), "one row per device per flush"
    seen = (await gw.store.get_device(serial)).last_seen_ms

    await client.close()

    async def offline():
        device = await gw.store.get_device(serial)
        return not device.online and device.last_seen_ms >= seen

    await wait_for(offline, what="online=false after the disconnect")


async def test_firmware_survives_later_heartbeats_and_a_status_leaves_the_synced_roster_version(start_gateway):
    gw = await start_gateway(presence_flush_s=0.3)
    await gw.store.set_device_roster_version(gw.device.serial, 12)  # its last complete sync
    client = await gw.raw_authenticated()
    client.send(DeviceStatus(100, 1000, 0, 0, 17, 3, 0, 0, 250))
    client.send(Heartbeat(0, 0, 0))  # in the same flush window as the status
    await client.expect(Ack)
    await client.expect(Ack)

    async def recorded():
        device = await gw.store.get_device(gw.device.serial)
        return device.firmware == "test-1.0" and device.last_seen_ms is not None and device

    device = await wait_for(recorded, what="the firmware in the store")
    # the terminal's own figure (17) does not replace the version of its last complete sync,
    # which the downlink decides deltas against (docs/downlink.md)
    assert device.roster_version == 12


async def test_a_failed_presence_flush_is_retried_with_the_newest_state(start_gateway):
    class FailingOnce(PresenceSpy):
        async def update_presence(self, updates):
            self.presence_calls.append(list(updates))
            if len(self.presence_calls) == 1:
                from lmg.storage import StoreUnavailable

                raise StoreUnavailable("injected: disk full")
            return await self.inner.update_presence(updates)

    gw = await start_gateway(wrap=FailingOnce, presence_flush_s=0.2)
    client = await gw.raw_authenticated()
    client.send(Heartbeat(0, 0, 0))
    await client.expect(Ack)

    async def online():
        return (await gw.store.get_device(gw.device.serial)).online

    await wait_for(online, what="presence written after the failed flush")
    assert len(gw.gateway.store.presence_calls) >= 2


def test_presence_merges_heard_times_into_state_changes():
    """`seen` only stores a time; the flush merges it into the state changes noted since."""
    from lmg.server.settings import Settings
    from lmg.server.gateway.gateway import Gateway
    from lmg.server.gateway.session import Authenticated
    from lmg.storage import Presence

    class Link:
        peer_host = "127.0.0.1"
        transport_name = "tcp"
        serial = "AUTH-THEN-HEARD"
        project_code = None  # a device in no project, without commands: no downlink work
        downlink = None
        wheel_buckets: list[int] = []

        @staticmethod
        def deadline_ms():
            return 0

        @staticmethod
        def log_fields():
            return {"serial": "AUTH-THEN-HEARD", "session": "00000000", "peer": "127.0.0.1:1"}

    clock = [1000]
    gateway = Gateway(Settings(), store=None, clock_ms=lambda: clock[0])
    gateway.authenticated(Link, Authenticated("AUTH-THEN-HEARD", "fw-2"))
    gateway.seen("AUTH-THEN-HEARD", 1500)
    gateway.seen("HEARD-ONLY", 1200)
    gateway.seen("HEARD-ONLY", 1300)
    gateway.seen("HEARD-THEN-GONE", 1100)
    gateway.presence.note("HEARD-THEN-GONE", 1400, False)
    batch = {p.serial: p for p in gateway.presence.take()}
    assert batch == {
        # firmware and address kept, newest time
        "AUTH-THEN-HEARD": Presence("AUTH-THEN-HEARD", 1500, True, "fw-2", None, "127.0.0.1"),
        "HEARD-ONLY": Presence("HEARD-ONLY", 1300, True),
        "HEARD-THEN-GONE": Presence("HEARD-THEN-GONE", 1400, False),  # gone offline stays offline
    }
    assert gateway.presence.take() == []  # taken once
