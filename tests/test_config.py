from __future__ import annotations

from pathlib import Path

import pytest

from segment_warehouse.config import REPO_ROOT, ConfigError, get_settings


def test_defaults_are_relative_to_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SEGMENTS_LANDING_DIR", "SEGMENTS_WAREHOUSE_DIR", "SEGMENTS_REPORTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    s = get_settings()
    assert s.landing_dir == REPO_ROOT / "data/landing"
    assert s.warehouse_db == REPO_ROOT / "data/warehouse/warehouse.duckdb"
    assert s.analytics_db == REPO_ROOT / "data/warehouse/analytics.duckdb"
    assert s.reports_dir == REPO_ROOT / "data/reports"


def test_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGMENTS_LANDING_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", "relative/wh")
    s = get_settings()
    assert s.landing_dir == tmp_path / "in"
    assert s.source_dir("crm") == tmp_path / "in" / "crm"
    assert s.warehouse_dir == REPO_ROOT / "relative/wh"


def test_unknown_source_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown source"):
        get_settings().source_dir("ftp")


def test_pii_key_required_outside_demo_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENTS_PII_KEY", raising=False)
    monkeypatch.delenv("SEGMENTS_DEMO_MODE", raising=False)
    with pytest.raises(ConfigError, match="SEGMENTS_PII_KEY is not set"):
        get_settings().pii_key()
    monkeypatch.setenv("SEGMENTS_DEMO_MODE", "1")
    assert get_settings().pii_key()
    monkeypatch.setenv("SEGMENTS_PII_KEY", "s3cret")
    assert get_settings().pii_key() == "s3cret"


def test_bad_k_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTS_K_MIN", "8")
    monkeypatch.setenv("SEGMENTS_K_MAX", "3")
    with pytest.raises(ConfigError):
        get_settings()


def test_full_validation_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENTS_VALIDATION_FULL_EVERY_DAYS", raising=False)
    assert get_settings().validation_full_every_days == 7
    monkeypatch.setenv("SEGMENTS_VALIDATION_FULL_EVERY_DAYS", "0")
    assert get_settings().validation_full_every_days == 0  # every run
    for bad in ("-1", "weekly"):
        monkeypatch.setenv("SEGMENTS_VALIDATION_FULL_EVERY_DAYS", bad)
        with pytest.raises(ConfigError, match="SEGMENTS_VALIDATION_FULL_EVERY_DAYS"):
            get_settings()


def test_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    def real_spec(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            return False

    monkeypatch.delenv("SEGMENTS_ENGINE", raising=False)
    assert get_settings().engine == "duckdb"
    monkeypatch.setenv("SEGMENTS_ENGINE", "DuckDB")
    assert get_settings().engine == "duckdb"
    monkeypatch.setenv("SEGMENTS_ENGINE", "polars")
    with pytest.raises(ConfigError, match="SEGMENTS_ENGINE must be one of duckdb, spark"):
        get_settings()
    if real_spec("pyspark") and real_spec("dbt.adapters.spark"):
        monkeypatch.setenv("SEGMENTS_ENGINE", "spark")
        assert get_settings().engine == "spark"
    # spark without its libraries fails at once, saying what to install
    real_find_spec = importlib.util.find_spec

    def without_pyspark(name: str, *args: object) -> object:
        return None if name.split(".")[0] == "pyspark" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_pyspark)
    monkeypatch.setenv("SEGMENTS_ENGINE", "spark")
    # (dbt-spark is named too where it is missing as well, e.g. CI's virtualenv)
    missing = r"needs pyspark( and dbt\.adapters\.spark)?: pip install -r requirements-spark\.txt"
    with pytest.raises(ConfigError, match=missing):
        get_settings()
