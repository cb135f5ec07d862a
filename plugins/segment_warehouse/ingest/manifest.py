"""Raw tables, ``audit.load_manifest`` and ``audit.quarantine`` writes of one file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import duckdb
import pyarrow as pa

from segment_warehouse.ingest.results import FileContext, FileLoadResult
from segment_warehouse.ingest.specs import SPECS
from segment_warehouse.ingest.suppression import ERASED_REASON, mentions_erased
from segment_warehouse.warehouse import ensure_schemas

# A quarantined record with an unterminated quote can swallow the rest of a file; keep
# the audit row readable.
MAX_RAW_RECORD_CHARS = 65_536
ESCALATE_PREFIX = "erasure request not executable, escalate to the privacy team: "


def ensure_raw_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create schemas, audit tables and the raw tables (idempotent)."""
    ensure_schemas(con)
    for spec in SPECS.values():
        cols = ",\n    ".join(f"{c} varchar" for c in spec.columns)
        con.execute(
            f"""create table if not exists {spec.table} (
    {cols},
    _source_file varchar not null,
    _line_number bigint,
    _loaded_at timestamptz not null,
    _batch_id varchar not null
)"""
        )


def insert_manifest(
    con: duckdb.DuckDBPyConnection,
    ctx: FileContext,
    result: FileLoadResult,
    stat: os.stat_result | None,
    notes: list[str],
) -> None:
    con.execute(
        """insert into audit.load_manifest (batch_id, source, source_file, sha256, file_bytes,
               status, duplicate_of, rows_in_file, rows_loaded, rows_quarantined, loaded_at,
               duration_seconds, notes, file_mtime_ns, physical_lines, reason)
           values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            ctx.batch_id,
            ctx.spec.name,
            ctx.rel,
            result.sha256,
            stat.st_size if stat else None,
            result.status,
            result.duplicate_of,
            result.rows_in_file,
            result.rows_loaded,
            result.rows_quarantined,
            ctx.loaded_at,
            result.duration_seconds,
            "; ".join(notes) or None,
            stat.st_mtime_ns if stat else None,
            result.physical_lines,
            result.reason,
        ],
    )


def cap(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_RAW_RECORD_CHARS:
        return text
    return text[:MAX_RAW_RECORD_CHARS] + f"... [truncated, {len(text)} chars]"


def insert_quarantine(
    con: duckdb.DuckDBPyConnection,
    ctx: FileContext,
    rows: Sequence[tuple[int | None, str, str | None]],
) -> None:
    """Insert (line_number, reason, raw_record) rows for this file.

    What is not kept: the record of an erased person (matched by column, or - for rows too
    malformed for that - by scanning the raw text), and any erasure request (it holds the
    identifiers it asks to forget; the reason says to escalate, the file stays in the
    landing zone for whoever handles it).
    """
    if not rows:
        return
    lines: list[int | None] = []
    reasons: list[str] = []
    raws: list[str | None] = []
    for line, reason, raw in rows:
        if ctx.spec.redact_quarantine:
            reason, raw = ESCALATE_PREFIX + reason, None
        elif reason == ERASED_REASON:
            raw = None
        elif raw and ctx.suppressed and ctx.key and mentions_erased(raw, ctx.suppressed, ctx.key):
            reason, raw = ERASED_REASON, None
        lines.append(line)
        reasons.append(reason)
        raws.append(cap(raw))
    tbl = pa.table(
        {
            "line_number": pa.array(lines, pa.int64()),
            "reason": pa.array(reasons, pa.string()),
            "raw_record": pa.array(raws, pa.string()),
        }
    )
    con.register("_ingest_quarantine", tbl)
    try:
        con.execute(
            """insert into audit.quarantine
               select ?, ?, ?, line_number, reason, raw_record, ? from _ingest_quarantine""",
            [ctx.batch_id, ctx.spec.name, ctx.rel, ctx.loaded_at],
        )
    finally:
        # Keep the original error if the transaction is already aborted.
        with contextlib.suppress(duckdb.Error):
            con.unregister("_ingest_quarantine")


def discard_file_rows(con: duckdb.DuckDBPyConnection, ctx: FileContext) -> None:
    """Delete what this file wrote so far in the open transaction (the savepoint stand-in).

    ``_source_file`` + ``_batch_id`` identify exactly this attempt: a path already in the
    manifest is never loaded again, so no committed row of another run matches.
    """
    con.execute(
        f"delete from {ctx.spec.table} where _source_file = ? and _batch_id = ?",
        [ctx.rel, ctx.batch_id],
    )
    con.execute(
        "delete from audit.quarantine where source_file = ? and batch_id = ?",
        [ctx.rel, ctx.batch_id],
    )
