"""Scoring every customer in Spark gives the DuckDB engine's segments and probabilities.

Reclustering and predictions fit on the driver either way; with
``SEGMENTS_ENGINE=spark`` the scoring step runs in Spark's Python workers over
Arrow batches, the fitted scikit-learn objects broadcast
(``segment_warehouse.spark.scoring``). Checked here, on warehouses of 3,000
customers, Spark ``local[1]``:

* ``recluster()`` on the same ``marts.customer_features``, once per engine
  (Spark reading the features from the Spark build's Parquet, as
  ``built_exports.json`` lists it): the same k, inertia and segment of every
  customer; a Parquet row that differs from warehouse.duckdb's is refused;
* one saved prediction model scores the same customers on both engines, for
  each published method (gradient boosting, the RFM baseline, the rate
  heuristic): the same probabilities, bit for bit (compared exactly; the docs
  promise 12 significant digits, scoring being row by row with the same
  objects), the same deciles through ``predict()``.

The Spark build itself is not run (minutes; ``test_spark_engine_pipeline``
does): its Parquet is written from warehouse.duckdb here, with the column
types the Spark build writes (double, bigint, boolean, string).

Run with ``make test-spark`` (pytest -m spark); skipped without pyspark. The
rounding test needs no Spark and runs in ``make test``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import joblib
import numpy as np
import pandas as pd
import pytest
from segment_tools.synthetic_features import make_customer_features, write_customer_features

from segment_warehouse.clustering import recluster
from segment_warehouse.clustering.scoring import ScoringMismatch, duckdb_round
from segment_warehouse.config import Settings, get_settings
from segment_warehouse.warehouse import connect
from tests.predictions.synthetic import build_warehouse

CUSTOMERS = 3_000
AS_OF = "2026-10-31"


def test_duckdb_round_is_duckdbs() -> None:
    rng = np.random.default_rng(3)
    ties = np.round(rng.random(20_000) * 1e6) / 1e6 + 5e-7  # x.xxxxxx5: half-way cases
    values = np.concatenate(
        [rng.gamma(1.0, 100.0, 20_000), rng.random(20_000), ties, -ties,
         [0.0, -0.0, 2.5e-6, 4.5e-7, 1e300, np.inf, -np.inf, np.nan]]
    )  # fmt: skip
    con = duckdb.connect()
    con.register("t", pd.DataFrame({"x": values}))
    expected = con.execute("select round(x, 6) as r from t").df()["r"].to_numpy()
    got = duckdb_round(values)
    assert np.array_equal(got, expected, equal_nan=True)


@pytest.fixture(scope="module")
def spark_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    pytest.importorskip("pyspark")
    root = tmp_path_factory.mktemp("spark_scoring")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGMENTS_SPARK_MASTER", "local[1]")
        mp.setenv("SEGMENTS_DUCKDB_THREADS", "1")
        mp.setenv("SEGMENTS_PII_KEY", "test-secret")
        mp.setenv("SEGMENTS_K_MIN", "4")
        mp.setenv("SEGMENTS_K_MAX", "7")
        yield root


def _settings(mp: pytest.MonkeyPatch, root: Path, engine: str) -> Settings:
    mp.setenv("SEGMENTS_WAREHOUSE_DIR", str(root / "warehouse"))
    mp.setenv("SEGMENTS_REPORTS_DIR", str(root / "reports"))
    (root / "warehouse").mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(get_settings(), engine=engine)


def _as_spark_build(settings: Settings, tables: list[tuple[str, str]]) -> None:
    """What the Spark build leaves behind: the tables as Parquet, listed in
    built_exports.json (written from warehouse.duckdb here, by Spark itself)."""
    from segment_warehouse.spark.runner import BUILT_EXPORTS, target_dir
    from segment_warehouse.spark.session import build_session, spark_dir

    spark = build_session(settings)
    con = connect(read_only=True, settings=settings)
    exports = []
    try:
        for schema, name in tables:
            folder = spark_dir(settings) / "built_parquet" / schema / name
            frame = con.execute(f"select * from {schema}.{name}").df()
            spark.createDataFrame(frame).write.mode("overwrite").parquet(folder.as_posix())
            exports.append({"schema": schema, "name": name, "folder": str(folder)})
    finally:
        con.close()
    target_dir(settings).mkdir(parents=True, exist_ok=True)
    (target_dir(settings) / BUILT_EXPORTS).write_text(json.dumps(exports))


def _segments(settings: Settings) -> tuple[pd.DataFrame, dict[str, Any]]:
    con = connect(read_only=True, settings=settings)
    try:
        seg = con.execute(
            "select customer_id, segment_id, segment_name from segments.customer_segments "
            "order by customer_id"
        ).df()
        run = con.execute("select k, inertia, n_profiled from segments.segment_runs").df()
        return seg, run.iloc[0].to_dict()
    finally:
        con.close()


@pytest.mark.spark
def test_recluster_assigns_the_same_segments_on_both_engines(spark_env: Path) -> None:
    features = make_customer_features(CUSTOMERS, seed=11)
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        for engine in ("duckdb", "spark"):
            settings = _settings(mp, spark_env / f"cl_{engine}", engine)
            con = connect(settings=settings)
            try:
                write_customer_features(con, features)
            finally:
                con.close()
            if engine == "spark":
                _as_spark_build(settings, [("marts", "customer_features")])
            r = recluster(as_of="2026-01-05", settings=settings)
            assert r.created and r.skipped_reason is None
            results[engine] = _segments(settings)
    (duck, duck_run), (spark, spark_run) = results["duckdb"], results["spark"]
    assert duck_run == spark_run  # same k, inertia (a sum over every label), profiled count
    assert len(duck) > CUSTOMERS * 0.8  # consent-refusers left out, everyone else there
    pd.testing.assert_frame_equal(duck, spark)
    assert duck["segment_id"].nunique() >= 4

    # A Parquet row that is not warehouse.duckdb's (a stale build) is refused.
    with pytest.MonkeyPatch.context() as mp:
        settings = _settings(mp, spark_env / "cl_spark", "spark")
        con = connect(settings=settings)
        try:
            con.execute(
                "update marts.customer_features set frequency = frequency + 1 "
                "where customer_id = (select min(customer_id) from marts.customer_features "
                "where frequency > 0)"
            )
        finally:
            con.close()
        with pytest.raises(ScoringMismatch, match="other feature values"):
            recluster(as_of="2026-01-06", settings=settings, force=True)

        # That customer erased from warehouse.duckdb since the build: the Parquet's
        # row of them is scored but dropped, everyone else is assigned.
        con = connect(settings=settings)
        try:
            erased = con.execute(
                "select min(customer_id) from marts.customer_features where frequency > 0"
            ).fetchone()[0]
            con.execute("delete from marts.customer_features where customer_id = ?", [erased])
        finally:
            con.close()
        r = recluster(as_of="2026-01-07", settings=settings, force=True)
        assert r.created and r.skipped_reason is None
        after, _ = _segments(settings)
        assert erased not in set(after["customer_id"]) and len(after) == len(spark) - 1


@pytest.fixture(scope="module")
def trained(spark_env: Path) -> Iterator[dict[str, Any]]:
    """One training run (DuckDB engine) on a synthetic history; its warehouse copied."""
    from segment_warehouse.predictions import predict

    with pytest.MonkeyPatch.context() as mp:
        settings = _settings(mp, spark_env / "pred_duckdb", "duckdb")
        build_warehouse(settings.warehouse_db, customers=CUSTOMERS, seed=1)
        result = predict(run_id="train", as_of=AS_OF, settings=settings)
    other = spark_env / "pred_spark" / "warehouse"
    other.mkdir(parents=True)
    shutil.copy(settings.warehouse_db, other / settings.warehouse_db.name)
    yield {"settings": settings, "result": result}


@pytest.mark.spark
def test_one_saved_model_scores_the_same_probabilities_on_both_engines(
    trained: dict[str, Any],
) -> None:
    from segment_warehouse.predictions.features import FEATURE_NAMES, features_at
    from segment_warehouse.predictions.scoring import PredictionScorer, score_customers

    settings: Settings = trained["settings"]
    bundle = joblib.load(trained["result"].model_path)
    assert bundle["purchase"].method == "gradient_boosting"
    con = connect(read_only=True, settings=settings)
    try:
        X = features_at(con, date.fromisoformat(AS_OF)).drop(columns=["marketing_consent"])
    finally:
        con.close()
    buyer = X["frequency"].to_numpy() > 0
    spark_settings = dataclasses.replace(settings, engine="spark")
    for method in ("gradient_boosting", "calibrated_baseline", "rate_heuristic"):
        scorer = PredictionScorer(
            dataclasses.replace(bundle["purchase"], method=method),
            dataclasses.replace(bundle["churn"], method=method),
        )
        p_duck, c_duck = score_customers(scorer, X, buyer, settings)
        p_spark, c_spark = score_customers(scorer, X, buyer, spark_settings)
        assert np.array_equal(p_duck, p_spark), method
        assert np.array_equal(c_duck, c_spark, equal_nan=True), method
        # ... and what scoring the whole frame at once gave before it was batched
        assert np.array_equal(p_duck, scorer.purchase.predict(X)), method
        assert np.array_equal(c_duck[buyer], scorer.churn.predict(X[buyer])), method
        assert np.isnan(c_duck[~buyer]).all() and 0.0 < p_duck.mean() < 1.0
        assert len(np.unique(p_duck)) > 5, method  # real scores, not a constant
    assert len(X) > CUSTOMERS * 0.9 and set(FEATURE_NAMES) <= set(X.columns)


@pytest.mark.spark
def test_a_score_run_publishes_the_same_predictions_on_both_engines(
    trained: dict[str, Any], spark_env: Path
) -> None:
    from segment_warehouse.predictions import predict

    day = str(date.fromisoformat(AS_OF) + timedelta(days=1))
    published = {}
    with pytest.MonkeyPatch.context() as mp:
        for engine in ("duckdb", "spark"):
            settings = _settings(mp, spark_env / f"pred_{engine}", engine)
            r = predict(run_id=f"score-{engine}", as_of=day, settings=settings)
            assert r.run_kind == "score"  # the saved model of the training run scored
            con = connect(read_only=True, settings=settings)
            try:
                published[engine] = con.execute(
                    "select customer_id, purchase_probability_30d, churn_probability, "
                    "expected_revenue_30d, purchase_decile, churn_decile, is_buyer "
                    "from segments.customer_predictions order by customer_id"
                ).df()
            finally:
                con.close()
    duck, spark = published["duckdb"], published["spark"]
    assert len(duck) > CUSTOMERS * 0.8
    pd.testing.assert_frame_equal(duck, spark, check_exact=True)
