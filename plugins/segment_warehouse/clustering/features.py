"""Feature preparation: consent filter, imputation, log1p, share smoothing, scaling.

The feature list is fixed in code (not inferred from skewness per run) so that
every run transforms the same column the same way; otherwise centroids of two
runs would live in different spaces and stable segment ids would be guesswork.

Two kinds of feature are scaled differently (segkm-2):

* log1p counts/amounts: median / IQR (``RobustScaler``), std when the IQR is 0;
* bounded 0..1 shares: median / standard deviation, floored at
  ``SHARE_MIN_SCALE``. The IQR is the wrong yardstick for a share: most shares
  are zero-inflated or bimodal, so the IQR is either ~0 (a 0.4 discount share
  became 16 units and dominated every distance) or the full 0..1 range (a
  weekend-only buyer moved by barely one unit and merged with others).

Shares derived from few events are mostly noise (one order is "100 % weekend"
with probability 2/7), so they are smoothed towards a neutral prior with a
pseudo-count (``SHARE_PRIOR_WEIGHT`` events) before scaling: a customer needs
several consistent events to look extreme. ``raw`` keeps the unsmoothed values.

A customer who never ordered has no order value: it is imputed with the buyers'
median (segkm-3), so "no order yet" is carried by frequency, revenue and
recency alone. Imputing 0 put every non-buyer ~4 log units from every buyer on
this one axis, and k-means spent clusters on splitting one-order browsers from
no-order browsers instead of on behaviour (docs/segments.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from sklearn.preprocessing import RobustScaler

# Bump when preparation or model logic changes: it is part of the input
# fingerprint, so a new version reclusters even if the data did not change.
ALGORITHM_VERSION = "segkm-3"
SOURCE_TABLE = "marts.customer_features"

# Share of the week that is Sat/Sun: the neutral value when we know nothing.
_NEUTRAL_WEEKEND_SHARE = 2 / 7
# Pseudo-count of the share smoothing: (n * share + w * prior) / (n + w).
SHARE_PRIOR_WEIGHT = 1.0
# Smallest scale of a share: differences below ~0.1 are within the resolution
# of a handful of events and must not be blown up by a tiny spread.
SHARE_MIN_SCALE = 0.1


@dataclass(frozen=True)
class FeatureSpec:
    """One clustering feature, as recorded in ``segment_runs.features``."""

    name: str
    transform: str  # "log1p" for skewed counts/amounts, "identity" for 0..1 shares
    impute: str  # human-readable imputation rule
    purchase: bool  # only meaningful for buyers: profiled against buyers only
    label: str  # analyst-facing wording in reports and traits
    scaling: str = "robust"  # "robust" (median/IQR) or "share" (median/std, floored)


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "recency_days",
        "log1p",
        "never ordered -> max(tenure_days, longest observed recency)",
        True,
        "days since last order",
    ),
    FeatureSpec("frequency", "log1p", "null -> 0", True, "orders"),
    FeatureSpec("monetary", "log1p", "null -> 0", True, "lifetime revenue"),
    FeatureSpec(
        "avg_order_value", "log1p", "never ordered -> median of buyers", True, "avg order value"
    ),
    FeatureSpec(
        "discount_share",
        "identity",
        "null -> 0; smoothed: orders * share / (orders + 1), prior 0",
        True,
        "discount share",
        "share",
    ),
    FeatureSpec("sessions_30d", "log1p", "null -> 0", False, "sessions (30d)"),
    FeatureSpec("sessions_90d", "log1p", "null -> 0", False, "sessions (90d)"),
    FeatureSpec("page_views_30d", "log1p", "null -> 0", False, "page views (30d)"),
    FeatureSpec("page_views_90d", "log1p", "null -> 0", False, "page views (90d)"),
    FeatureSpec("mobile_share", "identity", "null -> 0", False, "mobile share", "share"),
    FeatureSpec(
        "weekend_share",
        "identity",
        "null -> 2/7 (uniform week); smoothed towards 2/7 with 1 pseudo-event "
        "(events = orders, else sessions_90d)",
        False,
        "weekend share",
        "share",
    ),
    FeatureSpec("cart_adds_without_purchase", "log1p", "null -> 0", False, "abandoned cart adds"),
    FeatureSpec("tenure_days", "log1p", "null -> 0", False, "tenure (days)"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
INPUT_COLUMNS: tuple[str, ...] = ("customer_id", "marketing_consent", *FEATURE_NAMES)
_SHARES = {f.name for f in FEATURES if f.scaling == "share"}


class FeatureInputError(RuntimeError):
    """marts.customer_features is missing or breaks its contract."""


@dataclass
class PreparedFeatures:
    """Profiled customers (consent not false), sorted by customer_id."""

    customer_ids: np.ndarray  # object array of str
    raw: np.ndarray  # clipped input values, NaN kept (for analyst-facing means)
    transformed: np.ndarray  # imputed + log1p: the "unscaled" model space
    buyer: np.ndarray  # bool: at least one completed order
    n_excluded: int
    # The imputation values used (fitted on these rows unless given): scoring a
    # batch must impute with the whole population's, not the batch's own.
    imputation: Imputation | None = None


@dataclass(frozen=True)
class Imputation:
    """Population statistics the imputation uses (part of the fitted transform)."""

    longest_recency: float  # never-ordered recency: at least this lapsed
    buyer_median_aov: float  # never-ordered order value: the buyers' median


def load_customer_features(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Read the mart sorted by customer_id (stable row order = deterministic fits)."""
    try:
        cols = {
            r[0]
            for r in con.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'marts' and table_name = 'customer_features'"
            ).fetchall()
        }
    except duckdb.Error as exc:  # pragma: no cover - catalog always exists
        raise FeatureInputError(str(exc)) from exc
    if not cols:
        raise FeatureInputError(f"{SOURCE_TABLE} does not exist; run dbt build first")
    missing = [c for c in INPUT_COLUMNS if c not in cols]
    if missing:
        raise FeatureInputError(f"{SOURCE_TABLE} lacks columns: {', '.join(missing)}")
    # Rounded: parallel floating-point aggregation upstream can change the last
    # bits between identical builds, which must not count as "inputs changed".
    select = ", ".join(
        ["customer_id::varchar as customer_id", "marketing_consent::boolean as marketing_consent"]
        + [f"round({c}::double, 6) as {c}" for c in FEATURE_NAMES]
    )
    df = con.execute(f"select {select} from {SOURCE_TABLE} order by customer_id").df()
    if df["customer_id"].isna().any():
        raise FeatureInputError(f"{SOURCE_TABLE} has null customer_id")
    dupes = int(df["customer_id"].duplicated().sum())
    if dupes:
        raise FeatureInputError(f"{SOURCE_TABLE} has {dupes} duplicate customer_id rows")
    return df.reset_index(drop=True)


