"""Task callables used by the DAGs in ``dags/``.

The DAG files only wire these together. Heavy libraries (duckdb, dbt, GX,
scikit-learn) are imported inside the functions so parsing a DAG file stays
fast: the dag-processor imports DAG files constantly, tasks run rarely.

Each function returns a small JSON-serialisable dict (it becomes the task's
XCom and shows up in the Airflow UI).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from segment_warehouse import failures
from segment_warehouse.fileutil import code_digest

if TYPE_CHECKING:
    import duckdb

    from segment_warehouse.config import Settings
    from segment_warehouse.dbt_runner import NodeResult

log = logging.getLogger(__name__)

# One Airflow pool with a single slot serialises every task that writes
# warehouse.duckdb (DuckDB allows one writing process per file).
WRITER_POOL = "duckdb_writer"
PROFILES_ASSET_URI = "duckdb://warehouse/marts/customer_profiles"

# Both DAGs start here. Far in the past on purpose: `make run DATE=` and backfills
# of historical data must run their tasks (a logical date before a DAG's
# start_date creates a run in which no task runs); catchup=False keeps the
# scheduler from filling the gap.
DAG_START_DATE = "1990-01-01"

# Shared by both DAGs: transient failures (a locked file, a killed worker) are
# retried with backoff; every task is a DuckDB writer.
DEFAULT_ARGS: dict[str, Any] = {
    "retries": 2,
    "retry_delay": timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "pool": WRITER_POOL,
}


F = TypeVar("F", bound=Callable[..., Any])


def _rss_bytes(proc: Any) -> int:
    """Resident memory of this process and its children (dbt runs as one)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        # a child may exit between listing and reading
        with contextlib.suppress(Exception):
            total += p.memory_info().rss
    return total


def measured(stage: str) -> Callable[[F], F]:
    """Record wall time and peak memory of a stage.

    One JSON line per stage run goes to ``<warehouse_dir>/metrics/stages.jsonl``
    (engineers can tail it; ``make bench`` reads it). Peak memory is sampled
    every 50 ms because ru_maxrss is a process-lifetime high-water mark and
    `airflow dags test` runs every task in one process. A stage whose result says
    ``"skipped": true`` is recorded with ``"skipped": true``.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            import psutil

            from segment_warehouse.config import get_settings

            proc = psutil.Process()
            peak = [_rss_bytes(proc)]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.05):
                    peak[0] = max(peak[0], _rss_bytes(proc))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            ok = False
            result = None
            try:
                result = func(*args, **kwargs)
                ok = True
                return result
            finally:
                stop.set()
                sampler.join()
                record = {
                    "stage": stage.format(*args, **kwargs),
                    "finished_at": datetime.now(UTC).isoformat(),
                    "seconds": round(time.perf_counter() - started, 3),
                    "peak_rss_mb": round(peak[0] / 2**20, 1),
                    "ok": ok,
                    "pid": os.getpid(),
                }
                if isinstance(result, dict) and result.get("skipped") is True:
                    record["skipped"] = True  # did no work (dbt_build: inputs unchanged)
                metrics = get_settings().warehouse_dir / "metrics"
                metrics.mkdir(parents=True, exist_ok=True)
                with (metrics / "stages.jsonl").open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                log.info("stage %(stage)s: %(seconds).1fs, peak %(peak_rss_mb).0f MiB", record)

        return wrapper  # type: ignore[return-value]

    return decorate


def _plain(value: Any) -> Any:
    """Make a result XCom-friendly (dataclasses -> dicts, paths -> str)."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@failures.fail_fast
def prepare_warehouse() -> dict[str, str]:
    """Create folders, schemas and audit tables; fail fast on bad config."""
    from segment_warehouse import privacy
    from segment_warehouse.config import get_settings
    from segment_warehouse.warehouse import ensure_schemas, warehouse

    settings = get_settings()
    key = settings.pii_key()  # a missing secret should fail the run before any work
    settings.ensure_dirs()
    with warehouse(settings=settings) as con:
        ensure_schemas(con)
        # a changed key would re-key every hash and let erased people back in
        privacy.verify_key(con, key)
    return {"warehouse": str(settings.warehouse_db), "landing": str(settings.landing_dir)}


@failures.fail_fast
@measured("load_{0}")
def load_source(source: str, run_id: str) -> dict[str, Any]:
    from segment_warehouse import ingest

    summary = ingest.load_source(source, batch_id=run_id)
    return _plain(summary)


