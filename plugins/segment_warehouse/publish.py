"""Publish the analyst-facing snapshot ``analytics.duckdb`` atomically.

Readers must never see a half-written file and must never block the pipeline,
so the snapshot is written to a temporary file beside the target and then
renamed over it (``os.replace`` is atomic on POSIX). A reader that still has the
old file open keeps reading the old inode until it reconnects.

Only ``marts`` and ``segments`` are published; ``raw``, ``staging``,
``intermediate`` and ``audit`` stay in the working database. A guard refuses
to publish any column whose name says it holds a raw email or phone.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from segment_warehouse.config import Settings, get_settings

log = logging.getLogger(__name__)

PUBLISHED_SCHEMAS: tuple[str, ...] = ("marts", "segments")

# Column names that would carry raw contact details. Hashed columns
# (`email_hash`, `phone_hash`) are allowed.
_RAW_PII_COLUMN = re.compile(r"^(email|phone|phone_e164|trait_email|trait_phone\w*|ip)$")


class PublishError(RuntimeError):
    """The snapshot could not be published; the previous one is untouched."""


@dataclass
class PublishResult:
    path: Path
    published_at: datetime
    tables: dict[str, int] = field(default_factory=dict)  # "schema.table" -> rows


def _published_tables(con) -> list[tuple[str, str]]:
    rows = con.execute(
        """
        select table_schema, table_name
        from information_schema.tables
        where table_catalog = 'wh'
          and list_contains(?, table_schema)
        order by table_schema, table_name
        """,
        [list(PUBLISHED_SCHEMAS)],
    ).fetchall()
    return [(schema, name) for schema, name in rows]


def _check_no_raw_pii(con, tables: list[tuple[str, str]]) -> None:
    offenders = []
    for schema, table in tables:
        cols = con.execute(
            """
            select column_name from information_schema.columns
            where table_catalog = 'wh' and table_schema = ? and table_name = ?
            """,
            [schema, table],
        ).fetchall()
        offenders += [f"{schema}.{table}.{c}" for (c,) in cols if _RAW_PII_COLUMN.match(c.lower())]
    if offenders:
        raise PublishError(f"refusing to publish raw PII columns: {', '.join(offenders)}")


def publish_snapshot(
    *, run_id: str | None = None, settings: Settings | None = None
) -> PublishResult:
    """Copy marts.* and segments.* into a fresh file and swap it into place."""
    settings = settings or get_settings()
    target = settings.analytics_db
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    for leftover in (tmp, Path(f"{tmp}.wal")):
        leftover.unlink(missing_ok=True)

    published_at = datetime.now(UTC)
    result = PublishResult(path=target, published_at=published_at)
    # An in-memory session attaching the warehouse read-only and the new file
    # read-write: publishing never takes the warehouse's write lock itself.
    con = duckdb.connect()
    con.execute(f"set threads = {int(settings.duckdb_threads)}")
    con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")
    try:
        con.execute(f"attach '{settings.warehouse_db}' as wh (read_only)")
        tables = _published_tables(con)
        if not any(schema == "marts" for schema, _ in tables):
            raise PublishError("nothing to publish: the warehouse has no marts tables yet")
        _check_no_raw_pii(con, tables)
        con.execute(f"attach '{tmp}' as snapshot")
        for schema in PUBLISHED_SCHEMAS:
            con.execute(f"create schema if not exists snapshot.{schema}")
        for schema, table in tables:
            con.execute(
                f'create table snapshot.{schema}."{table}" as select * from wh.{schema}."{table}"'
            )
            (rows,) = con.execute(f'select count(*) from snapshot.{schema}."{table}"').fetchone()
            result.tables[f"{schema}.{table}"] = rows
        # Kept out of marts/segments so the contract tables stay byte-identical
        # across reruns with unchanged inputs.
        con.execute("create schema if not exists snapshot.meta")
        con.execute(
            "create table snapshot.meta.snapshot_info as "
            "select ?::timestamptz as published_at, ?::varchar as run_id",
            [published_at, run_id],
        )
        con.execute("detach snapshot")
        con.execute("detach wh")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()

    os.replace(tmp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename durable
    finally:
        os.close(dir_fd)
    log.info("published %d tables to %s", len(result.tables), target)
    return result
