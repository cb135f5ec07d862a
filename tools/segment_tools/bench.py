"""`make bench`: the pipeline at 10 k / 100 k / 1 M customers, stage by stage.

For each scale: generate a landing zone (timed, events/s), scan the same files
once with plain DuckDB (the physical reference), run both DAGs through Airflow
exactly like ``make run``, and collect per-stage wall time and sampled peak
memory (``metrics/stages.jsonl`` written by the tasks), dbt per-model times
(``run_results.json``) and the identity/segment quality figures. At the
largest scale a daily delta (one more day of files, run for the next logical
date) is run on top, with the name-last new events and orders files held back;
they then land as the intraday delivery of the same day (timed to the
published snapshot), and last a one-line rules change is run.
Results go to ``docs/benchmarks.md`` (and ``.bench/results.json``).

    python -m segment_tools.bench [--scales 10000,100000,1000000] [--work-dir .bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from segment_warehouse.config import REPO_ROOT

LOGICAL_DATE = "2026-11-22"
# The daily delta's files are delivered the day after the history ends; a daily
# run for them has the next logical date (so as_of_date moves on, as in production).
DELTA_LOGICAL_DATE = "2026-11-23"


def _env(base: Path, airflow_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SEGMENTS_LANDING_DIR=str(base / "landing"),
        SEGMENTS_WAREHOUSE_DIR=str(base / "warehouse"),
        SEGMENTS_REPORTS_DIR=str(base / "reports"),
        SEGMENTS_EXPORTS_DIR=str(base / "exports"),
        # a copy of the repository's rules, so the rules-change step can edit it
        SEGMENTS_CONTENT_RULES=str(base / "content_rules.yml"),
        SEGMENTS_PII_KEY=env.get("SEGMENTS_PII_KEY", "benchmark-secret"),
        AIRFLOW_HOME=str(airflow_home),
    )
    return env


def _landing_files(landing: Path) -> set[Path]:
    return {p for p in landing.rglob("*") if p.is_file()}


def hold_back_intraday(landing: Path, new_files: set[Path], aside: Path) -> list[Path]:
    """Move the name-last new file of events and of orders aside: they land later
    in the day as the intraday delivery. Returns where they belong."""
    held: list[Path] = []
    aside.mkdir(parents=True, exist_ok=True)
    for source in ("analytics", "transactions"):
        mine = sorted(p for p in new_files if p.parent == landing / source)
        if mine:
            (aside / source).mkdir(exist_ok=True)
            mine[-1].rename(aside / source / mine[-1].name)
            held.append(mine[-1])
    return held


def change_one_priority(rules: Path) -> str:
    """Raise the priority of the first rule by one (a content team's typical edit)."""
    import yaml

    doc = yaml.safe_load(rules.read_text())
    rule = doc["rules"][0]
    rule["priority"] = int(rule["priority"]) + 1
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    return f"rule {rule['id']!r} priority -> {rule['priority']}"


def _timed(args: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    """Run a command; return (seconds, peak RSS in MiB of its largest process).

    ``os.wait4`` reports this child's own resource usage (RUSAGE_CHILDREN would
    be a high-water mark over every earlier command of the benchmark too).
    """
    started = time.perf_counter()
    with log.open("a") as fh:
        proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    returncode = os.waitstatus_to_exitcode(status)
    if returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {returncode}); see {log}")
    return seconds, usage.ru_maxrss // 1024


# One reader per source; `{path}` is a file (plain scan) or a glob (glob scan), and
# `{csv_opts}` lets the glob scan add union_by_name (CSV headers differ across files).
_READERS = {
    "crm": "read_csv('{path}', all_varchar = true{csv_opts}, ignore_errors = true)",
    "analytics": "read_json('{path}', format = 'newline_delimited', ignore_errors = true)",
    "transactions": "read_csv('{path}', all_varchar = true{csv_opts}, ignore_errors = true)",
}


def glob_scan(landing: Path) -> float | None:
    """A second, faster reference: one glob reader per source (both cores, one schema
    sniff). Broken files can stop it; then None."""
    con = duckdb.connect()
    started = time.perf_counter()
    try:
        for source, reader in _READERS.items():
            glob = reader.format(path=landing / source / "*", csv_opts=", union_by_name = true")
            con.execute(f"select count(*) from {glob}").fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    return time.perf_counter() - started


def plain_scan(landing: Path) -> tuple[float, dict[str, int]]:
    """One plain DuckDB pass over every landing file: the physical lower bound.

    File by file, because the deliberately broken files (not gzip, wrong
    header) would stop a glob reader; an unreadable file counts as 0 rows.
    """
    con = duckdb.connect()
    counts: dict[str, int] = {}
    started = time.perf_counter()
    for source, reader in _READERS.items():
        total = 0
        for path in sorted((landing / source).glob("*")):
            try:
                (n,) = con.execute(
                    f"select count(*) from {reader.format(path=path, csv_opts='')}"
                ).fetchone()
                total += n
            except duckdb.Error:
                continue
        counts[source] = total
    seconds = time.perf_counter() - started
    con.close()
    return seconds, counts


def _stage_metrics(warehouse: Path, since: float) -> list[dict[str, Any]]:
    path = warehouse / "metrics" / "stages.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if datetime.fromisoformat(r["finished_at"]).timestamp() >= since]


def _dbt_models(warehouse: Path) -> list[dict[str, Any]]:
    path = warehouse / "dbt_target" / "run_results_build.json"
    if not path.exists():
        return []
    results = json.loads(path.read_text())["results"]
    models = [
        {"node": r["unique_id"].split(".", 2)[-1], "seconds": round(r["execution_time"], 2)}
        for r in results
        if r["unique_id"].startswith(("model.", "seed."))
    ]
    return sorted(models, key=lambda m: -m["seconds"])


def run_pipeline(
    env: dict[str, str], log: Path, logical_date: str = LOGICAL_DATE
) -> tuple[float, int]:
    return _timed(
        [sys.executable, "-m", "segment_warehouse.cli", "run", "--date", logical_date], env, log
    )


def bench_scale(customers: int, work: Path, delta: bool, seed: int = 7) -> dict[str, Any]:
    base = work / (f"c{customers}" if seed == 7 else f"c{customers}_seed{seed}")
    if base.exists():
        subprocess.run(["rm", "-rf", str(base)], check=True)
    base.mkdir(parents=True)
    (base / "content_rules.yml").write_bytes(
        (REPO_ROOT / "personalisation" / "content_rules.yml").read_bytes()
    )
    env = _env(base, work / "airflow_home")
    log = base / "bench.log"
    out: dict[str, Any] = {"customers": customers, "seed": seed}

    gen_s, gen_mb = _timed(
        [
            sys.executable, "-m", "segment_tools.generator", "--customers", str(customers),
            "--seed", str(seed), "--out", str(base / "landing"), "--truth-dir", str(base / "truth"),
        ],
        env, log,
    )  # fmt: skip
    scan_s, counts = plain_scan(base / "landing")
    glob_s = glob_scan(base / "landing")
    out["glob_scan_seconds"] = None if glob_s is None else round(glob_s, 2)
    out["rows"] = counts
    out["landing_mb"] = round(
        sum(p.stat().st_size for p in (base / "landing").rglob("*") if p.is_file()) / 2**20, 1
    )
    out["generate"] = {
        "seconds": round(gen_s, 1),
        "peak_mb": gen_mb,
        "events_per_s": round(counts.get("analytics", 0) / gen_s),
    }
    out["plain_scan_seconds"] = round(scan_s, 2)

    since = time.time()
    run_s, run_mb = run_pipeline(env, log)
    out["end_to_end"] = {"seconds": round(run_s, 1), "peak_mb": run_mb}
    out["stages"] = _stage_metrics(base / "warehouse", since)
    out["dbt_models"] = _dbt_models(base / "warehouse")
    out["ratio_to_plain_scan"] = round(run_s / scan_s, 1) if scan_s else None

    from segment_tools.evaluate import evaluate

    out["quality"] = asdict(evaluate(base / "truth", base / "warehouse" / "analytics.duckdb"))

    if delta:
        before = _landing_files(base / "landing")
        _timed(
            [
                sys.executable, "-m", "segment_tools.generator", "--customers", str(customers),
                "--seed", str(seed), "--out", str(base / "landing"),
                "--truth-dir", str(base / "truth"), "--delta-day",
            ],
            env, log,
        )  # fmt: skip
        new_files = _landing_files(base / "landing") - before
        held = hold_back_intraday(base / "landing", new_files, base / "intraday")
        since = time.time()
        delta_s, delta_mb = run_pipeline(env, log, DELTA_LOGICAL_DATE)
        out["daily_delta"] = {
            "seconds": round(delta_s, 1),
            "peak_mb": delta_mb,
            "files": len(new_files) - len(held),
            "stages": _stage_metrics(base / "warehouse", since),
        }
        # One intraday file of events and one of orders land for the same day: the
        # run they trigger (the landing Asset's run, here started at once) ends
        # when the snapshot with the new segments, predictions and decisions is
        # published and the exports are written.
        rows = {}
        for path in held:
            (base / "intraday" / path.parent.name / path.name).rename(path)
            rows[path.parent.name] = _rows_in(path)
        since = time.time()
        intraday_s, intraday_mb = run_pipeline(env, log, DELTA_LOGICAL_DATE)
        out["intraday"] = {
            "seconds": round(intraday_s, 1),
            "peak_mb": intraday_mb,
            "files": [f"{p.parent.name}/{p.name}" for p in held],
            "rows": rows,
            "stages": _stage_metrics(base / "warehouse", since),
        }
        change = change_one_priority(base / "content_rules.yml")
        since = time.time()
        rules_s, rules_mb = run_pipeline(env, log, DELTA_LOGICAL_DATE)
        out["rules_change"] = {
            "seconds": round(rules_s, 1),
            "peak_mb": rules_mb,
            "change": change,
            "stages": _stage_metrics(base / "warehouse", since),
        }
    return out


def _rows_in(path: Path) -> int:
    """Data rows in a landing file (CSV: without its header)."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        n = sum(1 for _ in fh)
    return n - 1 if ".csv" in path.name else n


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, DuckDB {duckdb.__version__}"
    )


def _stage_table(stages: list[dict[str, Any]], end_to_end: float | None = None) -> list[str]:
    lines = ["| stage | seconds | peak RSS (MiB) |", "|---|---:|---:|"]
    lines += [f"| {s['stage']} | {s['seconds']:.1f} | {s['peak_rss_mb']:.0f} |" for s in stages]
    if end_to_end is not None and stages:
        # What the tasks themselves do not account for: Python and Airflow
        # start-up, DAG parsing, the in-process execution API, task bookkeeping.
        outside = end_to_end - sum(s["seconds"] for s in stages)
        lines.append(f"| *outside tasks (start-up, Airflow)* | {outside:.1f} | – |")
    return lines


def _independent(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r.get("seed", 7) != 7]


def _targets(all_results: list[dict[str, Any]]) -> list[str]:
    """The performance issue's targets, each marked met or not met."""
    results = [r for r in all_results if r.get("seed", 7) == 7]
    big = max(results, key=lambda r: r["customers"])
    small = min(results, key=lambda r: r["customers"])
    recluster = next((s["seconds"] for s in big["stages"] if s["stage"] == "recluster"), None)
    delta = big.get("daily_delta", {}).get("seconds")
    growth = (big["end_to_end"]["seconds"] / small["end_to_end"]["seconds"]) / (
        big["customers"] / small["customers"]
    )
    rows = [
        ("end to end", "≤ 600 s", big["end_to_end"]["seconds"], lambda v: v <= 600),
        ("peak memory", "≤ 8 GiB", big["end_to_end"]["peak_mb"], lambda v: v <= 8192),
        ("end to end ÷ plain scan", "≤ 3×", big["ratio_to_plain_scan"], lambda v: v <= 3),
        ("daily delta", "≤ 60 s", delta, lambda v: v <= 60),
        (
            "intraday file → published decisions",
            "≤ 60 s",
            big.get("intraday", {}).get("seconds"),
            lambda v: v <= 60,
        ),
        ("reclustering", "≤ 60 s", recluster, lambda v: v <= 60),
        ("generator", "≥ 1 M events/s", big["generate"]["events_per_s"], lambda v: v >= 1e6),
        (
            f"growth {small['customers']:,} → {big['customers']:,} (time ratio ÷ size ratio)",
            "≈ 1 (linear)",
            round(growth, 2),
            lambda v: v <= 1.2,
        ),
    ]
    for r in _independent(all_results):
        rows.append(
            (
                f"independent {r['customers']:,}-customer zone (seed {r['seed']}): "
                "end to end ÷ plain scan",
                "≤ 8×",
                r["ratio_to_plain_scan"],
                lambda v: v <= 8,
            )
        )
    lines = [
        f"## Targets at {big['customers']:,} customers",
        "",
        "| target | goal | measured | met |",
        "|---|---|---:|---|",
    ]
    for name, goal, value, ok in rows:
        shown = "–" if value is None else f"{value:,}"
        verdict = "–" if value is None else ("yes" if ok(value) else "**no**")
        lines.append(f"| {name} | {goal} | {shown} | {verdict} |")
    return lines


def render(results: list[dict[str, Any]], started: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {started}. Machine: {machine()}.",
        "",
        "Each scale: generate a landing zone (~20 events and ~3 orders per customer),",
        "scan it once with plain DuckDB (reference: `count(*)` over every file with",
        "`read_csv`/`read_json`, file by file; the glob scan - one reader per source -",
        "is shown for comparison), then run both DAGs through Airflow exactly like",
        "`make run` (`DAG.test()` for both DAGs in one process). Peak memory is the",
        "largest process's maximum RSS (end to end) or the sampled RSS of the task",
        "process and its children (per stage). Reproduce: `make bench`",
        "(`BENCH_ARGS='--scales 10000,100000'` for a quicker run).",
        "",
        *_targets(results),
        "",
        "## Summary",
        "",
        "| customers | events | orders | landing MiB | generate (events/s) | plain scan s "
        "| glob scan s | end to end s | × scan | peak MiB | recluster s | predict s "
        "| predict peak MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        recluster = next((s["seconds"] for s in r["stages"] if s["stage"] == "recluster"), None)
        # predict: training on the stacked history and scoring every profiled customer
        predict = next((s for s in r["stages"] if s["stage"] == "predict"), None)
        predict_s = f"{predict['seconds']:.1f}" if predict else "–"
        predict_mb = f"{predict['peak_rss_mb']:,.0f}" if predict else "–"
        label = f"{r['customers']:,}" + (f" (seed {r['seed']})" if r.get("seed", 7) != 7 else "")
        lines.append(
            f"| {label} | {r['rows'].get('analytics', 0):,} | "
            f"{r['rows'].get('transactions', 0):,} | {r['landing_mb']} | "
            f"{r['generate']['events_per_s']:,} | {r['plain_scan_seconds']} | "
            f"{r.get('glob_scan_seconds') or '–'} | "
            f"{r['end_to_end']['seconds']} | {r['ratio_to_plain_scan']} | "
            f"{r['end_to_end']['peak_mb']:,} | {recluster} | {predict_s} | {predict_mb} |"
        )
    for r in results:
        if "daily_delta" in r:
            d = r["daily_delta"]
            lines += [
                "",
                f"**Daily delta** on top of {r['customers']:,} customers (one more day "
                f"of files, logical date {DELTA_LOGICAL_DATE}): {d['seconds']} s end to end "
                f"(peak {d['peak_mb']:,} MiB).",
                "",
                *_stage_table(d["stages"], d["seconds"]),
            ]
    for r in results:
        if "intraday" in r:
            i = r["intraday"]
            rows = ", ".join(f"{n:,} {k}" for k, n in i["rows"].items())
            lines += [
                "",
                f"**Intraday file** for the same day ({', '.join(i['files'])}: {rows} rows), "
                "landed after the daily delta: "
                f"{i['seconds']} s from landing to the published snapshot and exports "
                f"(the run started at once; the landing watcher adds its settle time and "
                f"poll interval; peak {i['peak_mb']:,} MiB).",
                "",
                *_stage_table(i["stages"], i["seconds"]),
            ]
        if "rules_change" in r:
            c = r["rules_change"]
            lines += [
                "",
                f"**Rules change** ({c['change']}), no new data: {c['seconds']} s "
                f"(peak {c['peak_mb']:,} MiB).",
                "",
                *_stage_table(c["stages"], c["seconds"]),
            ]
    for r in results:
        q = r["quality"]
        seed = f" (independent zone, seed {r['seed']})" if r.get("seed", 7) != 7 else ""
        lines += [
            "",
            f"## {r['customers']:,} customers{seed}",
            "",
            *_stage_table(r["stages"], r["end_to_end"]["seconds"]),
            "",
            "Slowest dbt models: "
            + ", ".join(f"`{m['node']}` {m['seconds']} s" for m in r["dbt_models"][:8]),
            "",
            f"Quality: contact pairs precision {q['contact_pair_precision']}, recall "
            f"{q['contact_pair_recall']}, F1 {q['contact_pair_f1']}; anonymous-id stitching "
            f"correct {q['anon_stitch_correct']}, coverage {q['anon_stitch_coverage']}; bots "
            f"mapped {q['bots_mapped']}; profiles {q['profiles']:,} vs {q['real_customers']:,} "
            f"real customers ({q['profile_count_error']:.2%} off); segments ARI vs personas "
            f"{q['segments_ari']} (k={q['segments_k']}).",
        ]
    return "\n".join(lines) + "\n"


def saved_at(work_dir: Path) -> str:
    stamp = datetime.fromtimestamp((work_dir / "results.json").stat().st_mtime, UTC)
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


_ANALYSIS = "\n## Analysis (hand-written)"


def write_report(output: Path, text: str) -> None:
    """Write the generated report, keeping the hand-written analysis at its end."""
    if output.exists():
        old = output.read_text()
        if _ANALYSIS in old:
            text = text.rstrip("\n") + "\n" + old[old.index(_ANALYSIS) :]
    output.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="10000,100000,1000000")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".bench")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-delta", action="store_true")
    parser.add_argument(
        "--independent",
        type=int,
        default=40_000,
        help="customers of an extra zone generated with another seed (0: none)",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the report from results.json"
    )
    args = parser.parse_args(argv)
    if args.render_only:
        saved = json.loads((args.work_dir / "results.json").read_text())
        write_report(args.output, render(saved, saved_at(args.work_dir)))
        print(f"wrote {args.output}")
        return 0
    scales = [int(s) for s in args.scales.split(",") if s]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = []
    for customers in scales:
        print(f"benchmark: {customers:,} customers ...", flush=True)
        result = bench_scale(
            customers, args.work_dir, delta=not args.no_delta and customers == max(scales)
        )
        print(
            f"  end to end {result['end_to_end']['seconds']} s "
            f"({result['ratio_to_plain_scan']}× plain scan)",
            flush=True,
        )
        results.append(result)
        (args.work_dir / "results.json").write_text(json.dumps(results, indent=2))
        write_report(args.output, render(results, started))
    if args.independent:
        print(f"benchmark: independent zone, {args.independent:,} customers ...", flush=True)
        result = bench_scale(args.independent, args.work_dir, delta=False, seed=11)
        print(f"  end to end {result['end_to_end']['seconds']} s", flush=True)
        results.append(result)
        (args.work_dir / "results.json").write_text(json.dumps(results, indent=2))
        write_report(args.output, render(results, started))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