@failures.fail_fast
@measured("apply_erasure")
def apply_erasure(run_id: str) -> dict[str, Any]:
    from segment_warehouse import erasure

    summary = erasure.apply_erasure_requests(run_id=run_id)
    if summary.requests_processed:
        request_full_refresh(f"erasure requests {', '.join(summary.request_ids)}", run_id=run_id)
    return _plain(summary)


def request_full_refresh(reason: str, *, run_id: str | None = None) -> None:
    """Make the next dbt build a --full-refresh (the request survives crashes until one
    succeeds; kept in audit.pipeline_state)."""
    from segment_warehouse import state

    with state.connection() as con:
        assert con is not None
        state.request_full_refresh(con, reason, run_id=run_id)


@failures.fail_fast
@measured("dbt_build")
def dbt_build(
    as_of_date: str,
    run_id: str | None = None,
    on_result: Callable[[list[Any]], None] | None = None,
) -> dict[str, Any]:
    """dbt build for the logical date; --full-refresh when incremental state is unsafe;
    no build at all when nothing it reads changed since the last successful one.

    ``on_result`` gets the build's per-node results (``dbt_runner.NodeResult``)
    as soon as dbt has finished, failed or not, before the state is written
    (the Airflow producer publishes them to its per-model tasks; see dbt_airflow.py).

    The lineage docs (``dbt docs generate``) are regenerated in the same dbt
    process, only when the dbt project itself changed: they describe the
    project, and a second dbt start-up + parse costs ~5 s.

    Incremental models only look forward: after an erasure (aggregates of the
    deleted rows), when running an older logical date than the last build
    (backfill) or when a reference seed changed (new FX rates re-price old
    orders, new blocked identifiers re-flag old rows), they are rebuilt from
    raw instead. What the last build left (its as-of date, its seeds' hash,
    pending full-refresh requests) is read from and written to
    ``audit.pipeline_state`` (see :mod:`segment_warehouse.state`).

    Unchanged inputs (a rules change, a manual re-trigger, a landing event for files
    already loaded): with SEGMENTS_DBT_SKIP_UNCHANGED (default) and no full refresh
    due, when :func:`dbt_inputs_fingerprint` equals the last successful build's, the
    marts generation is still the one that build left (no erasure, no other dbt run
    since), the last validation of staging and marts had no critical failure, and
    every relation of the project exists, dbt is not started: the tables
    are what a build would write again. The result says ``skipped`` and why, and
    ``on_result`` gets every node of the project as unchanged-and-successful.
    """
    from segment_warehouse import dbt_runner, state
    from segment_warehouse.config import get_settings

    settings = get_settings()
    with state.connection(settings) as con:
        assert con is not None
        reasons = state.full_refresh_reasons(con)
        last_as_of = state.get(con, state.DBT_LAST_AS_OF_DATE)
        last_seeds_hash = state.get(con, state.DBT_SEEDS_SHA256)
        if last_as_of and as_of_date < last_as_of:
            reasons.append(f"backfill: {as_of_date} is before the last build's {last_as_of}")
        seeds_hash = dbt_project_digest(["seeds"])
        if last_seeds_hash is not None and last_seeds_hash != seeds_hash:
            reasons.append("reference seeds changed (FX rates, blocked identifiers, bot patterns)")
        fingerprint, parts = dbt_inputs_fingerprint(con, as_of_date, settings)
        last_build = state.last_dbt_build(con)
        last_engine = ((last_build or {}).get("parts") or {}).get("engine", "duckdb")
        if settings.engine == "spark" and (last_build is None or last_engine != "spark"):
            # Spark's catalog keeps its own incremental tables: rows erased or
            # rebuilt by builds on another engine may still be in them
            reasons.append("no successful Spark build recorded as the last build")
        skip = _unchanged_build(con, settings, fingerprint, parts, reasons)
        if skip is None:
            # gone until this build succeeds: a failed or interrupted one leaves none
            state.delete(con, state.DBT_LAST_BUILD)
    if skip is not None:
        reason, nodes = skip
        log.info("dbt build skipped: %s", reason)
        if on_result is not None:
            on_result(nodes)
        return {
            "seconds": 0.0,
            "nodes_by_status": {"unchanged": len(nodes)},
            "full_refresh": False,
            "docs_generated": False,  # the project is unchanged, so are its docs
            "warnings": [],
            "skipped": True,
            "skipped_reason": f"dbt build skipped: {reason}",
        }
    extra = ["--full-refresh"] if reasons else []
    if reasons:
        log.info("dbt build with --full-refresh: %s", "; ".join(reasons))
    docs_marker = settings.dbt_docs_dir / ".project_sha256"
    project_hash = parts["project"]
    docs_stale = not docs_marker.exists() or docs_marker.read_text() != project_hash
    started = time.time() - 1.0  # file mtimes use a coarser clock than time.time()
    try:
        if settings.engine == "spark":
            from segment_warehouse.spark.pipeline import build_on_spark

            # the docs stay DuckDB's (regenerated by the next DuckDB build)
            docs_stale = False
            result = build_on_spark(as_of_date, full_refresh=bool(reasons), settings=settings)
        else:
            result = dbt_runner.build(as_of_date=as_of_date, extra_args=extra, docs=docs_stale)
    except dbt_runner.DbtBuildError as exc:
        if on_result is not None:
            on_result(exc.result.nodes)
        raise
    if on_result is not None:
        on_result(result.nodes)
    # A failed docs step does not fail the build; only docs written now are current.
    docs_site = settings.dbt_docs_dir / "static_index.html"
    docs_generated = docs_stale and docs_site.exists() and docs_site.stat().st_mtime >= started
    if docs_generated:
        docs_marker.write_text(project_hash)
    with state.connection(settings) as con:
        assert con is not None
        con.execute("begin transaction")
        state.put(con, state.DBT_LAST_AS_OF_DATE, as_of_date, run_id=run_id)
        state.put(con, state.DBT_SEEDS_SHA256, seeds_hash, run_id=run_id)
        state.delete(con, state.FULL_REFRESH_REQUIRED)
        if reasons:  # rebuilt rows (backfill, erasure, seeds): every row rule runs again
            state.request_full_validation(con, "; ".join(reasons), run_id=run_id)
        # with the marts generation this build's session renewed
        state.record_dbt_build(con, fingerprint, parts, run_id=run_id)
        con.execute("commit")
    counts: dict[str, int] = {}
    for node in result.nodes:
        counts[node.status] = counts.get(node.status, 0) + 1
    log.info("%s", result.summary())
    return {
        "seconds": round(result.elapsed_seconds, 1),
        "nodes_by_status": counts,
        "full_refresh": bool(reasons),
        "docs_generated": docs_generated,
        "warnings": [n.unique_id for n in result.nodes if n.status == "warn"][:50],
        "skipped": False,
    }


