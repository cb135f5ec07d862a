"""CSV sources: header mapping, tokenising, suspect quoting, set-based checks in DuckDB.

Quote-free files (no ``"``, no NUL, no bare CR: one record per physical line) are split by
Arrow in C; anything else is tokenised by Python's C ``csv`` module, the only parser here
that reports exact physical line numbers with embedded newlines.

Silent loss guard: a stray ``"`` at the start of a field makes RFC 4180 parsing swallow
every following line up to the next quote into one field (or, unterminated, the rest of
the file). A multi-line quoted field that holds delimiters and either spans at least
``SUSPECT_FIELD_LINES`` lines or has an embedded line that looks like a row (at least half
a row's delimiters) is *suspect*: its record is not trusted, and each of its physical
lines is read as a record of its own - the lines that are whole rows load, the lines with
the unbalanced quote are quarantined. ``physical_lines`` in the manifest is reconciled
with the records: every physical line belongs to exactly one loaded or quarantined record.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segment_warehouse.ingest import files
from segment_warehouse.ingest.checks import csv_checks, sql_str
from segment_warehouse.ingest.files import display_name
from segment_warehouse.ingest.manifest import insert_quarantine
from segment_warehouse.ingest.results import Counts, FileContext, FileRejected
from segment_warehouse.ingest.specs import SourceSpec

log = logging.getLogger("segment_warehouse.ingest")

ARROW_BATCH_ROWS = 16_384
CSV_FLUSH_ROWS = 200_000
CSV_FAST_PATH_MAX_BYTES = 256 << 20
SUSPECT_FIELD_LINES = 3

Bad = tuple[int, int, str]  # first line, last line, reason


def batched(table: pa.Table) -> pa.Table:
    """The same table in record batches of ARROW_BATCH_ROWS (zero-copy slices).

    DuckDB scans a registered Arrow table batch by batch, one batch per thread: a
    single big batch would leave all but one core idle.
    """
    return pa.Table.from_batches(table.to_batches(max_chunksize=ARROW_BATCH_ROWS))


def check_quarantine_bound(n: int) -> None:
    if n > files.MAX_QUARANTINE_ROWS_PER_FILE:
        raise FileRejected(
            f"more than {files.MAX_QUARANTINE_ROWS_PER_FILE} rows break the contract: "
            "the file is quarantined whole"
        )


def check_header(spec: SourceSpec, rel: str, header: list[str], counts: Counts) -> dict[str, int]:
    """Map raw column -> position in the file; reject unusable headers."""
    excerpt = ",".join(header)[:200]
    if not any(h.strip() for h in header):
        raise FileRejected("missing header row (line 1 is blank)", excerpt)
    names = [h.strip().lower() for h in header]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FileRejected(f"duplicate column(s) in header: {', '.join(dupes)}", excerpt)
    missing_req = [c for c in spec.required if c not in names]
    if spec.one_of_required and not any(c in names for c in spec.one_of_required):
        missing_req.append(" or ".join(spec.one_of_required))
    if missing_req:
        raise FileRejected(
            f"missing required column(s) in header: {', '.join(missing_req)}", excerpt
        )
    missing_opt = [c for c in spec.columns if c not in names]
    extra = [h for h, n in zip(header, names, strict=True) if n not in spec.columns]
    if extra:
        log.warning(
            "%s: %s has extra columns, ignored: %s",
            spec.name,
            display_name(rel),
            display_name(repr(extra)),
        )
        counts.notes.append(f"ignored extra columns: {', '.join(extra)}")
    if missing_opt:
        log.warning(
            "%s: %s lacks optional columns, loaded as null: %s",
            spec.name,
            display_name(rel),
            missing_opt,
        )
        counts.notes.append(f"missing optional columns (null): {', '.join(missing_opt)}")
    return {c: names.index(c) for c in spec.columns if c in names}


def _flush(
    con: duckdb.DuckDBPyConnection,
    ctx: FileContext,
    index: dict[str, int],
    rows: list[list[str]],
    starts: list[int],
    ends: list[int],
    counts: Counts,
) -> list[Bad]:
    """Check and load one batch of well-formed rows (lists); return the failing ones."""
    fields = list(zip(*rows, strict=True))
    columns = {c: pa.array(fields[i], pa.string()) for c, i in index.items()}
    return flush_columns(
        con, ctx, index, columns, pa.array(starts, pa.int64()), pa.array(ends, pa.int64()), counts
    )


def flush_columns(
    con: duckdb.DuckDBPyConnection,
    ctx: FileContext,
    index: dict[str, int],
    columns: dict[str, pa.Array],
    starts: pa.Array,
    ends: pa.Array,
    counts: Counts,
) -> list[Bad]:
    """Check and load one batch of well-formed rows (Arrow columns); return the failing ones."""
    spec = ctx.spec
    n = len(starts)
    con.register(
        "_ingest_chunk", batched(pa.table({"_line_number": starts, "_end_line": ends, **columns}))
    )

    def col(c: str) -> str:
        # Raw semantics: empty field -> NULL; an absent optional column is NULL too.
        return f"nullif({c}, '')" if c in index else "cast(null as varchar)"

    try:
        con.execute(
            f"""create or replace temp table _ingest_stage as
                select *, {csv_checks(spec, col, ctx.currencies, ctx.suppress_erased)} as _reason
                from _ingest_chunk"""
        )
    finally:
        # Keep the original error if the transaction is already aborted.
        with contextlib.suppress(duckdb.Error):
            con.unregister("_ingest_chunk")
    generated = dict(spec.generated)
    select_cols = ", ".join(
        generated[c].format(rel=sql_str(ctx.rel)) if c in generated else col(c)
        for c in spec.columns
    )
    # At most one row beyond the bound is fetched: a flood of bad rows stops here.
    room = files.MAX_QUARANTINE_ROWS_PER_FILE - counts.rows_quarantined + 1
    failed = con.execute(
        "select _line_number, _end_line, _reason from _ingest_stage "
        f"where _reason is not null order by _line_number limit {max(room, 1):d}"
    ).fetchall()
    check_quarantine_bound(counts.rows_quarantined + len(failed))
    con.execute(
        f"""insert into {spec.table}
            select {select_cols}, ?, _line_number, ?, ? from _ingest_stage
            where _reason is null""",
        [ctx.rel, ctx.loaded_at, ctx.batch_id],
    )
    con.execute("drop table _ingest_stage")
    counts.rows_in_file += n
    counts.rows_loaded += n - len(failed)
    counts.rows_quarantined += len(failed)
    return failed


def is_plain_csv(data: bytes) -> bool:
    return b'"' not in data and b"\x00" not in data and data.count(b"\r") == data.count(b"\r\n")


def load_plain_csv(con: duckdb.DuckDBPyConnection, ctx: FileContext, data: bytes) -> Counts:
    """load_csv for a quote-free file held in memory (same results, set-based)."""
    counts = Counts()
    if data.startswith(files.UTF8_BOM):
        data = data[len(files.UTF8_BOM) :]
    if not data:
        raise FileRejected("empty file")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    lines = files.split_lines(data)
    try:
        lines.validate(full=True)  # Arrow checks UTF-8 here
    except pa.ArrowInvalid:
        raise FileRejected(files.utf8_error_line(ctx.path)) from None
    counts.physical_lines = len(lines)
    lines = pc.replace_substring(lines, "\n", "")  # at most one, at the end
    first_line = lines[0].as_py()
    header = first_line.split(",") if first_line else []  # a blank line 1: no columns
    index = check_header(ctx.spec, ctx.rel, header, counts)
    width = len(header)
    body = lines[1:]
    numbers = pa.array(np.arange(2, len(body) + 2, dtype=np.int64))
    fields = pc.split_pattern(body, ",")
    lengths = pc.list_value_length(fields).to_numpy(zero_copy_only=False)
    blank = pc.equal(pc.binary_length(body), 0).to_numpy(zero_copy_only=False)
    good = (lengths == width) & ~blank
    check_quarantine_bound(int((~good).sum()))
    bad: list[Bad] = []
    for line in np.flatnonzero(blank).tolist():
        bad.append((line + 2, line + 2, "blank line"))
    for line in np.flatnonzero(~good & ~blank).tolist():
        reason = f"wrong number of fields: expected {width}, got {int(lengths[line])}"
        bad.append((line + 2, line + 2, reason))
    counts.rows_in_file += len(bad)
    counts.rows_quarantined += len(bad)
    keep = pa.array(good)
    fields, numbers = fields.filter(keep), numbers.filter(keep)
    for start in range(0, len(numbers), CSV_FLUSH_ROWS):
        part = fields.slice(start, CSV_FLUSH_ROWS)
        columns = {c: pc.list_element(part, i) for c, i in index.items()}
        lines_part = numbers.slice(start, CSV_FLUSH_ROWS)
        bad.extend(flush_columns(con, ctx, index, columns, lines_part, lines_part, counts))
    # Every failure here is one physical line, already in memory: no second read.
    quarantine_rows(con, ctx, sorted(bad), lines)
    return counts


def _suspect(row: list[str], width: int, spanned: int) -> bool:
    """A multi-line record whose quoted field looks like swallowed rows (see module doc)."""
    for value in row:
        if ("\n" not in value and "\r" not in value) or "," not in value:
            continue
        pieces = value.splitlines()
        if spanned >= SUSPECT_FIELD_LINES or len(pieces) >= SUSPECT_FIELD_LINES:
            return True
        if any(p.count(",") >= max(1, width // 2) for p in pieces):
            return True
    return False


def _lines_in(path_ctx: FileContext, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, str]]:
    """Every physical line inside the (sorted, disjoint) ranges, in one pass."""
    if not ranges:
        return []
    out: list[tuple[int, str]] = []
    it = iter(ranges)
    lo, hi = next(it)
    with files.open_bytes(path_ctx.path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        for number, line in enumerate(text, start=1):
            while number > hi:
                nxt = next(it, None)
                if nxt is None:
                    return out
                lo, hi = nxt
            if number >= lo:
                out.append((number, line.rstrip("\r\n")))
    return out


def _resplit(
    ctx: FileContext, ranges: list[tuple[int, int]], width: int
) -> tuple[list[list[str]], list[int], list[Bad]]:
    """Each physical line of the suspect records as a record of its own."""
    rows: list[list[str]] = []
    numbers: list[int] = []
    bad: list[Bad] = []
    for number, text in _lines_in(ctx, ranges):
        if not text.strip():
            bad.append((number, number, "blank line"))
            continue
        if text.count('"') % 2:
            bad.append(
                (
                    number,
                    number,
                    "unbalanced quote: a quoted field spanning lines "
                    + next(f"{a}-{b}" for a, b in ranges if a <= number <= b)
                    + " held delimiters, so each of its lines was read on its own",
                )
            )
            continue
        row = next(csv.reader([text]), [])
        if len(row) == width:
            rows.append(row)
            numbers.append(number)
        else:
            bad.append(
                (number, number, f"wrong number of fields: expected {width}, got {len(row)}")
            )
    return rows, numbers, bad


def load_csv(con: duckdb.DuckDBPyConnection, ctx: FileContext) -> Counts:
    data = files.read_whole(ctx.path, CSV_FAST_PATH_MAX_BYTES)
    if data is not None and is_plain_csv(data):
        return load_plain_csv(con, ctx, data)
    spec = ctx.spec
    counts = Counts()
    # Field limit: the default 128 KiB would abort a whole file on one huge (bad) cell.
    csv.field_size_limit(1 << 30)
    bad: list[Bad] = []
    suspects: list[tuple[int, int]] = []
    multi_line_records = 0
    # A file that fit in memory is parsed from the bytes already read, not decompressed again.
    source = contextlib.nullcontext(io.BytesIO(data)) if data is not None else None
    with source or files.open_bytes(ctx.path) as raw:
        # utf-8-sig: tolerate a BOM, which spreadsheet exports like to add.
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
        reader = csv.reader(text)
        try:
            try:
                header = next(reader)
            except StopIteration:
                raise FileRejected("empty file") from None
            index = check_header(spec, ctx.rel, header, counts)
            width = len(header)
            rows: list[list[str]] = []
            starts: list[int] = []
            ends: list[int] = []
            prev = reader.line_num
            # The only per-row Python: tokenising is C, this loop just tracks line numbers
            # and field counts; every value check runs set-based in DuckDB on flush.
            for row in reader:
                end = reader.line_num
                if end > prev + 1:
                    multi_line_records += 1
                    if _suspect(row, width, end - prev):
                        suspects.append((prev + 1, end))
                        prev = end
                        continue
                if len(row) == width:
                    rows.append(row)
                    starts.append(prev + 1)
                    ends.append(end)
                    if len(rows) >= CSV_FLUSH_ROWS:
                        bad.extend(_flush(con, ctx, index, rows, starts, ends, counts))
                        rows, starts, ends = [], [], []
                else:
                    counts.rows_in_file += 1
                    counts.rows_quarantined += 1
                    reason = (
                        f"wrong number of fields: expected {width}, got {len(row)}"
                        if row
                        else "blank line"
                    )
                    bad.append((prev + 1, end, reason))
                    check_quarantine_bound(counts.rows_quarantined)
                prev = end
            if rows:
                bad.extend(_flush(con, ctx, index, rows, starts, ends, counts))
            counts.physical_lines = reader.line_num
        except UnicodeDecodeError:
            raise FileRejected(files.utf8_error_line(ctx.path)) from None
        except csv.Error as exc:
            raise FileRejected(f"unreadable CSV at line {reader.line_num}: {exc}") from None
    if suspects:
        rows, numbers, resplit_bad = _resplit(ctx, suspects, width)
        counts.rows_in_file += len(resplit_bad)
        counts.rows_quarantined += len(resplit_bad)
        check_quarantine_bound(counts.rows_quarantined)
        bad.extend(resplit_bad)
        if rows:
            bad.extend(_flush(con, ctx, index, rows, numbers, numbers, counts))
        counts.notes.append(
            f"suspect quoting: {len(suspects)} multi-line quoted record(s) read line by line "
            f"(lines {', '.join(f'{a}-{b}' for a, b in suspects[:10])}"
            f"{', ...' if len(suspects) > 10 else ''})"
        )
        log.warning(
            "%s: %s: %d quoted field(s) spanning lines held delimiters (a stray quote?); "
            "their lines were read one by one",
            spec.name,
            display_name(ctx.rel),
            len(suspects),
        )
    if multi_line_records:
        counts.notes.append(f"{multi_line_records} record(s) span several physical lines")
    quarantine_rows(con, ctx, sorted(bad))
    return counts


def quarantine_rows(
    con: duckdb.DuckDBPyConnection,
    ctx: FileContext,
    bad: list[Bad],
    lines: pa.Array | None = None,
) -> int:
    """Quarantine rejected rows (first line, last line, reason) with their physical text.

    ``lines``: the file's physical lines without their line ends (index 0 = line 1),
    when the caller holds them: used when every rejected record is a single line,
    otherwise the text is read from the file again.
    """
    if bad:
        if lines is not None and all(s == e for s, e, _ in bad):
            physical = {s: lines[s - 1].as_py() for s, _, _ in bad}
        else:
            physical = files.physical_lines(ctx.path, [(s, e) for s, e, _ in bad])
        insert_quarantine(con, ctx, [(s, reason, physical.get(s)) for s, _, reason in bad])
    return len(bad)
