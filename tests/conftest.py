"""Shared fixtures: every test gets its own landing/warehouse/reports dirs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from segment_warehouse.config import Settings, get_settings

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
        ("SEGMENTS_EXPORTS_DIR", "exports"),
    ):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("SEGMENTS_PII_KEY", "test-secret")
    return tmp_path


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings over an empty landing zone and warehouse in tmp_path, for loader tests:
    one DuckDB thread, a small memory limit and no settle wait (files written by a
    test are complete; the settle rule has tests of its own)."""
    monkeypatch.setenv("SEGMENTS_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    monkeypatch.setenv("SEGMENTS_DUCKDB_MEMORY_LIMIT", "512MB")
    monkeypatch.setenv("SEGMENTS_LANDING_SETTLE_SECONDS", "0")
    (tmp_path / "landing").mkdir()
    return get_settings()


def _all_table_text(db: duckdb.DuckDBPyConnection | Path) -> str:
    if isinstance(db, Path):
        con = duckdb.connect(str(db), read_only=True)
        try:
            return _all_table_text(con)
        finally:
            con.close()
    chunks = []
    for schema, table in db.execute(
        "select table_schema, table_name from information_schema.tables"
    ).fetchall():
        chunks.append(repr(db.execute(f'select * from {schema}."{table}"').fetchall()))
    return "\n".join(chunks).lower()


@pytest.fixture
def all_table_text() -> Callable[[duckdb.DuckDBPyConnection | Path], str]:
    """All text of every table of a database (connection or file), lower-cased:
    for "no trace left" checks after erasure."""
    return _all_table_text
