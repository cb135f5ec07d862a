"""Task callables used by the DAGs in ``dags/``.

The DAG files only wire these together. Heavy libraries (duckdb, dbt, GX,
scikit-learn) are imported inside the functions so parsing a DAG file stays
fast: the dag-processor imports DAG files constantly, tasks run rarely.

Each function returns a small JSON-serialisable dict (it becomes the task's
XCom and shows up in the Airflow UI).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, is_dataclass
from typing import Any

log = logging.getLogger(__name__)

# One Airflow pool with a single slot serialises every task that writes
# warehouse.duckdb (DuckDB allows one writing process per file).
WRITER_POOL = "duckdb_writer"
PROFILES_ASSET_URI = "duckdb://warehouse/marts/customer_profiles"


def _plain(value: Any) -> Any:
    """Make a result XCom-friendly (dataclasses -> dicts, paths -> str)."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def prepare_warehouse() -> dict[str, str]:
    """Create folders, schemas and audit tables; fail fast on bad config."""
    from segment_warehouse.config import get_settings
    from segment_warehouse.warehouse import ensure_schemas, warehouse

    settings = get_settings()
    settings.pii_key()  # a missing secret should fail the run before any work
    settings.ensure_dirs()
    with warehouse(settings=settings) as con:
        ensure_schemas(con)
    return {"warehouse": str(settings.warehouse_db), "landing": str(settings.landing_dir)}


def load_source(source: str, run_id: str) -> dict[str, Any]:
    from segment_warehouse import ingest

    summary = ingest.load_source(source, batch_id=run_id)
    return _plain(summary)


def apply_erasure(run_id: str) -> dict[str, Any]:
    from segment_warehouse import erasure

    return _plain(erasure.apply_erasure_requests(run_id=run_id))


def dbt_build(as_of_date: str) -> dict[str, Any]:
    from segment_warehouse import dbt_runner

    return _plain(dbt_runner.build(as_of_date=as_of_date))


def dbt_docs() -> dict[str, Any]:
    from segment_warehouse import dbt_runner

    return _plain(dbt_runner.generate_docs())


def validate(layers: list[str], run_id: str) -> dict[str, Any]:
    from segment_warehouse.validation import validate_layer

    return _plain(validate_layer(layers, run_id=run_id))


def recluster(run_id: str, as_of_date: str) -> dict[str, Any]:
    from segment_warehouse import clustering

    return _plain(clustering.recluster(run_id=run_id, as_of=as_of_date))


def publish(run_id: str) -> dict[str, Any]:
    from segment_warehouse.publish import publish_snapshot

    result = publish_snapshot(run_id=run_id)
    return {"path": str(result.path), "tables": result.tables}
