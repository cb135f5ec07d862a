"""Predictions: point-in-time features, training/backtest, fallbacks, the published tables."""

from __future__ import annotations

import datetime as dt
import json
from datetime import date
from pathlib import Path

import duckdb
import joblib
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from segment_warehouse.config import ConfigError, get_settings
from segment_warehouse.erasure import ensure_erasure_tables
from segment_warehouse.predictions import predict
from segment_warehouse.predictions.features import FEATURE_NAMES, features_at, labels_after
from tests.predictions.synthetic import build_warehouse

AS_OF = "2026-10-31"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, sub in (
        ("SEGMENTS_WAREHOUSE_DIR", "warehouse"),
        ("SEGMENTS_REPORTS_DIR", "reports"),
        ("SEGMENTS_LANDING_DIR", "landing"),
        ("SEGMENTS_EXPORTS_DIR", "exports"),
    ):
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("SEGMENTS_DUCKDB_THREADS", "2")
    (tmp_path / "warehouse").mkdir()
    return tmp_path / "warehouse" / "warehouse.duckdb"


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One end-to-end predict() on a 180-day synthetic history (shared by tests)."""
    root = tmp_path_factory.mktemp("pred")
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGMENTS_WAREHOUSE_DIR", str(root / "warehouse"))
    mp.setenv("SEGMENTS_REPORTS_DIR", str(root / "reports"))
    mp.setenv("SEGMENTS_DUCKDB_THREADS", "2")
    (root / "warehouse").mkdir()
    db = root / "warehouse" / "warehouse.duckdb"
    build_warehouse(db, customers=1000)
    try:
        result = predict(run_id="r1", as_of=AS_OF)
    finally:
        mp.undo()
    return {"db": db, "result": result, "root": root}


def _q(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_features_are_point_in_time(env: Path) -> None:
    build_warehouse(env, customers=50, days=60)
    con = duckdb.connect(str(env))
    try:
        cid = con.execute(
            "select customer_id from staging.stg_transactions__orders "
            "where order_ts < timestamp '2026-10-01' order by customer_id limit 1"
        ).fetchall()[0][0]
        cutoff = date(2026, 10, 1)
        before = features_at(con, cutoff).set_index("customer_id").loc[cid]
        # A later order, a refund of an early order and a consent change, all after the cut-off.
        for stmt in (
            """insert into staging.stg_transactions__orders
            select 'LATE1', customer_id, timestamp '2026-10-20 10:00', 'completed', 999.0,
                   timestamp '2026-10-20 10:00', 'z.csv', 1, 0.0
            from marts.identity_map where customer_id = $cid limit 1""",
            """insert into marts.identity_map values ('transactions', 'LATE1', $cid)""",
            """insert into staging.stg_transactions__orders
            select order_id, customer_id, order_ts, 'refunded', total_amount_reporting,
                   timestamp '2026-10-25 00:00', 'zz.csv', 2, 0.0
            from staging.stg_transactions__orders
            where customer_id = $cid and order_ts < timestamp '2026-10-01'""",
            """insert into staging.stg_crm__contacts
            select contact_id, not coalesce(marketing_consent, false), created_at,
                   timestamp '2026-10-15', _loaded_at, 'crm1.csv', 0
            from staging.stg_crm__contacts where contact_id = 'C' || $cid""",
        ):
            con.execute(stmt, {"cid": cid})
        after = features_at(con, cutoff).set_index("customer_id").loc[cid]
        for name in (*FEATURE_NAMES, "marketing_consent"):
            assert after[name] == before[name] or (after[name] != after[name]), name
        # ...while at a cut-off after those events they are seen.
        late = features_at(con, date(2026, 10, 30)).set_index("customer_id").loc[cid]
        assert late["monetary"] >= 999.0 and late["refunded_orders"] >= 1
        assert late["marketing_consent"] != before["marketing_consent"]
        labels = labels_after(con, cutoff, 30).set_index("customer_id")
        assert cid in labels.index and labels.loc[cid, "revenue"] >= 999.0
    finally:
        con.close()


def test_predict_publishes_one_row_per_profiled_customer(scored: dict) -> None:
    db = scored["db"]
    missing, extra, refused = _q(
        db,
        """
        select
          (select count(*) from marts.customer_profiles p where marketing_consent is distinct
             from false and customer_id not in (select customer_id from
             segments.customer_predictions)),
          (select count(*) - count(distinct customer_id) from segments.customer_predictions),
          (select count(*) from segments.customer_predictions c join marts.customer_profiles p
             using (customer_id) where p.marketing_consent = false)
        """,
    )[0]
    assert (missing, extra, refused) == (0, 0, 0)
    bad = _q(
        db,
        """
        select count(*) from segments.customer_predictions c
        join marts.customer_profiles p using (customer_id)
        where purchase_probability_30d not between 0 and 1
           or (p.orders_count = 0) != (churn_probability is null)
           or churn_probability not between 0 and 1
        """,
    )[0][0]
    assert bad == 0
    versions = _q(db, "select distinct model_version from segments.customer_predictions")
    assert versions == [(scored["result"].model_version,)]


def test_model_beats_rfm_baseline_on_learnable_history(scored: dict) -> None:
    r = scored["result"]
    assert r.purchase_method == "gradient_boosting"
    assert r.backtest_kind == "time_split"
    assert r.roc_auc is not None and r.baseline_roc_auc is not None
    assert r.roc_auc > 0.7
    row = _q(
        scored["db"],
        "select verdict, backtest, training_cutoffs, label_windows, rows_trained, "
        "beats_baseline, churn_window_days from segments.prediction_runs",
    )
    assert len(row) == 1
    verdict, backtest, cutoffs, windows, rows, beat, churn_n = row[0]
    assert "purchase:" in verdict and "churn:" in verdict
    purchase_sentence = verdict.split("churn:")[0]
    assert ("did NOT beat" in purchase_sentence) == (beat is False)
    bt = json.loads(backtest)["purchase"]
    assert set(bt["model"]) >= {"roc_auc", "pr_auc", "brier_score", "lift_top_decile"}
    assert len(bt["model"]["calibration_curve"]["observed"]) > 0
    assert set(bt["feature_importance"]) == set(FEATURE_NAMES)
    cut = json.loads(cutoffs)["purchase"]
    assert len(cut) >= 3 and cut == sorted(cut, reverse=True)
    # Backtest trained only on windows that closed before its cut-off.
    assert all(
        c <= str(date.fromisoformat(bt["cutoff"]) - dt.timedelta(days=30))
        for c in bt["train_cutoffs"]
    )
    assert json.loads(windows)["purchase"][0][1] <= AS_OF
    assert rows > 1000 and churn_n == 90


def test_calibrated_mean_is_close_to_the_rate(scored: dict) -> None:
    bt = json.loads(_q(scored["db"], "select backtest from segments.prediction_runs")[0][0])
    m = bt["purchase"]["model"]
    assert abs(m["mean_predicted"] - m["observed_rate"]) < 0.25 * m["observed_rate"]


def test_model_file_has_no_customer_rows(scored: dict) -> None:
    path = Path(scored["result"].model_path)
    assert path.parent.name == "predictions" and path.exists()
    bundle = joblib.load(path)
    assert bundle["purchase"].model is not None
    blob = path.read_bytes()
    ids = [r[0] for r in _q(scored["db"], "select customer_id from marts.customer_profiles")]
    import gzip  # noqa: F401  (joblib compresses with zlib; check the decompressed pickle)
    import pickle

    text = pickle.dumps(bundle)
    assert not any(i.encode() in text for i in ids[:200])
    assert blob


def test_report_has_prediction_section(scored: dict) -> None:
    page = (scored["root"] / "reports" / "segments" / "predictions.html").read_text()
    assert "Verdict" in page and page.count("data:image/png;base64,") >= 4


def test_gx_suite_passes(scored: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from segment_warehouse.validation import suites
    from segment_warehouse.validation.runner import run_suite

    monkeypatch.setitem(suites.LAYER_SUITES, "predictions", "predictions")
    suite = suites.load_suite("predictions", get_settings().expectations_dir)
    con = duckdb.connect(str(scored["db"]), read_only=True)
    try:
        results = run_suite(
            con,
            suite,
            run_id="t",
            validated_at=dt.datetime.now(dt.UTC),
            parameters={},
            docs_dir=scored["root"] / "gx",
        )
    finally:
        con.close()
    failed = [r for r in results if not r.success and r.severity == "critical"]
    assert not failed, failed


def test_short_history_falls_back_without_fabricated_metrics(env: Path) -> None:
    build_warehouse(env, customers=300, days=20)
    r = predict(run_id="short", as_of=AS_OF)
    assert r.purchase_method == "rate_heuristic" and r.churn_method == "rate_heuristic"
    assert r.roc_auc is None and r.baseline_roc_auc is None and r.backtest_kind is None
    assert r.n_scored > 0
    row = _q(env, "select roc_auc, brier_score, verdict from segments.prediction_runs")[0]
    assert row[0] is None and row[1] is None and "no backtest" in row[2]
    bad = _q(
        env,
        "select count(*) from segments.customer_predictions "
        "where purchase_probability_30d not between 0 and 1",
    )[0][0]
    assert bad == 0


def test_churn_window_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTS_CHURN_WINDOW_DAYS", "60")
    assert get_settings().predictions.churn_window_days == 60
    monkeypatch.setenv("SEGMENTS_CHURN_WINDOW_DAYS", "soon")
    with pytest.raises(ConfigError, match="SEGMENTS_CHURN_WINDOW_DAYS"):
        get_settings()


def _add_late_order(db: Path) -> None:
    """New history: one more order (a copy of an existing one under a new id)."""
    con = duckdb.connect(str(db))
    try:
        con.execute(
            "insert into staging.stg_transactions__orders "
            "select * replace (order_id || '-late' as order_id) "
            "from staging.stg_transactions__orders limit 1"
        )
    finally:
        con.close()


def test_erased_customer_leaves_no_trace_after_the_next_run(env: Path) -> None:
    build_warehouse(env, customers=300, days=90)
    first = predict(run_id="before", as_of=AS_OF)
    victim = _q(env, "select min(customer_id) from segments.customer_predictions")[0][0]
    con = duckdb.connect(str(env))
    try:  # what erasure does: the person's rows go from every per-person table
        orders = [r[0] for r in con.execute(
            "select source_id from marts.identity_map where customer_id = ? "
            "and source = 'transactions'", [victim]).fetchall()]  # fmt: skip
        con.execute(
            "delete from staging.stg_transactions__orders where list_contains(?, order_id)",
            [orders],
        )
        con.execute("delete from staging.stg_crm__contacts where contact_id = ?", ["C" + victim])
        for table in ("marts.identity_map", "marts.fct_sessions", "marts.customer_profiles",
                      "segments.customer_predictions"):  # fmt: skip
            con.execute(f"delete from {table} where customer_id = ?", [victim])
        ensure_erasure_tables(con)
        con.execute("insert into audit.erasure_log values ('req-1', null, now(), 'h', 1, 1, '{}')")
    finally:
        con.close()
    # the saved model is young enough to score with, but it was fitted on the victim
    second = predict(run_id="after", as_of=AS_OF)
    assert second.run_kind == "train"
    remaining = _q(env, "select customer_id from segments.customer_predictions")
    assert victim not in {r[0] for r in remaining}
    assert not Path(first.model_path).exists() and Path(second.model_path).exists()
    assert second.n_scored == first.n_scored - 1


def test_a_missing_model_file_is_retrained(env: Path) -> None:
    """Erasure deletes the model files (erasure.drop_models): the next run refits."""
    build_warehouse(env, customers=300, days=90)
    first = predict(run_id="r1", as_of=AS_OF)
    Path(first.model_path).unlink()
    later = predict(run_id="r2", as_of=str(date.fromisoformat(AS_OF) + dt.timedelta(days=1)))
    assert later.run_kind == "train" and Path(later.model_path).is_file()


def test_a_saved_model_scores_until_it_is_due_for_retraining(env: Path) -> None:
    build_warehouse(env, customers=300, days=90)
    first = predict(run_id="r1", as_of=AS_OF)
    _add_late_order(env)  # a new day brings a late order: new inputs, scored by the saved model
    day = date.fromisoformat(AS_OF)
    scored = predict(run_id="r2", as_of=str(day + dt.timedelta(days=1)))
    assert scored.run_kind == "score" and scored.fitted_model_version == first.model_version
    assert scored.model_version != first.model_version
    assert scored.model_path == first.model_path
    runs = _q(env, "select model_version, run_kind, fitted_model_version, as_of_date, "
                   "trained_at, scored_at, roc_auc, n_scored from segments.prediction_runs "
                   "order by scored_at")  # fmt: skip
    assert [(r[1], r[2]) for r in runs] == [
        ("train", first.model_version), ("score", first.model_version)
    ]  # fmt: skip
    assert runs[1][3] == day + dt.timedelta(days=1)
    assert runs[1][4] == runs[0][4] and runs[1][5] > runs[0][5]  # same model, scored later
    assert runs[1][6] == runs[0][6]  # the backtest is the model's
    # the published scores are today's, under the score run's version
    assert _q(env, "select distinct model_version, as_of_date from segments.customer_predictions"
              ) == [(scored.model_version, day + dt.timedelta(days=1))]  # fmt: skip
    # what a retrain would give with the same inputs (retrain_days 0 refits every run)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGMENTS_PREDICTION_RETRAIN_DAYS", "0")
        refit = predict(run_id="r3", as_of=str(day + dt.timedelta(days=1)))
    assert refit.run_kind == "train"
    # the model of day + 1 scores for six more days; seven days on it is refitted
    due = predict(run_id="r4", as_of=str(day + dt.timedelta(days=7)))
    assert due.run_kind == "score" and due.fitted_model_version == refit.model_version
    stale = predict(run_id="r5", as_of=str(day + dt.timedelta(days=8)))
    assert stale.run_kind == "train"
    # a backfill to a date before the model's as-of date refits too
    back = predict(run_id="r6", as_of=str(day + dt.timedelta(days=2)))
    assert back.run_kind == "train"


def test_score_run_equals_scoring_the_saved_model_by_hand(env: Path) -> None:
    build_warehouse(env, customers=300, days=90)
    first = predict(run_id="r1", as_of=AS_OF)
    nxt = str(date.fromisoformat(AS_OF) + dt.timedelta(days=3))
    scored = predict(run_id="r2", as_of=nxt)
    assert scored.run_kind == "score"
    bundle = joblib.load(first.model_path)
    con = duckdb.connect(str(env), read_only=True)
    try:
        feats = features_at(con, date.fromisoformat(nxt))
        pub = con.execute(
            "select customer_id, purchase_probability_30d from segments.customer_predictions"
        ).df()
    finally:
        con.close()
    X = pub[["customer_id"]].merge(feats, on="customer_id", how="left")
    expected = np.clip(bundle["purchase"].predict(X), 0.0, 1.0)
    assert np.allclose(pub["purchase_probability_30d"].to_numpy(), expected)


def test_rerun_with_unchanged_inputs_changes_nothing(env: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEGMENTS_PREDICTION_RETRAIN_DAYS", "0")  # every new input refits
    build_warehouse(env, customers=300, days=90)
    first = predict(run_id="r1", as_of=AS_OF)
    before = _q(env, "select * from segments.customer_predictions order by all")
    again = predict(run_id="r2", as_of=AS_OF)
    assert again.model_version == first.model_version
    assert _q(env, "select count(*) from segments.prediction_runs") == [(1,)]
    assert _q(env, "select * from segments.customer_predictions order by all") == before
    # a new day is a new run, and so is new history
    later = predict(run_id="r3", as_of=str(date.fromisoformat(AS_OF) + dt.timedelta(days=1)))
    assert later.model_version != first.model_version
    _add_late_order(env)
    retrained = predict(run_id="r4", as_of=str(date.fromisoformat(AS_OF) + dt.timedelta(days=1)))
    assert retrained.model_version != later.model_version
    assert _q(env, "select count(*) from segments.prediction_runs") == [(3,)]
    # new code (a fixed feature or model) never reuses the old scores
    from segment_warehouse.predictions import core

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(core, "_code_digest", lambda: "changed")
        upgraded = predict(run_id="r5", as_of=str(date.fromisoformat(AS_OF) + dt.timedelta(days=1)))
    assert upgraded.model_version != retrained.model_version


def test_buyers_are_the_profiles_buyers(env: Path) -> None:
    """An order the point-in-time history cannot see yet (dated after the as-of
    date) still makes the customer a buyer in the profile: churn is scored for
    exactly the profile's buyers (DESIGN.md section 6)."""
    build_warehouse(env, customers=300, days=90)
    con = duckdb.connect(str(env))
    try:
        (prospect,) = con.execute(
            "select min(customer_id) from marts.customer_profiles "
            "where orders_count = 0 and marketing_consent is distinct from false"
        ).fetchone()
        con.execute(
            "update marts.customer_profiles set orders_count = 1 where customer_id = ?",
            [prospect],
        )
    finally:
        con.close()
    predict(run_id="r1", as_of=AS_OF)
    mismatched = _q(
        env,
        "select count(*) from segments.customer_predictions c "
        "join marts.customer_profiles p using (customer_id) "
        "where (p.orders_count > 0) <> (c.churn_probability is not null) "
        "or (p.orders_count > 0) <> c.is_buyer",
    )
    assert mismatched == [(0,)]
    assert _q(
        env,
        f"select churn_probability is not null from segments.customer_predictions "
        f"where customer_id = '{prospect}'",
    ) == [(True,)]


