"""Evaluate the published purchase propensity against held-back future orders.

Two subcommands:

``holdout``  split a generated landing zone at a cut-off D: every row whose own
             timestamp (orders: order_ts and updated_at; CRM: updated_at; events:
             timestamp) is after D goes to a held-back folder instead, so the
             pipeline run at D never sees the future.
``repredict`` copy a run's working warehouse, train and score again there at D
             with a chosen calibration (``all_cutoffs``, the published one, or
             ``recent_window``), then ``evaluate`` the copy: two calibrations
             compared on the same history and the same held-back month.
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
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
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
            with _open_text(path, "r") as fh:
                lines = fh.readlines()
            stamps: list[Any] = []
            for line in lines:
                try:
                    stamps.append(json.loads(line).get("timestamp"))
                except (ValueError, AttributeError):
                    stamps.append(None)  # invalid line: stays, the pipeline quarantines it
            future_mask = _after(pd.Series(stamps, dtype=object), bound).to_numpy()
            keep_lines = [ln for ln, f in zip(lines, future_mask, strict=True) if not f]
            held_lines = [ln for ln, f in zip(lines, future_mask, strict=True) if f]
            with _open_text(out, "w") as fh:
                fh.writelines(keep_lines)
            kept[source] = kept.get(source, 0) + len(keep_lines)
            back[source] = back.get(source, 0) + len(held_lines)
        else:
            shutil.copy2(path, out)
    return HoldoutSummary(str(cutoff), n_files, kept, back)


# --- evaluation ----------------------------------------------------------------


def _held_orders(held: Path, cutoff: date, horizon: int) -> pd.DataFrame:
    """Held-back orders placed in (D, D + horizon] whose latest version known by the
    end of the window is completed: order_id, contact_id, email."""
    files = sorted((held / "transactions").glob("*.csv"))
    if not files:
        raise SystemExit(f"no held-back transactions under {held / 'transactions'}")
    df = pd.concat(
        [pd.read_csv(f, dtype=str, keep_default_na=False) for f in files], ignore_index=True
    )
    ts = pd.to_datetime(df["order_ts"], utc=True, errors="coerce", format="mixed")
    upd = pd.to_datetime(df.get("updated_at"), utc=True, errors="coerce", format="mixed")
    upd = upd.fillna(ts)
    start = pd.Timestamp(cutoff + timedelta(days=1), tz="UTC")
    end = pd.Timestamp(cutoff + timedelta(days=horizon + 1), tz="UTC")
    df = df.assign(_ts=ts, _upd=upd, _pos=range(len(df)))
    df = df[(df["_ts"] >= start) & (df["_ts"] < end) & (df["_upd"] < end)]
    df = df.sort_values(["order_id", "_upd", "_pos"]).groupby("order_id").tail(1)
    done = df[df["status"].str.strip().str.lower() == "completed"]
    return done[["order_id", "contact_id", "email"]].reset_index(drop=True)


def _buyers(con: Any, orders: pd.DataFrame, key: str) -> tuple[set[str], int]:
    """customer_ids of the held-back orders: by CRM contact id, else by the keyed
    hash of the checkout email (the marts' pseudonymised email). Also unmatched count."""
    from segment_warehouse.privacy import keyed_hash

    contact_map = dict(
        con.execute(
            "select source_id, customer_id from marts.identity_map where source = 'crm'"
        ).fetchall()
    )
    email_map = dict(
        con.execute(
            "select email_hash, any_value(customer_id) from marts.customer_profiles "
            "where email_hash is not null group by 1"
        ).fetchall()
    )
    found: set[str] = set()
    unmatched = 0
    for contact, email in zip(orders["contact_id"], orders["email"], strict=True):
        cid = contact_map.get(contact.strip()) if contact.strip() else None
        if cid is None and email.strip():
            cid = email_map.get(keyed_hash(email.strip().lower(), key))
        if cid is None:
            unmatched += 1
        else:
            found.add(cid)
    return found, unmatched


def _hindsight_auc(con: Any, ids: pd.Series, y: np.ndarray) -> float:
    """Reference: HistGradientBoosting on the marts' own features at D, labelled with
    the real future and scored out-of-fold (5-fold stratified CV): the same history,
    with hindsight of the outcome it is judged on."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    feats = con.execute("select * from marts.customer_features").df()
    X = pd.DataFrame({"customer_id": ids}).merge(feats, on="customer_id", how="left")
    X = X.drop(columns=["customer_id", "marketing_consent"]).astype(float)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    model = HistGradientBoostingClassifier(random_state=0)
    p = cross_val_predict(model, X, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def evaluate(snapshot: Path, held: Path, cutoff: date, horizon: int = 30) -> dict[str, Any]:
    """The 'done when' figures for a snapshot published at ``cutoff``."""
    import duckdb
    from sklearn.metrics import brier_score_loss, roc_auc_score

    key = os.environ.get("SEGMENTS_PII_KEY", "")
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        pred = con.execute(
            "select customer_id, purchase_probability_30d, model_version "
            "from segments.customer_predictions order by customer_id"
        ).df()
        run = con.execute(
            "select purchase_method, roc_auc, baseline_roc_auc, as_of_date "
            "from segments.prediction_runs order by scored_at desc, trained_at desc limit 1"
        ).fetchall()[0]
        orders = _held_orders(held, cutoff, horizon)
        buyers, unmatched = _buyers(con, orders, key)
        y = pred["customer_id"].isin(buyers).to_numpy(dtype=int)
        p = pred["purchase_probability_30d"].to_numpy(dtype=float)
        reference = _hindsight_auc(con, pred["customer_id"], y)
    finally:
        con.close()
    auc = float(roc_auc_score(y, p))
    observed, mean_p = float(y.mean()), float(p.mean())
    return {
        "as_of": str(cutoff),
        "published_as_of": str(run[3]),
        "method": run[0],
        "customers_scored": len(y),
        "held_back_completed_orders": len(orders),
        "orders_not_matched_to_a_customer": unmatched,
        "observed_purchase_rate": round(observed, 4),
        "mean_purchase_probability": round(mean_p, 4),
        "mean_vs_observed_relative_error": round(abs(mean_p - observed) / observed, 4)
        if observed
        else None,
        "roc_auc": round(auc, 4),
        "brier_score": round(float(brier_score_loss(y, p)), 4),
        "hindsight_gb_cv_roc_auc": round(reference, 4),
        "backtest_roc_auc": run[1],
        "backtest_baseline_roc_auc": run[2],
        "auc_within_0.01_or_above_reference": auc >= reference - 0.01,
        "mean_within_20pct": observed > 0 and abs(mean_p - observed) <= 0.2 * observed,
    }


def repredict(
    warehouse: Path, work: Path, held: Path, cutoff: date, calibration: str
) -> dict[str, Any]:
    """predict() at ``cutoff`` on a copy of ``warehouse``/warehouse.duckdb under
    ``work`` with the given calibration, then the held-back evaluation of the copy."""
    from dataclasses import replace

    from segment_warehouse.config import get_settings
    from segment_warehouse.predictions import core
    from segment_warehouse.predictions import model as mdl

    if calibration not in CALIBRATIONS:
        raise SystemExit(f"--calibration must be one of {', '.join(CALIBRATIONS)}")
    source = warehouse / "warehouse.duckdb"
    if not source.exists():
        raise SystemExit(f"{source} does not exist")
    (work / "warehouse").mkdir(parents=True, exist_ok=True)
    copy = work / "warehouse" / "warehouse.duckdb"
    shutil.copyfile(source, copy)
    settings = replace(get_settings(), warehouse_dir=work / "warehouse",
                       reports_dir=work / "reports")
    mdl.CALIBRATION = calibration
    result = core.predict(run_id=f"repredict-{calibration}", as_of=str(cutoff),
                          settings=settings)
    out = evaluate(copy, held, cutoff)
    return out | {"calibration": calibration, "predict_seconds": result.duration_seconds}


CALIBRATIONS = ("all_cutoffs", "recent_window")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m segment_tools.eval_predictions")
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("holdout", help="split a landing zone at a cut-off day")
    h.add_argument("--src", type=Path, required=True, help="complete landing zone")
    h.add_argument("--landing", type=Path, required=True, help="output: rows up to D")
    h.add_argument("--held", type=Path, required=True, help="output: rows after D")
    h.add_argument("--cutoff", type=date.fromisoformat, required=True, help="D (YYYY-MM-DD)")
    e = sub.add_parser("evaluate", help="score the published predictions on held-back orders")
    e.add_argument("--snapshot", type=Path, required=True, help="analytics.duckdb of the run at D")
    e.add_argument("--held", type=Path, required=True, help="held-back folder (transactions/)")
    e.add_argument("--cutoff", type=date.fromisoformat, required=True, help="D (YYYY-MM-DD)")
    e.add_argument("--horizon", type=int, default=30)
    r = sub.add_parser("repredict", help="predict again on a copy with a chosen calibration")
    r.add_argument("--warehouse", type=Path, required=True,
                   help="the run's SEGMENTS_WAREHOUSE_DIR (holds warehouse.duckdb)")
    r.add_argument("--work", type=Path, required=True, help="where the copy goes")
    r.add_argument("--held", type=Path, required=True)
    r.add_argument("--cutoff", type=date.fromisoformat, required=True)
    r.add_argument("--calibration", choices=CALIBRATIONS, default="all_cutoffs")
    a = ap.parse_args(argv)
    if a.cmd == "holdout":
        out: Any = asdict(split_landing(a.src, a.landing, a.held, a.cutoff))
    elif a.cmd == "repredict":
        out = repredict(a.warehouse, a.work, a.held, a.cutoff, a.calibration)
    else:
        out = evaluate(a.snapshot, a.held, a.cutoff, a.horizon)
    json.dump(out, sys.stdout, indent=2, default=str)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
