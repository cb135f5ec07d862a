"""`make bench-spark`: a capacity model from measured per-stage costs, both engines.

For each size: generate one landing zone with the sample generator (the
generator ``make demo`` and the Spark engine test run, seed 42), then for each
engine (``SEGMENTS_ENGINE=duckdb`` / ``=spark``) copy it into a fresh
directory and run ``segment_warehouse.cli run --date 2026-11-22`` once (both
DAGs through Airflow, exactly like ``make run``; the first run of a fresh
warehouse, so a full build), timed end to end. Per-stage wall time and sampled
peak memory come from ``<warehouse_dir>/metrics/stages.jsonl`` (written by the
tasks), the Spark build's parts from its ``spark_session.json``, the load
average is sampled during every run. Then, per engine and stage, a least-squares
line ``seconds = fixed + slope × customers`` (exact through two sizes).

Results go to ``<work-dir>/results.json`` and ``<work-dir>/capacity.md`` (also
printed).

    python -m segment_tools.bench_spark [--sizes 1000,3000,10000] [--engines duckdb,spark]
        [--work-dir .bench/spark] [--seed 42] [--date 2026-11-22] [--add]

``--add`` keeps the work dir's earlier runs and fits over all of them (e.g. one
larger size measured later).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from segment_tools.bench import _env, _stage_metrics, _timed, machine, plain_scan
from segment_warehouse.config import REPO_ROOT

ENGINES = ("duckdb", "spark")
# The stages of the segments DAG (recluster_segments); validate and publish run
# in both DAGs under the same stage name, told apart by which DAG ran first.
SEGMENTS_DAG_STAGES = frozenset(
    {"recluster", "predict", "decide", "measure_experiments", "export_audiences"}
)
SHARED_STAGES = frozenset({"validate", "publish"})
# Rows of the tables in pipeline order (stages not listed follow, by name).
STAGE_ORDER = (
    "load_crm", "load_analytics", "load_transactions", "load_erasure", "apply_erasure",
    "dbt_build", "validate (warehouse)", "publish (warehouse)", "refresh_exports",
    "recluster", "predict", "decide", "measure_experiments", "validate (segments)",
    "publish (segments)", "export_audiences",
)  # fmt: skip
OUTSIDE = "outside tasks (start-up, Airflow)"
END_TO_END = "end to end"
# spark_session.json's parts of the Spark dbt_build stage
SPARK_PARTS = {
    "session_start_seconds": "Spark session start",
    "dbt_seconds": "phased dbt build",
    "identity_pairs": "of which identity pairs (Splink)",
    "identity_components": "of which connected components",
    "export_seconds": "export of built relations to Parquet",
}


# --------------------------------------------------------------------------- pure parts


def aggregate_stages(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One entry per stage of one run, from its ``stages.jsonl`` records in file order.

    ``validate`` and ``publish`` are labelled ``(warehouse)`` or ``(segments)``:
    a record after the first segments-DAG stage belongs to that DAG. Several
    records of one label (retries) are summed: ``seconds`` over the successful
    ones (None when none succeeded), ``failed_seconds`` over the failed ones;
    ``peak_rss_mb`` is the largest of all.
    """
    out: dict[str, dict[str, Any]] = {}
    in_segments_dag = False
    for row in rows:
        stage = row["stage"]
        in_segments_dag = in_segments_dag or stage in SEGMENTS_DAG_STAGES
        if stage in SHARED_STAGES:
            stage = f"{stage} ({'segments' if in_segments_dag else 'warehouse'})"
        entry = out.setdefault(
            stage,
            {"seconds": None, "failed_seconds": 0.0, "peak_rss_mb": 0.0, "attempts": 0,
             "failed": 0, "skipped": False},
        )  # fmt: skip
        entry["attempts"] += 1
        entry["peak_rss_mb"] = max(entry["peak_rss_mb"], float(row.get("peak_rss_mb", 0.0)))
        if row.get("ok", True):
            entry["seconds"] = round((entry["seconds"] or 0.0) + float(row["seconds"]), 3)
        else:
            entry["failed"] += 1
            entry["failed_seconds"] = round(entry["failed_seconds"] + float(row["seconds"]), 3)
        entry["skipped"] = entry["skipped"] or bool(row.get("skipped"))
    return out


def spark_parts(timings: dict[str, Any]) -> dict[str, float]:
    """Seconds of the Spark build's parts from its ``spark_session.json``: plain numbers,
    or the identity steps' reports (dicts with ``seconds``)."""
    out: dict[str, float] = {}
    for key, value in timings.items():
        if isinstance(value, dict):
            value = value.get("seconds")
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = round(float(value), 3)
    return out


