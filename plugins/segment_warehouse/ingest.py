"""Extract/load: landing-zone files -> ``raw.*`` + ``audit.quarantine`` + ``audit.load_manifest``.

Contract: DESIGN.md section 3 and docs/ARCHITECTURE.md (raw and audit schemas).

How a run works, per source:

* every regular file directly under ``landing_dir/<source>/`` is considered, in name order;
* a path already in ``audit.load_manifest`` is skipped (deliveries are immutable);
* a file whose sha256 equals a file of the same source already *loaded* gets a manifest
  row with status ``duplicate`` and no data rows;
* otherwise the file is parsed and checked; passing rows go to the raw table, failing rows
  to ``audit.quarantine`` with a specific reason and the physical line(s), and one manifest
  row records ``rows_in_file = rows_loaded + rows_quarantined``;
* a file that cannot be read as its source at all (unexpected name, not gzip, truncated
  gzip, not UTF-8, empty, missing required header columns) becomes one whole-file
  quarantine row (``line_number`` null) and a ``file_quarantined`` manifest row with
  ``rows_in_file = rows_quarantined = 1``.

Everything a file writes (raw rows, quarantine rows, manifest row) commits in the same
DuckDB transaction, so a crash mid-file leaves nothing and the next run simply loads it
again. Several files share one transaction (up to ``BATCH_MAX_ROWS`` rows or
``BATCH_MAX_FILE_BYTES``, and never across sources), because a commit per ~20 MB file
cost more than parsing it; a crash then discards the whole open batch, and the next run
reloads all of its files. A file rejected as a whole part-way through has its rows
deleted inside the transaction (DuckDB has no savepoints).

Decisions worth knowing:

* ``_line_number`` is the first physical line of the record (a quoted CSV field may
  span lines; the raw_record in quarantine then holds all of them).
* Blank lines (JSONL and CSV) are data-less but still physical input: they are counted in
  ``rows_in_file`` and quarantined with reason ``blank line`` so nothing disappears
  unseen. The terminating newline of the last line is not a blank line. A file with no
  content other than blank lines is quarantined whole as empty.
* A header-only CSV is a valid, empty delivery (``loaded``, 0 rows).
* ``birth_date``, ``marketing_consent``, ``channel``, ``country`` are *soft*: a bad value
  does not make the contact/order unusable, so the row is loaded as landed and staging
  casts it (bad value -> null). Quarantining a contact for a typo in its birth date would
  drop a real customer and their identity links.
* ``status`` and ``currency`` are matched exactly (contract values are lower-case statuses
  and ISO 4217 upper-case codes); timestamps must start with ``YYYY-MM-DD`` and
  ``try_cast(... as timestamptz)`` must succeed (that rejects ``epoch``/``infinity``,
  which DuckDB would otherwise accept).
* Missing *optional* CSV columns are allowed (loaded as null, noted in the manifest);
  extra columns/JSON fields are ignored and logged once per file and noted in the manifest
  (JSON fields: detected on the first ``EXTRA_FIELD_SAMPLE_LINES`` lines of the file).

Performance: JSONL is never handled row by row in Python. The decompressed bytes are
split into lines with numpy, wrapped zero-copy as an Arrow string array (Arrow validates
UTF-8), and validated/extracted in DuckDB with ``json_valid``/``from_json``. CSV is
tokenised by Python's C ``csv`` module (the only parser here that reports exact physical
line numbers with embedded newlines) and checked set-based in DuckDB.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import logging
import os
import queue
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from segment_warehouse.config import SOURCES, Settings, get_settings
from segment_warehouse.warehouse import connect, ensure_schemas

log = logging.getLogger(__name__)
_T = TypeVar("_T")

LINEAGE_COLUMNS: tuple[str, ...] = ("_source_file", "_line_number", "_loaded_at", "_batch_id")
ORDER_STATUSES: tuple[str, ...] = ("completed", "refunded", "cancelled", "pending")
EVENT_TYPES: tuple[str, ...] = ("identify", "page", "track")

# Decompressed bytes per JSONL chunk and rows per CSV flush: bounds memory on large files
# while keeping DuckDB batches big enough to be efficient.
JSONL_CHUNK_BYTES = 64 << 20
ARROW_BATCH_ROWS = 16_384
CSV_FLUSH_ROWS = 200_000
# Files are committed together until a batch holds this many rows or compressed bytes
# (or the source ends): a commit costs a WAL flush and checkpoint, which dominated
# loading many ~20 MB files one transaction each. Per-file atomicity still holds, since
# a file's manifest row commits with its data.
BATCH_MAX_ROWS = 1_000_000
BATCH_MAX_FILE_BYTES = 512 << 20
# Extra (ignored) JSON fields are looked for on the first lines of each file only: the
# contract just asks for them to be ignored and noted, and scanning every line's keys
# costs almost as much as the raw insert (at 1 M customers a file has ~30 k lines).
EXTRA_FIELD_SAMPLE_LINES = 2_000
# A quarantined record with an unterminated quote can swallow the rest of a file; keep
# the audit row readable.
MAX_RAW_RECORD_CHARS = 65_536
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class SourceSpec:
    """How one landing source maps to its raw table."""

    name: str
    table: str
    kind: str  # "csv" | "jsonl"
    columns: tuple[str, ...]
    required: tuple[str, ...]
    timestamps: tuple[str, ...] = ()
    amounts: tuple[str, ...] = ()

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (f".{self.kind}", f".{self.kind}.gz")


SPECS: dict[str, SourceSpec] = {
    "crm": SourceSpec(
        name="crm",
        table="raw.crm_contacts",
        kind="csv",
        columns=(
            "contact_id",
            "email",
            "phone",
            "first_name",
            "last_name",
            "birth_date",
            "gender",
            "country",
            "city",
            "postal_code",
            "marketing_consent",
            "created_at",
            "updated_at",
        ),
        required=("contact_id", "updated_at"),
        timestamps=("created_at", "updated_at"),
    ),
    "analytics": SourceSpec(
        name="analytics",
        table="raw.analytics_events",
        kind="jsonl",
        columns=(
            "message_id",
            "type",
            "event",
            "anonymous_id",
            "user_id",
            "timestamp",
            "context",
            "properties",
            "traits",
        ),
        required=("messageId", "type", "timestamp"),
        timestamps=("timestamp",),
    ),
    "transactions": SourceSpec(
        name="transactions",
        table="raw.transactions_orders",
        kind="csv",
        columns=(
            "order_id",
            "contact_id",
            "email",
            "order_ts",
            "status",
            "currency",
            "total_amount",
            "discount_amount",
            "items_count",
            "channel",
            "updated_at",
        ),
        required=("order_id", "order_ts", "status", "currency", "total_amount"),
        timestamps=("order_ts", "updated_at"),
        amounts=("total_amount", "discount_amount"),
    ),
    "erasure": SourceSpec(
        name="erasure",
        table="raw.erasure_requests",
        kind="csv",
        columns=("request_id", "contact_id", "email", "requested_at"),
        required=("request_id", "requested_at"),
        timestamps=("requested_at",),
    ),
}

# JSON field -> raw column, in raw column order.
ANALYTICS_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("messageId", "message_id", "VARCHAR"),
    ("type", "type", "VARCHAR"),
    ("event", "event", "VARCHAR"),
    ("anonymousId", "anonymous_id", "VARCHAR"),
    ("userId", "user_id", "VARCHAR"),
    ("timestamp", "timestamp", "VARCHAR"),
    ("context", "context", "JSON"),
    ("properties", "properties", "JSON"),
    ("traits", "traits", "JSON"),
)


ERASED_REASON = "erased subject (right to erasure): record not kept"


def load_suppression(con: duckdb.DuckDBPyConnection, settings: Settings) -> bool:
    """Expose the suppressed identifier hashes to SQL as session variables.

    Returns False (no extra per-row work) when nobody has been erased. The key
    goes into a session variable, never into SQL text or the catalog.
    """
    from segment_warehouse.erasure import suppression_hashes

    hashes = suppression_hashes(con)
    if not hashes:
        return False
    con.execute("set variable segments_erasure_key = ?", [settings.pii_key()])
    for kind in ("contact_id", "email", "anonymous_id", "order_id"):
        con.execute(f"set variable segments_erased_{kind} = ?", [sorted(hashes.get(kind, ()))])
    return True


def erased_condition(identifiers: dict[str, str]) -> str:
    """SQL condition: any of the row's identifiers (kind -> expression) was erased."""
    parts = []
    for kind, expr in identifiers.items():
        value = f"lower(trim({expr}))" if kind == "email" else f"trim({expr})"
        digest = f"sha256(getvariable('segments_erasure_key') || chr(31) || {value})"
        parts.append(
            f"coalesce(list_contains(getvariable('segments_erased_{kind}'), {digest}), false)"
        )
    return " or ".join(parts)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class FileLoadResult:
    """Outcome of one landing file (mirrors its manifest row)."""

    source_file: str
    status: str  # loaded | duplicate | file_quarantined
    sha256: str
    rows_in_file: int
    rows_loaded: int
    rows_quarantined: int
    duplicate_of: str | None = None
    reason: str | None = None  # whole-file quarantine reason
    duration_seconds: float = 0.0


