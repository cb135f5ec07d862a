"""Reliability and privacy over the whole pipeline (stages called in DAG order).

These run the same task callables the DAGs run, in-process and without the
Airflow runner, so crashes can be injected precisely; the Airflow wiring itself
is covered by test_pipeline_airflow.py.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from segment_warehouse import tasks
from segment_warehouse.config import REPO_ROOT, get_settings

pytestmark = pytest.mark.e2e

AS_OF = "2026-11-22"
SOURCES = ("crm", "analytics", "transactions", "erasure")


KILL_DBT_AFTER_SECONDS = 6
_REAL_RUN = subprocess.run


def run_segment_pipeline(run_id: str, as_of: str = AS_OF) -> None:
    """segment_pipeline's tasks in DAG order."""
    tasks.prepare_warehouse()
    for source in SOURCES:
        tasks.load_source(source, run_id)
    tasks.apply_erasure(run_id)
    tasks.dbt_build(as_of)
    tasks.validate(["raw", "staging", "marts"], run_id)
    tasks.publish(run_id)


def run_pipeline(run_id: str, as_of: str = AS_OF) -> None:
    """segment_pipeline then recluster_segments, task by task."""
    run_segment_pipeline(run_id, as_of)
    tasks.recluster(run_id, as_of)
    tasks.validate(["segments"], run_id)
    tasks.publish(run_id)


def generate(landing: Path, truth: Path, customers: int = 300, **extra: str) -> None:
    args = [
        sys.executable, "-m", "segment_tools.generator", "--customers", str(customers),
        "--seed", "5", "--out", str(landing), "--truth-dir", str(truth), "--no-progress",
    ]  # fmt: skip
    for flag, value in extra.items():
        args += [f"--{flag.replace('_', '-')}", value]
    subprocess.run(
        args,
        check=True,
        capture_output=True,
        env={"PATH": ""},
    )


