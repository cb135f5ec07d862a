"""Assigning every profiled customer to a cluster with a fitted model, on either engine.

:func:`score_batch` is the one definition of how a batch of
``marts.customer_features`` rows is scored: consent filter, imputation with the
population's statistics, log1p, the fitted scaler, the fitted k-means model.
With ``SEGMENTS_ENGINE=duckdb`` it runs once over the whole frame in this
process; with ``spark`` it runs in Spark's Python workers over Arrow batches of
the Spark build's ``marts.customer_features`` (:mod:`segment_warehouse.spark.scoring`),
the same fitted objects broadcast to them, so both engines give the same labels.
Fitting (scaler, k selection, k-means on a bounded sample) stays on the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from segment_warehouse.clustering.features import (
    FEATURE_NAMES,
    INPUT_COLUMNS,
    Imputation,
    PreparedFeatures,
    prepare_features,
)
from segment_warehouse.clustering.space import activity_mask

if TYPE_CHECKING:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.preprocessing import RobustScaler

    from segment_warehouse.config import Settings

# Output of score_batch: the customer, its k-means label (k: no activity, the
# fixed segment) and a hash of its model-space row, which lets the driver check
# that the engine scored the very rows it fitted and profiled.
SCORED_COLUMNS = ("customer_id", "label", "row_hash")
SPARK_SCHEMA = "customer_id string, label long, row_hash long"


@dataclass(frozen=True)
class ClusterScorer:
    """The fitted transform and model: everything a batch needs, nothing customer-level."""

    imputation: Imputation
    scaler: RobustScaler
    model: KMeans | MiniBatchKMeans
    k: int  # the label of customers without activity (k-means labels are 0..k-1)


class ScoringMismatch(RuntimeError):
    """The engine scored other customers (or other feature values) than were fitted."""


def row_hashes(transformed: np.ndarray) -> np.ndarray:
    """A fixed-key hash per model-space row (pandas' SipHash; same in every process)."""
    frame = pd.DataFrame(np.ascontiguousarray(transformed, dtype=np.float64))
    return pd.util.hash_pandas_object(frame, index=False).to_numpy().view(np.int64)


def score_batch(scorer: ClusterScorer, batch: pd.DataFrame) -> pd.DataFrame:
    """Labels of one batch of ``marts.customer_features`` rows (``INPUT_COLUMNS``).

    Per row: the result of a customer does not depend on the other rows of the
    batch (the imputation statistics are the scorer's, fitted on all customers).
    Customers who refused consent are left out, as in fitting.
    """
    prep = prepare_features(batch[list(INPUT_COLUMNS)], scorer.imputation)
    return _labels(scorer, prep)


def _labels(scorer: ClusterScorer, prep: PreparedFeatures) -> pd.DataFrame:
    active = activity_mask(prep)
    labels = np.full(len(prep.customer_ids), scorer.k, dtype=np.int64)
    if active.any():
        X = scorer.scaler.transform(prep.transformed[active])
        labels[active] = scorer.model.predict(X)
    return pd.DataFrame(
        {
            "customer_id": pd.Series(prep.customer_ids, dtype=object),
            "label": labels,
            "row_hash": row_hashes(prep.transformed),
        }
    )


def duckdb_round(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """DuckDB's ``round(double, digits)``: half away from zero on ``value * 10^digits``.

    ``load_customer_features`` rounds in DuckDB; rows read elsewhere (Spark)
    must be rounded the same way, and Spark's own ``round`` rounds the decimal
    text instead (docs/scaling.md). Equal to DuckDB 2.0's on 1.7 M values incl.
    ties (tests/spark/test_spark_scoring.py checks a sample without Spark).
    """
    m = 10.0**digits
    with np.errstate(invalid="ignore"):
        y = values * m
        t = np.trunc(y)
        # y - trunc(y) is exact in binary floating point, so ties are ties
        r = t + np.where(np.abs(y - t) >= 0.5, np.sign(y), 0.0)
        out = r / m
    return np.where(np.isfinite(out), out, values)


def score_unrounded_batch(scorer: ClusterScorer, batch: pd.DataFrame) -> pd.DataFrame:
    """:func:`score_batch` of rows read unrounded (Spark): rounded as DuckDB does first."""
    batch = batch.copy()
    for name in FEATURE_NAMES:
        batch[name] = duckdb_round(batch[name].to_numpy(dtype=np.float64, na_value=np.nan))
    return score_batch(scorer, batch)


def assign_labels(
    scorer: ClusterScorer, df: pd.DataFrame, prep: PreparedFeatures, settings: Settings
) -> np.ndarray:
    """The label of each of ``prep``'s customers (its row order), scored on the
    configured engine; raises :class:`ScoringMismatch` when the engine's rows are
    not the ones ``prep`` was prepared from."""
    if settings.engine == "spark":
        from segment_warehouse.spark.scoring import score_customer_features

        scored = score_customer_features(scorer, settings)
    else:
        scored = score_batch(scorer, df)
    return _aligned(scored, prep)


def _aligned(scored: pd.DataFrame, prep: PreparedFeatures) -> np.ndarray:
    if len(scored) == len(prep.customer_ids) and np.array_equal(
        scored["customer_id"].to_numpy(dtype=object), prep.customer_ids
    ):
        rows = scored  # already in prep's order (the in-process engine): no reindex
    else:
        rows = _reindexed(scored, prep)
    changed = int((rows["row_hash"].to_numpy() != row_hashes(prep.transformed)).sum())
    if changed:
        raise ScoringMismatch(
            f"{changed} customers have other feature values in the scoring engine's "
            "customer_features than in warehouse.duckdb; rebuild (dbt) on the configured engine"
        )
    return rows["label"].to_numpy(dtype=np.int64)


def _reindexed(scored: pd.DataFrame, prep: PreparedFeatures) -> pd.DataFrame:
    ids = pd.Index(prep.customer_ids)
    by_id = scored.drop_duplicates("customer_id").set_index("customer_id")
    # Rows the engine has beyond prep's (customers erased from warehouse.duckdb
    # since the Spark build wrote its Parquet) are dropped, never published.
    missing = ids.difference(by_id.index)
    if len(missing) or len(by_id) < len(scored):
        raise ScoringMismatch(
            f"the scoring engine's customer_features lack {len(missing)} of {len(ids)} "
            f"profiled customers (e.g. {list(missing[:3])}) or repeat customers; "
            "rebuild (dbt) on the configured engine"
        )
    return by_id.loc[ids]
