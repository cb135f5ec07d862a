"""Vectorised text formatting on Arrow arrays.

Lines are assembled with ``pyarrow.compute.binary_join_element_wise`` from
pieces that are mostly ``take`` lookups into small pre-rendered vocabularies
(dates, clock times, hex digits). That keeps Python out of the per-row path
and is several times faster than DuckDB's ``to_json`` for our shapes.
Values come from controlled vocabularies, so no JSON escaping is needed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MS_PER_DAY = 86_400_000
EPOCH = date(1970, 1, 1)

Piece = pa.Array | pa.ChunkedArray | str


def day_ms(d: date) -> int:
    return (d - EPOCH).days * MS_PER_DAY


def ms_to_date(ms: int) -> date:
    return EPOCH + timedelta(days=int(ms // MS_PER_DAY))


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def arr(values: np.ndarray | Sequence) -> pa.Array:
    return pa.array(values)


@cache
def vocab_array(vocab: tuple[str, ...]) -> pa.Array:
    """A vocabulary as an Arrow string array, converted once per process."""
    return pa.array(list(vocab), pa.string())


def take(vocab: Sequence[str] | pa.Array, codes: np.ndarray) -> pa.Array:
    voc = vocab if isinstance(vocab, pa.Array) else vocab_array(tuple(vocab))
    return voc.take(pa.array(np.asarray(codes, dtype=np.int32)))


def join(*pieces: Piece, sep: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*pieces, sep)


def choose(codes: np.ndarray, *options: pa.Array) -> pa.Array:
    """Per-row pick among equally long string arrays (codes index ``options``)."""
    return pc.choose(pa.array(np.asarray(codes, dtype=np.int8)), *options)


def where(mask: np.ndarray, a: Piece, b: Piece) -> pa.Array:
    return pc.if_else(pa.array(mask), a, b)


def to_str(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def fixed_strings(u8: np.ndarray) -> pa.Array:
    """Rows of a (n, w) uint8 matrix -> Arrow strings of w bytes each (no Python loop)."""
    n, w = u8.shape
    return pa.Array.from_buffers(pa.string(), n, [
        None, pa.py_buffer(np.arange(0, (n + 1) * w, w, dtype=np.int32)),
        pa.py_buffer(np.ascontiguousarray(u8, dtype=np.uint8))])


def _digits_u8(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers -> (n, width) ASCII digits, zero padded (the low ``width``
    digits), four digits per lookup."""
    v = np.asarray(values, dtype=np.int64)
    out = np.empty((len(v), width), np.uint8)
    quads = _quads_u8().view(np.uint32).ravel()
    k = width
    while k > 0:
        w = min(4, k)
        out[:, k - w:k] = quads[v % 10_000].view(np.uint8).reshape(-1, 4)[:, 4 - w:]
        k -= w
        if k:
            v = v // 10_000
    return out


