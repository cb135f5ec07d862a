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
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from segment_warehouse import failures

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
    `airflow dags test` runs every task in one process.
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
    """dbt build for the logical date; --full-refresh when incremental state is unsafe.

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
    seeds_hash = _dbt_project_hash("seeds")
    if last_seeds_hash is not None and last_seeds_hash != seeds_hash:
        reasons.append("reference seeds changed (FX rates, blocked identifiers, bot patterns)")
    extra = ["--full-refresh"] if reasons else []
    if reasons:
        log.info("dbt build with --full-refresh: %s", "; ".join(reasons))
    docs_marker = settings.dbt_docs_dir / ".project_sha256"
    project_hash = _dbt_project_hash()
    docs_stale = not docs_marker.exists() or docs_marker.read_text() != project_hash
    started = time.time() - 1.0  # file mtimes use a coarser clock than time.time()
    try:
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
    }


def _dbt_project_hash(subdir: str = "") -> str:
    """sha256 over the dbt project's files (or one folder of it, e.g. ``seeds``).

    dbt's own output folders are excluded by their path *inside* the project: a
    checkout that itself lives under a folder called ``logs`` or ``target`` is
    still hashed.
    """
    import hashlib

    from segment_warehouse.config import get_settings

    project = get_settings().dbt_project_dir
    digest = hashlib.sha256()
    for path in sorted((project / subdir).rglob("*")):
        relative = path.relative_to(project)
        if path.is_file() and not {"target", "logs", "dbt_packages"} & set(relative.parts):
            digest.update(relative.as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


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
def publish(run_id: str, refresh: list[str] | None = None) -> dict[str, Any]:
    """Publish the snapshot; ``refresh``: the schemas that changed (None: all)."""
    from segment_warehouse.publish import publish_snapshot

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
            "left as it is", settings.exports_dir,
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
