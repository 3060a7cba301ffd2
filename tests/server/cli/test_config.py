"""`lmg config show`: every key's effective value and its source, secrets masked, and the
settings that would not start the gateway named with where they came from."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from lmg.server.cli import main
from lmg.server.settings import KEYS


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("LMG_CONFIG", *(spec.env for spec in KEYS.values())):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def show(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["config", "show", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_key_with_its_value_and_source(clean_env, capsys, tmp_path):
    config = tmp_path / "lmg.toml"
    config.write_text('heartbeat_interval_s = 20\ntcp = "0.0.0.0:7000"\nws = "0.0.0.0:7001"\n')
    clean_env.setenv("LMG_CONFIG", str(config))
    clean_env.setenv("LMG_TCP", "0.0.0.0:8000")
    clean_env.setenv("LMG_GROUP_COMMIT_MAX_RECORDS", "2000")
    code, out, err = show(capsys, "--tcp", "127.0.0.1:9000", "--json")
    assert (code, err) == (0, "")
    shown = orjson.loads(out)
    assert shown["config_file"] == str(config) and shown["error"] is None
    settings = shown["settings"]
    assert list(settings) == list(KEYS)
    assert settings["tcp"] == {"value": "127.0.0.1:9000", "source": "flag", "where": "--tcp"}
    assert settings["group_commit_max_records"] == {"value": 2000, "source": "environment",
                                                    "where": "LMG_GROUP_COMMIT_MAX_RECORDS"}
    assert settings["heartbeat_interval_s"] == {"value": 20, "source": "file", "where": str(config)}
    assert settings["ws"]["source"] == "file"
    assert settings["admin"] == {"value": "127.0.0.1:9180", "source": "default", "where": None}
    code, out, _ = show(capsys, "--tcp", "127.0.0.1:9000")
    assert code == 0
    assert f"config file: {config} (from LMG_CONFIG)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line and line.split()[0] in KEYS}
    assert set(lines) == set(KEYS)
    assert lines["tcp"].split()[1:] == ["'127.0.0.1:9000'", "flag", "--tcp"]
    assert lines["heartbeat_interval_s"].split()[1:] == ["20", "file", str(config)]
    assert lines["group_commit_max_records"].split()[1:] == ["2000", "environment", "LMG_GROUP_COMMIT_MAX_RECORDS"]
    assert lines["max_connections"].split()[1:] == ["100000", "default"]


def test_secrets_and_url_passwords_are_never_printed(clean_env, capsys):
    clean_env.setenv("LMG_FORWARD_APP_SECRET", "s3cret-from-the-province")
    clean_env.setenv("LMG_STORE", "postgresql://gw:db-pa55word@db.internal:5432/lmg?schema=site_7")
    for argv in ((), ("--json",)):
        code, out, _ = show(capsys, "--forward-url", "https://user:url-pa55@prov.example/lmg",
                            "--forward-app-key", "GS-0001", *argv)
        assert code == 0
        for secret in ("s3cret-from-the-province", "db-pa55word", "url-pa55"):
            assert secret not in out
        assert "<hidden>" in out and "gw:***@db.internal" in out and "user:***@prov.example" in out
    clean_env.delenv("LMG_FORWARD_APP_SECRET")
    code, out, _ = show(capsys, "--json")
    assert orjson.loads(out)["settings"]["forward_app_secret"]["value"] == ""  # not set: say so
    clean_env.setenv("LMG_STORE", "mysql://gw:db-pa55word@db.internal/lmg")  # unusable, still masked
    code, out, err = show(capsys)
    assert code == 2 and "db-pa55word" not in out + err and "store URL 'mysql://gw:***@db.internal" in err


def test_the_store_in_use_is_named(clean_env, capsys, tmp_path):
    code, out, _ = show(capsys, "--data-dir", str(tmp_path))
    assert code == 0 and f"store: SQLite at {tmp_path.resolve() / 'lmg.db'}" in out
    assert not (tmp_path / "lmg.db").exists()  # it opens nothing


def test_settings_that_would_not_start_are_shown_then_refused(clean_env, capsys):
    clean_env.setenv("LMG_TLS_CERT", "/etc/lmg/cert.pem")
    code, out, err = show(capsys)
    assert code == 2
    assert "environment LMG_TLS_CERT" in out  # the table says where the culprit came from
    assert "would not start the gateway" in err and "tls_cert and tls_key go together" in err


def test_a_value_that_cannot_be_read_names_its_source(clean_env, capsys, tmp_path):
    clean_env.setenv("LMG_MAX_CONNECTIONS", "lots")
    code, out, err = show(capsys)
    assert (code, out) == (2, "")
    assert "max_connections = 'lots' from environment variable LMG_MAX_CONNECTIONS: expected int" in err
    clean_env.delenv("LMG_MAX_CONNECTIONS")
    config = tmp_path / "lmg.toml"
    config.write_text("heartbeat_intervall_s = 20\n")
    code, _, err = show(capsys, "--config", str(config))
    assert code == 2 and "unknown key 'heartbeat_intervall_s'" in err
    code, _, err = show(capsys, "--config", str(Path(tmp_path) / "missing.toml"))
    assert code == 2 and "does not exist" in err
