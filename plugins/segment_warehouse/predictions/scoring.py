"""Scoring every profiled customer with the fitted (or saved) models, on either engine.

:func:`score_batch` is the one definition of how a batch of customers is
scored: the purchase model for everyone, the churn model for the profile's
buyers. With ``SEGMENTS_ENGINE=duckdb`` it runs once over the whole frame in
this process; with ``spark`` over Arrow batches in Spark's Python workers, the
fitted models broadcast to them (:mod:`segment_warehouse.spark.scoring`), so
both engines give the same probabilities. What is not row by row stays on the
driver: the RFM baseline's quintiles (taken within the scored population, as
:func:`prepare` does before batching), the deciles and the typical order value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from segment_warehouse.predictions.features import FEATURE_NAMES
from segment_warehouse.predictions.model import FittedTarget, rfm_score

if TYPE_CHECKING:
    from segment_warehouse.config import Settings

# What a batch carries: the features, the profile's buyer flag and the RFM
# scores of the population (NaN where no baseline needs them).
BATCH_COLUMNS = ("customer_id", *FEATURE_NAMES, "is_buyer", "rfm_all", "rfm_buyers")
SPARK_SCHEMA = "customer_id string, purchase_probability double, churn_probability double"


@dataclass(frozen=True)
class PredictionScorer:
    purchase: FittedTarget
    churn: FittedTarget


class ScoringMismatch(RuntimeError):
    """The engine returned other customers than it was given."""


def prepare(scorer: PredictionScorer, X: pd.DataFrame, buyer: np.ndarray) -> pd.DataFrame:
    """``X`` (features, one row per customer) with the columns a batch needs."""
    out = X.assign(is_buyer=buyer, rfm_all=np.nan, rfm_buyers=np.nan)
    if scorer.purchase.needs_rfm:
        out["rfm_all"] = rfm_score(X)
    if scorer.churn.needs_rfm and buyer.any():
        rfm = np.full(len(X), np.nan)
        rfm[buyer] = rfm_score(X[buyer])  # churn is scored among buyers only
        out["rfm_buyers"] = rfm
    return out[list(BATCH_COLUMNS)]


def score_batch(scorer: PredictionScorer, batch: pd.DataFrame) -> pd.DataFrame:
    """Purchase probability of every row, churn probability of the buyers (NaN for
    the rest), unclipped; each row's result is independent of the batch."""
    p = (
        scorer.purchase.predict(batch, rfm=batch["rfm_all"].to_numpy(dtype=float))
        if len(batch)
        else np.zeros(0)
    )
    buyer = batch["is_buyer"].to_numpy(dtype=bool)
    c = np.full(len(batch), np.nan)
    if buyer.any():
        c[buyer] = scorer.churn.predict(
            batch[buyer], rfm=batch["rfm_buyers"].to_numpy(dtype=float)[buyer]
        )
    return pd.DataFrame(
        {
            "customer_id": batch["customer_id"].astype(object).to_numpy(),
            "purchase_probability": np.asarray(p, dtype=float),
            "churn_probability": c,
        }
    )


def score_customers(
    scorer: PredictionScorer, X: pd.DataFrame, buyer: np.ndarray, settings: Settings
) -> tuple[np.ndarray, np.ndarray]:
    """(purchase, churn) probabilities of ``X``'s rows in order, on the configured engine."""
    batch = prepare(scorer, X, buyer)
    if settings.engine == "spark" and len(batch):
        from segment_warehouse.spark.scoring import score_frame

        scored = score_frame(batch, score_batch, scorer, SPARK_SCHEMA, settings=settings)
    else:
        scored = score_batch(scorer, batch)
    by_id = scored.set_index("customer_id")
    ids = pd.Index(batch["customer_id"].astype(object))
    if len(by_id) != len(ids) or not by_id.index.is_unique or len(ids.difference(by_id.index)):
        raise ScoringMismatch(
            f"scored {len(by_id)} rows for {len(ids)} customers; the engine lost or repeated rows"
        )
    rows = by_id.loc[ids]
    return (
        rows["purchase_probability"].to_numpy(dtype=float),
        rows["churn_probability"].to_numpy(dtype=float),
    )
