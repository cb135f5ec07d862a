"""Training, calibration, baseline and backtest of the two propensity models.

Targets (``horizon`` days after a cut-off day c, i.e. orders placed in (c, c + horizon]):

- ``purchase``: at least one completed order in the next 30 days (all customers);
- ``churn``: no completed order in the next N days (buyers only; N = churn window).

Model: scikit-learn's HistGradientBoostingClassifier ("never" - no recency for a
never-ordered customer - as a sentinel below every real value) inside
CalibratedClassifierCV (isotonic on big training sets, sigmoid on small ones),
folds grouped by customer so the same person at several cut-offs never sits on both sides of a fold.

Baseline: the classic RFM score (recency, frequency and monetary quintiles,
1-5 each, summed; 0 for recency/frequency/monetary of never-buyers), turned
into a probability by isotonic regression on the same training rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import GroupKFold

from segment_warehouse.predictions.features import FEATURE_NAMES

SEED = 0
MIN_CLASS_ROWS = 20  # fewer positives (or negatives) than this: no model, a fallback
ISOTONIC_MIN_ROWS = 5_000  # isotonic calibration overfits below this; sigmoid instead
BIG_TRAINING_ROWS = 50_000
# all_cutoffs: calibrators fitted on every cut-off's held-out rows (published);
# recent_window: on the newest label window only (temporal recalibration). Measured
# on held-back months of four data sets, the newest window did not calibrate the
# next month better (docs/predictions.md), so it is kept for comparisons only.
CALIBRATION = "all_cutoffs"
IMPORTANCE_SAMPLE = 5_000  # backtest rows used for permutation importance (a ranking)


def stable_fraction(ids: pd.Series) -> np.ndarray:
    """A customer's fixed pseudo-random number in [0, 1): sampling and holdouts
    that do not change between runs or with row order (pandas' vectorised,
    fixed-key SipHash of the id)."""
    hashed = pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy()
    return hashed.astype(np.float64) / 2.0**64


def rfm_score(df: pd.DataFrame) -> np.ndarray:
    """RFM score 0..15 within one cut-off: quintiles of -recency, frequency, monetary
    among buyers (1-5 each, summed); never-buyers score 0."""
    buyers = df["frequency"].to_numpy() > 0
    score = np.zeros(len(df), dtype=float)
    if buyers.any():
        sub = df.loc[buyers]
        for col, sign in (("recency_days", -1.0), ("frequency", 1.0), ("monetary", 1.0)):
            pct = (sign * sub[col].astype(float)).rank(pct=True, method="average").to_numpy()
            score[buyers] += np.ceil(pct * 5).clip(1, 5)
    return score


def _rfm_per_cutoff(train: pd.DataFrame) -> np.ndarray:
    """The RFM score of stacked rows, quintiles within each cut-off - as at scoring
    time, where they are taken within the one as-of population."""
    if "cutoff" not in train.columns:
        return rfm_score(train)
    score = np.zeros(len(train), dtype=float)
    for _, idx in train.groupby("cutoff", sort=False).indices.items():
        score[idx] = rfm_score(train.iloc[idx])
    return score


MISSING = -1.0  # "never" (no order / no session): below every real value of those features


def model_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns. Missing values become a sentinel rather than NaN:
    gradient boosting splits it off the same way, and a feature that is missing for
    every row of a fold (a short event history) no longer breaks the binning."""
    return df[list(FEATURE_NAMES)].astype(float).fillna(MISSING)


def _hgb() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        learning_rate=0.08,
        max_iter=150,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.15,
        n_iter_no_change=15,
        random_state=SEED,
    )


@dataclass
class FittedTarget:
    """One target's fitted model and baseline (what the model file holds)."""

    target: str
    method: str  # gradient_boosting | calibrated_baseline | rate_heuristic
    model: Any | None = None  # CalibratedClassifierCV
    baseline: IsotonicRegression | None = None
    rows_trained: int = 0
    positives: int = 0
    horizon_days: int = 30
    notes: list[str] = field(default_factory=list)
    # how the model's / baseline's probabilities were calibrated (method, cut-off, rows)
    calibration: dict[str, Any] = field(default_factory=dict)
    baseline_calibration: dict[str, Any] = field(default_factory=dict)

    def predict(
        self, X: pd.DataFrame, method: str | None = None, rfm: np.ndarray | None = None
    ) -> np.ndarray:
        """Probabilities of ``X``'s rows. ``rfm``: the rows' RFM scores when ``X`` is
        a batch of a bigger population (quintiles are taken within the population,
        so only the baseline needs them; every other method is row by row)."""
        method = method or self.method
        if method == "gradient_boosting" and self.model is not None:
            return self.model.predict_proba(model_matrix(X))[:, 1]
        if method == "calibrated_baseline" and self.baseline is not None:
            score = rfm_score(X) if rfm is None else np.asarray(rfm, dtype=float)
            return np.clip(self.baseline.predict(score), 0.0, 1.0)
        return rate_heuristic(X, self.target, self.horizon_days)

    @property
    def needs_rfm(self) -> bool:
        """Whether :meth:`predict` ranks within the population (the RFM baseline)."""
        return self.method == "calibrated_baseline" and self.baseline is not None


