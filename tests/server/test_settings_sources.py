"""`settings.explain`: the values `gather` gives, each with the layer it came from."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from lmg.server.settings import KEYS, SettingsError, Sourced, explain, gather

LAYERS = ("file", "environment", "flag")
SOME_KEYS = ("tcp", "heartbeat_interval_s", "group_commit_max_delay_ms", "metrics", "forward_concurrency")
VALUES = {"tcp": "127.0.0.1:9", "heartbeat_interval_s": 20, "group_commit_max_delay_ms": 3.5, "metrics": False,
          "forward_concurrency": 8}


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(SOME_KEYS), st.sets(st.sampled_from(LAYERS))))
def test_the_last_layer_holding_a_key_wins_as_in_gather(tmp_path_factory, given_in):
    """Any key in any subset of the layers: explain's values are gather's, its source the
    highest layer (flag > environment > file) that holds the key."""
    config = tmp_path_factory.mktemp("cfg") / "lmg.toml"
    config.write_text("".join(f"{k} = {toml_value(VALUES[k])}\n" for k, layers in given_in.items()
                              if "file" in layers))
    env = {KEYS[k].env: str(VALUES[k]).lower() if isinstance(VALUES[k], bool) else str(VALUES[k])
           for k, layers in given_in.items() if "environment" in layers}
    env["LMG_CONFIG"] = str(config)
    flags = {k: str(VALUES[k]) for k, layers in given_in.items() if "flag" in layers}
    explained = explain(flags, env, None)
    assert list(explained) == list(KEYS)
    gathered = gather(flags, env, None)
    for name, sourced in explained.items():
        layers = given_in.get(name, set())
        if not layers:
            assert sourced == Sourced(KEYS[name].default, "default") and str(sourced) == "default"
            continue
        top = max(layers, key=LAYERS.index)
        where = {"file": str(config), "environment": KEYS[name].env, "flag": KEYS[name].flag}[top]
        assert sourced == Sourced(gathered[name], top, where)
        assert str(sourced) == f"{top} {where}"


def test_an_explicit_config_file_wins_over_lmg_config(tmp_path):
    chosen, other = tmp_path / "chosen.toml", tmp_path / "other.toml"
    chosen.write_text("heartbeat_interval_s = 15\n")
    other.write_text("heartbeat_interval_s = 45\n")
    explained = explain(None, {"LMG_CONFIG": str(other)}, str(chosen), names=("heartbeat_interval_s",))
    assert explained == {"heartbeat_interval_s": Sourced(15, "file", str(chosen))}


@pytest.mark.parametrize("flags, env, complaint", [
    ({"max_connections": "many"}, {}, "max_connections = 'many' from --max-connections: expected int"),
    ({}, {"LMG_METRICS": "perhaps"}, "metrics = 'perhaps' from environment variable LMG_METRICS: expected bool"),
    ({}, {"LMG_CONFIG": "/nonexistent/lmg.toml"}, "config file /nonexistent/lmg.toml does not exist"),
])
def test_errors_are_gathers(flags, env, complaint):
    with pytest.raises(SettingsError) as from_gather:
        gather(flags, env, None)
    with pytest.raises(SettingsError) as from_explain:
        explain(flags, env, None)
    assert str(from_explain.value) == str(from_gather.value)
    assert complaint in str(from_explain.value)
