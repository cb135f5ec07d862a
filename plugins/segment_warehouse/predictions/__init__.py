"""Predictive segments: purchase propensity (30 days) and churn risk per customer.

Entry point: :func:`predict` (the ``predict`` task of the ``recluster_segments`` DAG).
"""

from segment_warehouse.predictions.core import (
    PredictionResult,
    PredictionSettings,
    predict,
)

__all__ = ["PredictionResult", "PredictionSettings", "predict"]
