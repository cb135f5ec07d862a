"""One source, one batch: which entries to load, in which transaction, with what outcome.

Completeness rule (docs/governance.md): a file is loaded only once it is *settled* - its
size and mtime unchanged for ``settle_seconds`` (``SEGMENTS_LANDING_SETTLE_SECONDS``; the
loader waits at most that long once per source for files that are younger) and unchanged
again after it was read. A file that is still changing, or a ``.gz`` whose stream ends
early (an upload in progress), is *deferred*: nothing of it is kept, no manifest row, and
the next run tries again. A ``.gz`` still truncated ``TRUNCATED_GZIP_GRACE_SECONDS`` after
its last change is quarantined whole. A file that changes after it was loaded is loud:
a ``changed_after_load`` manifest row and an error in the log (deliveries are immutable;
deliver a new file).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import logging
import os
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from segment_warehouse.config import SOURCES, Settings, get_settings
from segment_warehouse.ingest import csv_reader, files, jsonl_reader
from segment_warehouse.ingest.files import display_name
from segment_warehouse.ingest.manifest import (
    discard_file_rows,
    ensure_raw_tables,
    insert_manifest,
    insert_quarantine,
)
from segment_warehouse.ingest.results import (
    Counts,
    DiskFullError,
    FileContext,
    FileDeferred,
    FileLoadResult,
    FileRejected,
    SourceLoadSummary,
    TruncatedGzip,
)
from segment_warehouse.ingest.specs import SPECS, SourceSpec
from segment_warehouse.ingest.suppression import load_suppression
from segment_warehouse.warehouse import connect

log = logging.getLogger("segment_warehouse.ingest")

# Files are committed together until a batch holds this many rows or compressed bytes
# (or the source ends): a commit costs a WAL flush and checkpoint, which dominated
# loading many ~20 MB files one transaction each. Per-file atomicity still holds, since
# a file's manifest row commits with its data.
BATCH_MAX_ROWS = 1_000_000
BATCH_MAX_FILE_BYTES = 512 << 20
TRUNCATED_GZIP_GRACE_SECONDS = 24 * 3600


def new_batch_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def load_source(
    source: str,
    *,
    settings: Settings | None = None,
    batch_id: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    settle_seconds: float | None = None,
) -> SourceLoadSummary:
    """Load every new file of ``source`` (crm | analytics | transactions | erasure).

    Opens (and closes) its own connection unless ``con`` is given, so one caller can
    run several sources through the single writer connection. ``settle_seconds`` defaults
    to ``settings.landing_settle_seconds`` (SEGMENTS_LANDING_SETTLE_SECONDS).
    """
    if source not in SPECS:
        raise ValueError(f"unknown source {source!r}; expected one of {tuple(SPECS)}")
    settings = settings or get_settings()
    batch_id = batch_id or new_batch_id()
    if settle_seconds is None:
        settle_seconds = settings.landing_settle_seconds
    try:
        if con is None:
            own = connect(settings=settings)
            try:
                return _load_source(own, SPECS[source], settings, batch_id, settle_seconds)
            finally:
                own.close()
        return _load_source(con, SPECS[source], settings, batch_id, settle_seconds)
    except (duckdb.Error, OSError) as exc:
        if _is_disk_full(exc):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on device while loading {source} into {settings.warehouse_db} "
                f"(or DuckDB's temp directory next to it); free space and run again - nothing "
                f"of the interrupted batch was kept ({type(exc).__name__}: {exc})",
            ) from exc
        raise


def load_all(
    *,
    settings: Settings | None = None,
    batch_id: str | None = None,
    sources: Sequence[str] = SOURCES,
    settle_seconds: float | None = None,
) -> dict[str, SourceLoadSummary]:
    """Load all sources with one connection and one batch id."""
    settings = settings or get_settings()
    batch_id = batch_id or new_batch_id()
    con = connect(settings=settings)
    try:
        return {
            s: load_source(
                s, settings=settings, batch_id=batch_id, con=con, settle_seconds=settle_seconds
            )
            for s in sources
        }
    finally:
        con.close()


def _is_disk_full(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "no space left on device" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _load_currencies(settings: Settings) -> tuple[str, ...]:
    seed = settings.dbt_project_dir / "seeds" / "fx_rates.csv"
    with seed.open(newline="", encoding="utf-8") as fh:
        currencies = {row["currency"].strip() for row in csv.DictReader(fh) if row["currency"]}
    if not currencies:
        raise RuntimeError(f"no currencies in {seed}")
    return tuple(sorted(currencies))


def _settle(
    entries: list[tuple[Path, str, os.stat_result]], settle_seconds: float
) -> dict[str, str]:
    """Wait (once) until every new file is ``settle_seconds`` old; the ones that changed
    meanwhile are not settled: rel -> why."""
    if settle_seconds <= 0 or not entries:
        return {}
    now = time.time()
    youngest = max(st.st_mtime for _, _, st in entries)
    wait = settle_seconds - (now - youngest)
    if wait > 0:
        time.sleep(min(wait, settle_seconds))
    unsettled = {}
    for path, rel, st in entries:
        try:
            again = path.lstat()
        except FileNotFoundError:
            unsettled[rel] = "disappeared while settling"
            continue
        if (again.st_size, again.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            unsettled[rel] = f"still being written (changed within {settle_seconds:g} s)"
    return unsettled


def _load_source(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    settings: Settings,
    batch_id: str,
    settle_seconds: float,
) -> SourceLoadSummary:
    ensure_raw_tables(con)
    # Insertion order kept (DuckDB's default; set here in case the caller's connection
    # turned it off). Unordered, every insert of the parallel writers leaves part-filled
    # row groups behind, and the next checkpoint after any later write merges them,
    # rewriting much of the raw table (docs/benchmarks.md, 2026-12-04). Ordered inserts
    # are still parallel, took less CPU there and leave that checkpoint nothing to merge.
    con.execute("set preserve_insertion_order = true")
    summary = SourceLoadSummary(source=spec.name, batch_id=batch_id)
    folder = settings.source_dir(spec.name)
    if not folder.is_dir():
        log.info("%s: no landing folder at %s, nothing to load", spec.name, folder)
        return summary
    currencies = _load_currencies(settings) if spec.currency_column else ()
    suppression = (
        load_suppression(con, settings) if spec.identifiers or spec.kind == "jsonl" else None
    )
    suppressed, key = suppression if suppression else (None, None)

    # Manifest state for this source; kept current in memory after each loaded file.
    # rel -> (sha256, size, mtime_ns, status): a known file with the same size and mtime
    # is not hashed again (the daily run would otherwise re-read the whole landing zone).
    seen_paths: dict[str, tuple[str, int | None, int | None, str]] = {}
    loaded_by_sha: dict[str, tuple[str, int]] = {}
    # Byte sizes of the loaded files: a file of another size cannot be a duplicate, so a
    # JSONL reader can hash it while reading it instead of in a pass of its own.
    loaded_sizes: set[int | None] = set()
    for rel, sha, status, rows, size, mtime_ns in con.execute(
        "select source_file, sha256, status, rows_in_file, file_bytes, file_mtime_ns "
        "from audit.load_manifest where source = ? order by loaded_at, source_file",
        [spec.name],
    ).fetchall():
        seen_paths[rel] = (sha, size, mtime_ns, status)
        if status == "loaded":
            loaded_by_sha.setdefault(sha, (rel, rows))
            loaded_sizes.add(size)

    # Refused entries and new files (known, unchanged ones are skipped before any read).
    refused: list[tuple[Path, str, os.stat_result, str]] = []
    candidates: list[tuple[Path, str, os.stat_result]] = []
    for path in sorted(folder.iterdir(), key=lambda p: os.fsencode(p.name)):
        rel = files.escaped_rel(path, settings.landing_dir)
        st = path.lstat()
        known = seen_paths.get(rel)
        if known and (known[1], known[2]) == (st.st_size, st.st_mtime_ns):
            summary.skipped_already_loaded.append(rel)
            continue
        reason = files.refusal_reason(path, settings.landing_dir)
        if reason is not None:
            refused.append((path, rel, st, reason))
        else:
            candidates.append((path, rel, st))
    unsettled = _settle([c for c in candidates if c[1] not in seen_paths], settle_seconds)

    # Files are committed in batches (see BATCH_MAX_ROWS): the in-memory manifest state
    # above already includes the uncommitted files of the open batch, which is right
    # because they commit together or not at all.
    pending: list[FileLoadResult] = []
    pending_rows = pending_bytes = 0
    # JSONL rows that passed their checks wait here for one large raw insert; it is
    # flushed before every commit, so a file's rows still commit with its manifest row.
    staged = jsonl_reader.PendingRaw(con, spec.table) if spec.kind == "jsonl" else None
    now = datetime.now(UTC)
    con.begin()
    try:
        for path, rel, st, reason in refused:
            ctx = FileContext(spec, path, rel, batch_id, now, currencies)
            result = FileLoadResult(rel, "refused", "", 0, 0, 0, reason=reason)
            insert_manifest(con, ctx, result, st, [])
            seen_paths[rel] = ("", st.st_size, st.st_mtime_ns, "refused")
            pending.append(result)
        for path, rel, st in candidates:
            if rel in unsettled:
                _defer(summary, spec, rel, unsettled[rel])
                continue
            known = seen_paths.get(rel)
            if known:
                sha = files.sha256_file(path)
                if known[0] != sha:
                    result = _changed_after_load(con, spec, path, rel, st, sha, known, batch_id)
                    pending.append(result)
                    seen_paths[rel] = (sha, st.st_size, st.st_mtime_ns, result.status)
                else:
                    summary.skipped_already_loaded.append(rel)
                continue
            hash_first = spec.kind != "jsonl" or bool(loaded_sizes & {st.st_size, None})
            new_sha = files.sha256_file(path) if hash_first else None
            ctx = FileContext(
                spec, path, rel, batch_id, datetime.now(UTC), currencies, suppressed, key
            )
            try:
                duplicate_of = loaded_by_sha.get(new_sha) if new_sha else None
                result = _load_file(con, ctx, new_sha, st, duplicate_of, staged)
            except FileDeferred as why:
                _defer(summary, spec, rel, str(why))
                continue
            pending.append(result)
            pending_rows += result.rows_in_file
            pending_bytes += st.st_size
            seen_paths[rel] = (result.sha256, st.st_size, st.st_mtime_ns, result.status)
            if result.status == "loaded":
                loaded_by_sha.setdefault(result.sha256, (rel, result.rows_in_file))
                loaded_sizes.add(st.st_size)
            if pending_rows >= BATCH_MAX_ROWS or pending_bytes >= BATCH_MAX_FILE_BYTES:
                if staged:
                    staged.flush()
                _commit_batch(con, spec, pending, summary)
                pending, pending_rows, pending_bytes = [], 0, 0
                con.begin()
        if staged:
            staged.flush()
        _commit_batch(con, spec, pending, summary)
    except BaseException:
        # Discards the whole open batch; its files are not in the manifest, so the next
        # run loads them again. (A failed commit may have ended the transaction already.)
        with contextlib.suppress(duckdb.Error):
            con.rollback()
        raise
    return summary


def _defer(summary: SourceLoadSummary, spec: SourceSpec, rel: str, why: str) -> None:
    summary.deferred.append((rel, why))
    log.warning(
        "%s: %s not loaded yet: %s; the next run tries again", spec.name, display_name(rel), why
    )


def _changed_after_load(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    path: Path,
    rel: str,
    st: os.stat_result,
    sha: str,
    known: tuple[str, int | None, int | None, str],
    batch_id: str,
) -> FileLoadResult:
    reason = (
        f"changed after it was loaded (sha256 {known[0][:12]} -> {sha[:12]}); deliveries are "
        "immutable, so it is not reloaded: deliver the new content as a new file"
    )
    log.error("%s: %s %s", spec.name, display_name(rel), reason)
    ctx = FileContext(spec, path, rel, batch_id, datetime.now(UTC), ())
    result = FileLoadResult(rel, "changed_after_load", sha, 0, 0, 0, reason=reason)
    insert_manifest(con, ctx, result, st, [])
    return result


def _commit_batch(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    pending: list[FileLoadResult],
    summary: SourceLoadSummary,
) -> None:
    """Commit the open transaction (every file of the batch) and report its files."""
    con.commit()
    summary.files.extend(pending)
    for result in pending:
        log.info(
            "%s: %s %s: %d rows, %d loaded, %d quarantined%s",
            spec.name,
            display_name(result.source_file),
            result.status,
            result.rows_in_file,
            result.rows_loaded,
            result.rows_quarantined,
            f" ({display_name(result.reason)})" if result.reason else "",
        )


def _load_file(
    con: duckdb.DuckDBPyConnection,
    ctx: FileContext,
    sha: str | None,
    stat: os.stat_result,
    duplicate_of: tuple[str, int] | None,
    staged: jsonl_reader.PendingRaw | None = None,
) -> FileLoadResult:
    """Write one file (raw rows + quarantine rows + manifest row) in the open transaction.

    ``sha`` None: the reader hashes the file while reading it (the caller made sure no
    loaded file has its size, so it cannot be a duplicate).

    The caller owns the transaction (one per batch of files). A file rejected as a whole
    part-way through has its already-written rows deleted here: DuckDB has no savepoints,
    and rolling back would also discard the other files of the batch.
    """
    started = time.perf_counter()
    reason: str | None = None
    counts = Counts()
    if duplicate_of is not None:
        status = "duplicate"
        counts.rows_in_file = duplicate_of[1]
    else:
        status = "loaded"
        try:
            counts = _read_into_warehouse(con, ctx, staged)
            _check_unchanged(ctx, stat)
            sha = sha or counts.sha256
        except TruncatedGzip as rej:
            _discard(con, ctx, staged)
            if time.time() - stat.st_mtime < TRUNCATED_GZIP_GRACE_SECONDS:
                raise FileDeferred(f"{rej.reason} (an upload in progress?)") from None
            status, reason = "file_quarantined", rej.reason
            counts = Counts(rows_in_file=1, rows_quarantined=1)
            insert_quarantine(con, ctx, [(None, rej.reason, rej.excerpt)])
        except FileDeferred:
            _discard(con, ctx, staged)
            raise
        except FileRejected as rej:
            _discard(con, ctx, staged)
            status, reason = "file_quarantined", rej.reason
            counts = Counts(rows_in_file=1, rows_quarantined=1)
            insert_quarantine(con, ctx, [(None, rej.reason, rej.excerpt)])
    if sha is None:  # rejected before the reader finished its hash
        sha = files.sha256_file(ctx.path)
    duration = time.perf_counter() - started
    result = FileLoadResult(
        source_file=ctx.rel,
        status=status,
        sha256=sha,
        rows_in_file=counts.rows_in_file,
        rows_loaded=counts.rows_loaded,
        rows_quarantined=counts.rows_quarantined,
        duplicate_of=duplicate_of[0] if duplicate_of else None,
        reason=reason,
        duration_seconds=duration,
        physical_lines=counts.physical_lines,
    )
    insert_manifest(con, ctx, result, stat, counts.notes)
    return result


def _discard(
    con: duckdb.DuckDBPyConnection, ctx: FileContext, staged: jsonl_reader.PendingRaw | None
) -> None:
    if staged:
        staged.discard(ctx)
    discard_file_rows(con, ctx)


def _check_unchanged(ctx: FileContext, before: os.stat_result) -> None:
    """The file must not have changed while it was read (the completeness rule)."""
    after = ctx.path.lstat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise FileDeferred("changed while it was being read (still being written?)")


def _read_into_warehouse(
    con: duckdb.DuckDBPyConnection, ctx: FileContext, staged: jsonl_reader.PendingRaw | None
) -> Counts:
    name = ctx.path.name.lower()
    if not name.endswith(ctx.spec.suffixes):
        raise FileRejected(
            "unexpected file type (expected "
            + " or ".join(f"*{s}" for s in ctx.spec.suffixes)
            + f" in {ctx.spec.name}/)"
        )
    try:
        if ctx.spec.kind == "jsonl":
            return jsonl_reader.load_jsonl(con, ctx, staged)
        return csv_reader.load_csv(con, ctx)
    except RecursionError:
        raise FileRejected("unreadable: nested too deeply") from None
