"""Tables shared between the engines as Parquet: DuckDB writes, Spark registers.

The first slice of issue #19 feeds Spark the raw tables the DuckDB loaders
wrote (``export_duckdb_tables``) and registers them in the Spark catalog under
the same ``schema.table`` names (``register_parquet_tables``), so the dbt
sources resolve unchanged on both targets.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _path_literal(path: Path) -> str:
    text = path.as_posix()
    if "'" in text or "\\" in text:
        raise ValueError(f"unsupported character in path: {text!r}")
    return f"'{text}'"


def export_duckdb_tables(
    con: duckdb.DuckDBPyConnection, tables: Iterable[tuple[str, str]], out_dir: Path
) -> dict[tuple[str, str], Path]:
    """Write each ``(schema, table)`` of ``con`` to ``out_dir/schema/table/data.parquet``."""
    written: dict[tuple[str, str], Path] = {}
    for schema, table in tables:
        folder = out_dir / _ident(schema) / _ident(table)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "data.parquet"
        con.execute(
            f"copy {_ident(schema)}.{_ident(table)} to {_path_literal(target)} (format parquet)"
        )
        written[(schema, table)] = folder
    return written


def register_parquet_tables(spark: SparkSession, folders: dict[tuple[str, str], Path]) -> None:
    """``create table schema.table using parquet location folder`` for each entry."""
    for (schema, table), folder in folders.items():
        spark.sql(f"create database if not exists {_ident(schema)}")
        spark.sql(f"drop table if exists {schema}.{_ident(table)}")
        spark.sql(f"create table {schema}.{table} using parquet location {_path_literal(folder)}")


def export_spark_tables(spark: SparkSession, tables: dict[str, Path]) -> None:
    """Write each Spark table (``"schema.table"``) as Parquet files into its folder."""
    for name, folder in tables.items():
        schema, table = name.split(".", 1)
        spark.table(f"{_ident(schema)}.{_ident(table)}").write.mode("overwrite").parquet(
            folder.as_posix()
        )
