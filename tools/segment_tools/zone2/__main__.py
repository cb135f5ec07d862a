"""python -m segment_tools.zone2 --persons N --seed S --as-of YYYY-MM-DD --out DIR"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path

from segment_tools.zone2.config import LAPSE_MODES, PROFILES, ZoneConfig
from segment_tools.zone2.generate import generate


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from exc


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="segment_tools.zone2", description=__doc__)
    ap.add_argument("--persons", type=_positive, default=5000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--as-of", type=_date, required=True, help="as-of date YYYY-MM-DD")
    ap.add_argument("--out", type=Path, required=True,
                    help="zone dir: writes OUT/landing, OUT/truth (and OUT/future)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="easy",
                    help="easy = set 1; hard = set 2 (more duplicates, households, bots)")
    ap.add_argument("--holdout-days", type=int, default=0,
                    help="also write OUT/future/transactions for (as_of, as_of + N days]")
    ap.add_argument("--event-days", type=_positive, default=120)
    ap.add_argument("--lapse", choices=LAPSE_MODES, default="end",
                    help="end (default, the documented sets): every person's quiet spell "
                         "ends the history at as-of; stationary: only people who left "
                         "(lapse > 45 days) stop early, the rest order up to as-of")
    ap.add_argument("--force", action="store_true", help="replace an existing OUT")
    args = ap.parse_args(argv)
    if args.holdout_days < 0:
        ap.error("--holdout-days must be >= 0")
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.force:
            ap.error(f"{out} is not empty (use --force to replace it)")
        for sub in ("landing", "truth", "future"):
            shutil.rmtree(out / sub, ignore_errors=True)
    cfg = ZoneConfig(persons=args.persons, seed=args.seed, as_of=args.as_of,
                     holdout_days=args.holdout_days, event_days=args.event_days,
                     lapse=args.lapse,
                     **PROFILES[args.profile])  # type: ignore[arg-type]
    summary = generate(cfg, out)
    print(json.dumps({k: str(v) if isinstance(v, Path) else v
                      for k, v in asdict(summary).items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
