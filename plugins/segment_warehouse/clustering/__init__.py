"""Scheduled, stable, explainable reclustering: marts.customer_features -> segments.*.

The Airflow task calls :func:`recluster`; everything else is an implementation
detail split by concern (features, model, naming, store).
"""

from __future__ import annotations

from segment_warehouse.clustering.core import ReclusterResult, recluster
from segment_warehouse.clustering.features import ALGORITHM_VERSION, FEATURE_NAMES, FEATURES

__all__ = ["ALGORITHM_VERSION", "FEATURES", "FEATURE_NAMES", "ReclusterResult", "recluster"]
