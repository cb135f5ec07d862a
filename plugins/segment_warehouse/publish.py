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

``SEGMENTS_PUBLISH_FORMAT=parquet`` (the default on Spark, issue #19) writes
each published table as Parquet into a new snapshot directory
``<analytics_dir>/analytics_parquet/<snapshot-id>/<schema>/<table>/`` and makes
``analytics.duckdb`` a small file of *views* over those files (same names,
same column types), swapped in the same way. A refresh hard-links the
unchanged schemas' files from the previous snapshot instead of rewriting
them; on Spark the marts are Spark's own Parquet when it provably holds the
published rows. Old snapshot directories are garbage-collected after a grace
period, and at once after an erasure (:func:`collect_snapshot_dirs`).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import duckdb

from segment_warehouse import state
from segment_warehouse.config import Settings, get_settings
from segment_warehouse.fileutil import fsync_path
from segment_warehouse.warehouse import quote_ident, quote_literal

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


def _snapshot_info(snapshot: Path) -> dict[str, object] | None:
    """The published snapshot's ``meta.snapshot_info`` row, None if there is none
    (no file, not a snapshot, or locked). Columns a format lacks (a duckdb-format
    snapshot has no ``snapshot_dir``) are simply absent."""
    if not snapshot.exists():
        return None
    try:
        con = duckdb.connect(str(snapshot), read_only=True)
    except duckdb.Error:
        return None
    try:
        cursor = con.execute("select * from meta.snapshot_info")
        row = cursor.fetchone()
        names = [d[0] for d in cursor.description]
    except duckdb.Error:
        return None
    finally:
        con.close()
    return dict(zip(names, row, strict=True)) if row else None


def snapshot_generation(snapshot: Path) -> str | None:
    """The marts generation the current snapshot was built from (None if unknown)."""
    info = _snapshot_info(snapshot)
    return info.get("marts_generation") if info else None  # type: ignore[return-value]


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


def _rewrite_plan(
    refresh: Sequence[str] | None, generation: str | None, snapshot_generation: str | None
) -> tuple[bool, set[str]]:
    """(carry the other schemas over, the schemas to write). Carried over only for a
    refresh without marts when the published snapshot holds the current marts
    generation: every writer of marts renews it, so stale marts are never kept."""
    carry_over = (
        refresh is not None
        and "marts" not in refresh
        and generation is not None
        and snapshot_generation == generation
    )
    rewrite = set(refresh) if carry_over and refresh is not None else set(PUBLISHED_SCHEMAS)
    return carry_over, rewrite


def _publish_session(settings: Settings) -> duckdb.DuckDBPyConnection:
    """An in-memory session with the warehouse attached read-only as ``wh``:
    publishing never takes the warehouse's write lock itself."""
    con = duckdb.connect()
    try:
        con.execute(f"set threads = {int(settings.duckdb_threads)}")
        con.execute(f"set memory_limit = {quote_literal(settings.duckdb_memory_limit)}")
        con.execute(f"attach {quote_literal(str(settings.warehouse_db))} as wh (read_only)")
    except BaseException:
        con.close()
        raise
    return con


def _checked_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """The tables to publish, after the guards every format runs first: there are
    marts, and no raw PII column or value is among them."""
    tables = _published_tables(con)
    if not any(schema == "marts" for schema, _ in tables):
        raise PublishError("nothing to publish: the warehouse has no marts tables yet")
    _check_no_raw_pii(con, tables)
    _check_no_pii_values(con, tables)
    return tables


def _write_snapshot_info(
    con: duckdb.DuckDBPyConnection,
    published_at: datetime,
    run_id: str | None,
    generation: str | None,
    rewrite: set[str],
    segments_generation: str | None,
    extra: dict[str, str],
) -> None:
    """``snapshot.meta.snapshot_info``: one row saying what this snapshot is; ``extra``
    adds varchar columns (the Parquet format's ``format`` and ``snapshot_dir``)."""
    columns = [
        "?::timestamptz as published_at",
        "?::varchar as run_id",
        "?::varchar as marts_generation",
        "?::varchar[] as rewritten",
        "?::varchar as segments_marts_generation",
        "?::boolean as segments_current",
        *(f"?::varchar as {quote_ident(name)}" for name in extra),
    ]
    con.execute(
        f"create table snapshot.meta.snapshot_info as select {', '.join(columns)}",
        [
            published_at,
            run_id,
            generation,
            sorted(rewrite),
            segments_generation,
            segments_generation is not None and segments_generation == generation,
            *extra.values(),
        ],
    )


def _remove_temp_file(tmp: Path) -> None:
    for leftover in (tmp, Path(f"{tmp}.wal")):
        leftover.unlink(missing_ok=True)


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace ``target`` by ``tmp`` atomically and durably."""
    os.replace(tmp, target)
    fsync_path(target.parent)


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
    if settings.publish_format == "parquet":
        return _publish_parquet(run_id=run_id, settings=settings, refresh=refresh)
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
    carry_over, rewrite = _rewrite_plan(refresh, generation, snapshot_generation(target))
    if carry_over:
        shutil.copyfile(target, tmp)
    con = _publish_session(settings)
    try:
        tables = _checked_tables(con)
        con.execute(f"attach {quote_literal(str(tmp))} as snapshot")
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
        _write_snapshot_info(
            con, published_at, run_id, generation, rewrite, segments_generation, {}
        )
        con.execute("detach snapshot")
        con.execute("detach wh")
    except BaseException:
        con.close()
        _remove_temp_file(tmp)
        raise
    con.close()

    _swap_in(tmp, target)
    log.info(
        "published %d tables to %s (rewrote %s%s)",
        len(result.tables),
        target,
        ", ".join(sorted(rewrite)),
        ", carried the rest over from the previous snapshot" if carry_over else "",
    )
    if snapshot_root(settings).is_dir():  # left by an earlier parquet-format publish
        collect_snapshot_dirs(settings, keep=None, erased_since=_last_erasure_at(settings))
    return result


# --- the Parquet format -----------------------------------------------------------

PARQUET_DIR_NAME = "analytics_parquet"
# A superseded snapshot directory stays this long after the snapshot that replaced
# it was published, so a reader that opened the old analytics.duckdb (an analyst's
# session, the API until its next reload check) keeps working; after an erasure it
# goes at once instead (collect_snapshot_dirs).
SNAPSHOT_GRACE_SECONDS = 3600.0
# <UTC timestamp, fixed width so names sort chronologically>-<pid>-<random>
_SNAPSHOT_ID = re.compile(r"^(\d{8}T\d{12})Z-\d+-[0-9a-f]{8}$")
_ID_TIME_FORMAT = "%Y%m%dT%H%M%S%f"
# Types a Parquet round trip does not keep: DuckDB writes HUGEINT as DOUBLE (lossy),
# so those go as text and the view casts them back.
_AS_TEXT_TYPES = ("HUGEINT", "UHUGEINT")


def snapshot_root(settings: Settings) -> Path:
    """Where the Parquet snapshot directories live: beside analytics.duckdb."""
    return settings.analytics_db.parent / PARQUET_DIR_NAME


def _snapshot_time(directory: Path) -> datetime | None:
    match = _SNAPSHOT_ID.match(directory.name)
    if not match:
        return None
    return datetime.strptime(match.group(1), _ID_TIME_FORMAT).replace(tzinfo=UTC)


def _parquet_path_literal(path: Path) -> str:
    """A literal ``read_parquet`` reads as exactly this file.

    ``read_parquet`` globs its argument (``a[1]`` would match ``a1``), so glob
    characters go inside a one-character class; then SQL quoting.
    """
    return quote_literal(re.sub(r"([*?\[])", r"[\1]", str(path)))


def _file_name(name: str) -> str:
    """A table name as one safe path component (catalog names are untrusted)."""
    return quote(name, safe="").replace(".", "%2E") or "%00"


def _last_erasure_at(settings: Settings) -> datetime | None:
    """When the last erasure request was applied (``audit.erasure_log``), None if never."""
    try:
        con = duckdb.connect(str(settings.warehouse_db), read_only=True)
    except duckdb.Error:
        return None
    try:
        (when,) = con.execute("select max(processed_at) from audit.erasure_log").fetchone()
    except duckdb.Error:  # no erasure table yet
        return None
    finally:
        con.close()
    return when


def _referenced_dir(snapshot: Path) -> Path | None:
    """The snapshot directory the published analytics.duckdb's views read, if any."""
    info = _snapshot_info(snapshot)
    directory = info.get("snapshot_dir") if info else None
    return Path(str(directory)) if directory else None


def collect_snapshot_dirs(
    settings: Settings,
    *,
    keep: Path | None,
    erased_since: datetime | None = None,
    now: datetime | None = None,
    grace_seconds: float | None = None,
) -> list[Path]:
    """Remove snapshot directories no current snapshot needs; returns those removed.

    ``keep`` (the one the published analytics.duckdb reads) always stays. Every
    other directory goes once the snapshot after it (the next name in time order;
    for the newest, the published analytics.duckdb's mtime) was published more
    than ``grace_seconds`` ago, and at once if it was written before
    ``erased_since`` (an erasure applied since: its files may hold the person).
    Directories newer than ``keep`` are a publish in progress and stay, unless an
    erasure came after them. Each snapshot's files are its own (reused files are
    hard links), so removing one never breaks another.
    """
    root = snapshot_root(settings)
    if not root.is_dir():
        return []
    now = now or datetime.now(UTC)
    grace = timedelta(seconds=SNAPSHOT_GRACE_SECONDS if grace_seconds is None else grace_seconds)
    dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and _snapshot_time(d) is not None),
        key=lambda d: d.name,
    )
    try:
        published = datetime.fromtimestamp(settings.analytics_db.stat().st_mtime, UTC)
    except FileNotFoundError:
        published = now
    removed: list[Path] = []
    for i, directory in enumerate(dirs):
        if keep is not None and directory.name == keep.name:
            continue
        written = _snapshot_time(directory)
        assert written is not None
        erased = erased_since is not None and written <= erased_since
        if not erased:
            if keep is not None and directory.name > keep.name:
                continue
            superseded = _snapshot_time(dirs[i + 1]) if i + 1 < len(dirs) else published
            if superseded is None or now - superseded < grace:
                continue
        shutil.rmtree(directory)
        removed.append(directory)
        log.info(
            "removed snapshot directory %s (%s)",
            directory.name,
            "written before an erasure" if erased else "superseded beyond the grace period",
        )
    return removed


