"""Staging, the intermediate models, identity resolution and the marts on Spark equal DuckDB's.

(a) a small generated landing zone (segment_tools.generator, 1,000 customers,
seed 19: the generator's mix of phone formats, currencies, user agents and bad
rows) is ingested into a DuckDB warehouse by the real loaders, the hand-made
raw fixture of tests/test_dbt_models.py (its edge cases) is added to the same
raw tables, and staging is built there the normal way (dbt_runner); (b) the
raw tables are exported to Parquet and registered as Spark tables of the same
names; (c) the same dbt project builds staging and int_contacts_deduplicated,
int_orders_deduplicated, int_events_deduplicated, int_sessions_aggregated with
``--target spark`` (segment_warehouse.spark.runner: a local Spark session with
the same Python UDFs); (d) every one of those tables, read back from
the Parquet Spark wrote, is compared with DuckDB's: the same columns with the
same DuckDB types (text, boolean, decimal(18,4), timestamp vs timestamp with
time zone, ...), the same rows as a multiset (order-insensitive). Tolerance:
doubles are compared at 12 significant digits (the engines may differ in the
last bit of a product); every other value must be equal. (e) The Spark build
runs again on the same catalog without new raw rows: the append models take
their incremental branch on Spark and must come out unchanged.

Identity: the SQL identity models build on Spark; the matcher's pairs
(Splink's Spark backend) and the components (label propagation) are computed
by the Spark runner between dbt phases (segment_warehouse.spark.identity).
component_id is a per-build label on both engines: it is compared as the
smallest node of its component; first_name_forms (its order is not defined on
either engine) as a sorted list. Every SQL model downstream of identity is
compared too: int_customer_attributes_survived, int_orders_attributed,
int_sessions_stitched, int_customers_aggregated and the marts identity_map,
fct_orders, fct_sessions, customer_features, customer_rule_segments,
customer_profiles (their date-relative columns read the fixed as_of_date of
VARS on both engines). No type exception: the date parts of
int_contacts_match_features (INT on Spark) and the sums of counts in
int_customers_aggregated (HUGEINT on DuckDB, a type neither Spark nor Parquet
has) are BIGINT on both engines by a cast in the models. No tolerance beyond the
doubles' 12 digits: the decimal quotients (avg_order_value, discount_share) are
divided as doubles on both engines (portable.sql, quotient_double), so they
agree to the last bit here.

Run with ``make test-spark``; needs requirements-spark.txt and Java 17+.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import duckdb
import pytest

pytest.importorskip("pyspark")
pytest.importorskip("dbt.adapters.spark")

from segment_tools.generator.core import DEFAULT_END
from test_dbt_models import RAW_COLUMNS, load_fixture

from segment_warehouse.config import get_settings
from segment_warehouse.dbt_runner import run_dbt
from segment_warehouse.ingest.loader import load_all
from segment_warehouse.spark.runner import run_dbt_spark
from segment_warehouse.spark.runner import target_dir as spark_target_dir
from segment_warehouse.spark.tables import export_duckdb_tables

pytestmark = pytest.mark.spark

STAGING_MODELS = ("stg_crm__contacts", "stg_transactions__orders", "stg_analytics__events")
# The intermediate models that need no identity model (int_identities_resolved
# and the rest of intermediate/identity do not run on Spark yet).
INTERMEDIATE_MODELS = (
    "int_contacts_deduplicated",
    "int_orders_deduplicated",
    "int_events_deduplicated",
    "int_sessions_aggregated",
)
IDENTITY_MODELS = {
    "int_identifier_placeholders": "intermediate",
    "int_anonymous_ids_classified": "intermediate",
    "int_contact_match_pairs": "intermediate",
    "int_contact_matches": "intermediate",
    "int_identity_edges": "intermediate",
    "int_identity_components": "intermediate",
    "int_identities_resolved": "intermediate",
    "int_identity_components_oversized": "intermediate",
    "identity_merges": "audit",
    "int_contacts_match_features": "intermediate",
}
# The models downstream of identity: the customer models and every SQL mart
CUSTOMER_MODELS = {
    "int_customer_attributes_survived": "intermediate",
    "int_orders_attributed": "intermediate",
    "int_sessions_stitched": "intermediate",
    "int_customers_aggregated": "intermediate",
    "identity_map": "marts",
    "fct_orders": "marts",
    "fct_sessions": "marts",
    "customer_features": "marts",
    "customer_rule_segments": "marts",
    "customer_profiles": "marts",
}
MODELS = {
    **{model: "staging" for model in STAGING_MODELS},
    **{model: "intermediate" for model in INTERMEDIATE_MODELS},
    **IDENTITY_MODELS,
    **CUSTOMER_MODELS,
}
# Staging and its seeds, then those intermediate models; `cautious`: not the
# tests that also read models outside the selection (marts, customers).
SELECT = ["--select", "+staging", *INTERMEDIATE_MODELS, "--indirect-selection", "cautious"]
IDENTITY_SELECT = [
    "--select", "+staging", *INTERMEDIATE_MODELS, *IDENTITY_MODELS, *CUSTOMER_MODELS,
    "name_nicknames", "identity_blocked_pairs",
    "--indirect-selection", "cautious",
]  # fmt: skip
# No placeholder shared by several people and no oversized component in the
# zone: compared (both empty), their logic is in the unit tests both engines run
EMPTY_ON_THE_ZONE = ("int_identifier_placeholders", "int_identity_components_oversized")
# Unit tests whose fixtures are DuckDB SQL: DuckDB only (dbt_project.yml)
DUCKDB_ONLY_UNIT_TESTS = {
    f"unit_test.segment_warehouse.int_identity_edges.{name}"
    for name in (
        "ut_identity_edges_shared_phone_household_twins_father_son_do_not_merge",
        "ut_identity_edges_shared_phone_with_compatible_name_merges",
        "ut_identity_edges_devices_are_candidates_and_data_placeholders_do_not_link",
    )
}
# Tables whose component_id is compared as the smallest node of its component
COMPONENT_LABELLED = (
    "int_identity_components", "int_identities_resolved", "int_identity_components_oversized",
)  # fmt: skip
# The generated zone's last day, so int_sessions_aggregated keeps the zone's
# sessions (and the fixture's, which are earlier); staging reads no as_of_date.
VARS = {"as_of_date": DEFAULT_END.isoformat(), "reporting_currency": "USD"}
FLOAT_DIGITS = 12
ZONE_CUSTOMERS = 1000
ZONE_SEED = 19


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("spark_eq")
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGMENTS_WAREHOUSE_DIR", str(root / "warehouse"))
    mp.setenv("SEGMENTS_REPORTS_DIR", str(root / "reports"))
    mp.setenv("SEGMENTS_PII_KEY", "test-key-not-secret")
    mp.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    mp.setenv("SEGMENTS_SPARK_MASTER", "local[1]")
    mp.setenv("SEGMENTS_LANDING_DIR", str(root / "landing"))
    mp.setenv("SEGMENTS_LANDING_SETTLE_SECONDS", "0")
    settings = get_settings()
    settings.warehouse_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable, "-m", "segment_tools.generator", "--customers", str(ZONE_CUSTOMERS),
            "--seed", str(ZONE_SEED), "--out", str(root / "landing"), "--workers", "1",
            "--no-progress",
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    load_all(settings=settings, settle_seconds=0)
    con = duckdb.connect(str(settings.warehouse_db))
    try:
        load_fixture(con, "b1", datetime(2024, 6, 30, 23, 0, tzinfo=UTC))
    finally:
        con.close()

    duck = run_dbt(["build", *IDENTITY_SELECT], settings=settings, vars=VARS)
    assert duck.success, duck.summary()

    con = duckdb.connect(str(settings.warehouse_db), read_only=True)
    try:
        raw = export_duckdb_tables(con, [("raw", t) for t in RAW_COLUMNS], root / "raw_parquet")
    finally:
        con.close()
    exports = {f"{schema}.{m}": root / "spark_out" / m for m, schema in MODELS.items()}
    spark = run_dbt_spark(
        ["build", *IDENTITY_SELECT], settings=settings, vars=VARS, parquet_tables=raw,
        export_tables=exports,
    )  # fmt: skip
    assert spark.success, spark.summary() + "\n" + spark.stdout[-4000:] + spark.stderr[-4000:]
    # the runner's report of this build (the rerun below writes its own)
    spark_timings = json.loads((spark_target_dir(settings) / "spark_session.json").read_text())
    # The same build again on the same Spark catalog, no new raw rows: the
    # append models now take their incremental branch on Spark.
    rerun_exports = {
        f"{MODELS[m]}.{m}": root / "spark_rerun" / m
        for m in (*STAGING_MODELS, *INTERMEDIATE_MODELS)
    }
    rerun = run_dbt_spark(
        ["build", *SELECT], settings=settings, vars=VARS, parquet_tables=raw,
        export_tables=rerun_exports,
    )  # fmt: skip
    assert rerun.success, rerun.summary() + "\n" + rerun.stdout[-4000:] + rerun.stderr[-4000:]
    yield {
        "db": settings.warehouse_db, "exports": exports, "duck": duck, "spark": spark,
        "rerun_exports": rerun_exports, "spark_compiled": spark_target_dir(settings) / "compiled",
        "spark_timings": spark_timings,
    }  # fmt: skip
    mp.undo()


def _normalise(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_normalise(v) for v in value)
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.{FLOAT_DIGITS}g}")
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[tuple[str, str]], Counter[tuple]]:
    """(column name, DuckDB type) pairs and the rows as a multiset."""
    columns = [(name, str(type_)) for name, type_, *_ in con.execute(f"describe {sql}").fetchall()]
    rows = con.execute(sql).fetchall()
    return columns, Counter(tuple(_normalise(v) for v in row) for row in rows)


def test_spark_build_ran_the_same_nodes(built: dict[str, Any]) -> None:
    def passed(result: Any) -> set[str]:
        return {n.unique_id for n in result.nodes if n.status in {"success", "pass"}}

    duck, spark = passed(built["duck"]), passed(built["spark"])
    assert {f"model.segment_warehouse.{m}" for m in MODELS} <= spark
    # every data and unit test of the selected models passed on both engines,
    # but for the unit tests whose fixtures are DuckDB SQL
    assert spark <= duck, sorted(spark - duck)
    assert duck - spark == DUCKDB_ONLY_UNIT_TESTS, sorted(duck - spark)


@pytest.mark.parametrize("model", list(MODELS))
def test_table_equal_on_both_engines(built: dict[str, Any], model: str) -> None:
    schema = MODELS[model]
    con = duckdb.connect(str(built["db"]), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        folder = built["exports"][f"{schema}.{model}"]
        spark_table = f"read_parquet('{folder}/*.parquet')"
        duck_columns, duck_rows = _rows(con, f"select * from {schema}.{model}")
        spark_columns, spark_rows = _rows(con, f"select * from {spark_table}")
        if model == "int_contacts_match_features":
            q = "select * replace (list_sort(first_name_forms) as first_name_forms) from "
            duck_rows = _rows(con, q + f"{schema}.{model}")[1]
            spark_rows = _rows(con, q + spark_table)[1]
        if model in COMPONENT_LABELLED:
            resolved = built["exports"]["intermediate.int_identities_resolved"]
            duck_rows = _rows(
                con,
                _canonical_components(f"{schema}.{model}", "intermediate.int_identities_resolved"),
            )[1]
            spark_rows = _rows(
                con, _canonical_components(spark_table, f"read_parquet('{resolved}/*.parquet')")
            )[1]
    finally:
        con.close()
    assert spark_columns == duck_columns
    if model not in EMPTY_ON_THE_ZONE:
        assert sum(duck_rows.values()) > 0
    if "model_version" in dict(duck_columns):
        # a retrained model between the two builds would differ everywhere
        versions = {row[-1] for row in duck_rows} | {row[-1] for row in spark_rows}
        assert len(versions) <= 1, f"splink_model.json changed between the builds: {versions}"
    only_duck = duck_rows - spark_rows
    only_spark = spark_rows - duck_rows
    assert not only_duck and not only_spark, (
        f"{model}: {sum(only_duck.values())} rows only on DuckDB, "
        f"{sum(only_spark.values())} only on Spark\n"
        f"DuckDB: {sorted(only_duck, key=repr)[:5]}\nSpark:  {sorted(only_spark, key=repr)[:5]}"
    )


def _canonical_components(table: str, resolved: str) -> str:
    """``table`` with component_id replaced by its component's smallest node."""
    return f"""
        select t.* replace (labels.smallest_node as component_id)
        from {table} as t
        inner join (
            select component_id, min(node) as smallest_node from {resolved} group by component_id
        ) as labels on t.component_id = labels.component_id
    """