def digests(db: Path) -> dict[str, str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for (table,) in con.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_schema in ('marts', 'segments') and table_name not in "
            "('segment_runs', 'segment_membership_history', 'segment_centroids') order by 1"
        ).fetchall():
            cols = [
                c
                for (c,) in con.execute(
                    "select column_name from information_schema.columns "
                    "where table_schema || '.' || table_name = ? and column_name <> 'run_id'",
                    [table],
                ).fetchall()
            ]
            rows = con.execute(f"select {', '.join(cols)} from {table} order by all").fetchall()
            out[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
        return out
    finally:
        con.close()


@pytest.fixture(scope="module")
def landing_zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zone")
    generate(root / "landing", root / "truth", erasure_requests="2")
    return root


@pytest.fixture
def workspace(landing_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(landing_zone / "landing", tmp_path / "landing")
    shutil.copytree(landing_zone / "truth", tmp_path / "truth")
    monkeypatch.setenv("SEGMENTS_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.setenv("SEGMENTS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("SEGMENTS_PII_KEY", "reliability-secret")
    return tmp_path


@pytest.fixture(scope="module")
def reference_state(landing_zone: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Published tables of one uninterrupted run over the landing zone."""
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        shutil.copytree(landing_zone / "landing", root / "landing")
        mp.setenv("SEGMENTS_LANDING_DIR", str(root / "landing"))
        mp.setenv("SEGMENTS_WAREHOUSE_DIR", str(root / "warehouse"))
        mp.setenv("SEGMENTS_REPORTS_DIR", str(root / "reports"))
        mp.setenv("SEGMENTS_PII_KEY", "reliability-secret")
        run_pipeline("reference")
        return digests(root / "warehouse" / "analytics.duckdb")


def test_crash_during_load_converges(workspace: Path, reference_state: dict, monkeypatch) -> None:
    from segment_warehouse import ingest

    real = ingest.loader._read_into_warehouse
    calls = {"n": 0}

    def crash_on_third_file(con, ctx, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill during load")
        return real(con, ctx, *args)

    monkeypatch.setattr(ingest.loader, "_read_into_warehouse", crash_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline("crashed")
    monkeypatch.setattr(ingest.loader, "_read_into_warehouse", real)
    run_pipeline("rerun")
    assert digests(get_settings().analytics_db) == reference_state


def test_killed_dbt_build_converges(workspace: Path, reference_state: dict, monkeypatch) -> None:
    from segment_warehouse import dbt_runner

    popen = subprocess.Popen
    killed = []

    def run_then_kill(args, **kwargs):
        """Like subprocess.run, but SIGKILL dbt a few seconds in (mid-build)."""
        kwargs.pop("check", None)
        if kwargs.pop("capture_output", False):
            kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
        with popen(args, **kwargs) as proc:
            try:
                out, err = proc.communicate(timeout=KILL_DBT_AFTER_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                killed.append(True)
                out, err = proc.communicate()
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    monkeypatch.setattr(dbt_runner.subprocess, "run", run_then_kill)
    with pytest.raises(dbt_runner.DbtBuildError):
        run_pipeline("killed")
    assert killed, "dbt finished before it could be killed; raise the data size"
    monkeypatch.setattr(dbt_runner.subprocess, "run", _REAL_RUN)
    run_pipeline("rerun")
    assert digests(get_settings().analytics_db) == reference_state


class _FailingCommit:
    """Connection proxy: the segments write dies half-way through its transaction."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def __getattr__(self, name: str):
        return getattr(self._con, name)

    def execute(self, sql: str, *args):
        if "segments.segment_summary as" in sql:
            raise KeyboardInterrupt("simulated kill during the segments write")
        return self._con.execute(sql, *args)


def test_crash_during_recluster_converges(
    workspace: Path, reference_state: dict, monkeypatch
) -> None:
    from segment_warehouse.clustering import store

    run_segment_pipeline("day1")
    real_write = store.write_run
    monkeypatch.setattr(store, "write_run", lambda con, **kw: real_write(_FailingCommit(con), **kw))
    with pytest.raises(KeyboardInterrupt):
        tasks.recluster("crashed", AS_OF)
    monkeypatch.setattr(store, "write_run", real_write)
    with duckdb.connect(str(get_settings().warehouse_db), read_only=True) as con:
        assert con.execute("select count(*) from segments.segment_runs").fetchone() == (0,)
        assert con.execute("select count(*) from segments.customer_segments").fetchone() == (0,)
    assert not list(get_settings().models_dir.glob("*crashed*"))
    run_pipeline("rerun")
    assert digests(get_settings().analytics_db) == reference_state


def _crm_update(landing: Path, name: str, rows: list[dict[str, str]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (landing / "crm" / name).write_bytes(gzip.compress(out.getvalue().encode()))


def test_consent_withdrawal_delivered_later(workspace: Path) -> None:
    run_pipeline("day1")
    snap = get_settings().analytics_db
    with duckdb.connect(str(snap), read_only=True) as con:
        customer, contact = con.execute(
            "select s.customer_id, m.source_id from segments.customer_segments s "
            "join marts.identity_map m using (customer_id) where m.source = 'crm' "
            "order by 1, 2 limit 1"
        ).fetchone()
        (excluded_before,) = con.execute(
            "select max(n_excluded) from segments.segment_runs"
        ).fetchone()
    # every CRM record of that customer now says "no"
    with duckdb.connect(str(get_settings().warehouse_db), read_only=True) as con:
        contacts = [c for (c,) in con.execute(
            "select distinct source_id from marts.identity_map "
            "where customer_id = ? and source = 'crm'",
            [customer],
        ).fetchall()]  # fmt: skip
    _crm_update(
        workspace / "landing",
        "contacts_2099-01-01_001.csv.gz",
        [
            {"contact_id": c, "marketing_consent": "No", "updated_at": "2026-11-22T12:00:00"}
            for c in contacts
        ],
    )
    run_pipeline("day2")
    with duckdb.connect(str(snap), read_only=True) as con:
        assert con.execute(
            "select marketing_consent from marts.customer_profiles where customer_id = ?",
            [customer],
        ).fetchone() == (False,)
        assert con.execute(
            "select count(*) from segments.customer_segments where customer_id = ?", [customer]
        ).fetchone() == (0,)
        (excluded_after,) = con.execute(
            "select n_excluded from segments.segment_runs order by created_at desc limit 1"
        ).fetchone()
    assert excluded_after == excluded_before + 1
    assert contact in contacts


def test_erasure_leaves_no_trace_and_redelivery_does_not_restore(
    workspace: Path, all_table_text
) -> None:
    requests = list(csv.DictReader((workspace / "truth" / "erasure_requests.csv").open()))
    assert requests, "the generator wrote erasure requests"
    run_pipeline("with-erasure")
    settings = get_settings()
    # the identifiers of the erased people, from the landed files (truth has them)
    erased_contacts = {r["contact_id"] for r in requests if r.get("contact_id")}
    erased_emails = {r["email"].strip().lower() for r in requests if r.get("email")}
    for db in (settings.warehouse_db, settings.analytics_db):
        text = all_table_text(db)
        for value in erased_contacts | erased_emails:
            assert f"'{value.lower()}'" not in text, (db.name, value)
    # a later delivery that repeats every CRM file of the erased people
    crm_files = sorted((workspace / "landing" / "crm").glob("*.csv*"))
    for i, path in enumerate(crm_files):
        shutil.copy(path, path.with_name(f"redelivery_{i:03d}_{path.name}"))
    run_pipeline("after-redelivery")
    for db in (settings.warehouse_db, settings.analytics_db):
        text = all_table_text(db)
        for value in erased_contacts | erased_emails:
            assert f"'{value.lower()}'" not in text, (db.name, value)


def test_backfill_of_a_past_logical_date(workspace: Path, tmp_path_factory) -> None:
    """Running an older logical date after a newer one equals a fresh run at that date."""
    past = "2026-10-01"
    run_segment_pipeline("today", AS_OF)
    run_segment_pipeline("backfill", past)
    backfilled = digests(get_settings().analytics_db)

    fresh = tmp_path_factory.mktemp("fresh")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGMENTS_WAREHOUSE_DIR", str(fresh / "warehouse"))
        mp.setenv("SEGMENTS_REPORTS_DIR", str(fresh / "reports"))
        run_segment_pipeline("fresh", past)
        expected = digests(get_settings().analytics_db)
    marts = {k: v for k, v in expected.items() if k.startswith("marts.")}
    assert {k: v for k, v in backfilled.items() if k.startswith("marts.")} == marts
    with duckdb.connect(str(get_settings().analytics_db), read_only=True) as con:
        stages = {
            s
            for (s,) in con.execute(
                "select distinct lifecycle_stage from marts.customer_profiles"
            ).fetchall()
        }
    assert stages  # lifecycle is computed relative to the backfilled date


def test_corrupted_mart_blocks_publish(workspace: Path) -> None:
    """A failed critical expectation stops the run; analysts keep the old snapshot."""
    from airflow.sdk.exceptions import AirflowFailException

    from segment_warehouse.validation import ValidationFailed

    run_segment_pipeline("good")
    snapshot = get_settings().analytics_db
    before = snapshot.read_bytes()
    tasks.dbt_build(AS_OF)
    with duckdb.connect(str(get_settings().warehouse_db)) as con:
        # a duplicated profile: "one row per customer" is a critical expectation
        con.execute(
            "insert into marts.customer_profiles select * from marts.customer_profiles limit 1"
        )
    # deterministic: failed without Airflow retries, the GX outcome as its cause
    with pytest.raises(AirflowFailException, match="customer_id") as failed:
        tasks.validate(["raw", "staging", "marts"], "corrupt")
    assert isinstance(failed.value.__cause__, ValidationFailed)
    # In the DAG, publish_snapshot only runs after validate_warehouse succeeded.
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags["segment_pipeline"]
    publish = dag.get_task("publish_snapshot")
    assert publish.upstream_task_ids == {"validate_warehouse"}
    assert publish.trigger_rule == "all_success"
    assert snapshot.read_bytes() == before
    with duckdb.connect(str(get_settings().warehouse_db), read_only=True) as con:
        failed = con.execute(
            "select count(*) from audit.validation_results "
            "where run_id = 'corrupt' and not success and severity = 'critical'"
        ).fetchone()[0]
    assert failed >= 1
