"""Great Expectations on Spark DataFrames (SEGMENTS_ENGINE=spark) equals GX on pandas.

The same staging and marts suites run on the same data through both engines:
two copies of the small validation fixture warehouse
(``segment_tools.validation_fixture``) with the same bad rows planted; for the
Spark one, the relations the rows batches read are written as Parquet with a
``built_exports.json`` beside them, as a Spark build leaves them
(``spark/runner.py: export_built_relations``), so the rows batches run on
Spark DataFrames of those files through GX's ``SparkDFExecutionEngine``. Per
expectation the outcome must be the same: success, element, unexpected and
missing counts, the observation text and the examples (doubles to 12
significant digits: the only float GX reports here is the unexpected share,
computed from the same integer counts, and the example values, read from the
same Parquet doubles). A second call with new and changed rows checks the delta
scope on Spark: the same rows checked as on DuckDB.

One Spark session (local[1]) for the module. Run with ``make test-spark``
(``pytest -m spark``); skipped without pyspark.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

pytest.importorskip("pyspark")

from segment_tools.validation_fixture import build_fixture_warehouse

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.spark.runner import target_dir
from segment_warehouse.spark.tables import export_duckdb_tables
from segment_warehouse.validation import load_suite, validate_layer
from segment_warehouse.validation.spark_batches import (
    ENGINE_SPARK_NOTE,
    SPARK_ROW_TYPES,
    SparkBatches,
    relations_read,
    spark_sql,
)
from segment_warehouse.validation.suites import is_row_level
from segment_warehouse.warehouse import warehouse

pytestmark = pytest.mark.spark

LAYERS = ["staging", "marts"]
FLOAT_DIGITS = 12
# The relations the staging and marts rows batches read (what a Spark build exports)
EXPORTED = [
    ("staging", "stg_crm__contacts"),
    ("staging", "stg_transactions__orders"),
    ("staging", "stg_analytics__events"),
    ("marts", "customer_profiles"),
]

# New and changed rows after the first (clean, passing) validation: the second
# call is a delta on both engines (new load times, changed profile digests) and
# each breaks rules, so failing rules with unexpected rows are compared too.
NOW = "now() + interval 1 second"
BAD_ROWS = [
    # phone not E.164, email with capitals, unknown gender, created in the future
    "insert into staging.stg_crm__contacts select * replace ('k9' as contact_id, "
    "'12345' as phone_e164, 'Ann@Example.com' as email, 'x' as gender, "
    f"timestamp '2999-01-01 00:00:00' as created_at, {NOW} as _loaded_at) "
    "from staging.stg_crm__contacts where contact_id = 'k1' limit 1",
    # updated before ts_min
    "insert into staging.stg_crm__contacts select * replace ('k8' as contact_id, "
    f"timestamp '1990-05-01 10:00:00' as updated_at, {NOW} as _loaded_at) "
    "from staging.stg_crm__contacts where contact_id = 'k2'",
    # unknown currency, FX rate 0 (strict minimum), negative decimal amount
    "insert into staging.stg_transactions__orders select * replace ('o9' as order_id, "
    "'XXX' as currency, 0.0 as fx_rate_to_reporting, -5.25 as total_amount, "
    f"{NOW} as _loaded_at) from staging.stg_transactions__orders where order_id = 'o1'",
    # unknown event type, a null bot flag
    "insert into staging.stg_analytics__events select * replace ('m9' as message_id, "
    f"'screen' as event_type, null as is_bot, {NOW} as _loaded_at) "
    "from staging.stg_analytics__events where message_id = 'm1'",
    # a changed profile: negative double, score out of range, unknown stage
    "update marts.customer_profiles set avg_order_value = -1.5, recency_score = 9, "
    "lifecycle_stage = 'zombie' where customer_id = 'cus_1'",
]
# (batch, column, unexpected rows) the bad rows must produce, on both engines
BROKEN = {
    ("crm_contacts", "phone_e164", 1), ("crm_contacts", "email", 1),
    ("crm_contacts", "gender", 1), ("crm_contacts", "created_at", 1),
    ("crm_contacts", "updated_at", 1), ("orders", "currency", 1),
    ("orders", "fx_rate_to_reporting", 1), ("orders", "total_amount", 1),
    ("events", "event_type", 1), ("events", "is_bot", 1),
    ("customer_profiles", "avg_order_value", 1), ("customer_profiles", "recency_score", 1),
    ("customer_profiles", "lifecycle_stage", 1),
}  # fmt: skip


def _export(settings: Settings) -> None:
    """What a Spark build leaves: the relations as Parquet, listed in built_exports.json."""
    out = settings.warehouse_dir / "spark" / "built_parquet"
    with warehouse(read_only=True, settings=settings) as con:
        folders = export_duckdb_tables(con, EXPORTED, out)
    target = target_dir(settings)
    target.mkdir(parents=True, exist_ok=True)
    entries = [
        {"schema": s, "name": n, "materialized": "table", "folder": str(folder),
         "unique_id": f"model.segment_warehouse.{n}"}
        for (s, n), folder in folders.items()
    ]  # fmt: skip
    (target / "built_exports.json").write_text(json.dumps(entries))


def _run(
    settings: Settings, run_id: str, *, full: bool = False
) -> tuple[dict[tuple[str, str, str], dict], float]:
    started = time.time()
    outcome = validate_layer(
        LAYERS, run_id=run_id, settings=settings, raise_on_failure=False, full=full
    )
    seconds = time.time() - started
    with warehouse(read_only=True, settings=settings) as con:
        cur = con.execute(
            "select * from audit.validation_results where run_id = ? order by suite, expectation",
            [run_id],
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    assert len(rows) == len(outcome.results)
    return {(r["suite"], r["batch_name"], r["expectation"]): r for r in rows}, seconds


def _warehouse(root: Path, mp: pytest.MonkeyPatch, engine: str) -> Settings:
    mp.setenv("SEGMENTS_WAREHOUSE_DIR", str(root / engine / "warehouse"))
    mp.setenv("SEGMENTS_REPORTS_DIR", str(root / engine / "reports"))
    settings = dataclasses.replace(get_settings(), engine=engine)
    with warehouse(settings=settings) as con:
        build_fixture_warehouse(con)
    return settings


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three validations per engine: clean (full), bad rows (delta), bad rows (full)."""
    root = tmp_path_factory.mktemp("gx_spark")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGMENTS_SPARK_MASTER", "local[1]")
        mp.setenv("SEGMENTS_SPARK_SHUFFLE_PARTITIONS", "1")
        mp.setenv("SEGMENTS_PII_KEY", "test-secret")
        mp.setenv("SEGMENTS_DUCKDB_THREADS", "1")
        mp.setenv("SEGMENTS_DUCKDB_MEMORY_LIMIT", "512MB")
        engines = {"duck": _warehouse(root, mp, "duckdb"), "spark": _warehouse(root, mp, "spark")}
        out: dict[str, Any] = {"duck_settings": engines["duck"], "spark_settings": engines["spark"]}
        _export(engines["spark"])
        for name, settings in engines.items():
            out[f"{name}_1"], out[f"{name}_1_s"] = _run(settings, "r1")
        for settings in engines.values():
            with warehouse(settings=settings) as con:
                for sql in BAD_ROWS:
                    con.execute(sql)
        _export(engines["spark"])
        for name, settings in engines.items():
            out[f"{name}_2"], out[f"{name}_2_s"] = _run(settings, "r2")
            out[f"{name}_3"], out[f"{name}_3_s"] = _run(settings, "r3", full=True)
        print(  # the measured figures (pytest -s)
            "validation seconds (clean full / delta / full): "
            + ", ".join(
                f"{n} " + " / ".join(f"{out[f'{n}_{i}_s']:.1f}" for i in (1, 2, 3))
                for n in engines
            )
        )
        yield out
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()