def purge_snapshots_after_erasure(settings: Settings | None = None) -> list[Path]:
    """Called by erasure: remove every snapshot directory but the published one.

    The published one goes at the next publish, which rebuilds without the person.
    """
    settings = settings or get_settings()
    keep = _referenced_dir(settings.analytics_db)
    return collect_snapshot_dirs(settings, keep=keep, erased_since=datetime.now(UTC))


@dataclass
class _ParquetSnapshot:
    """What the previous parquet-format snapshot offers for reuse."""

    directory: Path
    generation: str | None


def _previous_parquet_snapshot(snapshot: Path) -> _ParquetSnapshot | None:
    info = _snapshot_info(snapshot)
    directory = info.get("snapshot_dir") if info else None  # none in a duckdb-format one
    if not directory or not Path(str(directory)).is_dir():
        return None
    generation = info.get("marts_generation")  # type: ignore[union-attr]
    return _ParquetSnapshot(directory=Path(str(directory)), generation=generation)  # type: ignore[arg-type]


def _columns(con, catalog_table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"describe {catalog_table}").fetchall()]


def _link_or_copy(sources: list[Path], folder: Path) -> list[Path]:
    """Hard links (no bytes rewritten; each snapshot still owns its files), or a copy
    where the filesystem has none (another device, no link support)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, source in enumerate(sources):
        dest = folder / f"part-{i:05d}.parquet"
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)
        out.append(dest)
    return out


def _write_table(con, schema: str, table: str, folder: Path) -> list[Path]:
    """COPY one warehouse table to ``folder/part-00000.parquet``."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / "part-00000.parquet"
    columns = _columns(con, f"wh.{quote_ident(schema)}.{quote_ident(table)}")
    select = ", ".join(
        f"{quote_ident(c)}::varchar as {quote_ident(c)}" if t in _AS_TEXT_TYPES else quote_ident(c)
        for c, t in columns
    )
    con.execute(
        f"copy (select {select} from wh.{quote_ident(schema)}.{quote_ident(table)}) "
        f"to {quote_literal(str(dest))} (format parquet, compression zstd)"
    )
    fsync_path(dest)
    return [dest]


