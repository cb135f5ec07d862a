"""The one place that resolves the ``SEGMENTS_*`` environment variables.

Everything that needs a path, a database file or a tunable asks
:func:`get_settings` instead of building paths itself. Settings are read from
the environment on every call (cheap) so tests and Airflow tasks can change
them with ``monkeypatch.setenv`` / task ``env`` without stale module state.

Relative paths in the variables are resolved against the repository root, not
the current working directory, because Airflow tasks, dbt subprocesses and
``make`` all run from different directories.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

SOURCES: tuple[str, ...] = ("crm", "analytics", "transactions", "erasure")

# Demo mode lets `make demo` run without a configured secret; anything else
# must provide SEGMENTS_PII_KEY (see :meth:`Settings.pii_key`).
DEMO_PII_KEY = "demo-only-not-secret"


class ConfigError(RuntimeError):
    """A required setting is missing or invalid."""


def _env_path(name: str, default: str) -> Path:
    raw = os.environ.get(name, "").strip() or default
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path)


def _env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not value >= 0:
        raise ConfigError(f"{name} must be >= 0, got {raw!r}")
    return value


_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _env_bool(name: str, default: bool) -> bool:
    """A yes/no setting with a default; anything else is an error (a typo must not
    silently pick one)."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


# The engine the dbt project builds on (tasks.dbt_build): DuckDB in-process, or
# Spark (segment_warehouse.spark.pipeline; issue #19, docs/scaling.md).
ENGINES: tuple[str, ...] = ("duckdb", "spark")