def dbt_project_digest(
    parts: Iterable[str] | None = None, *, settings: Settings | None = None
) -> str:
    """sha256 over the dbt project's files, or over some of its parts (files or folders
    relative to the project, e.g. ``["seeds"]``), in the order given.

    The one hasher of the project: the docs marker and the seeds hash here, the
    validation suites' fingerprints (``validation/scope.py``) and the build
    fingerprint all use it. dbt's own output folders are excluded by their path
    *inside* the project: a checkout that itself lives under a folder called
    ``logs`` or ``target`` is still hashed.
    """
    from segment_warehouse.config import get_settings

    project = (settings or get_settings()).dbt_project_dir
    return code_digest(project, [""] if parts is None else parts, exclude=_DBT_OUTPUT_DIRS)


_DBT_OUTPUT_DIRS = frozenset({"target", "logs", "dbt_packages"})
# Python outside dbt_project/ that runs inside the dbt process: the dbt-duckdb plugin's
# UDFs (phone normalisation, pseudonymisation) and the identity package the Python
# models import (with its trained Splink model). Relative to the segment_warehouse package.
DBT_CODE: tuple[str, ...] = ("dbt_plugin.py", "privacy.py", "identity")
# Libraries whose upgrade can change what the same SQL and Python compute.
DBT_PACKAGES: tuple[str, ...] = (
    "dbt-core", "dbt-duckdb", "duckdb", "splink", "phonenumbers", "numpy", "scipy", "pyarrow",
)  # fmt: skip
# With SEGMENTS_ENGINE=spark: the libraries of the Spark build (its code: spark/).
SPARK_PACKAGES: tuple[str, ...] = ("pyspark", "dbt-spark")
# Part of the fingerprint: a change in what it covers makes the next run build.
DBT_FINGERPRINT_VERSION = "1"


