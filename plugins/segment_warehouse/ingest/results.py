"""What loading a file produced: results, per-file context and the exceptions readers raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from segment_warehouse.ingest.specs import SourceSpec


@dataclass(frozen=True)
class FileLoadResult:
    """Outcome of one landing entry (mirrors its manifest row)."""

    source_file: str
    # loaded | duplicate | file_quarantined | refused | changed_after_load
    status: str
    sha256: str
    rows_in_file: int
    rows_loaded: int
    rows_quarantined: int
    duplicate_of: str | None = None
    reason: str | None = None  # whole-file quarantine / refusal reason
    duration_seconds: float = 0.0
    physical_lines: int | None = None


@dataclass
class SourceLoadSummary:
    """What :func:`load_source` did for one source in one batch."""

    source: str
    batch_id: str
    files: list[FileLoadResult] = field(default_factory=list)
    skipped_already_loaded: list[str] = field(default_factory=list)
    # Files not complete yet (still being written, or a gzip that ends mid-stream): no
    # manifest row, so the next run tries them again. (path, why)
    deferred: list[tuple[str, str]] = field(default_factory=list)

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

    @property
    def files_refused(self) -> int:
        return sum(f.status == "refused" for f in self.files)

    @property
    def files_changed_after_load(self) -> int:
        return sum(f.status == "changed_after_load" for f in self.files)


class FileRejected(Exception):
    """The file cannot be read as its source; it is quarantined whole."""

    def __init__(self, reason: str, excerpt: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.excerpt = excerpt


class TruncatedGzip(FileRejected):
    """The gzip stream ends early: most likely still being uploaded (deferred, not rejected)."""


class FileDeferred(Exception):
    """The file is not complete yet; nothing of it is kept and the next run tries again."""


class DiskFullError(OSError):
    """No space left on a device the load writes to (the warehouse or DuckDB's temp dir)."""


@dataclass(frozen=True)
class FileContext:
    spec: SourceSpec
    path: Path
    rel: str
    batch_id: str
    loaded_at: datetime
    currencies: tuple[str, ...]
    # Erased identifiers (kind -> keyed hashes) when audit.erasure_suppression has
    # entries: rows of erased people are quarantined without their content.
    suppressed: dict[str, frozenset[str]] | None = None
    key: str | None = None

    @property
    def suppress_erased(self) -> bool:
        return bool(self.suppressed)


@dataclass
class Counts:
    rows_in_file: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    physical_lines: int | None = None
    notes: list[str] = field(default_factory=list)
    # sha256 of the stored file when the reader hashed it while reading (JSONL).
    sha256: str | None = None
