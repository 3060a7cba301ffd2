"""Configuration: defaults < TOML < LMG_* < flags, and clear errors."""

from __future__ import annotations

import pytest

from lmg.server.settings import ConfigError, GatewayConfig, load_config


def test_defaults_are_documented_values():
    config = load_config({}, {})
    assert config == GatewayConfig()
    assert config.store_url().startswith("sqlite:///") and config.store_url().endswith("lmg-data/lmg.db")


def test_precedence_file_then_env_then_flags(tmp_path):
    path = tmp_path / "lmg.toml"
    path.write_text('tcp = "127.0.0.1:1"\nheartbeat_interval_s = 10\nws = "127.0.0.1:2"\n')
    config = load_config({"tcp": "127.0.0.1:3"}, {"LMG_HEARTBEAT_INTERVAL_S": "20"}, str(path))
    assert (config.tcp, config.heartbeat_interval_s, config.ws) == ("127.0.0.1:3", 20, "127.0.0.1:2")


def test_config_file_from_the_environment(tmp_path):
    path = tmp_path / "lmg.toml"
    path.write_text("max_batch_records = 100\n")
    assert load_config({}, {"LMG_CONFIG": str(path)}).max_batch_records == 100


@pytest.mark.parametrize(
    "flags, env, message",
    [
        ({"tcp": "nonsense"}, {}, "tcp = 'nonsense': use HOST:PORT"),
        ({}, {"LMG_HEARTBEAT_INTERVAL_S": "soon"}, "environment variable LMG_HEARTBEAT_INTERVAL_S: expected int"),
        ({"tls_cert": "a.pem"}, {}, "tls_cert and tls_key go together"),
        ({"max_batch_records": 5000}, {}, "cannot fit in max_frame_size"),
        ({"accept_rate": 0}, {}, "accept_rate must be greater than 0"),
        ({"log_level": "loud"}, {}, "log_level must be"),
    ],
)
def test_bad_values_name_the_key(flags, env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(flags, env)


def test_unknown_key_in_the_file_is_refused(tmp_path):
    path = tmp_path / "lmg.toml"
    path.write_text("heartbeat = 5\n")
    with pytest.raises(ConfigError, match="unknown key 'heartbeat'"):
        load_config({}, {}, str(path))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, {}, str(tmp_path / "nope.toml"))


def test_empty_listener_turns_it_off():
    assert load_config({"ws": ""}, {}).ws == ""


def test_session_limits_follow_the_config():
    limits = load_config({"auth_timeout_s": 2.5, "max_future_skew_s": 60}, {}).session_limits()
    assert limits.auth_timeout_ms == 2500 and limits.max_future_skew_ms == 60_000


def test_one_file_serves_the_gateway_and_the_forwarder(tmp_path):
    from lmg.server.forwarding.config import load_forwarder_config

    path = tmp_path / "lmg.toml"
    path.write_text('heartbeat_interval_s = 15\nforward_batch_records = 200\nforward_url = "http://127.0.0.1:1"\n'
                    'forward_app_key = "k"\nforward_app_secret = "s"\n')
    gateway = load_config({}, {}, str(path))
    assert gateway.heartbeat_interval_s == 15 and gateway.forward_url == "http://127.0.0.1:1"
    forwarder = load_forwarder_config({}, {}, str(path))
    assert forwarder.batch_records == 200 and forwarder.app_key == "k"
    path.write_text("forward_batch_recs = 200\n")
    with pytest.raises(ConfigError, match="unknown key 'forward_batch_recs'"):
        load_forwarder_config({}, {}, str(path))


def test_serve_tunes_the_collector_for_many_small_tuples():
    import gc

    from lmg.server.gateway.collector import GC_THRESHOLDS, tune_collector

    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # start-up objects are no longer walked by every collection
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_group_commit_keys_reach_the_store_and_are_checked():
    config = load_config({"group_commit_max_records": "2000", "group_commit_max_delay_ms": "1.5"}, env={})
    store = config.store_config()
    assert (store.group_commit_max_records, store.group_commit_max_delay_ms) == (2000, 1.5)
    with pytest.raises(ConfigError, match="group_commit_max_records"):
        load_config({"group_commit_max_records": "0"}, env={})


async def test_serve_opens_the_store_with_the_group_commit_keys(tmp_path, monkeypatch):
    import lmg.server.gateway.gateway as gateway_module
    seen = {}

    async def fake_open_store(url, *, data_dir, config):
        seen["config"] = config
        raise RuntimeError("stop here")

    monkeypatch.setattr(gateway_module, "open_store", fake_open_store)
    config = load_config({"data_dir": str(tmp_path), "group_commit_max_records": "1234"}, env={})
    with pytest.raises(RuntimeError, match="stop here"):
        await gateway_module.serve(config)
    assert seen["config"].group_commit_max_records == 1234