def _number(value: Any) -> Any:
    """An example as a number where it is one: a decimal column's example is a
    double on pandas (DuckDB's ``.df()`` turns DECIMAL into float64) and an exact
    decimal on Spark, written as its text ("0.00" for 0.0)."""
    if isinstance(value, str):
        try:
            return float(value.replace(",", ""))
        except ValueError:
            return value
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _close(a: Any, b: Any) -> bool:
    a, b = _number(a), _number(b)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=10**-FLOAT_DIGITS) or a == b
    return a == b


def _examples(row: dict) -> list[Any]:
    return sorted(json.loads(row["details"]).get("examples") or [], key=lambda v: str(_number(v)))


def _assert_same(duck: dict, spark: dict) -> None:
    assert duck.keys() == spark.keys()
    for key, d in duck.items():
        s = spark[key]
        for column in ("success", "severity", "element_count", "unexpected_count",
                       "check_scope", "rows_checked", "rows_total"):  # fmt: skip
            assert d[column] == s[column], (key, column, d[column], s[column])
        # the observation without its examples (their order is the engine's)
        assert d["observed_value"].split("; e.g.")[0] == s["observed_value"].split("; e.g.")[0]
        ex_d, ex_s = _examples(d), _examples(s)
        assert len(ex_d) == len(ex_s), key
        if (d["unexpected_count"] or 0) <= len(ex_d):  # every bad row shown: the same ones
            assert all(_close(a, b) for a, b in zip(ex_d, ex_s, strict=True)), (key, ex_d, ex_s)


