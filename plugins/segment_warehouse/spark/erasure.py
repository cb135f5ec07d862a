"""Erasure on the Spark engine's files (``SEGMENTS_ENGINE=spark``, issue #19).

Beside ``warehouse.duckdb``, a Spark build leaves copies of the warehouse under
:func:`~segment_warehouse.spark.session.spark_dir`: the raw hand-off
(``raw_parquet/raw/<table>/``), the tables dbt-spark built (``warehouse/``,
Parquet) and their exports (``built_parquet/``). After
:func:`segment_warehouse.erasure.apply_erasure_requests` has deleted a person
from ``warehouse.duckdb``, :func:`rewrite_spark_files` rewrites every Parquet
file there that holds one of their rows, without those rows, and leaves every
other file as it is: the partitions a person touched, not the warehouse.

The rows are the ones the DuckDB deletes take, by the same definitions
(``erasure.raw_clauses`` for the raw tables, ``erasure.id_clauses`` and
``erasure.quarantine_clauses`` for any relation), applied to every file: a
copy may lose more than DuckDB did, never less. A copy that ends up with fewer
rows than DuckDB's is harmless: the raw hand-off rewrites a batch whose row
count differs, and the full refresh an erasure requests rebuilds the rest.

DuckDB does the rewrite, not Spark: no JVM in the erasure task, and a file is
rewritten in well under a second. Each file is replaced atomically
(``os.replace``), and Hadoop's ``.<name>.crc`` checksum beside it is removed
(Spark would reject the new file against the old checksum; without one it
reads the file unchecked, as it does files written by any other tool).

When the people erased are no longer known (an erasure that committed and
then crashed before its files were rewritten: the identifiers are deleted by
then), :func:`drop_spark_files` removes the Spark dir instead; everything in
it is derived from ``warehouse.duckdb`` and the next Spark build recreates it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from segment_warehouse.config import Settings
from segment_warehouse.spark.session import spark_dir
from segment_warehouse.warehouse import quote_literal

if TYPE_CHECKING:
    from segment_warehouse.erasure import Subject

log = logging.getLogger(__name__)

RAW_HANDOFF = ("raw_parquet", "raw")


@dataclass
class SparkFilesSwept:
    files_scanned: int = 0
    files_rewritten: int = 0
    rows_deleted: int = 0
    rewritten: list[str] = field(default_factory=list)  # paths relative to the Spark dir


def _read(path: Path) -> str:
    # No hive partitioning: a partition column lives in the directory name, and
    # reading it into the rows would write it into the rewritten file.
    return f"read_parquet({quote_literal(path.as_posix())}, hive_partitioning = false)"


def _raw_table(relative: Path) -> str | None:
    """The raw table a raw hand-off file belongs to (``raw_parquet/raw/<table>/...``)."""
    parts = relative.parts
    if len(parts) >= 4 and parts[:2] == RAW_HANDOFF:
        return parts[2]
    return None


def _predicate(
    relative: Path, columns: list[str], subjects: Sequence[Subject], key: str
) -> tuple[str, list[Any]]:
    from segment_warehouse.erasure import id_clauses, quarantine_clauses, raw_clauses

    clauses: list[str] = []
    params: list[Any] = []
    table = _raw_table(relative)
    for subject in subjects:
        for where, values in (
            raw_clauses(table, columns, subject) if table else ([], []),
            id_clauses(columns, subject, key),
            quarantine_clauses(columns, subject),
        ):
            clauses += where
            params += values
    return " or ".join(f"({c})" for c in clauses), params


def _parquet_files(root: Path) -> list[Path]:
    # Dot files are temporaries and Hadoop checksums; underscore files are
    # Spark's markers and the raw hand-off's sidecar.
    return sorted(
        p for p in root.rglob("*.parquet") if p.is_file() and not p.name.startswith((".", "_"))
    )


def rewrite_spark_files(
    settings: Settings, subjects: Sequence[Subject], key: str
) -> SparkFilesSwept:
    """Rewrite each Parquet file under the Spark dir holding a row of ``subjects``."""
    swept = SparkFilesSwept()
    root = spark_dir(settings)
    if not subjects or not root.is_dir():
        return swept
    con = duckdb.connect()
    try:
        con.execute(f"set threads = {int(settings.duckdb_threads)}")
        for path in _parquet_files(root):
            relative = path.relative_to(root)
            described = con.execute(f"describe select * from {_read(path)}").fetchall()
            columns = [r[0] for r in described]
            swept.files_scanned += 1
            predicate, params = _predicate(relative, columns, subjects, key)
            if not predicate:
                continue
            keep = f"not coalesce({predicate}, false)"
            (n,) = con.execute(
                f"select count(*) from {_read(path)} where not ({keep})", params
            ).fetchone()
            if not n:
                continue
            tmp = path.with_name(f".{path.name}.erasure.tmp")
            con.execute(
                f"copy (select * from {_read(path)} where {keep}) "
                f"to {quote_literal(tmp.as_posix())} (format parquet, compression zstd)",
                params,
            )
            os.replace(tmp, path)
            path.with_name(f".{path.name}.crc").unlink(missing_ok=True)
            swept.files_rewritten += 1
            swept.rows_deleted += n
            swept.rewritten.append(relative.as_posix())
    finally:
        con.close()
    if swept.files_rewritten:
        log.info(
            "erasure: %d row(s) removed from %d of %d Spark Parquet file(s) under %s",
            swept.rows_deleted,
            swept.files_rewritten,
            swept.files_scanned,
            root,
        )
    return swept


def drop_spark_files(settings: Settings) -> bool:
    """Remove the Spark dir (all derived data); True when there was one."""
    root = spark_dir(settings)
    if not root.is_dir():
        return False
    shutil.rmtree(root)
    log.warning(
        "erasure: removed %s (the people of an interrupted erasure are no longer known; "
        "the next Spark build recreates it from warehouse.duckdb)",
        root,
    )
    return True