def input_fingerprint(df: pd.DataFrame, params: dict[str, Any]) -> str:
    """sha256 over every input row (incl. consent) plus everything that shapes the model.

    ``hash_pandas_object`` uses a fixed key, so the hash is reproducible across
    processes; rows are already sorted by customer_id so order is canonical.
    """
    digest = hashlib.sha256()
    row_hashes = pd.util.hash_pandas_object(df[list(INPUT_COLUMNS)], index=False)
    digest.update(np.ascontiguousarray(row_hashes.to_numpy(dtype=np.uint64)).tobytes())
    meta = {
        "algorithm_version": ALGORITHM_VERSION,
        "features": [asdict(f) for f in FEATURES],
        **params,
    }
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def prepare_features(df: pd.DataFrame, imputation: Imputation | None = None) -> PreparedFeatures:
    """Drop consent=false, clip to valid ranges, impute, log1p the skewed columns.

    ``imputation``: the population's statistics when ``df`` is a batch of it
    (scoring); by default they are computed from ``df`` itself (fitting)."""
    consent = df["marketing_consent"]
    # Only an explicit "false" excludes; null means unknown and is profiled.
    excluded = consent.eq(False).fillna(False).to_numpy(dtype=bool)
    kept = df.loc[~excluded]
    raw = kept[list(FEATURE_NAMES)].to_numpy(dtype=np.float64, na_value=np.nan)
    # Bad upstream values (negative counts, shares > 1) must not dominate a centroid.
    raw = np.clip(raw, 0.0, None)
    for j, name in enumerate(FEATURE_NAMES):
        if name in _SHARES:
            raw[:, j] = np.clip(raw[:, j], 0.0, 1.0)

    filled = raw.copy()
    col = {name: j for j, name in enumerate(FEATURE_NAMES)}
    frequency = np.nan_to_num(raw[:, col["frequency"]], nan=0.0)
    buyer = frequency > 0
    tenure = np.nan_to_num(raw[:, col["tenure_days"]], nan=0.0)
    recency = raw[:, col["recency_days"]]
    aov = raw[:, col["avg_order_value"]]
    if imputation is None:
        observed = recency[~np.isnan(recency)]
        bought = aov[buyer & ~np.isnan(aov)]
        imputation = Imputation(
            longest_recency=float(observed.max()) if observed.size else 0.0,
            buyer_median_aov=float(np.median(bought)) if bought.size else 0.0,
        )
    # Never-ordered: "at least as long ago as the most lapsed buyer", so a
    # prospect never looks more recent than an actual customer.
    filled[:, col["recency_days"]] = np.where(
        np.isnan(recency), np.maximum(tenure, imputation.longest_recency), recency
    )
    filled[:, col["avg_order_value"]] = np.where(
        buyer & ~np.isnan(aov), aov, imputation.buyer_median_aov
    )
    filled[:, col["weekend_share"]] = np.nan_to_num(
        raw[:, col["weekend_share"]], nan=_NEUTRAL_WEEKEND_SHARE
    )
    filled = np.nan_to_num(filled, nan=0.0)

    # Few events make a share extreme by chance: one order is 100 % weekend
    # with probability 2/7. Smooth towards the neutral value with a pseudo-count,
    # the evidence being the events the share was computed from (orders; for the
    # weekend share of a non-buyer, sessions, of which sessions_90d is a lower bound).
    sessions = np.nan_to_num(raw[:, col["sessions_90d"]], nan=0.0)
    for name, events, prior in (
        ("weekend_share", np.where(buyer, frequency, sessions), _NEUTRAL_WEEKEND_SHARE),
        ("discount_share", frequency, 0.0),
    ):
        j = col[name]
        filled[:, j] = (events * filled[:, j] + SHARE_PRIOR_WEIGHT * prior) / (
            events + SHARE_PRIOR_WEIGHT
        )

    transformed = filled.copy()
    for j, spec in enumerate(FEATURES):
        if spec.transform == "log1p":
            transformed[:, j] = np.log1p(transformed[:, j])
    return PreparedFeatures(
        customer_ids=kept["customer_id"].to_numpy(dtype=object),
        raw=raw,
        transformed=transformed,
        buyer=buyer,
        n_excluded=int(excluded.sum()),
        imputation=imputation,
    )


