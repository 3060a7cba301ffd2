"""The operations files in docs/ops/ and docs/operations.md against the code.

The metric names come from the code's registry (`server/metrics/fold.py` `Families` on a
fresh prometheus-client registry), never from a list kept here: every metric an alert
rule, its unit tests or a dashboard panel names must exist, every metric must be on the
dashboard and in docs/operations.md, and so must every settings key. Where `promtool`
is installed (Debian's `prometheus` package), the rules are also checked and their unit
tests run by it; otherwise that test skips and says how to get it.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
OPS = REPO / "docs" / "ops"
ALERTS = OPS / "lmg-alerts.yml"
ALERT_TESTS = OPS / "lmg-alerts.test.yml"
DASHBOARD = OPS / "grafana-lmg.json"
UNIT = OPS / "lmg.service"
SYSCTL = OPS / "99-lmg-sysctl.conf"
OPERATIONS = REPO / "docs" / "operations.md"
# Series Prometheus makes itself for every target, not the gateway.
PROMETHEUS_OWN = {"up"}
METRIC_NAME = re.compile(r"\blmg_[a-z0-9_]+")
# How a family's samples are named in the exposition, by type (Prometheus' text format).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}


@cache
def families() -> dict[str, str]:
    """{the family's name as exposed (counters with _total): its type}, from the registry."""
    from prometheus_client import CollectorRegistry

    from lmg.server.metrics.fold import Families

    registry = CollectorRegistry(auto_describe=False)
    found = {}
    for metric in vars(Families(registry)).values():
        (family,) = metric.describe()
        found[family.name + ("_total" if family.type == "counter" else "")] = family.type
    return found


@cache
def samples() -> dict[str, str]:
    """{every sample name the gateway's /metrics can show: the family (as exposed) it belongs to}."""
    found = {}
    for name, kind in families().items():
        base = name.removesuffix("_total") if kind == "counter" else name
        found |= {base + suffix: name for suffix in SUFFIXES[kind]}
    return found


def series() -> set[str]:
    return set(samples())


def check_expression(expr: str, where: str) -> set[str]:
    """The lmg series `expr` reads; fails on a name the code does not expose, or a
    selector of a metric that is neither the gateway's nor Prometheus' own."""
    named = set(METRIC_NAME.findall(expr))
    unknown = named - series()
    assert not unknown, f"{where}: {sorted(unknown)} are not metrics of the gateway (server/metrics/fold.py)"
    selectors = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr))
    foreign = {name for name in selectors if not name.startswith("lmg_") and name not in PROMETHEUS_OWN}
    assert not foreign, f"{where}: {sorted(foreign)} are not metrics of the gateway"
    assert named or selectors & PROMETHEUS_OWN, f"{where}: reads no metric: {expr}"
    return named


def test_the_registry_is_what_these_tests_think():
    assert "lmg_ack_latency_seconds_bucket" in series() and "lmg_connections_opened_total" in series()
    assert families()["lmg_outbox_pending"] == "gauge" and len(families()) >= 30


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def test_every_alert_rule_reads_metrics_the_gateway_exposes():
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules), "two rules share a name"
    for rule in rules:
        check_expression(rule["expr"], f"alert {rule['alert']}")
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        for text in rule["annotations"].values():  # a name in the prose must exist too
            assert set(METRIC_NAME.findall(text)) <= set(families()) | series(), (rule["alert"], text)


def test_the_alert_unit_tests_feed_real_series_and_cover_every_alert_that_pages():
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
    for case in tests:
        for item in case["input_series"]:
            check_expression(item["series"], f"alert test {case['name']!r}")
    fired = {alert["alertname"] for case in tests for alert in case.get("alert_rule_test", ()) if alert.get("exp_alerts")}
    assert fired >= {"LmgStoreFailing", "LmgAckLatencyHigh", "LmgForwardingBehind", "LmgDeadLetters"}
    assert {rule["alert"] for rule in alert_rules()} >= fired


def test_the_dashboard_reads_every_metric_and_nothing_else():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    read: set[str] = set()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            read |= check_expression(target["expr"], f"panel {panel['title']!r}")
    missing = set(families()) - {samples()[name] for name in read}
    assert not missing, f"no panel shows {sorted(missing)}: add them to docs/ops/grafana-lmg.json"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    promtool = shutil.which("promtool")
    if promtool is None and os.environ.get("LMG_REQUIRE_PROMTOOL") == "1":  # CI: never a silent skip
        pytest.fail("LMG_REQUIRE_PROMTOOL=1 but promtool is not on PATH; .ci/run puts Debian's there")
    if promtool is None:
        pytest.skip("promtool is not installed; Debian's prometheus package has it: `apt-get download prometheus "
                    "&& dpkg-deb -x prometheus_*.deb /opt/prometheus` and put /opt/prometheus/usr/bin on PATH")
    for argv in (["check", "rules", ALERTS.name], ["test", "rules", ALERT_TESTS.name]):
        done = subprocess.run([promtool, *argv], cwd=OPS, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_operations_md_names_every_metric_every_setting_and_every_ops_file():
    from lmg.server.settings import KEYS

    text = OPERATIONS.read_text(encoding="utf-8")
    missing = [name for name in families() if f"`{name}`" not in text]
    assert not missing, f"docs/operations.md does not describe {missing}"
    missing = [name for name in KEYS if f"`{name}`" not in text]
    assert not missing, f"docs/operations.md has no word on the settings {missing}"
    for path in OPS.iterdir():
        assert f"docs/ops/{path.name}" in text, f"docs/operations.md does not mention docs/ops/{path.name}"


def test_the_systemd_unit_fits_the_gateway():
    from lmg.server.settings import KEYS

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(UNIT.read_text(encoding="utf-8"))
    service = unit["Service"]
    assert " serve" in service["ExecStart"] and service["ExecStart"].split()[0].endswith("/lmg")
    # one descriptor per terminal, with room for the store, photos and the admin side
    assert int(service["LimitNOFILE"]) >= 2 * KEYS["max_connections"].default
    # exit 2 is a usage error (a bad setting): restarting cannot fix it; 1 (store unreachable) may
    assert service["Restart"] == "on-failure" and "2" in service["RestartPreventExitStatus"].split()
    # SIGTERM starts the ordered shutdown, which takes up to shutdown_grace_s
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"
    stop_s = float(service["TimeoutStopSec"].removesuffix("s"))
    assert stop_s > KEYS["shutdown_grace_s"].default + 5


def test_the_sysctl_file_sets_what_operations_md_explains():
    values = {}
    for line in SYSCTL.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    assert int(values["net.core.somaxconn"]) >= 4096  # the listen backlog the gateway asks for
    assert int(values["net.ipv4.tcp_max_syn_backlog"]) >= 4096
    assert int(values["fs.nr_open"]) >= int(UNIT.read_text().split("LimitNOFILE=")[1].split()[0])
    text = OPERATIONS.read_text(encoding="utf-8")
    for name in values:
        assert f"`{name}`" in text, f"docs/operations.md does not explain {name}"
