"""DuckDB connections and the audit schema shared by every stage.

DuckDB allows one writing process per database file. The pipeline serialises
writers through an Airflow pool with one slot (``duckdb_writer``) and
``max_active_runs=1``; readers use the published snapshot instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from segment_warehouse.config import Settings, get_settings

SCHEMAS: tuple[str, ...] = (
    "raw",
    "staging",
    "intermediate",
    "marts",
    "segments",
    "personalisation",
    "audit",
)

AUDIT_DDL: tuple[str, ...] = (
    """
    create table if not exists audit.load_manifest (
        batch_id varchar not null,
        source varchar not null,
        source_file varchar not null,      -- path relative to the landing dir
        sha256 varchar not null,
        file_bytes bigint,
        status varchar not null,           -- loaded | duplicate | file_quarantined | refused
                                           -- | changed_after_load
        duplicate_of varchar,              -- source_file already loaded with the same sha256
        rows_in_file bigint not null,
        rows_loaded bigint not null,
        rows_quarantined bigint not null,
        loaded_at timestamptz not null,
        duration_seconds double
    )
    """,
    # Added by ingest: human-readable notes (ignored extra columns/fields, missing
    # optional columns). ALTER so warehouses created before the column existed get it.
    "alter table audit.load_manifest add column if not exists notes varchar",
    # The file's mtime when it was hashed: with file_bytes, lets later runs skip
    # re-hashing files that are already loaded and unchanged.
    "alter table audit.load_manifest add column if not exists file_mtime_ns bigint",
    # Physical lines of the decompressed file, reconciled with rows_in_file (a quoted CSV
    # record may span several lines; the reader checks every line is accounted for).
    "alter table audit.load_manifest add column if not exists physical_lines bigint",
    # Why a file was refused, quarantined whole or flagged as changed after loading.
    "alter table audit.load_manifest add column if not exists reason varchar",
    # The fingerprint (an HMAC of a constant, never the key) of SEGMENTS_PII_KEY the
    # warehouse's hashes were made with: a different key is refused (privacy.verify_key).
    """
    create table if not exists audit.pii_key_fingerprint (
        fingerprint varchar not null,
        recorded_at timestamptz not null
    )
    """,
    """
    create table if not exists audit.quarantine (
        batch_id varchar not null,
        source varchar not null,
        source_file varchar not null,
        line_number bigint,                -- null when the whole file is quarantined
        reason varchar not null,
        raw_record varchar,
        quarantined_at timestamptz not null
    )
    """,
    """
    create table if not exists audit.validation_results (
        run_id varchar not null,
        validated_at timestamptz not null,
        suite varchar not null,
        expectation varchar not null,
        column_name varchar,
        success boolean not null,
        severity varchar not null,         -- critical | warning
        observed_value varchar,
        details varchar
    )
    """,
)


def connect(
    path: Path | None = None,
    *,
    read_only: bool = False,
    settings: Settings | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the working warehouse (or ``path``) with the configured limits."""
    settings = settings or get_settings()
    target = path or settings.warehouse_db
    if not read_only:
        target.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(target), read_only=read_only)
    con.execute(f"set threads = {int(settings.duckdb_threads)}")
    con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")
    return con


@contextmanager
def warehouse(
    *, read_only: bool = False, settings: Settings | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Context-managed connection to ``warehouse.duckdb``; always closed."""
    con = connect(read_only=read_only, settings=settings)
    try:
        yield con
    finally:
        con.close()


def quote_ident(name: str) -> str:
    """``name`` as a DuckDB identifier (names read from a catalog or a manifest)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a SQL string literal, where a statement cannot take a bound
    parameter (``attach``, ``copy ... to``, a path inside ``read_parquet``)."""
    return "'" + text.replace("'", "''") + "'"


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether ``schema.table`` (a table or a view) exists in the current database."""
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])


def table_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> set[str]:
    """Column names of ``schema.table`` (empty if it does not exist)."""
    rows = con.execute(
        "select column_name from information_schema.columns "
        "where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()
    return {r[0] for r in rows}


# Tables of dbt models that no longer exist. dbt never drops them, and a stale
# per-person copy must not outlive its model (erasure, storage), so they go here.
RETIRED_TABLES: tuple[str, ...] = (
    "intermediate.int_events_sessionised",  # merged into int_sessions_aggregated
)


def ensure_schemas(con: duckdb.DuckDBPyConnection) -> None:
    """Create the layer schemas and the audit tables, drop retired tables (idempotent)."""
    for schema in SCHEMAS:
        con.execute(f"create schema if not exists {schema}")
    for ddl in AUDIT_DDL:
        con.execute(ddl)
    from segment_warehouse.state import ensure_state_table  # state imports this module lazily

    ensure_state_table(con)
    for table in RETIRED_TABLES:
        con.execute(f"drop table if exists {table}")