def _view_sql(con, schema: str, table: str, files: list[Path]) -> str:
    """A view over ``files`` with the warehouse table's column names and types.

    The paths are absolute: DuckDB resolves a relative ``read_parquet`` path in a
    view against the *reader's* working directory (tested), and analysts and the
    API open analytics.duckdb from anywhere. The price: moving the warehouse dir
    needs a republish.
    """
    source = "read_parquet([" + ", ".join(_parquet_path_literal(f) for f in files) + "])"
    wanted = _columns(con, f"wh.{quote_ident(schema)}.{quote_ident(table)}")
    stored = dict(_columns(con, f"(select * from {source})"))
    select = ", ".join(
        quote_ident(c)
        if stored.get(c) == t
        else f"cast({quote_ident(c)} as {t}) as {quote_ident(c)}"  # e.g. ENUM, HUGEINT
        for c, t in wanted
    )
    view = f"snapshot.{quote_ident(schema)}.{quote_ident(table)}"
    return f"create view {view} as select {select} from {source}"


def _spark_marts_files(con, settings: Settings, marts: list[str]) -> dict[str, list[Path]]:
    """Spark's own Parquet for each marts table it provably holds, else nothing.

    ``built_parquet`` (``built_exports.json``) is what the last Spark build wrote;
    an erasure or a DuckDB build since may have changed ``warehouse.duckdb``. A
    table is taken from Spark only when the export lists exactly the published
    marts and its files have the warehouse table's columns, types, row count and
    an order-insensitive hash of every row; anything else is copied from DuckDB.
    """
    if settings.engine != "spark":
        return {}
    from segment_warehouse.spark.runner import built_exports, built_exports_file
    from segment_warehouse.spark.session import spark_dir

    built_root = (spark_dir(settings) / "built_parquet").resolve()
    try:
        exports = built_exports(settings)
    except (OSError, ValueError) as exc:
        log.info("marts copied from DuckDB: no readable %s (%s)", built_exports_file(settings), exc)
        return {}
    listed = {e.get("name"): e for e in exports if e.get("schema") == "marts"}
    if set(listed) != set(marts):
        log.info(
            "marts copied from DuckDB: Spark's export lists %s, the warehouse publishes %s",
            sorted(map(str, listed)),
            sorted(marts),
        )
        return {}
    found: dict[str, list[Path]] = {}
    for table in marts:
        folder = Path(str(listed[table].get("folder", ""))).resolve()
        files = sorted(folder.glob("*.parquet")) if folder.is_relative_to(built_root) else []
        if not files:
            log.info("marts.%s copied from DuckDB: no Spark Parquet under %s", table, built_root)
            continue
        source = "read_parquet([" + ", ".join(_parquet_path_literal(f) for f in files) + "])"
        wh = f"wh.marts.{quote_ident(table)}"
        columns = _columns(con, wh)
        if _columns(con, f"(select * from {source})") != columns:
            log.info("marts.%s copied from DuckDB: Spark's Parquet has other columns", table)
            continue
        row_hash = "hash(" + ", ".join(quote_ident(c) for c, _ in columns) + ")"
        digest = f"select count(*), sum({row_hash})::hugeint from "
        if con.execute(digest + source).fetchone() != con.execute(digest + wh).fetchone():
            log.info("marts.%s copied from DuckDB: Spark's Parquet holds other rows", table)
            continue
        found[table] = files
    return found


