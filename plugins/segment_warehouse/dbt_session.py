"""Several dbt commands in ONE dbt process, sharing one parsed manifest.

``dbt_runner`` starts this module as a subprocess (dbt's global state stays out
of the Airflow worker). Each dbt CLI start costs ~1.5 s of imports plus a
project parse (partial parsing keeps it short: the daily as-of date arrives as
the SEGMENTS_AS_OF_DATE environment variable, not a var), so ``build`` followed
by ``docs generate`` in one process saves a whole start-up. Uses dbt's
documented programmatic entry point, ``dbtRunner``.

    python -m segment_warehouse.dbt_session SPEC.json

SPEC: ``{"common": [...], "commands": [{"name": "build", "args": [...],
"required": true}, ...]}``. ``common`` (global flags, --project-dir, --vars,
...) go with the parse and every command, so all share one manifest. After
each command its ``run_results.json`` is copied to ``run_results_<name>.json``
and its outcome is appended to ``session.json`` in the target dir. A failed
required command stops the session (exit 1); a failed optional one (docs) is
recorded and the session goes on (exit 0).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _option(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


# A runner of one session command: (dbtRunner, parsed manifest, the command's spec,
# global flags, the common arguments after the command, target dir) -> (ok, error).
# It leaves run_results_<name>.json in the target dir.
CommandRunner = Callable[
    [Any, Any, dict[str, Any], list[str], list[str], Path], tuple[bool, str | None]
]


def _keep_run_results(target: Path, name: str, started: float) -> None:
    results = target / "run_results.json"
    if results.exists() and results.stat().st_mtime >= started - 1:
        shutil.copyfile(results, target / f"run_results_{name}.json")


def _invoke_once(
    runner: Any, manifest: Any, command: dict[str, Any], global_flags: list[str],
    rest: list[str], target: Path,
) -> tuple[bool, str | None]:  # fmt: skip
    started = time.time()
    result = runner.invoke([*global_flags, *command["args"], *rest])
    _keep_run_results(target, command["name"], started)
    return result.success, None if result.success else str(result.exception or "failed nodes")


def run_session(spec: dict[str, Any], run_command: CommandRunner = _invoke_once) -> int:
    """Parse once, then run the spec's commands on that manifest (``run_command``
    runs one; the Spark runner passes its phased runner)."""
    from dbt.cli.main import dbtRunner

    common: list[str] = list(spec["common"])
    target = Path(_option(common, "--target-path") or "target")
    target.mkdir(parents=True, exist_ok=True)
    outcomes: list[dict[str, Any]] = []
    session_file = target / "session.json"
    session_file.unlink(missing_ok=True)

    def record(name: str, ok: bool, started: float, error: str | None) -> None:
        outcomes.append(
            {"name": name, "success": ok, "seconds": time.time() - started, "error": error}
        )
        session_file.write_text(json.dumps(outcomes, indent=1))

    global_flags = [a for a in common if a in ("--quiet", "--no-use-colors")]
    rest = [a for a in common if a not in global_flags]
    started = time.time()
    parsed = dbtRunner().invoke([*global_flags, "parse", *rest])
    if not parsed.success:
        _keep_run_results(target, "parse", started)
        record("parse", False, started, str(parsed.exception or "dbt parse failed"))
        return 1
    runner = dbtRunner(manifest=parsed.result)
    for command in spec["commands"]:
        started = time.time()
        ok, error = run_command(runner, parsed.result, command, global_flags, rest, target)
        record(command["name"], ok, started, error)
        if not ok and command.get("required", True):
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    return run_session(json.loads(Path(args[0]).read_text()))


if __name__ == "__main__":
    sys.exit(main())
