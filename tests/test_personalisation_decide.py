"""decide: rule evaluation, priorities, consent, sticky experiments, idempotency."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.personalisation import RulesError, bucket, decide
from segment_warehouse.warehouse import ensure_schemas

RULES = """
slots:
  - id: home_hero
    default_content: hero_generic
  - id: email_banner
    default_content: banner_default
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
      end: 2026-12-31
      window_days: 14
  - id: vip
    slot: home_hero
    priority: 90
    audience: "rfm_segment = 'Champions'"
    content: hero_vip
  - id: vip_tie
    slot: home_hero
    priority: 90
    audience: "rfm_segment = 'Champions' or orders_count >= 50"
    content: hero_vip_tie
  - id: lapsed_segment
    slot: email_banner
    priority: 10
    audience: "segment_name = 'Lapsed'"
    content: banner_lapsed
  - id: likely_buyer
    slot: email_banner
    priority: 20
    audience: "purchase_probability_30d >= 0.5"
    content: banner_new_in
"""


def profile(
    customer_id: str,
    consent: bool | None = True,
    lifecycle: str = "active",
    rfm: str = "Loyal",
    revenue: float = 50.0,
    orders: int = 2,
    segment: str | None = "Occasional",
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "marketing_consent": consent,
        "lifecycle_stage": lifecycle,
        "rfm_segment": rfm,
        "engagement_tier": "medium",
        "orders_count": orders,
        "lifetime_revenue": revenue,
        "avg_order_value": revenue / orders if orders else None,
        "recency_score": 3,
        "frequency_score": 3,
        "monetary_score": 3,
        "sessions_count": 4,
        "page_views_count": 10,
        "country": "GB",
        "days_since_last_order": 40,
        "segment_name": segment,
    }


PEOPLE_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("marketing_consent", pa.bool_()),
    ("lifecycle_stage", pa.string()), ("rfm_segment", pa.string()),
    ("engagement_tier", pa.string()), ("orders_count", pa.int64()),
    ("lifetime_revenue", pa.float64()), ("avg_order_value", pa.float64()),
    ("recency_score", pa.int32()), ("frequency_score", pa.int32()),
    ("monetary_score", pa.int32()), ("sessions_count", pa.int64()),
    ("page_views_count", pa.int64()), ("country", pa.string()),
    ("days_since_last_order", pa.int64()), ("segment_name", pa.string()),
])


def write_inputs(
    settings: Settings,
    profiles: Iterable[dict[str, Any]],
    predictions: dict[str, float] | None = None,
    anonymous_ids: dict[str, str] | None = None,
) -> None:
    """(Re)create the marts/segments tables decide reads, in the working warehouse."""
    rows = list(profiles)
    con = duckdb.connect(str(settings.warehouse_db))
    try:
        ensure_schemas(con)
        con.execute(
            """
            create or replace table marts.customer_profiles (
                customer_id varchar, marketing_consent boolean, lifecycle_stage varchar,
                rfm_segment varchar, engagement_tier varchar, orders_count bigint,
                lifetime_revenue double, avg_order_value double, recency_score integer,
                frequency_score integer, monetary_score integer, sessions_count bigint,
                page_views_count bigint, country varchar, email_hash varchar)
            """
        )
        con.execute(
            "create or replace table marts.customer_rule_segments "
            "(customer_id varchar, days_since_last_order bigint)"
        )
        con.execute(
            "create or replace table segments.customer_segments "
            "(customer_id varchar, segment_id integer, segment_name varchar, run_id varchar)"
        )
        con.execute(
            "create or replace table intermediate.int_customers_aggregated "
            "(customer_id varchar, email varchar)"
        )
        con.execute(
            "create or replace table marts.identity_map "
            "(source varchar, source_id varchar, customer_id varchar)"
        )
        # One Arrow relation, set-based inserts: row-by-row inserts dominate test time.
        con.register("people", pa.Table.from_pylist(rows, schema=PEOPLE_SCHEMA))
        con.execute(
            "insert into marts.customer_profiles select customer_id, marketing_consent, "
            "lifecycle_stage, rfm_segment, engagement_tier, orders_count, lifetime_revenue, "
            "avg_order_value, recency_score, frequency_score, monetary_score, sessions_count, "
            "page_views_count, country, 'hash-' || customer_id from people"
        )
        con.execute("insert into marts.customer_rule_segments "
                    "select customer_id, days_since_last_order from people")
        con.execute("insert into marts.identity_map "
                    "select 'crm', 'C-' || customer_id, customer_id from people")
        con.execute("insert into intermediate.int_customers_aggregated "
                    "select customer_id, customer_id || '@example.org' from people")
        con.execute(
            "insert into segments.customer_segments select customer_id, 1, segment_name, "
            "'seg-run' from people where segment_name is not null "
            "and marketing_consent is distinct from false"
        )
        con.unregister("people")
        for anon, cid in (anonymous_ids or {}).items():
            con.execute("insert into marts.identity_map values ('analytics', ?, ?)", [anon, cid])
        if predictions is not None:
            con.execute(
                "create or replace table segments.customer_predictions (customer_id varchar, "
                "purchase_probability_30d double, churn_probability double)"
            )
            for cid, p in predictions.items():
                con.execute("insert into segments.customer_predictions values (?, ?, null)",
                            [cid, p])
        else:
            con.execute("drop table if exists segments.customer_predictions")
    finally:
        con.close()


@pytest.fixture
def env(segments_env: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    rules = segments_env / "content_rules.yml"
    rules.write_text(RULES)
    monkeypatch.setenv("SEGMENTS_CONTENT_RULES", str(rules))
    monkeypatch.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    return get_settings()


def fetch(settings: Settings, sql: str) -> list[tuple]:
    con = duckdb.connect(str(settings.warehouse_db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def decisions(settings: Settings) -> dict[tuple[str, str], tuple]:
    rows = fetch(
        settings,
        "select customer_id, slot_id, content_id, rule_id, experiment_id, variant "
        "from personalisation.content_decisions",
    )
    return {(r[0], r[1]): r[2:] for r in rows}


def all_tables(settings: Settings) -> dict[str, list[tuple]]:
    names = fetch(
        settings,
        "select table_name from information_schema.tables "
        "where table_schema = 'personalisation' order by 1",
    )
    return {n: fetch(settings, f"select * from personalisation.{n}") for (n,) in names}


def test_priorities_ties_defaults_and_consent(env: Settings) -> None:
    write_inputs(
        env,
        [
            profile("c_vip", rfm="Champions"),  # vip and vip_tie (same priority): first wins
            profile("c_tie", orders=60),  # only vip_tie
            profile("c_plain"),  # nothing matches: defaults
            profile("c_refused", consent=False, rfm="Champions"),
            profile("c_unknown", consent=None, rfm="Champions"),
            profile("c_lapsed", segment="Lapsed"),
        ],
        predictions={"c_lapsed": 0.9},
    )
    result = decide(run_id="r1", as_of="2026-12-05")
    got = decisions(env)
    assert result.consenting_customers == 4 and result.decisions == 8
    assert got[("c_vip", "home_hero")] == ("hero_vip", "vip", None, None)
    assert got[("c_tie", "home_hero")] == ("hero_vip_tie", "vip_tie", None, None)
    assert got[("c_plain", "home_hero")] == ("hero_generic", None, None, None)
    assert got[("c_plain", "email_banner")] == ("banner_default", None, None, None)
    # higher priority (prediction rule, 20) beats the segment rule (10)
    assert got[("c_lapsed", "email_banner")] == ("banner_new_in", "likely_buyer", None, None)
    assert not any(cid in {"c_refused", "c_unknown"} for cid, _ in got)
    overlap = fetch(env, "select slot_id, rule_id, shadowed_by_rule_id, customers "
                         "from personalisation.rule_overlap order by all")
    assert ("home_hero", "vip_tie", "vip", 1) in overlap
    assert ("email_banner", "lapsed_segment", "likely_buyer", 1) in overlap
    decided_at = fetch(env, "select distinct decided_at from personalisation.content_decisions")
    assert decided_at == [(dt.datetime(2026, 12, 5),)]
    assert Path(result.report or "").exists()


def test_missing_predictions_match_nobody(env: Settings) -> None:
    write_inputs(env, [profile("c1", segment="Lapsed")], predictions=None)
    decide(run_id="r1", as_of="2026-12-05")
    assert decisions(env)[("c1", "email_banner")][1] == "lapsed_segment"


def _at_risk(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [profile(f"{prefix}{i:03d}", lifecycle="at_risk", revenue=200.0) for i in range(n)]


def test_experiment_bucketing_control_gets_default(env: Settings) -> None:
    write_inputs(env, _at_risk(200))
    result = decide(run_id="r1", as_of="2026-12-05")
    assert result.new_assignments == 200
    rows = fetch(env, "select customer_id, variant, assigned_at, segment_name_at_assignment, "
                      "bucket from personalisation.experiment_assignments")
    for cid, variant, assigned_at, seg, b in rows:
        expected = bucket("winback_exp", cid)
        assert b == pytest.approx(expected, abs=1e-12)
        assert variant == ("control" if expected < 0.5 else "treatment")
        assert assigned_at == dt.date(2026, 12, 5) and seg == "Occasional"
    variants = {v for _, v, *_ in rows}
    assert variants == {"control", "treatment"}
    got = decisions(env)
    for cid, variant, *_ in rows:
        content, rule, experiment, decided_variant = got[(cid, "home_hero")]
        assert (rule, experiment, decided_variant) == ("winback", "winback_exp", variant)
        assert content == ("hero_generic" if variant == "control" else "hero_winback")


def test_assignments_are_sticky_and_rerun_is_idempotent(env: Settings) -> None:
    write_inputs(env, _at_risk(60))
    decide(run_id="r1", as_of="2026-12-05")
    first = all_tables(env)
    decide(run_id="r2", as_of="2026-12-05")  # same day, same rules, another run id
    assert all_tables(env) == first

    before = {r[0]: r[1:] for r in fetch(
        env, "select customer_id, variant, assigned_at, segment_name_at_assignment "
             "from personalisation.experiment_assignments")}
    # Next day: the rule now gives 90% control, segments moved, new customers arrive.
    rules = env.content_rules.read_text().replace("control_share: 0.5", "control_share: 0.9")
    env.content_rules.write_text(rules)
    people = [dict(p, segment_name="Lapsed") for p in _at_risk(60) + _at_risk(40, prefix="n")]
    write_inputs(env, people)
    result = decide(run_id="r3", as_of="2026-12-06")
    after = {r[0]: r[1:] for r in fetch(
        env, "select customer_id, variant, assigned_at, segment_name_at_assignment "
             "from personalisation.experiment_assignments")}
    assert {k: after[k] for k in before} == before  # untouched
    assert result.new_assignments == 40
    for cid in (k for k in after if k.startswith("n")):
        assert after[cid][1] == dt.date(2026, 12, 6) and after[cid][2] == "Lapsed"
        assert after[cid][0] == ("control" if bucket("winback_exp", cid) < 0.9 else "treatment")
    exp = fetch(env, "select control_share, first_defined_at, last_defined_at "
                     "from personalisation.experiments")
    assert exp == [(0.9, dt.datetime(2026, 12, 5), dt.datetime(2026, 12, 6))]


def test_experiment_window(env: Settings) -> None:
    write_inputs(env, _at_risk(20))
    decide(run_id="r0", as_of="2026-11-30")  # before start: rule not live, nobody assigned
    assert fetch(env, "select count(*) from personalisation.experiment_assignments") == [(0,)]
    assert {v[1] for (c, s), v in decisions(env).items() if s == "home_hero"} == {None}
    decide(run_id="r1", as_of="2027-01-05")  # after end: plain rule, no new assignments
    assert fetch(env, "select count(*) from personalisation.experiment_assignments") == [(0,)]
    hero = {v for (c, s), v in decisions(env).items() if s == "home_hero"}
    assert hero == {("hero_winback", "winback", None, None)}


def test_consent_withdrawal_keeps_past_assignment(env: Settings) -> None:
    people = _at_risk(10)
    write_inputs(env, people)
    decide(run_id="r1", as_of="2026-12-05")
    withdrawn = people[0]["customer_id"]
    write_inputs(env, [dict(p, marketing_consent=p["customer_id"] != withdrawn) for p in people])
    decide(run_id="r2", as_of="2026-12-06")
    assert not any(cid == withdrawn for cid, _ in decisions(env))
    kept = fetch(env, "select count(*) from personalisation.experiment_assignments "
                      f"where customer_id = '{withdrawn}'")
    assert kept == [(1,)]


def test_invalid_rules_change_nothing(env: Settings) -> None:
    write_inputs(env, [*_at_risk(10), profile("c_vip", rfm="Champions")])
    decide(run_id="r1", as_of="2026-12-05")
    before = all_tables(env)
    mtime = env.warehouse_db.stat().st_mtime_ns
    env.content_rules.write_text(
        RULES.replace("rfm_segment = 'Champions'\"", "rfm_segment = (select 'x')\"", 1)
    )
    with pytest.raises(RulesError, match=r"rule 'vip': audience uses a subquery"):
        decide(run_id="r2", as_of="2026-12-06")
    assert all_tables(env) == before
    assert env.warehouse_db.stat().st_mtime_ns == mtime  # not even opened for writing


def test_gx_suite_passes_on_decisions(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from segment_warehouse.validation import runner, suites

    monkeypatch.setitem(suites.LAYER_SUITES, "personalisation", "personalisation")
    write_inputs(
        env,
        [*_at_risk(30), profile("c_vip", rfm="Champions"), profile("c_no", consent=False)],
    )
    decide(run_id="r1", as_of="2026-12-05")
    outcome = runner.validate_layer("personalisation", run_id="gx1", raise_on_failure=False)
    failed = [(r.expectation, r.observed_value) for r in outcome.results if not r.success]
    assert failed == []
    assert len(outcome.results) >= 15
    # The suite can fail: a decision for a non-consenting customer is caught.
    con = duckdb.connect(str(env.warehouse_db))
    con.execute(
        "insert into personalisation.content_decisions select 'c_no', slot_id, content_id, "
        "rule_id, experiment_id, variant, decided_at, rules_version "
        "from personalisation.content_decisions limit 1"
    )
    con.close()
    outcome = runner.validate_layer("personalisation", run_id="gx2", raise_on_failure=False)
    failed = {r.batch for r in outcome.results if not r.success}
    assert "decisions" in failed


def test_rejected_rules_keep_decisions_but_consent_still_wins(env: Settings) -> None:
    """The decide task: a bad rules file keeps the previous decisions, except for
    customers who withdrew consent since, and the run is failed at its end."""
    from airflow.sdk.exceptions import AirflowFailException

    from segment_warehouse import tasks

    people = [*_at_risk(5), profile("c_vip", rfm="Champions")]
    write_inputs(env, people)
    tasks.decide("r1", "2026-12-05")
    kept_before = decisions(env)
    env.content_rules.write_text(RULES.replace("priority: 90", "priority: high", 1))
    write_inputs(env, [dict(p, marketing_consent=p["customer_id"] != "c_vip") for p in people])
    result = tasks.decide("r2", "2026-12-06")
    assert "rule 'vip'" in result["rules_rejected"]
    assert result["withdrawn_decisions"] == 2  # c_vip's two slots
    after = decisions(env)
    assert after == {k: v for k, v in kept_before.items() if k[0] != "c_vip"}
    with pytest.raises(AirflowFailException, match="content rules rejected"):
        tasks.check_content_rules(result)
