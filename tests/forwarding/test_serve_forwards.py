"""`lmg serve` forwards by itself when forward_url is set, and stops the forwarder on shutdown."""

from __future__ import annotations

import pytest

from server.config import ConfigError, GatewayConfig, load_config
from server.gateway import Gateway
from simulators.province import held_records

from .conftest import APP_KEY, APP_SECRET, add_punches, drained


async def test_the_gateway_runs_the_forwarder_when_configured(store, province, tmp_path):
    sim = await province()
    config = load_config(
        {"tcp": "127.0.0.1:0", "ws": "", "admin": "", "data_dir": str(tmp_path),
         "forward_url": sim.url, "forward_app_key": APP_KEY, "forward_app_secret": APP_SECRET},
        env={},
    )
    gateway = Gateway(config, store)
    await gateway.start()
    try:
        sent = await add_punches(store, devices=3, per_device=10)
        await drained(store, what="the gateway's forwarder to drain the outbox")
        assert {(serial, n) for serial, n, _ in held_records(sim.data_dir)} == set(sent)
    finally:
        await gateway.shutdown()
    assert gateway._forwarder.done()


async def test_no_forward_url_means_no_forwarder(store, tmp_path):
    gateway = Gateway(GatewayConfig(tcp="127.0.0.1:0", ws="", admin="", data_dir=str(tmp_path)), store)
    await gateway.start()
    try:
        await add_punches(store, devices=1, per_device=3)
        assert gateway._forwarder is None
        assert (await store.outbox_status(0)).pending == 3  # kept for a forwarder to come
    finally:
        await gateway.shutdown()


def test_a_bad_forward_key_is_refused_at_start():
    with pytest.raises(ConfigError, match="forward"):
        load_config({"forward_url": "not a url", "forward_app_key": "k", "forward_app_secret": "s"}, env={})
