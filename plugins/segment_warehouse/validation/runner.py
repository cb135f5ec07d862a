"""Run the expectation suites against the warehouse with Great Expectations.

How data reaches GX: GX Core has no DuckDB dialect, so every batch is a pandas
DataFrame fetched from DuckDB (``con.sql(...).df()``, Arrow-backed columns in
pandas 3). Each batch query selects only the columns its expectations need.

Scale (1 M customers, ~20 M events, a few M orders): per-customer batches
(profiles, CRM contacts, identity checks) are 1 M rows x 2-8 narrow columns,
a few hundred MB at most, so they are validated whole. Event- and order-sized
tables are never pulled whole: critical row rules on them (nulls, negative
amounts, timestamp range, raw required fields) are SQL aggregates computed by
DuckDB over the full table and validated as one-row DataFrames, and
row-shaped rules (regexes, value sets) run on a deterministic sample,
``hash(key) % m = 0``, sized to ``sample_rows``. Hash sampling is stable
across runs and thread counts (unlike ``USING SAMPLE``) and keeps duplicates
of a key together, so uniqueness checks stay meaningful on a sample.

Each call writes one row per expectation to ``audit.validation_results``
(replacing earlier rows of the same run and suite, so task retries are
idempotent), builds GX data docs per run and suite, re-renders the governance
``index.html`` and raises :class:`ValidationFailed` if a critical expectation
failed. Warnings are recorded and reported only.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.publish import RAW_PII_COLUMN_REGEX
from segment_warehouse.validation.suites import BatchSpec, ExpectationSpec, SuiteSpec, load_suite
from segment_warehouse.warehouse import ensure_schemas, warehouse

# Must be set before GX is imported anywhere in the process (GX reads it for
# its usage statistics); setdefault keeps an explicit operator choice.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_ROWS = 500_000
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


@dataclass
class SuiteOutcome:
    suite: str
    layer: str
    evaluated: int
    passed: int
    warnings: int
    critical_failed: int
    data_docs: str | None

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
def fetch_batch(
    con: duckdb.DuckDBPyConnection, batch: BatchSpec, sample_rows: int
) -> tuple[pd.DataFrame, str | None]:
    """Run the batch query; sample deterministically when it is too large."""
    sql = batch.sql
    note = None
    if batch.sample_key:
        limit = batch.sample_rows or sample_rows
        row = con.execute(f"select count(*) from ({sql}) as q").fetchone()
        n_rows = int(row[0]) if row else 0
        if n_rows > limit:
            every = math.ceil(n_rows / limit)
            key = batch.sample_key
            sql = f"select * from ({sql}) as q where hash(q.{key}) % {every} = 0"
            note = f"deterministic sample: about 1 in {every} of {n_rows:,} rows (by hash of {key})"
    return con.execute(sql).df(), note


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
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
) -> list[ExpectationResult]:
    """Validate every batch of ``suite``; build its GX data docs in ``docs_dir``."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    quiet_gx()
    if docs_dir.exists():  # a retry of the same run replaces its docs
        shutil.rmtree(docs_dir)
    docs_dir.mkdir(parents=True)
    context = _gx_context(docs_dir)
    source = context.data_sources.add_pandas(suite.name)
    gx_run_id = RunIdentifier(run_name=run_id, run_time=validated_at)
    results: list[ExpectationResult] = []

    for batch in suite.batches:
        try:
            df, sample_note = fetch_batch(con, batch, sample_rows)
        except duckdb.Error as exc:
            log.warning("batch %s.%s unavailable: %s", suite.name, batch.name, exc)
            results.append(_unavailable(suite, batch, exc))
            continue

        asset = source.add_dataframe_asset(batch.name)
        batch_def = asset.add_batch_definition_whole_dataframe("whole_dataframe")
        gx_suite = context.suites.add(
            gx.ExpectationSuite(
                name=f"{suite.name}.{batch.name}",
                expectations=[_gx_expectation(s) for s in batch.expectations],
                meta={"title": batch.title, "sql": batch.sql},
            )
        )
        # Expectation ids are assigned on add; map them back to our specs
        # because GX does not return results in suite order.
        by_id = {e.id: s for e, s in zip(gx_suite.expectations, batch.expectations, strict=True)}
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
            result = dict(res.result or {})
            exception = (res.exception_info or {}) if isinstance(res.exception_info, dict) else {}
            # Metric errors come back keyed by metric id; pull the message out.
            messages = [
                v.get("exception_message") for v in exception.values() if isinstance(v, dict)
            ] + ([exception.get("exception_message")] if exception.get("raised_exception") else [])
            messages = [m for m in messages if m]
            observed = _observed(result, bool(res.success))
            if messages:
                observed = f"check could not be evaluated ({messages[0][:200]})"
            details: dict[str, Any] = {
                "kwargs": spec.kwargs,
                "rows_in_batch": len(df),
            }
            if sample_note:
                details["sample"] = sample_note
            if messages:
                details["error"] = messages[0][:1000]
            if not batch.pii and result.get("partial_unexpected_list"):
                details["examples"] = result["partial_unexpected_list"][:5]
            results.append(
                ExpectationResult(
                    suite=suite.name,
                    batch=batch.name,
                    expectation=_readable(batch.name, spec),
                    expectation_type=spec.type,
                    column_name=spec.column,
                    success=bool(res.success),
                    severity=spec.severity,
                    description=spec.description,
                    observed_value=observed + (f" [{sample_note}]" if sample_note else ""),
                    details=json.dumps(details, default=_json_default),
                    element_count=result.get("element_count"),
                    unexpected_count=result.get("unexpected_count"),
                )
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        context.build_data_docs(site_names=[DATA_DOCS_SITE])
    return results


# --------------------------------------------------------------------------
# audit table
# --------------------------------------------------------------------------
def ensure_results_table(con: duckdb.DuckDBPyConnection) -> None:
    ensure_schemas(con)
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
                    description, element_count, unexpected_count, data_docs_path
                ) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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


def validate_layer(
    layer: str | list[str],
    *,
    run_id: str,
    settings: Settings | None = None,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    keep_runs: int = KEEP_RUNS,
    raise_on_failure: bool = True,
) -> ValidationOutcome:
    """Validate one or more layers (``raw``, ``staging``, ``marts``, ``segments``).

    Writes ``audit.validation_results``, GX data docs under
    ``<validation_reports_dir>/runs/<run>/<suite>/`` and ``index.html``; raises
    :class:`ValidationFailed` when a critical expectation failed (unless
    ``raise_on_failure`` is false). Opens and closes its own connection to
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

    with warehouse(settings=settings) as con:
        ensure_results_table(con)
        for suite in suites:
            docs_dir = runs_dir / _slug(run_id) / suite.name
            results = run_suite(
                con,
                suite,
                run_id=run_id,
                validated_at=validated_at,
                parameters=parameters,
                docs_dir=docs_dir,
                sample_rows=sample_rows,
            )
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
        prune_run_dirs(runs_dir, keep_runs)
        render_report(con, settings=settings, keep_runs=keep_runs)

    for r in outcome.warnings:
        log.warning("validation warning [%s] %s: %s", r.suite, r.expectation, r.observed_value)
    if not outcome.success and raise_on_failure:
        raise ValidationFailed(outcome)
    return outcome
