"""CLI: ``python -m segment_tools.generator --customers N --seed S [...]``."""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from datetime import date
from pathlib import Path

from segment_warehouse.config import get_settings

from .core import DEFAULT_DAYS, generate


class _NoPandas:
    """Import hook that makes ``import pandas`` fail.

    pyarrow imports pandas (~0.2 s) on its first ``pa.array`` call just to see
    whether it is there, in the parent and in every worker. History generation
    never uses pandas, so the CLI hides it for that run (delta days do use it).
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not needed by the generator")


def _keep_freed_memory() -> None:
    """Let this process (and its forked workers) reuse freed memory instead of
    handing it back to the kernel and faulting it in again for every file.

    glibc malloc would unmap large blocks and trim its heap, and Arrow's default
    allocator purges freed pages; both cost a lot of system time for chunk-sized
    buffers allocated over and over. Only the generator CLI does this.
    """
    import pyarrow as pa

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: heap, not mmap, for big blocks
            libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: keep freed heap memory
        except (OSError, AttributeError):
            return
        pa.set_memory_pool(pa.system_memory_pool())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m segment_tools.generator",
                                 description=__doc__)
    ap.add_argument("--customers", type=int, required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=None,
                    help="landing dir (default: SEGMENTS_LANDING_DIR)")
    ap.add_argument("--truth-dir", type=Path, default=None, help="default: <out>/../truth")
    ap.add_argument("--start-date", type=date.fromisoformat, default=None,
                    help="first day of history (default: days before 2026-11-22)")
    ap.add_argument("--days", type=int, default=DEFAULT_DAYS)
    ap.add_argument("--window-days", type=int, default=7, help="days per delivery file")
    ap.add_argument("--delta-day", action="store_true",
                    help="add one more day of files on top of an existing landing zone")
    ap.add_argument("--bad-rows", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--bad-row-rate", type=float, default=0.0003)
    ap.add_argument("--erasure-requests", type=int, default=0)
    ap.add_argument("--visitor-ratio", type=float, default=0.3,
                    help="anonymous-only visitors per customer")
    ap.add_argument("--gzip-level", type=int, default=1)
    ap.add_argument("--clean", action="store_true",
                    help="delete existing crm/analytics/transactions/erasure files and truth first")
    ap.add_argument("--workers", type=int, default=None,
                    help="processes (default: up to 2 CPU cores); output does not depend on it")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    out = a.out if a.out is not None else get_settings().landing_dir
    if not a.delta_day and "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())
    _keep_freed_memory()
    s = generate(out, a.customers, a.seed, truth_dir=a.truth_dir, start_date=a.start_date,
                 days=a.days, window_days=a.window_days, delta_day=a.delta_day,
                 bad_rows=a.bad_rows, bad_row_rate=a.bad_row_rate,
                 erasure_requests=a.erasure_requests, visitor_ratio=a.visitor_ratio,
                 gzip_level=a.gzip_level, clean=a.clean, progress=not a.no_progress,
                 workers=a.workers)
    d = s.as_dict()
    d["files"] = len(s.files)
    print(json.dumps(d, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
