"""Publish the analyst-facing snapshot ``analytics.duckdb`` atomically.

Readers must never see a half-written file and must never block the pipeline,
so the snapshot is written to a temporary file beside the target and then
renamed over it (``os.replace`` is atomic on POSIX). A reader that still has the
old file open keeps reading the old inode until it reconnects.

Only ``marts`` and ``segments`` are published; ``raw``, ``staging``,
``intermediate`` and ``audit`` stay in the working database. A guard refuses
to publish any column whose name says it holds a raw email or phone.

Reclustering only changes ``segments``: its publish (``refresh=("segments",)``)
starts from a file copy of the current snapshot and rewrites just that schema,
when the snapshot's marts are provably current. "Current" is tracked by a
*marts generation* token in ``audit.pipeline_state`` that every writer of marts
(dbt build, erasure) renews before it starts; the snapshot records the token
it was built from. Any doubt (no snapshot, other token) means a full copy.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from segment_warehouse import state
from segment_warehouse.config import Settings, get_settings

log = logging.getLogger(__name__)

PUBLISHED_SCHEMAS: tuple[str, ...] = ("marts", "segments", "personalisation")

# Column names that would carry raw contact details (emails, phones, IP
# addresses), with any prefix and the usual suffixes; hashed columns
# (`email_hash`, `phone_hash`) are allowed. The one definition of the rule: the
# publish guard below and the GX `marts.published_columns` check (suite parameter
# `raw_pii_column_regex`) both use it.
RAW_PII_COLUMN_REGEX = (
    r"(?i)^(.*_)?(e_?mail|phone|mobile_?phone|ip)"
    r"(_?(e164|address|number|raw|normalised|normalized))?$"
)
_RAW_PII_COLUMN = re.compile(RAW_PII_COLUMN_REGEX)

# Values that look like contact details, wherever they hide (a URL query string,
# a campaign field): an email address, an E.164 number or a formatted phone
# number. Column names alone cannot catch free text that carries PII.
PII_VALUE_PATTERNS: dict[str, str] = {
    "email address": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "phone number": r"(^|[^0-9A-Za-z])(\+[0-9]{10,15}|\(?[0-9]{3}\)?[ .-][0-9]{3}[ .-][0-9]{4})"
    r"($|[^0-9A-Za-z])",
}
# Rows per text column read by the content scan; a deterministic prefix of each
# table keeps the scan cheap at 1 M customers and repeatable between runs.
PII_SCAN_ROWS = 20_000


def renew_marts_generation(settings: Settings | None = None) -> str:
    """Call before modifying marts: snapshots built earlier stop counting as current.

    Writers holding a connection call ``state.renew_marts_generation(con)`` in
    their own transaction instead.
    """
    with state.connection(settings or get_settings()) as con:
        assert con is not None
        return state.renew_marts_generation(con)


def marts_generation(settings: Settings) -> str | None:
    """The current marts generation (``audit.pipeline_state``), None before any."""
    return state.read(state.MARTS_GENERATION, settings=settings)


def _snapshot_generation(snapshot: Path) -> str | None:
    """The marts generation the current snapshot was built from (None if unknown)."""
    if not snapshot.exists():
        return None
    try:
        con = duckdb.connect(str(snapshot), read_only=True)
    except duckdb.Error:
        return None
    try:
        row = con.execute("select marts_generation from meta.snapshot_info").fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    return row[0] if row else None


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
        offenders += [f"{schema}.{table}.{c}" for (c,) in cols if _RAW_PII_COLUMN.match(c)]
    if offenders:
        raise PublishError(f"refusing to publish raw PII columns: {', '.join(offenders)}")


def _check_no_pii_values(con, tables: list[tuple[str, str]]) -> None:
    """Scan a sample of every text column for email- and phone-like values."""
    found = []
    for schema, table in tables:
        cols = [
            c
            for (c,) in con.execute(
                """
                select column_name from information_schema.columns
                where table_catalog = 'wh' and table_schema = ? and table_name = ?
                  and data_type = 'VARCHAR'
                """,
                [schema, table],
            ).fetchall()
        ]
        if not cols:
            continue
        checks = ", ".join(
            f'count(*) filter (where regexp_matches("{c}", ?)) as "{c}|{kind}"'
            for c in cols
            for kind in PII_VALUE_PATTERNS
        )
        params = [pattern for _ in cols for pattern in PII_VALUE_PATTERNS.values()]
        row = con.execute(
            f'select {checks} from (select * from wh.{schema}."{table}" limit {PII_SCAN_ROWS})',
            params,
        ).fetchone()
        names = [f"{c}|{kind}" for c in cols for kind in PII_VALUE_PATTERNS]
        for name, hits in zip(names, row, strict=True):
            if hits:
                column, kind = name.split("|")
                found.append(f"{schema}.{table}.{column} ({hits} values like a {kind})")
    if found:
        raise PublishError(
            "refusing to publish values that look like raw contact details: " + "; ".join(found)
        )


def _remove_stale_temp_files(target: Path) -> None:
    """Temp files of a publish that crashed (its process is gone) hold customer data."""
    for leftover in target.parent.glob(f".{target.name}.*.tmp*"):
        pid = leftover.name.removeprefix(f".{target.name}.").split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        leftover.unlink(missing_ok=True)
        log.warning("removed %s left by an interrupted publish", leftover.name)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish_snapshot(
    *,
    run_id: str | None = None,
    settings: Settings | None = None,
    refresh: Sequence[str] | None = None,
) -> PublishResult:
    """Copy marts.* and segments.* into a fresh file and swap it into place.

    ``refresh``: the schemas that changed. The other published schemas are
    carried over from the current snapshot (a file copy) when it was built from
    the current marts generation; otherwise everything is copied.
    """
    settings = settings or get_settings()
    target = settings.analytics_db
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    _remove_stale_temp_files(target)

    published_at = datetime.now(UTC)
    result = PublishResult(path=target, published_at=published_at)
    generation = marts_generation(settings)
    # Between segment_pipeline's publish and the recluster DAG's, new marts sit
    # beside segments computed from older ones: the snapshot says so.
    segments_generation = state.read(state.SEGMENTS_MARTS_GENERATION, settings=settings)
    carry_over = (
        refresh is not None
        and "marts" not in refresh
        and generation is not None
        and _snapshot_generation(target) == generation
    )
    rewrite = set(refresh) if carry_over and refresh is not None else set(PUBLISHED_SCHEMAS)
    if carry_over:
        shutil.copyfile(target, tmp)
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
        _check_no_pii_values(con, tables)
        con.execute(f"attach '{tmp}' as snapshot")
        for schema in rewrite:
            con.execute(f"drop schema if exists snapshot.{schema} cascade")
            con.execute(f"create schema snapshot.{schema}")
        for schema, table in tables:
            if schema in rewrite:
                con.execute(
                    f'create table snapshot.{schema}."{table}" as '
                    f'select * from wh.{schema}."{table}"'
                )
            (rows,) = con.execute(f'select count(*) from snapshot.{schema}."{table}"').fetchone()
            result.tables[f"{schema}.{table}"] = rows
        # Kept out of marts/segments so the contract tables stay byte-identical
        # across reruns with unchanged inputs.
        con.execute("drop schema if exists snapshot.meta cascade")
        con.execute("create schema snapshot.meta")
        con.execute(
            "create table snapshot.meta.snapshot_info as select ?::timestamptz as published_at, "
            "?::varchar as run_id, ?::varchar as marts_generation, ?::varchar[] as rewritten, "
            "?::varchar as segments_marts_generation, ?::boolean as segments_current",
            [
                published_at,
                run_id,
                generation,
                sorted(rewrite),
                segments_generation,
                segments_generation is not None and segments_generation == generation,
            ],
        )
        con.execute("detach snapshot")
        con.execute("detach wh")
    except BaseException:
        con.close()
        for leftover in (tmp, Path(f"{tmp}.wal")):
            leftover.unlink(missing_ok=True)
        raise
    con.close()

    os.replace(tmp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename durable
    finally:
        os.close(dir_fd)
    log.info(
        "published %d tables to %s (rewrote %s%s)",
        len(result.tables),
        target,
        ", ".join(sorted(rewrite)),
        ", carried the rest over from the previous snapshot" if carry_over else "",
    )
    return result
