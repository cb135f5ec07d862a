"""CDNOW: real purchase histories through the landing-zone contract, with a held-back future.

CDNOW (Fader and Hardie's "CDNOW master" file) holds every purchase of the 23,570
customers who first bought at the online CD retailer CDNOW in the first quarter of
1997, up to the end of June 1998: customer id, date (YYYYMMDD), number of CDs and
dollar value. The copy used here ships in the ``Lifetimes`` 0.11.3 wheel
(``lifetimes/datasets/CDNOW_master.txt``, MIT licence), read straight out of the
zip so the package is never installed.

    python -m segment_tools.cdnow prepare --out DIR --cutoff D [--wheel WHEEL]
    python -m segment_tools.cdnow evaluate --out DIR --snapshot analytics.duckdb

Dates are moved forward by 28 years (1,461 weeks, one full Gregorian cycle: the
same weekday and the same month and day), so 1997-01-01 lands on 2025-01-01 and
the last purchase day, 1998-06-30, on 2026-06-30. ``--cutoff`` is given in the
moved calendar (1997-06-30 is ``--cutoff 2025-06-30``) and is the ``--date`` of
the pipeline run.

``prepare`` writes, per DESIGN.md section 3:

- ``DIR/landing/crm/cdnow_contacts.csv``: one contact per customer known by D
  (contact_id = the CDNOW id; created_at = updated_at = the first purchase;
  country US; consent unknown; CDNOW gives no names, emails or phones);
- ``DIR/landing/transactions/orders_YYYY-MM.csv``: one order per CDNOW line placed
  by D (``contact_id`` set, status ``completed``, currency ``USD``,
  ``total_amount`` = dollar value, ``items_count`` = CDs, time of day noon UTC);
- ``DIR/future/transactions/orders_future.csv``: the lines after D, the same
  way, for ``evaluate`` (never under ``landing``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import zipfile
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

MEMBER = "lifetimes/datasets/CDNOW_master.txt"
WHEEL_SPEC = "Lifetimes==0.11.3"
# 28 years = 1,461 weeks: weekday, month and day stay what they were in 1997-98.
SHIFT = timedelta(weeks=1461)
CRM_HEADER = ("contact_id", "updated_at", "created_at", "country", "marketing_consent")
TX_HEADER = ("order_id", "contact_id", "email", "order_ts", "status", "currency", "total_amount",
             "items_count", "channel", "updated_at")


def load(wheel: Path) -> pd.DataFrame:
    """CDNOW_master.txt from the wheel: customer_id, day (moved), cds, dollars, line."""
    with zipfile.ZipFile(wheel) as z:
        try:
            raw = z.read(MEMBER).decode("ascii")
        except KeyError as exc:
            raise SystemExit(f"{wheel} has no {MEMBER}") from exc
    rows = [line.split() for line in raw.splitlines() if line.strip()]
    header, body = rows[0], rows[1:]
    expected = ["customer_id", "date", "number_of_cds", "dollar_value"]
    if header != expected:
        raise SystemExit(f"unexpected CDNOW header {header!r} (expected {expected!r})")
    bad = [i + 2 for i, r in enumerate(body) if len(r) != 4]
    if bad:
        raise SystemExit(f"CDNOW lines with other than 4 fields: {bad[:5]}")
    df = pd.DataFrame(body, columns=expected)
    day = pd.to_datetime(df["date"], format="%Y%m%d") + SHIFT
    out = pd.DataFrame({
        "customer_id": df["customer_id"],
        "day": day.dt.date,
        "cds": df["number_of_cds"].astype(int),
        "dollars": df["dollar_value"].astype(float),
    })
    # A customer's n-th line of a day: lines of one day are separate purchases.
    out["seq"] = out.groupby(["customer_id", "day"]).cumcount() + 1
    return out


def _ts(d: date) -> str:
    return f"{d.isoformat()}T12:00:00Z"


def _order_rows(df: pd.DataFrame) -> list[list[object]]:
    return [
        [f"CD-{r.customer_id}-{r.day:%Y%m%d}-{r.seq}", r.customer_id, "", _ts(r.day), "completed",
         "USD", f"{r.dollars:.2f}", max(int(r.cds), 1), "web", _ts(r.day)]
        for r in df.itertuples(index=False)
    ]


def _write(path: Path, header: tuple[str, ...], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


@dataclass(frozen=True)
class PrepareSummary:
    cutoff: str
    original_cutoff: str
    contacts: int
    orders: int
    future_orders: int
    first_day: str
    last_day: str


def prepare(wheel: Path, out: Path, cutoff: date) -> PrepareSummary:
    df = load(wheel)
    if out.exists() and any((out / sub).exists() for sub in ("landing", "future")):
        raise SystemExit(f"{out} already holds a zone: use a new directory")
    past, future = df[df["day"] <= cutoff], df[df["day"] > cutoff]
    first = past.groupby("customer_id", sort=True)["day"].min()
    _write(out / "landing" / "crm" / "cdnow_contacts.csv", CRM_HEADER,
           [[cid, _ts(d), _ts(d), "US", ""] for cid, d in first.items()])
    months = past["day"].map(lambda d: f"{d:%Y-%m}")
    for month, part in past.groupby(months, sort=True):
        _write(out / "landing" / "transactions" / f"orders_{month}.csv", TX_HEADER,
               _order_rows(part))
    (out / "landing" / "analytics").mkdir(parents=True, exist_ok=True)
    _write(out / "future" / "transactions" / "orders_future.csv", TX_HEADER,
           _order_rows(future))
    return PrepareSummary(
        cutoff=str(cutoff), original_cutoff=str(cutoff - SHIFT), contacts=len(first),
        orders=len(past), future_orders=len(future),
        first_day=str(df["day"].min()), last_day=str(df["day"].max()),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="segment_tools.cdnow", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="landing zone up to D + the held-back future")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cutoff", type=date.fromisoformat, required=True,
                   help="D in the moved calendar (1997-06-30 -> 2025-06-30)")
    p.add_argument("--wheel", type=Path, required=True,
                   help=f"the {WHEEL_SPEC} wheel (pip download --no-deps {WHEEL_SPEC})")
    e = sub.add_parser("evaluate", help="published purchase probability vs the future")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--snapshot", type=Path, required=True)
    e.add_argument("--cutoff", type=date.fromisoformat, required=True)
    e.add_argument("--horizon", type=int, default=30)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        result: object = asdict(prepare(args.wheel, args.out, args.cutoff))
    else:
        from segment_tools.eval_predictions import evaluate

        result = evaluate(args.snapshot, args.out / "future", args.cutoff, args.horizon)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
