"""Command-line entry points behind ``make run`` and ``make demo``.

Both run the DAGs through real Airflow (``DAG.test()``, what ``airflow dags
test`` runs, for both DAGs in one process) against a local AIRFLOW_HOME with
SQLite metadata. Airflow's own output goes to a log file; the terminal shows one
line per task and a summary, so the user can read what happened.

Run and task states come from Airflow itself (the DagRun and TaskInstance
results :mod:`segment_warehouse.airflow_runner` sends on a separate channel),
never from log text, which task output such as file names could imitate. One
run at a time per AIRFLOW_HOME and per warehouse: a second one stops at once
with "another run is in progress" (an flock on a file in each).

    python -m segment_warehouse.cli run  [--date YYYY-MM-DD]
    python -m segment_warehouse.cli demo [--customers N] [--seed S]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from segment_warehouse.config import REPO_ROOT, Settings, get_settings
from segment_warehouse.tasks import DAG_START_DATE

DAG_IDS: tuple[str, ...] = ("segment_pipeline", "recluster_segments")
LOCK_FILE = ".segments_run.lock"
# Exit status when another run holds the lock (EX_TEMPFAIL: try again later).
EXIT_RUN_IN_PROGRESS = 75
# Lines of a failed task's error shown in the terminal (the full one is in the log).
ERROR_LINES = 8


def printable(text: object) -> str:
    """``text`` on one terminal line: control characters (newlines, escape
    sequences) are shown escaped, so a name can never fake another line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class RunInProgress(RuntimeError):
    """Another run holds the lock of this AIRFLOW_HOME or warehouse."""


