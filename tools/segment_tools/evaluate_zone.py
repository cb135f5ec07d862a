"""Score a published analytics.duckdb against a zone2 truth.

    python -m segment_tools.evaluate_zone --zone DIR --snapshot analytics.duckdb [--future]
        [--json-out FILE]

Identity is read from ``marts.identity_map`` (source, source_id, customer_id) and
compared with ``DIR/truth/records.csv``; segments with ``truth/persons.csv``;
predictions with ``truth/future_buyers.csv``. What each measure means is in
docs/evaluation.md. Prints JSON, then a readable table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, roc_auc_score


def pair_scores(truth: pd.Series, pred: pd.Series) -> dict[str, float | int]:
    """Pairwise precision/recall/F1 of a clustering, from the contingency table.

    Pairs are counted with n*(n-1)/2 per cell instead of being enumerated, so
    a person with many records costs nothing extra.
    """
    df = pd.DataFrame({"t": truth.to_numpy(), "p": pred.to_numpy()})

    def pairs(counts: pd.Series) -> int:
        c = counts.to_numpy(dtype="int64")
        return int((c * (c - 1) // 2).sum())

    tp = pairs(df.groupby(["t", "p"]).size())
    true_pairs = pairs(df.groupby("t").size())
    pred_pairs = pairs(df.groupby("p").size())
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "true_pairs": true_pairs, "predicted_pairs": pred_pairs, "true_positive_pairs": tp}


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "select table_schema || '.' || table_name from information_schema.tables").fetchall()
    return {r[0] for r in rows}


def _read_truth(zone: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    truth = zone / "truth"
    for name in ("persons.csv", "records.csv"):
        if not (truth / name).exists():
            raise SystemExit(f"{truth / name} is missing: is {zone} a zone2 output directory?")
    persons = pd.read_csv(truth / "persons.csv", dtype=str, keep_default_na=False)
    records = pd.read_csv(truth / "records.csv", dtype=str, keep_default_na=False)
    return persons, records


def evaluate(zone: Path, snapshot: Path, *, future: bool = False) -> dict[str, Any]:
    persons, records = _read_truth(zone)
    if not snapshot.exists():
        raise SystemExit(f"snapshot {snapshot} does not exist")
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        tables = _tables(con)
        if "marts.identity_map" not in tables:
            raise SystemExit(f"{snapshot} has no marts.identity_map")
        imap = con.execute(
            "select source, cast(source_id as varchar) as source_id,"
            " cast(customer_id as varchar) as customer_id from marts.identity_map").df()
        profiles_n = con.execute("select count(*) from marts.customer_profiles").fetchone()[0] \
            if "marts.customer_profiles" in tables else None
        segs = con.execute(
            "select cast(customer_id as varchar) as customer_id, cast(segment_id as varchar)"
            " as segment_id, segment_name from segments.customer_segments").df() \
            if "segments.customer_segments" in tables else None
        preds = con.execute(
            "select cast(customer_id as varchar) as customer_id, purchase_probability_30d"
            " from segments.customer_predictions").df() \
            if "segments.customer_predictions" in tables else None
    finally:
        con.close()

    dup_map = imap.duplicated(["source", "source_id"]).sum()
    imap = imap.drop_duplicates(["source", "source_id"])
    rec = records.merge(imap, on=["source", "source_id"], how="left")
    out: dict[str, Any] = {"zone": str(zone), "snapshot": str(snapshot),
                           "identity_map_duplicate_keys": int(dup_map)}

    # -- CRM contact dedupe -------------------------------------------------------------
    crm = rec[rec.source == "crm"].copy()
    unmapped_crm = int(crm.customer_id.isna().sum())
    # an unmapped record is its own cluster: it cannot be a correct merge
    crm["cid"] = crm.customer_id.fillna("unmapped:" + crm.source_id)
    out["crm_records"] = len(crm)
    out["crm_unmapped"] = unmapped_crm
    out["contact_dedupe"] = pair_scores(crm.person_id, crm.cid)

    # recall per duplicate kind: each duplicate record against its person's first record
    primary = crm[crm.is_primary == "1"].set_index("person_id").cid
    dups = crm[crm.is_primary == "0"].copy()
    dups["linked"] = dups.cid.to_numpy() == primary.reindex(dups.person_id).to_numpy()
    kinds: dict[str, list[bool]] = defaultdict(list)
    for row in dups.itertuples():
        labels = set(filter(None, row.dup_kind.split("|")))
        if row.shares_email == "0" and row.shares_phone == "0":
            labels.add("no_shared_email_or_phone")
        labels.add("all_duplicates")
        for label in labels:
            kinds[label].append(bool(row.linked))
    out["duplicate_recall"] = {k: {"n": len(v), "recall": round(sum(v) / len(v), 4)}
                               for k, v in sorted(kinds.items())}

    # -- orders -----------------------------------------------------------------------
    tx = rec[rec.source == "transactions"].copy()
    tx["cid"] = tx.customer_id.fillna("unmapped:" + tx.source_id)
    home = _home_customer(crm, tx)
    tx["linked"] = tx.cid.to_numpy() == home.reindex(tx.person_id).to_numpy()
    out["orders"] = len(tx)
    out["orders_unmapped"] = int(tx.customer_id.isna().sum())
    out["order_link_accuracy"] = {
        k: {"n": len(g), "accuracy": round(float(g.linked.mean()), 4)}
        for k, g in tx.groupby("email_kind")}
    both = pd.concat([crm[["person_id", "cid"]], tx[["person_id", "cid"]]])
    out["crm_and_orders_pairwise"] = pair_scores(both.person_id, both.cid)
    per_person = both.groupby("person_id").cid.nunique()
    out["customers_per_person"] = {"mean": round(float(per_person.mean()), 4),
                                   "split_persons": int((per_person > 1).sum()),
                                   "persons": len(per_person)}
    persons_per_customer = both.groupby("cid").person_id.nunique()
    out["impure_customers"] = int((persons_per_customer > 1).sum())
    out["profiles_per_real_person"] = (
        round(profiles_n / len(per_person), 4) if profiles_n is not None and len(per_person)
        else None)
    out["profiles"] = profiles_n

    # -- over-merging across people who look alike --------------------------------------
    out["over_merge"] = _over_merge(persons, both, crm)

    # -- anonymous ids ----------------------------------------------------------------
    an = rec[rec.source == "analytics"].copy()
    real = an[(an.is_bot == "0") & (an.is_shared_device == "0")]
    # a device can only be stitched to someone who is a customer (has a CRM record or order)
    linkable = real[(real.linkable != "") & real.person_id.isin(home.index)]
    target = home.reindex(linkable.person_id).to_numpy()
    out["stitching"] = {
        "linkable_devices": len(linkable),
        "accuracy_linkable": round(float((linkable.customer_id.to_numpy() == target).mean()), 4)
        if len(linkable) else None,
        "mapped_wrong_customer": int((linkable.customer_id.notna()
                                      & (linkable.customer_id.to_numpy() != target)).sum()),
        "unlinkable_devices": int((real.linkable == "").sum()),
        "unlinkable_mapped": int(real[real.linkable == ""].customer_id.notna().sum()),
        "bots": int((an.is_bot == "1").sum()),
        "bots_mapped": int(an[an.is_bot == "1"].customer_id.notna().sum()),
        "shared_devices": int((an.is_shared_device == "1").sum()),
        "shared_devices_mapped": int(an[an.is_shared_device == "1"].customer_id.notna().sum()),
    }

    # -- segments vs planted personas ---------------------------------------------------
    majority = _majority_person(both)
    pmeta = persons.set_index("person_id")
    if segs is not None and len(segs):
        s = segs.merge(majority, left_on="customer_id", right_index=True, how="inner")
        s["persona"] = pmeta.persona.reindex(s.person_id).to_numpy()
        s["consent"] = pmeta.marketing_consent.reindex(s.person_id).to_numpy()
        table = pd.crosstab(s.persona, s.segment_name)
        homes = s[s.customer_id.isin(set(home.to_numpy()))]
        out["segments"] = {
            "customers_segmented": len(segs),
            "matched_to_a_person": len(s),
            "ari_vs_persona": round(float(adjusted_rand_score(s.persona, s.segment_id)), 4),
            "nmi_vs_persona": round(float(normalized_mutual_info_score(s.persona, s.segment_id)),
                                    4),
            # identity-independent view: each person's main customer only
            "ari_home_customers": round(float(adjusted_rand_score(homes.persona,
                                                                  homes.segment_id)), 4)
            if len(homes) else None,
            # the consent the pipeline could know: the latest CRM record merged into the
            # customer says false
            "segmented_with_latest_consent_false": _consent_violations(segs, crm),
            # the person's consent is false (their latest record may sit in another customer)
            "segmented_person_consent_false": int((s.consent == "false").sum()),
            "crosstab": {str(k): {str(c): int(v) for c, v in row.items() if v}
                         for k, row in table.iterrows()},
        }
    else:
        out["segments"] = None

    # -- predictions against the held-back future ----------------------------------------
    if future:
        out["predictions"] = _predictions(zone, preds, majority)
    return out


def _consent_violations(segs: pd.DataFrame, crm: pd.DataFrame) -> int | None:
    if "consent_at" not in crm.columns:
        return None  # a truth written before records carried their consent
    latest = crm.sort_values("consent_at", kind="stable").drop_duplicates("cid", keep="last")
    false_cids = set(latest[latest.consent == "false"].cid)
    return int(segs.customer_id.isin(false_cids).sum())


def _home_customer(crm: pd.DataFrame, tx: pd.DataFrame) -> pd.Series:
    """The customer a person should be: the one most of their CRM records map to (their
    orders when they have no CRM record). Ties go to the first record's customer."""
    src = crm if len(crm) else tx
    rest = tx[~tx.person_id.isin(crm.person_id)]
    both = pd.concat([src[["person_id", "cid"]], rest[["person_id", "cid"]]])
    counts = both.groupby(["person_id", "cid"], sort=False).size().rename("n").reset_index()
    counts = counts.sort_values(["person_id", "n"], ascending=[True, False], kind="stable")
    return counts.drop_duplicates("person_id").set_index("person_id").cid


