"""Great Expectations validation: suites, audit rows, failures, reports.

Runs on the small fixture warehouse in ``segment_tools.validation_fixture``
(ARCHITECTURE.md table names), not on dbt output, so it stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pytest
from segment_tools.validation_fixture import build_fixture_warehouse

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.validation import (
    LAYER_SUITES,
    ValidationFailed,
    load_suite,
    validate_layer,
)
from segment_warehouse.validation.runner import _chunks, prune_run_dirs
from segment_warehouse.warehouse import warehouse

ALL_LAYERS = ["raw", "staging", "marts", "segments"]


def _settings(root: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(root / "warehouse"))
    monkeypatch.setenv("SEGMENTS_REPORTS_DIR", str(root / "reports"))
    monkeypatch.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    monkeypatch.setenv("SEGMENTS_DUCKDB_MEMORY_LIMIT", "512MB")
    return get_settings()


@pytest.fixture()
def fixture_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = _settings(tmp_path, monkeypatch)
    with warehouse(settings=settings) as con:
        build_fixture_warehouse(con)
    return settings


def _results(settings: Settings, run_id: str) -> list[dict]:
    with warehouse(read_only=True, settings=settings) as con:
        cur = con.execute(
            "select * from audit.validation_results where run_id = ? order by suite, expectation",
            [run_id],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --------------------------------------------------------------------------
def test_suite_files_are_valid_gx_expectations() -> None:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    settings = get_settings()
    for layer in ALL_LAYERS:
        suite = load_suite(layer, settings.expectations_dir)
        assert suite.name == LAYER_SUITES[layer]
        for batch in suite.batches:
            for spec in batch.expectations:
                assert spec.severity in {"critical", "warning"}
                assert spec.description
                # Raises if GX does not know the type or rejects the kwargs.
                ExpectationConfiguration(
                    type=spec.type, kwargs=spec.kwargs, meta=spec.meta
                ).to_domain_obj()


def test_good_fixture_passes_and_reports(fixture_settings: Settings) -> None:
    outcome = validate_layer(ALL_LAYERS, run_id="manual__2024-01-01T00:00:00+00:00")

    assert outcome.success, [r.expectation for r in outcome.results if not r.success]
    assert [s.suite for s in outcome.suites] == ["raw_contract", "staging", "marts", "segments"]
    assert not outcome.warnings
    rows = _results(fixture_settings, outcome.run_id)
    assert len(rows) == len(outcome.results) > 80
    assert {r["severity"] for r in rows} == {"critical", "warning"}
    assert all(r["success"] for r in rows)
    # The row-accounting check really ran on data, not on an empty frame.
    accounting = next(
        r
        for r in rows
        if r["expectation_type"] == "expect_column_pair_values_to_be_equal"
        and r["batch_name"] == "manifest_row_accounting"
    )
    assert accounting["element_count"] == 4

    report = fixture_settings.validation_reports_dir / "index.html"
    html = report.read_text(encoding="utf-8")
    assert "Incoming files and rejected rows" in html
    assert "negative amount: total_amount" in html  # rows quarantined by reason
    assert "not a gzip file" in html  # whole-file quarantine
    assert "Files rejected as a whole" in html
    for suite in outcome.suites:
        assert Path(suite.data_docs or "").is_file()  # GX data docs site per suite
    assert 'href="runs/manual__2024-01-01T00_00_00_00_00/marts/index.html"' in html


def test_duplicate_customer_fails_critically(fixture_settings: Settings) -> None:
    with warehouse(settings=fixture_settings) as con:
        con.execute(
            "insert into marts.customer_profiles select * from marts.customer_profiles "
            "where customer_id = 'cus_1'"
        )
    with pytest.raises(ValidationFailed) as info:
        validate_layer("marts", run_id="run_dup")

    assert "customer_profiles_full_table: expect_column_max_to_be_between" in str(info.value)
    failed = [r for r in _results(fixture_settings, "run_dup") if not r["success"]]
    # uniqueness is a table-level invariant: SQL over the whole table, reported once
    assert [(r["batch_name"], r["column_name"]) for r in failed] == [
        ("customer_profiles_full_table", "duplicate_customer_ids")
    ]
    assert failed[0]["severity"] == "critical" and failed[0]["check_scope"] == "table"
    assert failed[0]["observed_value"] == "found 1"
    html = (fixture_settings.validation_reports_dir / "index.html").read_text(encoding="utf-8")
    assert "Each customer has exactly one profile" in html and "Failed" in html


def test_raw_contact_column_in_a_published_table_fails_critically(
    fixture_settings: Settings,
) -> None:
    # the same rule (publish.RAW_PII_COLUMN_REGEX) that makes publish refuse the table
    with warehouse(settings=fixture_settings) as con:
        con.execute("create table marts.leaky as select 'x' as customer_id, '1' as mobile_phone")
    with pytest.raises(ValidationFailed):
        validate_layer("marts", run_id="run_leak")
    failed = [r for r in _results(fixture_settings, "run_leak") if not r["success"]]
    assert [r["batch_name"] for r in failed] == ["published_columns"]
    assert failed[0]["severity"] == "critical"


def test_refused_consent_customer_in_segments_fails(fixture_settings: Settings) -> None:
    with warehouse(settings=fixture_settings) as con:
        con.execute(
            "insert into segments.customer_segments values ('cus_2', 1, 'Browsers', 'seg_run_1')"
        )
    with pytest.raises(ValidationFailed) as info:
        validate_layer("segments", run_id="run_consent")

    failed = {r.expectation: r for r in info.value.outcome.critical_failures}
    consent = [k for k in failed if "consent_state" in k and "consent refused" in k]
    assert consent, failed.keys()
    rows = _results(fixture_settings, "run_consent")
    recorded = [r for r in rows if r["expectation"] == consent[0]]
    assert recorded and recorded[0]["success"] is False and recorded[0]["severity"] == "critical"
    # cus_2 also makes the run totals disagree with n_profiled.
    assert any("summary_size_total" not in k and "assigned_customers" in k for k in failed)


def test_warning_is_recorded_but_does_not_raise(fixture_settings: Settings) -> None:
    with warehouse(settings=fixture_settings) as con:
        con.execute(
            "update staging.stg_crm__contacts set email = 'not-an-email' where contact_id = 'k2'"
        )
    outcome = validate_layer("staging", run_id="run_warn")

    assert outcome.success
    assert [w.batch for w in outcome.warnings] == ["crm_contacts"]
    rows = [r for r in _results(fixture_settings, "run_warn") if not r["success"]]
    assert len(rows) == 1 and rows[0]["severity"] == "warning"
    # Emails are PII: counts only, the value never reaches audit rows or reports.
    assert "not-an-email" not in json.dumps(rows, default=str)
    reports = fixture_settings.validation_reports_dir
    assert not any("not-an-email" in p.read_text(errors="ignore") for p in reports.rglob("*.html"))
    assert "Needs a look" in (reports / "index.html").read_text(encoding="utf-8")


def test_missing_table_is_a_critical_failure(fixture_settings: Settings) -> None:
    with warehouse(settings=fixture_settings) as con:
        con.execute("drop table marts.fct_orders")
    with pytest.raises(ValidationFailed):
        validate_layer("marts", run_id="run_missing")
    rows = _results(fixture_settings, "run_missing")
    missing = [r for r in rows if r["expectation_type"] == "batch_available"]
    assert [r["batch_name"] for r in missing] == ["orders_count_reconciliation"]
    assert "fct_orders" in missing[0]["observed_value"]


def test_rerun_of_same_run_replaces_rows(fixture_settings: Settings) -> None:
    first = validate_layer("raw", run_id="run_retry")
    validate_layer("raw", run_id="run_retry")
    assert len(_results(fixture_settings, "run_retry")) == len(first.results)


def test_rows_are_streamed_in_chunks_of_one_scan() -> None:
    con = duckdb.connect()
    con.execute("create table t as select 'id' || i as key, i from range(5000) r(i)")
    frames = list(_chunks(con, "select key, i from t where i >= ?", [0], chunk_rows=2048))
    assert [len(f) for f in frames] == [2048, 2048, 904]
    assert sorted(k for f in frames for k in f["key"]) == sorted(f"id{i}" for i in range(5000))
    empty = list(_chunks(con, "select key, i from t where i < 0", [], chunk_rows=2048))
    assert len(empty) == 1 and list(empty[0].columns) == ["key", "i"] and empty[0].empty


def test_prune_keeps_newest_run_folders(tmp_path: Path) -> None:
    for i in range(5):
        d = tmp_path / f"run{i}"
        d.mkdir()
        os.utime(d, (1_000 + i, 1_000 + i))
    pruned = prune_run_dirs(tmp_path, keep=2)
    assert sorted(p.name for p in pruned) == ["run0", "run1", "run2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run3", "run4"]

