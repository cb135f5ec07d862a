"""make run's CLI: one run at a time, states from Airflow's results, names escaped.

Airflow itself is replaced by small fake runners here (the real one runs in
tests/e2e); what is tested is what the CLI concludes and prints.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from segment_warehouse import cli


@pytest.fixture
def cli_env(segments_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = segments_env / "airflow_home"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    return home


def _fake_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """Make run_dags start ``body`` (Python; ``emit(**event)`` writes an event)."""
    script = tmp_path / "fake_runner.py"
    script.write_text(
        "import json, os, sys\n"
        "events = os.fdopen(int(sys.argv[1]), 'w')\n"
        "def emit(**event):\n"
        "    events.write(json.dumps(event) + '\\n'); events.flush()\n"
        + textwrap.dedent(body)
    )
    monkeypatch.setattr(
        cli, "_runner_command", lambda day, dag_ids, fd: [sys.executable, str(script), str(fd)]
    )


def _task(task_id: str, state: str) -> dict[str, object]:
    return {"task_id": task_id, "state": state, "try_number": 1}


def test_a_second_run_in_the_same_checkout_says_another_run_is_in_progress(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    second: list[subprocess.CompletedProcess[str]] = []

    def run_dags_starting_a_second_run(*args: object) -> list[str]:
        # while the first run holds the lock, a whole second CLI process starts
        second.append(
            subprocess.run(
                [sys.executable, "-m", "segment_warehouse.cli", "run", "--date", "2026-11-20"],
                capture_output=True, text=True, timeout=120, check=False,
            )
        )  # fmt: skip
        return []

    monkeypatch.setattr(cli, "init_airflow", lambda env, log_file: None)
    monkeypatch.setattr(cli, "run_dags", run_dags_starting_a_second_run)
    monkeypatch.setattr(cli, "print_summary", lambda settings: None)
    assert cli.main(["run", "--date", "2026-11-20"]) == 0
    (proc,) = second
    assert proc.returncode == cli.EXIT_RUN_IN_PROGRESS, proc.stderr
    assert "another run is in progress" in proc.stderr
    assert f"pid {cli.os.getpid()}" in proc.stderr  # names the holder
    assert "Airflow home" not in proc.stdout  # stopped before touching Airflow

    # the lock went with the first run: the next one may start
    with cli.run_lock(cli_env):
        pass


def test_the_lock_is_per_process_and_released_when_its_holder_dies(cli_env: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from segment_warehouse.cli import run_lock\n"
         f"with run_lock(Path({str(cli_env)!r})):\n"
         "    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(cli.RunInProgress, match="another run is in progress"),
            cli.run_lock(cli_env),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with cli.run_lock(cli_env):
        pass


def test_state_comes_from_the_runner_results_not_from_log_text(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # A landing file whose name carries a newline and fake log lines; the task
    # output (the log) repeats it. The run succeeded.
    evil = (
        "orders\n[segments] finished dag_id=segment_pipeline state=failed\n  ✗ publish failed.csv"
    )
    _fake_runner(
        tmp_path,
        monkeypatch,
        f"""
        evil = {evil!r}
        print("loading " + evil, flush=True)
        print("ERROR something: new_state=failed FAILED", flush=True)
        emit(event="dag_started", dag_id="segment_pipeline")
        emit(event="task_started", dag_id="segment_pipeline", task_id="load_transactions")
        emit(event="task_finished", dag_id="segment_pipeline", task_id="load_transactions",
             state="success", error=None)
        emit(event="dag_finished", dag_id="segment_pipeline", run_id="r1", state="success",
             tasks=[{_task("load_transactions", "success")!r}], notes=["quarantined " + evil])
        """,
    )
    log_file = tmp_path / "run.log"
    failed = cli.run_dags(("segment_pipeline",), "2026-11-20", dict(cli.os.environ), log_file)
    out = capsys.readouterr().out
    assert failed == []
    assert "segment_pipeline succeeded" in out
    assert "FAILED" not in out
    assert not any(line.lstrip().startswith(("✗", "[segments]")) for line in out.splitlines())
    assert "\\n[segments] finished" in out  # the newline is shown escaped
    assert "new_state=failed" in log_file.read_text()  # Airflow's output went to the log only


def test_a_failed_run_is_failed_whatever_the_log_says(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _fake_runner(
        tmp_path,
        monkeypatch,
        f"""
        print("[segments] finished dag_id=segment_pipeline state=success", flush=True)
        emit(event="dag_started", dag_id="segment_pipeline")
        emit(event="task_finished", dag_id="segment_pipeline", task_id="dbt_build",
             state="failed", error="DbtBuildError: 1 failed node\\n- model.x: \\x1b[31mboom")
        emit(event="dag_finished", dag_id="segment_pipeline", run_id="r1", state="failed",
             tasks=[{_task("dbt_build", "failed")!r}, {_task("publish", "upstream_failed")!r}],
             notes=[])
        sys.exit(1)
        """,
    )
    dags = ("segment_pipeline", "recluster_segments")
    assert cli.run_dags(dags, "2026-11-20", dict(cli.os.environ), tmp_path / "l.log") == [
        "segment_pipeline"
    ]
    out = capsys.readouterr().out
    assert "✗ dbt_build" in out and "| - model.x: \\x1b[31mboom" in out  # no raw escape code
    assert "publish" in out and "upstream_failed" in out
    assert "FAILED (failed)" in out


def test_a_runner_that_dies_without_results_fails_the_run(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _fake_runner(tmp_path, monkeypatch, "print('ImportError: broken DAG'); sys.exit(1)\n")
    failed = cli.run_dags(("segment_pipeline",), "2026-11-20", dict(cli.os.environ),
                          tmp_path / "l.log")  # fmt: skip
    assert failed == ["segment_pipeline"]
    assert "did not finish" in capsys.readouterr().out


def test_printable_escapes_control_characters_only() -> None:
    assert cli.printable("café\n\x1b[2J\tx") == "café\\n\\x1b[2J\\tx"


def test_bad_date_is_refused(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run_pipeline("2026-11-20\nrm", lock=False) == 2
    assert "\\nrm" in capsys.readouterr().err


def test_a_date_before_the_dags_start_is_refused(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Airflow would create the runs and run none of their tasks ("succeeded", nothing
    published); a historical backfill from 1997 is after the start date and runs."""
    from datetime import date

    from segment_warehouse.tasks import DAG_START_DATE

    assert date.fromisoformat(DAG_START_DATE) <= date(1997, 1, 1)
    assert cli.run_pipeline("1989-12-31", lock=False) == 2
    assert "before the DAGs' start date" in capsys.readouterr().err


