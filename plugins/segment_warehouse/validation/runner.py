"""Run the expectation suites against the warehouse with Great Expectations.

How data reaches GX: GX Core has no DuckDB dialect, so every batch is a pandas
DataFrame fetched from DuckDB (``con.sql(...).df()``, Arrow-backed columns in
pandas 3). Each batch query selects only the columns its expectations need.

Scope (``suites.py``, ``scope.py``): ``table`` batches are aggregates DuckDB
computes over the full tables every run (uniqueness, reconciliation, row
accounting, null counts, referential integrity), validated as small
DataFrames. ``rows`` batches hold row-level rules; a delta run fetches only the
rows new or changed since the last successful validation, a full run (at least
weekly, after backfills and erasures, on request) every row - streamed in
chunks of ``chunk_rows`` whose counts are added up, never sampled. Every
result records its scope (``check_scope``, ``rows_checked`` of ``rows_total``,
``scope_note``: why full or delta).

With ``SEGMENTS_ENGINE=spark`` the rows batches that read only relations
the Spark build wrote run on Spark DataFrames of its Parquet, through GX's
Spark engine (``spark_batches.py``; same scope, as a Spark filter); table
batches and every other rows batch stay on DuckDB, and each result's scope
note says which engine ran it and, for a rows batch on DuckDB, why.

Each call writes one row per expectation to ``audit.validation_results``
(replacing earlier rows of the same run and suite, so task retries are
idempotent), builds GX data docs per run and suite, re-renders the governance
``index.html`` and raises :class:`ValidationFailed` if a critical expectation
failed. Warnings are recorded and reported only. Only a call without a
critical failure moves the baselines (digests, load-time watermarks, last full
validation), so a failing row is checked again by the next run.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from segment_warehouse import state
from segment_warehouse.config import Settings, get_settings
from segment_warehouse.publish import RAW_PII_COLUMN_REGEX
from segment_warehouse.validation.scope import (
    DIGESTS_TABLE,
    RunScope,
    decide_scope,
    ensure_digests_table,
)
from segment_warehouse.validation.suites import (
    TABLE_SCOPE_MAX_ROWS,
    BatchSpec,
    ExpectationSpec,
    SuiteSpec,
    load_suite,
)
from segment_warehouse.warehouse import ensure_schemas, warehouse

if TYPE_CHECKING:
    from segment_warehouse.validation.spark_batches import SparkBatches

# Must be set before GX is imported anywhere in the process (GX reads it for
# its usage statistics); setdefault keeps an explicit operator choice.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

log = logging.getLogger(__name__)

# Rows handed to GX at a time (memory bound of a full run over event tables).
DEFAULT_CHUNK_ROWS = 500_000
KEEP_RUNS = 30  # run folders of GX data docs kept on disk / runs listed in index.html
DATA_DOCS_SITE = "governance_site"

# Additive extension of audit.validation_results (DDL in warehouse.py): the
# report is rendered from the table alone, so it needs the plain-language text.
EXTRA_RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("layer", "varchar"),
    ("batch_name", "varchar"),
    ("expectation_type", "varchar"),
    ("description", "varchar"),
    ("element_count", "bigint"),
    ("unexpected_count", "bigint"),
    ("data_docs_path", "varchar"),
    ("check_scope", "varchar"),  # table | rows
    ("rows_checked", "bigint"),  # rows batches: rows the rules ran on
    ("rows_total", "bigint"),  # rows batches: rows the batch has now
    ("scope_note", "varchar"),  # why these rows: full (and why) or delta
)


class ValidationFailed(RuntimeError):
    """At least one critical expectation failed; ``outcome`` has the details."""

    def __init__(self, outcome: ValidationOutcome) -> None:
        self.outcome = outcome
        lines = [
            f"{len(outcome.critical_failures)} critical expectation(s) failed "
            f"(run {outcome.run_id}); see {outcome.report_path}:"
        ]
        lines += [
            f"  - [{f.suite}] {f.expectation}: {f.observed_value}"
            for f in outcome.critical_failures
        ]
        super().__init__("\n".join(lines))


@dataclass
class ExpectationResult:
    suite: str
    batch: str
    expectation: str  # readable: "batch: type(column=..., ...)"
    expectation_type: str
    column_name: str | None
    success: bool
    severity: str
    description: str
    observed_value: str
    details: str  # JSON
    element_count: int | None = None
    unexpected_count: int | None = None
    scope: str = "table"
    scope_note: str | None = None
    rows_checked: int | None = None
    rows_total: int | None = None


@dataclass
class SuiteOutcome:
    suite: str
    layer: str
    evaluated: int
    passed: int
    warnings: int
    critical_failed: int
    data_docs: str | None
    scope: str = "full"  # full | delta (rows batches)
    scope_reason: str = ""

    @property
    def success(self) -> bool:
        return self.critical_failed == 0


@dataclass
class ValidationOutcome:
    run_id: str
    validated_at: str
    layers: list[str]
    suites: list[SuiteOutcome]
    report_path: str
    results: list[ExpectationResult] = field(default_factory=list, repr=False)

    @property
    def critical_failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success and r.severity == "critical"]

    @property
    def warnings(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success and r.severity == "warning"]

    @property
    def success(self) -> bool:
        return not self.critical_failures

    def summary(self) -> dict[str, Any]:
        """Small JSON-able dict for XCom / logs (not every result)."""
        return {
            "run_id": self.run_id,
            "validated_at": self.validated_at,
            "success": self.success,
            "report": self.report_path,
            "suites": {
                s.suite: {
                    "evaluated": s.evaluated,
                    "passed": s.passed,
                    "warnings": s.warnings,
                    "critical_failed": s.critical_failed,
                    "data_docs": s.data_docs,
                    "scope": s.scope,
                    "scope_reason": s.scope_reason,
                }
                for s in self.suites
            },
            "failed": [
                {
                    "suite": r.suite,
                    "expectation": r.expectation,
                    "severity": r.severity,
                    "observed": r.observed_value,
                }
                for r in self.results
                if not r.success
            ],
        }


# --------------------------------------------------------------------------
# logging hygiene
# --------------------------------------------------------------------------
def quiet_gx() -> None:
    """Keep GX's INFO chatter and progress bars out of Airflow task logs."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # Set before importing (GX logs at import time) and again after: GX pins
    # one of its own loggers (data_context.types.base) to INFO on import.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations.data_context.types.base  # noqa: F401

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.ERROR)
    # GX emits pandas/marshmallow deprecation warnings on every metric.
    warnings.filterwarnings("ignore", module=r"great_expectations(\..*)?")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _slug(text: str) -> str:
    """File-system safe folder name for an Airflow run id (has ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120] or "run"


def suite_parameters(settings: Settings, now: dt.datetime) -> dict[str, Any]:
    """Values for ``{"$PARAMETER": ...}`` placeholders in the suite files."""
    now_naive = pd.Timestamp(now.astimezone(dt.UTC).replace(tzinfo=None))
    return {
        # Staging timestamps are naive UTC, so the bounds are naive too.
        "ts_min": pd.Timestamp("2000-01-01"),
        "ts_max": now_naive + pd.Timedelta(days=1),
        "birth_date_min": pd.Timestamp("1900-01-01"),
        "birth_date_max": now_naive.normalize(),
        "fx_currencies": fx_currencies(settings),
        "raw_pii_column_regex": RAW_PII_COLUMN_REGEX,
    }


def fx_currencies(settings: Settings) -> list[str]:
    """Currencies of the versioned FX seed (the staging contract follows it)."""
    seed = settings.dbt_project_dir / "seeds" / "fx_rates.csv"
    with seed.open(newline="", encoding="utf-8") as fh:
        return sorted({row["currency"].strip().upper() for row in csv.DictReader(fh)})


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _readable(batch: str, spec: ExpectationSpec) -> str:
    parts = []
    for key, value in spec.kwargs.items():
        if isinstance(value, dict) and "$PARAMETER" in value:
            shown = f"${value['$PARAMETER']}"
        elif isinstance(value, list) and len(value) > 6:
            shown = "[" + ", ".join(map(str, value[:6])) + ", ...]"
        else:
            shown = json.dumps(value) if isinstance(value, list | dict | str) else str(value)
        parts.append(f"{key}={shown}")
    return f"{batch}: {spec.type}({', '.join(parts)})"


def _json_default(value: Any) -> str:
    return _fmt_value(value)


def _observed(result: dict[str, Any], success: bool) -> str:
    """Short plain-language observation for reports and the audit row."""
    if "observed_value" in result:
        return f"found {_fmt_value(result['observed_value'])}"
    if "unexpected_count" in result and "element_count" in result:
        total = int(result.get("element_count") or 0)
        bad = int(result.get("unexpected_count") or 0)
        missing = int(result.get("missing_count") or 0)
        if total == 0:
            return "no rows to check"
        if not bad:
            text = f"all {total - missing:,} checked rows ok"
        else:
            pct = float(result.get("unexpected_percent") or 0.0)
            text = f"{bad:,} of {total - missing:,} checked rows broke the rule ({pct:.2f}%)"
            examples = result.get("partial_unexpected_list") or []
            if examples:
                text += "; e.g. " + ", ".join(_fmt_value(e) for e in examples[:5])
        if missing:
            text += f" ({missing:,} empty, not checked)"
        return text
    return "passed" if success else "failed"


# --------------------------------------------------------------------------
# data fetching
# --------------------------------------------------------------------------
@dataclass
class BatchScope:
    """What one batch covered: reported beside every result of the batch."""

    scope: str  # "table" | "rows"
    note: str  # plain language: which rows and why
    rows_checked: int | None = None
    rows_total: int | None = None


@dataclass
class PendingBaseline:
    """What a successful validation call records for the next delta run."""

    suite: str
    scope: RunScope | None
    digest_tables: dict[str, str] = field(default_factory=dict)  # batch -> temp table
    watermarks: dict[str, dt.datetime] = field(default_factory=dict)
    batches: tuple[str, ...] = ()
    scratch: list[str] = field(default_factory=list)  # temp tables of the current batch


_temp_counter = iter(range(1, 1 << 62))


def _temp_name(prefix: str) -> str:
    return f"_validation_{prefix}_{os.getpid()}_{next(_temp_counter)}"


def fetch_table_batch(con: duckdb.DuckDBPyConnection, batch: BatchSpec) -> pd.DataFrame:
    """A table-scope batch: the aggregate its SQL computes over the full tables."""
    df = con.execute(
        f"select * from ({batch.sql}) as q limit {TABLE_SCOPE_MAX_ROWS + 1}"
    ).df()
    if len(df) > TABLE_SCOPE_MAX_ROWS:
        raise duckdb.InvalidInputException(
            f"table-scope batch returned more than {TABLE_SCOPE_MAX_ROWS:,} rows: "
            "aggregate it in SQL or make it a rows batch"
        )
    return df


def _chunks(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """Stream a query's result as DataFrames of at most ~chunk_rows rows (one scan).

    Always yields at least one (possibly empty) frame, so GX sees the columns.
    Runs on ``con`` itself (a cursor would not see its temp tables): the caller
    runs no other statement on it until the generator is exhausted."""
    con.execute(sql, params)
    vectors = max(1, chunk_rows // 2048)
    first = True
    while True:
        df = con.fetch_df_chunk(vectors)
        if len(df) == 0:
            if first:
                yield df
            return
        first = False
        yield df


def rows_batch_source(
    con: duckdb.DuckDBPyConnection,
    suite: SuiteSpec,
    batch: BatchSpec,
    scope: RunScope | None,
    pending: PendingBaseline,
    previous_watermarks: dict[str, dt.datetime],
) -> tuple[str, list[Any], BatchScope]:
    """SQL (and parameters) of the rows to check, and what they cover.

    ``scope`` None: every row, nothing recorded (a direct ``run_suite`` call)."""
    if scope is None:
        (total,) = con.execute(f"select count(*) from ({batch.sql}) as q").fetchone() or (0,)
        return batch.sql, [], BatchScope("rows", "all rows", int(total), int(total))
    if batch.delta_loaded_at:
        column = batch.delta_loaded_at
        total, newest = con.execute(
            f'select count(*), max(q."{column}") from ({batch.sql}) as q'
        ).fetchone() or (0, None)
        if newest is not None:
            pending.watermarks[batch.name] = newest
        since = previous_watermarks.get(batch.name)
        if scope.full or since is None:
            note = scope.reason if scope.full else "full: no load time validated yet"
            return batch.sql, [], BatchScope("rows", note, None, int(total))
        sql = f'select * from ({batch.sql}) as q where q."{column}" > ?'
        note = f"{scope.reason}; new rows: {column} after {since.isoformat(sep=' ')}"
        return sql, [since], BatchScope("rows", note, None, int(total))
    # Whole-rebuilt tables: digests of the rows as the batch selects them.
    rows = _temp_name("rows")
    con.execute(
        f"create temp table {rows} as select hash(q) as _row_digest, q.* from ({batch.sql}) as q"
    )
    pending.scratch.append(rows)
    digests = _temp_name("digests")
    con.execute(f"create temp table {digests} as select distinct _row_digest as digest from {rows}")
    pending.digest_tables[batch.name] = digests
    (total,) = con.execute(f"select count(*) from {rows}").fetchone() or (0,)
    if scope.full:
        sql = f"select * exclude (_row_digest) from {rows}"
        return sql, [], BatchScope("rows", scope.reason, None, int(total))
    sql = (
        f"select * exclude (_row_digest) from {rows} as r where not exists ("
        f"select 1 from {DIGESTS_TABLE} as d "
        "where d.suite = ? and d.batch_name = ? and d.digest = r._row_digest)"
    )
    note = f"{scope.reason}; changed rows: a row digest not validated before"
    return sql, [suite.name, batch.name], BatchScope("rows", note, None, int(total))


# --------------------------------------------------------------------------
# merging chunk results
# --------------------------------------------------------------------------
@dataclass
class _Merged:
    success: bool = True
    result: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def _merge(merged: _Merged, success: bool, result: dict[str, Any], messages: list[str]) -> None:
    """Add one chunk's result of a row-level rule (counts add up, verdict is 'all')."""
    merged.success = merged.success and success
    merged.messages += messages
    out = merged.result
    if not out:
        out.update(result)
        out["partial_unexpected_list"] = list(result.get("partial_unexpected_list") or [])
        return
    for key in ("element_count", "unexpected_count", "missing_count"):
        if key in result or key in out:
            out[key] = int(out.get(key) or 0) + int(result.get(key) or 0)
    examples = out["partial_unexpected_list"]
    examples += list(result.get("partial_unexpected_list") or [])[: max(0, 20 - len(examples))]
    checked = int(out.get("element_count") or 0) - int(out.get("missing_count") or 0)
    if "unexpected_percent" in out:
        out["unexpected_percent"] = (
            100.0 * int(out.get("unexpected_count") or 0) / checked if checked else 0.0
        )


