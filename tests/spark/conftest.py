"""The Spark tests run only when asked for: `make test-spark` (pytest -m spark).

They need requirements-spark.txt and a Java runtime, and start a JVM: `make
test` and CI do not run them, even where pyspark happens to be installed.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "spark" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="Spark test: run with `make test-spark` (pytest -m spark)")
    for item in items:
        if item.get_closest_marker("spark") is not None:
            item.add_marker(skip)
