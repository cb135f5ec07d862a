"""CDNOW: real purchase histories through the landing-zone contract, with a held-back future.

CDNOW (Fader and Hardie's "CDNOW master" file) holds every purchase of the 23,570
customers who first bought at the online CD retailer CDNOW in the first quarter of
1997, up to the end of June 1998: customer id, date (YYYYMMDD), number of CDs and
dollar value. The copy used here ships in the ``Lifetimes`` 0.11.3 wheel
(``lifetimes/datasets/CDNOW_master.txt``, MIT licence), read straight out of the
zip so the package is never installed.

    python -m segment_tools.cdnow prepare --out DIR --cutoff D --wheel WHEEL
    python -m segment_tools.cdnow evaluate --out DIR --snapshot analytics.duckdb

``--cutoff`` D is a CDNOW date (1997-01-01 .. 1998-06-30). Every date is moved
forward by the whole number of weeks that puts D in the week ending 2026-06-30
(weekdays are kept), so the pipeline runs with a logical date inside its DAGs'
schedule (from 2026-01-01) and before today; ``prepare`` prints that date
(``run_date``) and keeps it in ``DIR/cdnow.json``: it is the ``--date`` of the
pipeline run, and ``evaluate`` reads it from there.

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
# The moved cut-off falls in the week ending here: recent dates the reference data
# (exchange rates, calendars) covers, and the dates docs/predictions.md was measured with.
ANCHOR = date(2026, 6, 30)
FIRST_DAY, LAST_DAY = date(1997, 1, 1), date(1998, 6, 30)
CRM_HEADER = ("contact_id", "updated_at", "created_at", "country", "marketing_consent")
TX_HEADER = ("order_id", "contact_id", "email", "order_ts", "status", "currency", "total_amount",
             "items_count", "channel", "updated_at")


def shift_for(cutoff: date) -> timedelta:
    """Whole weeks from the CDNOW cut-off to the week ending at ANCHOR."""
    return timedelta(weeks=(ANCHOR - cutoff).days // 7)


def load(wheel: Path, shift: timedelta) -> pd.DataFrame:
    """CDNOW_master.txt from the wheel: customer_id, day (moved), cds, dollars, seq."""
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
    day = pd.to_datetime(df["date"], format="%Y%m%d") + shift
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
    cutoff: str  # the CDNOW date
    run_date: str  # the same day moved: the pipeline's --date
    shift_days: int
    contacts: int
    orders: int
    future_orders: int
    first_day: str
    last_day: str


def prepare(wheel: Path, out: Path, cutoff: date) -> PrepareSummary:
    if not FIRST_DAY <= cutoff < LAST_DAY:
        raise SystemExit(f"--cutoff must be a CDNOW date in [{FIRST_DAY}, {LAST_DAY})")
    if out.exists() and any((out / sub).exists() for sub in ("landing", "future")):
        raise SystemExit(f"{out} already holds a zone: use a new directory")
    shift = shift_for(cutoff)
    df = load(wheel, shift)
    run_date = cutoff + shift
    past, future = df[df["day"] <= run_date], df[df["day"] > run_date]
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
    summary = PrepareSummary(
        cutoff=str(cutoff), run_date=str(run_date), shift_days=shift.days,
        contacts=len(first), orders=len(past), future_orders=len(future),
        first_day=str(df["day"].min()), last_day=str(df["day"].max()),
    )
    (out / "cdnow.json").write_text(json.dumps(asdict(summary), indent=2), encoding="utf-8")
    return summary


def run_date_of(out: Path) -> date:
    meta = out / "cdnow.json"
    if not meta.exists():
        raise SystemExit(f"{meta} is missing: run `prepare` first")
    return date.fromisoformat(json.loads(meta.read_text(encoding="utf-8"))["run_date"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="segment_tools.cdnow", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="landing zone up to D + the held-back future")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cutoff", type=date.fromisoformat, required=True,
                   help="D, a CDNOW date (e.g. 1997-06-30)")
    p.add_argument("--wheel", type=Path, required=True,
                   help=f"the {WHEEL_SPEC} wheel (pip download --no-deps {WHEEL_SPEC})")
    e = sub.add_parser("evaluate", help="published purchase probability vs the future")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--snapshot", type=Path, required=True)
    e.add_argument("--horizon", type=int, default=30)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        result: object = asdict(prepare(args.wheel, args.out, args.cutoff))
    else:
        from segment_tools.eval_predictions import evaluate

        result = evaluate(args.snapshot, args.out / "future", run_date_of(args.out),
                          args.horizon)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
