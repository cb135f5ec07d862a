"""Extract/load: landing-zone files -> ``raw.*`` + ``audit.quarantine`` + ``audit.load_manifest``.

Contract: DESIGN.md section 3 and docs/ARCHITECTURE.md (raw and audit schemas).

How a run works, per source:

* every entry directly under ``landing_dir/<source>/`` is considered, in name order;
  anything but a regular file inside the landing dir (symlink, sub-directory, FIFO, an
  undecodable name) gets a ``refused`` manifest row and is never opened;
* a file not yet settled (still being written, or a ``.gz`` ending mid-stream) is
  deferred to the next run, with no manifest row (see loader.py);
* a path already in ``audit.load_manifest`` is skipped (deliveries are immutable); one
  whose content changed since gets a ``changed_after_load`` row and an ERROR log line;
* a file whose sha256 equals a file of the same source already *loaded* gets a manifest
  row with status ``duplicate`` and no data rows;
* otherwise the file is parsed and checked; passing rows go to the raw table, failing rows
  to ``audit.quarantine`` with a specific reason and the physical line(s), and one manifest
  row records ``rows_in_file = rows_loaded + rows_quarantined``;
* a file that cannot be read as its source at all (unexpected name, not gzip, corrupt
  gzip, not UTF-8, empty, missing required header columns, above a size bound) becomes
  one whole-file
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

Hardening (issue 15; the rules are in docs/governance.md): entries that are not regular
files inside the landing dir are refused (manifest row, never opened); files are loaded
only once settled (loader.py); CSV quoting that swallows rows is suspected and read line by
line (csv_reader.py); timestamps and amounts are bounded (checks.py); JSON that DuckDB
accepts but RFC 8259 does not is re-checked (jsonl_reader.py); decompressed size, line
length and quarantine rows per file are bounded (files.py, csv_reader.py); rows of erased
people never reach the quarantine with content (suppression.py).

Layout: ``specs`` (source specs as data), ``files`` (entries, gzip, sha256, lines),
``checks`` (contract checks as SQL), ``csv_reader`` / ``jsonl_reader``, ``manifest``
(raw tables, manifest and quarantine writes), ``suppression`` (erased people),
``loader`` (the public :func:`load_source`).

Performance: JSONL is never handled row by row in Python. The decompressed bytes are
split into lines with numpy, wrapped zero-copy as an Arrow string array (Arrow validates
UTF-8), and validated/extracted in DuckDB with ``json_valid``/``from_json``. CSV is
tokenised by Python's C ``csv`` module (the only parser here that reports exact physical
line numbers with embedded newlines) and checked set-based in DuckDB.
"""

from __future__ import annotations

from segment_warehouse.ingest.checks import AMOUNT_MAX, TIMESTAMP_MAX, TIMESTAMP_MIN
from segment_warehouse.ingest.csv_reader import CSV_FAST_PATH_MAX_BYTES
from segment_warehouse.ingest.files import (
    MAX_COMPRESSION_RATIO,
    MAX_DECOMPRESSED_BYTES,
    MAX_LINE_BYTES,
    MAX_QUARANTINE_ROWS_PER_FILE,
    display_name,
)
from segment_warehouse.ingest.jsonl_reader import EXTRA_FIELD_SAMPLE_LINES, JSONL_CHUNK_BYTES
from segment_warehouse.ingest.loader import (
    BATCH_MAX_FILE_BYTES,
    BATCH_MAX_ROWS,
    TRUNCATED_GZIP_GRACE_SECONDS,
    load_all,
    load_source,
    new_batch_id,
)
from segment_warehouse.ingest.manifest import ensure_raw_tables
from segment_warehouse.ingest.results import (
    DiskFullError,
    FileLoadResult,
    FileRejected,
    SourceLoadSummary,
)
from segment_warehouse.ingest.specs import (
    ANALYTICS_FIELDS,
    EVENT_TYPES,
    LINEAGE_COLUMNS,
    ORDER_STATUSES,
    SPECS,
    SourceSpec,
)
from segment_warehouse.ingest.suppression import ERASED_REASON, erased_condition, load_suppression

__all__ = [
    "AMOUNT_MAX",
    "ANALYTICS_FIELDS",
    "BATCH_MAX_FILE_BYTES",
    "BATCH_MAX_ROWS",
    "CSV_FAST_PATH_MAX_BYTES",
    "ERASED_REASON",
    "EVENT_TYPES",
    "EXTRA_FIELD_SAMPLE_LINES",
    "JSONL_CHUNK_BYTES",
    "LINEAGE_COLUMNS",
    "MAX_COMPRESSION_RATIO",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_LINE_BYTES",
    "MAX_QUARANTINE_ROWS_PER_FILE",
    "ORDER_STATUSES",
    "SPECS",
    "TIMESTAMP_MAX",
    "TIMESTAMP_MIN",
    "TRUNCATED_GZIP_GRACE_SECONDS",
    "DiskFullError",
    "FileLoadResult",
    "FileRejected",
    "SourceLoadSummary",
    "SourceSpec",
    "display_name",
    "ensure_raw_tables",
    "erased_condition",
    "load_all",
    "load_source",
    "load_suppression",
    "new_batch_id",
]
