"""Run the dbt project (``dbt_project/``) in a subprocess of the current venv.

dbt runs in its own process so its global state (adapters, logging, the
DuckDB connection) never leaks into the Airflow worker or the tests. The
terminal stays quiet: dbt's own log goes to ``<target>/logs/dbt.log`` and
this module reports a short per-node summary read from ``run_results.json``.

    from segment_warehouse.dbt_runner import build, generate_docs
    build("2024-06-30", docs=True)  # dbt build (+ docs generate), one dbt process
    generate_docs()                 # static_index.html -> settings.dbt_docs_dir
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segment_warehouse.config import Settings, get_settings

log = logging.getLogger(__name__)

_FAILED = {"error", "fail", "runtime error"}


class DbtBuildError(RuntimeError):
    """dbt exited non-zero; ``failures`` lists the failed nodes and messages."""

    def __init__(self, message: str, result: DbtRunResult) -> None:
        super().__init__(message)
        self.result = result

    @property
    def failures(self) -> list[NodeResult]:
        return self.result.failed_nodes


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    status: str
    execution_time: float
    message: str | None = None
    failures: int | None = None

    @property
    def name(self) -> str:
        return self.unique_id.split(".", 2)[-1]

    @property
    def resource_type(self) -> str:
        return self.unique_id.split(".", 1)[0]

    @property
    def failed(self) -> bool:
        return self.status in _FAILED


@dataclass
class DbtRunResult:
    args: list[str]
    returncode: int
    elapsed_seconds: float
    nodes: list[NodeResult] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    log_path: Path | None = None

    @property
    def success(self) -> bool:
        return self.returncode == 0

    @property
    def failed_nodes(self) -> list[NodeResult]:
        return [node for node in self.nodes if node.failed]

    def summary(self, *, limit: int = 15) -> str:
        """A few lines: counts by status, the slowest nodes, every failure."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.status] = counts.get(node.status, 0) + 1
        head = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no nodes"
        lines = [f"dbt {' '.join(self.args[:1])}: {head} in {self.elapsed_seconds:.1f}s"]
        slowest = sorted(self.nodes, key=lambda n: n.execution_time, reverse=True)[:limit]
        lines += [
            f"  {n.execution_time:7.2f}s  {n.status:<7} {n.resource_type}:{n.name}"
            for n in slowest
            if n.resource_type in {"model", "seed", "snapshot"}
        ]
        for node in self.failed_nodes:
            lines.append(f"  FAILED {node.unique_id}: {_first_lines(node.message)}")
        return "\n".join(lines)


def _first_lines(message: str | None, n: int = 6) -> str:
    if not message:
        return "(no message)"
    return " | ".join(line.strip() for line in message.strip().splitlines()[:n] if line.strip())


