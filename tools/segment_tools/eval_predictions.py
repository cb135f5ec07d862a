"""Evaluate the published purchase propensity against held-back future orders.

Two subcommands:

``holdout``  split a generated landing zone at a cut-off D: every row whose own
             timestamp (orders: order_ts and updated_at; CRM: updated_at; events:
             timestamp) is after D goes to a held-back folder instead, so the
             pipeline run at D never sees the future.
``evaluate`` given the published snapshot of a run at D and the held-back
             orders of (D, D+30], compute the published score's ROC AUC and
             mean-predicted vs observed purchase rate, and a reference: a
             gradient-boosting model cross-validated on the same customers with
             hindsight features (computed from the same history, labelled by the
             held-back future, i.e. trained on the very outcome it is scored on).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

import pandas as pd

# Which columns date a row, per source: a row is "in the future" when any is after D.
_TIME_COLUMNS = {"transactions": ("order_ts", "updated_at"), "crm": ("updated_at",)}


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding="utf-8", newline="")
    return path.open(mode, encoding="utf-8", newline="")


def _after(values: pd.Series, cutoff: pd.Timestamp) -> pd.Series:
    # Unparseable timestamps stay in the landing zone: the pipeline quarantines them.
    ts = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return ts.notna() & (ts >= cutoff)


@dataclass
class HoldoutSummary:
    cutoff: str
    files: int
    rows_kept: dict[str, int]
    rows_held_back: dict[str, int]


def split_landing(src: Path, landing: Path, held: Path, cutoff: date) -> HoldoutSummary:
    """Copy ``src`` into ``landing`` without rows after ``cutoff`` (end of day, UTC);
    the later rows go to ``held`` with the same relative paths (uncompressed)."""
    bound = pd.Timestamp(cutoff + timedelta(days=1), tz="UTC")
    kept: dict[str, int] = {}
    back: dict[str, int] = {}
    n_files = 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        source = rel.parts[0]
        out = landing / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        n_files += 1
        if source in _TIME_COLUMNS:
            with _open_text(path, "r") as fh:
                df = pd.read_csv(fh, dtype=str, keep_default_na=False)
            future = pd.Series(False, index=df.index)
            for col in _TIME_COLUMNS[source]:
                if col in df.columns:
                    future |= _after(df[col], bound)
            with _open_text(out, "w") as fh:
                df[~future].to_csv(fh, index=False, quoting=csv.QUOTE_MINIMAL)
            if future.any():
                dest = held / rel.with_suffix("") if rel.suffix == ".gz" else held / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                df[future].to_csv(dest, index=False)
            kept[source] = kept.get(source, 0) + int((~future).sum())
            back[source] = back.get(source, 0) + int(future.sum())
        elif source == "analytics":
            keep_lines: list[str] = []
            held_lines: list[str] = []
            with _open_text(path, "r") as fh:
                for line in fh:
                    try:
                        ts = json.loads(line).get("timestamp")
                        is_future = bool(_after(pd.Series([ts]), bound).iloc[0])
                    except (ValueError, AttributeError):
                        is_future = False
                    (held_lines if is_future else keep_lines).append(line)
            with _open_text(out, "w") as fh:
                fh.writelines(keep_lines)
            kept[source] = kept.get(source, 0) + len(keep_lines)
            back[source] = back.get(source, 0) + len(held_lines)
        else:
            shutil.copy2(path, out)
    return HoldoutSummary(str(cutoff), n_files, kept, back)