def outside_tasks(end_to_end: float, stages: dict[str, dict[str, Any]]) -> float:
    """What the tasks do not account for: start-up, DAG parsing, Airflow bookkeeping."""
    inside = sum((s["seconds"] or 0.0) + s["failed_seconds"] for s in stages.values())
    return round(end_to_end - inside, 3)


def fit_line(points: list[tuple[float, float]]) -> dict[str, Any] | None:
    """Least squares ``seconds = fixed + slope × customers`` through (customers, seconds).

    None with fewer than two distinct sizes. With exactly two the line passes
    through both points (``exact``: no residual, nothing tested); with more,
    ``r2`` and the largest residual say how well a line describes them.
    """
    import numpy as np

    if len({x for x, _ in points}) < 2:
        return None
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    slope, fixed = np.polyfit(x, y, 1)
    residuals = y - (fixed + slope * x)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = None
    if len(points) > 2:
        r2 = round(1 - float((residuals**2).sum()) / total, 4) if total else 1.0
    return {
        "fixed_s": round(float(fixed), 3),
        "per_1000_s": round(float(slope) * 1000, 4),
        "points": len(points),
        "exact": len(points) == 2,
        "r2": r2,
        "max_residual_s": round(float(abs(residuals).max()), 3),
    }


def merge_runs(earlier: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per (engine, customers): a new run replaces an earlier one; sorted."""
    by_key = {(r["engine"], r["customers"]): r for r in earlier}
    by_key.update({(r["engine"], r["customers"]): r for r in new})
    return [by_key[k] for k in sorted(by_key)]


def predicted_seconds(fit: dict[str, Any], customers: int) -> float:
    """The fitted line at ``customers``."""
    return fit["fixed_s"] + fit["per_1000_s"] * customers / 1000


def run_rows(run: dict[str, Any]) -> dict[str, float | None]:
    """Seconds per table row of one run: every stage, the outside-tasks rest, end to end."""
    rows: dict[str, float | None] = {k: v["seconds"] for k, v in run.get("stages", {}).items()}
    if run.get("end_to_end"):
        rows[OUTSIDE] = outside_tasks(run["end_to_end"]["seconds"], run.get("stages", {}))
        rows[END_TO_END] = run["end_to_end"]["seconds"]
    for key, label in SPARK_PARTS.items():
        if key in run.get("spark_parts", {}):
            rows[f"dbt_build: {label}"] = run["spark_parts"][key]
    return rows


def fit_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any] | None]]:
    """engine -> row -> fitted line, over the successful runs of that engine."""
    fits: dict[str, dict[str, dict[str, Any] | None]] = {}
    for engine in dict.fromkeys(r["engine"] for r in runs):
        points: dict[str, list[tuple[float, float]]] = {}
        for run in runs:
            if run["engine"] != engine or run.get("error"):
                continue
            for row, seconds in run_rows(run).items():
                if seconds is not None:
                    points.setdefault(row, []).append((run["customers"], seconds))
        fits[engine] = {row: fit_line(p) for row, p in points.items()}
    return fits


def _ordered(rows: set[str]) -> list[str]:
    """Table rows in pipeline order: stages, the Spark build's parts under dbt_build,
    unknown stages by name, then outside tasks and end to end."""
    parts = [f"dbt_build: {label}" for label in SPARK_PARTS.values()]

    def key(row: str) -> tuple[int, int, str]:
        if row in STAGE_ORDER:
            return STAGE_ORDER.index(row), 0, row
        if row in parts:
            return STAGE_ORDER.index("dbt_build"), 1 + parts.index(row), row
        if row == OUTSIDE:
            return len(STAGE_ORDER) + 1, 0, row
        if row == END_TO_END:
            return len(STAGE_ORDER) + 2, 0, row
        return len(STAGE_ORDER), 0, row

    return sorted(rows, key=key)


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _loads(load: dict[str, Any]) -> str:
    if not load or not load.get("samples"):
        return "–"
    return f"{load['min_1m']:.1f}-{load['max_1m']:.1f} (mean {load['mean_1m']:.1f})"


def _columns(runs: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(engine, customers) of every run, engine by engine, sizes ascending."""
    engines = list(dict.fromkeys(r["engine"] for r in runs))
    keys = {(r["engine"], r["customers"]) for r in runs}
    return [
        (e, n) for e in engines for n in sorted({r["customers"] for r in runs}) if (e, n) in keys
    ]


def zone_table(runs: list[dict[str, Any]]) -> list[str]:
    """Raw rows per size (the plain scan's counts of the generated files)."""
    lines = ["| customers | contacts | events | orders |", "|---:|---:|---:|---:|"]
    for n in sorted({r["customers"] for r in runs}):
        rows = next((r["rows"] for r in runs if r["customers"] == n and r.get("rows")), {})
        lines.append(
            f"| {n:,} | {rows.get('crm', 0):,} | {rows.get('analytics', 0):,} | "
            f"{rows.get('transactions', 0):,} |"
        )
    return lines


def measured_table(runs: list[dict[str, Any]]) -> list[str]:
    """Seconds per stage (rows) per engine and size (columns), then memory and load."""
    by_key = {(r["engine"], r["customers"]): r for r in runs}
    columns = _columns(runs)
    rows_of = {key: run_rows(run) for key, run in by_key.items()}
    lines = [
        "| stage | " + " | ".join(f"{e} {n:,}" for e, n in columns) + " |",
        "|---" + "|---:" * len(columns) + "|",
    ]
    for row in _ordered({row for rows in rows_of.values() for row in rows}):
        shown = f"*{row}*" if row == OUTSIDE else f"**{row}**" if row == END_TO_END else row
        lines.append(
            f"| {shown} | " + " | ".join(_num(rows_of[c].get(row)) for c in columns) + " |"
        )

    def stage_peak(run: dict[str, Any]) -> float | None:
        return max((s["peak_rss_mb"] for s in run.get("stages", {}).values()), default=None)

    extra = {
        "peak RSS, largest process (MiB)": lambda r: _num(
            (r.get("end_to_end") or {}).get("peak_mb"), 0
        ),
        "peak RSS, largest stage (MiB)": lambda r: _num(stage_peak(r), 0),
        "load average (1 min) during the run": lambda r: _loads(r.get("load", {})),
    }
    for label, cell in extra.items():
        lines.append(f"| {label} | " + " | ".join(cell(by_key[c]) for c in columns) + " |")
    return lines


def fit_table(fits: dict[str, dict[str, dict[str, Any] | None]]) -> list[str]:
    """Fixed seconds and seconds per 1,000 customers per stage, engine by engine."""
    engines = list(fits)
    lines = [
        "| stage | "
        + " | ".join(f"{e} fixed s | {e} s per 1,000 customers" for e in engines)
        + " |",
        "|---" + "|---:|---:" * len(engines) + "|",
    ]
    for row in _ordered({row for e in engines for row in fits[e]}):
        cells = []
        for e in engines:
            fit = fits[e].get(row)
            cells += [_num(fit and fit["fixed_s"]), _num(fit and fit["per_1000_s"], 3)]
        lines.append(f"| {row} | {' | '.join(cells)} |")
    return lines


def fit_notes(runs: list[dict[str, Any]], fits: dict[str, dict[str, Any]]) -> list[str]:
    """How many sizes each line rests on (two: exact), and every failure seen."""
    lines = []
    for e in fits:
        used = sorted({r["customers"] for r in runs if r["engine"] == e and not r.get("error")})
        sizes = ", ".join(f"{n:,}" for n in used)
        total = fits[e].get(END_TO_END)
        if len(used) == 2:
            lines.append(
                f"- {e}: two sizes ({sizes}), so each line passes exactly through both "
                "points; nothing tests that the cost is linear."
            )
        elif len(used) > 2 and total:
            lines.append(
                f"- {e}: {len(used)} sizes ({sizes}); end to end r² {total['r2']}, "
                f"largest residual {total['max_residual_s']} s."
            )
        else:
            lines.append(f"- {e}: fewer than two successful sizes, no fit.")
    for run in runs:
        if run.get("error"):
            lines.append(f"- **{run['engine']} {run['customers']:,} failed**: {run['error']}")
        for stage, s in run.get("stages", {}).items():
            if s["failed"]:
                lines.append(
                    f"- {run['engine']} {run['customers']:,}: `{stage}` failed "
                    f"{s['failed']} of {s['attempts']} attempts ({s['failed_seconds']} s)."
                )
    return lines


def render(report: dict[str, Any]) -> str:
    """The markdown section: measured seconds, memory, the fit, load, commands."""
    runs = report["runs"]
    return (
        "\n".join(
            [
                "## Capacity model: measured per-stage costs, both engines",
                "",
                f"Written by `{report['command']}` on {report['started']} (commit "
                f"{report.get('commit', '?')}). Machine: {report['machine']}. "
                f"Spark master `{report.get('spark_master', '?')}`, driver memory "
                f"{report.get('spark_driver_memory', '?')}.",
                "",
                f"Data: `segment_tools.generator`, seed {report['seed']}, one zone per size, "
                "copied for each engine; every run is the first of a fresh warehouse "
                f"(full build), `segment_warehouse.cli run --date {report['date']}`. "
                "Seconds are wall time (`metrics/stages.jsonl`); *outside tasks* is end to "
                "end minus the stages; the `dbt_build:` rows are parts of the Spark "
                "`dbt_build` stage (`spark_session.json`).",
                "",
                *zone_table(runs),
                "",
                "### Measured seconds per stage",
                "",
                *measured_table(runs),
                "",
                "### Fit: seconds = fixed + slope × customers (least squares)",
                "",
                *fit_table(report["fits"]),
                "",
                *fit_notes(runs, report["fits"]),
                "",
                "Load average (`uptime`) before the first run: "
                f"{report.get('uptime_before', '?')}; after the last: "
                f"{report.get('uptime_after', '?')}.",
                "",
                "Commands:",
                "",
                "```sh",
                report["command"],
                *report.get("commands", []),
                "```",
            ]
        )
        + "\n"
    )


# --------------------------------------------------------------------------- measuring


class LoadSampler:
    """Samples the 1-minute load average every ``interval`` seconds while in use."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, Any]:
        s = self.samples
        return {
            "samples": len(s),
            "min_1m": round(min(s), 2),
            "max_1m": round(max(s), 2),
            "mean_1m": round(sum(s) / len(s), 2),
        }


def _uptime() -> str:
    proc = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or " ".join(f"{v:.2f}" for v in os.getloadavg())


def _commit() -> str:
    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    return commit + (" + uncommitted changes" if git("status", "--porcelain") else "")


def generate_zone(customers: int, seed: int, zone: Path, log: Path) -> dict[str, Any]:
    """The generator as the Spark engine test runs it; timed; rows counted."""
    args = [
        sys.executable, "-m", "segment_tools.generator", "--customers", str(customers),
        "--seed", str(seed), "--out", str(zone / "landing"), "--truth-dir", str(zone / "truth"),
        "--workers", "1", "--no-progress",
    ]  # fmt: skip
    seconds, peak_mb = _timed(args, dict(os.environ), log)
    _, counts = plain_scan(zone / "landing")
    return {"seconds": round(seconds, 1), "peak_mb": peak_mb, "rows": counts, "args": args}


def run_env(base: Path, airflow_home: Path, engine: str) -> dict[str, str]:
    """bench.py's environment plus the engine (the copied landing zone is complete, so
    no settle wait)."""
    env = _env(base, airflow_home)
    env.update(SEGMENTS_ENGINE=engine, SEGMENTS_LANDING_SETTLE_SECONDS="0")
    env.setdefault("SEGMENTS_SPARK_MASTER", "local[2]")
    env.setdefault("SEGMENTS_SPARK_DRIVER_MEMORY", "2g")
    return env


def warm_up_airflow(airflow_home: Path, log: Path) -> None:
    """Migrate the shared Airflow metadata DB once, before any timed run (``cli run``
    does it on its first run only; it would otherwise land in one run's figure)."""
    env = _env(log.parent, airflow_home)
    script = (
        "import sys; from pathlib import Path; "
        "from segment_warehouse.cli import airflow_env, init_airflow; "
        "init_airflow(airflow_env(), Path(sys.argv[1]))"
    )
    _timed([sys.executable, "-c", script, str(log)], env, log)


def run_engine(engine: str, customers: int, zone: Path, work: Path, date: str) -> dict[str, Any]:
    base = work / f"c{customers}" / engine
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    shutil.copytree(zone / "landing", base / "landing")
    (base / "content_rules.yml").write_bytes(
        (REPO_ROOT / "personalisation" / "content_rules.yml").read_bytes()
    )
    env = run_env(base, work / "airflow_home", engine)
    log = base / "bench.log"
    args = [sys.executable, "-m", "segment_warehouse.cli", "run", "--date", date]
    out: dict[str, Any] = {
        "engine": engine,
        "customers": customers,
        "spark_master": env["SEGMENTS_SPARK_MASTER"] if engine == "spark" else None,
        "uptime_before": _uptime(),
        "error": None,
    }
    since = time.time()
    with LoadSampler() as load:
        try:
            seconds, peak_mb = _timed(args, env, log)
            out["end_to_end"] = {"seconds": round(seconds, 1), "peak_mb": peak_mb}
        except SystemExit as exc:  # _timed: the command failed
            out["error"] = f"{exc}; last lines: {_tail(log)}"
    out["load"] = load.summary()
    out["uptime_after"] = _uptime()
    raw = _stage_metrics(base / "warehouse", since)
    out["stages_raw"] = raw
    out["stages"] = aggregate_stages(raw)
    parts = base / "warehouse" / "spark" / "dbt_target" / "spark_session.json"
    if engine == "spark" and parts.exists():
        out["spark_parts"] = spark_parts(json.loads(parts.read_text()))
    shown = {
        k: env[k]
        for k in sorted(env)
        if (k.startswith("SEGMENTS_") or k == "AIRFLOW_HOME")
        and (engine == "spark" or not k.startswith("SEGMENTS_SPARK_"))
    }
    out["command"] = " ".join(
        [*(f"{k}={shlex.quote(v)}" for k, v in shown.items()), *map(shlex.quote, args)]
    )
    return out


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _relative(command: str) -> str:
    return command.replace(str(REPO_ROOT) + "/", "").replace(sys.executable, "python")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".bench" / "spark")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--date", default="2026-11-22")
    parser.add_argument(
        "--add",
        action="store_true",
        help="keep the work dir's earlier runs (results.json) and fit over all of them; "
        "a size and engine measured again replaces its earlier run",
    )
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    engines = [e for e in args.engines.split(",") if e]
    work: Path = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    command = "python -m segment_tools.bench_spark " + " ".join(
        map(shlex.quote, sys.argv[1:] if argv is None else argv)
    )
    report: dict[str, Any] = {
        "command": command.strip(),
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "machine": machine(),
        "seed": args.seed,
        "date": args.date,
        "spark_master": os.environ.get("SEGMENTS_SPARK_MASTER", "local[2]"),
        "spark_driver_memory": os.environ.get("SEGMENTS_SPARK_DRIVER_MEMORY", "2g"),
        "uptime_before": _uptime(),
        "zones": {},
        "runs": [],
        "commands": [],
    }
    if args.add and (work / "results.json").exists():
        earlier = json.loads((work / "results.json").read_text())
        if earlier.get("seed") != args.seed or earlier.get("date") != args.date:
            parser.error("--add needs the earlier runs' --seed and --date")
        report["runs"] = merge_runs(earlier["runs"], [])
        report["zones"] = earlier.get("zones", {})
        report["commands"] = earlier.get("commands", [])
        report["command"] = f"{earlier.get('command', '')}; then {report['command']}"
        report["uptime_before"] = f"{earlier.get('uptime_before', '')}; {report['uptime_before']}"
    warm_up_airflow(work / "airflow_home", log)

    def save() -> None:
        report["fits"] = fit_runs(report["runs"])
        report["uptime_after"] = _uptime()
        (work / "results.json").write_text(json.dumps(report, indent=2))
        (work / "capacity.md").write_text(render(report))

    for customers in sizes:
        zone = work / f"c{customers}" / "zone"
        if zone.exists():
            shutil.rmtree(zone)
        zone.mkdir(parents=True)
        print(f"bench-spark: generating {customers:,} customers ...", flush=True)
        generated = generate_zone(customers, args.seed, zone, log)
        report["zones"][str(customers)] = {k: v for k, v in generated.items() if k != "args"}
        report["commands"].append(_relative(shlex.join(generated["args"])))
        for engine in engines:
            print(f"bench-spark: {engine}, {customers:,} customers ...", flush=True)
            run = run_engine(engine, customers, zone, work, args.date)
            run["rows"] = generated["rows"]
            report["runs"] = merge_runs(report["runs"], [run])
            report["commands"].append(_relative(run["command"]))
            if run["error"]:
                print(f"  FAILED: {run['error']}", flush=True)
            else:
                print(
                    f"  end to end {run['end_to_end']['seconds']} s, peak "
                    f"{run['end_to_end']['peak_mb']:,} MiB, load {_loads(run['load'])}",
                    flush=True,
                )
            save()
    save()
    print(render(report))
    print(f"wrote {work / 'results.json'} and {work / 'capacity.md'}")
    return 1 if any(r["error"] for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
