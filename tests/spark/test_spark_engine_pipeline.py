"""The whole pipeline with SEGMENTS_ENGINE=spark publishes what the DuckDB run publishes.

One small generated landing zone (segment_tools.generator, 300 customers, seed
42 - the generator `make demo` runs, smaller; ENGINE_TEST_CUSTOMERS=3000 gives
the demo's own zone) goes through
``segment_warehouse.cli run --date 2026-11-22`` (= ``make run``: both DAGs in
real Airflow, its per-model dbt tasks included) twice, in separate
directories: once with SEGMENTS_ENGINE=duckdb, once with =spark (the dbt
stage on Spark, its tables copied back into warehouse.duckdb; the rest of the
pipeline single-node as before). The published analytics.duckdb of both must
hold the same profiles, identity map, segment assignments and content
decisions: the same columns with the same types, the same rows as a multiset;
doubles at 12 significant digits. Excluded, by design: the columns
:data:`PER_RUN_COLUMNS` names (the id of the reclustering run that wrote
the assignments), nothing else.

Run with ``make test-spark``; needs requirements-spark.txt and Java 17+.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

pytest.importorskip("pyspark")
pytest.importorskip("dbt.adapters.spark")

pytestmark = pytest.mark.spark

LOGICAL_DATE = "2026-11-22"
# `make demo`'s zone is the same generator and seed with 3,000 customers:
# ENGINE_TEST_CUSTOMERS=3000 runs this test on it (minutes longer on Spark)
ZONE_CUSTOMERS = int(os.environ.get("ENGINE_TEST_CUSTOMERS", "300"))
ZONE_SEED = 42
FLOAT_DIGITS = 12
ENGINES = ("duckdb", "spark")
# The published tables compared, with the columns that differ between any two
# runs by design: the id of the reclustering run that wrote the assignment (a
# fresh one per run). The decisions' times are the as-of date, compared.
PER_RUN_COLUMNS: dict[str, tuple[str, ...]] = {
    "marts.customer_profiles": (),
    "marts.identity_map": (),
    "segments.customer_segments": ("run_id",),
    "personalisation.content_decisions": (),
}
# The warehouse schemas dbt writes, compared column for column (types included)
DBT_SCHEMAS = ("staging", "intermediate", "marts", "audit", "reference")
# Views on DuckDB; the Spark build's copy is a table of their rows
VIEWS_COPIED_AS_TABLES = {
    ("intermediate", "int_orders_attributed"), ("intermediate", "int_sessions_stitched"),
}  # fmt: skip


def _run_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segment_warehouse.cli", "run", "--date", LOGICAL_DATE],
        env=env, capture_output=True, text=True, timeout=2400, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("engine")
    landing = root / "landing"
    gen = subprocess.run(
        [
            sys.executable, "-m", "segment_tools.generator", "--customers", str(ZONE_CUSTOMERS),
            "--seed", str(ZONE_SEED), "--out", str(landing), "--workers", "1", "--no-progress",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr[-3000:]
    out: dict[str, Any] = {}
    for engine in ENGINES:
        base = root / engine
        # each run loads its own copy of the same zone
        shutil.copytree(landing, base / "landing")
        env = dict(os.environ)
        env.update(
            SEGMENTS_ENGINE=engine,
            SEGMENTS_PII_KEY="dev-key",
            SEGMENTS_LANDING_DIR=str(base / "landing"),
            SEGMENTS_WAREHOUSE_DIR=str(base / "warehouse"),
            SEGMENTS_REPORTS_DIR=str(base / "reports"),
            SEGMENTS_EXPORTS_DIR=str(base / "exports"),
            SEGMENTS_LANDING_SETTLE_SECONDS="0",
            SEGMENTS_SPARK_MASTER="local[1]",
            AIRFLOW_HOME=str(base / "airflow_home"),
        )
        started = time.time()
        proc = _run_cli(env)
        seconds = time.time() - started
        assert proc.returncode == 0, f"{engine}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        out[engine] = {"proc": proc, "seconds": seconds, "warehouse": base / "warehouse"}
    print("wall time: " + ", ".join(f"{e} {out[e]['seconds']:.0f} s" for e in ENGINES))
    return out


def _normalise(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_normalise(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _normalise(v)) for k, v in value.items()))
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.{FLOAT_DIGITS}g}")
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def _published(warehouse: Path, table: str) -> tuple[list[tuple[str, str]], Counter[tuple]]:
    """(column, type) of ``table`` in the published snapshot, its rows as a multiset
    without the per-run columns."""
    con = duckdb.connect(str(warehouse / "analytics.duckdb"), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        columns = [(n, str(t)) for n, t, *_ in con.execute(f"describe {table}").fetchall()]
        names = [n for n, _ in columns]
        assert set(PER_RUN_COLUMNS[table]) <= set(names), (table, names)
        kept = [n for n in names if n not in PER_RUN_COLUMNS[table]]
        select = ", ".join('"' + n.replace('"', '""') + '"' for n in kept)
        rows = con.execute(f"select {select} from {table}").fetchall()
    finally:
        con.close()
    return columns, Counter(tuple(_normalise(v) for v in row) for row in rows)


def test_both_runs_succeeded_and_the_spark_one_built_on_spark(runs: dict[str, Any]) -> None:
    for engine in ENGINES:
        assert "segment_pipeline succeeded" in runs[engine]["proc"].stdout, engine
    spark_target = runs["spark"]["warehouse"] / "spark" / "dbt_target"
    assert (spark_target / "built_exports.json").exists()
    assert not (runs["duckdb"]["warehouse"] / "spark").exists()


@pytest.mark.parametrize("table", list(PER_RUN_COLUMNS))
def test_published_table_equal_on_both_engines(runs: dict[str, Any], table: str) -> None:
    duck_columns, duck_rows = _published(runs["duckdb"]["warehouse"], table)
    spark_columns, spark_rows = _published(runs["spark"]["warehouse"], table)
    assert spark_columns == duck_columns
    assert sum(duck_rows.values()) > 0
    only_duck, only_spark = duck_rows - spark_rows, spark_rows - duck_rows
    assert not only_duck and not only_spark, (
        f"{table}: {sum(only_duck.values())} rows only on DuckDB, "
        f"{sum(only_spark.values())} only on Spark\n"
        f"DuckDB: {sorted(only_duck, key=repr)[:3]}\nSpark:  {sorted(only_spark, key=repr)[:3]}"
    )


def _relations(warehouse: Path) -> dict[tuple[str, str], tuple[str, list[tuple[str, str]]]]:
    """(schema, name) -> (table type, [(column, type), ...]) of the dbt schemas."""
    con = duckdb.connect(str(warehouse / "warehouse.duckdb"), read_only=True)
    try:
        schemas = list(DBT_SCHEMAS)
        kinds = con.execute(
            "select table_schema, table_name, table_type from information_schema.tables "
            "where list_contains(?, table_schema)",
            [schemas],
        ).fetchall()
        columns = con.execute(
            "select table_schema, table_name, column_name, data_type "
            "from information_schema.columns where list_contains(?, table_schema) "
            "order by table_schema, table_name, ordinal_position",
            [schemas],
        ).fetchall()
    finally:
        con.close()
    relations = {(schema, name): (kind, []) for schema, name, kind in kinds}
    for schema, name, column, type_ in columns:
        relations[(schema, name)][1].append((column, type_))
    return relations


def test_the_spark_build_left_duckdbs_relations_and_column_types(runs: dict[str, Any]) -> None:
    duck = _relations(runs["duckdb"]["warehouse"])
    spark = _relations(runs["spark"]["warehouse"])
    assert set(spark) == set(duck)
    for relation, (kind, columns) in duck.items():
        spark_kind, spark_columns = spark[relation]
        assert spark_columns == columns, relation
        if relation in VIEWS_COPIED_AS_TABLES:
            assert (kind, spark_kind) == ("VIEW", "BASE TABLE")
        else:
            assert spark_kind == kind, relation


def test_the_build_records_its_engine(runs: dict[str, Any]) -> None:
    def recorded_parts(warehouse: Path) -> dict[str, str]:
        con = duckdb.connect(str(warehouse / "warehouse.duckdb"), read_only=True)
        try:
            (value,) = con.execute(
                "select value from audit.pipeline_state where key = 'dbt_last_build'"
            ).fetchone()
        finally:
            con.close()
        return json.loads(value)["parts"]

    # the skip fingerprint of a Spark build differs from a DuckDB one's
    assert recorded_parts(runs["spark"]["warehouse"])["engine"] == "spark"
    assert "engine" not in recorded_parts(runs["duckdb"]["warehouse"])