@cache
def _quads_u8() -> np.ndarray:
    i = np.arange(10_000)
    return (np.stack([i // 1000, i // 100 % 10, i // 10 % 10, i % 10], axis=1) + 48
            ).astype(np.uint8)


def _lit_u8(text: str, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text.encode(), np.uint8), (n, len(text)))


@cache
def _two_digits() -> pa.Array:
    return fixed_strings(_digits_u8(np.arange(100), 2))


@cache
def _hex4() -> pa.Array:
    return fixed_strings(_hex4_u8())


@cache
def _clock() -> pa.Array:
    return fixed_strings(_clock_u8())


@cache
def _millis() -> pa.Array:
    return fixed_strings(np.hstack([_lit_u8(".", 1000), _millis_u8()]))


DATE_BASE = -25_000  # days since epoch (~1901); vocabulary covers 1901..2105


@cache
def _all_dates() -> pa.Array:
    return fixed_strings(_dates_u8())


def dates(days: np.ndarray) -> pa.Array:
    """Days since epoch -> ``YYYY-MM-DD``."""
    return _all_dates().take(pa.array(np.asarray(days, dtype=np.int64) - DATE_BASE))


def money(cents: np.ndarray) -> pa.Array:
    """Non-negative integer cents -> ``123.45``."""
    cents = np.asarray(cents, dtype=np.int64)
    return join(to_str(cents // 100), ".", _two_digits().take(pa.array(cents % 100)))


def hex_id(values: np.ndarray, groups: Sequence[int] = (4, 4, 4, 4), sep: str = "") -> pa.Array:
    """uint64 -> 16 hex digits, split into groups of 4-digit blocks joined by ``sep``."""
    values = np.asarray(values, dtype=np.uint64)
    blocks = [
        _hex4().take(pa.array(((values >> np.uint64(s)) & np.uint64(0xFFFF)).astype(np.int32)))
        for s in (48, 32, 16, 0)
    ]
    out: list[pa.Array] = []
    i = 0
    for g in groups:
        out.append(join(*blocks[i : i + g]) if g > 1 else blocks[i])
        i += g
    return join(*out, sep=sep) if len(out) > 1 else out[0]


def scramble(x: np.ndarray, key: int) -> np.ndarray:
    """Bijective 64-bit mix (splitmix64 finaliser): unique ids that don't look sequential."""
    z = np.asarray(x, dtype=np.uint64) + np.uint64(key & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def permute_decimal(x: np.ndarray, modulus: int, mult: int, add: int) -> np.ndarray:
    """Affine bijection on [0, modulus): short numeric ids that look shuffled.

    ``mult`` must be coprime with ``modulus``; x * mult must fit in int64.
    """
    return (np.asarray(x, dtype=np.int64) * mult + add) % modulus


def by_code(codes: np.ndarray, build: Callable[[int, np.ndarray], pa.Array]) -> pa.Array:
    """Per-row pick among options that are only built for the rows that need them.

    ``build(code, rows)`` returns the strings of ``rows`` (or one string for all of
    them); the result equals ``choose(codes, *options)`` over full-length options.
    """
    codes = np.asarray(codes)
    present = np.unique(codes).tolist()
    n = len(codes)
    if n == 0:
        return pa.array([], pa.string())
    if len(present) == 1:
        part = build(present[0], np.arange(n))
        return part if len(part) == n else part.take(pa.array(np.zeros(n, np.int32)))
    idx = np.empty(n, np.int64)
    parts: list[pa.Array] = []
    base = 0
    for c in present:
        rows = np.flatnonzero(codes == c)
        part = build(c, rows)
        idx[rows] = base + (np.arange(len(rows)) if len(part) == len(rows) else 0)
        base += len(part)
        parts.append(part)
    return pa.concat_arrays(parts).take(pa.array(idx))


def timestamps(ms: np.ndarray, style: np.ndarray | int, offset_min: np.ndarray | None = None
               ) -> pa.Array:
    """Epoch milliseconds -> ISO-8601 text in one of several styles.

    style 0 ``2026-05-01T10:00:00Z``, 1 ``2026-05-01 10:00:00`` (no offset = UTC),
    2 ``2026-05-01T12:00:00+02:00`` (local clock plus offset),
    3 ``2026-05-01T10:00:00.123Z`` (Segment style).
    """
    ms = np.asarray(ms, dtype=np.int64)
    n = len(ms)
    styles = np.broadcast_to(np.asarray(style, dtype=np.int8), (n,))
    offset = (np.zeros(n, dtype=np.int64) if offset_min is None
              else np.asarray(offset_min, dtype=np.int64))

    def build(st: int, rows: np.ndarray) -> pa.Array:
        t = ms[rows]
        if st == 2:
            om = offset[rows]
            t = t + om * 60_000
        fw = FixedWidth().col(_dates_u8().view("S10").ravel()[t // MS_PER_DAY - DATE_BASE])
        fw.lit(" " if st == 1 else "T").col(_clock_u8().view("S8").ravel()[(t // 1000) % 86400])
        if st == 0:
            fw.lit("Z")
        elif st == 2:
            two = _digits_u8(np.arange(100), 2).view("S2").ravel()
            a = np.abs(om)
            fw.col(np.where(om < 0, b"-", b"+")).col(two[a // 60]).lit(":").col(two[a % 60])
        elif st == 3:
            fw.lit(".").col(_millis_u8().view("S3").ravel()[t % 1000]).lit("Z")
        return fw.array(len(rows))

    return by_code(styles, build)


# --- fixed-width rendering in numpy (uint8 matrices, one row per line) ----------


@cache
def _hex4_u8() -> np.ndarray:
    nib = np.frombuffer(b"0123456789abcdef", np.uint8)
    i = np.arange(65536)
    return np.stack([nib[(i >> s) & 15] for s in (12, 8, 4, 0)], axis=1)


@cache
def _dates_u8() -> np.ndarray:
    days = np.arange(DATE_BASE, DATE_BASE + 75_000).astype("datetime64[D]")
    return np.frombuffer(np.datetime_as_string(days).astype("S10").tobytes(),
                         np.uint8).reshape(-1, 10)


@cache
def _clock_u8() -> np.ndarray:
    s = np.arange(86400)
    return np.hstack([_digits_u8(s // 3600, 2), _lit_u8(":", len(s)),
                      _digits_u8(s // 60 % 60, 2), _lit_u8(":", len(s)),
                      _digits_u8(s % 60, 2)])


@cache
def _millis_u8() -> np.ndarray:
    return _digits_u8(np.arange(1000), 3)


def warm_caches() -> None:
    """Build the shared lookup tables (before forking workers, so they inherit them)."""
    for f in (_quads_u8, _two_digits, _hex4, _clock, _millis, _all_dates):
        f()


class FixedWidth:
    """Builds equally long lines from fixed-width pieces in a numpy record array.

    Much cheaper than joining Arrow string pieces when every piece has a fixed
    width (hex ids, ISO timestamps, literals); :meth:`array` turns the records
    into an Arrow string array without copying.
    """

    def __init__(self) -> None:
        self.pieces: list[tuple[int, bytes | np.ndarray]] = []

    def lit(self, text: str) -> FixedWidth:
        b = text.encode()
        self.pieces.append((len(b), b))
        return self

    def col(self, values: np.ndarray) -> FixedWidth:
        """A column of ``S<w>`` values (all exactly w bytes)."""
        self.pieces.append((values.dtype.itemsize, values))
        return self

    def hex16(self, values: np.ndarray) -> FixedWidth:
        """uint64 -> 16 lower-case hex digits (same text as :func:`hex_id`)."""
        v = np.asarray(values, dtype=np.uint64)
        tbl = _hex4_u8().view("S4").ravel()
        for s in (48, 32, 16, 0):
            self.col(tbl[((v >> np.uint64(s)) & np.uint64(0xFFFF)).astype(np.intp)])
        return self

    def digits(self, values: np.ndarray, width: int) -> FixedWidth:
        """Non-negative integers -> ``width`` decimal digits, zero padded."""
        return self.col(_digits_u8(values, width).view(f"S{width}").ravel())

    def uuid(self, h1: np.ndarray, h2: np.ndarray) -> FixedWidth:
        """Two uint64 -> ``8-4-4-4-12`` hex (same text as ``hex_id`` with those groups)."""
        tbl = _hex4_u8().view("S4").ravel()

        def block(v: np.ndarray, s: int) -> np.ndarray:
            return tbl[((v >> np.uint64(s)) & np.uint64(0xFFFF)).astype(np.intp)]

        h1, h2 = np.asarray(h1, dtype=np.uint64), np.asarray(h2, dtype=np.uint64)
        self.col(block(h1, 48)).col(block(h1, 32)).lit("-").col(block(h1, 16)).lit("-")
        self.col(block(h1, 0)).lit("-").col(block(h2, 48)).lit("-")
        return self.col(block(h2, 32)).col(block(h2, 16)).col(block(h2, 0))

    def iso_millis(self, ms: np.ndarray) -> FixedWidth:
        """Epoch ms -> ``2026-05-01T10:00:00.123Z`` (same text as timestamps(ms, 3))."""
        ms = np.asarray(ms, dtype=np.int64)
        self.col(_dates_u8().view("S10").ravel()[ms // MS_PER_DAY - DATE_BASE]).lit("T")
        self.col(_clock_u8().view("S8").ravel()[(ms // 1000) % 86400]).lit(".")
        return self.col(_millis_u8().view("S3").ravel()[ms % 1000]).lit("Z")

    @property
    def width(self) -> int:
        return sum(w for w, _ in self.pieces)

    def fill(self, out: np.ndarray) -> None:
        """Render into ``out``: a contiguous uint8 buffer of n * width bytes."""
        widths = [w for w, _ in self.pieces]
        width = sum(widths)
        offs = np.cumsum([0, *widths])[:-1].tolist()
        names = [f"f{i}" for i in range(len(widths))]
        dt = np.dtype({"names": names, "formats": [f"S{w}" for w in widths],
                       "offsets": offs, "itemsize": width})
        tmpl = np.zeros(1, dt)
        for name, (_, v) in zip(names, self.pieces, strict=True):
            if isinstance(v, bytes):
                tmpl[name] = v
        rec = out.view(dt)
        rec[...] = tmpl[0]
        for name, (_, v) in zip(names, self.pieces, strict=True):
            if not isinstance(v, bytes):
                rec[name] = v

    def array(self, n: int) -> pa.Array:
        width = self.width
        buf = np.empty(n * width, np.uint8)
        self.fill(buf)
        offsets = np.arange(n + 1, dtype=np.int64) * width
        if n * width < 2**31:
            return pa.Array.from_buffers(pa.string(), n, [
                None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(buf)])
        return pa.Array.from_buffers(pa.large_string(), n, [
            None, pa.py_buffer(offsets), pa.py_buffer(buf)])


def concat_with_fixed(parts: Sequence[pa.Array], fixed: FixedWidth, n: int) -> pa.Array:
    """``concat_arrays([*parts, fixed.array(n)])``, rendering the fixed-width rows in place.

    Saves allocating and copying the (large) fixed-width block a second time.
    """
    sizes = [int(line_offsets(a)[-1] - line_offsets(a)[0]) if len(a) else 0 for a in parts]
    width = fixed.width
    total_bytes = sum(sizes) + n * width
    count = sum(len(a) for a in parts) + n
    large = total_bytes >= 2**31
    data = np.empty(total_bytes, np.uint8)
    offsets = np.empty(count + 1, np.int64)
    pos = at = 0
    for a, size in zip(parts, sizes, strict=True):
        if not len(a):
            continue
        offs = line_offsets(a)
        data[pos:pos + size] = np.frombuffer(a.buffers()[2], np.uint8, size, int(offs[0]))
        offsets[at:at + len(a)] = offs[:-1] - offs[0] + pos
        pos += size
        at += len(a)
    fixed.fill(data[pos:])
    offsets[at:] = pos + np.arange(n + 1, dtype=np.int64) * width
    return pa.Array.from_buffers(pa.large_string() if large else pa.string(), count, [
        None, pa.py_buffer(offsets if large else offsets.astype(np.int32)), pa.py_buffer(data)])


def scatter_take(n: int, parts: Sequence[tuple[np.ndarray, pa.Array]],
                 default: pa.Array, default_idx: np.ndarray | None = None) -> pa.Array:
    """One string per row: row ``parts[k][0][j]`` gets ``parts[k][1][j]``.

    Other rows get ``default[default_idx[row]]`` (or ``default[0]``). A single
    ``take`` over the concatenated pieces.
    """
    idx = (np.zeros(n, np.int64) if default_idx is None
           else np.asarray(default_idx, np.int64).copy())
    base = len(default)
    arrays: list[pa.Array] = [default]
    for rows, values in parts:
        idx[rows] = base + np.arange(len(rows))
        base += len(rows)
        arrays.append(values)
    return pa.concat_arrays(arrays).take(pa.array(idx))


def line_offsets(lines: pa.Array) -> np.ndarray:
    """The n + 1 offsets (int64, relative to the data buffer) of a (large_)string array."""
    dt = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    return np.frombuffer(lines.buffers()[1], dtype=dt)[
        lines.offset : lines.offset + len(lines) + 1].astype(np.int64)


def lines_buffer(lines: pa.Array | pa.ChunkedArray) -> pa.Buffer:
    """The concatenated bytes of a string array (each element already ends in \\n)."""
    if isinstance(lines, pa.ChunkedArray):
        lines = pa.concat_arrays(lines.chunks) if lines.num_chunks != 1 else lines.chunk(0)
    if len(lines) == 0:
        return pa.py_buffer(b"")
    offs = line_offsets(lines)
    return lines.buffers()[2][int(offs[0]):int(offs[-1])]


def gzip_bytes(parts: Sequence[bytes | pa.Buffer | memoryview], level: int) -> bytes:
    """gzip with a fixed header (mtime 0) so output is byte-for-byte reproducible."""
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)
    out = [comp.compress(p) for p in parts]
    out.append(comp.flush())
    return b"".join(out)