def dbt_inputs_fingerprint(
    con: duckdb.DuckDBPyConnection, as_of_date: str, settings: Settings
) -> tuple[str, dict[str, str]]:
    """Digest of everything a ``dbt build`` reads, and of each part (to say what changed).

    - ``load_manifest``: every row of ``audit.load_manifest`` (file, content hash,
      status, rows, load time): a new delivery changes it;
    - ``raw_rows``: each raw table's row count, for a change that bypassed the
      loaders (a manual delete; an erasure also requests a full refresh);
    - ``project``: the dbt project's files (models, macros, seeds, tests, yml);
    - ``code``: the Python dbt runs from this package (:data:`DBT_CODE`) and the
      versions of the libraries in :data:`DBT_PACKAGES`;
    - ``as_of_date`` (SEGMENTS_AS_OF_DATE for the models) and ``vars`` (``dbt_runner.dbt_vars``).

    SEGMENTS_DUCKDB_THREADS / _MEMORY_LIMIT and the dbt thread count reach dbt too
    but do not change what it writes. A changed SEGMENTS_PII_KEY is refused before
    any stage (privacy.verify_key).
    """
    import hashlib

    from segment_warehouse import dbt_runner
    from segment_warehouse.warehouse import quote_ident, table_exists

    def sha(value: Any) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()

    manifest_rows: list[Any] = []
    if table_exists(con, "audit", "load_manifest"):
        manifest_rows = con.execute(
            "select source, source_file, sha256, status, rows_loaded, rows_quarantined, "
            "batch_id, cast(loaded_at as varchar) from audit.load_manifest order by all"
        ).fetchall()
    raw_tables = con.execute(
        "select table_name from information_schema.tables "
        "where table_schema = 'raw' and table_type = 'BASE TABLE' order by table_name"
    ).fetchall()
    raw_rows = {}
    for (name,) in raw_tables:
        (raw_rows[name],) = con.execute(f"select count(*) from raw.{quote_ident(name)}").fetchone()
    package = Path(__file__).resolve().parent
    parts = {
        "as_of_date": sha(as_of_date),
        "vars": sha(dbt_runner.dbt_vars(settings)),
        "load_manifest": sha(manifest_rows),
        "raw_rows": sha(raw_rows),
        "project": dbt_project_digest(settings=settings),
        "code": sha([code_digest(package, DBT_CODE), _versions(DBT_PACKAGES)]),
    }
    if settings.engine != "duckdb":
        # only then, so a DuckDB warehouse's fingerprint is what it was
        parts["engine"] = settings.engine
        parts["engine_code"] = sha([code_digest(package, ["spark"]), _versions(SPARK_PACKAGES)])
    return sha([DBT_FINGERPRINT_VERSION, parts]), parts


def _versions(packages: Iterable[str]) -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _unchanged_build(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    fingerprint: str,
    parts: dict[str, str],
    full_refresh_reasons: list[str],
) -> tuple[str, list[NodeResult]] | None:
    """(why, every node as unchanged) when the build can be skipped, else None (logged)."""
    from segment_warehouse import state

    def build(why: str) -> None:
        log.info("dbt build needed: %s", why)

    if not settings.dbt_skip_unchanged:
        return build("SEGMENTS_DBT_SKIP_UNCHANGED is off")
    if full_refresh_reasons:
        return build("a full refresh is due")
    last = state.last_dbt_build(con)
    if last is None:
        return build("no successful build recorded with its inputs")
    if last["fingerprint"] != fingerprint:
        before = last.get("parts") or {}
        changed = [name for name, value in parts.items() if before.get(name) != value]
        return build(f"changed since run {last.get('run_id')}: {', '.join(changed) or 'inputs'}")
    generation = state.get(con, state.MARTS_GENERATION)
    if generation is None or generation != last.get("marts_generation"):
        return build("the marts were written since that build (an erasure or another dbt run)")
    failed = _critically_failed_suites(con)
    if failed:
        # e.g. a mart written by hand; the same inputs may still fail, as before
        return build(f"the last validation of {', '.join(failed)} failed critically")
    nodes = _project_nodes(settings)
    if nodes is None:
        return build(f"no readable manifest.json in {settings.dbt_target_dir}")
    missing = _missing_relations(con, nodes)
    if missing:
        return build(f"{len(missing)} relation(s) missing, e.g. {missing[0]}")
    since = last.get("run_id") or last.get("at")
    reason = (
        f"inputs unchanged since the build of run {since} (loaded files, raw row counts, "
        f"dbt project and code, as-of date, vars)"
    )
    return reason, _unchanged_results(nodes, since)