@dataclass
class SourceLoadSummary:
    """What :func:`load_source` did for one source in one batch."""

    source: str
    batch_id: str
    files: list[FileLoadResult] = field(default_factory=list)
    skipped_already_loaded: list[str] = field(default_factory=list)

    @property
    def rows_loaded(self) -> int:
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)

    @property
    def files_loaded(self) -> int:
        return sum(f.status == "loaded" for f in self.files)

    @property
    def files_quarantined(self) -> int:
        return sum(f.status == "file_quarantined" for f in self.files)

    @property
    def files_duplicate(self) -> int:
        return sum(f.status == "duplicate" for f in self.files)


class FileRejected(Exception):
    """The file cannot be read as its source; it is quarantined whole."""

    def __init__(self, reason: str, excerpt: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.excerpt = excerpt


@dataclass(frozen=True)
class _FileContext:
    spec: SourceSpec
    path: Path
    rel: str
    batch_id: str
    loaded_at: datetime
    currencies: tuple[str, ...]
    # True when audit.erasure_suppression has entries: rows of erased people are
    # quarantined without their content (see segment_warehouse.erasure).
    suppress_erased: bool = False


@dataclass
class _Counts:
    rows_in_file: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- public API
def new_batch_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


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


def load_source(
    source: str,
    *,
    settings: Settings | None = None,
    batch_id: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> SourceLoadSummary:
    """Load every new file of ``source`` (crm | analytics | transactions | erasure).

    Opens (and closes) its own connection unless ``con`` is given, so one caller can
    run several sources through the single writer connection.
    """
    if source not in SPECS:
        raise ValueError(f"unknown source {source!r}; expected one of {tuple(SPECS)}")
    settings = settings or get_settings()
    batch_id = batch_id or new_batch_id()
    if con is None:
        own = connect(settings=settings)
        try:
            return _load_source(own, SPECS[source], settings, batch_id)
        finally:
            own.close()
    return _load_source(con, SPECS[source], settings, batch_id)


def load_all(
    *,
    settings: Settings | None = None,
    batch_id: str | None = None,
    sources: Sequence[str] = SOURCES,
) -> dict[str, SourceLoadSummary]:
    """Load all sources with one connection and one batch id."""
    settings = settings or get_settings()
    batch_id = batch_id or new_batch_id()
    con = connect(settings=settings)
    try:
        return {s: load_source(s, settings=settings, batch_id=batch_id, con=con) for s in sources}
    finally:
        con.close()


# --------------------------------------------------------------------------- per source
def _load_source(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec, settings: Settings, batch_id: str
) -> SourceLoadSummary:
    ensure_raw_tables(con)
    # Raw rows carry their file and line number; their physical order in the table
    # means nothing, and not keeping it lets DuckDB write in parallel (~15 % faster).
    con.execute("set preserve_insertion_order = false")
    summary = SourceLoadSummary(source=spec.name, batch_id=batch_id)
    folder = settings.source_dir(spec.name)
    if not folder.is_dir():
        log.info("%s: no landing folder at %s, nothing to load", spec.name, folder)
        return summary
    currencies = _load_currencies(settings) if spec.name == "transactions" else ()
    suppress = spec.name != "erasure" and load_suppression(con, settings)

    # Manifest state for this source; kept current in memory after each loaded file.
    # rel -> (sha256, size, mtime_ns): a known file with the same size and mtime is
    # not hashed again (the daily run would otherwise re-read the whole landing zone).
    seen_paths: dict[str, tuple[str, int | None, int | None]] = {}
    loaded_by_sha: dict[str, tuple[str, int]] = {}
    for rel, sha, status, rows, size, mtime_ns in con.execute(
        "select source_file, sha256, status, rows_in_file, file_bytes, file_mtime_ns "
        "from audit.load_manifest where source = ? order by loaded_at, source_file",
        [spec.name],
    ).fetchall():
        seen_paths[rel] = (sha, size, mtime_ns)
        if status == "loaded":
            loaded_by_sha.setdefault(sha, (rel, rows))

    # Files are committed in batches (see BATCH_MAX_ROWS): the in-memory manifest state
    # above already includes the uncommitted files of the open batch, which is right
    # because they commit together or not at all.
    pending: list[FileLoadResult] = []
    pending_rows = pending_bytes = 0
    con.begin()
    try:
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if not path.is_file():
                log.warning("%s: ignoring non-file entry %s", spec.name, path)
                continue
            rel = path.relative_to(settings.landing_dir).as_posix()
            stat = path.stat()
            known = seen_paths.get(rel)
            if known and (known[1], known[2]) == (stat.st_size, stat.st_mtime_ns):
                summary.skipped_already_loaded.append(rel)
                continue
            sha = _sha256(path)
            if known:
                if known[0] != sha:
                    log.warning(
                        "%s: %s changed after it was loaded (sha256 %s -> %s); deliveries "
                        "are immutable, so it is not reloaded - deliver a new file instead",
                        spec.name,
                        rel,
                        known[0][:12],
                        sha[:12],
                    )
                summary.skipped_already_loaded.append(rel)
                continue
            ctx = _FileContext(spec, path, rel, batch_id, datetime.now(UTC), currencies, suppress)
            result = _load_file(con, ctx, sha, stat, loaded_by_sha.get(sha))
            pending.append(result)
            pending_rows += result.rows_in_file
            pending_bytes += stat.st_size
            seen_paths[rel] = (sha, stat.st_size, stat.st_mtime_ns)
            if result.status == "loaded":
                loaded_by_sha.setdefault(sha, (rel, result.rows_in_file))
            if pending_rows >= BATCH_MAX_ROWS or pending_bytes >= BATCH_MAX_FILE_BYTES:
                _commit_batch(con, spec, pending, summary)
                pending, pending_rows, pending_bytes = [], 0, 0
                con.begin()
        _commit_batch(con, spec, pending, summary)
    except BaseException:
        # Discards the whole open batch; its files are not in the manifest, so the next
        # run loads them again. (A failed commit may have ended the transaction already.)
        with contextlib.suppress(duckdb.TransactionException):
            con.rollback()
        raise
    return summary


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
            result.source_file,
            result.status,
            result.rows_in_file,
            result.rows_loaded,
            result.rows_quarantined,
            f" ({result.reason})" if result.reason else "",
        )


def _load_file(
    con: duckdb.DuckDBPyConnection,
    ctx: _FileContext,
    sha: str,
    stat: os.stat_result,
    duplicate_of: tuple[str, int] | None,
) -> FileLoadResult:
    """Write one file (raw rows + quarantine rows + manifest row) in the open transaction.

    The caller owns the transaction (one per batch of files). A file rejected as a whole
    part-way through has its already-written rows deleted here: DuckDB has no savepoints,
    and rolling back would also discard the other files of the batch.
    """
    started = time.perf_counter()
    reason: str | None = None
    counts = _Counts()
    if duplicate_of is not None:
        status = "duplicate"
        counts.rows_in_file = duplicate_of[1]
    else:
        status = "loaded"
        try:
            counts = _read_into_warehouse(con, ctx)
        except FileRejected as rej:
            _discard_file_rows(con, ctx)
            status, reason = "file_quarantined", rej.reason
            counts = _Counts(rows_in_file=1, rows_quarantined=1)
            _insert_quarantine(con, ctx, [(None, rej.reason, rej.excerpt)])
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
    )
    _insert_manifest(con, ctx, result, stat, counts.notes)
    return result


