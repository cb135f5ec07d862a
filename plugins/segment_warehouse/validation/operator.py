"""A thin ``GreatExpectationsOperator``-style operator for Airflow 3.

Why this exists: the official ``airflow-provider-great-expectations`` cannot
be installed next to Airflow 3.3 (its pins conflict), and its operators expect
GX to reach the data itself, which GX cannot do for DuckDB (no dialect). This
operator just calls :func:`segment_warehouse.validation.validate_layer`, so the
DAG gets the familiar "one task per validation" shape while the real logic
stays testable without Airflow.

Use it in the ``duckdb_writer`` pool: validation writes
``audit.validation_results`` into ``warehouse.duckdb``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator


class GreatExpectationsValidationOperator(BaseOperator):
    """Validate warehouse layers; fail the task if a critical expectation fails.

    :param layers: ``raw``, ``staging``, ``marts`` and/or ``segments``.
    :param validation_run_id: id recorded in ``audit.validation_results``
        (templated; defaults to the Airflow run id).
    :param fail_on_warning: also fail the task on warning-level failures.
    :param sample_rows: row cap for batches validated on a deterministic sample.
    """

    template_fields: Sequence[str] = ("validation_run_id",)
    ui_color = "#ffedd5"

    def __init__(
        self,
        *,
        layers: str | Sequence[str],
        validation_run_id: str = "{{ run_id }}",
        fail_on_warning: bool = False,
        sample_rows: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.validation_run_id = validation_run_id
        self.fail_on_warning = fail_on_warning
        self.sample_rows = sample_rows

    def execute(self, context: Any) -> dict[str, Any]:
        # Imported here so DAG parsing never imports GX/duckdb/pandas.
        from segment_warehouse.validation import DEFAULT_SAMPLE_ROWS, validate_layer

        outcome = validate_layer(
            self.layers,
            run_id=self.validation_run_id,
            sample_rows=self.sample_rows or DEFAULT_SAMPLE_ROWS,
        )
        if self.fail_on_warning and outcome.warnings:
            names = "; ".join(r.expectation for r in outcome.warnings)
            raise RuntimeError(f"validation warnings treated as failures: {names}")
        self.log.info("validation report: %s", outcome.report_path)
        return outcome.summary()  # small XCom: counts and failed checks only