# The validation suites of what dbt builds (raw_contract checks dbt's inputs).
DBT_BUILT_SUITES: tuple[str, ...] = ("staging", "marts")


def _critically_failed_suites(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Suites of :data:`DBT_BUILT_SUITES` whose latest validation had a critical failure."""
    from segment_warehouse.warehouse import table_exists

    if not table_exists(con, "audit", "validation_results"):
        return []
    rows = con.execute(
        """
        with latest as (
            select suite, arg_max(run_id, validated_at) as run_id
            from audit.validation_results
            where suite in (select unnest(?::varchar[]))
            group by suite
        )
        select distinct results.suite
        from audit.validation_results as results
        inner join latest
            on results.suite = latest.suite and results.run_id = latest.run_id
        where not results.success and results.severity = 'critical'
        order by results.suite
        """,
        [list(DBT_BUILT_SUITES)],
    ).fetchall()
    return [suite for (suite,) in rows]


def _project_nodes(settings: Settings) -> list[dict[str, Any]] | None:
    """Models, seeds, snapshots and data tests of the last parsed project (the build's
    session parses first, and its project digest matched), None if unreadable."""
    from segment_warehouse.dbt_runner import manifest_nodes

    nodes = manifest_nodes(settings.dbt_target_dir / "manifest.json")
    if nodes is None:
        return None
    kept = {"model", "seed", "snapshot", "test"}
    return [n for n in nodes.values() if n.get("resource_type") in kept]


def _missing_relations(con: duckdb.DuckDBPyConnection, nodes: list[dict[str, Any]]) -> list[str]:
    """Tables and views of the project the warehouse does not have (dropped, or built
    in another file)."""
    present = {
        (schema.lower(), name.lower())
        for schema, name in con.execute(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
    }
    missing = []
    for node in nodes:
        if node.get("resource_type") == "test":
            continue
        if (node.get("config") or {}).get("materialized") == "ephemeral":
            continue
        schema = str(node.get("schema") or "")
        name = str(node.get("alias") or node.get("name") or "")
        if (schema.lower(), name.lower()) not in present:
            missing.append(f"{schema}.{name}")
    return missing


def _unchanged_results(nodes: list[dict[str, Any]], since: str) -> list[NodeResult]:
    """A successful result per node, as dbt would report it ("pass" for tests)."""
    from segment_warehouse.dbt_runner import NodeResult

    message = f"not rebuilt: inputs unchanged since the build of run {since}"
    return [
        NodeResult(
            unique_id=str(node["unique_id"]),
            status="pass" if node.get("resource_type") == "test" else "success",
            execution_time=0.0,
            message=message,
        )
        for node in nodes
        if node.get("unique_id")
    ]


@failures.fail_fast
@measured("validate")
def validate(layers: list[str], run_id: str) -> dict[str, Any]:
    from segment_warehouse.validation import validate_layer

    return _plain(validate_layer(layers, run_id=run_id).summary())


@failures.fail_fast
@measured("recluster")
def recluster(run_id: str, as_of_date: str) -> dict[str, Any]:
    from segment_warehouse import clustering

    return _plain(clustering.recluster(run_id=run_id, as_of=as_of_date))


@failures.fail_fast
@measured("publish")
def publish(
    run_id: str, refresh: list[str] | None = None, *, marts_unless_current: bool = False
) -> dict[str, Any]:
    """Publish the snapshot; ``refresh``: the schemas that changed (None: all).

    ``marts_unless_current`` (the warehouse DAG's publish of new marts): do no
    work when the snapshot was already built from the current marts
    generation. Every writer of marts renews the generation before it starts
    (a dbt build that skipped did not write), so the published marts are the
    warehouse's. Segments and decisions are the segments DAG's to publish,
    which the Asset event this task still emits triggers.
    """
    from segment_warehouse.config import get_settings
    from segment_warehouse.publish import marts_generation, publish_snapshot, snapshot_generation

    if marts_unless_current:
        settings = get_settings()
        current = marts_generation(settings)
        if current is not None and snapshot_generation(settings.analytics_db) == current:
            reason = f"the snapshot already holds marts generation {current}"
            log.info("publish skipped: %s", reason)
            return {
                "path": str(settings.analytics_db),
                "tables": {},
                "skipped": True,
                "skipped_reason": reason,
            }
    result = publish_snapshot(run_id=run_id, refresh=refresh)
    return {"path": str(result.path), "tables": result.tables}


def as_of_date(ds: str | None) -> str:
    """The run's as-of date; Asset-triggered runs have no ``ds`` (see state.resolve_as_of_date)."""
    from segment_warehouse.state import resolve_as_of_date

    return resolve_as_of_date(ds)


def recluster_or_skip(run_id: str, as_of_date: str) -> dict[str, Any]:
    """Recluster; when there is nothing to cluster yet, skip the rest of the DAG.

    A skip keeps the previous segments, predictions and decisions published and
    leaves the DAG run successful: nothing is wrong, the warehouse only lacks
    behaviour to cluster (the reason says what is missing).
    """
    from segment_warehouse import state

    result = recluster(run_id, as_of_date)
    if result.get("skipped_reason"):
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"reclustering skipped: {result['skipped_reason']}")
    # What this DAG computes from here on belongs to the current marts.
    generation = state.read(state.MARTS_GENERATION)
    if generation:
        state.write(state.SEGMENTS_MARTS_GENERATION, generation, run_id=run_id)
    return result


@failures.fail_fast
@measured("predict")
def predict(run_id: str, as_of_date: str) -> dict[str, Any]:
    from segment_warehouse.predictions import predict as predict_customers

    return _plain(predict_customers(run_id=run_id, as_of=as_of_date))


@failures.fail_fast
@measured("decide")
def decide(run_id: str, as_of_date: str) -> dict[str, Any]:
    """Content decisions; an invalid rules file keeps the previous decisions.

    Consent still wins: kept decisions of customers who withdrew are dropped.
    The run goes on (segments and predictions still publish) and
    :func:`check_content_rules` fails it at the end with the rules error, so
    the content team sees it once, clearly, and nothing half-decided is
    published.
    """
    from segment_warehouse.personalisation import RulesError
    from segment_warehouse.personalisation import decide as decide_content
    from segment_warehouse.personalisation.decide import withdraw_without_consent

    try:
        return _plain(decide_content(run_id=run_id, as_of=as_of_date))
    except RulesError as exc:
        log.error("content rules rejected, previous decisions kept: %s", exc)
        return {"rules_rejected": str(exc), "withdrawn_decisions": withdraw_without_consent()}


@failures.fail_fast
@measured("measure_experiments")
def measure_experiments(run_id: str, as_of_date: str) -> dict[str, Any]:
    from segment_warehouse.experiments import measure

    return _plain(measure(run_id=run_id, as_of=as_of_date))


@failures.fail_fast
@measured("export_audiences")
def export_audiences(run_id: str) -> dict[str, Any]:
    from segment_warehouse.personalisation import export_audiences as export

    return _plain(export(run_id=run_id))


@failures.fail_fast
@measured("refresh_exports")
def refresh_exports(run_id: str) -> dict[str, Any]:
    """Re-export the audiences from the snapshot segment_pipeline just published.

    An erasure or a consent withdrawal applied by this run reaches the exports
    now, not only after recluster_segments' export (which a skip or a failure
    there would postpone indefinitely). Nothing was ever exported: nothing to do.
    """
    import duckdb

    from segment_warehouse.config import get_settings
    from segment_warehouse.personalisation import export_audiences as export
    from segment_warehouse.personalisation.exports import CURRENT
    from segment_warehouse.warehouse import table_exists

    settings = get_settings()
    if not (settings.exports_dir / CURRENT).exists():
        return {"skipped": "no audience export yet"}
    con = duckdb.connect(str(settings.analytics_db), read_only=True)
    try:
        decided = table_exists(con, "personalisation", "content_rules")
    finally:
        con.close()
    if not decided:
        # exports from elsewhere (another warehouse on the same SEGMENTS_EXPORTS_DIR?):
        # nothing of this snapshot to export yet; recluster_segments writes the first one
        log.warning(
            "refresh_exports: %s has a release but the snapshot has no decisions yet; "
            "left as it is",
            settings.exports_dir,
        )
        return {"skipped": "the snapshot has no content decisions yet"}
    return _plain(export(run_id=run_id))


def check_content_rules(decide_result: dict[str, Any] | None) -> dict[str, Any]:
    """Fail the run (without retries) when decide rejected the rules file."""
    rejected = (decide_result or {}).get("rules_rejected")
    if rejected:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"content rules rejected; the previously published decisions stay in place:\n{rejected}"
        )
    return {"rules": "accepted"}
