"""The rules file: its defaults and what its header says, every way a file can be wrong, and the docs.

docs/supervision.md repeats the rule table and every key of the file with its default and
range; the tests here check the doc against the code, so neither drifts.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

from lmg.protocol.posts import KEY_POSTS, Post
from lmg.server.supervision.rules import (
    RULES,
    THRESHOLDS,
    RuleCode,
    RulesError,
    default_rules,
    default_text,
    load_rules,
    parse_rules,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "supervision.md"
DAY_MS = 86_400_000


def test_the_defaults():
    rules = default_rules()
    assert (rules.min_punches, rules.min_span_hours, rules.min_span_ms) == (2, 4, 4 * 3_600_000)
    assert rules.consecutive_days == 5
    assert (rules.leave_days_per_month, rules.leave_days_per_year) == (6, 20)
    assert (rules.city_after_ms, rules.province_after_ms) == (7 * DAY_MS, 7 * DAY_MS)
    assert dict(rules.presence) == {
        Post.PROJECT_MANAGER: Fraction(4, 5), Post.TECHNICAL_LEAD: Fraction(4, 5),
        Post.QUALITY_OFFICER: Fraction(4, 5), Post.SAFETY_OFFICER: Fraction(4, 5),
        Post.CONSTRUCTION_OFFICER: Fraction(4, 5), Post.CHIEF_SUPERVISOR: Fraction(1, 2),
        Post.CHIEF_SUPERVISOR_DEPUTY: Fraction(4, 5), Post.SPECIALIST_SUPERVISOR: Fraction(4, 5)}
    assert set(rules.presence) == set(KEY_POSTS)
    assert load_rules(None) is rules and load_rules("") is rules


def test_the_file_says_whose_numbers_these_are():
    text = default_text()
    header = text.split("[valid_day]")[0]
    assert "NOT GANSU'S OWN NUMBERS" in header and "supervision_rules_file" in header
    assert "operator" in header
    for source in ("Jilin 吉建规〔2023〕11号", "Wuhu", "Fuzhou", "Heilongjiang"):
        assert source in text
    # every key carries its source on its line or in its section's comment
    for line in text.splitlines():
        if re.match(r"^[a-z_-]+ = ", line) and not line.startswith(("city_after", "province_after")):
            assert "#" in line, line


def test_an_operators_copy_is_read_from_its_path(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(default_text().replace("consecutive_days = 5", "consecutive_days = 3"), encoding="utf-8")
    rules = load_rules(path)
    assert rules.consecutive_days == 3 and rules.source == str(path)


def test_a_file_that_cannot_be_read(tmp_path):
    with pytest.raises(RulesError, match=r"missing\.toml: cannot be read"):
        load_rules(tmp_path / "missing.toml")


def _edited(old: str, new: str) -> str:
    text = default_text()
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(("text", "message"), [
    (_edited("project-manager = 0.80", "project-manger = 0.80"),
     r"(?s)presence\.project-manager: missing; give a number from 0 to 1 .*"
     r"presence\.project-manger: unknown key"),
    (_edited("chief-supervisor = 0.50", "chief-supervisor = 1.5"),
     r"presence\.chief-supervisor = 1\.5: out of range; use a number from 0 to 1"),
    (_edited("min_punches = 2", "min_punches = 2.5"),
     r"valid_day\.min_punches = 2\.5: use a whole number from 1 to 24"),
    (_edited("min_punches = 2", "min_punches = true"), r"valid_day\.min_punches = True: use a whole number"),
    (_edited("min_span_hours = 4", 'min_span_hours = "4h"'),
     r"valid_day\.min_span_hours = '4h': use a number from 0 to 20"),
    (_edited("consecutive_days = 5", "consecutive_days = 40"),
     r"absence\.consecutive_days = 40: out of range; use a whole number from 1 to 28"),
    (_edited("city_after_days = 7", "city_after_days = 0"),
     r"escalation\.city_after_days = 0: out of range; use a whole number from 1 to 365"),
    (_edited("days_per_month = 6", "days_per_month = 25"),
     r"leave\.days_per_month = 25: more than leave\.days_per_year = 20"),
    (_edited("min_punches = 2", "min_punches = 1"), r"min_span_hours: must be 0 when valid_day\.min_punches is 1"),
    (default_text() + "\n[extra]\nx = 1\n", r"\[extra\]: unknown section"),
    ("absence = 5\n" + _edited("[absence]", "[absence_]"), r"- absence: must be a table"),
    (_edited("days_per_year = 20", ""), r"leave\.days_per_year: missing; give a whole number from 0 to 366"),
    ("[valid_day\n", r"not valid TOML"),
])
def test_a_wrong_file_names_the_key_and_what_it_accepts(text, message):
    with pytest.raises(RulesError, match=message) as raised:
        parse_rules(text, "ops.toml")
    assert str(raised.value).startswith("supervision rules ops.toml:")


def test_every_problem_of_a_file_is_reported_at_once():
    text = _edited("min_punches = 2", "min_punches = 0").replace("days_per_year = 20", "days_per_year = -1")
    with pytest.raises(RulesError, match=r"2 problem\(s\)") as raised:
        parse_rules(text, "ops.toml")
    assert "valid_day.min_punches = 0" in str(raised.value) and "leave.days_per_year = -1" in str(raised.value)


def test_a_share_is_exact():
    rules = parse_rules(_edited("project-manager = 0.80", "project-manager = 0.56"), "x")
    assert rules.required_share(Post.PROJECT_MANAGER) == Fraction(14, 25)
    with pytest.raises(KeyError):
        rules.required_share(Post.WORKER)


def test_the_rule_table_covers_every_code():
    assert set(RULES) == set(RuleCode)
    assert all(info.code is code and info.checks and info.source and info.name_zh for code, info in RULES.items())
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", code) for code in RuleCode)  # as the store checks rule codes


# --- the doc against the code ---------------------------------------------------------------------------


def test_the_doc_lists_every_rule_with_its_source():
    doc = DOC.read_text(encoding="utf-8")
    for code, info in RULES.items():
        assert f"| `{code}` | {info.name_zh} | {info.cadence} | {info.checks} | {info.source} |" in doc, code


def test_the_doc_lists_every_key_with_its_default_and_range():
    doc = DOC.read_text(encoding="utf-8")
    defaults = default_rules()
    for threshold in THRESHOLDS:
        if threshold.field == "presence":
            value = float(defaults.presence[Post.parse(threshold.key)])
        else:
            value = getattr(defaults, threshold.field)
        shown = f"{value:g}"
        row = f"| `{threshold.name}` | {shown} | {threshold.accepted()} | {threshold.source} |"
        assert row in doc, row
