"""measure() over hand-built experiments, assignments and orders in a temp warehouse."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from segment_warehouse.config import get_settings
from segment_warehouse.experiments import measure, stats
from segment_warehouse.experiments.results import (
    COLUMN_NAMES,
    MIN_CUSTOMERS_PER_ARM,
    ExperimentDataError,
    _verdict,
)
from segment_warehouse.warehouse import connect, ensure_schemas

AS_OF = "2026-12-15"


def _create_tables(con: duckdb.DuckDBPyConnection) -> None:
    ensure_schemas(con)
    con.execute(
        """
        create or replace table personalisation.experiments (
            experiment_id varchar, rule_id varchar, slot_id varchar, content_id varchar,
            default_content_id varchar, control_share double, start_date date, end_date date,
            window_days integer, rules_version varchar, first_defined_at timestamp,
            last_defined_at timestamp)
        """
    )
    con.execute(
        """
        create or replace table personalisation.experiment_assignments (
            experiment_id varchar, customer_id varchar, variant varchar, assigned_at date,
            segment_name_at_assignment varchar)
        """
    )
    con.execute(
        """
        create or replace table marts.fct_orders (
            order_id varchar, customer_id varchar, order_ts timestamp, status varchar,
            is_completed boolean, total_amount_reporting double)
        """
    )


def _experiment(
    con: duckdb.DuckDBPyConnection, eid: str, *, share: float = 0.5, window: int = 14
) -> None:
    con.execute(
        "insert into personalisation.experiments values "
        "(?, 'rule_' || ?, 'home_hero', 'hero_new', 'hero_generic', ?, date '2026-11-01', null,"
        " ?, 'v1', timestamp '2026-11-01 00:00', timestamp '2026-11-01 00:00')",
        [eid, eid, share, window],
    )


def _assign(
    con: duckdb.DuckDBPyConnection,
    eid: str,
    cid: str,
    variant: str,
    assigned_at: str,
    segment: str | None = "Loyal",
) -> None:
    con.execute(
        "insert into personalisation.experiment_assignments values (?, ?, ?, cast(? as date), ?)",
        [eid, cid, variant, assigned_at, segment],
    )


def _order(
    con: duckdb.DuckDBPyConnection,
    cid: str,
    ts: str,
    amount: float = 50.0,
    status: str = "completed",
) -> None:
    oid = hashlib.sha256(f"{cid}{ts}{status}".encode()).hexdigest()[:12]
    con.execute(
        "insert into marts.fct_orders values (?, ?, cast(? as timestamp), ?, ?, ?)",
        [oid, cid, ts, status, status == "completed", amount],
    )


def _bulk(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    # one Arrow-backed insert: row-by-row executemany is slow in DuckDB
    if not rows:
        return
    frame = pd.DataFrame(rows)  # noqa: F841 - read by DuckDB's replacement scan
    con.execute(f"insert into {table} select * from frame")


def _results(path: Path) -> dict[tuple[str, str, str], dict]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        cur = con.execute(
            "select * from personalisation.experiment_results "
            "order by experiment_id, segment, variant"
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    return {(r["experiment_id"], r["segment"], r["variant"]): r for r in rows}


@pytest.fixture
def wh(segments_env: Path) -> duckdb.DuckDBPyConnection:
    con = connect(settings=get_settings())
    _create_tables(con)
    yield con
    con.close()


def _run(con: duckdb.DuckDBPyConnection, as_of: str = AS_OF) -> dict:
    # measure opens its own connection: the test's must not hold the file meanwhile
    con.execute("checkpoint")
    con.close()
    result = measure(run_id="t", as_of=as_of)
    return {"result": result, "rows": _results(get_settings().warehouse_db)}


def test_window_edges_closing_rule_and_completed_only(wh: duckdb.DuckDBPyConnection) -> None:
    _experiment(wh, "e1", window=14)
    # assigned 2026-12-01, window 14: measured on order days 12-02 .. 12-15 (UTC)
    cases = {
        "c_same_day": ("treatment", "2026-12-01 23:59:59", "completed", False),
        "c_first_second": ("treatment", "2026-12-02 00:00:00", "completed", True),
        "c_last_second": ("treatment", "2026-12-15 23:59:59", "completed", True),
        "c_after": ("treatment", "2026-12-16 00:00:00", "completed", False),
        "c_refunded": ("control", "2026-12-05 10:00:00", "refunded", False),
        "c_cancelled": ("control", "2026-12-05 10:00:00", "cancelled", False),
        "c_pending": ("control", "2026-12-05 10:00:00", "pending", False),
        "c_ok": ("control", "2026-12-10 10:00:00", "completed", True),
    }
    for cid, (variant, ts, status, _converted) in cases.items():
        _assign(wh, "e1", cid, variant, "2026-12-01")
        _order(wh, cid, ts, amount=40.0, status=status)
    # a second order of a converted customer counts its revenue, not a second conversion
    _order(wh, "c_ok", "2026-12-11 09:00:00", amount=60.0)
    # assigned one day later: window closes 12-16 > as_of, so not yet measured
    _assign(wh, "e1", "c_open_t", "treatment", "2026-12-02")
    _order(wh, "c_open_t", "2026-12-03 12:00:00")
    _assign(wh, "e1", "c_open_c", "control", "2026-12-02", segment=None)

    out = _run(wh)
    rows = out["rows"]
    t, c = rows[("e1", "all", "treatment")], rows[("e1", "all", "control")]
    assert set(t) == set(COLUMN_NAMES)
    assert (t["customers"], t["conversions"]) == (4, 2)
    assert (c["customers"], c["conversions"]) == (4, 1)
    assert t["conversion_rate"] == pytest.approx(0.5)
    assert c["revenue_per_customer"] == pytest.approx(100.0 / 4)
    assert t["revenue_per_customer"] == pytest.approx(80.0 / 4)
    assert (t["customers_pending"], c["customers_pending"]) == (1, 1)
    assert t["lift"] == pytest.approx(0.5 / 0.25 - 1)
    assert c["lift"] is None and c["p_value"] is None
    assert t["srm_p_value"] == pytest.approx(1.0) and c["srm_p_value"] == pytest.approx(1.0)
    assert t["verdict"].startswith("not enough data yet")
    assert t["as_of_date"] == date(2026, 12, 15) and t["window_days"] == 14
    # the open-window customer with no segment shows up as a pending slice only
    assert rows[("e1", "(no segment)", "control")]["customers"] == 0
    assert rows[("e1", "(no segment)", "control")]["customers_pending"] == 1
    assert out["result"].customers_measured == 8 and out["result"].customers_pending == 2

    # one day later the 12-02 cohort is in: its order on 12-03 converts
    out = _run(connect(settings=get_settings()), as_of="2026-12-16")
    t = out["rows"][("e1", "all", "treatment")]
    assert (t["customers"], t["conversions"], t["customers_pending"]) == (5, 3, 0)


def test_pre_period_feeds_cuped_not_conversions(wh: duckdb.DuckDBPyConnection) -> None:
    _experiment(wh, "e1", window=7)
    rng = np.random.default_rng(3)
    assignments, orders = [], []
    for i in range(600):
        cid = f"c{i:04d}"
        variant = "treatment" if i % 2 else "control"
        assignments.append(("e1", cid, variant, date(2026, 12, 1), "Loyal"))
        # habitual buyers buy before and after: a covariate CUPED can use
        habitual = rng.random() < 0.3
        if habitual:  # in the 7 pre-period days
            orders.append((f"pre-{cid}", cid, datetime(2026, 11, 28, 12), "completed", True, 50.0))
        if rng.random() < (0.6 if habitual else 0.1):
            orders.append((f"in-{cid}", cid, datetime(2026, 12, 4, 12), "completed", True, 50.0))
        # outside both windows: ignored
        orders.append((f"old-{cid}", cid, datetime(2026, 11, 1, 12), "completed", True, 50.0))
    _bulk(wh, "personalisation.experiment_assignments", assignments)
    _bulk(wh, "marts.fct_orders", orders)
    rows = _run(wh)["rows"]
    t = rows[("e1", "all", "treatment")]
    assert t["customers"] == 300
    assert t["cuped_lift"] is not None and t["cuped_variance_reduction"] > 0.1
    assert (t["cuped_ci_high"] - t["cuped_ci_low"]) < (t["lift_ci_high"] - t["lift_ci_low"])
    assert t["decision_basis"] == "cuped"


def _population(
    con: duckdb.DuckDBPyConnection,
    eid: str,
    n: int,
    *,
    p_control: float,
    lift: float,
    control_share: float = 0.5,
    seed: int = 0,
) -> None:
    rng = np.random.default_rng(seed)
    segments = ["Loyal", "New", "At risk"]
    assignments, orders = [], []
    for i in range(n):
        cid = f"{eid}-{i:05d}"
        variant = "control" if rng.random() < control_share else "treatment"
        assignments.append((eid, cid, variant, date(2026, 11, 20), segments[i % 3]))
        p = p_control * (1 + lift) if variant == "treatment" else p_control
        if rng.random() < p:
            ts = datetime(2026, 11, 21, 8) + timedelta(hours=int(rng.integers(0, 24 * 10)))
            orders.append((f"o-{cid}", cid, ts, "completed", True, float(rng.gamma(2, 30))))
    _bulk(con, "personalisation.experiment_assignments", assignments)
    _bulk(con, "marts.fct_orders", orders)


def _decision_p(row: dict) -> float:
    return row["cuped_p_value"] if row["decision_basis"] == "cuped" else row["p_value"]


def test_planted_lift_recovered_null_quiet_and_holm(wh: duckdb.DuckDBPyConnection) -> None:
    _experiment(wh, "planted", window=14)
    _experiment(wh, "null", window=14)
    _population(wh, "planted", 8000, p_control=0.15, lift=0.4, seed=4)
    _population(wh, "null", 8000, p_control=0.15, lift=0.0, seed=3)
    out = _run(wh)
    rows = out["rows"]
    t = rows[("planted", "all", "treatment")]
    assert t["lift_ci_low"] <= 0.4 <= t["lift_ci_high"]
    assert t["p_value"] < 0.001 and t["verdict"].startswith("treatment better by")
    assert t["revenue_lift"] is not None and t["revenue_lift_ci_low"] <= t["revenue_lift"]
    n = rows[("null", "all", "treatment")]
    assert n["lift_ci_low"] <= 0 <= n["lift_ci_high"]
    assert n["verdict"].startswith("no detectable effect")
    for eid in ("planted", "null"):
        assert not rows[(eid, "all", "treatment")]["srm_warning"]
        seg_rows = [
            r for k, r in rows.items() if k[0] == eid and k[1] != "all" and k[2] == "treatment"
        ]
        assert len(seg_rows) == 3
        for r in seg_rows:
            assert r["p_value_adjusted"] >= _decision_p(r)
            # gatekeeping: no segment is declared before the whole experiment is
            assert r["p_value_adjusted"] >= _decision_p(rows[(eid, "all", "treatment")])
        # "all" is the pre-specified comparison: not adjusted
        overall = rows[(eid, "all", "treatment")]
        assert overall["p_value_adjusted"] == pytest.approx(_decision_p(overall))
    assert any(e.startswith("planted/all: treatment better") for e in out["result"].effects)
    null_effects = [e for e in out["result"].effects if e.startswith("null/")]
    assert not null_effects, null_effects


def test_srm_warning_when_split_is_off(wh: duckdb.DuckDBPyConnection) -> None:
    _experiment(wh, "skewed", share=0.5)
    _population(wh, "skewed", 4000, p_control=0.2, lift=0.0, control_share=0.44, seed=5)
    out = _run(wh)
    t = out["rows"][("skewed", "all", "treatment")]
    assert t["srm_warning"] and t["srm_p_value"] < 0.001
    assert t["verdict"].startswith("sample ratio mismatch")
    assert "skewed/all" in out["result"].srm_warnings
    page = (get_settings().experiment_reports_dir / "index.html").read_text()
    assert "Sample ratio mismatch" in page


def test_erasure_then_recompute(wh: duckdb.DuckDBPyConnection) -> None:
    _experiment(wh, "e1")
    _population(wh, "e1", 2 * MIN_CUSTOMERS_PER_ARM + 100, p_control=0.3, lift=0.0, seed=7)
    before = _run(wh)["rows"]
    con = connect(settings=get_settings())
    victim = con.execute(
        "select a.customer_id, a.variant from personalisation.experiment_assignments a "
        "join marts.fct_orders o using (customer_id) order by a.customer_id limit 1"
    ).fetchone()
    assert victim is not None
    # what erasure does: delete the person's rows by customer_id everywhere
    for table in ("personalisation.experiment_assignments", "marts.fct_orders"):
        con.execute(f"delete from {table} where customer_id = ?", [victim[0]])
    after = _run(con)["rows"]
    key = ("e1", "all", victim[1])
    assert after[key]["customers"] == before[key]["customers"] - 1
    assert after[key]["conversions"] == before[key]["conversions"] - 1
    seg = next(
        k
        for k in before
        if k[0] == "e1"
        and k[1] != "all"
        and k[2] == victim[1]
        and before[k]["customers"] != after[k]["customers"]
    )
    assert after[seg]["customers"] == before[seg]["customers"] - 1


def test_rerun_is_identical(wh: duckdb.DuckDBPyConnection) -> None:
    _experiment(wh, "e1")
    _population(wh, "e1", 1500, p_control=0.2, lift=0.2, seed=9)
    first = _run(wh)["rows"]
    page1 = (get_settings().experiment_reports_dir / "index.html").read_bytes()
    second = _run(connect(settings=get_settings()))["rows"]
    page2 = (get_settings().experiment_reports_dir / "index.html").read_bytes()
    assert first == second
    assert page1 == page2


def test_no_experiments_yet_gives_empty_table(segments_env: Path) -> None:
    result = measure(run_id="t", as_of=AS_OF)
    assert result.experiments == 0 and result.result_rows == 0
    con = duckdb.connect(str(get_settings().warehouse_db), read_only=True)
    cols = [r[0] for r in con.execute("describe personalisation.experiment_results").fetchall()]
    con.close()
    assert tuple(cols) == COLUMN_NAMES
    assert (get_settings().experiment_reports_dir / "index.html").exists()


def test_bad_inputs_are_rejected(wh: duckdb.DuckDBPyConnection) -> None:
    _experiment(wh, "e1")
    _assign(wh, "e1", "c1", "holdout", "2026-12-01")
    wh.close()
    with pytest.raises(ExperimentDataError, match="variant"):
        measure(run_id="t", as_of=AS_OF)
    with pytest.raises(ExperimentDataError, match="YYYY-MM-DD"):
        measure(run_id="t", as_of="15/12/2026")
    con = connect(settings=get_settings())
    con.execute("update personalisation.experiment_assignments set variant = 'control'")
    con.execute("update personalisation.experiments set window_days = 0")
    con.close()
    with pytest.raises(ExperimentDataError, match="window_days"):
        measure(run_id="t", as_of=AS_OF)
    con = connect(settings=get_settings())
    con.execute("update personalisation.experiments set window_days = 14")
    _experiment(con, "e1")
    con.close()
    with pytest.raises(ExperimentDataError, match="more than one row for e1"):
        measure(run_id="t", as_of=AS_OF)


def test_page_escapes_names(wh: duckdb.DuckDBPyConnection) -> None:
    _experiment(wh, "e<1>")
    _assign(wh, "e<1>", "c1", "control", "2026-12-01", segment="<script>alert(1)</script>")
    _assign(wh, "e<1>", "c2", "treatment", "2026-12-01", segment="all")
    rows = _run(wh)["rows"]
    assert ("e<1>", "all (segment)", "treatment") in rows
    page = (get_settings().experiment_reports_dir / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_verdict_wording() -> None:
    est = stats.relative_lift_from_moments(0.15, 0.1275, 2000, 0.10, 0.09, 2000)
    assert est.ci_low > 0
    kwargs = {"n_c": 2000, "n_t": 2000, "conversions": 500, "pending": 0, "srm_fail": False}
    assert _verdict(decision=est, p_adjusted=est.p_value, **kwargs).startswith(
        "treatment better by 50.0 % (95 % CI +"
    )
    # a segment significant on its own but not after the gated Holm correction
    held_back = _verdict(decision=est, p_adjusted=0.3, **kwargs)
    assert held_back.startswith("no effect declared after the multiple-testing correction")
    assert "adjusted p = 0.3" in held_back
    worse = stats.relative_lift_from_moments(0.10, 0.09, 2000, 0.15, 0.1275, 2000)
    assert _verdict(decision=worse, p_adjusted=worse.p_value, **kwargs).startswith(
        "treatment worse by 33.3 %"
    )
    assert _verdict(decision=est, p_adjusted=est.p_value, cuped=True, **kwargs).endswith(
        "CUPED-adjusted)"
    )
    srm = _verdict(decision=est, p_adjusted=est.p_value, **{**kwargs, "srm_fail": True})
    assert srm.startswith("sample ratio mismatch - do not trust this split; treatment better")
    small = _verdict(decision=est, p_adjusted=est.p_value, **{**kwargs, "n_c": 50, "pending": 7})
    assert small == (
        "not enough data yet (50 control / 2000 treatment customers with a closed window, "
        "7 still in their window)"
    )
