"""Training rows are sampled before features are computed: same rows as sampling the
full stacked history, features of a customer subset equal the full query's."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from segment_warehouse.config import PredictionSettings
from segment_warehouse.predictions import core, predict
from segment_warehouse.predictions import model as mdl
from segment_warehouse.predictions.features import features_at, labels_after, population_at
from tests.predictions.synthetic import build_warehouse

AS_OF = date(2026, 10, 31)


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    db = tmp_path_factory.mktemp("sampled") / "warehouse.duckdb"
    build_warehouse(db, customers=400, days=180, seed=3)
    c = duckdb.connect(str(db))
    yield c
    c.close()


def _refused_now(con: duckdb.DuckDBPyConnection) -> set[str]:
    sql = "select customer_id from marts.customer_profiles where marketing_consent = false"
    return {r[0] for r in con.execute(sql).fetchall()}


def _full_history_sample(
    con: duckdb.DuckDBPyConnection, target: str, cutoffs: list[date], horizon: int, cap: int
) -> pd.DataFrame:
    """The reference: every customer's features at every cut-off, then the hash sample."""
    refused_now = _refused_now(con)
    parts = []
    for c in cutoffs:
        df = features_at(con, c)
        refused_then = df["marketing_consent"].eq(False).fillna(False).astype(bool)
        df = df[~refused_then & ~df["customer_id"].isin(refused_now)]
        if target == "churn":
            df = df[df["frequency"] > 0]
        ordered = df["customer_id"].isin(set(labels_after(con, c, horizon)["customer_id"]))
        label = ordered if target == "purchase" else ~ordered
        parts.append(df.assign(label=label.to_numpy().astype(int), cutoff=c))
    df = pd.concat(parts, ignore_index=True)
    if len(df) > cap:
        u = mdl.stable_fraction(df["customer_id"] + "|" + df["cutoff"].astype(str))
        df = df[u < cap / len(df)].reset_index(drop=True)
    return df


@pytest.mark.parametrize("share", [0.3, 0.7])  # subset queries; one query over everyone
@pytest.mark.parametrize(("target", "horizon"), [("purchase", 30), ("churn", 90)])
def test_sampled_rows_equal_the_sample_of_the_full_history(
    con: duckdb.DuckDBPyConnection,
    target: str,
    horizon: int,
    share: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ps = PredictionSettings()
    cutoffs = core.plan_cutoffs(AS_OF, AS_OF - timedelta(days=179), horizon, ps)
    assert len(cutoffs) >= 3
    hist = core._History(con, _refused_now(con))
    population = sum(len(hist.population(target, c)) for c in cutoffs)
    cap = int(population * share)
    expected = _full_history_sample(con, target, cutoffs, horizon, cap)

    computed: list[int] = []

    def counting(*args: object, **kwargs: object) -> pd.DataFrame:
        out = features_at(*args, **kwargs)
        computed.append(len(out))
        return out

    monkeypatch.setattr(core, "features_at", counting)
    got = hist.stacked(target, cutoffs, horizon, cap)
    assert 0.7 * cap < len(got) < 1.3 * cap
    # the same rows, in the same order, with the same values
    pd.testing.assert_frame_equal(
        got.drop(columns="marketing_consent"),
        expected.drop(columns="marketing_consent"),
        check_exact=False,
        rtol=1e-12,
    )
    if cap / population <= core.FULL_QUERY_SHARE:
        # features were computed for the sampled rows only, not every customer x cut-off
        assert sum(computed) == len(got)
    else:
        assert len(computed) == len(cutoffs)  # one query per cut-off, over everyone


def test_subset_features_and_population_match_the_full_query(
    con: duckdb.DuckDBPyConnection,
) -> None:
    cutoff = AS_OF - timedelta(days=44)
    full = features_at(con, cutoff)
    rng = np.random.default_rng(0)
    ids = pd.Series(rng.choice(full["customer_id"].to_numpy(), 120, replace=False))
    sub = features_at(con, cutoff, ids)
    expected = full[full["customer_id"].isin(ids)].reset_index(drop=True)
    assert len(sub) == 120
    pd.testing.assert_frame_equal(
        sub.drop(columns="marketing_consent"),
        expected.drop(columns="marketing_consent"),
        check_exact=False,
        rtol=1e-12,
    )
    assert sub["marketing_consent"].tolist() == expected["marketing_consent"].tolist()
    pop = population_at(con, cutoff)
    assert pop["customer_id"].tolist() == full["customer_id"].tolist()
    refused = full["marketing_consent"].eq(False).fillna(False).astype(bool)
    assert pop["refused_consent"].tolist() == refused.tolist()
    assert pop["is_buyer"].tolist() == (full["frequency"] > 0).tolist()
    assert pop["refused_consent"].any() and pop["is_buyer"].any() and not pop["is_buyer"].all()


def test_a_rerun_returns_the_first_runs_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.setenv("SEGMENTS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    (tmp_path / "warehouse").mkdir()
    build_warehouse(tmp_path / "warehouse" / "warehouse.duckdb", customers=300, days=90)
    first = predict(run_id="r1", as_of=str(AS_OF))
    again = predict(run_id="r2", as_of=str(AS_OF))
    assert first.report_path is not None and again.report_path is None
    assert first.n_scored > 0 and first.training_cutoffs
    same = {"duration_seconds": 0.0, "report_path": None}
    assert dataclasses.replace(again, **same) == dataclasses.replace(first, **same)
