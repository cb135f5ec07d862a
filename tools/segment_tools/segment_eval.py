"""ARI per candidate k against planted personas (evaluation only; production has no truth).

    python -m segment_tools.segment_eval --zone Z --snapshot S [--k-min 2] [--k-max 12]
        [--out DIR] [--json-out FILE]

``Z`` is a zone2 output directory (``Z/truth/persons.csv`` + ``records.csv``) or a
sample-generator directory (``Z/truth/persons.csv`` + ``crm_contacts.csv`` +
``orders.csv``); ``S`` a snapshot or warehouse DuckDB file with
``marts.customer_features`` and ``marts.identity_map``. Each customer gets the persona of
its majority person (over its CRM records and orders, as in ``evaluate_zone``).

The candidates are refitted with the product's own preparation, scaling, k-means and
selection scores (``segment_warehouse.clustering``), so the table shows what the
reclustering would have produced for every k and which k its rule picks. Prints a
table; ``--out`` writes ``segment_eval.md`` and ``segment_eval.html``.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from segment_warehouse.clustering import model as mdl
from segment_warehouse.clustering.features import load_customer_features
from segment_warehouse.clustering.space import NO_ACTIVITY_SEGMENT, model_space


def _majority(votes: pd.DataFrame) -> pd.Series:
    """customer_id -> the person most of its records belong to (ties: first seen)."""
    counts = votes.groupby(["customer_id", "person_id"], sort=False).size().rename("n")
    counts = counts.reset_index().sort_values(["customer_id", "n"], ascending=[True, False],
                                              kind="stable")
    return counts.drop_duplicates("customer_id").set_index("customer_id").person_id


def customer_personas(zone: Path, con: duckdb.DuckDBPyConnection) -> pd.Series:
    """customer_id -> planted persona, for every customer the truth can place."""
    truth = zone / "truth"
    persons_csv = truth / "persons.csv"
    if not persons_csv.exists():
        raise SystemExit(f"{persons_csv} is missing: is {zone} a zone2 or generator directory?")
    persons = pd.read_csv(persons_csv, dtype=str, keep_default_na=False)
    imap = con.execute(
        "select source, cast(source_id as varchar) as source_id,"
        " cast(customer_id as varchar) as customer_id from marts.identity_map"
    ).df().drop_duplicates(["source", "source_id"])
    if (truth / "records.csv").exists():  # zone2
        records = pd.read_csv(truth / "records.csv", dtype=str, keep_default_na=False)
        records = records[records.source.isin(["crm", "transactions"])]
    elif (truth / "crm_contacts.csv").exists():  # sample generator
        crm = pd.read_csv(truth / "crm_contacts.csv", dtype=str, keep_default_na=False)
        orders = pd.read_csv(truth / "orders.csv", dtype=str, keep_default_na=False)
        records = pd.concat([
            pd.DataFrame({"source": "crm", "source_id": crm.contact_id,
                          "person_id": crm.person_id}),
            pd.DataFrame({"source": "transactions", "source_id": orders.order_id,
                          "person_id": orders.person_id}),
        ])
    else:
        raise SystemExit(f"{truth} has neither records.csv (zone2) nor crm_contacts.csv")
    votes = records.merge(imap, on=["source", "source_id"], how="inner")
    person = _majority(votes[["customer_id", "person_id"]])
    persona = persons.set_index("person_id").persona
    return pd.Series(persona.reindex(person.to_numpy()).to_numpy(), index=person.index,
                     name="persona").dropna()


def evaluate(zone: Path, snapshot: Path, *, k_min: int, k_max: int) -> dict[str, Any]:
    if not snapshot.exists():
        raise SystemExit(f"snapshot {snapshot} does not exist")
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        df = load_customer_features(con)
        personas = customer_personas(zone, con)
    finally:
        con.close()
    space = model_space(df)
    ids = space.prep.customer_ids
    truth = personas.reindex(pd.Index(ids)).to_numpy()
    known = pd.notna(truth)
    active = space.active
    sample = mdl.stable_sample(ids[active], mdl.SELECTION_SAMPLE)
    X = space.X
    chosen, candidates = mdl.select_k(X[sample], ids[active][sample], k_min, k_max, None)
    rows: list[dict[str, Any]] = []
    labels_of: dict[int, np.ndarray] = {}
    for cand in candidates:
        k = cand["k"]
        fit = mdl.fit_clusters(X, k, customer_ids=ids[active], minibatch_threshold=10**9)
        labels = np.full(len(ids), -1, dtype=np.int64)  # -1 = the no-activity segment
        labels[active] = fit.labels
        labels_of[k] = labels
        on_active = known & active
        rows.append({
            **{key: cand[key] for key in cand if key != "chosen"},
            "chosen": k == chosen,
            "ari_vs_persona": round(float(adjusted_rand_score(truth[known], labels[known])), 4),
            "ari_active_only": round(float(adjusted_rand_score(truth[on_active],
                                                               labels[on_active])), 4),
        })
    best = max(rows, key=lambda r: r["ari_vs_persona"])
    table = pd.crosstab(
        pd.Series(truth[known], name="persona"),
        pd.Series(labels_of[chosen][known], name="cluster").map(
            lambda c: NO_ACTIVITY_SEGMENT["name"] if c < 0 else f"c{c}"),
    )
    return {
        "zone": str(zone),
        "snapshot": str(snapshot),
        "profiled": len(ids),
        "with_persona": int(known.sum()),
        "no_activity": int((~active).sum()),
        "personas": int(pd.Series(truth[known]).nunique()),
        "chosen_k": chosen,
        "ari_chosen": next(r["ari_vs_persona"] for r in rows if r["chosen"]),
        "best_k": best["k"],
        "ari_best": best["ari_vs_persona"],
        "candidates": rows,
        "contingency_chosen_k": {str(p): {str(c): int(v) for c, v in row.items()}
                                 for p, row in table.iterrows()},
    }


_SCORE_COLS = ("score", "silhouette", "calinski_harabasz", "davies_bouldin", "stability")


def _score_cols(result: dict[str, Any]) -> list[str]:
    first = result["candidates"][0] if result["candidates"] else {}
    return [c for c in _SCORE_COLS if first.get(c) is not None]


def to_markdown(result: dict[str, Any]) -> str:
    cols = _score_cols(result)
    head = ["k", *cols, "ARI vs persona", "ARI (active only)", "chosen"]
    lines = [
        f"# Segment ARI per k — {result['zone']}",
        "",
        f"{result['profiled']:,} profiled customers, {result['with_persona']:,} placed on a "
        f"person, {result['no_activity']:,} without activity (fixed segment), "
        f"{result['personas']} planted personas. Chosen k = {result['chosen_k']} "
        f"(ARI {result['ari_chosen']:.3f}); best k = {result['best_k']} "
        f"(ARI {result['ari_best']:.3f}).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" for _ in head) + "|",
    ]
    for r in result["candidates"]:
        cells = [str(r["k"]), *(f"{r[c]:.3f}" for c in cols), f"{r['ari_vs_persona']:.3f}",
                 f"{r['ari_active_only']:.3f}", "◀" if r["chosen"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    table = result["contingency_chosen_k"]
    clusters = sorted({c for row in table.values() for c in row})
    lines += ["", f"Persona × cluster at the chosen k = {result['chosen_k']}:", "",
              "| persona | " + " | ".join(clusters) + " |",
              "|---|" + "|".join("---:" for _ in clusters) + "|"]
    for persona, row in table.items():
        lines.append(f"| {persona} | " + " | ".join(str(row.get(c, 0)) for c in clusters) + " |")
    return "\n".join(lines) + "\n"


def to_html(result: dict[str, Any]) -> str:
    esc = html.escape
    cols = _score_cols(result)
    head = ["k", *cols, "ARI vs persona", "ARI (active only)", ""]
    rows = "".join(
        "<tr" + (" class='chosen'" if r["chosen"] else "") + ">"
        + f"<td>{r['k']}</td>" + "".join(f"<td>{r[c]:.3f}</td>" for c in cols)
        + f"<td>{r['ari_vs_persona']:.3f}</td><td>{r['ari_active_only']:.3f}</td>"
        + f"<td>{'chosen' if r['chosen'] else ''}</td></tr>"
        for r in result["candidates"]
    )
    table = result["contingency_chosen_k"]
    clusters = sorted({c for row in table.values() for c in row})
    cont = "".join(
        f"<tr><td>{esc(p)}</td>" + "".join(f"<td>{row.get(c, 0)}</td>" for c in clusters)
        + "</tr>" for p, row in table.items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Segment ARI per k</title>"
        "<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;"
        "margin:12px 0}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}"
        "tr.chosen{background:#fde8e8;font-weight:600}</style></head><body>"
        f"<h1>Segment ARI per k</h1><p>{esc(result['zone'])} · "
        f"{result['profiled']:,} profiled, {result['no_activity']:,} without activity, "
        f"{result['personas']} planted personas · chosen k = {result['chosen_k']} (ARI "
        f"{result['ari_chosen']:.3f}) · best k = {result['best_k']} (ARI "
        f"{result['ari_best']:.3f})</p><table><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in head) + f"</tr>{rows}</table>"
        f"<h2>Persona × cluster at k = {result['chosen_k']}</h2><table><tr><th>persona</th>"
        + "".join(f"<th>{esc(c)}</th>" for c in clusters) + f"</tr>{cont}</table></body></html>"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segment_tools.segment_eval")
    parser.add_argument("--zone", type=Path, required=True)
    parser.add_argument("--snapshot", type=Path, required=True)
    parser.add_argument("--k-min", type=int, default=2)
    parser.add_argument("--k-max", type=int, default=12)
    parser.add_argument("--out", type=Path, help="directory for segment_eval.md/.html")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if not 2 <= args.k_min <= args.k_max:
        parser.error("need 2 <= --k-min <= --k-max")
    result = evaluate(args.zone, args.snapshot, k_min=args.k_min, k_max=args.k_max)
    md = to_markdown(result)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "segment_eval.md").write_text(md, encoding="utf-8")
        (args.out / "segment_eval.html").write_text(to_html(result), encoding="utf-8")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