def test_identity_steps_reported(built: dict[str, Any]) -> None:
    timings = built["spark_timings"]
    pairs, components = timings["identity_pairs"], timings["identity_components"]
    assert pairs["records"] > 900 and 0 < pairs["prior"] < 1
    # both passes settled, well inside the cap, and the report says how deep
    for name in ("backbone", "with_devices"):
        rounds = components[name]["rounds"]
        assert 1 <= rounds < components["max_iterations"]
        assert components[name]["label_changes"][-1] == 0
    assert components["nodes"] > components["components"] > 0


APPEND_MODELS = (*STAGING_MODELS, "int_events_deduplicated")


@pytest.mark.parametrize("model", APPEND_MODELS)
def test_incremental_rerun_on_spark_changes_nothing(built: dict[str, Any], model: str) -> None:
    # the rerun compiled the incremental branch (the Spark watermark literal) ...
    # (the unit tests' compiled SQL sits in folders named after their .yml)
    paths = built["spark_compiled"].rglob(f"{model}.sql")
    (compiled,) = (path for path in paths if path.parent.suffix != ".yml")
    assert "timestamp'1900-01-01 00:00:00'" in compiled.read_text()
    # ... and, with no new raw rows, appended nothing and lost nothing
    con = duckdb.connect(str(built["db"]), read_only=True)
    try:
        name = f"{MODELS[model]}.{model}"
        first, again = (
            _rows(con, f"select * from read_parquet('{exports[name]}/*.parquet')")
            for exports in (built["exports"], built["rerun_exports"])
        )
    finally:
        con.close()
    assert again == first
