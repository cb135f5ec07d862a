"""Experiment readout: intention-to-treat lift per experiment and segment.

``measure()`` reads ``personalisation.experiments`` and
``personalisation.experiment_assignments`` with ``marts.fct_orders`` and
rewrites ``personalisation.experiment_results``; the statistics live in
:mod:`segment_warehouse.experiments.stats`, the HTML page in
:mod:`segment_warehouse.experiments.report`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segment_warehouse.experiments.results import MeasureResult, measure

__all__ = ["MeasureResult", "measure"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import ...experiments.stats` (tests, notebooks) does not pull in
    # duckdb and matplotlib.
    if name in __all__:
        from segment_warehouse.experiments import results

        return getattr(results, name)
    raise AttributeError(name)
