"""The DAG files import cleanly, fast, and are wired as the flow diagram says."""

from __future__ import annotations

import itertools
import os
import time

import pytest

from segment_warehouse.config import REPO_ROOT


@pytest.fixture(scope="module")
def dagbag():
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    started = time.monotonic()
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    bag.parse_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    return bag


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"segment_pipeline", "recluster_segments"}


def test_pipeline_shape(dagbag) -> None:
    dag = dagbag.dags["segment_pipeline"]
    assert dag.max_active_runs == 1
    tasks = {t.task_id: t for t in dag.tasks}
    for source in ("crm", "analytics", "transactions", "erasure"):
        load = tasks[f"load_{source}"]
        assert load.upstream_task_ids == {"prepare_warehouse"}
        assert load.downstream_task_ids == {"apply_erasure"}
    assert tasks["dbt_build"].upstream_task_ids == {"apply_erasure"}
    assert tasks["validate_warehouse"].upstream_task_ids == {"dbt_build"}
    assert tasks["publish_snapshot"].upstream_task_ids == {"validate_warehouse"}
    assert [o.uri for o in tasks["publish_snapshot"].outlets] == [
        "duckdb://warehouse/marts/customer_profiles"
    ]
    # every task that touches warehouse.duckdb shares the single-slot pool
    assert {t.pool for t in dag.tasks} == {"duckdb_writer"}


def test_recluster_shape(dagbag) -> None:
    dag = dagbag.dags["recluster_segments"]
    assert dag.max_active_runs == 1
    tasks = {t.task_id: t for t in dag.tasks}
    flow = [
        "recluster",
        "predict",
        "decide",
        "measure_experiments",
        "validate_segments",
        "publish_snapshot",
        "export_audiences",
    ]
    for upstream, downstream in itertools.pairwise(flow):
        assert tasks[downstream].upstream_task_ids == {upstream}
    # the rules check reads decide's result and runs last
    assert tasks["check_content_rules"].upstream_task_ids == {"decide", "export_audiences"}
    assert tasks["decide"].retries == tasks["validate_segments"].retries == 0
    assert "customer_profiles" in str(dag.timetable.asset_condition)
    assert {t.pool for t in dag.tasks} == {"duckdb_writer"}


def test_dag_files_do_no_heavy_imports_at_parse_time() -> None:
    import subprocess
    import sys

    code = (
        "import sys, runpy;"
        f"sys.path.insert(0, {str(REPO_ROOT / 'plugins')!r});"
        f"runpy.run_path({str(REPO_ROOT / 'dags' / 'segment_pipeline.py')!r});"
        f"runpy.run_path({str(REPO_ROOT / 'dags' / 'recluster_segments.py')!r});"
        "heavy = [m for m in ('duckdb', 'great_expectations', 'sklearn', 'dbt')"
        " if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