def _discard_file_rows(con: duckdb.DuckDBPyConnection, ctx: _FileContext) -> None:
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


def _read_into_warehouse(con: duckdb.DuckDBPyConnection, ctx: _FileContext) -> _Counts:
    name = ctx.path.name.lower()
    if not name.endswith(ctx.spec.suffixes):
        raise FileRejected(
            "unexpected file type (expected "
            + " or ".join(f"*{s}" for s in ctx.spec.suffixes)
            + f" in {ctx.spec.name}/)"
        )
    if ctx.spec.kind == "jsonl":
        return _load_jsonl(con, ctx)
    return _load_csv(con, ctx)


def _insert_manifest(
    con: duckdb.DuckDBPyConnection,
    ctx: _FileContext,
    result: FileLoadResult,
    stat: os.stat_result,
    notes: list[str],
) -> None:
    con.execute(
        """insert into audit.load_manifest (batch_id, source, source_file, sha256, file_bytes,
               status, duplicate_of, rows_in_file, rows_loaded, rows_quarantined, loaded_at,
               duration_seconds, notes, file_mtime_ns)
           values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            ctx.batch_id,
            ctx.spec.name,
            ctx.rel,
            result.sha256,
            stat.st_size,
            result.status,
            result.duplicate_of,
            result.rows_in_file,
            result.rows_loaded,
            result.rows_quarantined,
            ctx.loaded_at,
            result.duration_seconds,
            "; ".join(notes) or None,
            stat.st_mtime_ns,
        ],
    )


def _insert_quarantine(
    con: duckdb.DuckDBPyConnection,
    ctx: _FileContext,
    rows: Sequence[tuple[int | None, str, str | None]],
) -> None:
    """Insert (line_number, reason, raw_record) rows for this file."""
    if not rows:
        return
    lines, reasons, raws = zip(*rows, strict=True)
    tbl = pa.table(
        {
            "line_number": pa.array(lines, pa.int64()),
            "reason": pa.array(reasons, pa.string()),
            # An erased person's record is not kept, only the fact it arrived.
            "raw_record": pa.array(
                [
                    None if reason == ERASED_REASON else _cap(r)
                    for r, reason in zip(raws, reasons, strict=True)
                ],
                pa.string(),
            ),
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
        con.unregister("_ingest_quarantine")


# --------------------------------------------------------------------------- file access
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _open_bytes(path: Path) -> Iterator[IO[bytes]]:
    """Decompressed byte stream of a landing file; unreadable input -> FileRejected."""
    is_gz = path.name.lower().endswith(".gz")
    with path.open("rb") as probe:
        head = probe.read(2)
    if is_gz and head != GZIP_MAGIC:
        raise FileRejected("not a gzip file (the name ends in .gz but the content is not gzip)")
    if not is_gz and head == GZIP_MAGIC:
        raise FileRejected("file is gzip-compressed but its name does not end in .gz")
    with gzip.open(path, "rb") if is_gz else path.open("rb") as fh:
        try:
            yield fh
        except EOFError as exc:
            raise FileRejected(f"truncated gzip file: {exc}") from exc
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise FileRejected(f"corrupt gzip file: {exc}") from exc


def _iter_line_chunks(stream: IO[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """Yield pieces of ``stream`` that end on a newline (the last one may not)."""
    carry = b""
    while block := stream.read(chunk_bytes):
        buf = carry + block if carry else block
        cut = buf.rfind(b"\n")
        if cut < 0:
            carry = buf  # one very long line: keep reading
            continue
        carry = buf[cut + 1 :]
        yield buf[: cut + 1]
    if carry:
        yield carry


def _utf8_error_line(path: Path) -> str:
    """Describe where the first invalid UTF-8 byte is (slow path, only on failure)."""
    line = 1
    with _open_bytes(path) as fh:
        for chunk in _iter_line_chunks(fh, 8 << 20):
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                line += chunk.count(b"\n", 0, exc.start)
                bad = chunk[exc.start : exc.start + 4]
                return f"not valid UTF-8: {exc.reason} (byte {bad[:1]!r}) at line {line}"
            line += chunk.count(b"\n")
    return "not valid UTF-8"


def _cap(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_RAW_RECORD_CHARS:
        return text
    return text[:MAX_RAW_RECORD_CHARS] + f"... [truncated, {len(text)} chars]"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _load_currencies(settings: Settings) -> tuple[str, ...]:
    seed = settings.dbt_project_dir / "seeds" / "fx_rates.csv"
    with seed.open(newline="", encoding="utf-8") as fh:
        currencies = {row["currency"].strip() for row in csv.DictReader(fh) if row["currency"]}
    if not currencies:
        raise RuntimeError(f"no currencies in {seed}")
    return tuple(sorted(currencies))


# --------------------------------------------------------------------------- SQL checks
def _quoted(expr: str) -> str:
    """SQL for ``'value'`` in a reason, shortened so one bad cell cannot bloat the audit."""
    return f"'''' || left({expr}, 100) || ''''"


def _missing(expr: str) -> str:
    return f"coalesce(trim({expr}), '') = ''"


def _bad_timestamp(expr: str) -> str:
    # try_cast alone also accepts 'epoch', 'infinity', ...; the contract says ISO-8601.
    return (
        f"not (regexp_matches({expr}, '^\\s*\\d{{4}}-\\d{{2}}-\\d{{2}}') "
        f"and try_cast({expr} as timestamptz) is not null)"
    )


def _bad_decimal(expr: str) -> str:
    return f"not regexp_full_match({expr}, '\\s*[+-]?(\\d+(\\.\\d*)?|\\.\\d+)\\s*')"


def _csv_checks(
    spec: SourceSpec,
    col: Callable[[str], str],
    currencies: Sequence[str],
    suppress_erased: bool = False,
) -> str:
    """CASE expression giving the first contract violation of a CSV row, else NULL."""
    whens: list[tuple[str, str]] = []
    if suppress_erased:
        # First, so an erased person's row is never kept even when it is also malformed.
        ids = {
            "crm": {"contact_id": col("contact_id"), "email": col("email")},
            "transactions": {
                "order_id": col("order_id"),
                "contact_id": col("contact_id"),
                "email": col("email"),
            },
        }.get(spec.name, {})
        if ids:
            whens.append((erased_condition(ids), _sql_str(ERASED_REASON)))
    whens += [(_missing(col(c)), _sql_str(f"missing required field: {c}")) for c in spec.required]
    if spec.name == "erasure":
        whens.append(
            (
                f"{_missing(col('contact_id'))} and {_missing(col('email'))}",
                _sql_str("missing required field: contact_id or email (one is required)"),
            )
        )
    for c in spec.timestamps:
        whens.append(
            (
                f"not {_missing(col(c))} and {_bad_timestamp(col(c))}",
                f"'unparseable timestamp in {c}: ' || {_quoted(col(c))}",
            )
        )
    for c in spec.amounts:
        whens.append(
            (
                f"not {_missing(col(c))} and {_bad_decimal(col(c))}",
                f"'invalid decimal in {c}: ' || {_quoted(col(c))}",
            )
        )
        whens.append(
            (
                f"not {_missing(col(c))} and cast(trim({col(c)}) as double) < 0",
                f"'negative {c}: ' || trim({col(c)})",
            )
        )
    if spec.name == "transactions":
        statuses = ", ".join(_sql_str(s) for s in ORDER_STATUSES)
        whens.append(
            (
                f"coalesce(lower(trim({col('status')})), '') not in ({statuses})",
                f"'unknown status: ' || {_quoted(col('status'))} "
                f"|| ' (expected {', '.join(ORDER_STATUSES)})'",
            )
        )
        currency_list = ", ".join(_sql_str(c) for c in currencies)
        whens.append(
            (
                f"coalesce(upper(trim({col('currency')})), '') not in ({currency_list})",
                f"'unknown currency: ' || left({col('currency')}, 100)",
            )
        )
        items = col("items_count")
        whens.append(
            (
                f"not {_missing(items)} and not (regexp_full_match({items}, '\\s*\\+?\\d+\\s*') "
                f"and try_cast(trim({items}) as hugeint) >= 1)",
                f"'invalid items_count: ' || {_quoted(items)} || ' (expected an integer >= 1)'",
            )
        )
    body = "\n".join(f"    when {cond} then {reason}" for cond, reason in whens)
    return f"case\n{body}\n    else null end"


# --------------------------------------------------------------------------- CSV
def _load_csv(con: duckdb.DuckDBPyConnection, ctx: _FileContext) -> _Counts:
    data = _read_whole(ctx.path, CSV_FAST_PATH_MAX_BYTES)
    if data is not None and _is_plain_csv(data):
        return _load_plain_csv(con, ctx, data)
    spec = ctx.spec
    counts = _Counts()
    # Field limit: the default 128 KiB would abort a whole file on one huge (bad) cell.
    csv.field_size_limit(1 << 30)
    # Rows failing the field-count check (counted here) or the SQL checks (counted by
    # _flush_csv): (first line, last line, reason).
    bad: list[tuple[int, int, str]] = []
    # A file that fit in memory is parsed from the bytes already read, not decompressed again.
    source = contextlib.nullcontext(io.BytesIO(data)) if data is not None else None
    with source or _open_bytes(ctx.path) as raw:
        # utf-8-sig: tolerate a BOM, which spreadsheet exports like to add.
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
        reader = csv.reader(text)
        try:
            try:
                header = next(reader)
            except StopIteration:
                raise FileRejected("empty file") from None
            index = _check_header(spec, ctx.rel, header, counts)
            width = len(header)
            rows: list[list[str]] = []
            starts: list[int] = []
            ends: list[int] = []
            prev = reader.line_num
            # The only per-row Python: tokenising is C, this loop just tracks line numbers
            # and field counts; every value check runs set-based in DuckDB on flush.
            for row in reader:
                end = reader.line_num
                if len(row) == width:
                    rows.append(row)
                    starts.append(prev + 1)
                    ends.append(end)
                    if len(rows) >= CSV_FLUSH_ROWS:
                        bad.extend(_flush_csv(con, ctx, index, rows, starts, ends, counts))
                        rows, starts, ends = [], [], []
                elif row:
                    counts.rows_in_file += 1
                    bad.append(
                        (prev + 1, end, f"wrong number of fields: expected {width}, got {len(row)}")
                    )
                else:
                    counts.rows_in_file += 1
                    bad.append((prev + 1, end, "blank line"))
                prev = end
            if rows:
                bad.extend(_flush_csv(con, ctx, index, rows, starts, ends, counts))
        except UnicodeDecodeError:
            raise FileRejected(_utf8_error_line(ctx.path)) from None
        except csv.Error as exc:
            raise FileRejected(f"unreadable CSV at line {reader.line_num}: {exc}") from None
    counts.rows_quarantined = _quarantine_csv_rows(con, ctx, bad)
    return counts


def _quarantine_csv_rows(
    con: duckdb.DuckDBPyConnection, ctx: _FileContext, bad: list[tuple[int, int, str]]
) -> int:
    """Quarantine rejected rows (first line, last line, reason) with their physical text."""
    if bad:
        physical = _physical_lines(ctx.path, [(s, e) for s, e, _ in bad])
        _insert_quarantine(con, ctx, [(s, reason, physical.get(s)) for s, _, reason in bad])
    return len(bad)


def _check_header(spec: SourceSpec, rel: str, header: list[str], counts: _Counts) -> dict[str, int]:
    """Map raw column -> position in the file; reject unusable headers."""
    excerpt = ",".join(header)[:200]
    if not any(h.strip() for h in header):
        raise FileRejected("missing header row (line 1 is blank)", excerpt)
    names = [h.strip().lower() for h in header]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FileRejected(f"duplicate column(s) in header: {', '.join(dupes)}", excerpt)
    missing_req = [c for c in spec.required if c not in names]
    if missing_req:
        raise FileRejected(
            f"missing required column(s) in header: {', '.join(missing_req)}", excerpt
        )
    missing_opt = [c for c in spec.columns if c not in names]
    extra = [h for h, n in zip(header, names, strict=True) if n not in spec.columns]
    if extra:
        log.warning("%s: %s has extra columns, ignored: %s", spec.name, rel, extra)
        counts.notes.append(f"ignored extra columns: {', '.join(extra)}")
    if missing_opt:
        log.warning(
            "%s: %s lacks optional columns, loaded as null: %s", spec.name, rel, missing_opt
        )
        counts.notes.append(f"missing optional columns (null): {', '.join(missing_opt)}")
    return {c: names.index(c) for c in spec.columns if c in names}


def _flush_csv(
    con: duckdb.DuckDBPyConnection,
    ctx: _FileContext,
    index: dict[str, int],
    rows: list[list[str]],
    starts: list[int],
    ends: list[int],
    counts: _Counts,
) -> list[tuple[int, int, str]]:
    """Check and load one batch of well-formed rows (lists); return the failing ones."""
    fields = list(zip(*rows, strict=True))
    columns = {c: pa.array(fields[i], pa.string()) for c, i in index.items()}
    return _flush_csv_columns(
        con, ctx, index, columns, pa.array(starts, pa.int64()), pa.array(ends, pa.int64()), counts
    )


def _flush_csv_columns(
    con: duckdb.DuckDBPyConnection,
    ctx: _FileContext,
    index: dict[str, int],
    columns: dict[str, pa.Array],
    starts: pa.Array,
    ends: pa.Array,
    counts: _Counts,
) -> list[tuple[int, int, str]]:
    """Check and load one batch of well-formed rows (Arrow columns); return the failing ones."""
    spec = ctx.spec
    n = len(starts)
    con.register(
        "_ingest_chunk", _batched(pa.table({"_line_number": starts, "_end_line": ends, **columns}))
    )

    def col(c: str) -> str:
        # Raw semantics: empty field -> NULL; an absent optional column is NULL too.
        return f"nullif({c}, '')" if c in index else "cast(null as varchar)"

    try:
        con.execute(
            f"""create or replace temp table _ingest_stage as
                select *, {_csv_checks(spec, col, ctx.currencies, ctx.suppress_erased)} as _reason
                from _ingest_chunk"""
        )
    finally:
        con.unregister("_ingest_chunk")
    select_cols = ", ".join(col(c) for c in spec.columns)
    con.execute(
        f"""insert into {spec.table}
            select {select_cols}, ?, _line_number, ?, ? from _ingest_stage
            where _reason is null""",
        [ctx.rel, ctx.loaded_at, ctx.batch_id],
    )
    failed = con.execute(
        "select _line_number, _end_line, _reason from _ingest_stage where _reason is not null "
        "order by _line_number"
    ).fetchall()
    con.execute("drop table _ingest_stage")
    counts.rows_in_file += n
    counts.rows_loaded += n - len(failed)
    return failed


# Quote-free CSV: a file with no '"', no NUL and no bare CR has exactly one record per
# physical line, split on commas - what the csv module would return, line numbers
# included. Such files (typical for machine exports) are split by Arrow in C instead of
# row by row in Python (~4x faster); anything else takes the csv-module path.
CSV_FAST_PATH_MAX_BYTES = 256 << 20
UTF8_BOM = b"\xef\xbb\xbf"


def _read_whole(path: Path, limit: int) -> bytes | None:
    """The decompressed file if it has at most ``limit`` bytes, else None."""
    with _open_bytes(path) as fh:
        data = fh.read(limit + 1)
    return None if len(data) > limit else data


def _is_plain_csv(data: bytes) -> bool:
    return b'"' not in data and b"\x00" not in data and data.count(b"\r") == data.count(b"\r\n")


def _load_plain_csv(con: duckdb.DuckDBPyConnection, ctx: _FileContext, data: bytes) -> _Counts:
    """_load_csv for a quote-free file held in memory (same results, set-based)."""
    import pyarrow.compute as pc

    counts = _Counts()
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    if not data:
        raise FileRejected("empty file")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    lines = _split_lines(data)
    try:
        lines.validate(full=True)  # Arrow checks UTF-8 here
    except pa.ArrowInvalid:
        raise FileRejected(_utf8_error_line(ctx.path)) from None
    lines = pc.replace_substring(lines, "\n", "")  # at most one, at the end
    first_line = lines[0].as_py()
    header = first_line.split(",") if first_line else []  # a blank line 1: no columns
    index = _check_header(ctx.spec, ctx.rel, header, counts)
    width = len(header)
    body = lines[1:]
    numbers = pa.array(np.arange(2, len(body) + 2, dtype=np.int64))
    fields = pc.split_pattern(body, ",")
    lengths = pc.list_value_length(fields).to_numpy(zero_copy_only=False)
    blank = pc.equal(pc.binary_length(body), 0).to_numpy(zero_copy_only=False)
    good = (lengths == width) & ~blank
    bad: list[tuple[int, int, str]] = []
    for line in np.flatnonzero(blank).tolist():
        bad.append((line + 2, line + 2, "blank line"))
    for line in np.flatnonzero(~good & ~blank).tolist():
        reason = f"wrong number of fields: expected {width}, got {int(lengths[line])}"
        bad.append((line + 2, line + 2, reason))
    counts.rows_in_file += len(bad)
    keep = pa.array(good)
    fields, numbers = fields.filter(keep), numbers.filter(keep)
    for start in range(0, len(numbers), CSV_FLUSH_ROWS):
        part = fields.slice(start, CSV_FLUSH_ROWS)
        columns = {c: pc.list_element(part, i) for c, i in index.items()}
        lines_part = numbers.slice(start, CSV_FLUSH_ROWS)
        bad.extend(_flush_csv_columns(con, ctx, index, columns, lines_part, lines_part, counts))
    counts.rows_quarantined = _quarantine_csv_rows(con, ctx, sorted(bad))
    return counts


def _physical_lines(path: Path, ranges: Sequence[tuple[int, int]]) -> dict[int, str]:
    """Text of physical lines start..end for each range (second pass, failures only).

    Splits lines exactly as the csv reader counted them (newline='' text mode), so the
    line numbers agree.
    """
    wanted = dict(sorted(ranges))
    out: dict[int, str] = {}
    open_start: int | None = None
    parts: list[str] = []
    with _open_bytes(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        for number, line in enumerate(text, start=1):
            if open_start is None and number in wanted:
                open_start, parts = number, []
            if open_start is not None:
                parts.append(line)
                if number >= wanted[open_start]:
                    out[open_start] = "".join(parts).rstrip("\r\n")
                    open_start = None
    return out


# --------------------------------------------------------------------------- JSONL
def _load_jsonl(con: duckdb.DuckDBPyConnection, ctx: _FileContext) -> _Counts:
    counts = _Counts()
    blank = 0
    extra_fields: set[str] = set()
    failed: list[tuple[int, str, str]] = []
    known = ", ".join(_sql_str(f) for f, _, _ in ANALYTICS_FIELDS)
    struct = "{" + ", ".join(f'"{f}": "{t}"' for f, _, t in ANALYTICS_FIELDS) + "}"
    j = "_j"
    # Nested CASEs keep the extra parses (json_valid, json_type) to the few failing rows.
    erased = ""
    if ctx.suppress_erased:
        cond = erased_condition(
            {
                "anonymous_id": f'{j}."anonymousId"',
                "contact_id": f'{j}."userId"',
                "email": f"json_extract_string({j}.\"traits\", '$.email')",
            }
        )
        erased = f"when {j} is not null and ({cond}) then {_sql_str(ERASED_REASON)}"
    checks = f"""case
        {erased}
        when {j} is null then case
            when trim(line, ' ' || chr(9) || chr(13) || chr(10)) = '' then 'blank line'
            when not json_valid(line) then 'invalid JSON'
            else 'not a JSON object: ' || lower(json_type(line)) end
        when (case when {j}."messageId" is null then json_type(line) <> 'OBJECT' else false end)
            then 'not a JSON object: ' || lower(json_type(line))
        when {_missing(f'{j}."messageId"')} then 'missing required field: messageId'
        when {_missing(f'{j}."type"')} then 'missing required field: type'
        when {j}."type" not in ({", ".join(_sql_str(t) for t in EVENT_TYPES)})
            then 'invalid type: ' || {_quoted(f'{j}."type"')}
                 || ' (expected {", ".join(EVENT_TYPES)})'
        when {_missing(f'{j}."timestamp"')} then 'missing required field: timestamp'
        when {_bad_timestamp(f'{j}."timestamp"')}
            then 'unparseable timestamp in timestamp: ' || {_quoted(f'{j}."timestamp"')}
        else null end"""
    raw_cols = ", ".join(
        f"nullif({j}.\"{f}\", '')" if t == "VARCHAR" else f'{j}."{f}"'
        for f, _, t in ANALYTICS_FIELDS
    )
    # Decompression and line splitting run in a background thread (zlib, numpy and
    # DuckDB all release the GIL), overlapping with DuckDB's work on the previous chunk.
    for chunk in _prefetched(lambda: _jsonl_chunks(ctx.path)):
        n = chunk.num_rows
        first_line = counts.rows_in_file + 1
        con.register("_ingest_chunk", chunk)
        try:
            # from_json parses each line once into the typed struct (try(): NULL for
            # malformed lines instead of an error). The stage keeps no line text, the
            # few failing lines are joined back from the chunk.
            con.execute(
                f"""create or replace temp table _ingest_stage as
                    with s as (
                        select _line_number, line,
                               try(from_json(line, '{struct}')) as {j}
                        from _ingest_chunk
                    )
                    select _line_number, {j}, {checks} as _reason from s"""
            )
            con.execute(
                f"""insert into {ctx.spec.table}
                    select {raw_cols}, ?, _line_number, ?, ? from _ingest_stage
                    where _reason is null""",
                [ctx.rel, ctx.loaded_at, ctx.batch_id],
            )
            chunk_failed = con.execute(
                """select s._line_number, s._reason, rtrim(c.line, chr(13) || chr(10))
                   from _ingest_stage s join _ingest_chunk c using (_line_number)
                   where s._reason is not null order by s._line_number"""
            ).fetchall()
            if first_line <= EXTRA_FIELD_SAMPLE_LINES:
                extra_fields.update(
                    r[0]
                    for r in con.execute(
                        f"""select distinct k from (
                              select unnest(try(json_keys(line))) as k from _ingest_chunk
                              where _line_number <= {EXTRA_FIELD_SAMPLE_LINES:d}
                            ) where k not in ({known})"""
                    ).fetchall()
                )
            con.execute("drop table _ingest_stage")
        finally:
            con.unregister("_ingest_chunk")
        failed.extend(chunk_failed)
        blank += sum(1 for f in chunk_failed if f[1] == "blank line")
        counts.rows_loaded += n - len(chunk_failed)
        counts.rows_in_file += n
    if counts.rows_in_file == blank:
        raise FileRejected("empty file" if blank == 0 else "empty file (only blank lines)")
    if extra_fields:
        log.warning(
            "%s: %s has extra fields, ignored: %s", ctx.spec.name, ctx.rel, sorted(extra_fields)
        )
        counts.notes.append(f"ignored extra fields: {', '.join(sorted(extra_fields))}")
    _insert_quarantine(
        con,
        ctx,
        [
            (number, _json_error(raw) if reason == "invalid JSON" else reason, raw)
            for number, reason, raw in failed
        ],
    )
    counts.rows_quarantined = len(failed)
    return counts


def _batched(table: pa.Table) -> pa.Table:
    """The same table in record batches of ARROW_BATCH_ROWS (zero-copy slices).

    DuckDB scans a registered Arrow table batch by batch, one batch per thread: a
    single big batch would leave all but one core idle.
    """
    return pa.Table.from_batches(table.to_batches(max_chunksize=ARROW_BATCH_ROWS))


def _jsonl_chunks(path: Path) -> Iterator[pa.Table]:
    """Arrow tables (_line_number, line) over the decompressed file, chunk by chunk."""
    next_line = 1
    with _open_bytes(path) as fh:
        for chunk in _iter_line_chunks(fh, JSONL_CHUNK_BYTES):
            lines = _split_lines(chunk)
            try:
                lines.validate(full=True)  # Arrow checks UTF-8 here
            except pa.ArrowInvalid:
                raise FileRejected(_utf8_error_line(path)) from None
            n = len(lines)
            numbers = pa.array(np.arange(next_line, next_line + n, dtype=np.int64))
            next_line += n
            yield _batched(pa.table({"_line_number": numbers, "line": lines}))


def _prefetched(make_iter: Callable[[], Iterator[_T]], depth: int = 1) -> Iterator[_T]:
    """Run ``make_iter()`` in a thread, ``depth`` items ahead; its errors re-raise here.

    Closing the consumer early (an exception in the loop body) stops and joins the
    producer, so no thread or open file outlives the call.
    """
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in make_iter():
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:
            put(("error", exc))

    worker = threading.Thread(target=produce, name="ingest-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


def _split_lines(chunk: bytes) -> pa.LargeStringArray:
    """Zero-copy Arrow view of the lines in ``chunk`` (each keeps its newline)."""
    newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
    offsets = np.empty(len(newlines) + 2, dtype=np.int64)
    offsets[0] = 0
    offsets[1 : len(newlines) + 1] = newlines + 1
    n = len(newlines)
    if n == 0 or offsets[n] != len(chunk):  # last line without a newline
        offsets[n + 1] = len(chunk)
        n += 1
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets[: n + 1].tobytes()), pa.py_buffer(chunk)
    )


def _json_error(line: str) -> str:
    """Python's parser explains what is wrong; DuckDB's json_valid only says no."""
    try:
        json.loads(line)
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    return "invalid JSON (rejected by DuckDB's JSON parser)"
