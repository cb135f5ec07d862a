"""Command-line entry points behind ``make run`` and ``make demo``.

Both run the DAGs through real Airflow (``DAG.test()``, what ``airflow dags
test`` runs, for both DAGs in one process) against a local AIRFLOW_HOME with
SQLite metadata. Airflow's own output goes to a log file; the terminal shows one
line per task and a summary, so the user can read what happened.

    python -m segment_warehouse.cli run  [--date YYYY-MM-DD]
    python -m segment_warehouse.cli demo [--customers N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from segment_warehouse.config import REPO_ROOT, Settings, get_settings

DAG_IDS: tuple[str, ...] = ("segment_pipeline", "recluster_segments")
_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")
_TASK_STATE = re.compile(r"new_state=(\w+)")
_TASK_END = re.compile(r"\[DAG TEST\] end task task_id=(\S+)")
# The exception line of a failed task, e.g. "segment_warehouse.x.DbtBuildError: ..."
_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Failed)\b.*: ")


def airflow_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Airflow subprocesses: local home, our dags and plugins."""
    env = dict(os.environ if base is None else base)
    home = Path(env.get("AIRFLOW_HOME") or REPO_ROOT / "airflow_home")
    env.setdefault("AIRFLOW_HOME", str(home))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False")
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home}/airflow.db")
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    plugins = str(REPO_ROOT / "plugins")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if plugins not in paths:
        env["PYTHONPATH"] = os.pathsep.join([plugins, *paths])
    return env


