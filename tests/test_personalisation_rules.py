"""Content rules: strict schema validation and the audience allow-list."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from segment_warehouse.config import REPO_ROOT
from segment_warehouse.personalisation import RulesError, load_rules
from segment_warehouse.personalisation.rules import compile_audience, parse_rules

BASE = """
slots:
  - id: home_hero
    default_content: hero_generic
rules:
  - id: winback
    slot: home_hero
    priority: 100
    audience: "lifecycle_stage = 'at_risk' and lifetime_revenue >= 100"
    content: hero_winback
    experiment:
      id: winback_exp
      control_share: 0.5
      start: 2026-12-01
      end: 2027-01-31
      window_days: 14
"""


def _rules_with(audience: str) -> str:
    return BASE.replace(
        "\"lifecycle_stage = 'at_risk' and lifetime_revenue >= 100\"",
        '"' + audience.replace('"', '\\"') + '"',
    )


def test_example_rules_file_is_valid() -> None:
    rules = load_rules(REPO_ROOT / "personalisation" / "content_rules.yml")
    assert len(rules.slots) >= 3
    assert {r.slot for r in rules.rules} == {s.id for s in rules.slots}  # every slot has rules
    used = {c for r in rules.rules for c in r.columns}
    # rules on lifecycle, RFM, cluster segments and predictions
    assert {"lifecycle_stage", "rfm_segment", "segment_name"} <= used
    assert used & {"purchase_probability_30d", "churn_probability"}
    assert len(rules.experiments) == 1
    assert any(d.hashed_email and d.approval for d in rules.destinations)


def test_parsed_values_and_version() -> None:
    rules = parse_rules(BASE, "rules.yml")
    rule = rules.rules[0]
    assert rule.priority == 100 and rule.ordinal == 0
    assert rule.audience_sql == "\"lifecycle_stage\" = 'at_risk' AND \"lifetime_revenue\" >= 100"
    assert rule.experiment is not None
    assert rule.experiment.start == dt.date(2026, 12, 1)
    assert rule.experiment.control_share == 0.5
    assert len(rules.version) == 16
    # A content hash: one more space changes the version, the same text does not.
    assert parse_rules(BASE, "x.yml").version == rules.version
    assert parse_rules(BASE + "\n", "x.yml").version != rules.version


def test_git_blob_sha_matches_git(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(BASE)
    expected = subprocess.run(
        ["git", "hash-object", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert load_rules(path).git_blob_sha == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE.replace("    content: hero_winback", "    content: hero_winback\n    colour: red"),
         r"rule 'winback': unknown key\(s\) colour"),
        (BASE + "extra: 1\n", r"unknown key\(s\) extra"),
        (BASE.replace("slot: home_hero", "slot: footer"), r"rule 'winback': unknown slot 'footer'"),
        (BASE.replace("priority: 100", "priority: '100'"),
         r"rule 'winback'.priority: must be an integer"),
        (BASE.replace("priority: 100", "priority: 1.5"),
         r"rule 'winback'.priority: must be an integer"),
        (BASE.replace("priority: 100", "priority: true"),
         r"rule 'winback'.priority: must be an integer"),
        (BASE + BASE.split("rules:\n")[1].replace("id: winback_exp", "id: other_exp"),
         r"rule 'winback': duplicate rule id 'winback'"),
        (BASE + BASE.split("rules:\n")[1].replace("id: winback\n", "id: winback2\n"),
         r"rule 'winback2': duplicate experiment id 'winback_exp'"),
        (BASE.replace("    priority: 100\n", "    priority: 100\n    priority: 5\n"),
         r"duplicate key 'priority'"),
        (BASE.replace("control_share: 0.5", "control_share: 1.5"),
         r"control_share must be a number strictly between 0 and 1"),
        (BASE.replace("end: 2027-01-31", "end: 2026-11-01"), r"end 2026-11-01 is before start"),
        (BASE.replace("window_days: 14", "window_days: 0"), r"window_days: must be >= 1"),
        (BASE.replace("start: 2026-12-01", "start: next monday"), r"start: must be a date"),
        (BASE.replace("id: winback\n", "id: 'Win Back!'\n"), r"is not a valid id"),
        (BASE.replace("    content: hero_winback\n", ""), r"missing required key\(s\) content"),
        ("slots: []\nrules: []\n", r"'slots' must be a non-empty list"),
        ("slots: [\n", r"invalid YAML"),
        ("- just a list\n", r"expected a mapping"),
    ],
)
def test_schema_errors_name_the_rule(text: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        parse_rules(text, "rules.yml")


@pytest.mark.parametrize(
    ("audience", "message"),
    [
        ("email = 'a@b.c'", r"unknown column 'email'"),
        ("customer_id = 'x'", r"unknown column 'customer_id'"),
        ("p.orders_count > 1", r"must not be qualified with a table"),
        ("orders_count in (select orders_count from marts.customer_profiles)", r"subquery"),
        ("(select 1) = 1", r"subquery"),
        ("orders_count > 1; drop table marts.customer_profiles", r"found 2 statements"),
        ("read_csv('/etc/passwd') is not null", r"function read_csv\(\)"),
        ("getenv('SEGMENTS_PII_KEY') = 'x'", r"not allowed"),
        ("random() < 0.5", r"function rand"),
        ("orders_count::varchar = '1'", r"function cast\(\)"),
        ("orders_count > ?", r"parameter placeholder"),
        ("sum(orders_count) > 1", r"function sum\(\)"),
        ("orders_count > 1 union select 1", r"not allowed|found"),
        ("orders_count >", r"not valid SQL"),
        ("orders_count + 1", r"must be a true/false condition"),
        ("lower(orders_count) = 'x'", r"cannot be evaluated"),
        ("1 = 1", r"at least one audience column"),
        ("", r"non-empty"),
    ],
)
def test_audience_outside_grammar_is_rejected_with_rule_name(audience: str, message: str) -> None:
    with pytest.raises(RulesError, match=message) as info:
        parse_rules(_rules_with(audience), "rules.yml")
    assert "rule 'winback'" in str(info.value)


@pytest.mark.parametrize(
    "audience",
    [
        "rfm_segment in ('Champions', 'Loyal')",
        "lifecycle_stage not in ('churned') and orders_count between 1 and 5",
        "segment_name like 'Cart%' or segment_name ilike '%lapsed%'",
        "churn_probability is not null and churn_probability >= 0.6",
        "case when orders_count > 3 then lifetime_revenue > 500 else lifetime_revenue > 100 end",
        "coalesce(days_since_last_order, 999) <= 60 and abs(avg_order_value - 50) < 10",
        "round(purchase_probability_30d, 2) >= 0.3 or greatest(recency_score, 0) = 5",
        "lower(trim(country)) = 'gb' and not (engagement_tier = 'dormant')",
        "(lifetime_revenue / nullif(orders_count, 0)) > 80 and orders_count % 2 = 0",
        'LIFECYCLE_STAGE = \'new\' and "orders_count" >= 1',
    ],
)
def test_allowed_grammar_compiles(audience: str) -> None:
    sql, columns = compile_audience(audience, "rule 'x'")
    assert columns
    # Every column is re-quoted from the allow-list, lower-case.
    for column in columns:
        assert f'"{column}"' in sql


def test_rendered_sql_contains_no_comments_or_original_text() -> None:
    sql, _ = compile_audience("orders_count > 1 /* hi */ -- drop", "rule 'x'")
    assert sql == '"orders_count" > 1'


def test_missing_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="not found"):
        load_rules(tmp_path / "nope.yml")


def test_hashed_email_destination_needs_approval() -> None:
    text = BASE + "destinations:\n  - id: ads\n    rules: [winback]\n    hashed_email: true\n"
    with pytest.raises(RulesError, match=r"destination 'ads': hashed_email: true needs"):
        parse_rules(text, "rules.yml")
    ok = parse_rules(text + "    approval: GOV-1\n", "rules.yml")
    assert ok.destinations[0].hashed_email
    with pytest.raises(RulesError, match=r"unknown rule id\(s\) nope"):
        parse_rules(BASE + "destinations:\n  - id: ads\n    rules: [nope]\n", "rules.yml")
