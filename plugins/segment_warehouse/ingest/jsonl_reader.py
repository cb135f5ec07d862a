"""JSONL sources: never row by row in Python.

The decompressed bytes are split into lines with numpy, wrapped zero-copy as an Arrow
string array (Arrow validates UTF-8), and validated/extracted in DuckDB with
``json_valid``/``from_json``. DuckDB's JSON reader is lenient where RFC 8259 is not: it
accepts ``NaN``/``Infinity`` (not numbers any consumer can sum) and trailing commas. Lines
holding ``NaN`` or ``Infinity`` (a substring pre-filter) are re-checked by Python's parser
and quarantined when the literal is a value, not text. A trailing comma is a documented
coercion: the object reads as if it were absent (the values are unambiguous), which saves
a regex over every line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from segment_warehouse.ingest import files
from segment_warehouse.ingest.checks import (
    jsonl_checks,
    jsonl_raw_columns,
    jsonl_struct,
    sql_str,
)
from segment_warehouse.ingest.csv_reader import batched, check_quarantine_bound
from segment_warehouse.ingest.files import display_name
from segment_warehouse.ingest.manifest import insert_quarantine
from segment_warehouse.ingest.results import Counts, FileContext, FileRejected
from segment_warehouse.ingest.specs import ANALYTICS_FIELDS

log = logging.getLogger("segment_warehouse.ingest")
_T = TypeVar("_T")

# Decompressed bytes per chunk: bounds memory on large files while keeping DuckDB batches
# big enough to be efficient.
JSONL_CHUNK_BYTES = 64 << 20
# Extra (ignored) JSON fields are looked for on the first lines of each file only: the
# contract just asks for them to be ignored and noted, and scanning every line's keys
# costs almost as much as the raw insert.
EXTRA_FIELD_SAMPLE_LINES = 2_000
# Passing rows are inserted into the raw table this many at a time (see PendingRaw), or
# sooner once this many stages wait (many small files: one statement stays small).
JSONL_INSERT_ROWS = 500_000
JSONL_MAX_PENDING_STAGES = 64
# Lines that may hold the non-standard number literals DuckDB accepts.
_LENIENT_SQL = "(contains(line, 'NaN') or contains(line, 'Infinity'))"


class _NonFiniteNumber(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFiniteNumber(f"{name} is not a JSON number")


def non_finite_error(line: str) -> str | None:
    """The reason to quarantine a line DuckDB parsed that holds NaN/Infinity as a value."""
    try:
        json.loads(line, parse_constant=_reject_constant)
    except _NonFiniteNumber as exc:
        return f"invalid JSON: {exc}"
    except (ValueError, RecursionError):
        return None  # something else Python rejects but DuckDB accepts (trailing comma)
    return None


def json_error(line: str) -> str:
    """Python's parser explains what is wrong; DuckDB's json_valid only says no."""
    try:
        json.loads(line, parse_constant=_reject_constant)
    except RecursionError:
        return "invalid JSON: nested too deeply"
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    return "invalid JSON (rejected by DuckDB's JSON parser)"


class PendingRaw:
    """Stage tables of parsed, checked chunks whose passing rows are not in the raw table yet.

    Passing rows go to the raw table in one insert per ``JSONL_INSERT_ROWS`` rows (or
    ``JSONL_MAX_PENDING_STAGES`` stages, or when the loader commits), not one per chunk:
    an insert smaller than a DuckDB row group is compressed again, single-threaded, when
    the transaction commits. Everything stays in the caller's transaction.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        self.con = con
        self.table = table
        self.rows = 0
        self._stages: list[tuple[str, FileContext]] = []
        self._next = 0

    @property
    def stages(self) -> int:
        return len(self._stages)

    def new_stage(self, ctx: FileContext) -> str:
        name = f"_ingest_stage_{self._next}"
        self._next += 1
        self._stages.append((name, ctx))
        return name

    def flush(self) -> None:
        """Insert the passing rows of every pending stage and drop the stages."""
        if not self._stages:
            return
        raw_cols = jsonl_raw_columns()
        selects, params = [], []
        for name, ctx in self._stages:
            selects.append(
                f"select {raw_cols}, ?, _line_number, ?, ? from {name} where _reason is null"
            )
            params += [ctx.rel, ctx.loaded_at, ctx.batch_id]
        self.con.execute(f"insert into {self.table}\n" + "\nunion all\n".join(selects), params)
        self._drop(self._stages)

    def discard(self, ctx: FileContext) -> None:
        """Forget the pending rows of one file (rejected as a whole part-way through)."""
        mine = [(n, c) for n, c in self._stages if (c.rel, c.batch_id) == (ctx.rel, ctx.batch_id)]
        self._drop(mine)

    def _drop(self, stages: list[tuple[str, FileContext]]) -> None:
        for name, _ in stages:
            self.con.execute(f"drop table if exists {name}")
        dropped = {n for n, _ in stages}
        self._stages = [(n, c) for n, c in self._stages if n not in dropped]
        if not self._stages:
            self.rows = 0


