"""Settings: one object, defaults < TOML < LMG_* < flags, and clear errors."""

from __future__ import annotations

import pytest

from lmg.server.settings import KEYS, Settings, SettingsError, load_settings


def test_defaults_are_documented_values():
    config = load_settings({}, {})
    assert config == Settings()
    assert config.store_url().startswith("sqlite:///") and config.store_url().endswith("lmg-data/lmg.db")


def test_precedence_file_then_env_then_flags(tmp_path):
    path = tmp_path / "lmg.toml"
    path.write_text('tcp = "127.0.0.1:1"\nheartbeat_interval_s = 10\nws = "127.0.0.1:2"\n')
    config = load_settings({"tcp": "127.0.0.1:3"}, {"LMG_HEARTBEAT_INTERVAL_S": "20"}, str(path))
    assert (config.gateway.tcp, config.session.heartbeat_interval_s, config.gateway.ws) == ("127.0.0.1:3", 20,
                                                                                            "127.0.0.1:2")


def test_config_file_from_the_environment(tmp_path):
    path = tmp_path / "lmg.toml"
    path.write_text("max_batch_records = 100\n")
    assert load_settings({}, {"LMG_CONFIG": str(path)}).session.max_batch_records == 100


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
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(flags, env)


def test_unknown_key_in_the_file_is_refused(tmp_path):
    path = tmp_path / "lmg.toml"
    path.write_text("heartbeat = 5\n")
    with pytest.raises(SettingsError, match="unknown key 'heartbeat'"):
        load_settings({}, {}, str(path))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({}, {}, str(tmp_path / "nope.toml"))


def test_empty_listener_turns_it_off():
    assert load_settings({"ws": ""}, {}).gateway.ws == ""


def test_session_limits_follow_the_config():
    limits = load_settings({"auth_timeout_s": 2.5, "max_future_skew_s": 60}, {}).session
    assert limits.auth_timeout_ms == 2500 and limits.max_future_skew_ms == 60_000


def test_one_file_serves_the_gateway_and_the_forwarder(tmp_path):
    path = tmp_path / "lmg.toml"
    path.write_text('heartbeat_interval_s = 15\nforward_batch_records = 200\nforward_url = "http://127.0.0.1:1"\n'
                    'forward_app_key = "k"\nforward_app_secret = "s"\n')
    settings = load_settings({}, {}, str(path))
    assert settings.session.heartbeat_interval_s == 15 and settings.forward.url == "http://127.0.0.1:1"
    assert settings.forward.batch_records == 200 and settings.forward.app_key == "k"
    path.write_text("forward_batch_recs = 200\n")
    with pytest.raises(SettingsError, match="unknown key 'forward_batch_recs'"):
        load_settings({}, {}, str(path))


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
    config = load_settings({"group_commit_max_records": "2000", "group_commit_max_delay_ms": "1.5"}, env={})
    store = config.store
    assert (store.group_commit_max_records, store.group_commit_max_delay_ms) == (2000, 1.5)
    with pytest.raises(SettingsError, match="group_commit_max_records"):
        load_settings({"group_commit_max_records": "0"}, env={})


async def test_serve_opens_the_store_with_the_group_commit_keys(tmp_path, monkeypatch):
    import lmg.server.gateway.gateway as gateway_module
    seen = {}

    async def fake_open_store(url, *, data_dir, config):
        seen["config"] = config
        raise RuntimeError("stop here")

    monkeypatch.setattr(gateway_module, "open_store", fake_open_store)
    config = load_settings({"data_dir": str(tmp_path), "group_commit_max_records": "1234"}, env={})
    with pytest.raises(RuntimeError, match="stop here"):
        await gateway_module.serve(config)
    assert seen["config"].group_commit_max_records == 1234


def test_every_key_has_a_reason_and_one_section():
    assert len(KEYS) == len({spec.name for spec in KEYS.values()})
    assert all(len(spec.why) > 10 for spec in KEYS.values())
    sections = {spec.section for spec in KEYS.values()}
    assert sections == {"gateway", "session", "store", "forward"}
    # keys that used to be restated elsewhere are defined once, in their section
    assert (KEYS["max_batch_records"].section, KEYS["group_commit_max_records"].section,
            KEYS["forward_concurrency"].section) == ("session", "store", "forward")


def test_session_limits_and_store_config_are_sections_of_the_settings_not_copies():
    from lmg.server.gateway.session import SessionLimits
    from lmg.storage import StoreConfig

    assert Settings().session == SessionLimits() and Settings().store == StoreConfig()
    assert KEYS["heartbeat_interval_s"].default == SessionLimits().heartbeat_interval_s


def test_store_section_keys_are_settings_too():
    settings = load_settings({}, {"LMG_SQLITE_READERS": "3", "LMG_PHOTO_MAX_BYTES": "1000000"})
    assert (settings.store.sqlite_readers, settings.store.photo_max_bytes) == (3, 1_000_000)


def test_a_secret_is_never_shown():
    settings = Settings.from_keys({"forward_url": "http://p:1", "forward_app_key": "k",
                                   "forward_app_secret": "very-secret-9"})
    assert "very-secret-9" not in repr(settings)
    assert KEYS["forward_app_secret"].shown_default() == "<hidden>"


def test_serve_help_explains_every_flag(capsys):
    from lmg.server.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for spec in KEYS.values():
        assert spec.flag in text
        assert " ".join(spec.why.split())[:40] in text, spec.name


def test_docs_settings_table_is_current():
    from pathlib import Path

    from lmg.server.settings import settings_table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text(encoding="utf-8")
    assert settings_table() in doc, "docs/settings.md is stale: run `python -m lmg.server.settings docs/settings.md`"


def test_the_settings_import_no_cycle():
    import subprocess
    import sys

    for module in ("lmg.server.settings", "lmg.server.forwarding.config", "lmg.server.gateway.session",
                   "lmg.storage.config"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_presence_stale_ms_below_the_heartbeat_grace_is_refused():
    # Devices would flicker offline between heartbeats on every node's admin API.
    with pytest.raises(SettingsError, match="presence_stale_ms = 60000 would show live devices offline.*95000 ms"):
        Settings.from_keys({"presence_stale_ms": 60_000})
    assert Settings.from_keys({"presence_stale_ms": 40_000, "heartbeat_interval_s": 10, "presence_flush_s": 1.0})