def _env_engine() -> str:
    """SEGMENTS_ENGINE; ``spark`` only where its libraries and a Java runtime are
    present, so a run fails at once rather than at its dbt stage."""
    engine = os.environ.get("SEGMENTS_ENGINE", "").strip().lower() or "duckdb"
    if engine not in ENGINES:
        raise ConfigError(f"SEGMENTS_ENGINE must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "spark":
        from importlib.util import find_spec
        from shutil import which

        missing = [
            name for name in ("pyspark", "dbt.adapters.spark") if not _importable(find_spec, name)
        ]
        if missing:
            raise ConfigError(
                f"SEGMENTS_ENGINE=spark needs {' and '.join(missing)}: "
                "pip install -r requirements-spark.txt (and Java 17+)"
            )
        if not os.environ.get("JAVA_HOME") and which("java") is None:
            raise ConfigError(
                "SEGMENTS_ENGINE=spark needs a Java runtime (17+): none on PATH, no JAVA_HOME"
            )
    return engine


# How the analyst snapshot is published (segment_warehouse.publish): one DuckDB file of
# tables, or Parquet files with a DuckDB file of views over them (issue #19).
PUBLISH_FORMATS: tuple[str, ...] = ("duckdb", "parquet")


def _env_publish_format(engine: str) -> str:
    """SEGMENTS_PUBLISH_FORMAT; by default ``parquet`` on Spark, ``duckdb`` otherwise."""
    raw = os.environ.get("SEGMENTS_PUBLISH_FORMAT", "").strip().lower()
    value = raw or ("parquet" if engine == "spark" else "duckdb")
    if value not in PUBLISH_FORMATS:
        raise ConfigError(
            f"SEGMENTS_PUBLISH_FORMAT must be one of {', '.join(PUBLISH_FORMATS)}, got {raw!r}"
        )
    return value


def _importable(find_spec: Any, name: str) -> bool:
    try:
        return find_spec(name) is not None
    except ModuleNotFoundError:  # a missing parent package (dbt.adapters)
        return False


@dataclass(frozen=True)
class PredictionSettings:
    """Predictions: churn window N, training cut-off spacing and count, history, sample,
    and how long a trained model keeps scoring before the next run retrains."""

    churn_window_days: int = 90
    cutoff_step_days: int = 14
    max_cutoffs: int = 6
    min_history_days: int = 28
    max_train_rows: int = 150_000
    # A run within this many days of the saved model's as-of date scores with it
    # instead of retraining (0: retrain on every run). Not part of what a model is
    # trained on: two settings that differ only here train the same model.
    retrain_days: int = 7

    @classmethod
    def from_env(cls) -> PredictionSettings:
        return cls(
            churn_window_days=_env_int("SEGMENTS_CHURN_WINDOW_DAYS", 90, 7),
            cutoff_step_days=_env_int("SEGMENTS_PREDICTION_CUTOFF_STEP_DAYS", 14, 1),
            max_cutoffs=_env_int("SEGMENTS_PREDICTION_MAX_CUTOFFS", 6, 1),
            min_history_days=_env_int("SEGMENTS_PREDICTION_MIN_HISTORY_DAYS", 28, 0),
            max_train_rows=_env_int("SEGMENTS_PREDICTION_MAX_TRAIN_ROWS", 150_000, 1_000),
            retrain_days=_env_int("SEGMENTS_PREDICTION_RETRAIN_DAYS", 7, 0),
        )


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`get_settings`."""

    landing_dir: Path
    warehouse_dir: Path
    reports_dir: Path
    content_rules: Path  # content slots, rules and experiments (DESIGN.md section 7)
    exports_dir: Path  # audience exports for activation tools
    demo_mode: bool
    reporting_currency: str
    duckdb_threads: int
    dbt_threads: int | None  # None: chosen by warehouse size (dbt_runner.dbt_threads)
    duckdb_memory_limit: str
    recluster_k_min: int
    recluster_k_max: int
    minibatch_threshold: int
    max_component_size: int
    # A landing file is loaded once its size and mtime were unchanged this long.
    landing_settle_seconds: float
    predictions: PredictionSettings
    # Row-level expectations run on new/changed rows; every row at least this often
    # (days; 0: every run). SEGMENTS_VALIDATION_FULL_EVERY_DAYS.
    validation_full_every_days: int = 7
    # Skip `dbt build` when nothing it reads changed since the last successful build
    # (tasks.dbt_build: loaded files, raw row counts, the dbt project, the as-of date,
    # the dbt vars). SEGMENTS_DBT_SKIP_UNCHANGED (default true; false: always build).
    dbt_skip_unchanged: bool = True
    # SEGMENTS_ENGINE: "duckdb" (default) or "spark" (see ENGINES).
    engine: str = "duckdb"
    # SEGMENTS_PUBLISH_FORMAT: "duckdb" (tables in analytics.duckdb) or "parquet"
    # (analytics.duckdb holds views over <warehouse_dir>/analytics_parquet/<snapshot>/);
    # default "parquet" when SEGMENTS_ENGINE=spark, else "duckdb" (see PUBLISH_FORMATS).
    publish_format: str = "duckdb"

    repo_root: Path = REPO_ROOT

    # --- databases -------------------------------------------------------
    @property
    def warehouse_db(self) -> Path:
        """Working database: the only file the pipeline writes to."""
        return self.warehouse_dir / "warehouse.duckdb"

    @property
    def analytics_db(self) -> Path:
        """Published read-only snapshot for analysts (atomically replaced)."""
        return self.warehouse_dir / "analytics.duckdb"

    @property
    def models_dir(self) -> Path:
        """Fitted clustering models and scalers, one file per run."""
        return self.warehouse_dir / "models"

    # --- project folders ---------------------------------------------------
    @property
    def dbt_project_dir(self) -> Path:
        return self.repo_root / "dbt_project"

    @property
    def dbt_target_dir(self) -> Path:
        # Kept under the warehouse dir so a read-only checkout still works.
        return self.warehouse_dir / "dbt_target"

    @property
    def expectations_dir(self) -> Path:
        return self.repo_root / "expectations"

    @property
    def validation_reports_dir(self) -> Path:
        return self.reports_dir / "validation"

    @property
    def segment_reports_dir(self) -> Path:
        return self.reports_dir / "segments"

    @property
    def dbt_docs_dir(self) -> Path:
        return self.reports_dir / "dbt_docs"

    @property
    def personalisation_reports_dir(self) -> Path:
        return self.reports_dir / "personalisation"

    @property
    def experiment_reports_dir(self) -> Path:
        return self.reports_dir / "experiments"

    def source_dir(self, source: str) -> Path:
        if source not in SOURCES:
            raise ConfigError(f"unknown source {source!r}; expected one of {SOURCES}")
        return self.landing_dir / source

    # --- secrets -----------------------------------------------------------
    def pii_key(self) -> str:
        """Secret for the keyed hash that pseudonymises emails and phones.

        Read from ``SEGMENTS_PII_KEY``. Outside demo mode a missing key is an
        error: silently falling back to a known key would make the hashes
        reversible by dictionary attack.
        """
        key = os.environ.get("SEGMENTS_PII_KEY", "").strip()
        if key:
            return key
        if self.demo_mode:
            return DEMO_PII_KEY
        raise ConfigError(
            "SEGMENTS_PII_KEY is not set. Set it to a long random secret "
            "(e.g. `export SEGMENTS_PII_KEY=$(openssl rand -hex 32)`), or set "
            "SEGMENTS_DEMO_MODE=1 to use the insecure demo key."
        )

    def ensure_dirs(self) -> None:
        for path in (
            self.landing_dir,
            self.warehouse_dir,
            self.reports_dir,
            self.models_dir,
            self.exports_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)


def get_settings() -> Settings:
    """Resolve settings from the environment (defaults relative to the repo root)."""
    k_min = _env_int("SEGMENTS_K_MIN", 4)
    k_max = _env_int("SEGMENTS_K_MAX", 10)
    if not 2 <= k_min <= k_max:
        raise ConfigError(f"need 2 <= SEGMENTS_K_MIN <= SEGMENTS_K_MAX, got {k_min}..{k_max}")
    engine = _env_engine()
    return Settings(
        landing_dir=_env_path("SEGMENTS_LANDING_DIR", "data/landing"),
        warehouse_dir=_env_path("SEGMENTS_WAREHOUSE_DIR", "data/warehouse"),
        reports_dir=_env_path("SEGMENTS_REPORTS_DIR", "data/reports"),
        content_rules=_env_path("SEGMENTS_CONTENT_RULES", "personalisation/content_rules.yml"),
        exports_dir=_env_path("SEGMENTS_EXPORTS_DIR", "data/exports"),
        demo_mode=_env_flag("SEGMENTS_DEMO_MODE"),
        reporting_currency=os.environ.get("SEGMENTS_REPORTING_CURRENCY", "USD").strip().upper(),
        duckdb_threads=_env_int("SEGMENTS_DUCKDB_THREADS", os.cpu_count() or 2),
        dbt_threads=_env_int("SEGMENTS_DBT_THREADS", 0) or None,
        duckdb_memory_limit=os.environ.get("SEGMENTS_DUCKDB_MEMORY_LIMIT", "6GB").strip(),
        recluster_k_min=k_min,
        recluster_k_max=k_max,
        minibatch_threshold=_env_int("SEGMENTS_MINIBATCH_THRESHOLD", 50_000),
        max_component_size=_env_int("SEGMENTS_MAX_COMPONENT_SIZE", 50),
        landing_settle_seconds=_env_float("SEGMENTS_LANDING_SETTLE_SECONDS", 2.0),
        predictions=PredictionSettings.from_env(),
        validation_full_every_days=_env_int("SEGMENTS_VALIDATION_FULL_EVERY_DAYS", 7, 0),
        dbt_skip_unchanged=_env_bool("SEGMENTS_DBT_SKIP_UNCHANGED", True),
        engine=engine,
        publish_format=_env_publish_format(engine),
    )
