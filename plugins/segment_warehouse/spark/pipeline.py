"""The pipeline's dbt stage on Spark (``SEGMENTS_ENGINE=spark``, issue #19).

:func:`build_on_spark` is what ``tasks.dbt_build`` calls instead of
``dbt_runner.build`` when the engine is Spark:

1. the raw schema of ``warehouse.duckdb`` (what the loaders wrote, after their
   contract checks, quarantine and manifest) is handed to Spark as Parquet under
   the warehouse's Spark dir, one file per load batch and only the new batches
   each build (:func:`export_raw`), and registered in the Spark catalog under
   the same names, so the dbt sources resolve unchanged;
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

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import duckdb

from segment_warehouse.config import Settings
from segment_warehouse.dbt_runner import DbtBuildError, DbtRunResult, _first_lines
from segment_warehouse.warehouse import quote_literal

log = logging.getLogger(__name__)

RAW_SCHEMA = "raw"


def _path_literal(path: Path) -> str:
    return quote_literal(path.as_posix())


BATCH_COLUMN = "_batch_id"
COLUMNS_FILE = "_columns.json"  # a leading "_": Spark and the *.parquet glob skip it
EMPTY_FILE = "empty.parquet"


def _batch_file(batch_id: str | None) -> str:
    # a digest, not the id: the name must be a safe file name whatever the id holds
    digest = hashlib.sha256(("\x00" if batch_id is None else batch_id).encode()).hexdigest()
    return f"batch-{digest[:24]}.parquet"


def _write_parquet(con: duckdb.DuckDBPyConnection, query: str, target: Path) -> None:
    """``query``'s rows to ``target``, replaced atomically (a reader sees old or new)."""
    tmp = target.with_name(f".{target.name}.tmp")
    con.execute(f"copy ({query}) to {_path_literal(tmp)} (format parquet)")
    os.replace(tmp, target)


def _hand_off_table(con: duckdb.DuckDBPyConnection, table: str, folder: Path) -> dict[str, int]:
    """Bring ``folder`` (one Parquet file per load batch) level with ``raw.<table>``."""
    from segment_warehouse.warehouse import quote_ident

    relation = f"{quote_ident(RAW_SCHEMA)}.{quote_ident(table)}"
    columns = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [RAW_SCHEMA, table],
    ).fetchall()
    signature = [list(c) for c in columns]
    sidecar = folder / COLUMNS_FILE
    if folder.exists():
        try:
            known = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            known = None
        if known != signature:  # new columns (or an older layout): write the table afresh
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stats = {"written": 0, "kept": 0, "removed": 0}
    if BATCH_COLUMN not in {name for name, _ in columns}:
        # not a loader's table (no lineage columns): small, written whole each build
        _write_parquet(con, f"select * from {relation}", folder / "data.parquet")
        stats["written"] = 1
        sidecar.write_text(json.dumps(signature))
        return stats
    batches = {
        _batch_file(batch): (batch, rows)
        for batch, rows in con.execute(
            f"select {BATCH_COLUMN}, count(*) from {relation} group by 1"
        ).fetchall()
    }
    present = {p.name for p in folder.glob("*.parquet")}
    on_disk: dict[str, int] = {}
    if present - {EMPTY_FILE}:
        files = [(folder / name).as_posix() for name in sorted(present - {EMPTY_FILE})]
        on_disk = {
            Path(name).name: rows
            for name, rows in con.execute(
                "select file_name, num_rows from parquet_file_metadata(?)", [files]
            ).fetchall()
        }
    for name in sorted(present - set(batches)):
        if name == EMPTY_FILE and not batches:
            continue
        (folder / name).unlink()
        stats["removed"] += 1
    for name, (batch, rows) in sorted(batches.items()):
        if on_disk.get(name) == rows:
            stats["kept"] += 1
            continue
        # a new batch, or one whose rows changed since (an erasure the Spark-file rewrite
        # did not reach, a crash part-way): DuckDB's rows are the truth
        predicate = (
            f"{BATCH_COLUMN} is null"
            if batch is None
            else f"{BATCH_COLUMN} = {quote_literal(batch)}"
        )
        _write_parquet(con, f"select * from {relation} where {predicate}", folder / name)
        stats["written"] += 1
    if not batches and EMPTY_FILE not in present:
        # Spark needs one file to know the table's columns
        _write_parquet(con, f"select * from {relation} limit 0", folder / EMPTY_FILE)
        stats["written"] += 1
    sidecar.write_text(json.dumps(signature))
    return stats


def export_raw(settings: Settings, out_dir: Path) -> dict[tuple[str, str], Path]:
    """Hand the raw schema of ``warehouse.duckdb`` to Spark as Parquet under ``out_dir``.

    The loaders only append, one committed batch at a time, so each raw table is
    kept as one Parquet file per load batch (``out_dir/raw/<table>/batch-*.parquet``)
    and a build writes only the batches that are new since the last one. A batch
    whose row count in DuckDB differs from its file's (an erasure, a crash between
    writes) is written again, a batch no longer in DuckDB loses its file, and a
    table whose columns changed is written afresh: DuckDB's raw schema is the truth.
    """
    from segment_warehouse.warehouse import connect

    out_dir.mkdir(parents=True, exist_ok=True)
    con = connect(read_only=True, settings=settings)
    try:
        tables = [
            name
            for (name,) in con.execute(
                "select table_name from information_schema.tables "
                "where table_schema = ? and table_type = 'BASE TABLE' order by table_name",
                [RAW_SCHEMA],
            ).fetchall()
        ]
        schema_dir = out_dir / RAW_SCHEMA
        for stale in sorted(schema_dir.glob("*")) if schema_dir.exists() else []:
            if stale.is_dir() and stale.name not in tables:
                shutil.rmtree(stale)
        folders: dict[tuple[str, str], Path] = {}
        for table in tables:
            folder = schema_dir / table
            stats = _hand_off_table(con, table, folder)
            log.info(
                "raw.%s to Spark: %d file(s) written, %d kept, %d removed",
                table, stats["written"], stats["kept"], stats["removed"],
            )  # fmt: skip
            folders[(RAW_SCHEMA, table)] = folder
        return folders
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
    from segment_warehouse.spark.runner import built_exports, built_exports_file, run_dbt_spark
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
    exports_file = built_exports_file(settings)
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
    exports = built_exports(settings)
    import_built(settings, exports)
    log.info("copied %d relations built on Spark into %s", len(exports), settings.warehouse_db)
    return result