def rate_heuristic(X: pd.DataFrame, target: str, horizon_days: int) -> np.ndarray:
    """Fallback without labelled history: a Poisson purchase rate per customer,
    completed orders / days known (at least the horizon, so one order in a short
    history is not read as a daily habit). P(order in horizon) = 1 - exp(-rate * h)."""
    days = np.maximum(X["tenure_days"].to_numpy(dtype=float), float(horizon_days))
    rate = X["frequency"].to_numpy(dtype=float) / days
    p_order = 1.0 - np.exp(-rate * horizon_days)
    return p_order if target == "purchase" else 1.0 - p_order


def _class_counts(y: np.ndarray) -> tuple[int, int]:
    pos = int(y.sum())
    return pos, int(len(y) - pos)


def trainable(y: np.ndarray) -> bool:
    pos, neg = _class_counts(y)
    return pos >= MIN_CLASS_ROWS and neg >= MIN_CLASS_ROWS


def fit_target(
    target: str,
    train: pd.DataFrame,
    horizon_days: int,
    *,
    with_model: bool = True,
    calibration: str | None = None,
) -> FittedTarget:
    """Fit model + calibrated baseline on stacked rows (columns: features, label,
    customer_id). Too few rows of a class: the rate heuristic, recorded."""
    y = train["label"].to_numpy(dtype=int) if len(train) else np.zeros(0, dtype=int)
    fitted = FittedTarget(target=target, method="rate_heuristic", horizon_days=horizon_days)
    fitted.rows_trained, fitted.positives = len(y), int(y.sum())
    if not trainable(y):
        pos, neg = _class_counts(y)
        fitted.notes.append(
            f"{target}: {len(y)} labelled rows ({pos} positive, {neg} negative); need "
            f"{MIN_CLASS_ROWS} of each to train: scores from the rate heuristic"
        )
        return fitted
    how = calibration or CALIBRATION
    recent, why = _newest_window(train, y) if how == "recent_window" else (None, None)
    on = recent if recent is not None else np.ones(len(y), dtype=bool)
    # A high RFM score means likely to buy, i.e. unlikely to churn.
    fitted.baseline = IsotonicRegression(
        out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=target == "purchase"
    ).fit(_rfm_per_cutoff(train)[on], y[on])
    fitted.baseline_calibration = _described(train, on, recent is not None, why) | {
        "mapping": "isotonic of the RFM score"
    }
    fitted.method = "calibrated_baseline"
    if not with_model:
        return fitted
    X = model_matrix(train)
    groups = train["customer_id"].to_numpy()
    # Two folds on big sets: each boosting fit then sees half the rows, so calibration
    # costs about one fit on all of them; three below that, for steadier calibration.
    n_splits = min(2 if len(y) > BIG_TRAINING_ROWS else 3, len(np.unique(groups)))
    folds = [
        (tr, te)
        for tr, te in GroupKFold(n_splits=n_splits).split(X, y, groups)
        if len(np.unique(y[tr])) == 2
    ]
    if len(folds) < 2:
        fitted.notes.append(f"{target}: too few customers for grouped calibration folds")
        return fitted
    if recent is not None:
        narrowed = [(tr, te[recent[te]]) for tr, te in folds]
        if all(len(np.unique(y[te])) == 2 for _, te in narrowed):
            folds = narrowed
        else:
            recent, why = None, "a calibration fold of the newest window has one class"
    on = recent if recent is not None else np.ones(len(y), dtype=bool)
    fitted.calibration = _described(train, on, recent is not None, why)
    mapping = "isotonic" if fitted.calibration["rows"] >= ISOTONIC_MIN_ROWS else "sigmoid"
    fitted.calibration["mapping"] = mapping
    fitted.model = CalibratedClassifierCV(_hgb(), method=mapping, cv=folds).fit(X, y)
    fitted.method = "gradient_boosting"
    return fitted


