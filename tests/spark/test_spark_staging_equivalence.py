"""Staging, and the intermediate models that need no identity, on Spark equal DuckDB's, row for row.

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

Run with ``make test-spark``; needs requirements-spark.txt and Java 17+.
"""

from __future__ import annotations

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
MODELS = {
    **{model: "staging" for model in STAGING_MODELS},
    **{model: "intermediate" for model in INTERMEDIATE_MODELS},
}
# Staging and its seeds, then those intermediate models; `cautious`: not the
# tests that also read models outside the selection (marts, identity).
SELECT = ["--select", "+staging", *INTERMEDIATE_MODELS, "--indirect-selection", "cautious"]
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

    duck = run_dbt(["build", *SELECT], settings=settings, vars=VARS)
    assert duck.success, duck.summary()

    con = duckdb.connect(str(settings.warehouse_db), read_only=True)
    try:
        raw = export_duckdb_tables(con, [("raw", t) for t in RAW_COLUMNS], root / "raw_parquet")
    finally:
        con.close()
    exports = {f"{schema}.{m}": root / "spark_out" / m for m, schema in MODELS.items()}
    spark = run_dbt_spark(
        ["build", *SELECT], settings=settings, vars=VARS, parquet_tables=raw, export_tables=exports
    )
    assert spark.success, spark.summary() + "\n" + spark.stdout[-4000:] + spark.stderr[-4000:]
    # The same build again on the same Spark catalog, no new raw rows: the
    # append models now take their incremental branch on Spark.
    rerun_exports = {name: root / "spark_rerun" / name for name in exports}
    rerun = run_dbt_spark(
        ["build", *SELECT], settings=settings, vars=VARS, parquet_tables=raw,
        export_tables=rerun_exports,
    )  # fmt: skip
    assert rerun.success, rerun.summary() + "\n" + rerun.stdout[-4000:] + rerun.stderr[-4000:]
    yield {
        "db": settings.warehouse_db, "exports": exports, "duck": duck, "spark": spark,
        "rerun_exports": rerun_exports, "spark_compiled": spark_target_dir(settings) / "compiled",
    }  # fmt: skip
    mp.undo()


def _normalise(value: Any) -> Any:
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
    # every data and unit test of the selected models passed on both engines
    assert duck == spark


@pytest.mark.parametrize("model", list(MODELS))
def test_table_equal_on_both_engines(built: dict[str, Any], model: str) -> None:
    schema = MODELS[model]
    con = duckdb.connect(str(built["db"]), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        duck_columns, duck_rows = _rows(con, f"select * from {schema}.{model}")
        folder = built["exports"][f"{schema}.{model}"]
        spark_columns, spark_rows = _rows(con, f"select * from read_parquet('{folder}/*.parquet')")
    finally:
        con.close()
    assert spark_columns == duck_columns
    assert sum(duck_rows.values()) > 0
    only_duck = duck_rows - spark_rows
    only_spark = spark_rows - duck_rows
    assert not only_duck and not only_spark, (
        f"{model}: {sum(only_duck.values())} rows only on DuckDB, "
        f"{sum(only_spark.values())} only on Spark\n"
        f"DuckDB: {sorted(only_duck, key=repr)[:5]}\nSpark:  {sorted(only_spark, key=repr)[:5]}"
    )


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