def fit_scaler(transformed: np.ndarray) -> RobustScaler:
    """Median-centred; log features divided by the IQR, shares by a floored std.

    Log features: RobustScaler, but a zero IQR (sparse counts) falls back to
    the standard deviation, since sklearn would otherwise leave it unscaled.
    Shares (0..1): the IQR of a zero-inflated or bimodal share is ~0 or ~1 and
    would explode or squash it; the std (at least ``SHARE_MIN_SCALE``) gives
    a share a spread comparable to the log features.
    """
    scaler = RobustScaler().fit(transformed)
    q25, q75 = np.percentile(transformed, [25, 75], axis=0)
    std = transformed.std(axis=0)
    flat = (q75 - q25) <= 1e-12
    if flat.any():
        scaler.scale_[flat] = np.where(std[flat] > 1e-12, std[flat], 1.0)
    share = np.array([f.scaling == "share" for f in FEATURES])
    scaler.scale_[share] = np.maximum(std[share], SHARE_MIN_SCALE)
    return scaler


def feature_records(scaler: RobustScaler) -> list[dict[str, Any]]:
    """The run's feature list (JSON in segment_runs), incl. the scaler parameters.

    Storing center/scale lets the next run map these centroids into its own
    scaled space from the database alone, without loading the model file.
    """
    return [
        {**asdict(spec), "center": float(c), "scale": float(s)}
        for spec, c, s in zip(FEATURES, scaler.center_, scaler.scale_, strict=True)
    ]