def _scope_text(batch_scope: BatchScope) -> str:
    if batch_scope.scope == "table":
        return batch_scope.note
    checked = "–" if batch_scope.rows_checked is None else f"{batch_scope.rows_checked:,}"
    total = "–" if batch_scope.rows_total is None else f"{batch_scope.rows_total:,}"
    return f"rows: {checked} of {total} ({batch_scope.note})"


# --------------------------------------------------------------------------
# GX
# --------------------------------------------------------------------------
def _gx_context(docs_dir: Path) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # The ephemeral context ships a default site in a temp dir; replace it so
    # the docs land next to the governance index.
    for name in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(name)
    context.add_data_docs_site(
        DATA_DOCS_SITE,
        {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


def _gx_expectation(spec: ExpectationSpec) -> Any:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    return ExpectationConfiguration(
        type=spec.type,
        kwargs=dict(spec.kwargs),
        meta=dict(spec.meta),
        notes=spec.description,  # shown in the GX data docs next to the rule
        severity=spec.severity,  # GX >= 1.x native severity mirrors meta.severity
    ).to_domain_obj()


def _unavailable(suite: SuiteSpec, batch: BatchSpec, error: Exception) -> ExpectationResult:
    message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
    return ExpectationResult(
        suite=suite.name,
        batch=batch.name,
        expectation=f"{batch.name}: data can be read",
        expectation_type="batch_available",
        column_name=None,
        success=False,
        severity=batch.severity_if_unavailable,
        description=f"The data for '{batch.title}' exists and can be read.",
        observed_value=f"could not read the data ({message})",
        details=json.dumps({"sql": batch.sql, "error": message}),
    )


def run_suite(
    con: duckdb.DuckDBPyConnection,
    suite: SuiteSpec,
    *,
    run_id: str,
    validated_at: dt.datetime,
    parameters: dict[str, Any],
    docs_dir: Path,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> list[ExpectationResult]:
    """Validate every row of every batch of ``suite`` (no baselines read or recorded)."""
    results, _ = run_suite_scoped(
        con,
        suite,
        run_id=run_id,
        validated_at=validated_at,
        parameters=parameters,
        docs_dir=docs_dir,
        chunk_rows=chunk_rows,
    )
    return results


def run_suite_scoped(
    con: duckdb.DuckDBPyConnection,
    suite: SuiteSpec,
    *,
    run_id: str,
    validated_at: dt.datetime,
    parameters: dict[str, Any],
    docs_dir: Path,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    scope: RunScope | None = None,
    previous_watermarks: dict[str, dt.datetime] | None = None,
    spark: SparkBatches | None = None,
) -> tuple[list[ExpectationResult], PendingBaseline]:
    """Validate ``suite`` within ``scope``; build its GX data docs in ``docs_dir``.

    Table batches: their SQL over the full tables. Rows batches: the rows of the
    scope (all rows when ``scope`` is None or full, else the delta), streamed to
    GX in chunks of about ``chunk_rows`` whose counts are added up. With
    ``spark`` (``SEGMENTS_ENGINE=spark``), a rows batch Spark can run is one
    Spark DataFrame instead (GX's Spark engine; no chunks). Returns the results
    and what a successful call records as the next baseline.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    quiet_gx()
    if docs_dir.exists():  # a retry of the same run replaces its docs
        shutil.rmtree(docs_dir)
    docs_dir.mkdir(parents=True)
    context = _gx_context(docs_dir)
    source = context.data_sources.add_pandas(suite.name)
    spark_source: Any = None
    # What a batch read can raise: a DuckDB error, or a Spark one on Spark
    read_errors: tuple[type[BaseException], ...] = (duckdb.Error,)
    if spark is not None:
        from segment_warehouse.validation.spark_batches import spark_error_types

        read_errors += spark_error_types()
    gx_run_id = RunIdentifier(run_name=run_id, run_time=validated_at)
    results: list[ExpectationResult] = []
    pending = PendingBaseline(
        suite=suite.name, scope=scope, batches=tuple(b.name for b in suite.batches)
    )

    for batch in suite.batches:
        on_spark = False
        try:
            frames: Iterable[Any]
            if batch.scope == "table":
                frames = [fetch_table_batch(con, batch)]
                batch_scope = BatchScope("table", "whole table, in SQL (every run)")
                if spark is not None:
                    from segment_warehouse.validation.spark_batches import ENGINE_TABLE_NOTE

                    batch_scope.note += f"; {ENGINE_TABLE_NOTE}"
            else:
                spark_frame = spark.frame(con, batch) if spark is not None else None
                if spark is not None and not isinstance(spark_frame, str):
                    frame, batch_scope = spark.rows_source(
                        con, suite, batch, spark_frame, scope, pending, previous_watermarks or {}
                    )
                    frames = [frame]
                    on_spark = True
                else:
                    sql, params, batch_scope = rows_batch_source(
                        con, suite, batch, scope, pending, previous_watermarks or {}
                    )
                    frames = _chunks(con, sql, params, chunk_rows)
                    if isinstance(spark_frame, str):
                        # a documented fallback, stated in the report, never silent
                        log.warning(
                            "batch %s.%s runs on DuckDB: %s", suite.name, batch.name, spark_frame
                        )
                        batch_scope.note += f"; engine: DuckDB ({spark_frame})"
            if on_spark:
                if spark_source is None:
                    spark_source = context.data_sources.add_spark(f"{suite.name}_spark")
                asset = spark_source.add_dataframe_asset(batch.name)
            else:
                asset = source.add_dataframe_asset(batch.name)
            batch_def = asset.add_batch_definition_whole_dataframe("whole_dataframe")
            gx_suite = context.suites.add(
                gx.ExpectationSuite(
                    name=f"{suite.name}.{batch.name}",
                    expectations=[_gx_expectation(s) for s in batch.expectations],
                    meta={"title": batch.title, "sql": batch.sql, "scope": batch.scope},
                )
            )
            # Expectation ids are assigned on add; map them back to our specs
            # because GX does not return results in suite order.
            by_id = {
                e.id: s for e, s in zip(gx_suite.expectations, batch.expectations, strict=True)
            }
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(
                    name=f"{suite.name}.{batch.name}", data=batch_def, suite=gx_suite
                )
            )
            # PII batches (emails, phones) report counts only, never example values.
            result_format = {
                "result_format": "SUMMARY",
                "partial_unexpected_count": 0 if batch.pii else 5,
            }
            merged = {id(s): _Merged() for s in batch.expectations}
            rows_seen = 0
            for df in frames:  # the query runs here: its errors are "unavailable"
                # a Spark frame was counted by its source (persisted first)
                rows_seen += int(batch_scope.rows_checked or 0) if on_spark else len(df)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    suite_result = definition.run(
                        batch_parameters={"dataframe": df},
                        expectation_parameters=parameters,
                        result_format=result_format,
                        run_id=gx_run_id,
                    )
                for res in suite_result.results:
                    spec = by_id[res.expectation_config.id]
                    exception = (
                        (res.exception_info or {}) if isinstance(res.exception_info, dict) else {}
                    )
                    # Metric errors come back keyed by metric id; pull the message out.
                    messages = [
                        v.get("exception_message")
                        for v in exception.values()
                        if isinstance(v, dict)
                    ] + (
                        [exception.get("exception_message")]
                        if exception.get("raised_exception")
                        else []
                    )
                    _merge(
                        merged[id(spec)],
                        bool(res.success),
                        dict(res.result or {}),
                        [m for m in messages if m],
                    )
        except read_errors as exc:
            log.warning("batch %s.%s unavailable: %s", suite.name, batch.name, exc)
            failed = _unavailable(suite, batch, exc)
            failed.scope = batch.scope
            results.append(failed)
            pending.digest_tables.pop(batch.name, None)
            pending.watermarks.pop(batch.name, None)
            continue
        finally:
            for name in pending.scratch:
                con.execute(f"drop table if exists {name}")
            pending.scratch.clear()
            if spark is not None:
                spark.release()  # the batch's persisted frames
        if batch.scope == "rows":
            batch_scope.rows_checked = rows_seen
        scope_text = _scope_text(batch_scope)
        for spec in batch.expectations:
            m = merged[id(spec)]
            result = m.result
            observed = _observed(result, m.success)
            if m.messages:
                observed = f"check could not be evaluated ({m.messages[0][:200]})"
            details: dict[str, Any] = {
                "kwargs": spec.kwargs,
                "rows_in_batch": rows_seen,
                "scope": scope_text,
            }
            if m.messages:
                details["error"] = m.messages[0][:1000]
            if not batch.pii and result.get("partial_unexpected_list"):
                details["examples"] = result["partial_unexpected_list"][:5]
            results.append(
                ExpectationResult(
                    suite=suite.name,
                    batch=batch.name,
                    expectation=_readable(batch.name, spec),
                    expectation_type=spec.type,
                    column_name=spec.column,
                    success=m.success,
                    severity=spec.severity,
                    description=spec.description,
                    observed_value=observed,
                    details=json.dumps(details, default=_json_default),
                    element_count=result.get("element_count"),
                    unexpected_count=result.get("unexpected_count"),
                    scope=batch_scope.scope,
                    scope_note=batch_scope.note,
                    rows_checked=batch_scope.rows_checked,
                    rows_total=batch_scope.rows_total,
                )
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        context.build_data_docs(site_names=[DATA_DOCS_SITE])
    return results, pending


# --------------------------------------------------------------------------
# audit table
# --------------------------------------------------------------------------
def ensure_results_table(con: duckdb.DuckDBPyConnection) -> None:
    ensure_schemas(con)
    ensure_digests_table(con)
    for column, dtype in EXTRA_RESULT_COLUMNS:
        con.execute(
            f"alter table audit.validation_results add column if not exists {column} {dtype}"
        )


def write_results(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    validated_at: dt.datetime,
    suite: SuiteSpec,
    results: Sequence[ExpectationResult],
    data_docs_path: str | None,
) -> None:
    rows = [
        (
            run_id,
            validated_at,
            r.suite,
            r.expectation,
            r.column_name,
            r.success,
            r.severity,
            r.observed_value,
            r.details,
            suite.layer,
            r.batch,
            r.expectation_type,
            r.description,
            r.element_count,
            r.unexpected_count,
            data_docs_path,
            r.scope,
            r.rows_checked,
            r.rows_total,
            r.scope_note,
        )
        for r in results
    ]
    con.execute("begin transaction")
    try:
        con.execute(
            "delete from audit.validation_results where run_id = ? and suite = ?",
            [run_id, suite.name],
        )
        if rows:
            con.executemany(
                """
                insert into audit.validation_results (
                    run_id, validated_at, suite, expectation, column_name, success, severity,
                    observed_value, details, layer, batch_name, expectation_type,
                    description, element_count, unexpected_count, data_docs_path,
                    check_scope, rows_checked, rows_total, scope_note
                ) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                rows,
            )
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise


def prune_run_dirs(runs_dir: Path, keep: int = KEEP_RUNS) -> list[Path]:
    """Delete all but the ``keep`` most recent run folders of GX data docs."""
    if not runs_dir.is_dir():
        return []
    dirs = sorted((p for p in runs_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    doomed = dirs[:-keep] if keep > 0 else dirs
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


# --------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------
def _layers(layer: str | Iterable[str]) -> list[str]:
    items = [layer] if isinstance(layer, str) else list(layer)
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    if not seen:
        raise ValueError("validate_layer needs at least one layer")
    return seen


def record_baselines(
    con: duckdb.DuckDBPyConnection,
    pending: Sequence[PendingBaseline],
    *,
    run_id: str,
    validated_at: dt.datetime,
) -> None:
    """After a call without critical failures: what the next delta is measured from.

    One transaction: the digests of every whole-rebuilt rows batch (only the
    difference is written), the newest load time of every append-only one and,
    for suites validated in full, the time and fingerprint of that full run."""
    con.execute("begin transaction")
    try:
        for item in pending:
            con.execute(
                f"delete from {DIGESTS_TABLE} where suite = ? "
                "and not list_contains(?::varchar[], batch_name)",
                [item.suite, list(item.batches)],
            )
            for batch, table in item.digest_tables.items():
                con.execute(
                    f"delete from {DIGESTS_TABLE} as d where d.suite = ? and d.batch_name = ? "
                    f"and not exists (select 1 from {table} as t where t.digest = d.digest)",
                    [item.suite, batch],
                )
                con.execute(
                    f"insert into {DIGESTS_TABLE} select ?, ?, t.digest from {table} as t "
                    f"where not exists (select 1 from {DIGESTS_TABLE} as d where d.suite = ? "
                    "and d.batch_name = ? and d.digest = t.digest)",
                    [item.suite, batch, item.suite, batch],
                )
            if item.watermarks:
                marks = state.validation_watermarks(con, item.suite)
                marks = {b: at for b, at in marks.items() if b in item.batches}
                marks.update(item.watermarks)
                state.put_validation_watermarks(con, item.suite, marks, run_id=run_id)
            if item.scope is not None and item.scope.full:
                state.record_full_validation(
                    con, item.suite, validated_at, item.scope.fingerprint, run_id=run_id
                )
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise


def _drop_digest_tables(con: duckdb.DuckDBPyConnection, pending: Sequence[PendingBaseline]) -> None:
    for item in pending:
        for table in item.digest_tables.values():
            con.execute(f"drop table if exists {table}")


def validate_layer(
    layer: str | list[str],
    *,
    run_id: str,
    settings: Settings | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep_runs: int = KEEP_RUNS,
    raise_on_failure: bool = True,
    full: bool = False,
) -> ValidationOutcome:
    """Validate one or more layers (``raw``, ``staging``, ``marts``, ``segments``).

    Writes ``audit.validation_results``, GX data docs under
    ``<validation_reports_dir>/runs/<run>/<suite>/`` and ``index.html``; raises
    :class:`ValidationFailed` when a critical expectation failed (unless
    ``raise_on_failure`` is false). Each suite is validated in full or on the
    rows new or changed since its last successful validation (``scope.py``;
    ``full=True`` forces full); only a call without critical failures records
    the new baselines. Opens and closes its own connection to
    ``warehouse.duckdb`` (a writer: run it in the ``duckdb_writer`` pool).
    """
    from segment_warehouse.validation.report import render_report

    quiet_gx()
    settings = settings or get_settings()
    layers = _layers(layer)
    suites = [load_suite(name, settings.expectations_dir) for name in layers]
    validated_at = dt.datetime.now(dt.UTC)
    parameters = suite_parameters(settings, validated_at)
    reports_dir = settings.validation_reports_dir
    runs_dir = reports_dir / "runs"
    outcome = ValidationOutcome(
        run_id=run_id,
        validated_at=validated_at.isoformat(),
        layers=layers,
        suites=[],
        report_path=str(reports_dir / "index.html"),
    )

    pending: list[PendingBaseline] = []
    spark: SparkBatches | None = None
    if settings.engine == "spark":
        from segment_warehouse.validation.spark_batches import SparkBatches

        spark = SparkBatches(settings)
    try:
        with warehouse(settings=settings) as con:
            ensure_results_table(con)
            for suite in suites:
                docs_dir = runs_dir / _slug(run_id) / suite.name
                # Spark's row digests are not DuckDB's: the engine is in the fingerprint
                engine = "spark" if spark is not None and spark.suite_on_spark(suite) else "duckdb"
                scope = decide_scope(
                    con, suite, settings, now=validated_at, full_requested=full, engine=engine
                )
                log.info("validation %s: %s", suite.name, scope.reason)
                results, suite_pending = run_suite_scoped(
                    con,
                    suite,
                    run_id=run_id,
                    validated_at=validated_at,
                    parameters=parameters,
                    docs_dir=docs_dir,
                    chunk_rows=chunk_rows,
                    scope=scope,
                    previous_watermarks=state.validation_watermarks(con, suite.name),
                    spark=spark,
                )
                pending.append(suite_pending)
                docs_rel = (docs_dir / "index.html").relative_to(reports_dir).as_posix()
                write_results(
                    con,
                    run_id=run_id,
                    validated_at=validated_at,
                    suite=suite,
                    results=results,
                    data_docs_path=docs_rel,
                )
                outcome.results.extend(results)
                failed = [r for r in results if not r.success]
                outcome.suites.append(
                    SuiteOutcome(
                        suite=suite.name,
                        layer=suite.layer,
                        evaluated=len(results),
                        passed=len(results) - len(failed),
                        warnings=sum(r.severity == "warning" for r in failed),
                        critical_failed=sum(r.severity == "critical" for r in failed),
                        data_docs=str(docs_dir / "index.html"),
                        scope=scope.mode,
                        scope_reason=scope.reason,
                    )
                )
                log.info(
                    "validation %s: %d checks, %d passed, %d warnings, %d critical failures",
                    suite.name,
                    len(results),
                    len(results) - len(failed),
                    outcome.suites[-1].warnings,
                    outcome.suites[-1].critical_failed,
                )
            if outcome.success:
                record_baselines(con, pending, run_id=run_id, validated_at=validated_at)
            _drop_digest_tables(con, pending)
            prune_run_dirs(runs_dir, keep_runs)
            render_report(con, settings=settings, keep_runs=keep_runs)
    finally:
        if spark is not None:
            spark.close()

    for r in outcome.warnings:
        log.warning("validation warning [%s] %s: %s", r.suite, r.expectation, r.observed_value)
    if not outcome.success and raise_on_failure:
        raise ValidationFailed(outcome)
    return outcome
