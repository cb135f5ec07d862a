"""predict(): point-in-time training on the warehouse's history, backtest, scoring, publish."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from segment_warehouse.config import PredictionSettings, Settings, get_settings
from segment_warehouse.fileutil import code_digest
from segment_warehouse.predictions import model as mdl
from segment_warehouse.predictions import store
from segment_warehouse.predictions.features import (
    FEATURE_NAMES,
    FEATURES,
    features_at,
    history_bounds,
    labels_after,
    population_at,
)
from segment_warehouse.predictions.scoring import PredictionScorer, score_customers
from segment_warehouse.warehouse import connect, ensure_schemas, table_exists

log = logging.getLogger(__name__)

PURCHASE_HORIZON_DAYS = 30  # fixed by the predictions contract (DESIGN.md section 6)
SMALL_DATA_ROWS = 50_000  # customers below which training runs single-threaded
HOLDOUT_SHARE = 0.25  # customers held out when no earlier cut-off allows a time split
# Above this share of a cut-off's population, one query over every customer costs
# less than reading the kept customers' history through the subset filter.
FULL_QUERY_SHARE = 0.5


@dataclass(frozen=True)
class PredictionResult:
    """What the Airflow task returns (XCom)."""

    model_version: str
    run_id: str
    as_of_date: str
    purchase_method: str
    churn_method: str
    n_scored: int
    n_excluded: int
    rows_trained: int
    churn_rows_trained: int
    training_cutoffs: list[str]
    backtest_cutoff: str | None
    backtest_kind: str | None
    roc_auc: float | None
    baseline_roc_auc: float | None
    brier_score: float | None
    beats_baseline: bool | None
    mean_purchase_probability: float
    verdict: str
    model_path: str
    report_path: str | None
    duration_seconds: float
    run_kind: str = "train"  # train | score (a saved model scored, nothing refitted)
    fitted_model_version: str = ""  # the training run whose model scored


def plan_cutoffs(
    as_of: date, first_day: date | None, horizon: int, ps: PredictionSettings
) -> list[date]:
    """Cut-offs whose label window (c, c + horizon] ends by ``as_of``, newest first,
    each with at least ``min_history_days`` of order history before it."""
    if first_day is None:
        return []
    out: list[date] = []
    c = as_of - timedelta(days=horizon)
    while len(out) < ps.max_cutoffs and c >= first_day + timedelta(days=ps.min_history_days):
        out.append(c)
        c -= timedelta(days=ps.cutoff_step_days)
    return out


def _member(ids: pd.Series, among: pd.Series | set[str]) -> np.ndarray:
    """Which of ``ids`` are in ``among`` (customer ids, never null), as a bool array.
    pyarrow's is_in: pandas' isin on its Arrow-backed strings loops in Python."""
    values = pa.array(list(among) if isinstance(among, set) else among, type=pa.string())
    return pc.is_in(pa.array(ids, type=pa.string()), value_set=values).to_numpy(
        zero_copy_only=False
    )


class _History:
    """Point-in-time training populations, features and labels per cut-off.

    Who can be a training row at a cut-off (``population``) is one cheap query;
    features are computed only for the rows a caller keeps (a hash sample of the
    stacked history, a holdout), so a run's cost follows its training rows, not
    customers x cut-offs. Each cut-off's features are queried once per run and
    dropped (``forget``) when its target is trained."""

    def __init__(self, con: Any, refused_now: set[str]) -> None:
        self.con = con
        self.refused_now = refused_now
        self._population: dict[date, pd.DataFrame] = {}
        self._features: dict[date, pd.DataFrame] = {}
        self._complete: set[date] = set()  # cut-offs whose features cover every customer
        self._labels: dict[tuple[date, int], pd.DataFrame] = {}

    def features(self, cutoff: date, customers: pd.Series | None = None) -> pd.DataFrame:
        """Features at ``cutoff`` of every known customer, or of ``customers`` (sorted
        by customer_id either way)."""
        have = self._features.get(cutoff)
        if customers is None:
            if cutoff not in self._complete:
                have = features_at(self.con, cutoff)
                self._features[cutoff] = have
                self._complete.add(cutoff)
            return have
        if cutoff not in self._complete:
            missing = (
                customers if have is None else customers[~_member(customers, have["customer_id"])]
            )
            if len(missing) or have is None:
                new = features_at(self.con, cutoff, missing)
                have = new if have is None else pd.concat([have, new], ignore_index=True)
                have = have.sort_values("customer_id", kind="stable").reset_index(drop=True)
                self._features[cutoff] = have
        return have[_member(have["customer_id"], customers)]

    def population(self, target: str, cutoff: date) -> pd.DataFrame:
        """Who can be a ``target`` row at ``cutoff`` (customer_id, sorted, and the fixed
        hash of customer|cutoff that samples stacked rows): customers who had not
        refused consent then (point in time) and have not refused it since (governance);
        for churn, those who had bought by then."""
        if cutoff not in self._population:
            pop = population_at(self.con, cutoff)
            # Unknown consent (NA) is profiled, like in the marts; only an explicit false is not.
            keep = ~pop["refused_consent"].to_numpy(dtype=bool)
            keep &= ~_member(pop["customer_id"], self.refused_now)
            pop = pop[keep].drop(columns="refused_consent").reset_index(drop=True)
            pop["u"] = mdl.stable_fraction(pop["customer_id"] + "|" + str(cutoff))
            self._population[cutoff] = pop
        pop = self._population[cutoff]
        return pop[pop["is_buyer"].to_numpy(dtype=bool)] if target == "churn" else pop

    def rows(
        self, target: str, cutoff: date, horizon: int, keep: np.ndarray | None = None
    ) -> pd.DataFrame:
        """Labelled training rows at ``cutoff``: the population's (or its ``keep`` mask's)."""
        pop = self.population(target, cutoff)
        if keep is None or (len(keep) > 0 and keep.mean() > FULL_QUERY_SHARE):
            df = self.features(cutoff)
            ids = pop["customer_id"] if keep is None else pop["customer_id"][keep]
            df = df[_member(df["customer_id"], ids)]
        else:
            df = self.features(cutoff, pop["customer_id"][keep])
        key = (cutoff, horizon)
        if key not in self._labels:
            self._labels[key] = labels_after(self.con, cutoff, horizon)
        bought = set(self._labels[key]["customer_id"])
        ordered = _member(df["customer_id"], bought)
        return df.assign(
            label=(ordered if target == "purchase" else ~ordered).astype(int), cutoff=cutoff
        )

    def stacked(self, target: str, cutoffs: list[date], horizon: int, cap: int) -> pd.DataFrame:
        if not cutoffs:
            return pd.DataFrame(columns=["customer_id", *FEATURE_NAMES, "label", "cutoff"])
        total = sum(len(self.population(target, c)) for c in cutoffs)
        if total <= cap:
            parts = [self.rows(target, c, horizon) for c in cutoffs]
            return pd.concat(parts, ignore_index=True)
        # Fixed hash of (customer, cut-off): the same sample on every rerun, drawn
        # before any feature is computed.
        parts = [
            self.rows(target, c, horizon, self.population(target, c)["u"].to_numpy() < cap / total)
            for c in cutoffs
        ]
        return pd.concat(parts, ignore_index=True)

    def forget(self, cutoffs: list[date]) -> None:
        """Free what was computed for these cut-offs (a later call recomputes it)."""
        for c in cutoffs:
            self._features.pop(c, None)
            self._population.pop(c, None)
            self._complete.discard(c)
        self._labels = {k: v for k, v in self._labels.items() if k[0] not in cutoffs}


def _train_and_backtest(
    hist: _History,
    target: str,
    as_of: date,
    first_day: date | None,
    horizon: int,
    ps: PredictionSettings,
) -> dict[str, Any]:
    """Backtest (model vs baseline), pick the published method, fit it on all cut-offs."""
    cutoffs = plan_cutoffs(as_of, first_day, horizon, ps)
    notes: list[str] = []
    bt: dict[str, Any] | None = None
    bt_cutoff: date | None = None
    kind: str | None = None
    if cutoffs:
        bt_cutoff = cutoffs[0]
        # Training cut-offs whose windows closed by the test cut-off: the final model's
        # own older cut-offs when there are any (their features are computed once).
        earlier = [c for c in cutoffs if c <= bt_cutoff - timedelta(days=horizon)]
        earlier = earlier or plan_cutoffs(bt_cutoff, first_day, horizon, ps)
        train = hist.stacked(target, earlier, horizon, ps.max_train_rows)
        if mdl.trainable(train["label"].to_numpy(dtype=int)):
            kind = "time_split"
            test = hist.rows(target, bt_cutoff, horizon)
        else:
            # Not enough history for a training window that ends before the test
            # cut-off: hold out a fixed quarter of customers instead (weaker: same period).
            all_rows = hist.stacked(target, cutoffs, horizon, ps.max_train_rows)
            held = mdl.stable_fraction(all_rows["customer_id"]) < HOLDOUT_SHARE
            train = all_rows[~held].reset_index(drop=True)
            pop = hist.population(target, bt_cutoff)
            test = hist.rows(
                target, bt_cutoff, horizon, mdl.stable_fraction(pop["customer_id"]) < HOLDOUT_SHARE
            )
            kind = "customer_holdout"
        fitted_bt = mdl.fit_target(target, train, horizon)
        if fitted_bt.method == "rate_heuristic" or len(test) == 0:
            notes += fitted_bt.notes or [f"{target}: no backtest rows"]
            kind = None
        else:
            bt = mdl.backtest(fitted_bt, test.reset_index(drop=True)) | {
                "cutoff": str(bt_cutoff),
                "kind": kind,
                "train_cutoffs": [str(c) for c in (earlier if kind == "time_split" else cutoffs)],
                "train_rows": len(train),
            }
            notes += fitted_bt.notes
    beat, sentence = mdl.verdict(target, bt)
    train_all = hist.stacked(target, cutoffs, horizon, ps.max_train_rows)
    hist.forget([*cutoffs, *earlier] if cutoffs else [])
    # The model is published only when it beat the baseline (higher ROC AUC and a
    # Brier score no worse); otherwise the simpler calibrated baseline is.
    use_model = beat is True
    fitted = mdl.fit_target(target, train_all, horizon, with_model=use_model)
    notes += fitted.notes
    if fitted.method == "gradient_boosting":
        sentence += " Published: the calibrated gradient-boosting model."
    elif fitted.method == "calibrated_baseline":
        why = "the model did not beat it" if bt and "model" in bt else "no model backtest"
        sentence += f" Published: the calibrated RFM baseline ({why})."
    else:
        sentence += " Published: the rate heuristic (documented fallback, no labelled history)."
    return {
        "fitted": fitted,
        "cutoffs": cutoffs,
        "backtest": bt,
        "backtest_cutoff": bt_cutoff,
        "backtest_kind": kind,
        "beats_baseline": beat,
        "verdict": sentence,
        "notes": notes,
    }


def _train_both(
    hist: _History, as_of: date, first_day: date | None, ps: PredictionSettings
) -> dict[str, dict[str, Any]]:
    return {
        "purchase": _train_and_backtest(
            hist, "purchase", as_of, first_day, PURCHASE_HORIZON_DAYS, ps
        ),
        "churn": _train_and_backtest(hist, "churn", as_of, first_day, ps.churn_window_days, ps),
    }


def _deciles(values: pd.Series) -> pd.Series:
    """1 = the top 10 % of values; null where the value is null."""
    ranks = values.rank(ascending=False, method="first")
    n = values.notna().sum()
    return np.ceil(ranks * 10 / max(n, 1)).clip(1, 10).astype("Int64")


def _score(
    con: Any,
    hist: _History,
    as_of: date,
    purchase: mdl.FittedTarget,
    churn: mdl.FittedTarget,
    settings: Settings,
) -> tuple[pd.DataFrame, int]:
    profiled = con.execute(
        "select customer_id, orders_count > 0 as is_buyer_in_profile from marts.customer_profiles "
        "where marketing_consent is distinct from false order by customer_id"
    ).df()
    n_excluded = con.execute(
        "select count(*) from marts.customer_profiles where marketing_consent = false"
    ).fetchall()[0][0]
    feats = hist.features(as_of).drop(columns=["marketing_consent"])
    X = profiled.merge(feats, on="customer_id", how="left")
    # "Buyers" are the profile's (DESIGN.md section 6: churn for buyers, null for
    # the rest), which may count an order the point-in-time history does not
    # see yet (dated after the as-of date, or completed and refunded after it).
    buyer = X.pop("is_buyer_in_profile").fillna(False).to_numpy(dtype=bool)
    # A profile without history by as_of (only possible in a backfill): a new customer.
    counts = [c for c in FEATURE_NAMES if not c.startswith(("recency", "days_", "avg_", "mean_"))]
    X[counts] = X[counts].fillna(0.0)
    # Churn risk is published for buyers only: only they are scored for it. On
    # SEGMENTS_ENGINE=spark the models score in Spark (predictions/scoring.py).
    p, c = score_customers(PredictionScorer(purchase, churn), X, buyer, settings)
    aov = X["avg_order_value"]
    typical = float(aov.median()) if aov.notna().any() else 0.0
    out = pd.DataFrame(
        {
            "customer_id": X["customer_id"],
            "purchase_probability_30d": np.clip(p, 0.0, 1.0),
            "churn_probability": np.where(buyer, np.clip(c, 0.0, 1.0), np.nan),
            "expected_revenue_30d": np.clip(p, 0.0, 1.0) * aov.fillna(typical).to_numpy(),
            "is_buyer": buyer,
        }
    )
    out["churn_probability"] = out["churn_probability"].astype("Float64")
    out.loc[~buyer, "churn_probability"] = pd.NA
    out["purchase_decile"] = _deciles(out["purchase_probability_30d"])
    out["churn_decile"] = _deciles(out["churn_probability"].astype(float))
    return out, int(n_excluded)


def _calibration_of(fitted: mdl.FittedTarget) -> dict[str, Any]:
    """How the published probabilities were calibrated (prediction_runs.calibration)."""
    if fitted.method == "gradient_boosting":
        return dict(fitted.calibration)
    if fitted.method == "calibrated_baseline":
        return dict(fitted.baseline_calibration)
    return {"method": "none", "mapping": "rate heuristic", "cutoff": None, "rows": 0}


def _metric(bt: dict[str, Any] | None, who: str, name: str) -> float | None:
    return (bt or {}).get(who, {}).get(name)


def _save_bundle(settings: Settings, model_version: str, bundle: dict[str, Any]) -> Path:
    """One file per model version; older files are removed: they were fitted on
    customers who may have been erased since (scores are published from this one)."""
    folder = settings.models_dir / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model_version}.joblib"
    tmp = path.with_name(path.name + ".tmp")
    joblib.dump(bundle, tmp, compress=3)
    os.replace(tmp, path)
    for old in folder.glob("*.joblib"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def _training_settings(ps: PredictionSettings) -> PredictionSettings:
    """The settings a model is fitted with (retrain_days only says when to refit)."""
    return replace(ps, retrain_days=0)


def _reusable_model(
    con: Any, as_of: date, ps: PredictionSettings
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The latest training run and its saved model, if this run may score with it
    instead of retraining: the model is at most ``retrain_days`` older than ``as_of``
    (and not newer), was fitted by this code with these settings, its file still
    exists (erasure deletes model files) and no erasure was processed after it was
    trained. Anything else (a backfill to an earlier date, new code or settings, a
    missing or unreadable file) retrains."""
    if ps.retrain_days <= 0:
        return None
    run = store.latest_training_run(con)
    if run is None or not run["model_path"]:
        return None
    age = (as_of - run["as_of_date"]).days
    if not 0 <= age < ps.retrain_days:
        return None
    erased_at = None
    if table_exists(con, "audit", "erasure_log"):
        erased_at = con.execute("select max(processed_at) from audit.erasure_log").fetchall()[0][0]
    if erased_at is not None and erased_at >= run["trained_at"]:
        return None
    path = Path(run["model_path"])
    if not path.is_file():
        return None
    try:
        bundle = joblib.load(path)
    except Exception as exc:  # a damaged file is retrained, not a failed run
        log.warning("saved prediction model %s unreadable (%s): retraining", path, exc)
        return None
    if (
        bundle.get("model_version") != run["model_version"]
        or bundle.get("code_digest") != _code_digest()
        or bundle.get("features") != list(FEATURE_NAMES)
        or _training_settings(bundle.get("settings", ps)) != _training_settings(ps)
    ):
        return None
    return run, bundle