def _rows_results(results: dict) -> dict[str, dict]:
    return {k[1]: r for k, r in results.items() if r["check_scope"] == "rows"}


def _broken(results: dict) -> set[tuple[str, str, int]]:
    return {
        (k[1], r["column_name"], r["unexpected_count"])
        for k, r in results.items()
        if r["check_scope"] == "rows" and not r["success"]
    }


def test_clean_full_run_same_outcome_on_spark(runs: dict[str, Any]) -> None:
    duck, spark = runs["duck_1"], runs["spark_1"]
    _assert_same(duck, spark)
    assert all(r["success"] for r in spark.values())
    for batch, r in _rows_results(spark).items():
        assert r["rows_checked"] == r["rows_total"] > 0, batch


def test_rows_batches_ran_on_spark_and_the_report_says_so(runs: dict[str, Any]) -> None:
    for (_, batch, _), r in runs["spark_1"].items():
        if r["check_scope"] == "rows":
            assert r["scope_note"].endswith(ENGINE_SPARK_NOTE), (batch, r["scope_note"])
            assert r["scope_note"].startswith("full: first validation")
        else:
            assert "engine: DuckDB" in r["scope_note"]
    for r in runs["duck_1"].values():
        assert "engine:" not in (r["scope_note"] or "")  # the DuckDB engine's text unchanged
    html = (runs["spark_settings"].validation_reports_dir / "index.html").read_text()
    assert "engine: Spark (GX SparkDFExecutionEngine" in html
    assert "engine: DuckDB (SQL aggregate over the copy in warehouse.duckdb)" in html


def test_delta_on_spark_checks_the_rows_duckdb_checks(runs: dict[str, Any]) -> None:
    duck, spark = runs["duck_2"], runs["spark_2"]
    _assert_same(duck, spark)
    rows = _rows_results(spark)
    # new load times (staging) and a changed digest (profiles) only
    assert {b: (r["rows_checked"], r["rows_total"]) for b, r in rows.items()} == {
        "crm_contacts": (2, 7),
        "orders": (1, 5),
        "events": (1, rows["events"]["rows_total"]),
        "customer_profiles": (1, 5),
    }
    assert rows["events"]["rows_total"] > 1
    assert all(r["scope_note"].startswith("delta") for r in rows.values())
    assert _broken(spark) == BROKEN


