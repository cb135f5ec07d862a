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
from segment_warehouse.dbt_session import run_session
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
    Parquet), ``export_tables`` (``{"schema.table": folder}``, written as
    Parquet after a successful run) and ``export_built`` (a folder: every model
    and seed relation the run built is written there as Parquet, listed in
    ``built_exports.json``; see :func:`export_built_relations`). Timings go to
    ``spark_session.json``.
    """
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
    code = run_phased_session(spec, spark, timings)
    timings["dbt_seconds"] = time.time() - started
    if code == 0 and spec.get("export_tables"):
        export_spark_tables(
            spark, {name: Path(folder) for name, folder in spec["export_tables"].items()}
        )
    if code == 0 and spec.get("export_built"):
        started = time.time()
        name = spec["commands"][0]["name"]
        export_built_relations(spark, target, name, Path(spec["export_built"]))
        timings["export_seconds"] = time.time() - started
    (target / "spark_session.json").write_text(json.dumps(timings, indent=1))
    return code


BUILT_EXPORTS = "built_exports.json"


def built_exports_file(settings: Settings) -> Path:
    """The list of relations the last Spark build wrote as Parquet."""
    return target_dir(settings) / BUILT_EXPORTS


def built_exports(settings: Settings) -> list[dict[str, Any]]:
    """The entries of :func:`built_exports_file` (see :func:`export_built_relations`).

    Raises ``FileNotFoundError`` when no Spark build has written the list, and
    ``ValueError`` when it is not JSON.
    """
    return json.loads(built_exports_file(settings).read_text())


# Relations a build leaves in the catalog (an ephemeral model is only a CTE)
_EXPORTED_TYPES = ("model", "seed", "snapshot")


def export_built_relations(spark: Any, target: Path, command: str, out_dir: Path) -> list[dict]:
    """Write every relation ``command`` built successfully as Parquet under ``out_dir``.

    The relations are the run results' models, seeds and snapshots with status
    success (not ephemeral), named by the manifest's schema and alias; views are
    written as their rows. The list (``schema``, ``name``, ``materialized``,
    ``folder``, ``unique_id``) goes to ``built_exports.json`` in ``target``.
    """
    from segment_warehouse.spark.tables import export_spark_tables

    manifest = json.loads((target / "manifest.json").read_text())
    results = json.loads((target / f"run_results_{command}.json").read_text())["results"]
    exports: list[dict] = []
    for result in results:
        node = manifest["nodes"].get(result.get("unique_id"))
        if node is None or node["resource_type"] not in _EXPORTED_TYPES:
            continue
        materialized = node["config"].get("materialized")
        if result.get("status") != "success" or materialized == "ephemeral":
            continue
        schema, name = node["schema"], node.get("alias") or node["name"]
        folder = out_dir / schema / name
        export_spark_tables(spark, {f"{schema}.{name}": folder})
        exports.append(
            {"schema": schema, "name": name, "materialized": materialized,
             "folder": str(folder), "unique_id": node["unique_id"]}
        )  # fmt: skip
    (target / BUILT_EXPORTS).write_text(json.dumps(exports, indent=1))
    return exports


PAIRS_MODEL = "int_contact_match_pairs"
COMPONENTS_MODEL = "int_identity_components"
# Commands that build models: split in three phases around the two identity
# steps the runner computes itself (dbt-spark runs no Python models).
_PHASED_COMMANDS = ("build", "run")
_SELECT_FLAGS = ("--select", "-s", "--models", "-m")
_EXCLUDE_FLAGS = ("--exclude",)


def _take_values(args: list[str], flags: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(the values of ``flags`` in ``args``, ``args`` without them)."""
    values: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in flags:
            i += 1
            while i < len(args) and not args[i].startswith("-"):
                values.append(args[i])
                i += 1
        else:
            rest.append(args[i])
            i += 1
    return values, rest