@contextmanager
def run_lock(*directories: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``<dir>/.segments_run.lock`` in each directory.

    Two runs in one AIRFLOW_HOME collide in Airflow's SQLite metadata database,
    two on one warehouse in DuckDB's single-writer file. The lock is released when
    the process ends, however it ends, so a crashed run never blocks the next.
    """
    handles: list[IO[str]] = []
    try:
        for directory in directories:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / LOCK_FILE
            fh = path.open("a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "unknown process"
                fh.close()
                raise RunInProgress(
                    f"another run is in progress ({printable(holder)}; lock {path}). "
                    "Wait for it to finish, or use another AIRFLOW_HOME and "
                    "SEGMENTS_WAREHOUSE_DIR."
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
            fh.flush()
            handles.append(fh)
        yield
    finally:
        for fh in handles:
            fh.close()  # releases the flock


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
    env.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
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


def _runner_command(logical_date: str, dag_ids: tuple[str, ...], events_fd: int) -> list[str]:
    return [
        sys.executable, "-m", "segment_warehouse.airflow_runner",
        "--events-fd", str(events_fd), logical_date, *dag_ids,
    ]  # fmt: skip


def _print_error(error: str | None) -> None:
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    for line in lines[:ERROR_LINES]:
        print(f"      | {printable(line)[:300]}", flush=True)


class _Progress:
    """Terminal lines from the runner's events (states as Airflow recorded them)."""

    def __init__(self, logical_date: str) -> None:
        self.logical_date = logical_date
        self.dag_started = time.monotonic()
        self.task_started: dict[str, float] = {}
        self.shown: set[str] = set()
        self.last_error: dict[str, str | None] = {}
        self.finished: dict[str, str] = {}  # dag_id -> DagRun state

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        dag_id = printable(event.get("dag_id"))
        task = printable(event.get("task_id"))
        if kind == "dag_started":
            self.dag_started = time.monotonic()
            self.shown.clear()
            print(f"▶ {dag_id} (logical date {self.logical_date})", flush=True)
        elif kind == "task_started":
            self.task_started[task] = time.monotonic()
        elif kind == "task_finished":
            took = time.monotonic() - self.task_started.get(task, time.monotonic())
            state = printable(event.get("state"))
            if state == "success":
                print(f"  ✓ {task:<22} {took:6.1f}s", flush=True)
            elif state == "skipped":
                print(f"  - {task:<22} skipped", flush=True)
            else:
                print(f"  ✗ {task:<22} {state}", flush=True)
                error = event.get("error")
                if error and error == self.last_error.get(task):
                    print("      | (the same error as the previous attempt)", flush=True)
                else:
                    _print_error(error)
                self.last_error[task] = error
            self.shown.add(task)
        elif kind == "dag_finished":
            for ti in event.get("tasks") or []:
                name = printable(ti.get("task_id"))
                if name not in self.shown:  # never ran: upstream_failed, skipped, ...
                    print(f"  - {name:<22} {printable(ti.get('state'))}", flush=True)
            for note in event.get("notes") or []:
                print(f"  note: {printable(note)}", flush=True)
            state = str(event.get("state"))
            self.finished[str(event.get("dag_id"))] = state
            verdict = "succeeded" if state == "success" else f"FAILED ({printable(state)})"
            took = time.monotonic() - self.dag_started
            print(f"  {dag_id} {verdict} in {took:.1f}s", flush=True)


def run_dags(
    dag_ids: tuple[str, ...], logical_date: str, env: dict[str, str], log_file: Path
) -> list[str]:
    """Run the DAGs in order through Airflow's test runner; echo one line per task.

    All DAGs run in one process (:mod:`segment_warehouse.airflow_runner`, the
    same ``DAG.test()`` that ``airflow dags test`` calls); its output goes to
    ``log_file`` only. Returns the ids of DAGs that did not succeed (the runner
    stops at the first one), from the DagRun states the runner reports.
    """
    read_fd, write_fd = os.pipe()
    args = _runner_command(logical_date, dag_ids, write_fd)
    progress = _Progress(logical_date)
    with log_file.open("a") as log:
        log.write(f"\n$ {' '.join(args)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,)
            )
        finally:
            os.close(write_fd)  # the runner holds the only write end now
    with os.fdopen(read_fd, encoding="utf-8", errors="replace") as events:
        for line in events:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not an event (the channel carries nothing else)
            if isinstance(event, dict):
                progress.handle(event)
    rc = proc.wait()
    failed = [d for d in dag_ids if d in progress.finished and progress.finished[d] != "success"]
    if not failed and (rc != 0 or any(d not in progress.finished for d in dag_ids)):
        # the runner died before reporting a DAG (e.g. a DAG failed to import)
        missing = [d for d in dag_ids if d not in progress.finished]
        failed = missing[:1] or [dag_ids[-1]]
        print(f"  {failed[0]} did not finish (runner exit {rc})", flush=True)
    return failed


def refresh_dbt_manifest(settings: Settings) -> None:
    """Parse the dbt project when it changed, before Airflow parses the DAG file: the
    per-model dbt tasks are rendered from this manifest (see dbt_airflow.py). A
    project dbt cannot parse is reported by the dbt_build task itself."""
    from segment_warehouse import dbt_airflow

    if not dbt_airflow.manifest_is_current(settings):
        print("Parsing the dbt project (it changed since the last build) ...", flush=True)
        dbt_airflow.ensure_manifest(settings, wait=True)


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
                "segments.customer_predictions",
                "personalisation.content_decisions",
                "personalisation.experiment_assignments",
                "personalisation.experiment_results",
            ):
                try:
                    (n,) = con.execute(f"select count(*) from {table}").fetchone()
                    print(f"  {table:<40} {n:>10,} rows")
                except duckdb.Error:
                    print(f"  {table:<40} (missing)")
            _print_decisions(con)
        finally:
            con.close()
    print(f"  analytics snapshot : {printable(settings.analytics_db)}")
    print(f"  working warehouse  : {printable(settings.warehouse_db)}")
    print("    (audit.quarantine, audit.load_manifest, audit.validation_results)")
    print(f"  validation report  : {printable(settings.validation_reports_dir / 'index.html')}")
    print(f"  segment report     : {printable(settings.segment_reports_dir / 'index.html')}")
    print(
        "  personalisation    : "
        f"{printable(settings.personalisation_reports_dir / 'index.html')}"
    )
    print(f"  experiments        : {printable(settings.experiment_reports_dir / 'index.html')}")
    print(f"  audience exports   : {printable(settings.exports_dir / 'current')}")
    print(f"  dbt docs (lineage) : {printable(settings.dbt_docs_dir / 'static_index.html')}")
    print("  decision API       : make serve  (GET /v1/decisions?customer_id=…&slot=…)")


def _print_decisions(con) -> None:
    """Per slot: how many consenting customers get which content (and by which rule)."""
    import duckdb

    try:
        rows = con.execute(
            """
            select slot_id, content_id, coalesce(rule_id, '(default)'), count(*)
            from personalisation.content_decisions
            group by all order by 1, 4 desc, 2
            """
        ).fetchall()
    except duckdb.Error:
        return
    if rows:
        print("  content decisions (consenting customers per slot):")
    for slot, content, rule, n in rows:
        print(f"    {printable(slot):<16} {printable(content):<28} {printable(rule):<24} {n:>8,}")