def _run_quiet(args: list[str], env: dict[str, str], log_file: Path) -> None:
    with log_file.open("a") as log:
        log.write(f"\n$ {' '.join(args)}\n")
        log.flush()
        proc = subprocess.run(args, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(args[1:])}` failed (exit {proc.returncode}); see {log_file}")


_INIT_SCRIPT = """
from airflow.utils.db import upgradedb
from airflow.models.pool import Pool
upgradedb()
Pool.create_or_update_pool(
    "duckdb_writer", slots=1, description="Serialises DuckDB writers", include_deferred=False
)
"""


def init_airflow(env: dict[str, str], log_file: Path) -> None:
    """Migrate the metadata DB and create the DuckDB writer pool, once per version.

    Both are idempotent, but each Airflow CLI start costs seconds; a marker in
    AIRFLOW_HOME (keyed by the Airflow version and metadata DB) skips them on
    later runs.
    """
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    from importlib.metadata import version

    stamp = f"{version('apache-airflow')} {env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}"
    marker = home / ".segments_initialised"
    db_file = home / "airflow.db"
    sqlite = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite")
    if marker.exists() and marker.read_text() == stamp and (db_file.exists() or not sqlite):
        return
    _run_quiet([sys.executable, "-c", _INIT_SCRIPT], env, log_file)
    marker.write_text(stamp)


_DAG_START = re.compile(r"^\[segments\] running dag_id=(\S+)")
_DAG_DONE = re.compile(r"^\[segments\] finished dag_id=(\S+) state=(\w+)")


def run_dags(
    dag_ids: tuple[str, ...], logical_date: str, env: dict[str, str], log_file: Path
) -> list[str]:
    """Run the DAGs in order through Airflow's test runner; echo one line per task.

    All DAGs run in one process (:mod:`segment_warehouse.airflow_runner`, the
    same ``DAG.test()`` that ``airflow dags test`` calls). Returns the ids of
    DAGs that did not succeed (the runner stops at the first one).
    """
    args = [sys.executable, "-m", "segment_warehouse.airflow_runner", logical_date, *dag_ids]
    started = time.monotonic()
    task_started: dict[str, float] = {}
    failed_dags: list[str] = []
    finished: set[str] = set()
    dag_id: str | None = None
    current: str | None = None
    state_ok = True
    last_error: list[str] = []
    with log_file.open("a") as log:
        log.write(f"\n$ {' '.join(args)}\n")
        proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if m := _DAG_START.match(line):
                dag_id, started = m.group(1), time.monotonic()
                print(f"▶ {dag_id} (logical date {logical_date})", flush=True)
                continue
            if m := _DAG_DONE.match(line):
                ok = m.group(2) == "success"
                finished.add(m.group(1))
                if not ok:
                    failed_dags.append(m.group(1))
                verdict = "succeeded" if ok else "FAILED"
                print(f"  {m.group(1)} {verdict} in {time.monotonic() - started:.1f}s", flush=True)
                continue
            if _EXCEPTION.match(line):
                last_error = [line.rstrip()]
                continue
            if last_error and line.lstrip().startswith("- ") and len(last_error) < 8:
                last_error.append(line.rstrip())
            if m := _TASK_START.search(line):
                current = m.group(1)
                task_started[current] = time.monotonic()
                state_ok = True
            elif (m := _TASK_STATE.search(line)) and current:
                state_ok = m.group(1) == "success"
                if m.group(1) in {"failed", "up_for_retry", "upstream_failed"}:
                    print(f"  ✗ {current:<22} {m.group(1)}", flush=True)
                    if m.group(1) == "failed":
                        for err in last_error:
                            print(f"      {err[:300]}", flush=True)
            elif (m := _TASK_END.search(line)) and state_ok:
                name = m.group(1)
                took = time.monotonic() - task_started.get(name, time.monotonic())
                print(f"  ✓ {name:<22} {took:6.1f}s", flush=True)
        rc = proc.wait()
    if rc != 0 and not failed_dags:
        # the runner died before reporting (e.g. a DAG failed to import)
        failed_dags = [d for d in dag_ids if d not in finished][:1] or [dag_id or "?"]
        for err in last_error:
            print(f"      {err[:300]}", flush=True)
    return failed_dags


def print_summary(settings: Settings) -> None:
    import duckdb

    print("\nResults")
    if settings.analytics_db.exists():
        con = duckdb.connect(str(settings.analytics_db), read_only=True)
        try:
            for table in (
                "marts.customer_profiles",
                "marts.identity_map",
                "segments.customer_segments",
                "segments.segment_summary",
            ):
                try:
                    (n,) = con.execute(f"select count(*) from {table}").fetchone()
                    print(f"  {table:<30} {n:>10,} rows")
                except duckdb.Error:
                    print(f"  {table:<30} (missing)")
        finally:
            con.close()
    print(f"  analytics snapshot : {settings.analytics_db}")
    print(f"  working warehouse  : {settings.warehouse_db}")
    print("    (audit.quarantine, audit.load_manifest, audit.validation_results)")
    print(f"  validation report  : {settings.validation_reports_dir / 'index.html'}")
    print(f"  segment report     : {settings.segment_reports_dir / 'index.html'}")
    print(f"  dbt docs (lineage) : {settings.dbt_docs_dir / 'static_index.html'}")


def ensure_local_pii_key(env: dict[str, str], settings: Settings) -> None:
    """Give a local `make run` a per-installation random secret.

    Deployments set SEGMENTS_PII_KEY (the tasks fail with a clear error
    without it). For a developer's local runs a random key is created once in
    AIRFLOW_HOME (mode 0600) so hashes stay stable between runs; it is never in
    code or in the repository.
    """
    if env.get("SEGMENTS_PII_KEY") or settings.demo_mode:
        return
    key_file = Path(env["AIRFLOW_HOME"]) / "segments_pii_key"
    if not key_file.exists():
        import secrets

        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_hex(32))
        print(f"SEGMENTS_PII_KEY not set: created a local random key in {key_file}")
    env["SEGMENTS_PII_KEY"] = key_file.read_text().strip()


def run_pipeline(logical_date: str | None = None, dag_ids: tuple[str, ...] = DAG_IDS) -> int:
    settings = get_settings()
    settings.ensure_dirs()
    logical_date = logical_date or datetime.now(UTC).date().isoformat()
    env = airflow_env()
    ensure_local_pii_key(env, settings)
    log_dir = Path(env["AIRFLOW_HOME"]) / "run_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    print(f"Airflow home {env['AIRFLOW_HOME']}; full log: {log_file}", flush=True)
    init_airflow(env, log_file)
    failed = run_dags(dag_ids, logical_date, env, log_file)
    if failed:
        print(f"\n{failed[0]} failed; the previous snapshot was left in place.")
        print(f"See the log for details: {log_file}")
        return 1
    print_summary(settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segment_warehouse.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run both DAGs once over the landing dir (new files only)")
    run.add_argument("--date", help="logical date YYYY-MM-DD (default: today, UTC)")
    demo = sub.add_parser("demo", help="generate a sample landing zone if empty, then run")
    demo.add_argument("--customers", type=int, default=3000)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--date", help="logical date YYYY-MM-DD (default: today, UTC)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        os.environ.setdefault("SEGMENTS_DEMO_MODE", "1")
        settings = get_settings()
        if not any(settings.landing_dir.glob("*/*")):
            from segment_warehouse.generator import generate

            print(f"Generating a sample landing zone in {settings.landing_dir} ...", flush=True)
            generate(settings.landing_dir, customers=args.customers, seed=args.seed)
        else:
            print(f"Landing zone {settings.landing_dir} is not empty; using it as is.")
    return run_pipeline(args.date)


if __name__ == "__main__":
    sys.exit(main())
