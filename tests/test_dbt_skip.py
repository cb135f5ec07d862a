"""tasks.dbt_build skips dbt when nothing it reads changed since the last successful build.

- the input fingerprint (``tasks.dbt_inputs_fingerprint``) follows loaded files, model
  files, the as-of date and the dbt vars, and nothing else;
- on a small generated zone, loaded by the real loaders and built by the real dbt
  step: a second build of the same inputs does not start dbt and leaves the tables as
  they were; a new file, a full-refresh request or SEGMENTS_DBT_SKIP_UNCHANGED=false
  build again; an erasure-style rewrite of the marts or a dropped mart does too;
- the Airflow producer's skip path gives every per-model task of the rendered DAG a
  status Cosmos's sensors accept as success.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from landing_rows import CRM_HEADER, crm_row

from segment_warehouse import dbt_runner, state, tasks
from segment_warehouse.config import REPO_ROOT, ConfigError, get_settings
from segment_warehouse.ingest.loader import load_all
from segment_warehouse.warehouse import ensure_schemas, warehouse

CUSTOMERS = 300
SEED = 29
AS_OF = "2026-11-22"
PRODUCER = "dbt_build.dbt_producer_watcher"


def _write_contacts(landing: Path, name: str, *rows: str) -> None:
    folder = landing / "crm"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join([CRM_HEADER, *rows]) + "\n", encoding="utf-8")


def _fingerprint(as_of: str = AS_OF, settings: Any = None) -> tuple[str, dict[str, str]]:
    settings = settings or get_settings()
    with warehouse(settings=settings) as con:
        return tasks.dbt_inputs_fingerprint(con, as_of, settings)


# --------------------------------------------------------------------------- fingerprint


@pytest.fixture
def loaded(segments_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A warehouse with one loaded CRM file (the real loader)."""
    monkeypatch.setenv("SEGMENTS_LANDING_SETTLE_SECONDS", "0")
    monkeypatch.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    with warehouse() as con:
        ensure_schemas(con)
    _write_contacts(segments_env / "landing", "contacts_2026-11-20_001.csv", crm_row("C1"))
    load_all(batch_id="b1", settle_seconds=0)
    return segments_env


def test_fingerprint_is_stable_for_the_same_inputs(loaded: Path) -> None:
    first, parts = _fingerprint()
    assert _fingerprint() == (first, parts)
    load_all(batch_id="b2", settle_seconds=0)  # nothing new landed: no manifest row
    assert _fingerprint()[0] == first
    assert set(parts) == {"as_of_date", "vars", "load_manifest", "raw_rows", "project", "code"}


def test_fingerprint_follows_a_newly_loaded_file(loaded: Path) -> None:
    before, parts = _fingerprint()
    _write_contacts(loaded / "landing", "contacts_2026-11-21_001.csv", crm_row("C2"))
    load_all(batch_id="b2", settle_seconds=0)
    after, new_parts = _fingerprint()
    assert after != before
    assert {k for k in parts if parts[k] != new_parts[k]} == {"load_manifest", "raw_rows"}


def test_fingerprint_follows_raw_rows_deleted_outside_the_loaders(loaded: Path) -> None:
    before, parts = _fingerprint()
    with warehouse() as con:
        con.execute("delete from raw.crm_contacts")
    after, new_parts = _fingerprint()
    assert after != before and new_parts["raw_rows"] != parts["raw_rows"]