def identity_phases(args: list[str]) -> list[tuple[str | None, list[str]]]:
    """``args`` of a build as three dbt invocations, each after the runner's step named.

    1. everything selected that does not need the matcher's pairs;
    2. ``pairs`` (the runner scores int_contacts_match_features), then the
       selected nodes downstream of the pairs model up to the identity graph;
    3. ``components`` (the runner resolves int_identity_edges), then the
       selected nodes downstream of the components model.
    A selection is intersected with each phase (dbt's ``a,b``); the user's
    exclusions stay.
    """
    command, rest = args[0], args[1:]
    select, rest = _take_values(rest, _SELECT_FLAGS)
    exclude, rest = _take_values(rest, _EXCLUDE_FLAGS)

    def within(graph: str) -> list[str]:
        return ["--select", *([f"{s},{graph}" for s in select] if select else [graph])]

    first = [command, *rest, *(["--select", *select] if select else [])]
    return [
        (None, [*first, "--exclude", *exclude, f"{PAIRS_MODEL}+"]),
        ("pairs", [command, *rest, *within(f"{PAIRS_MODEL}+"), "--exclude", *exclude,
                   f"{COMPONENTS_MODEL}+"]),
        ("components", [command, *rest, *within(f"{COMPONENTS_MODEL}+"),
                        *(["--exclude", *exclude] if exclude else [])]),
    ]  # fmt: skip


def _data_tests(
    runner: Any, global_flags: list[str], args: list[str], rest: list[str]
) -> dict[str, str]:
    """unique_id -> name of the data tests the whole command ``args`` selects."""
    select, other = _take_values(args[1:], _SELECT_FLAGS)
    exclude, other = _take_values(other, _EXCLUDE_FLAGS)
    indirect = (
        ["--indirect-selection", other[other.index("--indirect-selection") + 1]]
        if "--indirect-selection" in other
        else []
    )
    listed = runner.invoke(
        [*global_flags, "ls", *(["--select", *select] if select else []),
         *(["--exclude", *exclude] if exclude else []), *indirect,
         "--resource-type", "test", "--output", "json", "--output-keys", "unique_id", "name", *rest]
    )  # fmt: skip
    tests = [json.loads(item) for item in (listed.result or [])]
    return {test["unique_id"]: test["name"] for test in tests}


def _node(manifest: Any, name: str) -> Any:
    return manifest.nodes[f"model.segment_warehouse.{name}"]


def _relation(manifest: Any, name: str) -> str:
    node = _node(manifest, name)
    return f"{node.schema}.{node.alias}"


def _run_identity_step(step: str, spark: Any, manifest: Any, timings: dict[str, Any]) -> None:
    from segment_warehouse.spark import identity

    spark.sql(f"create database if not exists {identity.RUNNER_SCHEMA}")
    started = time.time()
    if step == "pairs":
        config = _node(manifest, PAIRS_MODEL).config.to_dict()
        features = spark.table(_relation(manifest, "int_contacts_match_features"))
        # var identity_probabilistic_matching: false turns the matcher off
        enabled = str(config.get("probabilistic_matching", True)).strip().lower()
        if enabled in {"false", "0", "no"}:
            features = features.limit(0)
        pairs, report = identity.predict_pairs(
            spark, features, min_probability=float(config.get("candidate_probability") or 0.5)
        )
        pairs.write.mode("overwrite").saveAsTable(identity.PAIRS_TABLE)
    else:
        edges = spark.table(_relation(manifest, "int_identity_edges"))
        components, report = identity.connected_components(spark, edges)
        components.write.mode("overwrite").saveAsTable(identity.COMPONENTS_TABLE)
    report["seconds"] = round(time.time() - started, 1)
    timings[f"identity_{step}"] = report


