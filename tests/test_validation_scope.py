"""Scoped validation (issue #8's decision, #20): table invariants on the full tables every
run, row rules on new or changed rows, every row at least weekly and after full refreshes.

Runs on the small fixture warehouse of ``segment_tools.validation_fixture``.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from segment_tools.validation_fixture import build_fixture_warehouse

from segment_warehouse import state
from segment_warehouse.config import Settings, get_settings
from segment_warehouse.validation import SuiteError, ValidationFailed, load_suite, validate_layer
from segment_warehouse.validation.scope import suite_fingerprint
from segment_warehouse.warehouse import warehouse


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.setenv("SEGMENTS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    monkeypatch.setenv("SEGMENTS_DUCKDB_MEMORY_LIMIT", "512MB")
    monkeypatch.delenv("SEGMENTS_VALIDATION_FULL_EVERY_DAYS", raising=False)
    settings = get_settings()
    with warehouse(settings=settings) as con:
        build_fixture_warehouse(con)
    return settings


def _rows(settings: Settings, run_id: str, batch: str) -> list[dict]:
    with warehouse(read_only=True, settings=settings) as con:
        cur = con.execute(
            "select * from audit.validation_results where run_id = ? and batch_name = ? "
            "order by expectation",
            [run_id, batch],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _age_last_full(settings: Settings, suite: str, days: int) -> None:
    with warehouse(settings=settings) as con:
        last = state.last_full_validation(con, suite)
        assert last is not None
        at, fingerprint = last
        state.record_full_validation(con, suite, at - timedelta(days=days), fingerprint)


def test_first_run_is_full_then_delta_checks_only_changed_rows(settings: Settings) -> None:
    first = validate_layer("marts", run_id="r1")
    assert first.success and first.suites[0].scope == "full"
    assert "first validation" in first.suites[0].scope_reason
    profiles = _rows(settings, "r1", "customer_profiles")
    assert {(r["check_scope"], r["rows_checked"], r["rows_total"]) for r in profiles} == {
        ("rows", 5, 5)
    }
    assert all(r["check_scope"] == "table" for r in _rows(settings, "r1", "identity_map_by_source"))

    second = validate_layer("marts", run_id="r2")
    assert second.success and second.suites[0].scope == "delta"
    profiles = _rows(settings, "r2", "customer_profiles")
    assert {(r["rows_checked"], r["rows_total"]) for r in profiles} == {(0, 5)}
    assert all(r["scope_note"].startswith("delta") for r in profiles)

    # one profile changes: exactly that row is checked
    with warehouse(settings=settings) as con:
        con.execute(
            "update marts.customer_profiles set lifecycle_stage = 'active' "
            "where customer_id = 'cus_5'"
        )
    third = validate_layer("marts", run_id="r3")
    assert third.success
    assert {r["rows_checked"] for r in _rows(settings, "r3", "customer_profiles")} == {1}

    html = (settings.validation_reports_dir / "index.html").read_text(encoding="utf-8")
    assert "rows: 1 of 5 (delta; changed rows: a row digest not validated before)" in html
    assert "whole table, in SQL (every run)" in html
    assert "Row-level checks this run: delta" in html


def test_a_bad_new_row_fails_the_delta_until_it_is_fixed(settings: Settings) -> None:
    validate_layer("marts", run_id="r1")
    with warehouse(settings=settings) as con:
        con.execute(
            "insert into marts.customer_profiles select 'cus_9', 0, -5.0, null, true, 'prospect', "
            "null, null, null, null, null"
        )
    with pytest.raises(ValidationFailed) as info:
        validate_layer("marts", run_id="r2")
    failed = info.value.outcome.critical_failures
    # reported once, by the row rule that the new row breaks
    assert [(f.batch, f.column_name) for f in failed] == [("customer_profiles", "lifetime_revenue")]
    assert (failed[0].rows_checked, failed[0].rows_total) == (1, 6)
    assert info.value.outcome.suites[0].scope == "delta"

    # a failed run moves no baseline: the next delta still sees the row
    with pytest.raises(ValidationFailed):
        validate_layer("marts", run_id="r3")
    with warehouse(settings=settings) as con:
        con.execute(
            "update marts.customer_profiles set lifetime_revenue = 0 where customer_id = 'cus_9'"
        )
    assert validate_layer("marts", run_id="r4").success
    assert {r["rows_checked"] for r in _rows(settings, "r4", "customer_profiles")} == {1}


def test_a_broken_table_invariant_elsewhere_fails_the_delta(settings: Settings) -> None:
    validate_layer("marts", run_id="r1")
    with warehouse(settings=settings) as con:
        # no row of a rows batch changes; contact k3 loses its link to a customer
        con.execute("delete from marts.identity_map where source = 'crm' and source_id = 'k3'")
    with pytest.raises(ValidationFailed) as info:
        validate_layer("marts", run_id="r2")
    failed = info.value.outcome.critical_failures
    assert [(f.batch, f.column_name, f.scope) for f in failed] == [
        ("crm_contacts_in_identity_map", "contacts_not_linked", "table")
    ]
    assert {r["rows_checked"] for r in _rows(settings, "r2", "customer_profiles")} == {0}


def test_an_unchecked_old_row_is_caught_by_the_weekly_full_run(settings: Settings) -> None:
    validate_layer("staging", run_id="r1")
    with warehouse(settings=settings) as con:
        # loaded "before" the validated load time: no delta run looks at it
        con.execute(
            "insert into staging.stg_crm__contacts (contact_id, gender, updated_at, _loaded_at) "
            "values ('k9', 'robot', timestamp '2023-05-01', timestamptz '2001-01-01 00:00:00+00')"
        )
    delta = validate_layer("staging", run_id="r2")
    assert delta.success and delta.suites[0].scope == "delta"
    assert {r["rows_checked"] for r in _rows(settings, "r2", "crm_contacts")} == {0}

    _age_last_full(settings, "staging", days=7)
    with pytest.raises(ValidationFailed) as info:
        validate_layer("staging", run_id="r3")
    assert info.value.outcome.suites[0].scope == "full"
    assert "7+ days old" in info.value.outcome.suites[0].scope_reason
    assert [(f.batch, f.column_name) for f in info.value.outcome.critical_failures] == [
        ("crm_contacts", "gender")
    ]
    assert {r["rows_checked"] for r in _rows(settings, "r3", "crm_contacts")} == {6}
    html = (settings.validation_reports_dir / "index.html").read_text(encoding="utf-8")
    assert "rows: 6 of 6 (full: the last full validation" in html


def test_new_staged_rows_are_the_delta_of_append_only_tables(settings: Settings) -> None:
    validate_layer("staging", run_id="r1")
    with warehouse(settings=settings) as con:
        con.execute(
            "insert into staging.stg_crm__contacts (contact_id, gender, updated_at, _loaded_at) "
            "values ('k9', 'robot', timestamp '2023-05-01', now() + interval 1 second)"
        )
    with pytest.raises(ValidationFailed) as info:
        validate_layer("staging", run_id="r2")
    assert [(f.batch, f.column_name) for f in info.value.outcome.critical_failures] == [
        ("crm_contacts", "gender")
    ]
    checked = {(r["rows_checked"], r["rows_total"]) for r in _rows(settings, "r2", "crm_contacts")}
    assert checked == {(1, 6)}


def test_full_refresh_request_and_setting_make_the_run_full(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    validate_layer("marts", run_id="r1")
    with warehouse(settings=settings) as con:
        state.request_full_validation(con, "backfill: 2026-11-01 is before the last build's")
    outcome = validate_layer("marts", run_id="r2")
    assert outcome.suites[0].scope == "full"
    assert "backfill" in outcome.suites[0].scope_reason
    assert validate_layer("marts", run_id="r3").suites[0].scope == "delta"  # honoured once
    assert validate_layer("marts", run_id="r4", full=True).suites[0].scope_reason == (
        "full: requested for this run"
    )
    monkeypatch.setenv("SEGMENTS_VALIDATION_FULL_EVERY_DAYS", "0")
    assert validate_layer("marts", run_id="r5").suites[0].scope == "full"


def test_warnings_in_a_delta_stay_warnings(settings: Settings) -> None:
    validate_layer("marts", run_id="r1")
    with warehouse(settings=settings) as con:
        con.execute(
            "update marts.customer_profiles set recency_score = 9 where customer_id = 'cus_1'"
        )
    outcome = validate_layer("marts", run_id="r2")
    assert outcome.success
    assert [(w.batch, w.column_name, w.rows_checked) for w in outcome.warnings] == [
        ("customer_profiles", "recency_score", 1)
    ]


def test_suite_rules_for_scopes(tmp_path: Path) -> None:
    src = get_settings().expectations_dir / "marts.json"
    doc = json.loads(src.read_text())
    rows = next(b for b in doc["batches"] if b["name"] == "customer_profiles")

    def write(document: dict) -> None:
        (tmp_path / "marts.json").write_text(json.dumps(document))

    rows["expectations"].append(
        {
            "type": "expect_column_values_to_be_unique",
            "kwargs": {"column": "customer_id"},
            "meta": {"severity": "critical", "description": "x"},
        }
    )
    write(doc)
    with pytest.raises(SuiteError, match="not a row-level rule"):
        load_suite("marts", tmp_path)
    rows["expectations"].pop()
    rows["sample"] = {"key": "customer_id"}
    write(doc)
    with pytest.raises(SuiteError, match="'sample' is gone"):
        load_suite("marts", tmp_path)
    del rows["sample"]
    del rows["scope"]
    write(doc)
    with pytest.raises(SuiteError, match="'scope' must be one of"):
        load_suite("marts", tmp_path)


def test_fingerprint_follows_the_suite_file(tmp_path: Path) -> None:
    settings = get_settings()
    shutil.copy(settings.expectations_dir / "marts.json", tmp_path / "marts.json")
    before = suite_fingerprint(load_suite("marts", tmp_path), settings)
    assert suite_fingerprint(load_suite("marts", tmp_path), settings) == before
    text = (tmp_path / "marts.json").read_text().replace("zero or more", "0 or more", 1)
    (tmp_path / "marts.json").write_text(text)
    assert suite_fingerprint(load_suite("marts", tmp_path), settings) != before


def test_state_keeps_requests_dated(settings: Settings) -> None:
    with warehouse(settings=settings) as con:
        now = datetime.now(UTC)
        state.request_full_validation(con, "erasure requests R1", at=now - timedelta(hours=1))
        state.request_full_validation(con, "reference seeds\nchanged", at=now)
        assert [why for _, why in state.full_validation_requests(con)] == [
            "erasure requests R1",
            "reference seeds changed",
        ]
        state.put_validation_watermarks(con, "staging", {"events": now})
        assert state.validation_watermarks(con, "staging") == {"events": now}
