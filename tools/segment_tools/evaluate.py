"""Measure identity resolution and segmentation against a generator's truth.

    python -m segment_tools.evaluate --truth-dir data/truth [--snapshot path]

Reads the truth CSVs written by the generator (``persons.csv``,
``crm_contacts.csv``, ``anonymous_ids.csv``, ``orders.csv``) and the published
snapshot, and reports:

- contact dedupe: pairwise precision / recall / F1 over CRM contacts
  (a pair is "predicted" when both contacts got the same ``customer_id`` and
  "true" when both belong to the same person);
- anonymous-id stitching: share of stitched anonymous ids whose customer is
  their true person (customers are mapped to the person most of their CRM
  contacts and orders belong to), and the share of stitchable ids stitched;
- bots mapped to a customer (must be 0);
- profile count vs the number of real customer persons;
- segments vs planted personas: adjusted Rand index.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from segment_warehouse.config import get_settings


@dataclass
class Evaluation:
    contact_pair_precision: float
    contact_pair_recall: float
    contact_pair_f1: float
    anon_stitch_correct: float
    anon_stitch_coverage: float
    bots_mapped: int
    profiles: int
    real_customers: int
    profile_count_error: float
    segments_ari: float | None
    segments_k: int | None


def _pairs(expr: str) -> str:
    return f"coalesce(sum({expr} * ({expr} - 1) / 2), 0)"


def evaluate(truth_dir: Path, snapshot: Path) -> Evaluation:
    con = duckdb.connect()
    con.execute(f"attach '{snapshot}' as snap (read_only)")
    for name in ("persons", "crm_contacts", "anonymous_ids", "orders"):
        con.execute(
            f"create view truth_{name} as select * from "
            f"read_csv('{truth_dir / (name + '.csv')}', all_varchar = true)"
        )
    con.execute(
        """
        create temp table contact_map as
        select t.contact_id, t.person_id, m.customer_id
        from truth_crm_contacts t
        join snap.marts.identity_map m on m.source = 'crm' and m.source_id = t.contact_id
        """
    )
    tp, pred, true = con.execute(
        f"""
        select
          (select {_pairs("n")} from (select count(*) n from contact_map
                                      group by person_id, customer_id)),
          (select {_pairs("n")} from (select count(*) n from contact_map group by customer_id)),
          (select {_pairs("n")} from (select count(*) n from contact_map group by person_id))
        """
    ).fetchone()
    precision = tp / pred if pred else 1.0
    recall = tp / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    # Customer -> person by majority over its contacts and orders.
    con.execute(
        """
        create temp table customer_person as
        with votes as (
            select customer_id, person_id from contact_map
            union all
            select m.customer_id, o.person_id
            from truth_orders o
            join snap.marts.identity_map m on m.source = 'transactions' and m.source_id = o.order_id
        )
        select customer_id, arg_max(person_id, n) as person_id
        from (select customer_id, person_id, count(*) n from votes group by all)
        group by customer_id
        """
    )
    correct, stitched, stitchable, bots = con.execute(
        """
        with anon as (
            select a.anonymous_id, a.person_id, lower(a.is_bot) in ('true', '1') as is_bot,
                   m.customer_id, cp.person_id as mapped_person
            from truth_anonymous_ids a
            left join snap.marts.identity_map m
              on m.source = 'analytics' and m.source_id = a.anonymous_id
            left join customer_person cp on cp.customer_id = m.customer_id
        )
        select
          count(*) filter (where customer_id is not null and mapped_person = person_id),
          count(*) filter (where customer_id is not null and not is_bot),
          count(*) filter (where not is_bot and person_id is not null
                           and person_id in (select person_id from customer_person)),
          count(*) filter (where is_bot and customer_id is not null)
        from anon
        """
    ).fetchone()
    (profiles,) = con.execute("select count(*) from snap.marts.customer_profiles").fetchone()
    (real_customers,) = con.execute(
        "select count(*) from truth_persons where lower(is_customer) in ('true', '1')"
    ).fetchone()

    ari: float | None = None
    k: int | None = None
    labels = con.execute(
        """
        select s.segment_id, p.persona
        from snap.segments.customer_segments s
        join customer_person cp using (customer_id)
        join truth_persons p on p.person_id = cp.person_id
        """
    ).fetchall()
    if labels:
        from sklearn.metrics import adjusted_rand_score

        ari = float(adjusted_rand_score([r[1] for r in labels], [r[0] for r in labels]))
        k = len({r[0] for r in labels})
    con.close()
    return Evaluation(
        contact_pair_precision=round(precision, 4),
        contact_pair_recall=round(recall, 4),
        contact_pair_f1=round(f1, 4),
        anon_stitch_correct=round(correct / stitched, 4) if stitched else 1.0,
        anon_stitch_coverage=round(stitched / stitchable, 4) if stitchable else 1.0,
        bots_mapped=int(bots),
        profiles=int(profiles),
        real_customers=int(real_customers),
        profile_count_error=round(abs(profiles - real_customers) / max(real_customers, 1), 4),
        segments_ari=None if ari is None else round(ari, 4),
        segments_k=k,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truth-dir", type=Path, required=True)
    parser.add_argument("--snapshot", type=Path, default=None)
    args = parser.parse_args(argv)
    snapshot = args.snapshot or get_settings().analytics_db
    print(json.dumps(asdict(evaluate(args.truth_dir, snapshot)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