def _newest_window(train: pd.DataFrame, y: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Rows of the newest cut-off, whose label window is the most recent complete one
    (None, and why, when it has too few rows of a class to calibrate on).

    Temporal recalibration: the boosting model learns to rank from every cut-off,
    but the probabilities' level is fitted on this window alone - in each grouped
    fold, the calibrator on the held-out customers' newest-window rows, the
    boosting model on the other customers' rows at every cut-off - so a purchase
    rate that drifts (an ageing cohort, a season, growth) is predicted at its
    latest level rather than at the history's average."""
    if "cutoff" not in train.columns or not len(train):
        return None, "no cut-off column"
    cut = train["cutoff"].to_numpy()
    newest = cut == cut.max()
    if not trainable(y[newest]):
        return None, f"the newest window ({cut.max()}) has too few rows of a class"
    return newest, None


def _described(
    train: pd.DataFrame, on: np.ndarray, recent: bool, why: str | None
) -> dict[str, Any]:
    """prediction_runs.calibration: which rows the probabilities were calibrated on."""
    out: dict[str, Any] = {
        "method": "recent_window" if recent else "all_cutoffs",
        "cutoff": str(train["cutoff"].to_numpy()[on].max()) if recent else None,
        "rows": int(on.sum()),
    }
    if why and not recent:
        out["note"] = f"not the newest window: {why}"
    return out


# --- backtest ------------------------------------------------------------------


def _safe(fn: Any, *args: Any) -> float | None:
    try:
        value = float(fn(*args))
    except ValueError:
        return None
    return None if math.isnan(value) else value


def lift_top_decile(y: np.ndarray, p: np.ndarray) -> float | None:
    """Positive rate among the 10 % highest scores / overall positive rate."""
    if len(y) < 10 or y.sum() == 0:
        return None
    top = np.argsort(-p, kind="stable")[: max(1, len(p) // 10)]
    return float(y[top].mean() / y.mean())


def score_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    two_classes = len(np.unique(y)) == 2
    frac_pos, mean_pred = (
        calibration_curve(y, p, n_bins=10, strategy="quantile") if two_classes else ([], [])
    )
    return {
        "roc_auc": _safe(roc_auc_score, y, p) if two_classes else None,
        "pr_auc": _safe(average_precision_score, y, p) if two_classes else None,
        "brier_score": _safe(brier_score_loss, y, p) if len(y) else None,
        "lift_top_decile": lift_top_decile(y, p),
        "mean_predicted": float(np.mean(p)) if len(p) else None,
        "observed_rate": float(np.mean(y)) if len(y) else None,
        "calibration_curve": {
            "mean_predicted": [float(v) for v in mean_pred],
            "observed": [float(v) for v in frac_pos],
        },
    }


def lift_curve(y: np.ndarray, p: np.ndarray) -> list[float]:
    """Positive rate per score decile (1 = highest) relative to the overall rate."""
    if len(y) < 10 or y.sum() == 0:
        return []
    order = np.argsort(-p, kind="stable")
    return [float(y[part].mean() / y.mean()) for part in np.array_split(order, 10)]


def backtest(
    fitted: FittedTarget, test: pd.DataFrame, *, importance: bool = True
) -> dict[str, Any]:
    """Model vs calibrated baseline on the backtest rows (features + label)."""
    y = test["label"].to_numpy(dtype=int)
    out: dict[str, Any] = {"rows": len(y), "positives": int(y.sum())}
    p_base = fitted.predict(test, "calibrated_baseline")
    out["baseline"] = score_metrics(y, p_base) | {"lift_curve": lift_curve(y, p_base)}
    if fitted.model is not None:
        p_model = fitted.predict(test, "gradient_boosting")
        out["model"] = score_metrics(y, p_model) | {"lift_curve": lift_curve(y, p_model)}
        if importance and len(np.unique(y)) == 2:
            out["feature_importance"] = _importance(fitted, test, y)
    return out


def _importance(fitted: FittedTarget, test: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    X = model_matrix(test)
    if len(X) > IMPORTANCE_SAMPLE:
        keep = np.sort(np.argsort(stable_fraction(test["customer_id"]))[:IMPORTANCE_SAMPLE])
        X, y = X.iloc[keep], y[keep]
    if len(np.unique(y)) < 2:
        return {}
    res = permutation_importance(
        fitted.model, X, y, scoring="roc_auc", n_repeats=3, random_state=SEED, n_jobs=1
    )
    return {
        name: float(v)
        for name, v in sorted(
            zip(FEATURE_NAMES, res.importances_mean, strict=True), key=lambda kv: -kv[1]
        )
    }


def verdict(target: str, bt: dict[str, Any] | None) -> tuple[bool | None, str]:
    """(model beat baseline?, plain-language sentence) from a backtest."""
    if not bt or "model" not in bt:
        return None, f"{target}: no backtest of a model (not enough labelled history)."
    m, b = bt["model"], bt["baseline"]
    if m["roc_auc"] is None or b["roc_auc"] is None:
        return None, f"{target}: the backtest window has a single outcome class; no AUC."
    beat = m["roc_auc"] > b["roc_auc"] and (m["brier_score"] or 1) <= (b["brier_score"] or 1)
    rel = "beat" if beat else "did NOT beat"
    return beat, (
        f"{target}: the gradient-boosting model {rel} the RFM baseline on the backtest "
        f"(ROC AUC {m['roc_auc']:.3f} vs {b['roc_auc']:.3f}, Brier {m['brier_score']:.4f} vs "
        f"{b['brier_score']:.4f}, top-decile lift {_f(m['lift_top_decile'])} vs "
        f"{_f(b['lift_top_decile'])})."
    )


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