def _drifting_rows(n: int = 800) -> pd.DataFrame:
    """Four cut-offs of the same customers and feature distribution whose purchase
    rate falls from 0.5 to 0.1 at the newest cut-off (an ageing cohort)."""
    rng = np.random.default_rng(3)
    parts = []
    for k, rate in enumerate((0.1, 0.5, 0.5, 0.5)):
        x = rng.normal(size=n)
        # the feature ranks customers within a cut-off; the level comes from the period
        logit = np.log(rate / (1 - rate)) + 1.5 * x
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        feats = {name: np.zeros(n) for name in FEATURE_NAMES}
        feats["frequency"], feats["recency_days"] = np.exp(x), np.full(n, 10.0)
        feats["monetary"] = np.exp(x) * 50
        parts.append(
            pd.DataFrame(
                feats
                | {
                    "customer_id": [f"c{i}" for i in range(n)],
                    "label": y,
                    "cutoff": date(2026, 10, 1) - dt.timedelta(days=14 * k),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_recent_window_calibration_follows_the_newest_window() -> None:
    from segment_warehouse.predictions import model as mdl

    rows = _drifting_rows()
    newest = rows[rows["cutoff"] == rows["cutoff"].max()]
    with threadpool_limits(limits=1):  # small fits: threads only contend
        recent = mdl.fit_target("purchase", rows, 30, calibration="recent_window")
        average = mdl.fit_target("purchase", rows, 30, calibration="all_cutoffs")
    assert recent.calibration["method"] == "recent_window"
    assert recent.calibration["cutoff"] == "2026-10-01"
    assert recent.calibration["rows"] == len(newest)
    assert average.calibration == {
        "method": "all_cutoffs",
        "cutoff": None,
        "rows": len(rows),
        "mapping": "sigmoid",
    }
    observed = newest["label"].mean()
    # recent: at the newest window's level; average: pulled up by the older windows
    assert abs(recent.predict(newest).mean() - observed) < 0.2 * observed
    assert average.predict(newest).mean() > 1.5 * observed
    # the published baseline follows the same window
    assert recent.baseline_calibration["method"] == "recent_window"
    base = recent.predict(newest, "calibrated_baseline").mean()
    assert abs(base - observed) < 0.2 * observed
    assert average.predict(newest, "calibrated_baseline").mean() > 1.5 * observed


def test_recent_window_falls_back_when_the_newest_window_has_one_class() -> None:
    from segment_warehouse.predictions import model as mdl

    rows = _drifting_rows(300)
    rows.loc[rows["cutoff"] == rows["cutoff"].max(), "label"] = 0
    with threadpool_limits(limits=1):
        fitted = mdl.fit_target("purchase", rows, 30, calibration="recent_window")
    assert fitted.method == "gradient_boosting"
    assert fitted.calibration["method"] == "all_cutoffs"
    assert "too few rows of a class" in fitted.calibration["note"]
    assert fitted.baseline_calibration["method"] == "all_cutoffs"


def test_run_records_the_calibration(scored: dict) -> None:
    row = _q(scored["db"], "select calibration, rows_trained from segments.prediction_runs")
    cal, rows = json.loads(row[0][0]), row[0][1]
    # published: calibrated on every cut-off's held-out rows
    assert cal["purchase"] == {
        "method": "all_cutoffs",
        "cutoff": None,
        "rows": rows,
        "mapping": "isotonic" if rows >= 5000 else "sigmoid",
    }
    assert cal["churn"]["method"] in {"all_cutoffs", "none"}


def test_report_reads_a_runs_table_of_an_earlier_version(env: Path) -> None:
    """recluster renders the prediction section before predict upgrades the table."""
    from segment_warehouse.predictions.report import prediction_section

    build_warehouse(env, customers=300, days=90)
    predict(run_id="r1", as_of=AS_OF)
    con = duckdb.connect(str(env))
    try:
        for column in ("scored_at", "run_kind", "fitted_model_version"):
            con.execute(f"alter table segments.prediction_runs drop column {column}")
        assert "pred-" in prediction_section(con)
    finally:
        con.close()


def test_the_run_readers_decode_every_json_column(scored: dict) -> None:
    """One reader for prediction_runs: the report, the rerun and the score run use it."""
    from segment_warehouse.predictions import store

    con = duckdb.connect(str(scored["db"]), read_only=True)
    try:
        latest = store.latest_run(con)
        assert latest is not None
        by_version = store.run_of_version(con, latest["model_version"])
        assert by_version == latest
        assert store.run_of_version(con, "pred-no-such-version") is None
        for run in (latest, store.latest_training_run(con)):
            assert run is not None
            for column in store.JSON_COLUMNS:
                assert isinstance(run[column], dict | list), column
            assert run["training_cutoffs"]["purchase"]
    finally:
        con.close()
