"""make bench-spark's pure parts: stage aggregation, the fit, the markdown (no Spark)."""

from __future__ import annotations

import json

import pytest
from segment_tools.bench_spark import (
    END_TO_END,
    OUTSIDE,
    aggregate_stages,
    fit_line,
    fit_runs,
    merge_runs,
    outside_tasks,
    predicted_seconds,
    render,
    run_rows,
    spark_parts,
)

# stages.jsonl of one run as the tasks write it (tasks.measured), in file order:
# the warehouse DAG, then the segments DAG; one failed attempt of load_crm retried.
STAGES_JSONL = "\n".join(
    json.dumps(r)
    for r in [
        {"stage": "load_crm", "seconds": 0.5, "peak_rss_mb": 300.0, "ok": False},
        {"stage": "load_crm", "seconds": 1.0, "peak_rss_mb": 350.0, "ok": True},
        {"stage": "load_analytics", "seconds": 2.0, "peak_rss_mb": 700.0, "ok": True},
        {"stage": "dbt_build", "seconds": 10.0, "peak_rss_mb": 900.0, "ok": True},
        {"stage": "validate", "seconds": 3.0, "peak_rss_mb": 500.0, "ok": True},
        {"stage": "publish", "seconds": 0.4, "peak_rss_mb": 400.0, "ok": True},
        {"stage": "recluster", "seconds": 2.5, "peak_rss_mb": 800.0, "ok": True},
        {"stage": "validate", "seconds": 0.6, "peak_rss_mb": 450.0, "ok": True},
        {"stage": "publish", "seconds": 0.1, "peak_rss_mb": 420.0, "ok": True},
    ]
)


def _rows() -> list[dict]:
    return [json.loads(line) for line in STAGES_JSONL.splitlines() if line.strip()]


def test_stages_are_aggregated_per_dag_with_retries_summed() -> None:
    stages = aggregate_stages(_rows())
    assert list(stages) == [
        "load_crm", "load_analytics", "dbt_build", "validate (warehouse)",
        "publish (warehouse)", "recluster", "validate (segments)", "publish (segments)",
    ]  # fmt: skip
    assert stages["load_crm"] == {
        "seconds": 1.0, "failed_seconds": 0.5, "peak_rss_mb": 350.0, "attempts": 2,
        "failed": 1, "skipped": False,
    }  # fmt: skip
    assert stages["validate (warehouse)"]["seconds"] == 3.0
    assert stages["validate (segments)"]["seconds"] == 0.6
    assert stages["publish (segments)"]["peak_rss_mb"] == 420.0
    # the outside-tasks rest counts the failed attempt as time inside a task
    assert outside_tasks(30.0, stages) == pytest.approx(30.0 - 20.1)


def test_a_stage_that_never_succeeded_has_no_seconds_and_skips_are_kept() -> None:
    stages = aggregate_stages(
        [
            {"stage": "dbt_build", "seconds": 4.0, "peak_rss_mb": 1.0, "ok": False},
            {"stage": "dbt_build", "seconds": 5.0, "peak_rss_mb": 2.0, "ok": False},
            {"stage": "load_crm", "seconds": 0.1, "peak_rss_mb": 1.0, "ok": True, "skipped": True},
        ]
    )
    assert stages["dbt_build"]["seconds"] is None
    assert stages["dbt_build"]["failed"] == 2 and stages["dbt_build"]["failed_seconds"] == 9.0
    assert stages["load_crm"]["skipped"] is True


def test_the_fit_recovers_a_known_line() -> None:
    # 5 s fixed + 2 s per 1,000 customers
    points = [(n, 5 + 0.002 * n) for n in (1000, 3000, 10000)]
    fit = fit_line(points)
    assert fit is not None
    assert fit["fixed_s"] == pytest.approx(5.0)
    assert fit["per_1000_s"] == pytest.approx(2.0)
    assert fit["exact"] is False and fit["r2"] == pytest.approx(1.0)
    assert fit["max_residual_s"] == pytest.approx(0.0, abs=1e-9)
    assert predicted_seconds(fit, 1_000_000) == pytest.approx(2005.0)


def test_two_sizes_fit_exactly_and_one_size_gives_no_line() -> None:
    fit = fit_line([(1000, 10.0), (3000, 14.0)])
    assert fit is not None and fit["exact"] is True and fit["r2"] is None
    assert (fit["fixed_s"], fit["per_1000_s"]) == (pytest.approx(8.0), pytest.approx(2.0))
    assert fit_line([(1000, 10.0)]) is None
    assert fit_line([(1000, 10.0), (1000, 11.0)]) is None


def test_least_squares_on_noisy_points() -> None:
    fit = fit_line([(0, 1.0), (1000, 2.0), (2000, 4.0)])
    assert fit is not None
    # slope = cov / var = 1.5 per 1,000; intercept = mean(y) - slope * mean(x) = 2.333 - 1.5
    assert fit["per_1000_s"] == pytest.approx(1.5)
    assert fit["fixed_s"] == pytest.approx(7 / 3 - 1.5, abs=1e-3)
    assert 0 < fit["r2"] < 1


def test_spark_parts_flattens_the_identity_reports() -> None:
    # spark_session.json as spark/runner.py writes it
    timings = {
        "session_start_seconds": 22.37483,
        "identity_pairs": {"records": 933, "prior": 0.00015, "seconds": 10.6},
        "identity_components": {"nodes": 6258, "backbone": {"rounds": 3}, "seconds": 17.4},
        "dbt_seconds": 126.6816,
        "export_seconds": 8.2293,
    }
    assert spark_parts(timings) == {
        "session_start_seconds": 22.375, "identity_pairs": 10.6, "identity_components": 17.4,
        "dbt_seconds": 126.682, "export_seconds": 8.229,
    }  # fmt: skip