def _majority_person(both: pd.DataFrame) -> pd.DataFrame:
    counts = both.groupby(["cid", "person_id"]).size().rename("n").reset_index()
    counts = counts.sort_values(["cid", "n"], ascending=[True, False], kind="stable")
    return counts.drop_duplicates("cid").set_index("cid")[["person_id"]]


def _over_merge(persons: pd.DataFrame, both: pd.DataFrame, crm: pd.DataFrame
                ) -> dict[str, Any]:
    cust_of: dict[str, set[str]] = defaultdict(set)
    for pid, cid in zip(both.person_id, both.cid, strict=True):
        cust_of[pid].add(cid)

    def merged(a: str, b: str) -> bool:
        return bool(cust_of.get(a, set()) & cust_of.get(b, set()))

    twins, father_son, household = set(), set(), set()
    for p in persons.itertuples():
        if p.twin_of:
            twins.add(tuple(sorted((p.person_id, p.twin_of))))
        if p.relation.startswith("father_of:"):
            father_son.add((p.person_id, p.relation.split(":", 1)[1]))
    for _hh, g in persons[persons.household_id != ""].groupby("household_id"):
        for a, b in combinations(sorted(g.person_id), 2):
            if (a, b) not in twins and (a, b) not in father_son and (b, a) not in father_son:
                household.add((a, b))
    known = set(cust_of)
    result: dict[str, Any] = {}
    for name, pairs in (("households", household), ("twins", twins),
                        ("father_son", father_son)):
        pairs = {pr for pr in pairs if pr[0] in known and pr[1] in known}
        bad = sum(merged(a, b) for a, b in pairs)
        result[name] = {"pairs": len(pairs), "merged": bad,
                        "rate": round(bad / len(pairs), 4) if pairs else None}
    for col in ("placeholder_email", "placeholder_phone"):
        sub = crm[crm[col] != ""]
        total = merged_pairs = 0
        persons_hit: set[str] = set()
        for _value, g in sub.groupby(col):
            m = g.person_id.nunique()
            total += m * (m - 1) // 2
            for _cid, gc in g.groupby("cid"):
                k = gc.person_id.nunique()
                merged_pairs += k * (k - 1) // 2
                if k > 1:
                    persons_hit.update(gc.person_id)
        result[col] = {"records": len(sub), "stranger_pairs": total,
                       "merged_pairs": merged_pairs, "persons_over_merged": len(persons_hit)}
    return result


