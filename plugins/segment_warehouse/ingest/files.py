"""File handling: which landing entries are files at all, safe names, gzip, sha256, lines.

Bounds (documented in docs/governance.md, "Landing-zone rules"):

* only regular files directly inside ``landing_dir/<source>/`` are read; symlinks,
  sub-directories, FIFOs, sockets and devices are refused (manifest row, nothing opened);
* a decompressed ``.gz`` may hold at most ``MAX_DECOMPRESSED_BYTES`` and at most
  ``MAX_COMPRESSION_RATIO`` times its compressed size (beyond ``RATIO_FLOOR_BYTES``): a
  gzip bomb is quarantined whole after reading at most that much;
* a physical line may hold at most ``MAX_LINE_BYTES``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import stat as stat_module
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from segment_warehouse.ingest.results import FileRejected, TruncatedGzip

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
MAX_DECOMPRESSED_BYTES = 8 << 30
MAX_COMPRESSION_RATIO = 200
RATIO_FLOOR_BYTES = 64 << 20
MAX_LINE_BYTES = 16 << 20
# Above this many quarantined rows a file is quarantined whole: a flood of bad lines (4 MiB
# of newlines is 4 M rows) would otherwise fill the audit table and memory.
MAX_QUARANTINE_ROWS_PER_FILE = 100_000

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\\]")


def display_name(name: str) -> str:
    """``name`` safe for one log line: control characters, line separators and bytes that
    were not UTF-8 (surrogate escapes) written as escapes, so a file name cannot forge
    log lines or a status."""

    def esc(m: re.Match[str]) -> str:
        c = m.group()
        if c == "\\":
            return "\\\\"
        code = ord(c)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's escape of an undecodable byte
            return f"\\x{code - 0xDC00:02x}"
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(esc, name)


def refusal_reason(entry: Path, landing_dir: Path) -> str | None:
    """Why ``entry`` is not loaded, or None for a regular file inside the landing dir.

    Looks at the entry itself (lstat), never at what a link points to, and never opens it
    (opening a FIFO would block the run).
    """
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (the contract says text is UTF-8); rename it"
    st = entry.lstat()
    mode = st.st_mode
    if stat_module.S_ISLNK(mode):
        return "symbolic link: only regular files inside the landing dir are loaded"
    if stat_module.S_ISDIR(mode):
        return "sub-directory: only regular files directly under the source folder are loaded"
    if not stat_module.S_ISREG(mode):
        kind = (
            "FIFO"
            if stat_module.S_ISFIFO(mode)
            else "socket"
            if stat_module.S_ISSOCK(mode)
            else "device"
        )
        return f"{kind}: only regular files are loaded"
    real = Path(os.path.realpath(entry))
    if not real.is_relative_to(Path(os.path.realpath(landing_dir))):
        return "outside the landing dir: only regular files inside it are loaded"
    return None


def escaped_rel(entry: Path, landing_dir: Path) -> str:
    """The entry's path relative to the landing dir, as text any table can hold."""
    rel = entry.relative_to(landing_dir).as_posix()
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return display_name(rel)
    return rel


def _open_regular(path: Path) -> IO[bytes]:
    """Open ``path`` for reading only if it is (still) a regular file, never via a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            raise FileRejected("not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class HashingReader:
    """A read-only stream over ``raw`` that feeds every byte it returns to ``digest``, so
    the reading pass also yields the file's sha256 (no second read of the file)."""

    def __init__(self, raw: IO[bytes], digest: Any) -> None:
        self._raw = raw
        self._digest = digest

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(size)
        self._digest.update(data)
        return data

    def drain(self) -> None:
        """Hash whatever the consumer left unread (the digest covers the whole file)."""
        while block := self._raw.read(8 << 20):
            self._digest.update(block)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with _open_regular(path) as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


