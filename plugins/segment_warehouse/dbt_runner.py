"""Run the dbt project (``dbt_project/``) as a subprocess of the current venv.

dbt runs in its own process so its global state (adapters, logging, the
DuckDB connection) never leaks into the Airflow worker or the tests. The
terminal stays quiet: dbt's own log goes to ``<target>/logs/dbt.log`` and
this module reports a short per-node summary read from ``run_results.json``.

    from segment_warehouse.dbt_runner import build, generate_docs
    build("2024-06-30")          # dbt build --vars {as_of_date, reporting_currency}
    generate_docs()              # static_index.html -> settings.dbt_docs_dir
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


def _dbt_executable() -> str:
    candidate = Path(sys.executable).with_name("dbt")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("dbt")
    if not found:
        raise FileNotFoundError("the dbt CLI is not installed in this environment")
    return found


def _environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    plugins_dir = str(settings.repo_root / "plugins")
    pythonpath = [plugins_dir, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        {
            "SEGMENTS_WAREHOUSE_DB": str(settings.warehouse_db),
            "SEGMENTS_DUCKDB_THREADS": str(settings.duckdb_threads),
            "SEGMENTS_DUCKDB_MEMORY_LIMIT": settings.duckdb_memory_limit,
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(pythonpath)),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DO_NOT_TRACK": "1",
        }
    )
    return env


def _read_run_results(target_dir: Path, started: float) -> list[NodeResult]:
    path = target_dir / "run_results.json"
    if not path.exists() or path.stat().st_mtime < started - 1:
        return []  # stale file from an earlier invocation
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
    settings = settings or get_settings()
    settings.warehouse_dir.mkdir(parents=True, exist_ok=True)
    target_dir = settings.dbt_target_dir
    log_dir = target_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    project_dir = settings.dbt_project_dir

    command = [
        _dbt_executable(),
        "--quiet",
        "--no-use-colors",
        "--log-path",
        str(log_dir),
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(project_dir),
        "--target-path",
        str(target_dir),
    ]
    if vars:
        command += ["--vars", json.dumps(vars)]

    started = time.time()
    proc = subprocess.run(
        command,
        cwd=settings.repo_root,
        env=_environment(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    result = DbtRunResult(
        args=list(args),
        returncode=proc.returncode,
        elapsed_seconds=time.time() - started,
        nodes=_read_run_results(target_dir, started),
        stdout=proc.stdout,
        stderr=proc.stderr,
        log_path=log_dir / "dbt.log",
    )
    log.info("%s", result.summary())
    if check and not result.success:
        failed = result.failed_nodes
        if failed:
            detail = "\n".join(f"- {n.unique_id}: {_first_lines(n.message)}" for n in failed)
        else:  # dbt failed before running nodes (parse / connection error)
            detail = _first_lines((proc.stdout + "\n" + proc.stderr).strip(), n=30)
        raise DbtBuildError(
            f"dbt {' '.join(args)} failed (exit {proc.returncode}); "
            f"{len(failed)} failed node(s):\n{detail}\nfull log: {result.log_path}",
            result,
        )
    return result


def build(
    as_of_date: str,
    *,
    settings: Settings | None = None,
    extra_args: list[str] | None = None,
) -> DbtRunResult:
    """``dbt build`` (seeds, models, tests) for the logical date ``as_of_date``."""
    settings = settings or get_settings()
    result = run_dbt(
        ["build", *(extra_args or [])],
        settings=settings,
        vars={
            "as_of_date": as_of_date,
            "reporting_currency": settings.reporting_currency,
            "max_component_size": settings.max_component_size,
        },
    )
    # Keep the build's per-node timings: `dbt docs generate` overwrites run_results.json.
    results = settings.dbt_target_dir / "run_results.json"
    if results.exists():
        shutil.copyfile(results, settings.dbt_target_dir / "run_results_build.json")
    return result


def generate_docs(*, settings: Settings | None = None) -> Path:
    """``dbt docs generate --static``; copies the single-file site to dbt_docs_dir."""
    settings = settings or get_settings()
    run_dbt(["docs", "generate", "--static"], settings=settings)
    docs_dir = settings.dbt_docs_dir
    docs_dir.mkdir(parents=True, exist_ok=True)
    source = settings.dbt_target_dir / "static_index.html"
    shutil.copyfile(source, docs_dir / "static_index.html")
    shutil.copyfile(source, docs_dir / "index.html")
    return docs_dir / "static_index.html"


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