def _predictions(zone: Path, preds: pd.DataFrame | None, majority: pd.DataFrame
                 ) -> dict[str, Any] | None:
    path = zone / "truth" / "future_buyers.csv"
    if not path.exists():
        raise SystemExit(f"--future: {path} is missing (generate the zone with --holdout-days)")
    if preds is None or not len(preds):
        return None
    fb = pd.read_csv(path, dtype={"person_id": str})
    p = preds.merge(majority, left_on="customer_id", right_index=True, how="inner")
    p = p.merge(fb, on="person_id", how="left").dropna(subset=["purchase_probability_30d"])
    y = p.buyer.fillna(0).astype(int)
    score = p.purchase_probability_30d.astype(float)
    auc = float(roc_auc_score(y, score)) if y.nunique() == 2 else None
    # calibration by predicted decile: mean prediction vs observed share
    deciles = pd.qcut(score.rank(method="first"), 10, labels=False) if len(p) >= 10 else None
    calib = None
    if deciles is not None:
        calib = [{"decile": int(d) + 1, "mean_predicted": round(float(score[deciles == d].mean()),
                                                                4),
                  "observed": round(float(y[deciles == d].mean()), 4)}
                 for d in range(10)]
    return {"customers_scored": len(preds), "matched": len(p),
            "roc_auc": round(auc, 4) if auc is not None else None,
            "mean_predicted": round(float(score.mean()), 4),
            "observed_rate": round(float(y.mean()), 4),
            "brier": round(float(((score - y) ** 2).mean()), 4),
            "calibration_by_decile": calib}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def table_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    cd = r["contact_dedupe"]
    rows += [("contact dedupe precision", _fmt(cd["precision"])),
             ("contact dedupe recall", _fmt(cd["recall"])),
             ("contact dedupe F1", _fmt(cd["f1"])),
             ("CRM+orders pairwise F1", _fmt(r["crm_and_orders_pairwise"]["f1"]))]
    for k, v in r["duplicate_recall"].items():
        rows.append((f"  recall {k}", f"{_fmt(v['recall'])} (n={v['n']})"))
    for k, v in r["order_link_accuracy"].items():
        rows.append((f"  order link {k}", f"{_fmt(v['accuracy'])} (n={v['n']})"))
    for k, v in r["over_merge"].items():
        if "pairs" in v:
            rows.append((f"over-merged {k}", f"{v['merged']}/{v['pairs']}"))
        else:
            rows.append((f"over-merged {k} pairs", f"{v['merged_pairs']}/{v['stranger_pairs']}"))
    st = r["stitching"]
    rows += [("stitching accuracy (linkable devices)", _fmt(st["accuracy_linkable"])),
             ("bots mapped", f"{st['bots_mapped']}/{st['bots']}"),
             ("shared devices mapped", f"{st['shared_devices_mapped']}/{st['shared_devices']}"),
             ("profiles per real person", _fmt(r["profiles_per_real_person"])),
             ("split persons", str(r["customers_per_person"]["split_persons"])),
             ("impure customers", str(r["impure_customers"]))]
    if r.get("segments"):
        rows += [("segment ARI vs persona", _fmt(r["segments"]["ari_vs_persona"])),
                 ("segment NMI vs persona", _fmt(r["segments"]["nmi_vs_persona"])),
                 ("segment ARI, home customers only", _fmt(r["segments"]
                                                           ["ari_home_customers"])),
                 ("segmented, latest merged consent false",
                  str(r["segments"]["segmented_with_latest_consent_false"])),
                 ("segmented, person's consent false",
                  str(r["segments"]["segmented_person_consent_false"]))]
    if r.get("predictions"):
        pr = r["predictions"]
        rows += [("purchase_probability_30d ROC AUC", _fmt(pr["roc_auc"])),
                 ("mean predicted vs observed", f"{_fmt(pr['mean_predicted'])} vs "
                                                f"{_fmt(pr['observed_rate'])}"),
                 ("Brier", _fmt(pr["brier"]))]
    return rows


