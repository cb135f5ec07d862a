"""The hostile-input corpus: bad deliveries built by code at test time (issue 15).

Each builder writes one landing entry (or a few) and returns what the checks need. Kept
small so the whole corpus loads in seconds.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from landing_rows import CRM_HEADER, crm_row, event


def write(landing: Path, rel: str, data: str | bytes) -> Path:
    path = landing / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def stray_quote_csv(landing: Path) -> tuple[str, int]:
    """40 physical lines; a stray quote on line 5 closes on line 25 (the issue's case)."""
    lines = [CRM_HEADER]
    for i in range(2, 41):
        if i == 5:
            lines.append(crm_row(f"c{i}", city='"Oakland'))
        elif i == 25:
            lines.append(crm_row(f"c{i}", city='Oakland"'))
        else:
            lines.append(crm_row(f"c{i}", city="Oakland"))
    write(landing, "crm/stray_quote.csv", "\n".join(lines) + "\n")
    return "crm/stray_quote.csv", len(lines)


def unterminated_quote_csv(landing: Path) -> tuple[str, int]:
    """50 physical lines; row 2 opens a quote that never closes."""
    lines = [CRM_HEADER, crm_row("c2", first_name='"Ann')]
    lines += [crm_row(f"c{i}") for i in range(3, 51)]
    write(landing, "crm/unterminated.csv", "\n".join(lines) + "\n")
    return "crm/unterminated.csv", len(lines)


def non_utf8_name(landing: Path) -> bytes:
    folder = os.fsencode(landing / "crm")
    os.makedirs(folder, exist_ok=True)
    name = os.path.join(folder, b"contacts_\xff\xfe.csv")
    with open(name, "wb") as fh:
        fh.write((CRM_HEADER + "\n" + crm_row("c900") + "\n").encode())
    return name


def gzip_bomb(landing: Path, rel: str, decompressed: int) -> Path:
    """A small .gz that inflates to ``decompressed`` bytes of one repeated JSON line."""
    line = (event("bomb") + "\n").encode()
    block = line * max(1, (1 << 20) // len(line))
    path = landing / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=9) as fh:
        written = 0
        while written < decompressed:
            fh.write(block)
            written += len(block)
    return path
