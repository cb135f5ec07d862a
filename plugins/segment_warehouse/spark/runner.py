"""Run dbt against Spark: ``--target spark`` on a session that has the warehouse UDFs.

The DuckDB target gets its functions from a dbt-duckdb plugin; dbt-spark has no
plugin hook, but its ``session`` method picks up the process's active Spark
session. So this runner starts the session (:func:`session.build_session`),
then runs the dbt commands in the same process through
:func:`segment_warehouse.dbt_session.run_session` (dbt's programmatic entry
point; one parse shared by the commands).

    python -m segment_warehouse.spark.runner build --select staging

From Python, :func:`run_dbt_spark` starts that in a subprocess (dbt's and the
JVM's global state stay out of the caller, as with :mod:`dbt_runner`) and
returns the same :class:`~segment_warehouse.dbt_runner.DbtRunResult`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.dbt_runner import (
    DbtRunResult,
    _environment,
    _read_run_results,
    dbt_common_args,
)
from segment_warehouse.spark.session import spark_dir

TARGET = "spark"


def target_dir(settings: Settings) -> Path:
    """dbt's target dir for the Spark target (kept apart from the DuckDB one)."""
    return spark_dir(settings) / "dbt_target"


def _spec(settings: Settings, args: list[str], vars: dict[str, Any] | None) -> dict[str, Any]:
    common = dbt_common_args(settings, target_dir(settings), target=TARGET, vars=vars)
    name = args[0] if args else "build"
    return {"common": common, "commands": [{"name": name, "args": args or ["build"]}]}


def run_in_process(spec: dict[str, Any], settings: Settings | None = None) -> int:
    """Start the Spark session with the UDFs, then run the dbt commands of ``spec``.

    Optional spec keys: ``parquet_tables`` (``[[schema, table, folder], ...]``,
    registered before dbt starts: the sources of a run whose loaders wrote
    Parquet) and ``export_tables`` (``{"schema.table": folder}``, written as
    Parquet after a successful run). Timings go to ``spark_session.json``.
    """
    from segment_warehouse.dbt_session import run_session
    from segment_warehouse.spark.session import build_session
    from segment_warehouse.spark.tables import export_spark_tables, register_parquet_tables

    settings = settings or get_settings()
    target = target_dir(settings)
    target.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.time()
    spark = build_session(settings)
    timings["session_start_seconds"] = time.time() - started
    register_parquet_tables(
        spark,
        {(schema, table): Path(folder) for schema, table, folder in spec.get("parquet_tables", [])},
    )
    started = time.time()
    code = run_session(spec)
    timings["dbt_seconds"] = time.time() - started
    if code == 0 and spec.get("export_tables"):
        export_spark_tables(
            spark, {name: Path(folder) for name, folder in spec["export_tables"].items()}
        )
    (target / "spark_session.json").write_text(json.dumps(timings, indent=1))
    return code


def run_dbt_spark(
    args: list[str],
    *,
    settings: Settings | None = None,
    vars: dict[str, Any] | None = None,
    as_of_date: str | None = None,
    parquet_tables: dict[tuple[str, str], Path] | None = None,
    export_tables: dict[str, Path] | None = None,
) -> DbtRunResult:
    """``dbt <args> --target spark`` in a subprocess; per-node results as for DuckDB.

    ``parquet_tables`` are registered as Spark tables before dbt runs,
    ``export_tables`` written as Parquet after it (see :func:`run_in_process`).
    """
    settings = settings or get_settings()
    spec = _spec(settings, list(args), vars)
    spec["parquet_tables"] = [
        [schema, table, str(folder)] for (schema, table), folder in (parquet_tables or {}).items()
    ]
    spec["export_tables"] = {name: str(folder) for name, folder in (export_tables or {}).items()}
    target = target_dir(settings)
    spec_file = target / "session_spec.json"
    spec_file.write_text(json.dumps(spec, indent=1))
    name = spec["commands"][0]["name"]
    for stale in (target / "session.json", target / f"run_results_{name}.json"):
        stale.unlink(missing_ok=True)
    # the DuckDB runner's environment: the DuckDB output of profiles.yml is
    # rendered too and must resolve
    env = _environment(settings, as_of_date)
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "segment_warehouse.spark.runner", "--spec", str(spec_file)],
        cwd=spark_dir(settings),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    session_file = target / "session.json"
    outcomes = (
        {o["name"]: o for o in json.loads(session_file.read_text())}
        if session_file.exists()
        else {}
    )
    outcome = outcomes.get(name)
    ok = proc.returncode == 0 and bool(outcome and outcome["success"])
    return DbtRunResult(
        args=list(args),
        returncode=0 if ok else (proc.returncode or 1),
        elapsed_seconds=float(outcome["seconds"]) if outcome else time.time() - started,
        nodes=_read_run_results(target / f"run_results_{name}.json"),
        stdout=proc.stdout,
        stderr=proc.stderr,
        log_path=target / "logs" / "dbt.log",
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m segment_warehouse.spark.runner <dbt args>`` (or ``--spec FILE``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    settings = get_settings()
    if args[:1] == ["--spec"] and len(args) == 2:
        spec = json.loads(Path(args[1]).read_text())
    else:
        spec = _spec(settings, args, None)
    return run_in_process(spec, settings)


if __name__ == "__main__":
    raise SystemExit(main())