def test_full_run_with_bad_rows_same_outcome(runs: dict[str, Any]) -> None:
    duck, spark = runs["duck_3"], runs["spark_3"]
    _assert_same(duck, spark)
    for batch, r in _rows_results(spark).items():
        assert r["rows_checked"] == r["rows_total"], batch
    assert _broken(spark) == BROKEN
    # a critical failure on both: the gate would stop the run on either engine
    assert any(not r["success"] and r["severity"] == "critical" for r in spark.values())


def test_row_level_types_of_the_suites_are_spark_verified() -> None:
    # a new type in a staging/marts rows batch must be added to the equivalence
    # data here before it may run on Spark (else its batch falls back to DuckDB)
    settings = get_settings()
    used = {
        spec.type
        for layer in LAYERS
        for batch in load_suite(layer, settings.expectations_dir).batches
        if batch.scope == "rows"
        for spec in batch.expectations
        if is_row_level(spec.type)
    }
    assert used == SPARK_ROW_TYPES


def test_relations_and_the_spark_sql_rewrite() -> None:
    sql = (
        "select o.a from marts.fct_orders o join staging.x s on s.k = o.k "
        "where s.y = 'marts.fct_orders_z'"
    )
    assert relations_read(sql) == {("marts", "fct_orders"), ("staging", "x")}
    assert relations_read("select * from information_schema.columns") == set()
    assert relations_read("select * from plain_table") is None
    rewritten = spark_sql(sql, {("marts", "fct_orders"), ("staging", "x")})
    assert "from _gx_marts__fct_orders o join _gx_staging__x s" in rewritten
    assert "'marts.fct_orders_z'" in rewritten  # a longer name is not touched


def test_fallbacks_to_duckdb_say_why(runs: dict[str, Any], tmp_path: Path) -> None:
    settings = runs["spark_settings"]
    suite = load_suite("marts", settings.expectations_dir)
    profiles = next(b for b in suite.batches if b.name == "customer_profiles")
    table = next(b for b in suite.batches if b.scope == "table")
    batches = SparkBatches(settings)
    try:
        assert batches.static_reason(table) == "table batch"
        assert batches.static_reason(profiles) is None
        odd = dataclasses.replace(
            profiles,
            expectations=(
                dataclasses.replace(
                    profiles.expectations[0], type="expect_column_values_to_be_dateutil_parseable"
                ),
            ),
        )
        assert "not verified on GX's Spark engine" in (batches.static_reason(odd) or "")
        unexported = dataclasses.replace(profiles, sql="select * from marts.identity_map")
        assert "marts.identity_map, not written by the Spark build" in (
            batches.static_reason(unexported) or ""
        )
        # DuckDB's copy rewritten after the Spark build: its Parquet is not what
        # publish reads, so the batch runs on DuckDB
        with warehouse(settings=settings) as con:
            con.execute("delete from marts.customer_profiles where customer_id = 'cus_4'")
            reason = batches.frame(con, profiles)
        assert isinstance(reason, str) and "rewritten since the Spark build" in reason
        missing = dataclasses.replace(settings, warehouse_dir=tmp_path / "nowhere")
        assert "no readable export list" in (SparkBatches(missing).static_reason(profiles) or "")
    finally:
        batches.close()


def test_without_a_spark_export_the_rows_batches_run_on_duckdb(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.setenv("SEGMENTS_REPORTS_DIR", str(tmp_path / "reports"))
    settings = dataclasses.replace(get_settings(), engine="spark")
    with warehouse(settings=settings) as con:
        build_fixture_warehouse(con)
    outcome = validate_layer(["marts"], run_id="r_none", settings=settings)
    assert outcome.success
    with duckdb.connect(str(settings.warehouse_db), read_only=True) as con:
        notes = [
            n
            for (n,) in con.execute(
                "select scope_note from audit.validation_results where check_scope = 'rows'"
            ).fetchall()
        ]
    assert notes and all("engine: DuckDB (no readable export list" in n for n in notes)