def ensure_local_pii_key(env: dict[str, str], settings: Settings) -> None:
    """Give a local `make run` without SEGMENTS_PII_KEY a key of its warehouse.

    Deployments set SEGMENTS_PII_KEY (the Airflow tasks fail with a clear error
    without it). `make run` on a local checkout keeps the contract's promise of
    working on any landing zone: a random key is created once *beside the
    warehouse it protects* (``<warehouse_dir>/.segments_pii_key``, mode 0600),
    announced on every run, never in code or the repository. The key and the
    data go together: a new warehouse gets a new key, and an existing warehouse
    keeps its own. A changed key is refused by the tasks (the warehouse stores
    the key's fingerprint), so hashes can never silently change.
    """
    if env.get("SEGMENTS_PII_KEY") or settings.demo_mode:
        return
    key_file = settings.warehouse_dir / ".segments_pii_key"
    legacy = Path(env["AIRFLOW_HOME"]) / "segments_pii_key"  # where earlier versions kept it
    if legacy.exists() and not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        legacy.replace(key_file)
    if not key_file.exists():
        import secrets

        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_hex(32))
        print(f"SEGMENTS_PII_KEY not set: created a random key for this warehouse in {key_file}")
    else:
        print(f"SEGMENTS_PII_KEY not set: using this warehouse's key in {key_file}")
    env["SEGMENTS_PII_KEY"] = key_file.read_text().strip()


def _checked_date(value: str | None) -> str | None:
    """The logical date as YYYY-MM-DD (default today, UTC); None when invalid."""
    if not value:
        return datetime.now(UTC).date().isoformat()
    try:
        return date.fromisoformat(value).isoformat() if len(value) == 10 else None
    except ValueError:
        return None


def run_pipeline(
    logical_date: str | None = None, dag_ids: tuple[str, ...] = DAG_IDS, *, lock: bool = True
) -> int:
    """Run the DAGs once; 0 when all succeeded. ``lock``: take the run lock here
    (False when the caller already holds it)."""
    settings = get_settings()
    settings.ensure_dirs()
    day = _checked_date(logical_date)
    if day is None:
        print(f"--date must be YYYY-MM-DD, got {printable(logical_date)}", file=sys.stderr)
        return 2
    if day < DAG_START_DATE:
        # Airflow would create the runs and run none of their tasks
        print(f"--date {day} is before the DAGs' start date {DAG_START_DATE}", file=sys.stderr)
        return 2
    env = airflow_env()
    if lock:
        try:
            with run_lock(Path(env["AIRFLOW_HOME"]), settings.warehouse_dir):
                return run_pipeline(day, dag_ids, lock=False)
        except RunInProgress as exc:
            print(exc, file=sys.stderr)
            return EXIT_RUN_IN_PROGRESS
    ensure_local_pii_key(env, settings)
    log_dir = Path(env["AIRFLOW_HOME"]) / "run_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    print(f"Airflow home {printable(env['AIRFLOW_HOME'])}; full log: {printable(log_file)}",
          flush=True)  # fmt: skip
    init_airflow(env, log_file)
    refresh_dbt_manifest(settings)
    failed = run_dags(dag_ids, day, env, log_file)
    if failed:
        print(f"\n{failed[0]} failed; the previous snapshot was left in place.")
        print(f"See the log for details: {printable(log_file)}")
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
    env = airflow_env()
    try:
        # one lock around generation and run: a second demo must not write the
        # landing zone while the first one loads it
        with run_lock(Path(env["AIRFLOW_HOME"]), settings.warehouse_dir):
            if args.command == "demo":
                _ensure_demo_landing_zone(settings, customers=args.customers, seed=args.seed)
            return run_pipeline(args.date, lock=False)
    except RunInProgress as exc:
        print(exc, file=sys.stderr)
        return EXIT_RUN_IN_PROGRESS


def _ensure_demo_landing_zone(settings: Settings, *, customers: int, seed: int) -> None:
    landing = printable(settings.landing_dir)
    if not any(settings.landing_dir.glob("*/*")):
        from segment_tools.generator import generate

        print(f"Generating a sample landing zone in {landing} ...", flush=True)
        generate(settings.landing_dir, customers=customers, seed=seed)
    else:
        print(f"Landing zone {landing} is not empty; using it as is.")


if __name__ == "__main__":
    sys.exit(main())
