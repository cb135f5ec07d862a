"""The pipeline's dbt stage on Spark (``SEGMENTS_ENGINE=spark``, issue #19).

:func:`build_on_spark` is what ``tasks.dbt_build`` calls instead of
``dbt_runner.build`` when the engine is Spark:

1. the raw schema of ``warehouse.duckdb`` (what the loaders wrote) is exported
   to Parquet under the warehouse's Spark dir and registered in the Spark
   catalog under the same names, so the dbt sources resolve unchanged;
2. the dbt project builds with ``--target spark`` (the phased build of
   :mod:`segment_warehouse.spark.runner`, the identity steps between phases),
   with the vars and the as-of date of a DuckDB build, unit tests excluded as
   there;
3. every relation that build wrote (staging, intermediate, marts, audit,
   reference seeds: any schema) is exported to Parquet and copied into
   ``warehouse.duckdb`` under its own name, replacing DuckDB's copies in one
   transaction. Views (``int_orders_attributed``, ``int_sessions_stitched``,
   the two identity views over the runner's tables) arrive as tables: their
   rows, not Spark SQL DuckDB could not run.

Validation, publish, reclustering, predictions, decisions and the exports then
read ``warehouse.duckdb`` exactly as after a DuckDB build.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from segment_warehouse.config import Settings
from segment_warehouse.dbt_runner import DbtBuildError, DbtRunResult, _first_lines

log = logging.getLogger(__name__)

RAW_SCHEMA = "raw"


def _path_literal(path: Path) -> str:
    return "'" + path.as_posix().replace("'", "''") + "'"


def export_raw(settings: Settings, out_dir: Path) -> dict[tuple[str, str], Path]:
    """Every base table of the raw schema of ``warehouse.duckdb`` as Parquet in ``out_dir``."""
    from segment_warehouse.spark.tables import export_duckdb_tables
    from segment_warehouse.warehouse import connect

    shutil.rmtree(out_dir, ignore_errors=True)
    con = connect(read_only=True, settings=settings)
    try:
        tables = con.execute(
            "select table_name from information_schema.tables "
            "where table_schema = ? and table_type = 'BASE TABLE' order by table_name",
            [RAW_SCHEMA],
        ).fetchall()
        return export_duckdb_tables(con, [(RAW_SCHEMA, name) for (name,) in tables], out_dir)
    finally:
        con.close()


def import_built(settings: Settings, exports: list[dict[str, Any]]) -> None:
    """Replace each exported relation in ``warehouse.duckdb`` by a table of its Parquet rows.

    One transaction: a failure leaves DuckDB's previous tables. The marts
    generation is renewed in the same transaction (as ``dbt_runner`` does
    before a DuckDB build writes the marts).
    """
    from segment_warehouse import state
    from segment_warehouse.warehouse import connect, quote_ident

    con = connect(settings=settings)
    try:
        con.execute("begin transaction")
        for export in exports:
            schema, name = quote_ident(export["schema"]), quote_ident(export["name"])
            existing = con.execute(
                "select table_type from information_schema.tables "
                "where table_schema = ? and table_name = ?",
                [export["schema"], export["name"]],
            ).fetchall()
            con.execute(f"create schema if not exists {schema}")
            for (table_type,) in existing:
                kind = "view" if table_type == "VIEW" else "table"
                con.execute(f"drop {kind} {schema}.{name}")
            parquet = _path_literal(Path(export["folder"]) / "*.parquet")
            con.execute(f"create table {schema}.{name} as select * from read_parquet({parquet})")
        state.renew_marts_generation(con)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.close()


def build_on_spark(as_of_date: str, *, full_refresh: bool, settings: Settings) -> DbtRunResult:
    """``dbt build`` on Spark for the logical date, its tables then in ``warehouse.duckdb``.

    Raises :class:`DbtBuildError` (as ``dbt_runner.build`` does) when the Spark
    build fails; DuckDB's tables are then left as they were.
    """
    from segment_warehouse.dbt_runner import dbt_vars
    from segment_warehouse.spark.runner import BUILT_EXPORTS, run_dbt_spark, target_dir
    from segment_warehouse.spark.session import spark_dir

    root = spark_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    raw = export_raw(settings, root / "raw_parquet")
    built_dir = root / "built_parquet"
    shutil.rmtree(built_dir, ignore_errors=True)
    args = ["build", "--exclude-resource-type", "unit_test"]
    if full_refresh:
        args.append("--full-refresh")
    result = run_dbt_spark(
        args,
        settings=settings,
        vars=dbt_vars(settings),
        as_of_date=as_of_date,
        parquet_tables=raw,
        export_built=built_dir,
    )
    log.info("%s", result.summary())
    exports_file = target_dir(settings) / BUILT_EXPORTS
    if not result.success or not exports_file.exists():
        failed = result.failed_nodes
        if failed:
            detail = "\n".join(f"- {n.unique_id}: {_first_lines(n.message)}" for n in failed)
        else:  # failed before running nodes (session start, parse)
            detail = _first_lines((result.stdout + "\n" + result.stderr).strip(), n=30)
        raise DbtBuildError(
            f"dbt build on Spark failed; {len(failed)} failed node(s):\n{detail}\n"
            f"full log: {result.log_path}",
            result,
        )
    exports = json.loads(exports_file.read_text())
    import_built(settings, exports)
    log.info("copied %d relations built on Spark into %s", len(exports), settings.warehouse_db)
    return result
