"""Great Expectations validation of every warehouse layer, with governance reports.

Public API (what the Airflow tasks call)::

    from segment_warehouse.validation import validate_layer, ValidationFailed
    outcome = validate_layer(["raw", "staging", "marts"], run_id=run_id)
    outcome = validate_layer("segments", run_id=run_id)

``GreatExpectationsValidationOperator`` (in ``.operator``) wraps the same call
for DAGs; it is not imported here so non-Airflow callers never import Airflow.
"""

from __future__ import annotations

from segment_warehouse.validation.report import render_report
from segment_warehouse.validation.runner import (
    DEFAULT_CHUNK_ROWS,
    ExpectationResult,
    SuiteOutcome,
    ValidationFailed,
    ValidationOutcome,
    quiet_gx,
    validate_layer,
)
from segment_warehouse.validation.suites import LAYER_SUITES, SuiteError, load_suite

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "LAYER_SUITES",
    "ExpectationResult",
    "SuiteError",
    "SuiteOutcome",
    "ValidationFailed",
    "ValidationOutcome",
    "load_suite",
    "quiet_gx",
    "render_report",
    "validate_layer",
]
