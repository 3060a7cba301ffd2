"""The admin listener: /healthz always answers while the process lives; /readyz tells the truth."""

from __future__ import annotations

import asyncio
import time

import orjson

from lmg.protocol import Ack, Goodbye, Nack, Punch, ResultCode
from lmg.simulators.terminal import make_punch
from lmg.storage import StoreUnavailable

from tests.server.conftest import WAIT_S, StoreProxy, wait_for


async def http(port: int, path: str, method: str = "GET", *, connection=None) -> tuple[int, dict]:
    """One request on a fresh connection (or on `connection`, opened earlier); (status, JSON body)."""
    reader, writer = connection or await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT_S)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    response = await asyncio.wait_for(reader.read(), WAIT_S)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


class SwitchableStore(StoreProxy):
    """Punch commits fail while `failing` is set; `gate` (when set up) holds them."""

    def __init__(self, inner):
        super().__init__(inner)
        self.failing = False
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def store_punches(self, records):
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise StoreUnavailable("injected: disk I/O error")
        return await self.inner.store_punches(records)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_healthz_and_readyz_when_up(gw):
    assert await http(gw.admin_port, "/healthz") == (200, {"status": "alive"})
    status, body = await http(gw.admin_port, "/readyz")
    assert status == 200 and body["status"] == "ready"
    await gw.raw_authenticated()
    status, body = await http(gw.admin_port, "/readyz?verbose=1")
    assert status == 200 and body["sessions"] == 1
    assert (await http(gw.admin_port, "/nothing-here"))[0] == 404
    assert (await http(gw.admin_port, "/healthz", "POST"))[0] == 405


async def test_readyz_is_503_after_a_failed_store_write_until_one_succeeds(start_gateway):
    gw = await start_gateway(wrap=SwitchableStore)
    store = gw.gateway.store
    client = await gw.raw_authenticated()
    store.failing = True
    client.send(Punch.of(make_punch(1, 1, now_ms())))
    assert (await client.expect(Nack)).result == ResultCode.STORE_UNAVAILABLE
    status, body = await http(gw.admin_port, "/readyz")
    assert status == 503 and "store write failed" in body["reason"], body
    assert (await http(gw.admin_port, "/healthz"))[0] == 200  # alive, just not ready
    store.failing = False
    client.send(Punch.of(make_punch(1, 1, now_ms())))
    assert (await client.expect(Ack)).results[0].result == ResultCode.OK
    assert (await http(gw.admin_port, "/readyz"))[0] == 200
    counters = gw.gateway.counters
    assert (counters["store_failures"], counters["punches_committed"]) == (1, 1)


async def test_readyz_is_503_during_shutdown(start_gateway):
    gw = await start_gateway(wrap=SwitchableStore, shutdown_grace_s=30)
    store = gw.gateway.store
    store.gate = asyncio.Event()
    client = await gw.raw_authenticated()
    client.send(Punch.of(make_punch(1, 1, now_ms())))
    await asyncio.wait_for(store.entered.wait(), WAIT_S)
    probe = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", gw.admin_port), WAIT_S)
    shutdown = asyncio.get_running_loop().create_task(gw.gateway.shutdown())
    await wait_for(lambda: gw.gateway.stopping, what="shutdown to begin")
    status, body = await http(gw.admin_port, "/readyz", connection=probe)  # accepted before the listener closed
    assert status == 503 and body["reason"] == "shutting down"
    assert not shutdown.done()  # it waits for the commit in flight
    store.gate.set()
    ack = await client.expect(Ack)  # the in-flight punch is still acknowledged
    assert ack.results[0].result == ResultCode.OK
    received = await client.closed_after()
    assert [(type(m), m.reason) for m in received] == [(Goodbye, ResultCode.SHUTTING_DOWN)]
    await asyncio.wait_for(shutdown, WAIT_S)