def load_jsonl(
    con: duckdb.DuckDBPyConnection, ctx: FileContext, pending: PendingRaw | None = None
) -> Counts:
    """Parse and check one file; passing rows go to the raw table through ``pending``
    (flushed here when the caller gives none)."""
    own = pending is None
    pending = pending or PendingRaw(con, ctx.spec.table)
    counts = Counts()
    blank = 0
    extra_fields: set[str] = set()
    failed: list[tuple[int, str, str]] = []
    known = ", ".join(sql_str(f) for f, _, _ in ANALYTICS_FIELDS)
    struct = jsonl_struct()
    checks = jsonl_checks(ctx.suppress_erased)
    digest = hashlib.sha256()
    # Reading, hashing, decompression and line splitting run in a background thread
    # (hashlib, zlib, numpy and DuckDB all release the GIL), overlapping with DuckDB's
    # work on the previous chunk.
    for chunk in prefetched(lambda: jsonl_chunks(ctx.path, digest)):
        n = chunk.num_rows
        first_line = counts.rows_in_file + 1
        con.register("_ingest_chunk", chunk)
        try:
            # from_json parses each line once into the typed struct (try(): NULL for
            # malformed lines instead of an error). The stage keeps no line text: the
            # few failing lines are taken from the Arrow chunk.
            stage = pending.new_stage(ctx)
            con.execute(
                f"""create or replace temp table {stage} as
                    with s as (
                        select _line_number, line,
                               try(from_json(line, '{struct}')) as _j
                        from _ingest_chunk
                    )
                    select _line_number, _j, {checks} as _reason from s"""
            )
            _strict_recheck(con, stage)
            # At most one row beyond the bound is fetched: a flood of bad lines stops here.
            room = files.MAX_QUARANTINE_ROWS_PER_FILE - len(failed) + 1
            bad = con.execute(
                f"""select _line_number, _reason from {stage}
                    where _reason is not null order by _line_number
                    limit {max(room, 1):d}"""
            ).fetchall()
            check_quarantine_bound(len(failed) + len(bad))
            text = chunk.column("line").take(pa.array([b[0] - first_line for b in bad], pa.int64()))
            chunk_failed = [
                (number, reason, line.rstrip("\r\n"))
                for (number, reason), line in zip(bad, text.to_pylist(), strict=True)
            ]
            if first_line <= EXTRA_FIELD_SAMPLE_LINES:
                con.register(
                    "_ingest_sample", chunk.slice(0, EXTRA_FIELD_SAMPLE_LINES - first_line + 1)
                )
                try:
                    extra_fields.update(
                        r[0]
                        for r in con.execute(
                            f"""select distinct k from (
                                  select unnest(try(json_keys(line))) as k from _ingest_sample
                                ) where k not in ({known})"""
                        ).fetchall()
                    )
                finally:
                    with contextlib.suppress(duckdb.Error):
                        con.unregister("_ingest_sample")
        finally:
            # Keep the original error if the transaction is already aborted.
            with contextlib.suppress(duckdb.Error):
                con.unregister("_ingest_chunk")
        failed.extend(chunk_failed)
        blank += sum(1 for f in chunk_failed if f[1] == "blank line")
        counts.rows_loaded += n - len(chunk_failed)
        counts.rows_in_file += n
        pending.rows += n - len(chunk_failed)
        if pending.rows >= JSONL_INSERT_ROWS or pending.stages >= JSONL_MAX_PENDING_STAGES:
            pending.flush()
    counts.physical_lines = counts.rows_in_file
    if counts.rows_in_file == blank:
        raise FileRejected("empty file" if blank == 0 else "empty file (only blank lines)")
    if extra_fields:
        log.warning(
            "%s: %s has extra fields, ignored: %s",
            ctx.spec.name,
            display_name(ctx.rel),
            display_name(repr(sorted(extra_fields))),
        )
        counts.notes.append(f"ignored extra fields: {', '.join(sorted(extra_fields))}")
    insert_quarantine(
        con,
        ctx,
        [
            (number, json_error(raw) if reason == "invalid JSON" else reason, raw)
            for number, reason, raw in failed
        ],
    )
    counts.rows_quarantined = len(failed)
    counts.sha256 = digest.hexdigest()
    if own:
        pending.flush()
    return counts


def _strict_recheck(con: duckdb.DuckDBPyConnection, stage: str) -> None:
    """Quarantine lines DuckDB parsed that hold NaN/Infinity values."""
    # A substring filter on the Arrow chunk finds the few candidates; lines that failed
    # another check keep that reason.
    candidates = con.execute(
        f"select _line_number, line from _ingest_chunk where {_LENIENT_SQL}"
    ).fetchall()
    rejected = [
        (reason, number)
        for number, line in candidates
        if (reason := non_finite_error(line)) is not None
    ]
    if rejected:
        con.executemany(
            f"update {stage} set _reason = ? where _line_number = ? and _reason is null",
            rejected,
        )


def jsonl_chunks(path: Path, digest: Any = None) -> Iterator[pa.Table]:
    """Arrow tables (_line_number, line) over the decompressed file, chunk by chunk
    (``digest``: see files.open_bytes)."""
    next_line = 1
    with files.open_bytes(path, digest) as fh:
        for chunk in files.iter_line_chunks(fh, JSONL_CHUNK_BYTES):
            lines = files.split_lines(chunk)
            try:
                lines.validate(full=True)  # Arrow checks UTF-8 here
            except pa.ArrowInvalid:
                raise FileRejected(files.utf8_error_line(path)) from None
            n = len(lines)
            numbers = pa.array(np.arange(next_line, next_line + n, dtype=np.int64))
            next_line += n
            yield batched(pa.table({"_line_number": numbers, "line": lines}))


def prefetched(make_iter: Callable[[], Iterator[_T]], depth: int = 1) -> Iterator[_T]:
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
