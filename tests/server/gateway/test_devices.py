"""DeviceLookup (server/devices.py): HELLOs arriving together share one store read, and
nothing is cached: a device disabled or rotated, even by another process, is seen at once."""

from __future__ import annotations

import asyncio

import pytest

from lmg.protocol import Hello, ResultCode
from lmg.server.gateway.devices import DeviceLookup
from lmg.simulators.terminal import DeviceCredentials
from lmg.storage import Device, StoreUnavailable, open_store

from tests.server.conftest import StoreProxy


def device(serial: str, enabled: bool = True) -> Device:
    return Device(serial, bytes(32), "P", "620100", enabled)


class FakeStore:
    """`get_devices` over a dict; records each call; optionally held until `release` is set."""

    def __init__(self, devices, *, hold: bool = False):
        self.devices = {d.serial: d for d in devices}
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.in_flight = self.most_in_flight = 0
        self.fail_next: Exception | None = None

    async def get_devices(self, serials):
        self.calls.append(list(serials))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            if self.fail_next is not None:
                error, self.fail_next = self.fail_next, None
                raise error
            return {s: self.devices[s] for s in serials if s in self.devices}
        finally:
            self.in_flight -= 1


async def test_lookups_of_one_pass_share_one_read():
    store = FakeStore([device("A"), device("B", enabled=False)])
    lookup = DeviceLookup(store)
    found = await asyncio.gather(*(lookup.get(s) for s in ["A", "B", "GHOST", "A"]))
    assert found == [store.devices["A"], store.devices["B"], None, store.devices["A"]]
    assert store.calls == [["A", "B", "GHOST"]]  # one read; a serial asked twice is read once


async def test_lookups_arriving_while_reads_run_wait_and_then_go_together():
    store = FakeStore([device(f"S{n}") for n in range(10)], hold=True)
    lookup = DeviceLookup(store, max_in_flight=1)
    first = asyncio.ensure_future(lookup.get("S0"))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(lookup.get(f"S{n}")) for n in range(1, 10)]
    await asyncio.sleep(0.01)
    assert store.calls == [["S0"]]  # the others wait for the slot
    store.release.set()
    await asyncio.gather(first, *later)
    assert store.calls == [["S0"], [f"S{n}" for n in range(1, 10)]]
    assert store.most_in_flight == 1


async def test_reads_are_bounded_in_number_and_size():
    store = FakeStore([device(f"S{n}") for n in range(25)], hold=True)
    lookup = DeviceLookup(store, max_in_flight=2, max_batch=10)
    waiting = [asyncio.ensure_future(lookup.get(f"S{n}")) for n in range(25)]
    await asyncio.sleep(0.01)
    assert [len(c) for c in store.calls] == [10, 10]  # two slots, ten serials each
    store.release.set()
    assert [d.serial for d in await asyncio.gather(*waiting)] == [f"S{n}" for n in range(25)]
    assert [len(c) for c in store.calls] == [10, 10, 5]
    assert store.most_in_flight == 2


async def test_a_failed_read_fails_its_callers_and_the_next_read_is_tried_afresh():
    store = FakeStore([device("A"), device("B")])
    store.fail_next = StoreUnavailable("disk on fire")
    lookup = DeviceLookup(store)
    results = await asyncio.gather(lookup.get("A"), lookup.get("B"), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results)
    # re-raising the one shared exception must not pile every caller's frames onto it
    depth = len(list(_frames(results[1].__traceback__)))
    assert depth <= len(list(_frames(results[0].__traceback__)))
    assert await lookup.get("A") == store.devices["A"]


def _frames(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


async def test_a_caller_that_stops_waiting_does_not_disturb_the_others():
    store = FakeStore([device("A"), device("B")], hold=True)
    lookup = DeviceLookup(store)
    gone = asyncio.ensure_future(lookup.get("A"))
    stays = asyncio.ensure_future(lookup.get("A"))
    other = asyncio.ensure_future(lookup.get("B"))
    await asyncio.sleep(0.01)
    gone.cancel()
    store.release.set()
    assert (await stays, await other) == (store.devices["A"], store.devices["B"])
    assert gone.cancelled()


def test_limits_below_one_are_refused():
    with pytest.raises(ValueError):
        DeviceLookup(FakeStore([]), max_in_flight=0)
    with pytest.raises(ValueError):
        DeviceLookup(FakeStore([]), max_batch=0)


# --- through the gateway, over sockets ------------------------------------------------------


async def test_a_storm_of_hellos_is_answered_with_few_store_reads(start_gateway):
    calls = []

    class Counting(StoreProxy):
        async def get_devices(self, serials):
            calls.append(len(serials))
            return await self.inner.get_devices(serials)

    gw = await start_gateway(wrap=Counting)
    devices = [gw.device] + [await gw.add_device(f"GS-TEST-{n:06d}") for n in range(2, 101)]
    clients = await asyncio.gather(*(gw.raw() for _ in devices))
    results = await asyncio.gather(*(c.authenticate(d) for c, d in zip(clients, devices)))
    assert [r.result for r in results] == [ResultCode.OK] * len(devices)
    assert sum(calls) == len(devices) and len(calls) < len(devices)


async def test_a_device_disabled_by_another_process_is_refused_at_its_next_hello(gw):
    assert (await (await gw.raw()).authenticate(gw.device)).result == ResultCode.OK
    other = await open_store(gw.config.store_url(), data_dir=gw.config.gateway.data_dir)  # as `lmg device` would
    try:
        await other.disable_device(gw.device.serial)
        assert (await (await gw.raw()).authenticate(gw.device)).result == ResultCode.DEVICE_DISABLED
        await other.enable_device(gw.device.serial)
        new_secret = await other.rotate_device_secret(gw.device.serial)
    finally:
        await other.close()
    assert (await (await gw.raw()).authenticate(gw.device)).result == ResultCode.BAD_SIGNATURE
    rotated = DeviceCredentials(gw.device.serial, new_secret, gw.device.project)
    assert (await (await gw.raw()).authenticate(rotated)).result == ResultCode.OK


async def test_a_failed_lookup_closes_the_connection_without_an_answer(start_gateway):
    class Failing(StoreProxy):
        async def get_devices(self, serials):
            raise StoreUnavailable("database is locked")

    gw = await start_gateway(wrap=Failing)
    client = await gw.raw()
    client.send(Hello(gw.device.serial, "t", "m", "f", 1, 0))
    assert await client.closed_after() == []  # the terminal retries later; no CHALLENGE went out
    assert gw.gateway.counters["closed_store_unavailable"] == 1


async def test_failed_lookups_are_logged_once_per_interval_not_per_hello(start_gateway, caplog):
    # A storm of HELLOs against an unreachable store logged one warning per terminal.
    class Failing(StoreProxy):
        async def get_devices(self, serials):
            raise StoreUnavailable("database is locked")

    gw = await start_gateway(wrap=Failing)
    caplog.set_level("WARNING")
    clients = [await gw.raw() for _ in range(5)]
    for client in clients:
        client.send(Hello(gw.device.serial, "t", "m", "f", 1, 0))
    for client in clients:
        assert await client.closed_after() == []
    warnings = [r for r in caplog.records if "device lookup failed" in r.getMessage()]
    assert len(warnings) == 1 and "database is locked" in warnings[0].getMessage()
    assert gw.gateway.counters["device_lookup_failures"] == 5