def _score_with_saved_model(
    con: Any,
    hist: _History,
    as_of: date,
    trained: dict[str, Any],
    bundle: dict[str, Any],
    *,
    model_version: str,
    run_id: str,
    scored_at: datetime,
    fingerprint: str,
    ps: PredictionSettings,
    settings: Settings,
    t0: float,
) -> dict[str, Any]:
    """Score today's customers with a saved model and record a ``score`` run: the
    model's training facts (cut-offs, backtest, calibration) are the training run's;
    what was scored, when and as of which date are this run's."""
    n_profiles = len(hist.features(as_of))
    threads = 1 if n_profiles < SMALL_DATA_ROWS else max(1, settings.duckdb_threads)
    with threadpool_limits(limits=threads):
        scores, n_excluded = _score(
            con, hist, as_of, bundle["purchase"], bundle["churn"], settings
        )
    scores["model_version"] = model_version
    scores["as_of_date"] = as_of
    scores["scored_at"] = scored_at
    keep = dict(trained)  # store.latest_training_run decoded its json columns
    note = (
        f"Scored with the model of {trained['model_version']} (trained as of "
        f"{trained['as_of_date']}; retrained every {ps.retrain_days} days, after an "
        "erasure, or when code or settings change)."
    )
    row = keep | {
        "model_version": model_version,
        "run_id": run_id,
        "as_of_date": as_of,
        "verdict": f"{note} {trained['verdict']}",
        "n_scored": len(scores),
        "n_excluded": n_excluded,
        "mean_purchase_probability": (
            float(scores["purchase_probability_30d"].mean()) if len(scores) else 0.0
        ),
        "duration_seconds": round(time.perf_counter() - t0, 3),
        "input_fingerprint": fingerprint,
        "run_kind": "score",
        "fitted_model_version": trained["model_version"],
        "scored_at": scored_at,
    }
    store.write_predictions(con, scores, row)
    log.info("predictions %s: %s", model_version, note)
    return row