def run_phased_session(spec: dict[str, Any], spark: Any, timings: dict[str, Any]) -> int:
    """``dbt_session.run_session`` for the Spark target, with the runner's identity steps.

    One parse; build / run commands go in the phases of :func:`identity_phases`,
    the runner's step running between them when the next phase selects the
    model it feeds. Per command, the phases' run results are merged into
    ``run_results_<name>.json``; outcomes go to ``session.json`` as in
    ``run_session``.
    """

    def run_command(
        runner: Any, manifest: Any, command: dict[str, Any], global_flags: list[str],
        rest: list[str], target: Path,
    ) -> tuple[bool, str | None]:  # fmt: skip
        args = list(command["args"])
        phases = identity_phases(args) if args[0] in _PHASED_COMMANDS else [(None, args)]
        results: list[dict[str, Any]] = []
        ok, error = True, None
        spanning = _data_tests(runner, global_flags, args, rest) if len(phases) > 1 else {}
        for step, phase_args in phases:
            if step is not None:
                model = PAIRS_MODEL if step == "pairs" else COMPONENTS_MODEL
                select, other = _take_values(phase_args[1:], _SELECT_FLAGS)
                exclude, _ = _take_values(other, _EXCLUDE_FLAGS)
                listed = runner.invoke(
                    [*global_flags, "ls", "--select", *select,
                     *(["--exclude", *exclude] if exclude else []),
                     "--resource-type", "model", "--output", "name", *rest]
                )  # fmt: skip
                if model not in (listed.result or []):
                    continue
                _run_identity_step(step, spark, manifest, timings)
            phase_started = time.time()
            result = runner.invoke([*global_flags, *phase_args, *rest])
            run_results = target / "run_results.json"
            # a phase that selects nothing may leave the previous phase's file
            if run_results.exists() and run_results.stat().st_mtime >= phase_started - 1:
                results += json.loads(run_results.read_text()).get("results", [])
            if not result.success:
                ok, error = False, str(result.exception or "failed nodes")
                break
        # data tests whose models sit in different phases (a singular test
        # reading identity_map and the contacts): no phase selects them under
        # cautious selection, so they run once every phase has built
        left_over = sorted(set(spanning) - {r.get("unique_id") for r in results})
        if ok and left_over:
            phase_started = time.time()
            select = [spanning[uid] for uid in left_over]
            result = runner.invoke([*global_flags, "test", "--select", *select, *rest])
            run_results = target / "run_results.json"
            if run_results.exists() and run_results.stat().st_mtime >= phase_started - 1:
                results += json.loads(run_results.read_text()).get("results", [])
            if not result.success:
                ok, error = False, str(result.exception or "failed tests")
        (target / f"run_results_{command['name']}.json").write_text(
            json.dumps({"results": results}, indent=1)
        )
        return ok, error

    return run_session(spec, run_command)


def run_dbt_spark(
    args: list[str],
    *,
    settings: Settings | None = None,
    vars: dict[str, Any] | None = None,
    as_of_date: str | None = None,
    parquet_tables: dict[tuple[str, str], Path] | None = None,
    export_tables: dict[str, Path] | None = None,
    export_built: Path | None = None,
) -> DbtRunResult:
    """``dbt <args> --target spark`` in a subprocess; per-node results as for DuckDB.

    ``parquet_tables`` are registered as Spark tables before dbt runs,
    ``export_tables`` and (with ``export_built``) every relation the run built
    are written as Parquet after it (see :func:`run_in_process`).
    """
    settings = settings or get_settings()
    spec = _spec(settings, list(args), vars)
    spec["parquet_tables"] = [
        [schema, table, str(folder)] for (schema, table), folder in (parquet_tables or {}).items()
    ]
    spec["export_tables"] = {name: str(folder) for name, folder in (export_tables or {}).items()}
    if export_built is not None:
        spec["export_built"] = str(export_built)
    target = target_dir(settings)
    spec_file = target / "session_spec.json"
    spec_file.write_text(json.dumps(spec, indent=1))
    name = spec["commands"][0]["name"]
    for stale in (
        target / "session.json",
        target / f"run_results_{name}.json",
        target / BUILT_EXPORTS,
    ):
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