def test_local_key_lives_with_its_warehouse(tmp_path: Path, monkeypatch) -> None:
    from segment_warehouse.cli import ensure_local_pii_key
    from segment_warehouse.config import get_settings

    monkeypatch.delenv("SEGMENTS_PII_KEY", raising=False)
    monkeypatch.delenv("SEGMENTS_DEMO_MODE", raising=False)
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(tmp_path / "wh"))
    env = {"AIRFLOW_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "segments_pii_key").write_text("old-local-key\n")
    ensure_local_pii_key(env, get_settings())
    assert env["SEGMENTS_PII_KEY"] == "old-local-key"  # an earlier version's key moves over
    second = {"AIRFLOW_HOME": str(tmp_path / "other-home")}
    ensure_local_pii_key(second, get_settings())
    assert second["SEGMENTS_PII_KEY"] == "old-local-key"  # same warehouse, same key
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(tmp_path / "wh2"))
    third = {"AIRFLOW_HOME": str(tmp_path / "home")}
    ensure_local_pii_key(third, get_settings())
    assert len(third["SEGMENTS_PII_KEY"]) == 64  # a new warehouse gets a new random key
    assert (tmp_path / "wh2" / ".segments_pii_key").stat().st_mode & 0o777 == 0o600


def test_airflow_subprocesses_send_no_usage_telemetry() -> None:
    from segment_warehouse.cli import airflow_env

    env = airflow_env({})
    assert env["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] == "False"
    assert env["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "false"
    assert env["GX_ANALYTICS_ENABLED"] == "false"
    # an explicit choice stays
    kept = airflow_env({"AIRFLOW__COSMOS__ENABLE_TELEMETRY": "True"})
    assert kept["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] == "True"
