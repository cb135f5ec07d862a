"""segment_tools.segment_eval: ARI per k against planted personas, on a tiny generator-shaped
zone (truth CSVs + a snapshot with marts.customer_features and marts.identity_map)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
from segment_tools.segment_eval import customer_personas, evaluate, main, to_markdown
from segment_tools.synthetic_features import make_customer_features, write_customer_features


def _zone(root: Path) -> tuple[Path, Path, pd.DataFrame]:
    df = make_customer_features(2_000, seed=31, consent_false_share=0.0)
    truth = root / "truth"
    truth.mkdir(parents=True)
    n = len(df)
    pd.DataFrame({"person_id": [f"P{i}" for i in range(n)], "persona": df.persona}).to_csv(
        truth / "persons.csv", index=False)
    pd.DataFrame({"contact_id": [f"C{i}" for i in range(n)],
                  "person_id": [f"P{i}" for i in range(n)]}).to_csv(
        truth / "crm_contacts.csv", index=False)
    pd.DataFrame({"order_id": ["O0"], "person_id": ["P0"]}).to_csv(
        truth / "orders.csv", index=False)
    snap = root / "analytics.duckdb"
    con = duckdb.connect(str(snap))
    write_customer_features(con, df)
    imap = pd.DataFrame({"source": "crm", "source_id": [f"C{i}" for i in range(n)],
                         "customer_id": df.customer_id})
    con.register("imap", imap)
    con.execute("create table marts.identity_map as select * from imap")
    con.close()
    return root, snap, df


def test_ari_per_k_peaks_at_the_planted_k_and_the_rule_finds_it(tmp_path: Path) -> None:
    zone, snap, df = _zone(tmp_path)
    con = duckdb.connect(str(snap), read_only=True)
    personas = customer_personas(zone, con)
    con.close()
    assert personas.reindex(df.customer_id).tolist() == df.persona.tolist()

    result = evaluate(zone, snap, k_min=5, k_max=8)
    assert [r["k"] for r in result["candidates"]] == [5, 6, 7, 8]
    by_k = {r["k"]: r["ari_vs_persona"] for r in result["candidates"]}
    assert result["best_k"] == 7 and by_k[7] > 0.85
    assert result["chosen_k"] == 7 and result["ari_chosen"] == by_k[7]
    assert by_k[5] < by_k[7]  # merging planted personas costs ARI
    table = result["contingency_chosen_k"]
    assert set(table) == set(df.persona)
    assert sum(sum(row.values()) for row in table.values()) == len(df)
    assert "| 7 |" in to_markdown(result)


def test_cli_writes_markdown_and_html(tmp_path: Path) -> None:
    zone, snap, _ = _zone(tmp_path / "z")
    out = tmp_path / "out"
    assert main(["--zone", str(zone), "--snapshot", str(snap), "--k-min", "6", "--k-max", "7",
                 "--out", str(out)]) == 0
    assert "ARI vs persona" in (out / "segment_eval.md").read_text()
    assert "<table>" in (out / "segment_eval.html").read_text()