class _BoundedGzip(gzip.GzipFile):
    """A GzipFile that raises FileRejected once it has produced more than ``limit`` bytes.

    Counts in the read methods themselves (no wrapper stream): a wrapper added a copy
    of every decompressed chunk. A single read may overshoot the bound by its size.
    """

    def __init__(self, fileobj: IO[bytes], limit: int, compressed: int) -> None:
        super().__init__(fileobj=fileobj, mode="rb")
        self._limit = limit
        self._compressed = compressed
        self._produced = 0

    def _count(self, n: int) -> None:
        self._produced += n
        if self._produced > self._limit:
            raise FileRejected(
                f"decompressed size exceeds the bound ({self._limit} bytes from "
                f"{self._compressed} compressed): possible gzip bomb"
            )

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self._count(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        data = super().read1(size)
        self._count(len(data))
        return data

    def readinto(self, b: Any) -> int:
        n = super().readinto(b)
        self._count(n)
        return n

    def readinto1(self, b: Any) -> int:
        n = super().readinto1(b)
        self._count(n)
        return n


def decompressed_limit(compressed_bytes: int) -> int:
    return min(
        MAX_DECOMPRESSED_BYTES, max(RATIO_FLOOR_BYTES, MAX_COMPRESSION_RATIO * compressed_bytes)
    )


@contextmanager
def open_bytes(path: Path, digest: Any = None) -> Iterator[IO[bytes]]:
    """Decompressed byte stream of a landing file; unreadable input -> FileRejected.

    With ``digest`` (a hashlib object), the file's stored bytes are hashed as they are read;
    the digest is complete once the block exits without an error.
    """
    is_gz = path.name.lower().endswith(".gz")
    with _open_regular(path) as raw:
        head = raw.read(2)
        raw.seek(0)
        if is_gz and head != GZIP_MAGIC:
            raise FileRejected("not a gzip file (the name ends in .gz but the content is not gzip)")
        if not is_gz and head == GZIP_MAGIC:
            raise FileRejected("file is gzip-compressed but its name does not end in .gz")
        src: Any = HashingReader(raw, digest) if digest is not None else raw
        if not is_gz:
            yield src
        else:
            size = os.fstat(raw.fileno()).st_size
            with _BoundedGzip(src, decompressed_limit(size), size) as gz:
                try:
                    yield gz
                except EOFError as exc:
                    raise TruncatedGzip(f"truncated gzip file: {exc}") from exc
                except (gzip.BadGzipFile, zlib.error) as exc:
                    raise FileRejected(f"corrupt gzip file: {exc}") from exc
        if digest is not None:
            src.drain()


def read_whole(path: Path, limit: int) -> bytes | None:
    """The decompressed file if it has at most ``limit`` bytes, else None."""
    with open_bytes(path) as fh:
        data = fh.read(limit + 1)
    return None if len(data) > limit else data


def iter_line_chunks(stream: IO[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """Yield pieces of ``stream`` that end on a newline (the last one may not)."""
    carry = b""
    while block := stream.read(chunk_bytes):
        buf = carry + block if carry else block
        cut = buf.rfind(b"\n")
        if cut < 0:
            if len(buf) > MAX_LINE_BYTES:
                raise FileRejected(f"a line is longer than the bound ({MAX_LINE_BYTES} bytes)")
            carry = buf  # one long line: keep reading
            continue
        carry = buf[cut + 1 :]
        if len(carry) > MAX_LINE_BYTES:
            raise FileRejected(f"a line is longer than the bound ({MAX_LINE_BYTES} bytes)")
        yield buf[: cut + 1]
    if carry:
        yield carry


def split_lines(chunk: bytes) -> pa.LargeStringArray:
    """Zero-copy Arrow view of the lines in ``chunk`` (each keeps its newline)."""
    is_newline = np.frombuffer(chunk, dtype=np.uint8) == 10
    count = int(np.count_nonzero(is_newline))
    # A newline flood (lines of under 4 bytes on average, more of them than a file may
    # quarantine) is refused before its line index is built: 64 MiB of newlines would
    # need half a GiB of offsets.
    if count > MAX_QUARANTINE_ROWS_PER_FILE and count * 4 > len(chunk):
        raise FileRejected(
            f"newline flood: more than {MAX_QUARANTINE_ROWS_PER_FILE} lines averaging under "
            "4 bytes; the file is quarantined whole"
        )
    newlines = np.flatnonzero(is_newline)
    offsets = np.empty(len(newlines) + 2, dtype=np.int64)
    offsets[0] = 0
    offsets[1 : len(newlines) + 1] = newlines + 1
    n = len(newlines)
    if n == 0 or offsets[n] != len(chunk):  # last line without a newline
        offsets[n + 1] = len(chunk)
        n += 1
    if n > 1 and int(np.max(np.diff(offsets[: n + 1]))) > MAX_LINE_BYTES:
        raise FileRejected(f"a line is longer than the bound ({MAX_LINE_BYTES} bytes)")
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets[: n + 1].tobytes()), pa.py_buffer(chunk)
    )


def utf8_error_line(path: Path) -> str:
    """Describe where the first invalid UTF-8 byte is (slow path, only on failure)."""
    line = 1
    with open_bytes(path) as fh:
        for chunk in iter_line_chunks(fh, 8 << 20):
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                line += chunk.count(b"\n", 0, exc.start)
                bad = chunk[exc.start : exc.start + 4]
                return f"not valid UTF-8: {exc.reason} (byte {bad[:1]!r}) at line {line}"
            line += chunk.count(b"\n")
    return "not valid UTF-8"


def physical_lines(path: Path, ranges: Sequence[tuple[int, int]]) -> dict[int, str]:
    """Text of physical lines start..end for each range (second pass, failures only).

    Splits lines exactly as the csv reader counted them (newline='' text mode), so the
    line numbers agree.
    """
    wanted = dict(sorted(ranges))
    out: dict[int, str] = {}
    open_start: int | None = None
    parts: list[str] = []
    last = max(wanted.values(), default=0)
    with open_bytes(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        for number, line in enumerate(text, start=1):
            if open_start is None and number in wanted:
                open_start, parts = number, []
            if open_start is not None:
                parts.append(line)
                if number >= wanted[open_start]:
                    out[open_start] = "".join(parts).rstrip("\r\n")
                    open_start = None
            if number >= last and open_start is None:
                break
    return out


def each_physical_line(path: Path, first: int, last: int) -> list[tuple[int, str]]:
    """(number, text) of every physical line first..last, line endings removed."""
    out: list[tuple[int, str]] = []
    with open_bytes(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        for number, line in enumerate(text, start=1):
            if number > last:
                break
            if number >= first:
                out.append((number, line.rstrip("\r\n")))
    return out