def print_table(r: dict[str, Any]) -> None:
    rows = table_rows(r)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def compare_markdown(results: list[tuple[str, dict[str, Any]]]) -> str:
    """One markdown table, a column per evaluation (JSON written with --json-out)."""
    columns = [dict(table_rows(r)) for _, r in results]
    keys: list[str] = []
    for r in results:
        keys += [k for k, _ in table_rows(r[1]) if k not in keys]
    lines = ["| measure | " + " | ".join(name for name, _ in results) + " |",
             "|---|" + "---:|" * len(results)]
    for k in keys:
        cells = [c.get(k, "-").replace("|", "/") for c in columns]
        lines.append(f"| {k.strip()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="segment_tools.evaluate_zone", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zone", type=Path, help="zone2 output dir (has truth/)")
    ap.add_argument("--snapshot", type=Path, help="published analytics.duckdb")
    ap.add_argument("--compare", nargs="+", metavar="NAME=JSON",
                    help="print a markdown table of earlier --json-out results and exit")
    ap.add_argument("--future", action="store_true",
                    help="score purchase_probability_30d against truth/future_buyers.csv")
    ap.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.compare:
        loaded = []
        for item in args.compare:
            name, sep, path = item.partition("=")
            if not sep:
                ap.error(f"--compare takes NAME=JSON, got {item!r}")
            loaded.append((name, json.loads(Path(path).read_text())))
        print(compare_markdown(loaded))
        return 0
    if args.zone is None or args.snapshot is None:
        ap.error("--zone and --snapshot are required (or --compare)")
    result = evaluate(args.zone, args.snapshot, future=args.future)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print()
    print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
