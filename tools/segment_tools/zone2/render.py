"""How values look on the wire: phone formats, email variants, timestamps, files."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

_TZ = {"US": [-5, -6, -8], "GB": [0], "DE": [1], "FR": [1]}


def phone_variant(rng: Rng, e164: str, country: str) -> str:
    """The same number the way people type it: national, international, punctuated."""
    cc = {"US": "1", "GB": "44", "DE": "49", "FR": "33"}[country]
    nat = e164[1 + len(cc):]
    k = int(rng.integers(0, 6))
    if country == "US":
        a, b, c = nat[:3], nat[3:6], nat[6:]
        return [f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}",
                f"1{nat}", e164][k]
    if country == "GB":
        return [f"0{nat[:4]} {nat[4:]}", f"+44 {nat[:4]} {nat[4:]}", f"0044 {nat}",
                f"+44 (0){nat[:4]} {nat[4:]}", f"0{nat}", e164][k]
    if country == "DE":
        return [f"0{nat[:3]} {nat[3:]}", f"+49 {nat[:3]} {nat[3:]}", f"0049 (0){nat[:3]}-{nat[3:]}",
                f"0{nat[:3]}/{nat[3:]}", f"+49{nat}", e164][k]
    pairs = " ".join(nat[i:i + 2] for i in range(1, 9, 2))
    return [f"0{nat[0]} {pairs}", f"+33 {nat[0]} {pairs}", f"0033 {nat}",
            f"0{nat[0]}.{pairs.replace(' ', '.')}", f"+33 (0){nat[0]} {pairs}", e164][k]


def case_space_variant(rng: Rng, email: str) -> str:
    k = int(rng.integers(0, 4))
    if k == 0:
        return email.upper()
    if k == 1:
        local, _, dom = email.partition("@")
        return f"{local.capitalize()}@{dom.capitalize()}"
    if k == 2:
        return f"  {email} "
    return f" {email.title()}"


def gmail_dots(rng: Rng, email: str) -> str:
    local, _, dom = email.partition("@")
    bare = local.replace(".", "")
    if len(bare) < 3:
        return f"{bare[:1]}.{bare[1:]}@{dom}"
    cuts = sorted({int(c) for c in rng.integers(1, len(bare), size=int(rng.integers(1, 3)))})
    parts, last = [], 0
    for c in cuts:
        parts.append(bare[last:c])
        last = c
    parts.append(bare[last:])
    out = ".".join(p for p in parts if p)
    return f"{out}@{dom}" if out != local else f"{bare}@{dom}"


PLUS_TAGS = ("shop", "orders", "promo", "2026", "sale", "x")


def plus_tag(rng: Rng, email: str) -> str:
    """local+tag@domain; a person mostly reuses one tag (picked from the address)."""
    local, _, dom = email.partition("@")
    k = sum(email.encode()) % len(PLUS_TAGS) if rng.random() < 0.8 else int(rng.integers(6))
    tag = PLUS_TAGS[k]
    return f"{local}+{tag}@{dom}"


def iso_ts(rng: Rng, ts: datetime, country: str = "US") -> str:
    """ISO-8601 in one of the styles sources send: Z, an offset, naive UTC, millis."""
    k = int(rng.integers(0, 5))
    if k == 0:
        return ts.strftime("%Y-%m-%dT%H:%M:%SZ")
    if k == 1:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    if k == 2:
        hours = _TZ[country][int(rng.integers(len(_TZ[country])))]
        return ts.astimezone(timezone(timedelta(hours=hours))).isoformat(timespec="seconds")
    if k == 3:
        return ts.strftime("%Y-%m-%dT%H:%M:%S")
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "+00:00")


def consent_text(rng: Rng, value: str) -> str:
    if value == "":
        return ""
    opts = (["true", "TRUE", "yes", "Y", "1", "True"] if value == "true"
            else ["false", "FALSE", "no", "N", "0", "No"])
    return opts[int(rng.integers(len(opts)))]


def gender_text(rng: Rng, g: str) -> str:
    opts = ["f", "F", "female", "Female", "w", ""] if g == "f" else ["m", "M", "male", "Male", ""]
    return opts[int(rng.integers(len(opts)))]


def utc(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0 and no file name in the header keep the bytes identical per seed;
        # level 1: generation speed matters more than the size of test data
        data = gzip.compress(data, compresslevel=1, mtime=0)
    path.write_bytes(data)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]], *,
              crlf: bool) -> int:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n" if crlf else "\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    n = 0
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
        n += 1
    write_bytes(path, buf.getvalue().encode("utf-8"))
    return n


def write_jsonl(path: Path, events: Iterable[dict[str, object]]) -> int:
    lines = [json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in events]
    write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8"))
    return len(lines)


class FastRandom:
    """Scalar draws from blocks of a numpy Generator, with the scalar part of its API.

    The order and event loops draw a few scalars per row; numpy's per-call
    overhead dominates there, so values are drawn 64k at a time. Deterministic
    per seed.
    """

    def __init__(self, rng: np.random.Generator, block: int = 65536) -> None:
        self._rng = rng
        self._block = block
        self._buf: list[float] = []
        self._i = 0
        self._nbuf: list[float] = []
        self._ni = 0

    def random(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._rng.random(self._block).tolist()
            self._i = 0
        self._i += 1
        return self._buf[self._i - 1]

    def integers(self, lo: int, hi: int | None = None, size: int | None = None
                 ) -> int | list[int]:
        """Integers in [lo, hi) (or [0, lo) without hi), like Generator.integers."""
        if hi is None:
            lo, hi = 0, lo
        if size is not None:
            return [lo + int(self.random() * (hi - lo)) for _ in range(size)]
        return lo + int(self.random() * (hi - lo))

    def uniform(self, lo: float, hi: float) -> float:
        return lo + self.random() * (hi - lo)

    def normal(self) -> float:
        if self._ni >= len(self._nbuf):
            self._nbuf = self._rng.standard_normal(self._block).tolist()
            self._ni = 0
        self._ni += 1
        return self._nbuf[self._ni - 1]

    def lognormal(self, mean: float, sigma: float) -> float:
        return math.exp(mean + sigma * self.normal())

    def pick(self, weights: Sequence[float]) -> int:
        """An index drawn with probability proportional to weights."""
        u = self.random() * sum(weights)
        acc = 0.0
        for i, w in enumerate(weights):
            acc += w
            if u < acc:
                return i
        return len(weights) - 1


# the value helpers above take either: they only use the scalar draws both offer
Rng = np.random.Generator | FastRandom
