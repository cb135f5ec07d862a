"""The model space: who is clustered (customers with some behaviour) and their scaled features.

Customers with no order and no session, page view or cart add in the last 90 days
(CRM-only contacts, fragments of a split identity) have nothing to cluster on: all
their features are imputed defaults, so they are one identical point. Left in k-means
they form a cluster of their own anyway, pull the scaler's medians towards zero and,
being many identical rows, inflate the silhouette of any k that isolates them. They
get the fixed segment ``NO_ACTIVITY_SEGMENT`` instead (same id every run) and k-means
and the k selection only see active customers. The evaluation tool
(segment_tools.segment_eval) uses this module too, so it refits exactly what the
reclustering fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.preprocessing import RobustScaler

from segment_warehouse.clustering.features import (
    FEATURE_NAMES,
    PreparedFeatures,
    fit_scaler,
    prepare_features,
)

# Segment ids of k-means clusters start at 1; 0 is reserved for this one.
NO_ACTIVITY_SEGMENT = {
    "segment_id": 0,
    "name": "No activity yet",
    "traits": "no order ever; no session, page view or cart add in the last 90 days",
}
_ACTIVITY_COLUMNS = ("frequency", "sessions_90d", "page_views_90d", "cart_adds_without_purchase")


@dataclass
class ModelSpace:
    prep: PreparedFeatures  # every profiled customer
    active: np.ndarray  # bool per profiled customer: clustered by k-means
    scaler: RobustScaler | None  # fitted on active customers; None when there are none
    X: np.ndarray  # scaled features of the active customers (rows of prep where active)


def activity_mask(prep: PreparedFeatures) -> np.ndarray:
    """True for customers with an order ever or any web/app activity in the last 90 days."""
    col = {name: j for j, name in enumerate(FEATURE_NAMES)}
    cols = [col[c] for c in _ACTIVITY_COLUMNS]
    return (np.nan_to_num(prep.raw[:, cols], nan=0.0) > 0).any(axis=1)


def model_space(df: pd.DataFrame) -> ModelSpace:
    """Prepare marts.customer_features rows, split off the inactive, scale the rest."""
    prep = prepare_features(df)
    active = activity_mask(prep)
    if not active.any():
        return ModelSpace(prep, active, None, np.empty((0, len(FEATURE_NAMES))))
    scaler = fit_scaler(prep.transformed[active])
    return ModelSpace(prep, active, scaler, scaler.transform(prep.transformed[active]))