def _publish_parquet(
    *, run_id: str | None, settings: Settings, refresh: Sequence[str] | None
) -> PublishResult:
    target = settings.analytics_db
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    _remove_stale_temp_files(target)
    published_at = datetime.now(UTC)
    result = PublishResult(path=target, published_at=published_at)
    root = snapshot_root(settings)
    snapshot_id = f"{published_at.strftime(_ID_TIME_FORMAT)}Z-{os.getpid()}-{secrets.token_hex(4)}"
    directory = root / snapshot_id
    generation = marts_generation(settings)
    segments_generation = state.read(state.SEGMENTS_MARTS_GENERATION, settings=settings)
    previous = _previous_parquet_snapshot(target)
    _, rewrite = _rewrite_plan(refresh, generation, previous.generation if previous else None)
    con = _publish_session(settings)
    started = time.monotonic()
    sources = {"written": 0, "linked": 0, "spark": 0}
    try:
        tables = _checked_tables(con)
        spark_files = (
            _spark_marts_files(con, settings, [t for s, t in tables if s == "marts"])
            if "marts" in rewrite
            else {}
        )
        directory.mkdir(parents=True)
        con.execute(f"attach {quote_literal(str(tmp))} as snapshot")
        for schema in sorted({s for s, _ in tables} | {"meta"}):
            con.execute(f"create schema snapshot.{quote_ident(schema)}")
        for schema, table in tables:
            folder = directory / _file_name(schema) / _file_name(table)
            old = (
                sorted((previous.directory / folder.relative_to(directory)).glob("*.parquet"))
                if previous is not None and schema not in rewrite
                else []
            )
            if old:  # unchanged since the previous snapshot: its files, not a rewrite
                files = _link_or_copy(old, folder)
                sources["linked"] += 1
            elif schema == "marts" and table in spark_files:
                files = _link_or_copy(spark_files[table], folder)
                sources["spark"] += 1
            else:
                if schema not in rewrite:
                    log.warning("%s.%s missing from the previous snapshot: written", schema, table)
                files = _write_table(con, schema, table, folder)
                sources["written"] += 1
            con.execute(_view_sql(con, schema, table, files))
            # Counting through the view proves it resolves before anyone sees it.
            (rows,) = con.execute(
                f"select count(*) from snapshot.{quote_ident(schema)}.{quote_ident(table)}"
            ).fetchone()
            result.tables[f"{schema}.{table}"] = rows
        for path in [directory, *directory.rglob("*")]:
            if path.is_dir():
                fsync_path(path)
        _write_snapshot_info(
            con,
            published_at,
            run_id,
            generation,
            rewrite,
            segments_generation,
            {"format": "parquet", "snapshot_dir": str(directory)},
        )
        con.execute("detach snapshot")
        con.execute("detach wh")
    except BaseException:
        con.close()
        _remove_temp_file(tmp)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    con.close()

    _swap_in(tmp, target)
    removed = collect_snapshot_dirs(
        settings, keep=directory, erased_since=_last_erasure_at(settings)
    )
    log.info(
        "published %d tables as views over %s in %.1f s (%d written, %d reused from the "
        "previous snapshot, %d from Spark's Parquet; rewrote %s); %d old snapshot dir(s) removed",
        len(result.tables), directory, time.monotonic() - started, sources["written"],
        sources["linked"], sources["spark"], ", ".join(sorted(rewrite)), len(removed),
    )  # fmt: skip
    return result
