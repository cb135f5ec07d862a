"""Row-level batches on Spark DataFrames when ``SEGMENTS_ENGINE=spark`` (issue #19, item 4).

With the Spark engine the dbt build runs on Spark and writes every relation it
built as Parquet (``<warehouse_dir>/spark/built_parquet/``, listed in
``built_exports.json`` in the Spark target dir), which is then copied into
``warehouse.duckdb``. The ``rows`` batches whose SQL reads only those
relations run here: each relation is a temporary Spark view over its Parquet
folder, the batch SQL runs on Spark SQL (the qualified names rewritten to the
views), and GX validates the resulting DataFrame with its
``SparkDFExecutionEngine`` - no rows pass through pandas or the driver.

Scope is the one of ``scope.py``, as a Spark filter:

* append-only batches (``delta.loaded_at``): ``col > since`` and the newest
  load time, both on Spark;
* whole-rebuilt batches: a 64-bit digest per row (Spark ``xxhash64`` over
  every selected column and its null flag: ``xxhash64`` skips nulls, so
  without the flag ``(a, null)`` and ``(null, a)`` would collide), the delta a
  left anti join against the digests the last successful validation recorded.
  The digests move between DuckDB (``audit.validation_digests``, ubigint) and
  Spark (signed bigint) as Parquet files in a scratch folder, never as Python
  rows. They are not DuckDB's ``hash()``, so the engine is part of the suite
  fingerprint (``scope.suite_fingerprint``): switching engines makes the next
  validation full.

Table batches stay on DuckDB: they are SQL aggregates over the copy in
``warehouse.duckdb`` (what publish reads), return a handful of rows, and some
read DuckDB's own ``information_schema`` (column types as published).

A rows batch falls back to DuckDB, with the reason in its scope note (the
report's "Scope" column), never silently, when: the Spark build's export list
is missing; the batch reads a relation the Spark build did not write (or a
system table); an expectation type is not in :data:`SPARK_ROW_TYPES`; Spark
cannot parse or analyse the SQL; or a relation's row count in the Parquet
differs from the table in ``warehouse.duckdb`` (the DuckDB copy was rewritten
after the Spark build, so the Parquet is not what publish would read).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from segment_warehouse.config import Settings
from segment_warehouse.validation.scope import DIGESTS_TABLE, RunScope
from segment_warehouse.validation.suites import BatchSpec, SuiteSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from segment_warehouse.validation.runner import BatchScope, PendingBaseline

log = logging.getLogger(__name__)

# Row-level expectation types checked on GX's Spark engine (GX 1.24.1, pyspark
# 4.3.0) against its pandas engine, outcome for outcome, by
# tests/spark/test_spark_validation.py. Another type runs its batch on DuckDB.
SPARK_ROW_TYPES: frozenset[str] = frozenset(
    {
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_not_match_regex",
        "expect_column_values_to_not_be_null",
    }
)
ENGINE_SPARK_NOTE = "engine: Spark (GX SparkDFExecutionEngine on the Spark build's Parquet)"
ENGINE_TABLE_NOTE = "engine: DuckDB (SQL aggregate over the copy in warehouse.duckdb)"

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_U64 = 1 << 64
_counter = itertools.count(1)


def read_exports(settings: Settings) -> dict[tuple[str, str], Path]:
    """(schema, name) -> Parquet folder of every relation the last Spark build wrote
    (plain identifiers only: the names are put into Spark SQL)."""
    from segment_warehouse.spark.runner import built_exports

    return {
        (str(e["schema"]).lower(), str(e["name"]).lower()): Path(e["folder"])
        for e in built_exports(settings)
        if _IDENT.fullmatch(str(e["schema"])) and _IDENT.fullmatch(str(e["name"]))
    }


def relations_read(sql: str) -> set[tuple[str, str]] | None:
    """The ``schema.table`` relations ``sql`` reads (DuckDB's parser), None if any is
    unqualified or not a plain name; an empty set for system tables only."""
    out: set[tuple[str, str]] = set()
    for name in duckdb.get_table_names(sql, qualified=True):
        # DuckDB appends the alias ("marts.y AS m")
        parts = name.split(" AS ")[0].strip().split(".")
        if len(parts) != 2 or not all(_IDENT.fullmatch(p) for p in parts):
            return None
        out.add((parts[0].lower(), parts[1].lower()))
    return out


def _view_name(schema: str, name: str) -> str:
    return f"_gx_{schema}__{name}"


def spark_sql(sql: str, relations: set[tuple[str, str]]) -> str:
    """``sql`` with each qualified relation replaced by its temporary view.

    Only exact ``schema.name`` tokens of ``relations`` (plain identifiers, from
    the export list) are replaced; the SQL is the versioned suite file's."""
    for schema, name in relations:
        pattern = re.compile(rf"(?<![\w.`\"]){schema}\.{name}(?![\w`\"])", re.IGNORECASE)
        sql = pattern.sub(_view_name(schema, name), sql)
    return sql


def _duck_path(path: Path) -> str:
    return "'" + path.as_posix().replace("'", "''") + "'"


def _quoted(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


@dataclass
class SparkBatches:
    """Spark batch source for one ``validate_layer`` call (session started lazily)."""

    settings: Settings
    _exports: dict[tuple[str, str], Path] | None = None
    _exports_error: str | None = None
    _spark: SparkSession | None = None
    _counts_checked: dict[tuple[str, str], str | None] = field(default_factory=dict)
    _persisted: list[DataFrame] = field(default_factory=list)
    _scratch: Path | None = None

    def __post_init__(self) -> None:
        from segment_warehouse.spark.runner import built_exports_file

        try:
            self._exports = read_exports(self.settings)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._exports_error = (
                f"no readable export list of a Spark build ({built_exports_file(self.settings)}: "
                f"{type(exc).__name__})"
            )

    # -- planning (no Spark) --------------------------------------------------
    def static_reason(self, batch: BatchSpec) -> str | None:
        """Why ``batch`` cannot run on Spark, from the suite and export list alone."""
        if batch.scope != "rows":
            return "table batch"
        if self._exports is None:
            return self._exports_error or "no Spark build export"
        others = sorted({s.type for s in batch.expectations} - SPARK_ROW_TYPES)
        if others:
            return f"{', '.join(others)} not verified on GX's Spark engine"
        relations = relations_read(batch.sql)
        if not relations:
            return "its SQL reads no relation the Spark build wrote"
        missing = sorted(f"{s}.{n}" for s, n in relations if (s, n) not in self._exports)
        if missing:
            return f"reads {', '.join(missing)}, not written by the Spark build"
        return None

    def suite_on_spark(self, suite: SuiteSpec) -> bool:
        return any(self.static_reason(b) is None for b in suite.batches)

    # -- Spark ------------------------------------------------------------------
    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            # The warehouse's session (Hive catalog, UDFs, UTC session time
            # zone); getOrCreate returns the process's session if there is one.
            from segment_warehouse.spark.session import build_session

            self._spark = build_session(self.settings, app_name="segment_warehouse_validation")
        return self._spark

    @property
    def scratch(self) -> Path:
        if self._scratch is None:
            from segment_warehouse.spark.session import spark_dir

            self._scratch = (
                spark_dir(self.settings) / "validation_scratch" / f"{os.getpid()}_{next(_counter)}"
            )
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch.mkdir(parents=True)
        return self._scratch

    def _register(self, con: duckdb.DuckDBPyConnection, relation: tuple[str, str]) -> str | None:
        """Register the relation's view; a reason if its Parquet is not DuckDB's copy."""
        if relation in self._counts_checked:
            return self._counts_checked[relation]
        assert self._exports is not None
        schema, name = relation
        frame = self.spark.read.parquet(self._exports[relation].as_posix())
        frame.createOrReplaceTempView(_view_name(schema, name))
        spark_rows = frame.count()  # from the Parquet footers
        try:
            (duck_rows,) = con.execute(f'select count(*) from "{schema}"."{name}"').fetchone() or (
                None,
            )
        except duckdb.Error:
            duck_rows = None
        reason = None
        if duck_rows != spark_rows:
            reason = (
                f"{schema}.{name} has {spark_rows:,} rows in the Spark build's Parquet and "
                f"{'none' if duck_rows is None else f'{duck_rows:,}'} in warehouse.duckdb "
                "(rewritten since the Spark build)"
            )
        self._counts_checked[relation] = reason
        return reason

    def frame(self, con: duckdb.DuckDBPyConnection, batch: BatchSpec) -> DataFrame | str:
        """The batch as a Spark DataFrame, or why it runs on DuckDB instead."""
        reason = self.static_reason(batch)
        if reason is not None:
            return reason
        from pyspark.errors import PySparkException

        relations = relations_read(batch.sql) or set()
        for relation in sorted(relations):
            stale = self._register(con, relation)
            if stale:
                return stale
        try:
            return self.spark.sql(spark_sql(batch.sql, relations))
        except PySparkException as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            return f"Spark SQL cannot run the batch SQL ({type(exc).__name__}: {first})"

    def _persist(self, frame: DataFrame) -> DataFrame:
        # Every frame handed to GX is persisted here, so that release() frees it:
        # GX persists the batch frame and never unpersists it, and Spark's cache
        # matches plans, not files - a later validation of the same Parquet path
        # would read the rows cached by an earlier one (seen in the test: a full
        # run got the clean rows of the first run back).
        frame = frame.persist()
        self._persisted.append(frame)
        return frame

    def rows_source(
        self,
        con: duckdb.DuckDBPyConnection,
        suite: SuiteSpec,
        batch: BatchSpec,
        base: DataFrame,
        scope: RunScope | None,
        pending: PendingBaseline,
        previous_watermarks: dict[str, dt.datetime],
    ) -> tuple[DataFrame, BatchScope]:
        """The rows of ``base`` to check and what they cover (``runner.rows_batch_source``
        on Spark); ``rows_checked`` is filled in (the frame is persisted and counted)."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import TimestampNTZType

        from segment_warehouse.validation.runner import BatchScope, _temp_name

        if scope is None:
            rows = self._persist(base)
            total = rows.count()
            return rows, BatchScope("rows", f"all rows; {ENGINE_SPARK_NOTE}", total, total)
        if batch.delta_loaded_at:
            column = batch.delta_loaded_at
            col = F.col(_quoted(column))
            dtype = base.schema[column].dataType
            naive = isinstance(dtype, TimestampNTZType)
            # micros since the epoch: a datetime collected from Spark would be in
            # the Python process's local time zone
            newest_expr = F.unix_micros(col.cast("timestamp")) if naive else F.unix_micros(col)
            total, newest = base.agg(F.count(F.lit(1)), F.max(newest_expr)).first() or (0, None)
            if newest is not None:
                at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=newest)
                pending.watermarks[batch.name] = at.replace(tzinfo=None) if naive else at
            since = previous_watermarks.get(batch.name)
            if scope.full or since is None:
                note = scope.reason if scope.full else "full: no load time validated yet"
                rows = base
            else:
                # the ISO text, cast to the column's type: exact, no local time zone
                bound = F.lit(since.isoformat(sep=" ")).cast(dtype)
                rows = base.where(col > bound)
                note = f"{scope.reason}; new rows: {column} after {since.isoformat(sep=' ')}"
            rows = self._persist(rows)
            checked = rows.count()
            return rows, BatchScope("rows", f"{note}; {ENGINE_SPARK_NOTE}", checked, int(total))
        # Whole-rebuilt tables: digests of the rows as the batch selects them.
        flags = [F.isnull(F.col(_quoted(c))) for c in base.columns]
        values = [F.col(_quoted(c)) for c in base.columns]
        hashed = F.xxhash64(*[x for pair in zip(values, flags, strict=True) for x in pair])
        with_digest = self._persist(base.withColumn("_row_digest", hashed))
        total = with_digest.count()
        folder = self.scratch / f"{batch.name}_new"
        with_digest.select("_row_digest").distinct().write.mode("overwrite").parquet(
            folder.as_posix()
        )
        digests = _temp_name("digests")
        # Spark's signed 64 bits -> the ubigint of audit.validation_digests
        con.execute(
            f"create temp table {digests} as select distinct cast(case when _row_digest < 0 "
            f"then _row_digest::hugeint + {_U64} else _row_digest::hugeint end as ubigint) "
            f"as digest from read_parquet({_duck_path(folder / '*.parquet')})"
        )
        pending.digest_tables[batch.name] = digests
        if scope.full:
            rows = self._persist(with_digest.drop("_row_digest"))
            return rows, BatchScope("rows", f"{scope.reason}; {ENGINE_SPARK_NOTE}", total, total)
        previous = _temp_name("previous")
        con.execute(
            f"create temp table {previous} as select cast(case when digest >= {_U64 // 2} "
            f"then digest::hugeint - {_U64} else digest::hugeint end as bigint) as digest "
            f"from {DIGESTS_TABLE} where suite = ? and batch_name = ?",
            [suite.name, batch.name],
        )
        prev_file = self.scratch / f"{batch.name}_previous.parquet"
        try:
            con.execute(f"copy {previous} to {_duck_path(prev_file)} (format parquet)")
        finally:
            con.execute(f"drop table if exists {previous}")
        known = self.spark.read.parquet(prev_file.as_posix())
        rows = with_digest.join(
            known, with_digest["_row_digest"] == known["digest"], "left_anti"
        ).drop("_row_digest")
        rows = self._persist(rows)
        checked = rows.count()
        note = f"{scope.reason}; changed rows: a row digest not validated before"
        return rows, BatchScope("rows", f"{note}; {ENGINE_SPARK_NOTE}", checked, total)

    def release(self) -> None:
        """Unpersist the frames of the batch just validated."""
        for frame in self._persisted:
            try:
                frame.unpersist()
            except Exception as exc:  # a stopped session: nothing left to free
                log.debug("unpersist failed: %s", exc)
        self._persisted.clear()

    def close(self) -> None:
        """Release everything and delete the scratch files (the session stays up)."""
        self.release()
        if self._spark is not None:
            for schema, name in self._counts_checked:
                self._spark.catalog.dropTempView(_view_name(schema, name))
        self._counts_checked.clear()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def spark_error_types() -> tuple[type[BaseException], ...]:
    """Errors of a Spark read or job: the batch is then reported unavailable."""
    try:
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException
    except ImportError:
        return ()
    return (PySparkException, Py4JError)


__all__ = [
    "ENGINE_SPARK_NOTE",
    "ENGINE_TABLE_NOTE",
    "SPARK_ROW_TYPES",
    "SparkBatches",
    "read_exports",
    "relations_read",
    "spark_error_types",
    "spark_sql",
]
