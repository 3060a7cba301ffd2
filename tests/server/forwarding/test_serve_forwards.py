"""`lmg serve` forwards by itself when forward_url is set, and stops the forwarder on shutdown."""

from __future__ import annotations

import pytest

from lmg.server.gateway.gateway import Gateway
from lmg.server.settings import Settings, SettingsError, load_settings
from lmg.simulators.province import held_records

from tests.server.forwarding.conftest import APP_KEY, APP_SECRET, add_punches, drained


async def test_the_gateway_runs_the_forwarder_when_configured(store, province, tmp_path):
    sim = await province()
    config = load_settings(
        {"tcp": "127.0.0.1:0", "ws": "", "admin": "", "data_dir": str(tmp_path),
         "forward_url": sim.url, "forward_app_key": APP_KEY, "forward_app_secret": APP_SECRET},
        env={},
    )
    gateway = Gateway(config, store)
    await punches_reach_the_province_through(gateway, store, sim, devices=3, per_device=10)
    assert gateway._forwarder.done()


async def punches_reach_the_province_through(gateway, store, sim, *, devices: int, per_device: int) -> None:
    """Start `gateway`, store punches, check its forwarder delivered them all, shut it down."""
    await gateway.start()
    try:
        sent = await add_punches(store, devices=devices, per_device=per_device)
        await drained(store, what="the gateway's forwarder to drain the outbox")
        assert {(serial, n) for serial, n, _ in held_records(sim.data_dir)} == set(sent)
    finally:
        await gateway.shutdown()


async def test_no_forward_url_means_no_forwarder(store, tmp_path):
    gateway = Gateway(Settings.from_keys(dict(tcp="127.0.0.1:0", ws="", admin="", data_dir=str(tmp_path))), store)
    await gateway.start()
    try:
        await add_punches(store, devices=1, per_device=3)
        assert gateway._forwarder is None
        assert (await store.outbox_status(0)).pending == 3  # kept for a forwarder to come
    finally:
        await gateway.shutdown()


def test_a_bad_forward_key_is_refused_at_start():
    with pytest.raises(SettingsError, match="forward"):
        load_settings({"forward_url": "not a url", "forward_app_key": "k", "forward_app_secret": "s"}, env={})


async def test_the_gateway_runs_the_forward_section_with_its_tuning_keys(store, province, tmp_path, monkeypatch):
    # `lmg serve` must run the forwarder with every forward_* key of its settings, not
    # only the url, key and secret.
    from lmg.server.forwarding import forwarder

    sim = await province()
    settings = Settings.from_keys({"tcp": "127.0.0.1:0", "ws": "", "admin": "", "data_dir": str(tmp_path),
                                   "forward_url": sim.url, "forward_app_key": APP_KEY,
                                   "forward_app_secret": APP_SECRET, "forward_idle_poll_s": 0.05,
                                   "forward_status_interval_s": 0, "forward_concurrency": 2})
    seen = []
    real = forwarder.run_forwarder

    async def spy(store, config, stop, **kwargs):  # kwargs: the gateway's ForwarderStats, for its metrics
        seen.append(config)
        return await real(store, config, stop, **kwargs)

    monkeypatch.setattr(forwarder, "run_forwarder", spy)
    await punches_reach_the_province_through(Gateway(settings, store), store, sim, devices=2, per_device=3)
    assert [(c.idle_poll_s, c.status_interval_s, c.concurrency) for c in seen] == [(0.05, 0, 2)]


def test_lmg_serve_reads_the_forwarders_tuning_keys_from_its_file_and_environment(tmp_path):
    config_file = tmp_path / "lmg.toml"
    config_file.write_text('tcp = "127.0.0.1:9100"\nforward_url = "http://province:8080"\n'
                           'forward_app_key = "file-key"\nforward_app_secret = "file-secret"\n'
                           'forward_concurrency = 5\n')
    env = {"LMG_FORWARD_LATE_PHOTO_S": "2.5", "LMG_FORWARD_APP_KEY": "env-key"}
    forwarding = load_settings({"forward_app_secret": "flag-secret"}, env=env, config_file=str(config_file)).forward
    assert (forwarding.url, forwarding.app_key, forwarding.app_secret) == ("http://province:8080", "env-key",
                                                                           "flag-secret")
    assert (forwarding.concurrency, forwarding.late_photo_s) == (5, 2.5)
    with pytest.raises(SettingsError, match="forward_late_photo_s must be greater than 0"):
        load_settings({}, env={"LMG_FORWARD_LATE_PHOTO_S": "0"}, config_file=str(config_file))