def predict(*, run_id: str, as_of: str, settings: Settings | None = None) -> PredictionResult:
    """Train on the warehouse's history as of earlier cut-offs, backtest, score the
    profiled customers at ``as_of`` and write segments.customer_predictions /
    segments.prediction_runs in one transaction (plus a model file and report).
    Within ``retrain_days`` of the last training run, score with its saved model
    instead (see :func:`_reusable_model`)."""
    t0 = time.perf_counter()
    settings = settings or get_settings()
    ps = settings.predictions
    as_of_date = date.fromisoformat(as_of[:10])
    trained_at = datetime.now(UTC)
    digest = hashlib.sha256(f"{run_id}|{trained_at.isoformat()}".encode()).hexdigest()[:10]
    model_version = f"pred-{as_of_date:%Y%m%d}-{digest}"
    con = connect(settings=settings)
    try:
        ensure_schemas(con)
        store.ensure_prediction_tables(con)
        fingerprint = input_fingerprint(con, as_of_date, ps)
        latest = store.latest_run(con)
        if latest is not None and latest["input_fingerprint"] == fingerprint:
            # Same day, same settings, same history: a rerun changes nothing.
            log.info("predictions unchanged (inputs as for %s)", latest["model_version"])
            return _result_from_run(latest, t0)
        refused_now = {
            r[0]
            for r in con.execute(
                "select customer_id from marts.customer_profiles where marketing_consent = false"
            ).fetchall()
        }
        hist = _History(con, refused_now)
        saved = _reusable_model(con, as_of_date, ps)
        if saved is not None:
            trained_run, saved_bundle = saved
            row = _score_with_saved_model(
                con, hist, as_of_date, trained_run, saved_bundle,
                model_version=model_version, run_id=run_id, scored_at=trained_at,
                fingerprint=fingerprint, ps=ps, settings=settings, t0=t0,
            )  # fmt: skip
            report = _write_report(con, model_version, settings)
            return _result_from_run(row, t0, report)
        bounds = history_bounds(con)
        # Cut-offs need history before them: of orders, and of sessions when there are
        # any (an event history shorter than the order history would otherwise train
        # on cut-offs whose session features are all zero, unlike today's).
        first_day = (
            max(d for d in (bounds.first_day, bounds.first_session_day) if d)
            if (bounds.first_day)
            else None
        )
        # OpenMP threads pay off on big training sets only; on small ones (and on a busy
        # machine) their synchronisation costs more than the work.
        n_profiles = len(hist.features(as_of_date))
        threads = 1 if n_profiles < SMALL_DATA_ROWS else max(1, settings.duckdb_threads)
        with threadpool_limits(limits=threads):
            res = _train_both(hist, as_of_date, first_day, ps)
            pur, chu = res["purchase"], res["churn"]
            scores, n_excluded = _score(
                con, hist, as_of_date, pur["fitted"], chu["fitted"], settings
            )
        scores["model_version"] = model_version
        scores["as_of_date"] = as_of_date
        scores["scored_at"] = trained_at
        bundle = {
            "model_version": model_version,
            "as_of_date": str(as_of_date),
            "features": list(FEATURE_NAMES),
            "purchase": pur["fitted"],
            "churn": chu["fitted"],
            "settings": ps,
            "code_digest": _code_digest(),
        }
        model_path = _save_bundle(settings, model_version, bundle)
        pbt, cbt = pur["backtest"], chu["backtest"]
        windows = {
            t: [[str(c), str(c + timedelta(days=h))] for c in res[t]["cutoffs"]]
            for t, h in (("purchase", PURCHASE_HORIZON_DAYS), ("churn", ps.churn_window_days))
        }
        mean_p = float(scores["purchase_probability_30d"].mean()) if len(scores) else 0.0
        verdict = " ".join([pur["verdict"], chu["verdict"], *pur["notes"], *chu["notes"]])
        row = {
            "model_version": model_version,
            "run_id": run_id,
            "trained_at": trained_at,
            "as_of_date": as_of_date,
            "horizon_days": PURCHASE_HORIZON_DAYS,
            "churn_window_days": ps.churn_window_days,
            "purchase_method": pur["fitted"].method,
            "churn_method": chu["fitted"].method,
            "training_cutoffs": {t: [str(c) for c in res[t]["cutoffs"]] for t in res},
            "label_windows": windows,
            "calibration": {t: _calibration_of(res[t]["fitted"]) for t in res},
            "rows_trained": pur["fitted"].rows_trained,
            "churn_rows_trained": chu["fitted"].rows_trained,
            "backtest_cutoff": pur["backtest_cutoff"] if pbt else None,
            "backtest_kind": pur["backtest_kind"],
            "roc_auc": _metric(pbt, "model", "roc_auc"),
            "pr_auc": _metric(pbt, "model", "pr_auc"),
            "brier_score": _metric(pbt, "model", "brier_score"),
            "lift_top_decile": _metric(pbt, "model", "lift_top_decile"),
            "baseline_roc_auc": _metric(pbt, "baseline", "roc_auc"),
            "baseline_pr_auc": _metric(pbt, "baseline", "pr_auc"),
            "baseline_brier_score": _metric(pbt, "baseline", "brier_score"),
            "baseline_lift_top_decile": _metric(pbt, "baseline", "lift_top_decile"),
            "churn_roc_auc": _metric(cbt, "model", "roc_auc"),
            "churn_brier_score": _metric(cbt, "model", "brier_score"),
            "churn_baseline_roc_auc": _metric(cbt, "baseline", "roc_auc"),
            "churn_baseline_brier_score": _metric(cbt, "baseline", "brier_score"),
            "beats_baseline": pur["beats_baseline"],
            "churn_beats_baseline": chu["beats_baseline"],
            "verdict": verdict,
            "backtest": {"purchase": pbt, "churn": cbt},
            "features": [{"name": n, "description": d} for n, d in FEATURES],
            "n_scored": len(scores),
            "n_excluded": n_excluded,
            "mean_purchase_probability": mean_p,
            "model_path": str(model_path),
            "duration_seconds": round(time.perf_counter() - t0, 3),
            "input_fingerprint": fingerprint,
            "run_kind": "train",
            "fitted_model_version": model_version,
            "scored_at": trained_at,
        }
        store.write_predictions(con, scores, row)
        log.info("predictions %s: %s", model_version, verdict)
        report = _write_report(con, model_version, settings)
    finally:
        con.close()
    return _result_from_run(row, t0, report)