def test_fingerprint_follows_the_as_of_date_and_the_dbt_vars(
    loaded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, _ = _fingerprint()
    assert _fingerprint("2026-11-23")[0] != before
    monkeypatch.setenv("SEGMENTS_REPORTING_CURRENCY", "EUR")
    assert _fingerprint()[0] != before
    monkeypatch.delenv("SEGMENTS_REPORTING_CURRENCY")
    monkeypatch.setenv("SEGMENTS_MAX_COMPONENT_SIZE", "51")
    assert _fingerprint()[0] != before
    monkeypatch.delenv("SEGMENTS_MAX_COMPONENT_SIZE")
    # settings that do not change what dbt writes
    monkeypatch.setenv("SEGMENTS_DUCKDB_MEMORY_LIMIT", "1GB")
    monkeypatch.setenv("SEGMENTS_K_MAX", "9")
    assert _fingerprint()[0] == before


def test_fingerprint_follows_a_model_file(loaded: Path) -> None:
    checkout = loaded / "checkout"
    shutil.copytree(
        REPO_ROOT / "dbt_project",
        checkout / "dbt_project",
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"),
    )
    settings = dataclasses.replace(get_settings(), repo_root=checkout)
    before, parts = _fingerprint(settings=settings)
    (checkout / "dbt_project" / "target").mkdir()
    (checkout / "dbt_project" / "target" / "run_results.json").write_text("{}")
    assert _fingerprint(settings=settings)[0] == before  # dbt's output is not an input
    model = checkout / "dbt_project" / "models" / "marts" / "customer_profiles.sql"
    model.write_text(model.read_text() + "\n-- edited\n")
    after, new_parts = _fingerprint(settings=settings)
    assert after != before
    assert {k for k in parts if parts[k] != new_parts[k]} == {"project"}


def test_dbt_vars_are_the_vars_the_build_passes(
    segments_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fingerprint's vars and dbt_runner.build's --vars must not drift apart."""
    seen: dict[str, Any] = {}

    def record(commands: list[Any], **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs)
        ok = dbt_runner.DbtRunResult(args=["build"], returncode=0, elapsed_seconds=0.0)
        return {"build": ok}

    monkeypatch.setenv("SEGMENTS_REPORTING_CURRENCY", "eur")
    monkeypatch.setattr(dbt_runner, "run_dbt_session", record)
    dbt_runner.build(AS_OF)
    assert seen["vars"] == dbt_runner.dbt_vars(get_settings())
    assert seen["as_of_date"] == AS_OF


def test_skip_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENTS_DBT_SKIP_UNCHANGED", raising=False)
    assert get_settings().dbt_skip_unchanged is True
    for value, expected in (("false", False), ("0", False), ("true", True), ("on", True)):
        monkeypatch.setenv("SEGMENTS_DBT_SKIP_UNCHANGED", value)
        assert get_settings().dbt_skip_unchanged is expected
    monkeypatch.setenv("SEGMENTS_DBT_SKIP_UNCHANGED", "sometimes")
    with pytest.raises(ConfigError, match="SEGMENTS_DBT_SKIP_UNCHANGED"):
        get_settings()


# --------------------------------------------------------------------------- real builds


def _mart_tables(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('staging', 'intermediate', 'marts') order by all"
        ).fetchall()
        return {
            f"{s}.{t}": con.execute(f'select * from "{s}"."{t}" order by all').fetchall()
            for s, t in names
        }
    finally:
        con.close()


class _FakeTI:
    """The XCom side of a TaskInstance (what the producer pushed, by key)."""

    try_number = 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "", **_: Any) -> Any:
        return self.pushed.get(key)


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A generated zone loaded and built once; the builds after it are counted."""
    root = tmp_path_factory.mktemp("dbt_skip")
    mp = pytest.MonkeyPatch()
    for name, sub in (("SEGMENTS_WAREHOUSE_DIR", "warehouse"), ("SEGMENTS_REPORTS_DIR",
                      "reports"), ("SEGMENTS_LANDING_DIR", "landing")):  # fmt: skip
        mp.setenv(name, str(root / sub))
    mp.setenv("SEGMENTS_PII_KEY", "test-key-not-secret")
    mp.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    mp.setenv("SEGMENTS_LANDING_SETTLE_SECONDS", "0")
    mp.delenv("SEGMENTS_DBT_SKIP_UNCHANGED", raising=False)
    subprocess.run(
        [
            sys.executable, "-m", "segment_tools.generator", "--customers", str(CUSTOMERS),
            "--seed", str(SEED), "--days", "60", "--out", str(root / "landing"),
            "--truth-dir", str(root / "truth"), "--workers", "1", "--no-progress",
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    builds: list[dict[str, Any]] = []
    real_build = dbt_runner.build

    def counted(*args: Any, **kwargs: Any) -> Any:
        builds.append(kwargs)
        return real_build(*args, **kwargs)

    mp.setattr(dbt_runner, "build", counted)
    try:
        tasks.prepare_warehouse()
        load_all(batch_id="d1", settle_seconds=0)
        first = tasks.dbt_build(AS_OF, run_id="run-1")
        yield {"root": root, "builds": builds, "first": first, "mp": mp}
    finally:
        mp.undo()


def test_unchanged_inputs_skip_dbt_and_keep_the_tables(zone: dict[str, Any]) -> None:
    settings = get_settings()
    assert zone["first"]["skipped"] is False and len(zone["builds"]) == 1
    run_results = settings.dbt_target_dir / "run_results_build.json"
    written = run_results.stat().st_mtime_ns
    tables = _mart_tables(settings.warehouse_db)
    generation = state.read(state.MARTS_GENERATION)
    nodes: list[Any] = []

    result = tasks.dbt_build(AS_OF, run_id="run-2", on_result=nodes.extend)

    assert result["skipped"] is True
    assert "unchanged since the build of run run-1" in result["skipped_reason"]
    assert len(zone["builds"]) == 1  # dbt was not started
    assert run_results.stat().st_mtime_ns == written
    assert state.read(state.MARTS_GENERATION) == generation  # the snapshot stays current
    assert _mart_tables(settings.warehouse_db) == tables
    # every model and data test of the project, reported as a success
    statuses = {n.unique_id: n.status for n in nodes}
    assert statuses["model.segment_warehouse.customer_profiles"] == "success"
    assert {s for uid, s in statuses.items() if uid.startswith("test.")} == {"pass"}
    assert {s for uid, s in statuses.items() if not uid.startswith("test.")} == {"success"}
    assert result["nodes_by_status"] == {"unchanged": len(nodes)}
    # the stage metrics say the stage did no work
    metrics = (settings.warehouse_dir / "metrics" / "stages.jsonl").read_text().splitlines()
    assert '"skipped": true' in metrics[-1] and '"stage": "dbt_build"' in metrics[-1]


def test_a_new_file_builds_again_then_skips(zone: dict[str, Any]) -> None:
    landing = zone["root"] / "landing"
    _write_contacts(landing, "contacts_2026-11-22_z01.csv", crm_row("CNEWSKIP1"))
    load_all(batch_id="d2", settle_seconds=0)
    before = len(zone["builds"])
    result = tasks.dbt_build(AS_OF, run_id="run-3")
    assert result["skipped"] is False and result["full_refresh"] is False
    assert len(zone["builds"]) == before + 1
    with warehouse(read_only=True) as con:
        (n,) = con.execute(
            "select count(*) from marts.identity_map where source = 'crm' and source_id = ?",
            ["CNEWSKIP1"],
        ).fetchone()
    assert n == 1  # the new record reached the marts
    assert tasks.dbt_build(AS_OF, run_id="run-4")["skipped"] is True
    assert len(zone["builds"]) == before + 1


def test_a_full_refresh_request_or_the_setting_off_always_builds(zone: dict[str, Any]) -> None:
    before = len(zone["builds"])
    tasks.request_full_refresh("erasure requests ER-9", run_id="run-5")
    result = tasks.dbt_build(AS_OF, run_id="run-5")
    assert result["skipped"] is False and result["full_refresh"] is True
    assert len(zone["builds"]) == before + 1

    zone["mp"].setenv("SEGMENTS_DBT_SKIP_UNCHANGED", "false")
    try:
        assert tasks.dbt_build(AS_OF, run_id="run-6")["skipped"] is False
    finally:
        zone["mp"].delenv("SEGMENTS_DBT_SKIP_UNCHANGED")
    assert len(zone["builds"]) == before + 2
    assert tasks.dbt_build(AS_OF, run_id="run-7")["skipped"] is True


def test_a_failed_build_leaves_no_fingerprint(
    zone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    calls: list[dict[str, Any]] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise dbt_runner.DbtBuildError(
            "boom", dbt_runner.DbtRunResult(args=["build"], returncode=1, elapsed_seconds=0.0)
        )

    monkeypatch.setattr(dbt_runner, "build", failing)
    monkeypatch.setenv("SEGMENTS_DBT_SKIP_UNCHANGED", "false")  # forced: it must run dbt
    with pytest.raises(AirflowFailException):
        tasks.dbt_build(AS_OF, run_id="run-8")
    assert len(calls) == 1
    assert state.read(state.DBT_LAST_BUILD) is None
    monkeypatch.delenv("SEGMENTS_DBT_SKIP_UNCHANGED")

    # same inputs, but nothing recorded them as built: the next run starts dbt (here a
    # stand-in that succeeds; the tables are still those of run-7's inputs)
    def succeeding(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return dbt_runner.DbtRunResult(args=["build"], returncode=0, elapsed_seconds=0.0)

    monkeypatch.setattr(dbt_runner, "build", succeeding)
    assert tasks.dbt_build(AS_OF, run_id="run-9")["skipped"] is False
    assert len(calls) == 2
    with state.connection() as con:
        assert con is not None
        assert (state.last_dbt_build(con) or {}).get("run_id") == "run-9"


def test_rewritten_or_missing_marts_are_not_skipped(zone: dict[str, Any]) -> None:
    """An erasure (or another dbt run) renews the marts generation; a dropped mart is
    missing; a critically failed validation of the marts may mean a hand-edited table:
    none is what the recorded build left."""
    settings = get_settings()
    with state.connection(settings) as con:
        assert con is not None
        fingerprint, parts = tasks.dbt_inputs_fingerprint(con, AS_OF, settings)
        assert tasks._unchanged_build(con, settings, fingerprint, parts, []) is not None
        assert tasks._unchanged_build(con, settings, fingerprint, parts, ["backfill"]) is None
        generation = state.get(con, state.MARTS_GENERATION)
        state.renew_marts_generation(con)
        assert tasks._unchanged_build(con, settings, fingerprint, parts, []) is None
        state.put(con, state.MARTS_GENERATION, generation or "")
        con.execute("alter table marts.customer_profiles rename to customer_profiles_away")
        try:
            assert tasks._unchanged_build(con, settings, fingerprint, parts, []) is None
        finally:
            con.execute("alter table marts.customer_profiles_away rename to customer_profiles")
        assert tasks._unchanged_build(con, settings, fingerprint, parts, []) is not None
        # a critical failure in the latest validation of a mart (e.g. a row written by hand)
        con.execute(
            "insert into audit.validation_results (run_id, validated_at, suite, expectation, "
            "success, severity) values (?, now(), 'marts', 'unique customer_id', false, ?)",
            ["bad-run", "critical"],
        )
        assert tasks._unchanged_build(con, settings, fingerprint, parts, []) is None
        con.execute(
            "insert into audit.validation_results (run_id, validated_at, suite, expectation, "
            "success, severity) values (?, now() + interval 1 second, 'marts', "
            "'unique customer_id', true, 'critical')",
            ["good-run"],
        )
        assert tasks._unchanged_build(con, settings, fingerprint, parts, []) is not None


def test_the_producer_skip_path_gives_every_dbt_task_a_success(
    zone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DAG rendered from this project: after a skipped build, every per-model
    task finds its status and succeeds, and dbt runs nowhere."""
    from airflow.dag_processing.dagbag import DagBag

    from segment_warehouse import dbt_airflow

    settings = get_settings()
    assert dbt_airflow.publish_dag_manifest(settings.dbt_target_dir / "manifest.json", settings)
    monkeypatch.setattr(dbt_airflow, "_start_background_parse", lambda *a: None)
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "segment_pipeline.py")).dags[
        "segment_pipeline"
    ]
    by_id = {t.task_id: t for t in dag.tasks}
    consumers = [t for t in dag.tasks if hasattr(t, "model_unique_id") and t.task_id != PRODUCER]
    assert len(consumers) > 20

    def no_dbt(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a consumer ran dbt")

    before = len(zone["builds"])
    ti = _FakeTI()
    result = by_id[PRODUCER].execute({"ti": ti, "run_id": "run-10", "ds": AS_OF})
    assert result["skipped"] is True and len(zone["builds"]) == before
    for task in consumers:
        monkeypatch.setattr(type(task), "build_and_run_cmd", no_dbt, raising=False)
        # "running": a consumer without a pushed status would keep polling (False)
        monkeypatch.setattr(type(task), "_get_producer_task_status", lambda self, ctx: "running")
        assert task._get_node_status(ti, {"ti": ti}) in {"success", "pass"}, task.task_id
        assert task.poke({"ti": ti, "run_id": "run-10"}) is True, task.task_id


def test_the_warehouse_publish_does_no_work_while_its_marts_are_published(
    zone: dict[str, Any],
) -> None:
    """After a skipped build the marts are the published ones: the warehouse DAG's
    publish leaves the snapshot alone; a renewed generation or a segments refresh
    publishes."""
    settings = get_settings()
    first = tasks.publish("pub-1", marts_unless_current=True)
    assert first.get("skipped") is not True and first["tables"]["marts.customer_profiles"] > 0
    snapshot = settings.analytics_db
    written = snapshot.stat()

    again = tasks.publish("pub-2", marts_unless_current=True)

    assert again["skipped"] is True
    assert "already holds marts generation" in again["skipped_reason"]
    assert snapshot.stat().st_ino == written.st_ino
    assert snapshot.stat().st_mtime_ns == written.st_mtime_ns
    metrics = (settings.warehouse_dir / "metrics" / "stages.jsonl").read_text().splitlines()
    assert '"skipped": true' in metrics[-1] and '"stage": "publish"' in metrics[-1]
    # the segments DAG's publish names what changed: it always publishes
    refreshed = tasks.publish("pub-3", refresh=["segments", "personalisation"])
    assert refreshed.get("skipped") is not True
    assert snapshot.stat().st_ino != written.st_ino
    # a writer of marts (dbt, erasure) renews the generation first: publish again
    renewed = tasks.publish("pub-4", marts_unless_current=True)
    assert renewed.get("skipped") is True
    with state.connection(settings) as con:
        assert con is not None
        state.renew_marts_generation(con)
    published = tasks.publish("pub-5", marts_unless_current=True)
    assert published.get("skipped") is not True
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        (run_id,) = con.execute("select run_id from meta.snapshot_info").fetchone()
    finally:
        con.close()
    assert run_id == "pub-5"
    # without the flag (a caller publishing everything) it always publishes
    assert tasks.publish("pub-6").get("skipped") is not True