def _run(engine: str, customers: int, dbt: float, total: float) -> dict:
    stages = aggregate_stages([{"stage": "dbt_build", "seconds": dbt, "peak_rss_mb": 900.0}])
    run = {
        "engine": engine,
        "customers": customers,
        "end_to_end": {"seconds": total, "peak_mb": 1200},
        "stages": stages,
        "load": {"samples": 3, "min_1m": 1.0, "max_1m": 2.5, "mean_1m": 1.7},
        "rows": {"crm": customers, "analytics": 20 * customers, "transactions": 3 * customers},
        "error": None,
    }
    if engine == "spark":
        run["spark_parts"] = {
            "session_start_seconds": 30.0, "dbt_seconds": dbt - 35, "identity_pairs": 5.0,
        }  # fmt: skip
    return run


def _report() -> dict:
    runs = [
        _run("duckdb", 1000, 10.0, 60.0),
        _run("duckdb", 3000, 14.0, 66.0),
        _run("spark", 1000, 150.0, 250.0),
        _run("spark", 3000, 170.0, 280.0),
    ]
    return {
        "command": "python -m segment_tools.bench_spark --sizes 1000,3000",
        "started": "2026-12-03 10:00 UTC",
        "commit": "abc1234",
        "machine": "test machine",
        "seed": 42,
        "date": "2026-11-22",
        "spark_master": "local[2]",
        "spark_driver_memory": "2g",
        "uptime_before": "load average: 1.00, 1.00, 1.00",
        "uptime_after": "load average: 2.00, 2.00, 2.00",
        "runs": runs,
        "fits": fit_runs(runs),
        "commands": [
            "SEGMENTS_ENGINE=duckdb python -m segment_warehouse.cli run --date 2026-11-22"
        ],
    }


def test_fits_per_engine_and_row() -> None:
    fits = _report()["fits"]
    assert set(fits) == {"duckdb", "spark"}
    assert fits["duckdb"]["dbt_build"]["per_1000_s"] == pytest.approx(2.0)
    assert fits["duckdb"][END_TO_END]["fixed_s"] == pytest.approx(57.0)
    assert fits["spark"]["dbt_build"]["fixed_s"] == pytest.approx(140.0)
    assert fits["spark"]["dbt_build: Spark session start"]["per_1000_s"] == pytest.approx(0.0)
    assert run_rows(_report()["runs"][0])[OUTSIDE] == pytest.approx(50.0)


def test_a_failed_run_is_left_out_of_the_fit() -> None:
    runs = _report()["runs"]
    runs[3] = {**runs[3], "error": "cli run failed (exit 1)"}
    assert fit_runs(runs)["spark"]["dbt_build"] is None


def test_render_has_the_tables_fit_load_and_commands() -> None:
    text = render(_report())
    assert "| stage | duckdb 1,000 | duckdb 3,000 | spark 1,000 | spark 3,000 |" in text
    assert "| dbt_build | 10.0 | 14.0 | 150.0 | 170.0 |" in text
    assert "| **end to end** | 60.0 | 66.0 | 250.0 | 280.0 |" in text
    assert "| dbt_build: Spark session start | – | – | 30.0 | 30.0 |" in text
    # the Spark parts follow dbt_build in the runner's order
    assert text.index("| dbt_build |") < text.index("| dbt_build: Spark session start")
    assert text.index("dbt_build: phased dbt build") < text.index("dbt_build: of which identity")
    assert text.index("dbt_build: of which identity") < text.index("| *outside tasks")
    assert "| load average (1 min) during the run | 1.0-2.5 (mean 1.7) |" in text
    assert "| 3,000 | 3,000 | 60,000 | 9,000 |" in text
    # fit: DuckDB dbt_build 8 s + 2 s per 1,000; Spark 140 s + 10 s per 1,000
    assert "| dbt_build | 8.0 | 2.000 | 140.0 | 10.000 |" in text
    assert "two sizes (1,000, 3,000), so each line passes exactly through both points" in text
    assert "load average: 1.00, 1.00, 1.00" in text
    assert "python -m segment_warehouse.cli run --date 2026-11-22" in text


def test_render_names_a_failed_run() -> None:
    report = _report()
    report["runs"][3] = {**report["runs"][3], "error": "cli run failed (exit 1)"}
    report["fits"] = fit_runs(report["runs"])
    text = render(report)
    assert "**spark 3,000 failed**: cli run failed (exit 1)" in text
    assert "- spark: fewer than two successful sizes, no fit." in text


def test_merge_runs_keeps_other_sizes_and_replaces_a_remeasured_one() -> None:
    earlier = [
        {"engine": "spark", "customers": 1000, "tag": "old"},
        {"engine": "duckdb", "customers": 1000, "tag": "old"},
        {"engine": "duckdb", "customers": 3000, "tag": "old"},
    ]
    new = [{"engine": "duckdb", "customers": 1000, "tag": "new"}]
    merged = merge_runs(earlier, new)
    assert [(r["engine"], r["customers"], r["tag"]) for r in merged] == [
        ("duckdb", 1000, "new"),
        ("duckdb", 3000, "old"),
        ("spark", 1000, "old"),
    ]
