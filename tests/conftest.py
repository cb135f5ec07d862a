"""Shared fixtures: every test gets its own landing/warehouse/reports dirs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# Importing airflow creates AIRFLOW_HOME; keep it out of the user's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="segments-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@pytest.fixture
def segments_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every SEGMENTS_* directory into tmp_path (demo key, no real secret)."""
    for name, sub in (
        ("SEGMENTS_LANDING_DIR", "landing"),
        ("SEGMENTS_WAREHOUSE_DIR", "warehouse"),
        ("SEGMENTS_REPORTS_DIR", "reports"),
    ):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("SEGMENTS_PII_KEY", "test-secret")
    return tmp_path