def _environment(settings: Settings, as_of_date: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SEGMENTS_AS_OF_DATE", None)  # only ever the value this call passes
    if as_of_date is not None:
        env["SEGMENTS_AS_OF_DATE"] = as_of_date
    env.update(
        {
            "SEGMENTS_WAREHOUSE_DB": str(settings.warehouse_db),
            "SEGMENTS_DUCKDB_THREADS": str(settings.duckdb_threads),
            "SEGMENTS_DUCKDB_MEMORY_LIMIT": settings.duckdb_memory_limit,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DO_NOT_TRACK": "1",
        }
    )
    return env


def manifest_nodes(path: Path) -> dict[str, dict[str, Any]] | None:
    """The ``nodes`` of a dbt ``manifest.json`` by unique_id; None when unreadable."""
    try:
        nodes = json.loads(path.read_text())["nodes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(nodes, dict):
        return None
    return {uid: node for uid, node in nodes.items() if isinstance(node, dict)}


def _read_run_results(path: Path) -> list[NodeResult]:
    if not path.exists():
        return []
    data: dict[str, Any] = json.loads(path.read_text())
    return [
        NodeResult(
            unique_id=item.get("unique_id", "?"),
            status=str(item.get("status", "?")),
            execution_time=float(item.get("execution_time") or 0.0),
            message=item.get("message"),
            failures=item.get("failures"),
        )
        for item in data.get("results", [])
    ]


# Measured on 2 cores: 2 dbt threads build a 40 k-customer warehouse 15 % faster
# (small models are latency-bound), but a 1 M one 15 % slower (each big model
# already keeps both DuckDB threads busy; two at once contend for CPU and memory).
PARALLEL_DBT_MAX_WAREHOUSE_BYTES = 2 << 30


def dbt_threads(settings: Settings) -> int:
    """SEGMENTS_DBT_THREADS if set, else 2 for warehouses under 2 GiB and 1 above."""
    if settings.dbt_threads:
        return settings.dbt_threads
    db = settings.warehouse_db
    size = db.stat().st_size if db.exists() else 0
    return min(2, os.cpu_count() or 1) if size < PARALLEL_DBT_MAX_WAREHOUSE_BYTES else 1


@dataclass(frozen=True)
class DbtCommand:
    """One dbt command of a session; ``name`` keys its ``run_results_<name>.json``."""

    name: str
    args: list[str]
    required: bool = True


def dbt_common_args(
    settings: Settings,
    target_dir: Path,
    *,
    target: str | None = None,
    vars: dict[str, Any] | None = None,
) -> list[str]:
    """The arguments every dbt command of a session shares (logs under ``target_dir``)."""
    log_dir = target_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    project_dir = settings.dbt_project_dir
    common = [
        "--quiet",
        "--no-use-colors",
        "--log-path", str(log_dir),
        "--project-dir", str(project_dir),
        "--profiles-dir", str(project_dir),
        "--target-path", str(target_dir),
    ]  # fmt: skip
    if target:
        common += ["--target", target]
    if vars:
        common += ["--vars", json.dumps(vars)]
    return common


def run_dbt_session(
    commands: list[DbtCommand],
    *,
    settings: Settings | None = None,
    vars: dict[str, Any] | None = None,
    as_of_date: str | None = None,
    check: bool = True,
) -> dict[str, DbtRunResult]:
    """Run dbt commands in one dbt process (one start-up, one parse); results by name.

    ``as_of_date`` reaches the models as the SEGMENTS_AS_OF_DATE environment
    variable, not a var: a var that changes every day would defeat dbt's
    partial parsing (see the ``as_of_date()`` macro).

    A command that did not run (an earlier required one failed) has no entry.
    Raises :class:`DbtBuildError` (listing failed nodes) when a required
    command fails and ``check`` is true; a failed optional command is logged.
    """
    settings = settings or get_settings()
    settings.warehouse_dir.mkdir(parents=True, exist_ok=True)
    target_dir = settings.dbt_target_dir
    common = dbt_common_args(settings, target_dir, vars=vars)
    log_dir = target_dir / "logs"
    spec = {
        "common": common,
        "commands": [{"name": c.name, "args": c.args, "required": c.required} for c in commands],
    }
    spec_file = target_dir / "session_spec.json"
    spec_file.write_text(json.dumps(spec, indent=1))
    for stale in [target_dir / "session.json"] + [
        target_dir / f"run_results_{c.name}.json" for c in commands
    ]:
        stale.unlink(missing_ok=True)

    # dbt (re)writes marts: the published snapshot's marts stop counting as current.
    # Renewed (and the connection closed) before dbt starts: dbt needs the write lock.
    from segment_warehouse import state

    with state.connection(settings) as con:
        assert con is not None
        state.renew_marts_generation(con)
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "segment_warehouse.dbt_session", str(spec_file)],
        cwd=settings.repo_root,
        env=_environment(settings, as_of_date),
        capture_output=True,
        text=True,
        check=False,
    )
    session_file = target_dir / "session.json"
    outcomes = (
        {o["name"]: o for o in json.loads(session_file.read_text())}
        if (session_file.exists())
        else {}
    )
    results: dict[str, DbtRunResult] = {}
    for command in commands:
        outcome = outcomes.get(command.name)
        if outcome is None:
            continue
        results[command.name] = DbtRunResult(
            args=list(command.args),
            returncode=0 if outcome["success"] else 1,
            elapsed_seconds=float(outcome["seconds"]),
            nodes=_read_run_results(target_dir / f"run_results_{command.name}.json"),
            stdout=proc.stdout,
            stderr=proc.stderr,
            log_path=log_dir / "dbt.log",
        )
        log.info("%s", results[command.name].summary())
    failed_required = [
        c for c in commands if c.required and not (c.name in results and results[c.name].success)
    ]
    for command in commands:
        if not command.required and command.name in results and not results[command.name].success:
            log.warning(
                "dbt %s failed (not required, the run goes on):\n%s",
                command.name,
                results[command.name].summary(),
            )
    if check and (proc.returncode != 0 or failed_required):
        name = failed_required[0].name if failed_required else commands[0].name
        result = results.get(name) or DbtRunResult(
            args=[name], returncode=proc.returncode or 1, elapsed_seconds=time.time() - started,
            stdout=proc.stdout, stderr=proc.stderr, log_path=log_dir / "dbt.log",
        )  # fmt: skip
        failed = result.failed_nodes
        if failed:
            detail = "\n".join(f"- {n.unique_id}: {_first_lines(n.message)}" for n in failed)
        else:  # dbt failed before running nodes (parse / connection error)
            parse = outcomes.get("parse", {}).get("error") or ""
            detail = _first_lines((parse + "\n" + proc.stdout + "\n" + proc.stderr).strip(), n=30)
        raise DbtBuildError(
            f"dbt {name} failed (exit {proc.returncode}); "
            f"{len(failed)} failed node(s):\n{detail}\nfull log: {log_dir / 'dbt.log'}",
            result,
        )
    return results