# What a prediction run depends on: the history it trains on (order and CRM
# versions, sessions), who is profiled with which consent, and the customers'
# identities. A hash per table over all its rows (DuckDB's vectorised hash).
_INPUT_SUMMARY_SQL = """
select
    (select count(*) || '|' || coalesce(sum(hash(o))::varchar, '')
     from staging.stg_transactions__orders o),
    (select count(*) || '|' || coalesce(sum(hash(c))::varchar, '')
     from staging.stg_crm__contacts c),
    (select count(*) || '|' || coalesce(sum(hash(s))::varchar, '') from marts.fct_sessions s),
    (select count(*) || '|' || coalesce(sum(hash(customer_id, marketing_consent))::varchar, '')
     from marts.customer_profiles)
"""


def _code_digest() -> str:
    """This package's source: a changed model or feature definition is a new run."""
    package = Path(__file__).parent
    return code_digest(package, sorted(p.name for p in package.glob("*.py")))


def input_fingerprint(con: Any, as_of: date, ps: PredictionSettings) -> str:
    summary = con.execute(_INPUT_SUMMARY_SQL).fetchone()
    parts = [str(as_of), repr(ps), mdl.CALIBRATION, _code_digest(), *map(str, summary)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _result_from_run(
    run: dict[str, Any], t0: float, report: Path | None = None
) -> PredictionResult:
    """The task's result from a prediction_runs row: this run's, just written (with
    its report), or an earlier run's whose inputs equal this one's (read back)."""
    cutoffs = run["training_cutoffs"]  # a dict: written here, or decoded by store
    return PredictionResult(
        model_version=run["model_version"],
        run_id=run["run_id"],
        as_of_date=str(run["as_of_date"]),
        purchase_method=run["purchase_method"],
        churn_method=run["churn_method"],
        n_scored=int(run["n_scored"]),
        n_excluded=int(run["n_excluded"]),
        rows_trained=int(run["rows_trained"]),
        churn_rows_trained=int(run["churn_rows_trained"]),
        training_cutoffs=list(cutoffs.get("purchase", [])),
        backtest_cutoff=str(run["backtest_cutoff"]) if run["backtest_cutoff"] else None,
        backtest_kind=run["backtest_kind"],
        roc_auc=run["roc_auc"],
        baseline_roc_auc=run["baseline_roc_auc"],
        brier_score=run["brier_score"],
        beats_baseline=run["beats_baseline"],
        mean_purchase_probability=float(run["mean_purchase_probability"] or 0.0),
        verdict=run["verdict"],
        model_path=run["model_path"] or "",
        report_path=str(report) if report else None,
        duration_seconds=round(time.perf_counter() - t0, 3),
        run_kind=run.get("run_kind") or "train",
        fitted_model_version=run.get("fitted_model_version") or run["model_version"],
    )


def _write_report(con: Any, model_version: str, settings: Settings) -> Path | None:
    from segment_warehouse.predictions import report  # matplotlib: only when needed

    return report.write_report(con, model_version, settings=settings)