def run_dbt(
    args: list[str],
    *,
    settings: Settings | None = None,
    vars: dict[str, Any] | None = None,
    check: bool = True,
) -> DbtRunResult:
    """Run ``dbt <args>`` against the warehouse and return a per-node summary.

    Raises :class:`DbtBuildError` (listing failed nodes) when dbt fails and
    ``check`` is true.
    """
    name = args[0] if args else "build"
    results = run_dbt_session(
        [DbtCommand(name, list(args) or ["build"])], settings=settings, vars=vars, check=check
    )
    settings = settings or get_settings()
    return results.get(name) or DbtRunResult(
        args=list(args), returncode=1, elapsed_seconds=0.0,
        log_path=settings.dbt_target_dir / "logs" / "dbt.log",
    )  # fmt: skip


def dbt_vars(settings: Settings) -> dict[str, Any]:
    """The settings that reach the dbt models as ``--vars``: the one list, for the
    build on either engine, the DAG's manifest parse and the skip fingerprint."""
    return {
        "reporting_currency": settings.reporting_currency,
        "max_component_size": settings.max_component_size,
    }


def build(
    as_of_date: str,
    *,
    settings: Settings | None = None,
    extra_args: list[str] | None = None,
    docs: bool = False,
) -> DbtRunResult:
    """``dbt build`` (seeds, models, data tests) for the logical date ``as_of_date``.

    Unit tests are left to ``make test`` (dbt's advice: run them in development
    and CI, not on production data). With ``docs``, ``dbt docs generate
    --static`` runs in the same dbt process afterwards (no second start-up or
    parse) and the single-file site is copied to ``dbt_docs_dir``; a docs
    failure is logged, it does not fail the build.
    """
    settings = settings or get_settings()
    commands = [
        DbtCommand(
            "build",
            [
                "build", "--exclude-resource-type", "unit_test",
                "--threads", str(dbt_threads(settings)), *(extra_args or []),
            ],
        )
    ]  # fmt: skip
    if docs:
        commands.append(DbtCommand("docs", ["docs", "generate", "--static"], required=False))
    results = run_dbt_session(
        commands,
        settings=settings,
        vars=dbt_vars(settings),
        as_of_date=as_of_date,
    )
    if docs and results.get("docs") and results["docs"].success:
        _copy_docs(settings)
    return results["build"]


def _copy_docs(settings: Settings) -> Path:
    docs_dir = settings.dbt_docs_dir
    docs_dir.mkdir(parents=True, exist_ok=True)
    source = settings.dbt_target_dir / "static_index.html"
    shutil.copyfile(source, docs_dir / "static_index.html")
    shutil.copyfile(source, docs_dir / "index.html")
    return docs_dir / "static_index.html"


def generate_docs(*, settings: Settings | None = None) -> Path:
    """``dbt docs generate --static``; copies the single-file site to dbt_docs_dir."""
    settings = settings or get_settings()
    run_dbt(["docs", "generate", "--static"], settings=settings)
    return _copy_docs(settings)


def main(argv: list[str] | None = None) -> int:
    """``python -m segment_warehouse.dbt_runner <dbt args>``: run dbt with the settings."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_dbt(list(argv if argv is not None else sys.argv[1:]) or ["build"])
    except DbtBuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
